"""The scale benchmark's datasets: shapes, files, loaders, the objective and the references.

Shared by gen_data.py, peers.py, reference.py and report.py (run them with Debian's
/usr/bin/python3). A dataset is named "NAME" or "NAME:PRESET" and sized by a --scale factor on
its rows (features and classes never scale), so small runs keep the shape of the big ones.

Objective everywhere (logit's, SPEC.md): F = mean over rows of log-loss + ||W||^2 / (2 C n),
bias unpenalised; binary data use one sigmoid column (as logit and scikit-learn do), K > 2
classes a softmax over K columns. uint8 pixels are features x / 255 (logit's default).
"""
import gzip
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# The committed reference optima (reference.py writes them); references computed by the suite
# for other scales go to DATA_DIR/references.json instead.
REFERENCES = os.path.join(HERE, "references.json")
FASHION_DIR = "/usr/share/datasets/fashion-mnist"

# kind: libsvm (text, 1-based sorted indices, values 1), npy (X.npy + y.npy) or idx (IDX .gz).
# bias: whether the objective has an (unpenalised) intercept. sparse-binary has none, so that
# liblinear (which would penalise its bias feature) solves exactly the same problem.
DATASETS = {
    "sparse-binary": dict(kind="libsvm", rows=2_000_000, features=1 << 20, nnz=40, zipf=1.1,
                          classes=2, bias=False, seed=1),
    "sparse-multi": dict(kind="libsvm", rows=2_000_000, features=1 << 20, nnz=40, zipf=1.1,
                         classes=10, bias=True, seed=2),
    "dense": dict(kind="npy", rows=1_000_000, features=1000, classes=10, bias=True,
                  dtype="float32", seed=3),
    "imagenet": dict(kind="npy", rows=20_000, features=150_528, classes=1000, bias=True,
                     dtype="uint8", shifted=1000, seed=4),
    # Real data, not generated: --scale does not apply.
    "fashion-mnist": dict(kind="idx", rows=60_000, features=784, classes=10, bias=True,
                          dtype="uint8", fixed=True),
}
# Presets override a dataset's defaults. "issue": issue 16's held-out sparse shape (200,000 x
# 2^18, 30 non-zeros per row, binary, C = 1, no bias). "small": fewer parameters for smoke
# tests (run_scale_bench.sh --quick): 2^16 x 10 instead of 2^20 x 10, 32 x 32 x 3 pixels and
# 100 classes instead of 224 x 224 x 3 and 1,000.
PRESETS = {
    ("sparse-binary", "issue"): dict(rows=200_000, features=1 << 18, nnz=30),
    ("sparse-multi", "small"): dict(features=1 << 16),
    ("imagenet", "small"): dict(features=3072, classes=100, shifted=300),
}
TEST_FRACTION = 0.1  # generated held-out test files have 10% of the training rows


class Dataset:
    """One dataset at one scale: its parameters and file paths."""

    def __init__(self, spec, scale, data_dir):
        name, _, preset = spec.partition(":")
        if name not in DATASETS:
            raise SystemExit(f"unknown dataset '{name}' (known: {', '.join(DATASETS)})")
        if preset and (name, preset) not in PRESETS:
            raise SystemExit(f"unknown preset '{spec}'")
        p = dict(DATASETS[name])
        p.update(PRESETS.get((name, preset), {}))
        self.fixed = p.pop("fixed", False)
        self.scale = 1.0 if self.fixed else float(scale)
        p["rows"] = max(10, round(p["rows"] * self.scale))
        if not self.fixed:
            p["test_rows"] = max(10, round(p["rows"] * TEST_FRACTION))
        self.spec, self.name, self.preset, self.params = spec, name, preset, p
        self.kind, self.rows, self.features = p["kind"], p["rows"], p["features"]
        self.classes, self.bias = p["classes"], p["bias"]
        self.dir = FASHION_DIR if self.fixed else os.path.join(
            data_dir, f"{name}{'-' + preset if preset else ''}-x{self.scale:g}")

    def key(self, C):
        """The key of this dataset's reference optimum in references.json."""
        return f"{self.spec}:scale={self.scale:g}:C={C:g}"

    def files(self, split="train"):
        """(data file, label file or None) of the training or test split."""
        if self.kind == "libsvm":
            return os.path.join(self.dir, f"{split}.svm"), None
        if self.kind == "npy":
            suffix = "" if split == "train" else "_test"
            return (os.path.join(self.dir, f"X{suffix}.npy"),
                    os.path.join(self.dir, f"y{suffix}.npy"))
        prefix = "train" if split == "train" else "t10k"
        return (os.path.join(self.dir, f"{prefix}-images-idx3-ubyte.gz"),
                os.path.join(self.dir, f"{prefix}-labels-idx1-ubyte.gz"))

    def file_bytes(self):
        return sum(os.path.getsize(f) for f in self.files() if f)

    def memory_bytes(self, nnz=None):
        """The bytes of the training data in memory: CSR with float32 values, int32 indices and
        int64 row pointers for sparse data (pass the nnz), the array itself for dense data."""
        if self.kind == "libsvm":
            return nnz * 8 + (self.rows + 1) * 8
        return self.rows * self.features * (4 if self.params["dtype"] == "float32" else 1)

    def expected_nnz(self):
        """An estimate of the training nnz (exact after gen_data.py: see sidecar())."""
        side = self.sidecar()
        if side and "nnz" in side:
            return side["nnz"]
        return self.rows * self.params.get("nnz", self.features)

    def sidecar(self):
        """What gen_data.py recorded about the files (parameters, nnz), or None."""
        path = os.path.join(self.dir, "params.json")
        if self.fixed or not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def logit_args(self):
        """The data flags of `logit train` for this dataset (the model flags are the caller's)."""
        data, labels = self.files()
        args = ["--data", data]
        if labels:
            args += ["--labels", labels]
        args += ["--format", self.kind, "--features", str(self.features),
                  "--classes", str(self.classes)]
        if not self.bias:
            args.append("--no-bias")
        return args


