#!/usr/bin/env bash
# The README's main-job command: installs what is missing, builds, trains on Fashion-MNIST
# (Debian package dataset-fashion-mnist), prints accuracy, then predicts with the saved model.
#   bash deploy/quickstart.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/.ci/install-deps.sh"
BUILD="${BUILD_DIR:-$ROOT/build}"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j2 --target logit
F=/usr/share/datasets/fashion-mnist
OUT="${LOGIT_OUT:-$ROOT/logit-data}"
mkdir -p "$OUT"
"$BUILD/client/logit" train --local \
  --data "$F/train-images-idx3-ubyte.gz" --labels "$F/train-labels-idx1-ubyte.gz" \
  --test-data "$F/t10k-images-idx3-ubyte.gz" --test-labels "$F/t10k-labels-idx1-ubyte.gz" \
  --optimizer adam --batch-size 256 --epochs 10 --val-split 0.1 --seed 1 \
  --save-model "$OUT/fashion-mnist.npz"
echo "predictions for the first test images (label,p_0..p_9):"
"$BUILD/client/logit" predict --model-file "$OUT/fashion-mnist.npz" \
  --input "$F/t10k-images-idx3-ubyte.gz" --labels "$F/t10k-labels-idx1-ubyte.gz" \
  --out "$OUT/fashion-mnist-predictions.csv"
head -6 "$OUT/fashion-mnist-predictions.csv"
