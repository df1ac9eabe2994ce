#!/usr/bin/python3
"""Prints the scale benchmark's tables from the JSON lines of run_logit.py, peers.py and
roofline_bench (run_scale_bench.sh calls it).

    report.py --roofline ROOFLINE.json --data-dir DIR --scale S RESULTS.jsonl...

One table per dataset: a column per solver (logit first), a row per figure, a "bound" column
with the roofline's lower bound of the full-pass figures:
  pass         max(data bytes / read bandwidth, 4 nnz K FLOPs / float64 FMA peak), the data as
               CSR (float32 values, int32 indices) or the dense array, K the model's columns:
               one gradient reads X once for X W and (at best, fused) not again for X^T R;
  Adam epoch   max((data bytes + steps x parameters x 28 B) / bandwidth, 4 nnz K / float32
               peak): each step reads and writes the float32 weights, gradient and two moments;
and "% of bound" rows (bound / measured). Then logit / peer ratios (> 1: logit slower or
bigger) and each column's notes: why a cell is "-" (skipped, failed, timed out), how a
solver stopped, what is extrapolated.
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import datasets  # noqa: E402

ADAM_BATCHES = ("16", "256", "4096")
ADAM_BYTES_PER_PARAM = 28


def fmt(v, kind="s"):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if kind == "obj":
        return f"{v:.10f}"
    if kind == "gap":
        return f"{v:.1e}"
    if kind == "pct":
        return f"{100 * v:.2g}%"
    if kind == "x":
        return f"{v:.2f}x" if v < 100 else f"{v:.0f}x"
    if kind == "int":
        return f"{v:,}"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def bounds(ds, roof):
    """The lower bounds (seconds) of one full pass and of an Adam epoch per batch size."""
    nnz = ds.expected_nnz()
    cols = 1 if ds.classes == 2 else ds.classes
    bw = roof["read_gb_per_s"]["all_threads"] * 1e9
    data = ds.memory_bytes(nnz)
    flops = 4 * nnz * cols
    out = {"pass": max(data / bw, flops / (roof["fma_gflops"]["f64"]["all_cores"] * 1e9))}
    params = ds.features * max(2, ds.classes)  # the Adam loop's Linear layer
    for b in ADAM_BATCHES:
        steps = math.ceil(ds.rows / int(b))
        traffic = (data + steps * params * ADAM_BYTES_PER_PARAM) / bw
        compute = 4 * nnz * max(2, ds.classes) / (roof["fma_gflops"]["f32"]["all_cores"] * 1e9)
        out["adam" + b] = max(traffic, compute)
    return out


def get(r, *path):
    for p in path:
        if not isinstance(r, dict) or r.get(p) is None:
            return None
        r = r[p]
    return r


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def table(ds, runs, roof):
    cols = [r["peer"] for r in runs]
    bnd = bounds(ds, roof)
    data_mb = ds.memory_bytes(ds.expected_nnz()) / 1e6
    rows = [
        ("load (s)", None, lambda r: fmt(get(r, "load_seconds"))),
        ("load (MB/s of file)", None, lambda r: fmt(get(r, "load_mb_per_s"))),
        ("time to gap 1e-4 (s)", None, lambda r: fmt(get(r, "seconds_to_gap", "1e-4"))),
        ("time to gap 1e-6 (s)", None, lambda r: fmt(get(r, "seconds_to_gap", "1e-6"))),
        ("train time to stop (s)", None, lambda r: fmt(get(r, "train_seconds"))),
        ("final objective", None, lambda r: fmt(get(r, "final_objective"), "obj")),
        ("final gap", None, lambda r: fmt(get(r, "final_gap"), "gap")),
        ("passes (f+g evals, epochs)", None, lambda r: fmt(get(r, "passes"), "int")),
        ("seconds per pass", bnd["pass"], lambda r: fmt(get(r, "seconds_per_pass"))),
        ("  pass: % of bound", None,
         lambda r: fmt(ratio(bnd["pass"], get(r, "seconds_per_pass")), "pct")),
    ]
    for b in ADAM_BATCHES:
        rows.append((f"Adam epoch, batch {b} (s)", bnd["adam" + b],
                     lambda r, b=b: fmt(get(r, "adam_epoch_seconds", b))
                     + ("*" if get(r, "adam_extrapolated", b) else "")))
        rows.append((f"  batch {b}: % of bound", None,
                     lambda r, b=b: fmt(ratio(bnd["adam" + b],
                                              get(r, "adam_epoch_seconds", b)), "pct")))
    rows += [
        ("peak RSS (MB)", None, lambda r: fmt(get(r, "peak_rss_mb"))),
        ("peak RSS of the Adam runs (MB)", None, lambda r: fmt(get(r, "peak_rss_adam_mb"))),
        (f"peak RSS / data ({fmt(data_mb)} MB)", None,
         lambda r: fmt(ratio(get(r, "peak_rss_mb"), data_mb), "x")),
    ]
    w0 = max(len(name) for name, _, _ in rows) + 2
    width = [max(14, len(c) + 2) for c in cols]
    lines = [f"{'figure':<{w0}}{'bound':>10}" + "".join(f"{c:>{w}}" for c, w in zip(cols, width))]
    for name, bound, cell in rows:
        lines.append(f"{name:<{w0}}{fmt(bound):>10}"
                     + "".join(f"{cell(r):>{w}}" for r, w in zip(runs, width)))
    logit = next((r for r in runs if r["peer"] == "logit"), None)
    if logit is not None and len(runs) > 1:
        lines.append("")
        lines.append("logit / peer (> 1: logit slower or bigger)")
        for name, path in (("time to gap 1e-4", ("seconds_to_gap", "1e-4")),
                           ("time to gap 1e-6", ("seconds_to_gap", "1e-6")),
                           ("seconds per pass", ("seconds_per_pass",)),
                           ("Adam epoch, batch 16", ("adam_epoch_seconds", "16")),
                           ("Adam epoch, batch 256", ("adam_epoch_seconds", "256")),
                           ("Adam epoch, batch 4096", ("adam_epoch_seconds", "4096")),
                           ("load", ("load_seconds",)), ("peak RSS", ("peak_rss_mb",))):
            lines.append(f"{name:<{w0}}{'':>10}" + "".join(
                f"{fmt(ratio(get(logit, *path), get(r, *path)), 'x'):>{w}}"
                for r, w in zip(runs, width)))
    lines.append("")
    lines.append("notes:")
    for r in runs:
        notes = []
        if r.get("status") != "ok":
            notes.append(f"{r.get('status')}: {r.get('reason')}")
        if r.get("stop"):
            notes.append(f"stopped: {r['stop']}")
        notes += r.get("notes", [])
        for key in ("lbfgs_note", "adam_note"):
            if r.get(key):
                notes.append(r[key])
        if any((r.get("adam_extrapolated") or {}).values()):
            steps = ", ".join(f"{b}: {n}" for b, n in r["adam_steps_measured"].items())
            notes.append(f"* extrapolated from the first steps ({steps})")
        if r.get("status") == "ok" and r.get("threads") is not None:
            notes.append(f"{r['threads']} thread{'s' if r['threads'] != 1 else ''}")
        lines.append(f"  {r['peer']}: " + "; ".join(notes))
    return "\n".join(lines)


def header(ds, runs):
    side = ds.sidecar() or {}
    shape = f"{ds.rows:,} rows x {ds.features:,} features, {ds.classes} classes"
    if "nnz" in side:
        shape += f", nnz {side['nnz']:,} ({side['nnz'] / ds.rows:.1f}/row)"
    shape += ", bias" if ds.bias else ", no bias"
    ref = next((r for r in runs if r.get("reference") is not None), None)
    if ref is None:
        refs = "no reference optimum: no gaps"
    else:
        where = ("committed references.json" if ref["reference_source"] == datasets.REFERENCES
                 else ref["reference_source"])
        refs = f"F* = {ref['reference']:.10f} ({where})"
    C = runs[0]["C"]
    return f"== {ds.spec} (scale {ds.scale:g}): {shape}; C = {C:g}; {refs}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--roofline", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--scale", type=float, required=True)
    ap.add_argument("results", nargs="+")
    a = ap.parse_args()
    with open(a.roofline) as f:
        roof = json.load(f)
    bw, fma = roof["read_gb_per_s"], roof["fma_gflops"]
    print(f"roofline ({roof['isa']}, {roof['threads']} threads): read "
          f"{bw['all_threads']:.1f} GB/s ({bw['one_thread']:.1f} one thread); FMA float64 "
          f"{fma['f64']['all_cores']:.0f} GFLOP/s ({fma['f64']['one_core']:.0f} one core), "
          f"float32 {fma['f32']['all_cores']:.0f} ({fma['f32']['one_core']:.0f})")
    for path in a.results:
        with open(path) as f:
            runs = [json.loads(line) for line in f if line.strip()]
        if not runs:
            continue
        ds = datasets.Dataset(runs[0]["dataset"], a.scale, a.data_dir)
        print()
        print(header(ds, runs))
        print(table(ds, runs, roof))


if __name__ == "__main__":
    main()
