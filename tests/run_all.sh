#!/usr/bin/env bash
# The README's test command: installs what is missing (Debian packages), builds, runs every test,
# then the unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer.
#   bash tests/run_all.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/.ci/install-deps.sh"
BUILD="${BUILD_DIR:-$ROOT/build}"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$BUILD" -j2
(cd "$BUILD" && ctest -j2 --output-on-failure --timeout 900)
# ThreadSanitizer runs of the coordinator and worker-agent tests take too long for CI (LibTorch
# under TSan): `bash tests/sanitize/run_sanitizers.sh tsan` runs them (README, Security).
bash "$ROOT/tests/sanitize/run_sanitizers.sh" asan
