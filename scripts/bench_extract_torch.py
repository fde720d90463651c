#!/usr/bin/env python3
"""PyTorch anchor for `npm run bench:extract` (scripts/bench-extract.ts).

The extraction pipeline a PyTorch user would write for the same job as `xfer extract` with the
default backbone: an ImageFolder-style Dataset decoding with PIL (resize 256, centre crop 224,
normalise), a DataLoader with worker processes, and MobileNetV2 with its classifier removed, giving
pooled 1280-d codes. The network is written out in plain torch (the layers of torchvision's
mobilenet_v2, random weights: speed does not depend on them), because torchvision's compiled ops do
not load with current torch wheels here. Prints one JSON line:
  {"images": n, "seconds": s, "rate": n / s, "torch": "2.13.0+cpu", "mode": "torchscript", "batch": 2, "workers": 2}
Timed: the loop over the DataLoader (worker start-up, decoding, inference), after the model is built
(and, in torchscript mode, scripted and optimized) and run once on a zero batch.

  python scripts/bench_extract_torch.py <image folder> [--mode eager|torchscript] [--batch 2] [--workers 2]
"""
import argparse
import json
import os
import time

import numpy as np
import torch
from PIL import Image
from torch import nn


class Folder(torch.utils.data.Dataset):
    """<root>/<class>/<image>, as torchvision's ImageFolder lists it, with its default transforms in PIL."""

    def __init__(self, root):
        classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        self.items = [(os.path.join(root, c, f), i) for i, c in enumerate(classes) for f in sorted(os.listdir(os.path.join(root, c)))]
        self.mean = np.array([0.485, 0.456, 0.406], np.float32)
        self.std = np.array([0.229, 0.224, 0.225], np.float32)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, k):
        p, y = self.items[k]
        im = Image.open(p).convert("RGB")
        w, h = im.size
        s = 256 / min(w, h)
        im = im.resize((max(256, round(w * s)), max(256, round(h * s))), Image.BILINEAR)
        w, h = im.size
        left, top = int(round((w - 224) / 2)), int(round((h - 224) / 2))
        x = np.asarray(im.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
        x = (x - self.mean) / self.std
        return torch.from_numpy(x.transpose(2, 0, 1).copy()), y


def cbr(i, o, s=1, g=1, k=3):
    return [nn.Conv2d(i, o, k, s, (k - 1) // 2, groups=g, bias=False), nn.BatchNorm2d(o), nn.ReLU6(inplace=True)]


class Block(nn.Module):
    """torchvision's InvertedResidual."""

    def __init__(self, i, o, s, t):
        super().__init__()
        h = i * t
        self.res = s == 1 and i == o
        self.conv = nn.Sequential(*((cbr(i, h, k=1) if t != 1 else []) + cbr(h, h, s, h) + [nn.Conv2d(h, o, 1, bias=False), nn.BatchNorm2d(o)]))

    def forward(self, x):
        return x + self.conv(x) if self.res else self.conv(x)


class MobileNetV2Codes(nn.Module):
    """torchvision.models.mobilenet_v2() up to the global average pool (1280-d codes)."""

    def __init__(self):
        super().__init__()
        layers, c = cbr(3, 32, 2), 32
        for t, o, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
            for j in range(n):
                layers.append(Block(c, o, s if j == 0 else 1, t))
                c = o
        layers += cbr(c, 1280, k=1)
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        return nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--mode", choices=["eager", "torchscript"], default="torchscript")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    ds = Folder(a.root)
    dl = torch.utils.data.DataLoader(ds, batch_size=a.batch, num_workers=a.workers, shuffle=False)
    m = MobileNetV2Codes().eval()
    if a.mode == "torchscript":
        m = torch.jit.optimize_for_inference(torch.jit.script(m))
    n = 0
    with torch.inference_mode():
        m(torch.zeros(a.batch, 3, 224, 224))
        t = time.perf_counter()
        for xb, _ in dl:
            m(xb)
            n += xb.shape[0]
        s = time.perf_counter() - t
    print(json.dumps({"images": n, "seconds": s, "rate": n / s, "torch": torch.__version__, "mode": a.mode, "batch": a.batch, "workers": a.workers}))


if __name__ == "__main__":
    main()
