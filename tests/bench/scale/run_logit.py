#!/usr/bin/python3
"""Runs `logit train --local` (L-BFGS) on one dataset and prints ONE JSON line of figures, the
same fields as peers.py prints, so report.py treats logit as one more column.

    run_logit.py DATASET --logit PATH [--scale S] [--data-dir DIR] [--C C] [--threads N]
                 [--timeout SEC]

The command is `logit train --local <data flags> --optimizer lbfgs --C C --tol 1e-10
--threads N -o json` (datasets.Dataset.logit_args gives the data flags, --no-bias for
sparse-binary), under /usr/bin/time -v (peak RSS) and timeout. From its JSON (the job object,
result.summary with the per-iteration history):
  time to gap g   wall_seconds minus the seconds of the iterations after the first one within
                  g of the reference: an upper bound (all of the run's non-iteration time, its
                  setup included, is counted before that iteration);
  load_seconds    the process's elapsed time minus wall_seconds (reading and parsing the data,
                  the end-of-run metrics): an upper bound of the load;
  seconds/pass    wall_seconds / function_evaluations.
A run that would not fit in memory (the data plus L-BFGS's history: logit keeps at most ~1.6 GB
of pairs but at least 10) is not started; one that fails or times out reports why.

Adam epochs (as peers.py's torch-adam, batches 16, 256 and 4,096): `logit train --local <data
flags> --optimizer adam --batch-size B --epochs 2 --threads N -o json`; the figure is the second
epoch's seconds from the history (the steps and the epoch's penalty; no validation), and
peak_rss_adam_mb the largest peak RSS of those runs. A batch larger than the dataset, or an epoch
that would not end within a third of --timeout (judged from the first run's), is skipped.
"""
import argparse
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import datasets  # noqa: E402
import peers  # noqa: E402

TOL = 1e-10


def lbfgs_memory(ds):
    """Bytes logit's L-BFGS needs at least: the data in memory plus the parameters, gradients
    and history pairs (float64), with the history rule of worker/kernel/lbfgs_optimizer.cc."""
    params = ds.features * (1 if ds.classes == 2 else ds.classes)
    history = max(10, min(100, int(1.6e9 / (16 * params))))
    return ds.memory_bytes(ds.expected_nnz()) + (2 * history + 8) * params * 8


def time_to_gaps(summary, ref):
    """{gap: seconds} from the history (see the module's note), None where not reached."""
    history = summary["history"]
    out = {g: None for g in datasets.GAPS}
    if ref is None:
        return out
    after = sum(e["seconds"] for e in history)
    for e in history:
        after -= e["seconds"]
        for g in datasets.GAPS:
            if out[g] is None and datasets.gap(e["objective"], ref) <= float(g):
                out[g] = summary["wall_seconds"] - after
    return out


def adam_memory(ds):
    """Bytes logit's Adam needs at least: the data plus parameters, gradient, the two moments
    and the gradient sums (float32)."""
    params = ds.features * (1 if ds.classes == 2 else ds.classes)
    return ds.memory_bytes(ds.expected_nnz()) + 5 * params * 4


def run_adam(ds, a):
    """{"adam_epoch_seconds": {batch: s}, "peak_rss_adam_mb": MB} (see the module's note)."""
    peers.need(adam_memory(ds), "the data + Adam's parameters, gradient and moments (float32)")
    epochs, rss, notes = {}, 0.0, []
    budget = a.timeout / 3
    for batch in peers.ADAM_BATCHES:
        if batch > ds.rows:
            notes.append(f"batch {batch}: more than the {ds.rows} rows")
            continue
        cmd = [a.logit, "train", "--local", *ds.logit_args(), "--optimizer", "adam",
               "--batch-size", str(batch), "--epochs", "2", "--threads", str(a.threads),
               "-o", "json"]
        p = subprocess.run(["/usr/bin/time", "-v", "timeout", "-k", "10", str(budget)] + cmd,
                           capture_output=True, text=True)
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
        if m:
            rss = max(rss, int(m.group(1)) / 1024)
        if p.returncode != 0:
            notes.append(f"batch {batch}: exit {p.returncode}")
            continue
        history = json.loads(p.stdout)["result"]["summary"]["history"]
        epochs[str(batch)] = history[-1]["seconds"]
    out = {"adam_epoch_seconds": epochs, "peak_rss_adam_mb": rss or None}
    if notes:
        out["adam_note"] = "; ".join(notes)
    return out


