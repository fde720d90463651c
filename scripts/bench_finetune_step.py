"""PyTorch anchor for bench:finetune-step: the built-in backbone's top from a tap (BN in eval mode,
ReLU6, the new linear classifier), one SGD-momentum step per batch, at a given thread count,
channels-first and channels-last. Prints one JSON line: {"nchw": ms, "nhwc": ms} (median step).

usage: $XFER_PYTHON scripts/bench_finetune_step.py <model.onnx> <from> <to> <classes> <batch> <threads> <steps> <C> <H> <W> [frozen|batch]
(batch: BN in train mode, batch statistics, as xfer's --batch-norm batch)
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_torch import OnnxTop, uniform  # noqa: E402


def main():
    path, frm, to, k, n, threads, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
    torch.set_num_threads(threads)
    out = {}
    for fmt in ('nchw', 'nhwc'):
        model = OnnxTop(path, frm, to, k, 7, dtype=torch.float32)
        model.eval()
        model.bn_train = len(sys.argv) > 11 and sys.argv[11] == 'batch'
        c, h, w = [int(v) for v in sys.argv[8:11]]
        x = torch.from_numpy(uniform(5, n * c * h * w, 0, 6).reshape(n, c, h, w))
        y = torch.arange(n) % k
        with torch.no_grad():
            model(x)  # makes the classifier
        if fmt == 'nhwc':
            x = x.contiguous(memory_format=torch.channels_last)
            for p in model.parameters():
                if p.dim() == 4:
                    p.data = p.data.contiguous(memory_format=torch.channels_last)
        body = [p for name, p in model.named_trainables() if not name.startswith('head.')]
        opt = torch.optim.SGD([{'params': [model.head.weight, model.head.bias], 'lr': 0.01}, {'params': body, 'lr': 0.001}], momentum=0.9, weight_decay=1e-4)
        times = []
        for i in range(steps + 3):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            loss.backward()
            opt.step()
            if i >= 3:
                times.append((time.perf_counter() - t0) * 1000)
        out[fmt] = float(np.median(times))
    print(json.dumps(out))


if __name__ == '__main__':
    main()
