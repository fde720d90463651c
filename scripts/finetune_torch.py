"""Shared PyTorch helpers for the fine-tuning references and the step-time anchor.

mulberry32 is the twin of src/finetune/rng.ts (vectorised: its state advances by a constant, so the
i-th draw depends on seed + (i + 1) * 0x6D2B79F5 only). OnnxTop runs the trainable part of an ONNX
model (from a tensor to the pooled features) as a torch module whose parameters are the model's
Conv and BatchNormalization weights (BN in eval mode, or with bn_train batch statistics that
update the running ones, as nn.BatchNorm2d in train mode), plus a new nn.Linear classifier, all in
float64 by default (the references are then exact to well below the float32 graph's rounding).
"""
import numpy as np
import onnx
from onnx import numpy_helper
import torch
import torch.nn.functional as F

M32 = np.uint64(0xFFFFFFFF)


def mulberry32(seed, n):
    i = np.arange(1, n + 1, dtype=np.uint64)
    s = ((np.uint64(seed) + i * np.uint64(0x6D2B79F5)) & M32).astype(np.uint32)
    t = s
    t = (t ^ (t >> np.uint32(15))) * (t | np.uint32(1))
    t = t ^ (t + (t ^ (t >> np.uint32(7))) * (t | np.uint32(61)))
    t = t ^ (t >> np.uint32(14))
    return t.astype(np.float64) / 4294967296.0


def uniform(seed, n, lo, hi):
    return (lo + (hi - lo) * mulberry32(seed, n)).astype(np.float32)


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def part_nodes(graph, frm, to):
    """Nodes on the paths from tensor `frm` to tensor `to`, in graph order."""
    reach, down = {frm}, []
    for n in graph.node:
        if any(i in reach for i in n.input):
            down.append(n)
            reach.update(n.output)
    prod = {o: n for n in down for o in n.output}
    anc, stack = set(), [to]
    while stack:
        t = stack.pop()
        n = prod.get(t)
        if n is None or id(n) in anc or t == frm:
            continue
        anc.add(id(n))
        stack.extend(n.input)
    return [n for n in down if id(n) in anc]


class OnnxTop(torch.nn.Module):
    def __init__(self, model_path, frm, to, n_classes, head_seed, dtype=torch.float64):
        super().__init__()
        self.dtype = dtype
        self.bn_train = False
        m = onnx.load(model_path)
        arrays = {t.name: numpy_helper.to_array(t).copy() for t in m.graph.initializer}
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        self.consts = {k: torch.from_numpy(v.astype(np_dtype) if v.dtype == np.float32 else v) for k, v in arrays.items()}
        self.nodes = part_nodes(m.graph, frm, to)
        self.frm, self.to = frm, to
        self.params = torch.nn.ParameterDict()
        self.names = []
        for n in self.nodes:
            train = {'Conv': n.input[1:3], 'BatchNormalization': n.input[1:3]}.get(n.op_type, [])
            for p in train:
                if p and p not in self.names:
                    self.names.append(p)
                    self.params[str(len(self.names) - 1)] = torch.nn.Parameter(self.consts[p].clone())
        feat = None
        self.head = None
        self.n_classes, self.head_seed = n_classes, head_seed
        self._feat = feat

    def param(self, name):
        if name in self.names:
            return self.params[str(self.names.index(name))]
        return self.consts[name]

    def make_head(self, feature_dim):
        b = 1 / np.sqrt(feature_dim)
        v = uniform(self.head_seed, self.n_classes * feature_dim + self.n_classes, -b, b)
        self.head = torch.nn.Linear(feature_dim, self.n_classes, dtype=self.dtype)
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(v[: self.n_classes * feature_dim].reshape(self.n_classes, feature_dim)))
            self.head.bias.copy_(torch.from_numpy(v[self.n_classes * feature_dim:]))

    def features(self, x):
        env = {self.frm: x}
        for n in self.nodes:
            a = attrs(n)
            i = [env[t] if t in env else (self.param(t) if t else None) for t in n.input]
            op = n.op_type
            if op == 'Conv':
                p = a.get('pads', [0, 0, 0, 0])
                xi = i[0]
                if p[0] != p[2] or p[1] != p[3]:
                    xi = F.pad(xi, (p[1], p[3], p[0], p[2]))
                    p = [0, 0, 0, 0]
                y = F.conv2d(xi, i[1], i[2] if len(i) > 2 else None, stride=a.get('strides', [1, 1]), padding=(p[0], p[1]), dilation=a.get('dilations', [1, 1]), groups=a.get('group', 1))
            elif op == 'BatchNormalization':
                y = F.batch_norm(i[0], i[3], i[4], i[1], i[2], training=self.bn_train, momentum=0.1, eps=a.get('epsilon', 1e-5))
            elif op == 'Clip':
                y = F.hardtanh(i[0], float(i[1]), float(i[2])) if float(i[1]) == 0 else torch.clamp(i[0], float(i[1]), float(i[2]))
            elif op == 'Relu':
                y = F.relu(i[0])
            elif op in ('Sum', 'Add'):
                y = i[0]
                for t in i[1:]:
                    y = y + t
            elif op == 'Pad':
                p = [int(v) for v in i[1].tolist()]
                r = len(p) // 2
                y = F.pad(i[0], (p[r - 1], p[2 * r - 1], p[r - 2], p[2 * r - 2]))
            elif op in ('AveragePool', 'GlobalAveragePool'):
                y = i[0].mean(dim=(2, 3), keepdim=True)
            elif op == 'Transpose':
                y = i[0].permute(*a['perm'])
            elif op == 'Flatten':
                y = torch.flatten(i[0], 1)
            elif op in ('Identity', 'Dropout'):
                y = i[0]
            else:
                raise ValueError(f'OnnxTop: op {op} not supported')
            env[n.output[0]] = y
        self.last = env
        return torch.flatten(env[self.to], 1)

    def kink_margin(self):
        """Smallest distance of a Relu/Clip input from its kinks in the last forward (exact kink
        values excluded: both sides agree on those). The float32 graph and a float64 reference pick
        different sides of a kink closer than float32 rounding, so references need a margin."""
        out = np.inf
        for n in self.nodes:
            if n.op_type not in ('Clip', 'Relu'):
                continue
            z = self.last[n.input[0]].detach().double().numpy()
            for k in ([0.0] if n.op_type == 'Relu' else [float(self.param(n.input[1])), float(self.param(n.input[2]))]):
                d = np.abs(z - k)
                d = d[d > 0]
                if d.size:
                    out = min(out, float(d.min()))
        return out

    def forward(self, x):
        f = self.features(x)
        if self.head is None:
            self.make_head(f.shape[1])
        return self.head(f)

    def named_buffers_onnx(self):
        """Running statistics of the BatchNormalization nodes, by ONNX name."""
        return [(t, self.consts[t]) for n in self.nodes if n.op_type == 'BatchNormalization' for t in n.input[3:5]]

    def named_trainables(self):
        return [(n, self.param(n)) for n in self.names] + [('head.weight', self.head.weight), ('head.bias', self.head.bias)]
