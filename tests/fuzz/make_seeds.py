#!/usr/bin/python3
"""Writes the seed corpora of tests/fuzz/corpus/<target>/ (small valid and near-valid inputs).

    /usr/bin/python3 tests/fuzz/make_seeds.py

Needs Debian's python3-numpy and python3-protobuf (protoc generates the Python messages into a
temporary directory). The seeds are committed; rerun only to change them. Seed files carry no
extension (.gitignore drops *.npz outside tests/data).
"""
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def npy(array, version=None):
    buf = io.BytesIO()
    if version is None:
        np.save(buf, array)
    else:
        np.lib.format.write_array(buf, array, version=version)
    return buf.getvalue()


def pair(a, b):
    """Two parts in the split the targets use: a 2-byte little-endian length, part one, part two."""
    return struct.pack("<H", len(a)) + a + b


def idx(array, type_code=0x08):
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(
        struct.pack(">I", n) for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def npz(members, compressed=False):
    buf = io.BytesIO()
    mode = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", mode) as z:
        for name, value in members.items():
            z.writestr(name + ".npy", npy(value) if isinstance(value, np.ndarray) else value)
    return buf.getvalue()


def safetensors(tensors, metadata):
    header, blobs, offset = {}, [], 0
    for name, (array, dtype) in tensors.items():
        raw = array.tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def csv_seeds():
    t = "csv_fuzz"
    put(t, "header", "x1,x2,label\n0.5,1.25,0\n-3,2e-3,1\n7,8,1\n")
    put(t, "no_header", "1,2,3,0\n4,5,6,1\n7,8,9,2\n")
    put(t, "quoted_crlf", "\"a\",'b',\"y\"\r\n1.5,+2,-1\r\n\r\n3,4,1\r\n")
    put(t, "unlabeled", "0.1,0.2\n0.3,0.4\n")
    put(t, "ragged", "a,b,y\n1,2,0\n3,1\n")
    put(t, "non_finite", "a,b,y\n1,nan,0\ninf,2,1\n1e39,1e-45,0\n")
    put(t, "empty_fields", "a,b,y\n,,\n1,,0\n")


def libsvm_seeds():
    t = "libsvm_fuzz"
    put(t, "one_based", "1 1:0.5 3:1.5\n-1 2:2 4:-1e-3\n+1 1:1\n")
    put(t, "zero_based", "0 0:1 1:2\n1 0:3 5:4\n")
    put(t, "qid_comments", "# header comment\n2 qid:1 1:1 2:2 # trailing\n\n0 qid:2 3:1\n")
    put(t, "tabs", "1\t1:1\t2:2\n0\t7:0.25\n")
    put(t, "decreasing", "1 3:1 2:1\n")
    put(t, "bad_pairs", "1 1:nan\n0 x:1\n2.5 1:1\n1 2147483648:1\n")


def npy_seeds():
    t = "npy_fuzz"
    x = np.arange(6, dtype=np.float32).reshape(3, 2) / 4
    put(t, "f4_i8", pair(npy(x), npy(np.array([0, 1, 1], dtype=np.int64))))
    put(t, "f8_u1", pair(npy(x.astype(np.float64)), npy(np.array([2, 0, 1], dtype=np.uint8))))
    put(t, "u1_f4labels", pair(npy(np.arange(8, dtype=np.uint8).reshape(2, 4)),
                               npy(np.array([1.0, -1.0], dtype=np.float32))))
    put(t, "v2_labels_n1", pair(npy(x, version=(2, 0)),
                                npy(np.array([[0], [1], [0]], dtype=np.int32))))
    put(t, "i2_u4_labels", pair(npy(x), npy(np.array([0, 1, 1], dtype=np.uint32))))
    truncated = npy(x)[:-5]
    put(t, "truncated", pair(truncated, npy(np.array([0, 1, 1], dtype=np.int16))))
    put(t, "fortran", pair(npy(np.asfortranarray(x)), npy(np.array([0, 1, 1], dtype=np.int8))))
    put(t, "f8_extremes", pair(npy(np.array([[1e38, -3e38], [1e-300, 5e-324]], dtype=np.float64)),
                               npy(np.array([1, 0], dtype=np.int64))))
    # (A float64 past float32's range, 1e300, is regressions/npy_fuzz-f8-overflows-float.)


def idx_seeds(t):
    images = np.arange(12).reshape(3, 2, 2)
    put(t, "images3_labels", pair(idx(images), idx(np.array([0, 1, 2]))))
    put(t, "images2d", pair(idx(np.arange(8).reshape(4, 2)), idx(np.array([1, 0, 1, 0]))))
    put(t, "count_mismatch", pair(idx(images), idx(np.array([0, 1]))))
    put(t, "wrong_type", pair(idx(images, 0x0D), idx(np.array([0, 1, 2]))))
    put(t, "truncated", pair(idx(images)[:-3], idx(np.array([0, 1, 2]))))


def model_seeds():
    t = "npz_fuzz"
    w2 = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    w3 = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    meta = {"classes": np.array(2, dtype=np.int64), "n_features": np.array(3, dtype=np.int64)}
    put(t, "binary", npz({"W": w2, "b": np.array([0.25], dtype=np.float32), **meta}))
    put(t, "multiclass_deflate", npz({
        "W": w3, "b": np.zeros(3, dtype=np.float32), "classes": np.array(3, dtype=np.int64),
        "n_features": np.array(4, dtype=np.int64),
        "summary_json": np.frombuffer(b'{"epochs": 1}', dtype=np.uint8)}, compressed=True))
    put(t, "f8_column", npz({"W": w2.astype(np.float64).reshape(3, 1),
                             "b": np.array([0.0], dtype=np.float64), **meta}))
    put(t, "bad_bias", npz({"W": w3, "b": np.zeros(2, dtype=np.float32), **meta}))
    put(t, "no_bias", npz({"W": w3, **meta}))
    # (W of shape (0, 3) is regressions/npz_fuzz-zero-size-memcpy-null.)

    t = "safetensors_fuzz"
    put(t, "binary", safetensors({"W": (w2, "F32"), "b": (np.array([0.25], np.float32), "F32")},
                                 {"classes": "2", "n_features": "3", "format": "logit"}))
    put(t, "multiclass", safetensors({"W": (w3, "F32"), "b": (np.zeros(3, np.float32), "F32")},
                                     {"classes": "3", "n_features": "4",
                                      "summary_json": "{\"epochs\": 1}"}))
    put(t, "column", safetensors({"W": (w2.reshape(3, 1), "F32"),
                                  "b": (np.array([1.0], np.float32), "F32")}, {}))
    put(t, "f64", safetensors({"W": (w2.astype(np.float64), "F64"),
                               "b": (np.array([0.0]), "F64")}, {}))
    bad = bytearray(safetensors({"W": (w2, "F32"), "b": (np.array([0.25], np.float32), "F32")},
                                {}))
    put(t, "short_data", bytes(bad[:-4]))


def checkpoint_seeds():
    t = "checkpoint_fuzz"
    history = [{"epoch": 1, "train_loss": 0.5, "objective": 0.51, "val_loss": None,
                "val_accuracy": None, "seconds": 0.01, "samples": 150},
               {"epoch": 2, "train_loss": 0.25, "objective": 0.26, "val_loss": 0.3,
                "val_accuracy": "inf", "seconds": 0.01, "samples": 150}]
    meta = {"format": "logit-checkpoint", "version": "1", "optimizer": "adam", "epoch": "2",
            "history": json.dumps(history)}
    put(t, "adam", safetensors({
        "int/batches": (np.array([150, 16], np.int64), "I64"),
        "int/counters": (np.array([2, 20, 0, 0], np.int64), "I64"),
        "real/best": (np.array([0.3]), "F64"),
        "real/m1": (np.arange(-7, 8) / 8, "F64"),
        "real/m2": (np.arange(15) / 16, "F64"),
        "real/params": (np.arange(-7, 8) / 4, "F64")}, meta))
    put(t, "lbfgs_empty_pairs", safetensors({
        "int/counters": (np.array([7, 0], np.int64), "I64"),
        "int/lbfgs": (np.array([1, 0, 1, 0, -1], np.int64), "I64"),
        "real/s": (np.zeros(0), "F64"),
        "real/x": (np.array([0.5, -0.5]), "F64")},
        dict(meta, optimizer="lbfgs", epoch="0", history="[]")))


def proto_modules(tmp):
    subprocess.run(["protoc", "-I", os.path.join(ROOT, "proto"), "--python_out", tmp,
                    "logit/v1/training.proto", "inference/grpc_predict_v2.proto"],
                   check=True, cwd=os.path.join(ROOT, "proto"))
    sys.path.insert(0, tmp)
    from logit.v1 import training_pb2  # noqa: E402
    from inference import grpc_predict_v2_pb2  # noqa: E402
    return training_pb2, grpc_predict_v2_pb2


def proto_seeds():
    tmp = tempfile.mkdtemp()
    try:
        training, infer = proto_modules(tmp)
        t = "jobspec_fuzz"
        spec = training.JobSpec(data="dataset:abc", format="csv", classes=3, optimizer="sgd",
                                lr=0.1, momentum=0.9, nesterov=True, batch_size=32, epochs=5,
                                l2=1e-4, class_weight="0=1,2=3.5", val_split=0.2, seed=7,
                                workers=2, device="cpu", precision="float32")
        put(t, "sgd.bin", spec.SerializeToString())
        put(t, "lbfgs.bin", training.JobSpec(
            data="server:fashion/train-images-idx3-ubyte.gz",
            labels="server:fashion/train-labels-idx1-ubyte.gz", l2=1e-5, tol=1e-8,
            lbfgs_history=20, precision="mixed", no_pixel_scale=True).SerializeToString())
        put(t, "adam.json", json.dumps({
            "data": "dataset:d1", "format": "libsvm", "optimizer": "adam", "lr": 0.001,
            "epochs": "3", "batchSize": "128", "classWeight": "balanced", "testSplit": 0.1,
            "earlyStoppingPatience": "2", "standardize": True, "device": "cuda:0", "bias": False}))
        put(t, "bad.json", json.dumps({
            "data": "dataset:d1", "valSplit": 0.6, "testSplit": 0.5, "optimizer": "newton",
            "workers": -1, "classes": 1, "momentum": 1.5}))
        put(t, "val_file.json", json.dumps({
            "data": "dataset:a", "valData": "dataset:b", "valSplit": 0.1,
            "checkpointEvery": "-1", "precision": "bf16"}))

        t = "request_fuzz"
        def tensor(datatype, shape, **kw):
            return infer.ModelInferRequest.InferInputTensor(name="input", datatype=datatype,
                                                            shape=shape, **kw)
        rows = np.arange(6, dtype=np.float32) / 3
        put(t, "fp32_contents", infer.ModelInferRequest(model_name="m1", inputs=[tensor(
            "FP32", [2, 3], contents=infer.InferTensorContents(
                fp32_contents=rows.tolist()))]).SerializeToString())
        put(t, "fp32_raw", infer.ModelInferRequest(
            model_name="m1", inputs=[tensor("FP32", [3, 2])],
            raw_input_contents=[rows.tobytes()]).SerializeToString())
        put(t, "fp64_raw_flat", infer.ModelInferRequest(
            model_name="m2", inputs=[tensor("FP64", [6])],
            raw_input_contents=[rows.astype(np.float64).tobytes()]).SerializeToString())
        put(t, "fp64_contents", infer.ModelInferRequest(model_name="m2", inputs=[tensor(
            "FP64", [1, 3], contents=infer.InferTensorContents(
                fp64_contents=[1.0, 2.0, 1e300]))]).SerializeToString())
        put(t, "overflow_shape", infer.ModelInferRequest(
            model_name="m3", inputs=[tensor("FP32", [4294967296, 4294967296])],
            raw_input_contents=[b""]).SerializeToString())
        put(t, "predict_request", training.PredictRequest(
            model_id="m1", features=rows.tolist()).SerializeToString())
    finally:
        shutil.rmtree(tmp)


def main():
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    csv_seeds()
    libsvm_seeds()
    npy_seeds()
    idx_seeds("idx_fuzz")
    idx_seeds("idx_gz_fuzz")
    model_seeds()
    checkpoint_seeds()
    proto_seeds()


if __name__ == "__main__":
    main()
