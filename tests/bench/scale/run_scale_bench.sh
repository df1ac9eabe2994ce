#!/usr/bin/env bash
# The scale benchmark (issue 16): logit against its peers on large synthetic datasets, with the
# machine's roofline. A command, not a test:
#   bash tests/bench/scale/run_scale_bench.sh [--quick] [--scale S] [--datasets a,b:preset]
#        [--data-dir DIR] [--peers p1,p2] [--threads N] [--timeout SEC] [--C C]
# Steps: generate (or reuse) the data under --data-dir (gen_data.py); measure the roofline
# (roofline_bench: BUILD_DIR/tests/roofline_bench, else compiled here with g++ -O3); for each
# dataset find its reference optimum (references.json, else DATA_DIR/references.json, else
# compute it there with reference.py, capped at 6 x --timeout); run logit (run_logit.py:
# `logit train --local --optimizer lbfgs`) and each peer (peers.py) in fresh processes; print
# one table per dataset (report.py). Every run is capped by --timeout seconds; a run that
# fails or times out shows "-" and the reason, and the suite goes on. The raw JSON lines stay
# in DATA_DIR/results-*/.
#   --quick     a smoke test of every step in a few minutes: scale 0.002, 10 s caps, and the
#               "small" presets of sparse-multi and imagenet (fewer parameters).
#   --datasets  sparse-binary, sparse-binary:issue (issue 16's 200,000 x 2^18, 30 nnz/row),
#               sparse-multi[:small], dense, imagenet[:small], fashion-mnist (real data, fixed
#               size).
#   --peers     sklearn-lbfgs, sklearn-saga, liblinear, torch-adam, torch-lbfgs.
#   --no-reference  use a stored reference optimum only, never compute one (the Adam figures
#               need none; computing one for imagenet's 150M parameters takes hours).
#   --no-adam   logit's L-BFGS only (by default run_logit.py also times Adam epochs).
# Environment: BUILD_DIR (default <repo>/build) holds client/logit; Debian's /usr/bin/python3
# with numpy, scikit-learn and torch; /usr/bin/liblinear-train; /usr/bin/time.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
PY=/usr/bin/python3

scale=1
datasets="sparse-binary,sparse-multi,dense,imagenet,fashion-mnist"
data_dir=/var/tmp/logit-bench
peers="sklearn-lbfgs,sklearn-saga,liblinear,torch-adam,torch-lbfgs"
threads="$(nproc)"
timeout=1800
C=1
quick=0
adam_steps=2000
roofline_bytes=$((1 << 30))
compute_reference=1
logit_adam=--adam
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --scale) scale="$2"; shift 2 ;;
    --datasets) datasets="$2"; shift 2 ;;
    --data-dir) data_dir="$2"; shift 2 ;;
    --peers) peers="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    --C) C="$2"; shift 2 ;;
    --no-reference) compute_reference=0; shift ;;
    --no-adam) logit_adam=--no-adam; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run_scale_bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [[ $quick == 1 ]]; then
  # Small data and short caps; fashion-mnist (fixed at 60,000 rows) is left out unless asked.
  scale=0.002 timeout=10 adam_steps=100 roofline_bytes=$((256 << 20))
  [[ "$datasets" == "sparse-binary,sparse-multi,dense,imagenet,fashion-mnist" ]] &&
    datasets="sparse-binary,sparse-binary:issue,sparse-multi:small,dense,imagenet:small"
fi
# The peers' BLAS and OpenMP pools get the same threads as logit and torch.
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"
export PYTHONWARNINGS=ignore

results="$data_dir/results-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$results"
echo "scale benchmark: scale $scale, datasets $datasets, peers $peers, $threads threads," \
  "cap ${timeout}s per run; raw results in $results"

# 1. Data.
"$PY" "$HERE/gen_data.py" "$data_dir" --scale "$scale" --datasets "$datasets"

# 2. Roofline.
roofline="$BUILD_DIR/tests/roofline_bench"
if [[ ! -x "$roofline" ]]; then
  roofline="$data_dir/roofline_bench"
  if [[ ! -x "$roofline" || "$HERE/roofline.cc" -nt "$roofline" ]]; then
    g++ -std=c++17 -O3 -pthread "$HERE/roofline.cc" -o "$roofline"
  fi
fi
"$roofline" --threads "$threads" --bytes "$roofline_bytes" > "$results/roofline.json"

# One JSON line from a run capped at $timeout (plus a grace for the runs that stop themselves at
# their budget); a run that dies without one gets a line saying how it ended.
run_capped() {  # NAME OUT_FILE COMMAND...
  local name="$1" out="$2" line rc=0 start=$SECONDS
  shift 2
  echo -n "   $name"
  line="$(timeout -k 10 $((timeout + 120)) "$@" 2>"$results/last.err")" || rc=$?
  echo " ($((SECONDS - start)) s)"
  if [[ $rc == 0 && "$line" == \{* ]]; then
    echo "$line" >> "$out"
  else
    local why="exit $rc"
    [[ $rc == 124 || $rc == 137 ]] && why="timed out"
    # The last line of its stderr, without the quotes and backslashes JSON would need escaped.
    # shellcheck disable=SC1003
    why="$why: $(tail -n 1 "$results/last.err" | tr -d '"\\' | cut -c1-200)"
    printf '{"peer": "%s", "dataset": "%s", "C": %s, "status": "failed", "reason": "%s"}\n' \
      "$name" "$ds" "$C" "$why" >> "$out"
  fi
}

# 3. Per dataset: the reference, logit, the peers.
logit="$BUILD_DIR/client/logit"
common=(--scale "$scale" --data-dir "$data_dir" --C "$C")
files=()
IFS=, read -r -a dataset_list <<< "$datasets"
IFS=, read -r -a peer_list <<< "$peers"
for ds in "${dataset_list[@]}"; do
  out="$results/${ds//:/-}.jsonl"
  files+=("$out")
  echo "-- $ds"
  echo -n "   reference: "
  if [[ $compute_reference == 1 ]]; then
    timeout $((6 * timeout)) "$PY" "$HERE/reference.py" "$ds" "${common[@]}" --if-missing \
      --out "$data_dir/references.json" || echo "none (reference.py failed or timed out)"
  else
    echo "stored only (--no-reference)"
  fi
  if [[ -x "$logit" ]]; then
    run_capped logit "$out" "$PY" "$HERE/run_logit.py" "$ds" "${common[@]}" --logit "$logit" \
      --threads "$threads" --timeout "$timeout" "$logit_adam"
  else
    printf '{"peer": "logit", "dataset": "%s", "C": %s, "status": "skipped", "reason": "%s"}\n' \
      "$ds" "$C" "no $logit (set BUILD_DIR)" >> "$out"
  fi
  for peer in "${peer_list[@]}"; do
    run_capped "$peer" "$out" "$PY" "$HERE/peers.py" "$peer" "$ds" "${common[@]}" \
      --threads "$threads" --budget "$timeout" --adam-steps "$adam_steps"
  done
done

# 4. The tables.
echo
"$PY" "$HERE/report.py" --roofline "$results/roofline.json" --data-dir "$data_dir" \
  --scale "$scale" "${files[@]}"
