#!/usr/bin/env bash
# Service overhead (issue 16): the same Fashion-MNIST job through logit-server and one local
# worker against `logit train --local`, in one run, alternating, best of --reps each. Prints the
# wall times (client process start to exit), the kernel's own training seconds of each, and the
# overhead = (service wall - local wall) / service wall.
#   bash tests/bench/run_service_overhead.sh [--reps N] [extra training flags...]
# Default job: L-BFGS (the default optimizer), C = 1; the local worker gets all cores, as --local does.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="${BUILD_DIR:-$ROOT/build}"
reps=3
if [[ "${1:-}" == --reps ]]; then reps="$2"; shift 2; fi
cmake --build "$BUILD" --target logit logit-server logit-worker logit_local -j2 >/dev/null
source "$ROOT/tests/bench/server_helper.sh"  # sets ADDR, TMP, PID; stops it on exit
L="$BUILD/client/logit"
D=/usr/share/datasets/fashion-mnist
run() {  # $1: local|service; prints "wall train_seconds"
  local start end out
  start=$(date +%s.%N)
  if [[ $1 == local ]]; then
    out=$("$L" -o json train --local --threads 2 --data "$D/train-images-idx3-ubyte.gz" \
      --labels "$D/train-labels-idx1-ubyte.gz" "${@:2}" | tail -1)
  else
    out=$("$L" --server "$ADDR" -o json train --data "server:fashion-mnist/train-images-idx3-ubyte.gz" \
      --labels "server:fashion-mnist/train-labels-idx1-ubyte.gz" "${@:2}" | tail -1)
  fi
  end=$(date +%s.%N)
  echo "$(echo "$end - $start" | bc) $(echo "$out" | /usr/bin/python3 -c \
    'import json,sys; print(json.load(sys.stdin)["result"]["wall_seconds"])')"
}
best_local=999999 best_service=999999
for i in $(seq "$reps"); do
  read -r lw lt < <(run local "$@")
  read -r sw st < <(run service "$@")
  echo "rep $i: local ${lw}s (training ${lt}s)  service ${sw}s (training ${st}s)"
  best_local=$(echo "if ($lw < $best_local) $lw else $best_local" | bc)
  best_service=$(echo "if ($sw < $best_service) $sw else $best_service" | bc)
done
echo "best: local ${best_local}s, service ${best_service}s, overhead" \
  "$(echo "scale=2; 100 * ($best_service - $best_local) / $best_service" | bc)% of the service's wall time"
