#!/usr/bin/env bash
# Sanitizer runs (README "Security"):
#   asan: the unit tests built with AddressSanitizer + UndefinedBehaviorSanitizer (gcc), any
#         report fails the run.
#   tsan: the coordinator under concurrent clients and workers in one process
#         (coordinator_concurrency_test), then logit-server, logit-worker and the integration
#         tests built with ThreadSanitizer; a data race in logit's code fails the run.
#   tsan-unit: coordinator_test, coordinator_concurrency_test, rendezvous_kv_test and
#         observability_test under ThreadSanitizer (what CI runs).
# Usage: bash tests/sanitize/run_sanitizers.sh [asan|tsan-unit|tsan|all]   (default all)
# Build trees: build-asan/, build-tsan/ (ignored by git). Needs the packages of
# .ci/install-deps.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
which="${1:-all}"

run_asan() {
  local b="$ROOT/build-asan"
  cmake -S "$ROOT" -B "$b" -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_FLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" > /dev/null
  local tests=(readers_test model_io_test train_options_test metrics_test objective_test trainer_test
    sklearn_optimum_test checkpoint_test resume_test rendezvous_kv_test observability_test)
  cmake --build "$b" -j2 --target "${tests[@]}"
  # LibTorch and OpenBLAS are not instrumented: leaks inside them at exit are theirs, and
  # libgomp's thread pool is not torn down; everything else is reported.
  export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:strict_string_checks=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  (cd "$b" && ctest -j2 --output-on-failure --timeout 1200 -R "^($(IFS='|'; echo "${tests[*]}"))\$")
}

configure_tsan() {
  cmake -S "$ROOT" -B "$1" -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_FLAGS="-O1 -g -fsanitize=thread -fno-omit-frame-pointer" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" > /dev/null
}

run_tsan_unit() {
  local b="$ROOT/build-tsan"
  configure_tsan "$b"
  cmake --build "$b" -j2 --target coordinator_test coordinator_concurrency_test rendezvous_kv_test \
    observability_test
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$ROOT/tests/sanitize/tsan.supp"
  (cd "$b" && ctest --output-on-failure --timeout 900 \
    -R '^(coordinator(_concurrency)?_test|rendezvous_kv_test|observability_test)$')
}

run_tsan() {
  local b="$ROOT/build-tsan"
  configure_tsan "$b"
  local tests=(coordinator_test coordinator_concurrency_test hostile_input_test security_test
    server_test)
  cmake --build "$b" -j2 --target logit logit-server logit-worker "${tests[@]}"
  # Uninstrumented libraries (gRPC's core, LibTorch, libgomp) synchronise in ways TSan cannot
  # see; their frames are suppressed, races with logit's frames on both sides are not.
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:report_signal_unsafe=0:suppressions=$ROOT/tests/sanitize/tsan.supp:log_path=$b/tsan"
  rm -f "$b"/tsan.*
  (cd "$b" && ctest --output-on-failure --timeout 1800 -R "^($(IFS='|'; echo "${tests[*]}"))\$") || {
    cat "$b"/tsan.* 2>/dev/null | head -200
    return 1
  }
  if compgen -G "$b/tsan.*" > /dev/null; then
    echo "ThreadSanitizer reports:"
    cat "$b"/tsan.* | head -200
    return 1
  fi
  echo "ThreadSanitizer: no reports"
}

case "$which" in
  asan) run_asan ;;
  tsan-unit) run_tsan_unit ;;
  tsan) run_tsan ;;
  all) run_asan; run_tsan ;;
  *) echo "usage: $0 [asan|tsan-unit|tsan|all]" >&2; exit 2 ;;
esac
