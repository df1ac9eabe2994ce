#!/usr/bin/python3
"""The distributed peer: PyTorch DistributedDataParallel over torch.distributed's Gloo backend
(what Lightning's `strategy="ddp"` runs on CPU), on Fashion-MNIST (pixels / 255).
  torch_dist_peer.py WORLD PORT THREADS   (starts WORLD processes itself)
Rank 0 prints one JSON object: allreduce seconds for 7850 / 1M / 10M floats, and the seconds
of one Adam epoch at global batch 256 (per-rank batch 256 / WORLD, DistributedSampler).
Run with Debian's /usr/bin/python3."""
import gzip
import json
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

D = "/usr/share/datasets/fashion-mnist"


def idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def run(rank, world, port, threads, queue):
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    out = {"world_size": world, "torch": torch.__version__, "threads": threads, "sizes": []}
    for n in (7850, 1000000, 10000000):
        t = torch.ones(n)
        for _ in range(2):
            dist.all_reduce(t)
        calls, total = 0, 0.0
        while True:
            s = time.perf_counter()
            dist.all_reduce(t)
            total += time.perf_counter() - s
            calls += 1
            go = torch.tensor([1 if (total < 2.0 or calls < 5) and calls < 2000 else 0])
            if rank != 0:
                go.zero_()
            dist.all_reduce(go)
            if go.item() == 0:
                break
        out["sizes"].append({"floats": n, "calls": calls, "mean_seconds": total / calls})

    X = torch.from_numpy(idx(f"{D}/train-images-idx3-ubyte.gz", 16).reshape(-1, 784)
                         .astype(np.float32) / 255.0)
    y = torch.from_numpy(idx(f"{D}/train-labels-idx1-ubyte.gz", 8).astype(np.int64))
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(nn.Linear(784, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    data = TensorDataset(X, y)
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True)
    loader = DataLoader(data, batch_size=256 // world, sampler=sampler)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        s = time.perf_counter()
        for xb, yb in loader:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
        epochs.append(time.perf_counter() - s)
    out["adam_epoch_seconds_b256"] = min(epochs)
    if rank == 0:
        queue.put(out)
    dist.destroy_process_group()


def main():
    world, port, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=run, args=(r, world, port, threads, queue)) for r in range(world)]
    for p in procs:
        p.start()
    result = queue.get()
    for p in procs:
        p.join()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
