#!/usr/bin/python3
"""Computes a dataset's reference optimum F* once, to a tight tolerance, and stores it.

    /usr/bin/python3 tests/bench/scale/reference.py DATASET [--scale S] [--data-dir DIR]
        [--C C] [--method auto|liblinear|newton-cg] [--out FILE]

F = mean log-loss + ||W||^2 / (2 C n), bias unpenalised (datasets.py). Methods:
  liblinear  liblinear-train -s 0 -c C -e 1e-8 (trust-region Newton; its objective is F times
             C n when there is no bias): binary data without a bias only. auto picks it there.
  newton-cg  scikit-learn's LogisticRegression(solver="newton-cg") (Newton with exact
             Hessian-vector products, multinomial for K > 2) to max |dF/dtheta| <= 1e-11:
             every other dataset.
F is recomputed here from the solution's weights, with the max-norm of its gradient as the
certificate of tightness. The entry goes to --out (default: the committed
tests/bench/scale/references.json) under the key "DATASET:scale=S:C=C" with the exact command
that produced it (--if-missing: only when no reference is known yet). The dataset is generated
first if it is missing (gen_data.py).
"""
import argparse
import json
import os
import shlex
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import datasets  # noqa: E402
import gen_data  # noqa: E402
import peers  # noqa: E402

LIBLINEAR_EPS = 1e-8
NEWTON_CG_GRADIENT = 1e-11  # max |dF/dtheta| asked of newton-cg


def gradient_max(X, y, W, b, C, bias):
    """max |dF/dtheta| over the weights (and the bias, when there is one)."""
    Z = datasets.logits(X, W, b)
    n = X.shape[0]
    if W.shape[1] == 1:
        R = 1 / (1 + np.exp(-Z)) - (y == 1)[:, None]
    else:
        P = np.exp(Z - Z.max(axis=1, keepdims=True))
        R = P / P.sum(axis=1, keepdims=True)
        R[np.arange(n), y] -= 1
    g = np.abs(np.asarray(X.T @ R) / n + W / (C * n)).max()
    return float(max(g, np.abs(R.mean(axis=0)).max()) if bias else g)


def by_liblinear(ds, C):
    train, _ = ds.files()
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "model")
        seconds, rss = peers.run_liblinear(train, model, C, LIBLINEAR_EPS, bias=False)
        W, b, _ = peers.read_liblinear_model(model, ds.features)
    cmd = f"{peers.LIBLINEAR} -q -s 0 -c {C!r} -e {LIBLINEAR_EPS!r} {train} MODEL"
    return W, b, seconds, cmd


def by_newton_cg(ds, C, X, y):
    from sklearn.linear_model import LogisticRegression
    # scikit-learn 1.2's newton-cg stops at max |gradient| <= tol of its objective, F times n.
    tol = NEWTON_CG_GRADIENT * ds.rows
    model = LogisticRegression(solver="newton-cg", C=C, tol=tol, max_iter=1000,
                               fit_intercept=ds.bias)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # line searches that cannot improve at the optimum
        model.fit(X, y)
    seconds = time.perf_counter() - t
    cmd = (f"sklearn.linear_model.LogisticRegression(solver='newton-cg', C={C!r}, tol={tol!r}, "
           f"max_iter=1000, fit_intercept={ds.bias}).fit(X, y)")
    return (*peers.sklearn_weights(model, ds), seconds, cmd)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", help="NAME[:PRESET]")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--data-dir", default="/var/tmp/logit-bench")
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--method", choices=("auto", "liblinear", "newton-cg"), default="auto")
    ap.add_argument("--out", default=datasets.REFERENCES)
    ap.add_argument("--if-missing", action="store_true",
                    help="do nothing when references.json or DATA_DIR/references.json has it")
    a = ap.parse_args()
    ds = datasets.Dataset(a.dataset, a.scale, a.data_dir)
    if a.if_missing:
        have, source = datasets.find_reference(ds, a.C, a.data_dir)
        if have is not None:
            print(f"{ds.key(a.C)}: F* = {have:.10f} ({source})")
            return
    gen_data.generate(ds)
    method = a.method
    if method == "auto":
        method = "liblinear" if ds.kind == "libsvm" and ds.classes == 2 and not ds.bias \
            else "newton-cg"
    if method == "liblinear" and (ds.kind != "libsvm" or ds.classes != 2 or ds.bias):
        raise SystemExit("liblinear solves F only for binary LibSVM data without a bias")
    X, y = datasets.load(ds)
    if method == "liblinear":
        W, b, seconds, solver = by_liblinear(ds, a.C)
    else:
        W, b, seconds, solver = by_newton_cg(ds, a.C, X, y)
    entry = {
        "objective": datasets.objective(X, y, W, b, a.C),
        "gradient_max_norm": gradient_max(X, y, W, b, a.C, ds.bias),
        "method": method,
        "solver_call": solver,
        "command": "/usr/bin/python3 tests/bench/scale/reference.py "
                   + " ".join(shlex.quote(v) for v in sys.argv[1:]),
        "solver_seconds": round(seconds, 2),
        "rows": ds.rows, "features": ds.features, "classes": ds.classes, "bias": ds.bias,
        "date": time.strftime("%Y-%m-%d"),
    }
    side = ds.sidecar()
    if side and "nnz" in side:
        entry["nnz"] = side["nnz"]
    refs = datasets.read_references(a.out)
    if "note" in refs.get(ds.key(a.C), {}):  # a person's remark on the entry outlives reruns
        entry["note"] = refs[ds.key(a.C)]["note"]
    refs[ds.key(a.C)] = entry
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out + ".part", "w") as f:
        json.dump(dict(sorted(refs.items())), f, indent=1)
        f.write("\n")
    os.replace(a.out + ".part", a.out)
    print(f"{ds.key(a.C)}: F* = {entry['objective']:.10f} (max |grad| "
          f"{entry['gradient_max_norm']:.1e}, {method}, {seconds:.1f}s) -> {a.out}")


if __name__ == "__main__":
    main()
