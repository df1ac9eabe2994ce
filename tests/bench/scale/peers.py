#!/usr/bin/python3
"""Runs one peer on one dataset and prints ONE JSON line of figures (Debian's /usr/bin/python3).

    peers.py PEER DATASET [--scale S] [--data-dir DIR] [--C C] [--threads N] [--budget SEC]
             [--adam-steps N]

Run each peer in a fresh process (run_scale_bench.sh does): peak_rss_mb is this process's (or,
for liblinear, the liblinear-train process's, from /usr/bin/time -v). Thread counts of the BLAS
libraries come from the environment (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS); torch uses
--threads. The objective is datasets.py's F = mean log-loss + ||W||^2 / (2 C n), bias
unpenalised, and every final objective is recomputed here from the peer's weights.

Peers and how their time to a relative gap (F - F*) / F* of 1e-4 / 1e-6 is measured (F* the
reference optimum: references.json, else DATA_DIR/references.json; without one, no gaps):
  sklearn-lbfgs  LogisticRegression(solver="lbfgs", tol=1e-10): one run, its objective traced by
                 wrapping the function scipy's L-BFGS-B evaluates (seconds since fit() began,
                 so input checks count); the run is stopped once the 1e-6 gap is reached.
  sklearn-saga   LogisticRegression(solver="saga"): cold runs with max_iter = 1, 2, 4, ...
                 epochs (saga keeps no state between fits); a gap's time is that of the
                 shortest run whose final objective is within it.
  liblinear      liblinear-train -s 0 -c C -e EPS (trust-region Newton, one thread): cold runs
                 with EPS = 1e-2 (its default), 1e-3, ... as for saga; its objective
                 ||w||^2/2 + C sum loss is F times C n. Binary data without a bias only is the
                 same problem; with classes > 2 it trains one-vs-rest and with a bias it
                 penalises it (-B 1): those runs report time and memory, no objective.
                 load_seconds: a run with -e 1, which stops at w = 0 (parse, one gradient,
                 model write): an upper bound of its load.
  torch-adam     the PyTorch loop equivalent to Lightning Bolts' LogisticRegression: nn.Linear
                 (classes outputs, 2 for binary data) + CrossEntropyLoss + Adam(lr 1e-3),
                 shuffled DataLoader minibatches; a sparse batch is a scipy CSR matrix
                 multiplied by the weight in an autograd Function (see sparse_product).
                 Seconds per epoch at batch 16, 256 and 4096, measured over at most
                 --adam-steps steps and a third of the budget each, then extrapolated to an
                 epoch ("adam_extrapolated" says which).
  torch-lbfgs    torch.optim.LBFGS (float64, history 100, strong Wolfe) on F, traced and
                 stopped like sklearn-lbfgs; sparse products as torch-adam's.
A peer that cannot run here (memory, format) reports status "skipped" with the reason; one that
raises reports "failed". Neither aborts: the JSON line is always printed.
"""
import argparse
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import datasets  # noqa: E402
from datasets import GapClock, gap, objective  # noqa: E402

LIBLINEAR = "/usr/bin/liblinear-train"
LIBLINEAR_EPS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
ADAM_BATCHES = (16, 256, 4096)
LBFGS_HISTORY = 100


class Skip(Exception):
    """The peer cannot run on this dataset here; the message says why."""


class Stop(Exception):
    """Ends a traced solver: the gaps are reached or the budget is spent."""


def now():
    return time.perf_counter()


def available_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def need(nbytes, what):
    """Skips the run when `what` needs more than 60% of the memory available now (the machine
    may be shared: a benchmark must not push it into the OOM killer)."""
    avail = available_bytes()
    if nbytes > 0.6 * avail:
        raise Skip(f"{what} needs ~{nbytes / 1e9:.1f} GB, {avail / 1e9:.1f} GB available")


