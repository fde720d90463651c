"""The PyTorch twin of a `bench:finetune` Fashion-MNIST recipe: fine-tunes the built-in backbone's
top (from block_12_add, the ONNX subgraph run by finetune_torch.OnnxTop with the model's weights) on
the activations xfer cached (`<features>/block_12_add/*.npy`, float16), with the same recipe: AdamW,
warmup + cosine per step, label smoothing, mixup (batch reversed), a stratified 10 % val carve, BN
frozen (eval) or with batch statistics (--bn train). Prints val and test accuracy per epoch and the
test accuracy of the best val epoch. Used to try recipe changes in PyTorch before building them
(docs/finetune.md, Benchmarks); its shuffles and initial classifier differ from xfer's.

usage: $XFER_PYTHON scripts/finetune_recipe_torch.py --features <bench-out>/fashion-mnist-20000-10000-features
         --model <mobilenet_v2 .onnx> [--bn eval|train] [--epochs 8] [--threads 1] [--seed 0] [--train n]
"""
import argparse, json, math, os, sys, time
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_torch import OnnxTop  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument('--features', required=True)
ap.add_argument('--model', required=True)
ap.add_argument('--bn', choices=['eval', 'train'], default='eval')
ap.add_argument('--epochs', type=int, default=8)
ap.add_argument('--train', type=int, default=0)
ap.add_argument('--lr', type=float, default=1e-3)
ap.add_argument('--lrb', type=float, default=1e-3)
ap.add_argument('--wd', type=float, default=1e-4)
ap.add_argument('--ls', type=float, default=0.1)
ap.add_argument('--mixup', type=float, default=0.2)
ap.add_argument('--batch', type=int, default=32)
ap.add_argument('--seed', type=int, default=0)
ap.add_argument('--threads', type=int, default=1)
ap.add_argument('--ema', type=float, default=0)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.set_flush_denormal(True)
torch.manual_seed(a.seed)
rng = np.random.default_rng(a.seed)

rows = [json.loads(l) for l in open(os.path.join(a.features, 'index.jsonl'))]
layer = os.path.join(a.features, 'block_12_add')
shards = sorted(f for f in os.listdir(layer) if f.endswith('.npy'))
arr = [np.load(os.path.join(layer, f), mmap_mode='r') for f in shards]
X = np.empty((len(rows),) + arr[0].shape[1:], dtype=np.float16)
for r in rows:
    X[r['row']] = arr[r['shard']][r['shard_row']]
X = torch.from_numpy(X)
y = torch.tensor([r['label_index'] for r in rows])
split = np.array([r['split'] for r in rows])
tr = np.where(split == 'train')[0]
te = np.where(split == 'test')[0]
# stratified 10 % val
val = []
for c in range(int(y.max()) + 1):
    idx = tr[y[tr].numpy() == c]
    idx = rng.permutation(idx)
    val += list(idx[: round(len(idx) * 0.1)])
val = np.array(sorted(val))
tr = np.setdiff1d(tr, val)
if a.train:
    tr = rng.permutation(tr)[: a.train]
K = int(y.max()) + 1
print(f'train {len(tr)} val {len(val)} test {len(te)}; {vars(a)}', flush=True)

model = OnnxTop(a.model, 'block_12_add', 'flatten_1', K, 7 + a.seed, dtype=torch.float32)
with torch.no_grad():
    model(X[:2].float())
body = [p for n, p in model.named_trainables() if not n.startswith('head.')]
opt = torch.optim.AdamW([{'params': [model.head.weight, model.head.bias], 'lr': a.lr, 'base': a.lr}, {'params': body, 'lr': a.lrb, 'base': a.lrb}], weight_decay=a.wd)
spe = math.ceil(len(tr) / a.batch)
total = spe * a.epochs
warm = spe * min(1, a.epochs / 10)
ema = [p.detach().clone() for _, p in model.named_trainables()] if a.ema else None


def sched(s):
    if s < warm:
        return (s + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm)))


def evaluate(idx):
    model.bn_train = False
    saved = None
    if ema:
        saved = [p.detach().clone() for _, p in model.named_trainables()]
        with torch.no_grad():
            for (_, p), e in zip(model.named_trainables(), ema):
                p.copy_(e)
    correct = 0
    with torch.no_grad():
        for i in range(0, len(idx), 32):
            b = idx[i:i + 32]
            f = model.features(X[b].float())
            z = model.head(f)
            correct += (z.argmax(1) == y[b]).sum().item()
    if saved:
        with torch.no_grad():
            for (_, p), s in zip(model.named_trainables(), saved):
                p.copy_(s)
    return correct / len(idx)


step = 0
best = (-1, 0, 0)
t0 = time.time()
for ep in range(a.epochs):
    order = rng.permutation(tr)
    ls = 0
    for bi in range(spe):
        b = order[bi * a.batch:(bi + 1) * a.batch]
        xb = X[b].float()
        tgt = F.one_hot(y[b], K).float() * (1 - a.ls) + a.ls / K
        if a.mixup > 0:
            lam = float(rng.beta(a.mixup, a.mixup))
            xb = lam * xb + (1 - lam) * xb.flip(0)
            tgt = lam * tgt + (1 - lam) * tgt.flip(0)
        for g in opt.param_groups:
            g['lr'] = g['base'] * sched(step)
        model.bn_train = a.bn == 'train'
        f = model.features(xb)
        z = model.head(f)
        loss = -(tgt * F.log_softmax(z, 1)).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if ema:
            d = min(a.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                for (_, p), e in zip(model.named_trainables(), ema):
                    e.mul_(d).add_(p.detach(), alpha=1 - d)
        ls += loss.item()
    va = evaluate(val)
    tea = evaluate(te)
    if va > best[0]:
        best = (va, tea, ep + 1)
    print(f'epoch {ep + 1}: loss {ls / spe:.4f} val {va * 100:.2f} test {tea * 100:.2f} ({time.time() - t0:.0f} s)', flush=True)
print(f'RESULT best-val epoch {best[2]}: test {best[1] * 100:.2f}; last test {tea * 100:.2f}', flush=True)
