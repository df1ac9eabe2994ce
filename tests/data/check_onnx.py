#!/usr/bin/python3
"""Checks a logit .onnx model with onnx.checker and evaluates its graph with numpy (Gemm,
Softmax, Sigmoid, Sub, Concat, ArgMax: the operators logit writes), comparing the outputs with
expected probabilities.  usage: check_onnx.py MODEL.onnx INPUT.npy EXPECTED_PROBA.npy
INPUT may also be a CSV with a header (its column named by --drop-column is dropped) and
EXPECTED a `logit predict` CSV (label,p_0,...,p_K-1).
Exit 0: valid and equal within 1e-6; 1: mismatch; 77: python3-onnx missing (skip)."""
import sys

import numpy as np

try:
    import onnx
    from onnx import numpy_helper
except ImportError:
    sys.exit(77)


def run(model, x):
    values = {"input": x.astype(np.float32)}
    for t in model.graph.initializer:
        values[t.name] = numpy_helper.to_array(t)
    for node in model.graph.node:
        a = {attr.name: onnx.helper.get_attribute_value(attr) for attr in node.attribute}
        i = [values[n] for n in node.input]
        if node.op_type == "Gemm":
            out = i[0] @ i[1] + i[2]
        elif node.op_type == "Softmax":
            z = i[0] - i[0].max(axis=a.get("axis", -1), keepdims=True)
            e = np.exp(z)
            out = e / e.sum(axis=a.get("axis", -1), keepdims=True)
        elif node.op_type == "Sigmoid":
            out = 1 / (1 + np.exp(-i[0]))
        elif node.op_type == "Sub":
            out = i[0] - i[1]
        elif node.op_type == "Concat":
            out = np.concatenate(i, axis=a["axis"])
        elif node.op_type == "ArgMax":
            out = np.argmax(i[0], axis=a["axis"])
        else:
            raise SystemExit(f"unexpected operator {node.op_type}")
        values[node.output[0]] = out
    return values["probabilities"], values["label"]


def main():
    model = onnx.load(sys.argv[1])
    onnx.checker.check_model(model, full_check=True)
    drop = sys.argv[5] if len(sys.argv) > 5 and sys.argv[4] == "--drop-column" else None
    if sys.argv[2].endswith(".csv"):
        header = open(sys.argv[2]).readline().strip().split(",")
        keep = [i for i, name in enumerate(header) if name != drop]
        x = np.loadtxt(sys.argv[2], delimiter=",", skiprows=1, usecols=keep, dtype=np.float32)
    else:
        x = np.load(sys.argv[2])
    if sys.argv[3].endswith(".csv"):
        expected = np.loadtxt(sys.argv[3], delimiter=",", skiprows=1, dtype=np.float64)[:, 1:]
    else:
        expected = np.load(sys.argv[3])
    p, label = run(model, x)
    diff = float(np.abs(p - expected).max())
    print(f"onnx.checker ok; max |p - expected| = {diff:.3g}; outputs "
          f"{[o.name for o in model.graph.output]}")
    ok = diff <= 1e-6 and label.dtype == np.int64 and (label == expected.argmax(axis=1)).all()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