def data_bytes(ds, value_bytes):
    """Memory of the training data as a peer holds it: CSR (values, int32 indices) or dense."""
    if ds.kind == "libsvm":
        return ds.expected_nnz() * (value_bytes + 4) + (ds.rows + 1) * 8
    return ds.rows * ds.features * value_bytes


def timed_load(ds, dtype):
    """(X, y, figures) with the load's seconds and MB/s of file read."""
    t = now()
    X, y = datasets.load(ds, dtype=dtype)
    s = now() - t
    return X, y, {"load_seconds": s, "load_mb_per_s": ds.file_bytes() / 1e6 / s}


def note_gaps(reached, g_run, seconds):
    """For solvers timed as a series of cold runs: a gap's time is the shortest run within it
    (a longer run may have been faster, by noise)."""
    for g in datasets.GAPS:
        if g_run is not None and g_run <= float(g):
            reached[g] = min(reached.get(g, seconds), seconds)


def model_columns(ds):
    return 1 if ds.classes == 2 else ds.classes


def traced_result(clock, best, evals, seconds, stop):
    return {"seconds_to_gap": clock.result(), "final_objective": best, "train_seconds": seconds,
            "passes": evals, "seconds_per_pass": seconds / max(evals, 1), "stop": stop}


# ---- scikit-learn

def sklearn_lbfgs(ds, a, ref):
    from scipy import optimize
    from sklearn.linear_model import LogisticRegression
    need(data_bytes(ds, 8) + 30 * ds.features * model_columns(ds) * 8, "float64 data + L-BFGS-B")
    X, y, out = timed_load(ds, np.float64)
    # F at w = 0 over the classes present (scikit-learn models only those).
    clock, f0 = GapClock(ref, 0.0), np.log(max(2, len(np.unique(y))))
    trace = {"first": None, "best": math.inf, "evals": 0}
    real_minimize = optimize.minimize

    # scikit-learn hands scipy its own scaling of F (a sum over rows in 1.2); its first
    # evaluation is at w = 0, where F = f0, which fixes the factor.
    def minimize(fun, x0, *args, **kwargs):
        def traced(w, *fargs):
            value, grad = fun(w, *fargs)
            t = now() - start
            trace["first"] = trace["first"] or value
            F = value * f0 / trace["first"]
            trace["best"] = min(trace["best"], F)
            trace["evals"] += 1
            clock.note(F, t)
            if clock.done():
                raise Stop("gap 1e-6 reached")
            if t > a.budget:
                raise Stop("budget")
            return value, grad
        return real_minimize(traced, x0, *args, **kwargs)

    optimize.minimize = minimize
    model = LogisticRegression(solver="lbfgs", C=a.C, tol=1e-10, max_iter=1_000_000,
                               fit_intercept=ds.bias)
    start = now()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X, y)
        stop = "its own rule (tol 1e-10)"
    except Stop as e:
        stop = str(e)
    finally:
        optimize.minimize = real_minimize
    out.update(traced_result(clock, trace["best"], trace["evals"], now() - start, stop))
    if stop.startswith("its own"):
        out["final_objective"] = sklearn_objective(model, X, y, ds, a.C)
    return out


def sklearn_weights(model, ds):
    """(W, b) of a fitted scikit-learn model in datasets.objective's layout. Classes absent
    from y (small scales) are not in its model: they get zero weights and a bias of -inf, the
    limit their optimum tends to."""
    W = model.coef_.T
    b = model.intercept_ if ds.bias else np.zeros(W.shape[1])
    if 1 < W.shape[1] < ds.classes:
        W_all, b_all = np.zeros((ds.features, ds.classes)), np.full(ds.classes, -np.inf)
        W_all[:, model.classes_], b_all[model.classes_] = W, b
        W, b = W_all, b_all
    return W, b


def sklearn_objective(model, X, y, ds, C):
    return objective(X, y, *sklearn_weights(model, ds), C)


