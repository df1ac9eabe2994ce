#!/usr/bin/env bash
# Data larger than memory (issue 16; a command, not a test): trains L-BFGS on a float32 .npy
# twice the size of a memory cgroup's limit, and once without the limit, and prints seconds per
# iteration against the disk's cold read speed (dd after dropping the page cache). Needs root,
# a cgroup v1 memory controller (/sys/fs/cgroup/memory) or cgroup v2, and a build.
#   bash tests/bench/run_out_of_core.sh [--scale 0.5] [--limit-mb 1024] [--iterations 5]
# The data is the scale suite's dense set (tests/bench/scale/gen_data.py, 500,000 x 1,000 at
# --scale 0.5: 2 GB).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
LOGIT="${BUILD_DIR:-$ROOT/build}/client/logit"
scale=0.5 limit_mb=1024 iterations=5 data_dir=/var/tmp/logit-bench
while [[ $# -gt 0 ]]; do
  case "$1" in
    --scale) scale="$2"; shift 2 ;;
    --limit-mb) limit_mb="$2"; shift 2 ;;
    --iterations) iterations="$2"; shift 2 ;;
    --data-dir) data_dir="$2"; shift 2 ;;
    *) echo "run_out_of_core.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
/usr/bin/python3 "$ROOT/tests/bench/scale/gen_data.py" "$data_dir" --scale "$scale" --datasets dense
D="$data_dir/dense-x$scale"
bytes=$(stat -c %s "$D/X.npy")
if [[ -d /sys/fs/cgroup/memory ]]; then
  CG=/sys/fs/cgroup/memory/logit-out-of-core
  mkdir -p "$CG"
  echo $((limit_mb << 20)) > "$CG/memory.limit_in_bytes"
  procs="$CG/tasks"
else
  CG=/sys/fs/cgroup/logit-out-of-core
  mkdir -p "$CG"
  echo $((limit_mb << 20)) > "$CG/memory.max"
  procs="$CG/cgroup.procs"
fi
trap 'rmdir "$CG" 2>/dev/null || true' EXIT
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
drop
disk=$( { dd if="$D/X.npy" of=/dev/null bs=4M 2>&1; } | awk '/copied/ {print $(NF-1), $NF}')
train() {  # $1: "limited" or "free"; prints the summary's per-iteration seconds
  drop
  local cmd=("$LOGIT" train --local --data "$D/X.npy" --labels "$D/y.npy" --format npy
             --optimizer lbfgs --epochs "$iterations" --threads "$(nproc)" -o json)
  if [[ $1 == limited ]]; then
    (echo "$BASHPID" > "$procs"; exec /usr/bin/time -v "${cmd[@]}") > /tmp/ooc.json 2> /tmp/ooc.err
  else
    /usr/bin/time -v "${cmd[@]}" > /tmp/ooc.json 2> /tmp/ooc.err
  fi
  /usr/bin/python3 - "$1" "$bytes" <<'PY'
import json, re, sys
s = json.load(open("/tmp/ooc.json"))["result"]["summary"]
err = open("/tmp/ooc.err").read()
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1)) / 1024
h = [e["seconds"] for e in s["history"]]
later = h[1:] or h
per = sum(later) / len(later)
print(f"{sys.argv[1]:>8}: {s['epochs_run']} iterations, {s['function_evaluations']} passes; "
      f"first {h[0]:.2f} s, then {per:.2f} s an iteration "
      f"({int(sys.argv[2]) / 1e9 / per:.2f} GB/s of rows); peak RSS {rss:,.0f} MB")
PY
}
echo "data: $D/X.npy, $((bytes >> 20)) MB; memory limit ${limit_mb} MB; disk cold read: $disk"
train limited
train free
