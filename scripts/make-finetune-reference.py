"""PyTorch references for the fine-tuning training graph (test/fixtures/finetune/).

Writes reference.json: for (1) the built-in MobileNetV2's top from block_13_expand_relu, run by a
torch interpreter of the ONNX subgraph with the model's own weights, and (2) a ResNet-18 `layer4` +
avgpool + fc built in plain torch (widths reduced 512 -> 64, input 32x8x8, to keep the ONNX fixture
~0.5 MB) and exported by torch.onnx: the loss, summaries of every parameter's gradient, and of the
weight changes after two SGD-momentum steps and after two AdamW steps, computed in float64; the
`_batch_bn` cases repeat (1) and (2) with BatchNormalization in train mode (batch statistics) and
also store the running statistics after the steps. Inputs and the new classifier
come from mulberry32 draws the tests repeat, so only summaries are stored.

usage: $XFER_PYTHON scripts/make-finetune-reference.py <mobilenet_v2 .onnx from builtinOnnxPath>
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_torch import OnnxTop, mulberry32, uniform  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'finetune')
SETTINGS = {'label_smoothing': 0.1, 'lr_head': 0.01, 'lr_backbone': 0.001, 'momentum': 0.9, 'sgd_wd': 1e-4, 'adamw_wd': 0.01, 'steps': 2, 'head_seed': 7,
            # with batch-statistics BN many gradient entries are 0 or nearly (a BN removes per-channel
            # shifts and scales), where float32 leaves ~1e-9 of noise; Adam's step lr·g/(|g| + eps) turns
            # that into up to lr with eps 1e-8, into ~1e-8 (below the tolerance) with eps 1e-4
            'adamw_eps_batch_bn': 1e-4}


def summary(a, k, rows=False):
    """Norm, dot with a mulberry32 probe, 8 sampled entries; with rows, the norm of every row
    (output channel) too, so that an error in one channel shows."""
    a = a.detach().double().numpy()
    r = np.sqrt((a.reshape(a.shape[0], -1) ** 2).sum(1)) if a.ndim > 1 else np.abs(a)
    a = a.ravel()
    probe = mulberry32(1000 + k, a.size) * 2 - 1
    idx = np.floor(mulberry32(2000 + k, 8) * a.size).astype(np.int64)
    out = {'norm': float(np.linalg.norm(a)), 'dot': float(a @ probe), 'maxabs': float(np.abs(a).max()), 'idx': idx.tolist(), 'val': a[idx].tolist()}
    if rows:
        out['rows'] = [float('%.9g' % v) for v in r]
    return out


def set_bn_train(model, on):
    if isinstance(model, OnnxTop):
        model.bn_train = on
    else:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.train(on)


def buffers_of(model):
    if isinstance(model, OnnxTop):
        return model.named_buffers_onnx()
    return [(k.removeprefix('body.'), v) for k, v in model.named_buffers() if not k.endswith('num_batches_tracked')]


def run(make, x, y, n_classes, batch_bn=False):
    s = SETTINGS
    x = x.double()
    model = make().double()
    model.eval()
    set_bn_train(model, batch_bn)
    logits = model(x)
    loss = F.cross_entropy(logits, y, label_smoothing=s['label_smoothing'])
    loss.backward()
    named = model.named_trainables()
    out = {'loss': float(loss), 'params': [n for n, _ in named], 'grads': {n: summary(p.grad, k, rows=True) for k, (n, p) in enumerate(named)}}
    for opt_name in ('sgd', 'adamw'):
        model = make().double()
        model.eval()
        with torch.no_grad():
            model(x)  # makes OnnxTop's classifier; in eval mode, so the running statistics stay
        set_bn_train(model, batch_bn)
        named = model.named_trainables()
        before = [p.detach().clone() for _, p in named]
        head = [p for n, p in named if n.startswith('head.')]
        body = [p for n, p in named if not n.startswith('head.')]
        groups = [{'params': head, 'lr': s['lr_head']}, {'params': body, 'lr': s['lr_backbone']}]
        if opt_name == 'sgd':
            opt = torch.optim.SGD(groups, momentum=s['momentum'], weight_decay=s['sgd_wd'])
        else:
            opt = torch.optim.AdamW(groups, weight_decay=s['adamw_wd'], eps=s['adamw_eps_batch_bn'] if batch_bn else 1e-8)
        losses = []
        for _ in range(s['steps']):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y, label_smoothing=s['label_smoothing'])
            loss.backward()
            opt.step()
            losses.append(float(loss))
        out[opt_name] = {'losses': losses, 'deltas': {n: summary(p.detach() - b, k) for k, ((n, p), b) in enumerate(zip(named, before))}}
        if batch_bn:
            out[opt_name]['buffers'] = {n: summary(b, 100 + k) for k, (n, b) in enumerate(buffers_of(model))}
    return out


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) if stride != 1 or cin != cout else None

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + idt)


class Layer4(nn.Module):
    """torchvision ResNet-18's layer4 + avgpool + fc, widths 256/512 reduced to 32/64."""

    def __init__(self, n_out=10):
        super().__init__()
        self.layer4 = nn.Sequential(BasicBlock(32, 64, 2), BasicBlock(64, 64, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, n_out)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.layer4(x)), 1))