def sklearn_saga(ds, a, ref):
    from sklearn.linear_model import LogisticRegression
    need(data_bytes(ds, 8) + ds.rows * ds.classes * 8 + 4 * ds.features * ds.classes * 8,
         "float64 data + saga's gradient memory and weight sums")
    X, y, out = timed_load(ds, np.float64)
    runs, reached, spent = [], {}, 0.0
    epochs = 1
    while True:
        model = LogisticRegression(solver="saga", C=a.C, tol=1e-15, max_iter=epochs,
                                   fit_intercept=ds.bias, random_state=0)
        t = now()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X, y)
        s = now() - t
        spent += s
        F = sklearn_objective(model, X, y, ds, a.C)
        runs.append({"epochs": epochs, "seconds": s, "objective": F})
        note_gaps(reached, gap(F, ref), s)
        converged = ref is None and len(runs) > 1 and abs(runs[-2]["objective"] - F) <= 1e-9 * F
        if len(reached) == len(datasets.GAPS) or converged:
            stop = "gap 1e-6 reached" if not converged else "objective settled"
            break
        if spent + 2 * s > a.budget or epochs >= 4096:
            stop = "budget"
            break
        epochs *= 2
    last = runs[-1]
    out.update({"seconds_to_gap": {g: reached.get(g) for g in datasets.GAPS},
                "final_objective": last["objective"], "train_seconds": last["seconds"],
                "passes": last["epochs"], "seconds_per_pass": last["seconds"] / last["epochs"],
                "stop": stop, "runs": runs})
    return out


# ---- liblinear

def run_liblinear(train, model_path, C, eps, bias):
    """Runs liblinear-train under /usr/bin/time -v: (wall seconds, peak RSS MB)."""
    cmd = ["/usr/bin/time", "-v", LIBLINEAR, "-q", "-s", "0", "-c", repr(C), "-e", repr(eps)]
    cmd += ["-B", "1"] if bias else []
    t = now()
    p = subprocess.run(cmd + [train, model_path], capture_output=True, text=True)
    s = now() - t
    if p.returncode != 0:
        raise RuntimeError(f"liblinear-train exited {p.returncode}: {p.stderr.strip()[-300:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return s, int(rss.group(1)) / 1024 if rss else None


def read_liblinear_model(path, features):
    """(W, b, labels) of a liblinear model file: W (features, 1 or K) with the binary column
    oriented towards label 1 (liblinear's scores its first label), b zeros without a bias
    feature. liblinear sizes W by the largest index in the data: W is padded to `features`."""
    with open(path) as f:
        header = {}
        for line in f:
            if line.strip() == "w":
                break
            key, _, value = line.partition(" ")
            header[key] = value.split()
        values = np.array(f.read().split(), dtype=np.float64)
    labels = [int(v) for v in header["label"]]
    cols = 1 if int(header["nr_class"][0]) == 2 else len(labels)
    M = values.reshape(-1, cols)
    bias = float(header["bias"][0])
    W, b = (M[:-1], M[-1] * bias) if bias >= 0 else (M, np.zeros(cols))
    if cols == 1 and labels[0] != 1:
        W, b = -W, -b
    return np.vstack([W, np.zeros((features - len(W), cols))]), b, labels


def liblinear(ds, a, ref):
    if ds.kind != "libsvm":
        raise Skip("liblinear-train reads LibSVM text only")
    train, _ = ds.files()
    same = ds.classes == 2 and not ds.bias
    out = {"threads": 1, "notes": []}
    if not same:
        out["notes"].append("one-vs-rest" if ds.classes > 2 else "penalised bias (-B 1)")
        out["notes"].append("not logit's objective: time and memory only")
    X = y = None
    if same:
        X, y = datasets.load(ds)  # to evaluate F of its models (not timed)
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "model")
        s, rss = run_liblinear(train, model, a.C, 1.0, ds.bias)
        out.update({"load_seconds": s, "load_mb_per_s": ds.file_bytes() / 1e6 / s,
                    "load_note": "upper bound: a run stopping at w = 0"})
        runs, reached, spent, peak = [], {}, s, rss
        for eps in LIBLINEAR_EPS if same else LIBLINEAR_EPS[:1]:
            s, rss = run_liblinear(train, model, a.C, eps, ds.bias)
            spent, peak = spent + s, max(peak or 0, rss or 0)
            F = None
            if same:
                F = objective(X, y, *read_liblinear_model(model, ds.features)[:2], a.C)
            runs.append({"eps": eps, "seconds": s, "objective": F, "peak_rss_mb": rss})
            note_gaps(reached, gap(F, ref), s)
            if len(reached) == len(datasets.GAPS) or spent + 3 * s > a.budget:
                break
    last = runs[-1]
    out.update({"seconds_to_gap": {g: reached.get(g) for g in datasets.GAPS},
                "final_objective": last["objective"], "train_seconds": last["seconds"],
                "peak_rss_mb": peak, "runs": runs,
                "stop": f"-e {last['eps']:g}" + (" reached gap 1e-6" if len(reached) == 2 else "")})
    return out


