#!/usr/bin/env bash
# The README's test command: installs what is missing (Debian packages), builds, runs every test.
#   bash tests/run_all.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/.ci/install-deps.sh"
BUILD="${BUILD_DIR:-$ROOT/build}"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$BUILD" -j2
cd "$BUILD"
ctest -j2 --output-on-failure --timeout 900
