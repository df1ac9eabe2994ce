#!/usr/bin/env bash
# Distributed benchmark: allreduce time and epoch time with 1 and 2 ranks on this machine, logit
# (`logit-worker run`, c10d Gloo) against PyTorch DDP over Gloo, measured in the same invocation.
#   bash tests/bench/run_dist_bench.sh
# Needs a build (bash tests/run_all.sh, or cmake --build build) and Debian's python3-torch.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="${BUILD_DIR:-$ROOT/build}"
cmake --build "$BUILD" --target allreduce_bench logit-worker -j2 >/dev/null
PY=/usr/bin/python3
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
F=/usr/share/datasets/fashion-mnist
DATA=(--data "$F/train-images-idx3-ubyte.gz" --labels "$F/train-labels-idx1-ubyte.gz")
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Runs WORLD ranks of logit-worker with the given job flags; prints rank 0's JSON line.
ranks() {
  local world=$1; shift
  local port; port=$(free_port)
  for ((r = world - 1; r >= 0; r--)); do
    local host=(); [[ $r == 0 ]] && host=(--host-store)
    "$BUILD/worker/logit-worker" run --rank $r --world-size "$world" --store "127.0.0.1:$port" \
      "${host[@]}" -o json "$@" > "$TMP/rank$r.json" 2> "$TMP/rank$r.err" &
  done
  wait
  tail -n 1 "$TMP/rank0.json"
}

port=$(free_port)
"$BUILD/tests/allreduce_bench" 1 2 "$port" 7850 1000000 10000000 > /dev/null &
ar2=$("$BUILD/tests/allreduce_bench" 0 2 "$port" 7850 1000000 10000000)
wait
adam1=$(ranks 1 "${DATA[@]}" --optimizer adam --batch-size 256 --epochs 3 --threads 2)
adam2=$(ranks 2 "${DATA[@]}" --optimizer adam --batch-size 256 --epochs 3)
lbfgs1=$(ranks 1 "${DATA[@]}" --optimizer lbfgs --l2 1.6667e-5 --epochs 10 --threads 2)
lbfgs2=$(ranks 2 "${DATA[@]}" --optimizer lbfgs --l2 1.6667e-5 --epochs 10)
peer1=$("$PY" "$ROOT/tests/bench/torch_dist_peer.py" 1 "$(free_port)" 2)
peer2=$("$PY" "$ROOT/tests/bench/torch_dist_peer.py" 2 "$(free_port)" 1)

"$PY" - "$ar2" "$adam1" "$adam2" "$lbfgs1" "$lbfgs2" "$peer1" "$peer2" <<'PY'
import json, sys
ar2, adam1, adam2, lb1, lb2, peer1, peer2 = (json.loads(a) for a in sys.argv[1:])
def best_epoch(j): return min(h["seconds"] for h in j["history"])
def mean_iter(j): return sum(h["seconds"] for h in j["history"][1:]) / max(1, len(j["history"]) - 1)
print("machine: 2 cores, loopback; 1 rank = 1 process x 2 threads, 2 ranks = 2 processes x 1 thread")
print(f"{'figure':<52}{'logit':>10}{'torch DDP':>11}{'ratio':>8}")
def row(name, a, b):
    r = f"{b / a:.1f}x" if a and b else "-"
    bs = f"{b:>11.5f}" if b else f"{'-':>11}"
    print(f"{name:<52}{a:>10.5f}{bs}{r:>8}")
for mine, theirs in zip(ar2["sizes"], peer2["sizes"]):
    row(f"allreduce {mine['floats']:,} floats, 2 ranks (s)", mine["mean_seconds"], theirs["mean_seconds"])
    print(f"{'':<52}{mine['bus_gbytes_per_s']:>9.2f} GB/s bus bandwidth")
row("Adam epoch, global batch 256, 1 rank (s)", best_epoch(adam1), peer1["adam_epoch_seconds_b256"])
row("Adam epoch, global batch 256, 2 ranks (s)", best_epoch(adam2), peer2["adam_epoch_seconds_b256"])
steps = 60000 // 256 + 1
print(f"  2 ranks: {adam2['allreduce']['count']} allreduces in 3 epochs, "
      f"{adam2['allreduce']['seconds'] / max(1, adam2['allreduce']['count']) * 1e3:.3f} ms each "
      f"({adam2['allreduce']['bytes'] / max(1, adam2['allreduce']['count']):.0f} bytes); "
      f"{steps} steps per epoch")
row("L-BFGS iteration (full pass), 1 rank (s)", mean_iter(lb1), 0)
row("L-BFGS iteration (full pass), 2 ranks (s)", mean_iter(lb2), 0)
print(f"  same objective after 10 iterations: 1 rank {lb1['objective']:.12f}, 2 ranks {lb2['objective']:.12f}")
PY
