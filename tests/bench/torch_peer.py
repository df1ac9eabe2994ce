#!/usr/bin/python3
"""The peer: a plain PyTorch loop equivalent to Lightning Bolts' LogisticRegression
(nn.Linear + CrossEntropyLoss + Adam, shuffled DataLoader), on Fashion-MNIST (pixels / 255).
Prints one JSON object: seconds per Adam epoch at batch 16/256/1024, seconds per full-batch
forward+backward (float32, autograd), peak RSS. Run with Debian's /usr/bin/python3."""
import gzip
import json
import resource
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

D = "/usr/share/datasets/fashion-mnist"


def idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    X = torch.from_numpy(idx(f"{D}/train-images-idx3-ubyte.gz", 16).reshape(-1, 784).astype(np.float32) / 255.0)
    y = torch.from_numpy(idx(f"{D}/train-labels-idx1-ubyte.gz", 8).astype(np.int64))
    out = {"threads": threads, "torch": torch.__version__}

    model = nn.Linear(784, 10)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(2):  # warm-up + timed
        t = time.perf_counter()
        for _ in range(5):
            model.zero_grad()
            loss = loss_fn(model(X), y) + 0.5 / 60000 * (model.weight ** 2).sum()
            loss.backward()
        full = (time.perf_counter() - t) / 5
    out["full_gradient_seconds_f32"] = full

    epochs = {}
    for batch in (16, 256, 1024):
        model = nn.Linear(784, 10)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loader = DataLoader(TensorDataset(X, y), batch_size=batch, shuffle=True)
        t = time.perf_counter()
        for xb, yb in loader:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
        epochs[str(batch)] = time.perf_counter() - t
    out["adam_epoch_seconds"] = epochs
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
