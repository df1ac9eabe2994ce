#!/usr/bin/env bash
# The README's test command: installs what is missing (Debian packages), builds, runs every test,
# then the sanitizer runs (AddressSanitizer + UndefinedBehaviorSanitizer, ThreadSanitizer).
#   bash tests/run_all.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/.ci/install-deps.sh"
BUILD="${BUILD_DIR:-$ROOT/build}"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$BUILD" -j2
(cd "$BUILD" && ctest -j2 --output-on-failure --timeout 900)
# Then the unit tests under ASan + UBSan, and the coordinator under concurrent clients and
# workers under ThreadSanitizer. The TSan run of the multi-process integration tests
# (`run_sanitizers.sh tsan`) is a script, not CI: see README, Security.
bash "$ROOT/tests/sanitize/run_sanitizers.sh" asan
bash "$ROOT/tests/sanitize/run_sanitizers.sh" tsan-unit