# ---- PyTorch

def dense_rows(X):
    """Dense rows as a torch tensor (uint8 pixels scaled by 1/255, as a Dataset transform
    would)."""
    import torch
    t = torch.from_numpy(np.ascontiguousarray(X))
    return t.float() / 255 if t.dtype == torch.uint8 else t


def sparse_product():
    """(W, X) -> X W for a scipy CSR X (a constant) and a dense tensor W, differentiable in W.
    scipy does both products: torch 1.13's CPU sparse CSR/COO products are 10-40x slower than
    scipy's here, and its CSR backward transposes X at every call."""
    import torch

    class SparseProduct(torch.autograd.Function):
        @staticmethod
        def forward(ctx, W, X):
            ctx.X = X
            return torch.from_numpy(np.asarray(X @ W.detach().numpy()))

        @staticmethod
        def backward(ctx, G):
            return torch.from_numpy(np.asarray(ctx.X.T @ G.numpy())), None

    return SparseProduct.apply


def torch_adam(ds, a, ref):
    import torch
    from torch import nn
    from torch.utils.data import DataLoader
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    K = max(2, ds.classes)
    need((data_bytes(ds, 4) if ds.kind == "libsvm" else ds.file_bytes())
         + 5 * ds.features * K * 4, "the data + the Linear layer and Adam's state")
    if ds.kind == "libsvm":
        X, y, out = timed_load(ds, np.float32)
    else:  # rows stay as stored (uint8 pixels too) and are converted per batch
        t = now()
        data, labels = ds.files()
        if ds.kind == "npy":
            X, y = np.load(data), np.load(labels).astype(np.int64)
        else:
            X = datasets.read_idx(data, 16).reshape(-1, ds.features)
            y = datasets.read_idx(labels, 8).astype(np.int64)
        s = now() - t
        out = {"load_seconds": s, "load_mb_per_s": ds.file_bytes() / 1e6 / s}
    labels = torch.from_numpy(y)
    sparse = ds.kind == "libsvm"
    product = sparse_product()

    def gather(idx):
        idx = np.asarray(idx)
        return (X[idx] if sparse else dense_rows(X[idx])), labels[idx]

    epochs, steps_run, extrapolated = {}, {}, {}
    for batch in ADAM_BATCHES:
        model = nn.Linear(ds.features, K)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = nn.CrossEntropyLoss()
        loader = DataLoader(range(ds.rows), batch_size=batch, shuffle=True, collate_fn=gather)
        per_epoch = math.ceil(ds.rows / batch)
        steps, t = 0, now()
        for xb, yb in loader:
            opt.zero_grad()
            z = product(model.weight.t(), xb) + model.bias if sparse else model(xb)
            loss_fn(z, yb).backward()
            opt.step()
            steps += 1
            if steps >= a.adam_steps or now() - t > a.budget / len(ADAM_BATCHES):
                break
        s = now() - t
        epochs[str(batch)] = s / steps * per_epoch
        steps_run[str(batch)] = steps
        extrapolated[str(batch)] = steps < per_epoch
    out.update({"adam_epoch_seconds": epochs, "adam_steps_measured": steps_run,
                "adam_extrapolated": extrapolated, "threads": a.threads})
    return out


