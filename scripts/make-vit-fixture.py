"""Tiny ViT test fixture: a seeded 2-block ViT (patch embedding, class token, position embedding,
multi-head attention, LayerNorm, GELU MLP) exported to ONNX, plus PyTorch's token poolings of its
last hidden state, for test/model-token-pool.test.ts.
    XFER_PYTHON=<python with torch, onnx> $XFER_PYTHON scripts/make-vit-fixture.py
The input is a formula (x[i] = 0.5 sin(0.1 i) over the flat NCHW index), so the test recomputes it."""
import json, math, os, sys
import numpy as np
import torch
from torch import nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures')
torch.manual_seed(20)
IMG, PATCH, DIM, HEADS, DEPTH = 32, 8, 32, 4, 2
T = (IMG // PATCH) ** 2 + 1

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(DIM, eps=1e-6)
        self.attn = nn.MultiheadAttention(DIM, HEADS, batch_first=True)
        self.norm2 = nn.LayerNorm(DIM, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))
    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))

class TinyViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, DIM, PATCH, PATCH)
        self.cls = nn.Parameter(torch.randn(1, 1, DIM) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, T, DIM) * 0.1)
        self.blocks = nn.Sequential(*[Block() for _ in range(DEPTH)])
        self.norm = nn.LayerNorm(DIM, eps=1e-6)
        self.head = nn.Linear(DIM, 5)
    def forward(self, x):
        p = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(p.shape[0], -1, -1), p], dim=1) + self.pos
        h = self.norm(self.blocks(x))
        return h, self.head(h[:, 0])

model = TinyViT().eval()
n = 2
x = torch.tensor((0.5 * np.sin(0.1 * np.arange(n * 3 * IMG * IMG, dtype=np.float64))).astype(np.float32).reshape(n, 3, IMG, IMG))
with torch.no_grad():
    h, logits = model(x)
onnx_path = os.path.join(OUT, 'tiny-vit.onnx')
kw = dict(input_names=['pixel_values'], output_names=['last_hidden_state', 'logits'], opset_version=17,
          dynamic_axes={'pixel_values': {0: 'batch'}, 'last_hidden_state': {0: 'batch'}, 'logits': {0: 'batch'}})
try:
    torch.onnx.export(model, (x,), onnx_path, dynamo=False, **kw)
except TypeError:
    torch.onnx.export(model, (x,), onnx_path, **kw)
cls = h[:, 0]
patch_mean = h[:, 1:].mean(dim=1)
ref = {
    'about': 'tiny ViT (scripts/make-vit-fixture.py): PyTorch poolings of last_hidden_state [N,T,C] for the formula input',
    'torch': torch.__version__, 'input_shape': [n, 3, IMG, IMG], 'tokens': T, 'dim': DIM,
    'cls': cls.tolist(), 'mean': h.mean(dim=1).tolist(), 'patch-mean': patch_mean.tolist(),
    'cls+mean': torch.cat([cls, patch_mean], dim=1).tolist(), 'logits': logits.tolist(),
}
with open(os.path.join(OUT, 'tiny-vit.json'), 'w') as f:
    json.dump(ref, f)
print(onnx_path, os.path.getsize(onnx_path), 'bytes')
