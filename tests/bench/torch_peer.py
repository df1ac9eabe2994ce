#!/usr/bin/python3
"""The peer: a plain PyTorch loop equivalent to Lightning Bolts' LogisticRegression
(nn.Linear + CrossEntropyLoss + Adam, shuffled DataLoader), on Fashion-MNIST (pixels / 255).
Prints one JSON object: seconds per Adam epoch at batch 16/256/1024, seconds per full-batch
forward+backward (float32, autograd), peak RSS. Run with Debian's /usr/bin/python3.
    torch_peer.py [THREADS] [DEVICE] [DATA_DIR] [LBFGS_ITERS]
With LBFGS_ITERS > 0 it also runs torch.optim.LBFGS (float64, history 100, strong Wolfe) on
the C = 1 objective and reports the time to gaps 1e-4 / 1e-5 / 1e-6 of scikit-learn's optimum.
On a GPU (DEVICE cuda) the data live on the device and batches are drawn with randperm (no
DataLoader), the fastest plain loop there; every timing ends with a device synchronise."""
import gzip
import json
import resource
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

D = sys.argv[3] if len(sys.argv) > 3 else "/usr/share/datasets/fashion-mnist"
DEV = torch.device(sys.argv[2] if len(sys.argv) > 2 else "cpu")


def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    X = torch.from_numpy(idx(f"{D}/train-images-idx3-ubyte.gz", 16).reshape(-1, 784).astype(np.float32) / 255.0)
    y = torch.from_numpy(idx(f"{D}/train-labels-idx1-ubyte.gz", 8).astype(np.int64))
    out = {"threads": threads, "torch": torch.__version__, "device": str(DEV)}
    X, y = X.to(DEV), y.to(DEV)

    model = nn.Linear(784, 10).to(DEV)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(2):  # warm-up + timed
        t = time.perf_counter()
        for _ in range(5):
            model.zero_grad()
            loss = loss_fn(model(X), y) + 0.5 / 60000 * (model.weight ** 2).sum()
            loss.backward()
        sync()
        full = (time.perf_counter() - t) / 5
    out["full_gradient_seconds_f32"] = full

    epochs = {}
    for batch in (16, 256, 1024):
        model = nn.Linear(784, 10).to(DEV)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        if DEV.type == "cuda":
            def batches():
                perm = torch.randperm(X.shape[0], device=DEV)
                for i in range(0, X.shape[0], batch):
                    idx = perm[i:i + batch]
                    yield X[idx], y[idx]
            for xb, yb in batches():  # warm-up epoch (kernels, allocator)
                opt.zero_grad()
                loss_fn(model(xb), yb).backward()
                opt.step()
            sync()
        else:
            loader = DataLoader(TensorDataset(X, y), batch_size=batch, shuffle=True)
            batches = lambda: iter(loader)
        t = time.perf_counter()
        for xb, yb in batches():
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
        sync()
        epochs[str(batch)] = time.perf_counter() - t
    out["adam_epoch_seconds"] = epochs
    lbfgs_iters = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    if lbfgs_iters > 0:
        out["lbfgs"] = lbfgs(X.double(), y, lbfgs_iters)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps(out))


SKLEARN_OPTIMUM = 0.3498933953  # scikit-learn lbfgs to convergence, C = 1 (baselines.md)


def lbfgs(X, y, iters):
    """torch.optim.LBFGS as a user runs it (one step() of up to `iters` iterations); the closure
    notes when an evaluated objective first comes within each gap of scikit-learn's optimum."""
    n = X.shape[0]
    W = torch.zeros(784, 10, dtype=torch.float64, device=DEV, requires_grad=True)
    b = torch.zeros(10, dtype=torch.float64, device=DEV, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=iters, max_eval=iters * 5 // 4,
                            history_size=100, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-15)
    ce = nn.CrossEntropyLoss()
    res = {}
    t0 = time.perf_counter()
    evals = [0, None]

    def closure():
        opt.zero_grad()
        f = ce(X @ W + b, y) + 0.5 / n * (W ** 2).sum()
        f.backward()
        evals[0] += 1
        evals[1] = f.item()
        gap = (evals[1] - SKLEARN_OPTIMUM) / SKLEARN_OPTIMUM
        for g in ("1e-4", "1e-5", "1e-6"):
            if gap <= float(g) and f"seconds_to_gap_{g}" not in res:
                res[f"seconds_to_gap_{g}"] = time.perf_counter() - t0
                res[f"evaluations_to_gap_{g}"] = evals[0]
        return f

    opt.step(closure)
    res["final_objective"] = evals[1]
    res["evaluations"] = evals[0]
    res["iterations"] = opt.state[opt._params[0]]["n_iter"]
    res["seconds"] = time.perf_counter() - t0
    return res


if __name__ == "__main__":
    main()
