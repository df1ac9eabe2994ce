#!/usr/bin/env bash
# Kernel benchmark: logit's kernel and the PyTorch peer, measured in the same invocation.
#   bash tests/bench/run_kernel_bench.sh [--skip-lbfgs] [--lbfgs-iters N] [--lbfgs-precision P]
# Needs a build (bash tests/run_all.sh, or cmake --build build) and Debian's python3-torch.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BENCH="${BUILD_DIR:-$ROOT/build}/tests/kernel_bench"
[[ -x "$BENCH" ]] || cmake --build "${BUILD_DIR:-$ROOT/build}" --target kernel_bench -j2 >/dev/null
ours="$("$BENCH" --threads 2 "$@")"
# The peer's L-BFGS (torch.optim.LBFGS, float64) runs unless --skip-lbfgs is given.
peer_lbfgs=700
for a in "$@"; do [[ "$a" == --skip-lbfgs ]] && peer_lbfgs=0; done
peer="$(/usr/bin/python3 "$ROOT/tests/bench/torch_peer.py" 2 cpu /usr/share/datasets/fashion-mnist "$peer_lbfgs")"
/usr/bin/python3 - "$ours" "$peer" <<'PY'
import json, sys
ours, peer = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"backend: {ours['backend']}  (peer: torch {peer['torch']}, {peer['threads']} threads)")
print(f"{'figure':<42}{'logit':>12}{'torch loop':>12}{'speed-up':>10}")
def row(name, a, b):
    r = f"{b / a:.1f}x" if a and b else "-"
    print(f"{name:<42}{a:>12.4f}{b:>12.4f}{r:>10}")
row("full-batch gradient, float32 (s)", ours["full_gradient_seconds_f32"], peer["full_gradient_seconds_f32"])
row("full-batch gradient, float64 (s)", ours["full_gradient_seconds_f64"], 0)
for b in ("16", "256", "1024"):
    row(f"Adam epoch, batch {b} (s)", ours["adam_epoch_seconds"][b], peer["adam_epoch_seconds"][b])
print("logit's training loss after 2 Adam epochs: " +
      ", ".join(f"batch {b}: {ours['adam_train_loss'][b]:.4f}" for b in ("16", "256", "1024")))
row("full-batch gradient, mixed (s)", ours["full_gradient_seconds_mixed"], 0)
pl = peer.get("lbfgs", {})
for prec, l in ours.get("lbfgs", {}).items():
    for g in ("1e-4", "1e-5", "1e-6"):
        a, b = l["seconds_to_gap_" + g], pl.get("seconds_to_gap_" + g, 0)
        r = f"{b / a:.1f}x" if a > 0 and b > 0 else "-"
        print(f"{'L-BFGS ' + prec + ' C=1 to gap ' + g + ' (s)':<42}{a:>12.1f}{b:>12.1f}{r:>10}  {l['iterations_to_gap_' + g]} it / peer {pl.get('evaluations_to_gap_' + g, '-')} evals")
    print(f"L-BFGS {prec}: final objective {l['final_objective']:.10f} after {l['iterations']} it ({l['stop_reason']}); sklearn optimum 0.3498933953")
print(f"{'peak RSS (MB)':<42}{ours['peak_rss_mb']:>12.0f}{peer['peak_rss_mb']:>12.0f}")
PY