def resnet_case(n_classes, x, y, batch_bn=False):
    torch.manual_seed(0)
    net = Layer4()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    net.eval()
    path = os.path.join(OUT, 'resnet18_layer4_small.onnx')
    torch.onnx.export(net, (x,), path, input_names=['input'], output_names=['output'], opset_version=17, dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False, dynamic_axes={'input': {0: 'N'}, 'output': {0: 'N'}})
    state = {k: v.clone() for k, v in net.state_dict().items()}

    class Ref(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = Layer4()
            self.body.load_state_dict(state)
            b = 1 / np.sqrt(64)
            v = uniform(SETTINGS['head_seed'], n_classes * 64 + n_classes, -b, b)
            self.head = nn.Linear(64, n_classes)
            with torch.no_grad():
                self.head.weight.copy_(torch.from_numpy(v[: n_classes * 64].reshape(n_classes, 64)))
                self.head.bias.copy_(torch.from_numpy(v[n_classes * 64:]))

        def forward(self, x):
            return self.head(torch.flatten(self.body.avgpool(self.body.layer4(x)), 1))

        def named_trainables(self):
            return [(k, p) for k, p in self.body.named_parameters() if not k.startswith('fc.')] + [('head.weight', self.head.weight), ('head.bias', self.head.bias)]

    return run(Ref, x, y, n_classes, batch_bn)  # (run() turns it to float64)


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    cases = {}
    n, k = 2, 3
    make = lambda: OnnxTop(sys.argv[1], 'block_13_expand_relu', 'flatten_1', k, SETTINGS['head_seed'])  # noqa: E731
    # An input whose ReLU6 inputs all stay clear of the kinks by more than float32 rounding (else
    # the float32 graph and this float64 reference may take different sides of one; seen once).
    y = torch.arange(n) % k
    for batch_bn in (False, True):
        probe = make()
        probe.bn_train = batch_bn
        for seed in range(11, 60):
            x = torch.from_numpy(uniform(seed, n * 576 * 14 * 14, 0, 6).reshape(n, 576, 14, 14))
            with torch.no_grad():
                probe.features(x.double())
            margin = probe.kink_margin()
            print(f'mobilenet_v2 (batch BN {batch_bn}): input seed {seed}, kink margin {margin:.2e}', file=sys.stderr)
            if margin > 3e-6:
                break
        cases['mobilenet_v2' + ('_batch_bn' if batch_bn else '')] = {'from': 'block_13_expand_relu', 'n': n, 'classes': k, 'x': {'seed': seed, 'lo': 0, 'hi': 6}, 'kink_margin': margin,
                                                                     **run(make, x, y, k, batch_bn)}
    n, k = 3, 4
    x = torch.from_numpy(uniform(12, n * 32 * 8 * 8, -1, 1).reshape(n, 32, 8, 8))
    y = torch.arange(n) % k
    cases['resnet18_layer4'] = {'from': 'input', 'n': n, 'classes': k, 'x': {'seed': 12, 'lo': -1, 'hi': 1}, **resnet_case(k, x, y)}
    cases['resnet18_layer4_batch_bn'] = {'from': 'input', 'n': n, 'classes': k, 'x': {'seed': 12, 'lo': -1, 'hi': 1}, **resnet_case(k, x, y, True)}
    with open(os.path.join(OUT, 'reference.json'), 'w') as f:
        json.dump({'settings': SETTINGS, 'torch': torch.__version__, 'cases': cases}, f, indent=1)


if __name__ == '__main__':
    main()