def load(ds, split="train", dtype=np.float64):
    """The split's features and int64 labels: a scipy CSR matrix (sparse) or an array of
    `dtype` (dense; uint8 pixels divided by 255)."""
    data, labels = ds.files(split)
    if ds.kind == "libsvm":
        from sklearn.datasets import load_svmlight_file
        X, y = load_svmlight_file(data, n_features=ds.features, zero_based=False, dtype=dtype)
        return X, y.astype(np.int64)
    if ds.kind == "npy":
        X, y = np.load(data), np.load(labels).astype(np.int64)
    else:
        X, y = read_idx(data, 16).reshape(-1, ds.features), read_idx(labels, 8).astype(np.int64)
    return to_features(X, dtype), y


def read_idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def to_features(X, dtype):
    """Dense rows as the model sees them: uint8 pixels scaled by 1/255."""
    if X.dtype == np.uint8:
        return X.astype(dtype) / dtype(255)
    return X.astype(dtype, copy=False)


def logits(X, W, b, block=65536):
    """X W + b in float64, by blocks of rows so that dense uint8 rows are converted a block at
    a time."""
    if not isinstance(X, np.ndarray):  # scipy sparse
        return np.asarray(X @ W) + b
    out = np.empty((X.shape[0], W.shape[1]))
    for i in range(0, X.shape[0], block):
        out[i:i + block] = to_features(X[i:i + block], np.float64) @ W + b
    return out


def objective(X, y, W, b, C):
    """F = mean log-loss + ||W||^2 / (2 C n); W is (d, 1) for binary data (sigmoid of one
    column) and (d, K) otherwise; b has W's columns (zeros without a bias)."""
    Z = logits(X, W, b)
    if W.shape[1] == 1:
        z = Z[:, 0]
        ce = np.logaddexp(0, z) - (y == 1) * z
    else:
        m = Z.max(axis=1, keepdims=True)
        ce = (np.log(np.exp(Z - m).sum(axis=1)) + m[:, 0]) - Z[np.arange(len(y)), y]
    return float(ce.mean() + (W ** 2).sum() / (2 * C * X.shape[0]))


def read_references(path):
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def find_reference(ds, C, data_dir):
    """The reference optimum of (dataset, scale, C) and where it came from, or (None, None):
    the committed references.json first, then DATA_DIR/references.json."""
    for path in (REFERENCES, os.path.join(data_dir, "references.json")):
        ref = read_references(path).get(ds.key(C))
        if ref is not None:
            return ref["objective"], path
    return None, None


GAPS = ("1e-4", "1e-6")  # the relative objective gaps (F - F*) / F* timed by every solver


class GapClock:
    """Notes the first time a solver's objective comes within each gap of the reference."""

    def __init__(self, reference, start):
        self.reference, self.start, self.seconds = reference, start, {}

    def note(self, f, now):
        if self.reference is None:
            return
        for g in GAPS:
            if g not in self.seconds and (f - self.reference) / abs(self.reference) <= float(g):
                self.seconds[g] = now - self.start

    def done(self):
        """Every gap reached (the solver may stop)."""
        return self.reference is not None and len(self.seconds) == len(GAPS)

    def result(self):
        return {g: self.seconds.get(g) for g in GAPS}


def gap(f, reference):
    return None if reference is None or f is None else (f - reference) / abs(reference)
