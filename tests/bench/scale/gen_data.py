#!/usr/bin/python3
"""Generates the scale benchmark's synthetic datasets (numpy only, deterministic by seed).

    /usr/bin/python3 tests/bench/scale/gen_data.py OUT_DIR [--scale S] [--datasets a,b:preset]

Each dataset goes to OUT_DIR/NAME[-PRESET]-xSCALE/ with a params.json sidecar; a dataset whose
sidecar holds the same parameters is not written again. Rows are made in fixed chunks, each
from its own seeded generator, so a smaller --scale gives a prefix of a larger one's rows.

  sparse-binary  LibSVM text shaped like click/text data: 2,000,000 x 2^20 by default, ~40
                 non-zeros per row (Poisson, duplicates merged), feature frequencies Zipf
                 (exponent 1.1) over a random permutation of the features, values 1; labels
                 0/1 drawn from a planted sparse linear model with logistic noise (no bias).
                 Preset "issue": 200,000 x 2^18, 30 non-zeros per row.
  sparse-multi   the same rows, labels 0..9 from a planted multinomial (softmax) model.
                 Preset "small": 2^16 features.
  dense          float32 X.npy (Gaussian features) + int64 y.npy, 1,000,000 x 1,000, 10
                 classes from a planted softmax model.
  imagenet       uint8 X.npy of 150,528 pixels, 1,000 classes, 20,000 rows (3 GB): each class
                 shifts 1,000 of its own pixels by +-5 around 128 under Gaussian noise
                 (sd 40), so the posterior of the class is a softmax of a linear model of the
                 pixels (the planted model, up to the clipping to 0..255).
                 Preset "small": 32 x 32 x 3 pixels, 100 classes, 300 shifted pixels each.
  fashion-mnist  real data (/usr/share/datasets/fashion-mnist): only checked and described.
Every generated dataset also gets a held-out test split of 10% of its rows (test.svm,
X_test.npy + y_test.npy) from other seeds.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import datasets  # noqa: E402

SPARSE_CHUNK = 65_536  # rows per generated chunk
DENSE_CHUNK = 50_000
IMAGE_CHUNK = 200
MARGIN_SD = 2.0  # the planted models' logits are scaled to this standard deviation
SPARSE_SUPPORT = 0.1  # fraction of features with a non-zero planted weight
IMAGE_SHIFT, IMAGE_NOISE = 5.0, 40.0


def chunks(rows, size):
    """(chunk index, first row, row count) of `rows` rows in chunks of `size`."""
    for c, start in enumerate(range(0, rows, size)):
        yield c, start, min(size, rows - start)


def draw_labels(rng, Z):
    """Labels from the planted model's logits: Bernoulli(sigmoid) for one column, else the
    softmax sampled by the Gumbel-max trick."""
    if Z.shape[1] == 1:
        return (rng.random(len(Z)) < 1 / (1 + np.exp(-Z[:, 0]))).astype(np.int64)
    return np.argmax(Z + rng.gumbel(size=Z.shape), axis=1)


# ---- sparse (LibSVM text)

class SparseModel:
    """The feature distribution (Zipf over permuted features) and the planted weights."""

    def __init__(self, p):
        rng = np.random.default_rng([p["seed"], 0])
        d = p["features"]
        self.d = d
        self.tokens = np.array([b" %d:1" % (j + 1) for j in range(d)], dtype=object)  # " j+1:1"
        self.perm = rng.permutation(d).astype(np.int64)
        freq = 1.0 / np.arange(1, d + 1) ** p["zipf"]
        freq /= freq.sum()
        self.cdf = np.cumsum(freq)
        self.draws = self.draws_for_distinct(freq, p["nnz"])
        cols = 1 if p["classes"] == 2 else p["classes"]
        self.W = np.where(rng.random((d, 1)) < SPARSE_SUPPORT, rng.standard_normal((d, cols)), 0.0)
        self.b = np.zeros(cols)
        # Scale W so that the logits have MARGIN_SD on a calibration sample of rows; with a
        # softmax, centre each class's logit there (a planted bias) so the classes are balanced.
        Z = self.logits(*self.rows(np.random.default_rng([p["seed"], 2]), 20_000))
        self.W *= MARGIN_SD / Z.std()
        if cols > 1:
            self.b = -Z.mean(axis=0) * MARGIN_SD / Z.std()

    @staticmethod
    def draws_for_distinct(freq, target):
        """The number of Zipf draws whose expected count of distinct features is `target`
        (duplicates are merged, and the frequent features repeat)."""
        lo, hi = float(target), 20.0 * target
        for _ in range(40):
            k = (lo + hi) / 2
            lo, hi = (k, hi) if (-np.expm1(k * np.log1p(-freq))).sum() < target else (lo, k)
        return (lo + hi) / 2

    def rows(self, rng, m):
        """m random rows as (row of each non-zero, its 0-based column, m): sorted by row, then
        column, without duplicates."""
        k = np.maximum(rng.poisson(self.draws, size=m), 1)
        r = np.repeat(np.arange(m, dtype=np.int64), k)
        u = rng.random(len(r))
        c = self.perm[np.minimum(np.searchsorted(self.cdf, u), self.d - 1)]
        keys = np.unique(r * self.d + c)
        return keys // self.d, keys % self.d, m

    def logits(self, r, c, m):
        return np.stack([np.bincount(r, weights=self.W[c, k], minlength=m)
                         for k in range(self.W.shape[1])], axis=1) + self.b


def write_libsvm(path, model, p, seed_tag, rows):
    """Writes `rows` rows as LibSVM text ("label i:1 j:1 ...\\n", 1-based increasing
    indices); returns the nnz. Each line is assembled from pre-formatted byte tokens."""
    label_tokens = np.array([b"%d" % k for k in range(p["classes"])], dtype=object)
    total = 0
    with open(path + ".part", "wb") as f:
        for c, _, m in chunks(rows, SPARSE_CHUNK):
            rng = np.random.default_rng([p["seed"], seed_tag, c])
            r, cols, _ = model.rows(rng, m)
            y = draw_labels(rng, model.logits(r, cols, m))
            counts = np.bincount(r, minlength=m)
            # Row i: its label, its tokens, "\n"; token j of row r sits at j + 2 r + 1.
            out = np.empty(len(cols) + 2 * m, dtype=object)
            starts = 2 * np.arange(m) + np.concatenate(([0], np.cumsum(counts)[:-1]))
            out[starts] = label_tokens[y]
            out[starts + counts + 1] = b"\n"
            out[np.arange(len(cols)) + 2 * r + 1] = model.tokens[cols]
            f.write(b"".join(out.tolist()))
            total += len(cols)
    os.replace(path + ".part", path)
    return total


def gen_sparse(ds):
    model = SparseModel(ds.params)
    train, _ = ds.files("train")
    test, _ = ds.files("test")
    nnz = write_libsvm(train, model, ds.params, 1, ds.rows)
    test_nnz = write_libsvm(test, model, ds.params, 3, ds.params["test_rows"])
    return {"nnz": nnz, "test_nnz": test_nnz}


# ---- dense (.npy)

def write_npy(ds, split, rows, seed_tag, chunk, make_rows):
    """Writes X (via open_memmap, a chunk at a time) and y; make_rows(rng, m) -> (X, y)."""
    X_path, y_path = ds.files(split)
    X = np.lib.format.open_memmap(X_path + ".part", mode="w+", dtype=ds.params["dtype"],
                                  shape=(rows, ds.features))
    y = np.empty(rows, dtype=np.int64)
    for c, start, m in chunks(rows, chunk):
        X[start:start + m], y[start:start + m] = make_rows(
            np.random.default_rng([ds.params["seed"], seed_tag, c]), m)
    X.flush()
    del X
    os.replace(X_path + ".part", X_path)
    np.save(y_path, y)


def gen_dense(ds):
    p = ds.params
    rng = np.random.default_rng([p["seed"], 0])
    # Gaussian features: logit k has variance sum_j W_jk^2 = MARGIN_SD^2.
    W = (rng.standard_normal((ds.features, ds.classes)) * MARGIN_SD / np.sqrt(ds.features))
    W = W.astype(np.float32)
    b = rng.standard_normal(ds.classes).astype(np.float32)

    def make_rows(rng, m):
        X = rng.standard_normal((m, ds.features), dtype=np.float32)
        return X, draw_labels(rng, X @ W + b)

    write_npy(ds, "train", ds.rows, 1, DENSE_CHUNK, make_rows)
    write_npy(ds, "test", p["test_rows"], 3, DENSE_CHUNK, make_rows)
    return {}


def gen_imagenet(ds):
    p = ds.params
    rng = np.random.default_rng([p["seed"], 0])
    # Class k shifts its own p["shifted"] pixels by +-IMAGE_SHIFT.
    pixels = np.stack([rng.choice(ds.features, p["shifted"], replace=False)
                       for _ in range(ds.classes)])
    shifts = (IMAGE_SHIFT * rng.choice([-1.0, 1.0], size=pixels.shape)).astype(np.float32)

    def make_rows(rng, m):
        y = rng.integers(ds.classes, size=m)
        X = rng.standard_normal((m, ds.features), dtype=np.float32)
        X *= IMAGE_NOISE
        X += 128.0
        X[np.arange(m)[:, None], pixels[y]] += shifts[y]
        return np.clip(np.rint(X), 0, 255).astype(np.uint8), y

    write_npy(ds, "train", ds.rows, 1, IMAGE_CHUNK, make_rows)
    write_npy(ds, "test", p["test_rows"], 3, IMAGE_CHUNK, make_rows)
    return {}


GENERATORS = {"sparse-binary": gen_sparse, "sparse-multi": gen_sparse, "dense": gen_dense,
              "imagenet": gen_imagenet}


def describe(ds, side):
    """One line: path, rows, features, classes, nnz or bytes."""
    data, _ = ds.files()
    size = ds.file_bytes() / 1e6
    if ds.kind == "libsvm":
        nnz = side["nnz"]
        what = (f"nnz {nnz:,} ({nnz / ds.rows:.1f}/row), {size:,.0f} MB text, "
                f"CSR {ds.memory_bytes(nnz) / 1e6:,.0f} MB")
    else:
        what = f"{ds.memory_bytes() / 1e6:,.0f} MB {ds.params['dtype']} ({size:,.0f} MB files)"
    return f"{data}: {ds.rows:,} rows x {ds.features:,} features, {ds.classes} classes, {what}"


def generate(ds):
    """Writes the dataset unless its sidecar says it is there with the same parameters;
    returns (the sidecar, whether it was written now)."""
    if ds.fixed:
        missing = [f for f in ds.files() if not os.path.exists(f)]
        if missing:
            raise SystemExit(f"{ds.spec}: missing {', '.join(missing)}")
        return {}, False
    side = ds.sidecar()
    if side is not None and side.get("params") == ds.params and all(
            os.path.exists(f) for split in ("train", "test") for f in ds.files(split) if f):
        return side, False
    os.makedirs(ds.dir, exist_ok=True)
    t = time.perf_counter()
    side = {"params": ds.params, **GENERATORS[ds.name](ds)}
    side["seconds"] = round(time.perf_counter() - t, 1)
    with open(os.path.join(ds.dir, "params.json"), "w") as f:
        json.dump(side, f, indent=1)
    return side, True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--scale", type=float, default=1.0, help="factor on the default row counts")
    ap.add_argument("--datasets", default="sparse-binary,sparse-multi,dense,imagenet",
                    help="comma-separated NAME[:PRESET] (presets: sparse-binary:issue, "
                         "sparse-multi:small, imagenet:small)")
    args = ap.parse_args()
    for spec in args.datasets.split(","):
        ds = datasets.Dataset(spec, args.scale, args.out_dir)
        side, made = generate(ds)
        note = "" if ds.fixed else f" [made in {side['seconds']}s]" if made else " [reused]"
        print(describe(ds, side) + note, flush=True)


if __name__ == "__main__":
    main()
