#!/usr/bin/env bash
# Fault injection: a logit-server and 4 external logit-workers on loopback run a mix of 8 jobs
# (L-BFGS, Adam, SGD with momentum; the shipped CSVs and Fashion-MNIST; 1-2 workers) while
# workers are killed and hung at random and the coordinator is killed once; then the same jobs run
# uninterrupted and the report compares them (tests/fault/fault_inject.cc says what is checked).
#   bash tests/fault/run_fault_injection.sh [--build-dir DIR] [fault_inject flags...]
# e.g. --jobs 6 --duration 90 --faults 4 --seed 7 --work-dir /tmp/fi. Builds nothing: build
# first with
#   cmake --build build -j2 --target logit-server logit-worker fault_inject
# About 1.5 minutes with the defaults on 2 cores. Exit status: fault_inject's (0 pass, 1 a check
# failed, 2 the run could not be set up, 130 interrupted); logs and report stay in the work dir.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="${BUILD_DIR:-$ROOT/build}"
if [[ "${1:-}" == "--build-dir" ]]; then
  BUILD="$2"
  shift 2
fi
for bin in tests/fault_inject server/logit-server worker/logit-worker; do
  if [[ ! -x "$BUILD/$bin" ]]; then
    echo "run_fault_injection.sh: $BUILD/$bin is missing; build it first:" >&2
    echo "  cmake --build $BUILD -j2 --target logit-server logit-worker fault_inject" >&2
    exit 2
  fi
done
# exec: SIGINT/SIGTERM reach fault_inject, which stops every process it started.
exec "$BUILD/tests/fault_inject" --server-bin "$BUILD/server/logit-server" \
  --worker-bin "$BUILD/worker/logit-worker" --test-data "$ROOT/tests/data" "$@"
