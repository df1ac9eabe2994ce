#!/usr/bin/env bash
# GPU check (a GPU machine with a CUDA PyTorch, CMake and a compiler; no gRPC there):
# builds the kernel, its tests and the kernel benchmark against that PyTorch's LibTorch
# (-DLOGIT_KERNEL_ONLY=ON), runs the kernel tests (cuda_test included) and the kernel benchmark
# with its PyTorch peer on the GPU and on the CPU.
#   bash tests/gpu/run_gpu_check.sh DEPS_DIR FMNIST_DIR [OUT_DIR]
# DEPS_DIR holds Debian 12 .deb files of what that machine lacks (libabsl-dev, libabsl20220623,
# nlohmann-json3-dev, libgtest-dev, libgmock-dev, googletest, zlib1g-dev: `apt-get download` them
# on a Debian machine); they are unpacked under /opt/logit-deps, not over the system.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DEPS="$(cd "$1" && pwd)"
FMNIST="$(cd "$2" && pwd)"
OUT="${3:-/tmp/logit-gpu-out}"
mkdir -p "$OUT"
BUILD="$ROOT/build-gpu"
PY="${PYTHON:-python3}"
step() { echo "=== $* ($(date +%T))"; }

step machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'

step dependencies
mkdir -p /opt/logit-deps
for f in "$DEPS"/*.deb; do dpkg -x "$f" /opt/logit-deps; done
TORCH_PREFIX="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
SITE="$("$PY" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')"
NCCL_H="$(find "$SITE/nvidia" /usr/local/cuda*/include /usr/include -name nccl.h 2>/dev/null | head -1)"
echo "nccl.h: ${NCCL_H:-none}"
STD=$("$PY" -c 'import torch; v = torch.__version__.split("."); print(20 if (int(v[0]), int(v[1])) >= (2, 12) else 17)')
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)

step configure
cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" -DLOGIT_KERNEL_ONLY=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_STANDARD="$STD" -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;/opt/logit-deps/usr" \
  -DZLIB_ROOT=/opt/logit-deps/usr ${NCCL_H:+-DNCCL_INCLUDE_DIR="$(dirname "$NCCL_H")"} \
  -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" -Wno-dev >"$OUT/configure.log" 2>&1 ||
  { tail -40 "$OUT/configure.log"; exit 1; }
grep -E "logit:|Found CUDA|CUDA version" "$OUT/configure.log"

step build
cmake --build "$BUILD" -j"$(nproc)" >"$OUT/build.log" 2>&1 || { grep -E "error|Error" -A3 "$OUT/build.log" | head -60; exit 1; }

# Debian's absl links its own libraries by soname: they must be on the loader's path.
export LD_LIBRARY_PATH="/opt/logit-deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LOGIT_FMNIST_DIR="$FMNIST" OMP_NUM_THREADS=4
step cuda_test
"$BUILD/tests/cuda_test" 2>&1 | tee "$OUT/cuda_test.log" | grep -vE "^\[ *(RUN|OK) "
step "kernel tests (CPU)"
(cd "$BUILD" && ctest -E cuda_test -LE slow -j4 --output-on-failure --timeout 300) >"$OUT/ctest.log" 2>&1
tail -4 "$OUT/ctest.log"
# A crashed test: its stack, from cuda-gdb (the image has no gdb; cuda-gdb debugs host code too).
for t in $(grep -oP '^\s*\d+ - \K[a-z_]+(?= \()' "$OUT/ctest.log"); do
  echo "--- $t"
  grep -B2 -A12 "^\[ RUN" "$OUT/ctest.log" | grep -E "Failure|Expected|Which is|actual" | head -20
  (cd "$ROOT" && LOGIT_SOURCE_DIR="$ROOT" timeout 120 cuda-gdb -q -batch -ex run -ex bt \
    --args "$BUILD/tests/$t" 2>&1 | grep -E "^#|signal|Error" | head -30)
done

step "kernel benchmark, GPU"
unset OMP_NUM_THREADS
"$BUILD/tests/kernel_bench" --device cuda --threads 8 --lbfgs-iters 1000 --lbfgs-precision float64 --data-dir "$FMNIST" >"$OUT/bench_gpu.json" &&
  cat "$OUT/bench_gpu.json"
"$PY" "$ROOT/tests/bench/torch_peer.py" 8 cuda "$FMNIST" >"$OUT/peer_gpu.json" && cat "$OUT/peer_gpu.json"
step "kernel benchmark, CPU (same machine)"
"$BUILD/tests/kernel_bench" --device cpu --threads 8 --skip-lbfgs --data-dir "$FMNIST" >"$OUT/bench_cpu.json" &&
  cat "$OUT/bench_cpu.json"
"$PY" "$ROOT/tests/bench/torch_peer.py" 8 cpu "$FMNIST" >"$OUT/peer_cpu.json" && cat "$OUT/peer_cpu.json"
step done