def torch_lbfgs(ds, a, ref):
    import torch
    torch.set_num_threads(a.threads)
    cols = model_columns(ds)
    params = ds.features * cols
    need(data_bytes(ds, 8) + (2 * LBFGS_HISTORY + 6) * params * 8,
         f"float64 data + L-BFGS history {LBFGS_HISTORY} of {params:,} parameters")
    X, y, out = timed_load(ds, np.float64)
    n = ds.rows
    product = sparse_product()
    Xt = None if ds.kind == "libsvm" else torch.from_numpy(X)
    yt = torch.from_numpy(y)
    yf = yt.double()
    W = torch.zeros(ds.features, cols, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(cols, dtype=torch.float64, requires_grad=ds.bias)
    opt = torch.optim.LBFGS([W, b] if ds.bias else [W], lr=1, max_iter=1_000_000,
                            max_eval=1_250_000, history_size=LBFGS_HISTORY,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                            tolerance_change=1e-15)
    clock = GapClock(ref, 0.0)
    trace = {"best": math.inf, "evals": 0}
    bce, ce = torch.nn.BCEWithLogitsLoss(), torch.nn.CrossEntropyLoss()

    def closure():
        opt.zero_grad()
        z = (product(W, X) if Xt is None else Xt @ W) + b
        loss = bce(z[:, 0], yf) if cols == 1 else ce(z, yt)
        f = loss + (W ** 2).sum() / (2 * a.C * n)
        f.backward()
        t = now() - start
        trace["best"] = min(trace["best"], f.item())
        trace["evals"] += 1
        clock.note(f.item(), t)
        if clock.done():
            raise Stop("gap 1e-6 reached")
        if t > a.budget:
            raise Stop("budget")
        return f

    start = now()
    try:
        opt.step(closure)
        stop = "its own rule (tolerance_grad 1e-12, tolerance_change 1e-15)"
    except Stop as e:
        stop = str(e)
    out.update(traced_result(clock, trace["best"], trace["evals"], now() - start, stop))
    out["iterations"] = opt.state[opt._params[0]].get("n_iter")
    out["threads"] = a.threads
    return out


PEERS = {"sklearn-lbfgs": sklearn_lbfgs, "sklearn-saga": sklearn_saga, "liblinear": liblinear,
         "torch-adam": torch_adam, "torch-lbfgs": torch_lbfgs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("peer", choices=sorted(PEERS))
    ap.add_argument("dataset", help="NAME[:PRESET]")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--data-dir", default="/var/tmp/logit-bench")
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=1800, help="seconds the peer may spend")
    ap.add_argument("--adam-steps", type=int, default=2000,
                    help="most Adam steps measured per batch size before extrapolating")
    a = ap.parse_args()
    ds = datasets.Dataset(a.dataset, a.scale, a.data_dir)
    ref, ref_source = datasets.find_reference(ds, a.C, a.data_dir)
    out = {"peer": a.peer, "dataset": a.dataset, "scale": ds.scale, "rows": ds.rows,
           "features": ds.features, "classes": ds.classes, "bias": ds.bias, "C": a.C,
           "threads": a.threads, "reference": ref, "reference_source": ref_source}
    try:
        out.update(PEERS[a.peer](ds, a, ref))
        out["status"] = "ok"
    except Skip as e:
        out.update(status="skipped", reason=str(e))
    except Exception as e:  # reported, never raised: the suite goes on
        out.update(status="failed", reason=f"{type(e).__name__}: {e}")
    if out.get("final_objective") is not None:
        out["final_gap"] = gap(out["final_objective"], ref)
    if out["status"] != "skipped" and out.get("peak_rss_mb") is None:
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main()