def run(ds, a, ref):
    out = {}
    if a.adam:
        try:
            out.update(run_adam(ds, a))
        except peers.Skip as e:
            out["adam_note"] = str(e)
    try:
        out.update(run_lbfgs(ds, a, ref))
    except peers.Skip as e:
        if not out.get("adam_epoch_seconds"):
            raise
        out.update(status="ok", lbfgs_note=f"L-BFGS skipped: {e}")
    return out


def run_lbfgs(ds, a, ref):
    peers.need(lbfgs_memory(ds), "the data + L-BFGS's parameters and history (float64)")
    cmd = [a.logit, "train", "--local", *ds.logit_args(), "--optimizer", "lbfgs",
           "--C", repr(a.C), "--tol", repr(TOL), "--threads", str(a.threads), "-o", "json"]
    p = subprocess.run(["/usr/bin/time", "-v", "timeout", "-k", "10", str(a.timeout)] + cmd,
                       capture_output=True, text=True)
    out = {"command": " ".join(cmd)}
    if a.adam:
        out["adam_command"] = (" ".join(cmd[:cmd.index("--optimizer")]) +
                               " --optimizer adam --batch-size B --epochs 2 --threads " +
                               str(a.threads) + " -o json")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    out["peak_rss_mb"] = int(rss.group(1)) / 1024 if rss else None
    if p.returncode in (124, 137):
        out.update(status="timeout", reason=f"timed out after {a.timeout:g}s")
        return out
    if p.returncode != 0:
        lines = [l for l in p.stderr.splitlines() if l.startswith("logit")]
        raise RuntimeError(f"exit {p.returncode}: {lines[-1] if lines else p.stderr[-300:]}")
    elapsed = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", p.stderr)
    elapsed = sum(float(x) * 60 ** i for i, x in enumerate(reversed(elapsed.group(1).split(":"))))
    s = json.loads(p.stdout)["result"]["summary"]
    wall = s["wall_seconds"]
    out.update({
        "load_seconds": elapsed - wall,
        "load_mb_per_s": ds.file_bytes() / 1e6 / max(elapsed - wall, 1e-9),
        "load_note": "upper bound: elapsed - wall_seconds",
        "seconds_to_gap": time_to_gaps(s, ref),
        "final_objective": s["objective"], "train_seconds": wall,
        "passes": s["function_evaluations"],
        "seconds_per_pass": wall / max(s["function_evaluations"], 1),
        "iterations": s["epochs_run"], "stop": s["stop_reason"].lower(),
    })
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", help="NAME[:PRESET]")
    ap.add_argument("--logit", required=True, help="the logit binary (BUILD_DIR/client/logit)")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--data-dir", default="/var/tmp/logit-bench")
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--adam", action=argparse.BooleanOptionalAction, default=True,
                    help="also time Adam epochs (default on)")
    a = ap.parse_args()
    ds = datasets.Dataset(a.dataset, a.scale, a.data_dir)
    ref, ref_source = datasets.find_reference(ds, a.C, a.data_dir)
    out = {"peer": "logit", "dataset": a.dataset, "scale": ds.scale, "rows": ds.rows,
           "features": ds.features, "classes": ds.classes, "bias": ds.bias, "C": a.C,
           "threads": a.threads, "reference": ref, "reference_source": ref_source}
    try:
        out.update(run(ds, a, ref))
        out.setdefault("status", "ok")
    except peers.Skip as e:
        out.update(status="skipped", reason=str(e))
    except Exception as e:  # reported, never raised: the suite goes on
        out.update(status="failed", reason=f"{type(e).__name__}: {e}")
    if out.get("final_objective") is not None:
        out["final_gap"] = datasets.gap(out["final_objective"], ref)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
