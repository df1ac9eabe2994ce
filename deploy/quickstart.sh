#!/usr/bin/env bash
# The README's main-job command: installs what is missing, builds, starts the embedded
# coordinator (logit-server with 2 local workers on loopback), submits Fashion-MNIST (Debian
# package dataset-fashion-mnist) as a 2-worker job, follows its progress, prints accuracy,
# predicts through the server, and shuts the server down.
#   bash deploy/quickstart.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/.ci/install-deps.sh"
BUILD="${BUILD_DIR:-$ROOT/build}"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j2 --target logit logit-server logit-worker
OUT="${LOGIT_OUT:-$ROOT/logit-data}"
mkdir -p "$OUT"

# The server picks a free port and says which.
"$BUILD/server/logit-server" --listen 127.0.0.1:0 --local-workers 2 \
  --data-root /usr/share/datasets --data-dir "$OUT/server" > "$OUT/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill -TERM $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  ADDR="$(sed -n 's/^logit-server listening on \([^ ]*\).*/\1/p' "$OUT/server.log")"
  [[ -n "$ADDR" ]] && break
  kill -0 $SERVER_PID 2>/dev/null || { cat "$OUT/server.log"; exit 1; }
  sleep 0.1
done
echo "logit-server on $ADDR (log: $OUT/server.log)"
export LOGIT_SERVER="$ADDR"

F=server:fashion-mnist
"$BUILD/client/logit" train --workers 2 \
  --data "$F/train-images-idx3-ubyte.gz" --labels "$F/train-labels-idx1-ubyte.gz" \
  --test-data "$F/t10k-images-idx3-ubyte.gz" --test-labels "$F/t10k-labels-idx1-ubyte.gz" \
  --optimizer adam --batch-size 256 --epochs 10 --val-split 0.1 --seed 1 | tee "$OUT/train.log"
MODEL="$(sed -n 's/^model \(model-[0-9]*\)$/\1/p' "$OUT/train.log" | tail -1)"

echo "predictions of $MODEL for the first test images (label,p_0..p_9):"
D=/usr/share/datasets/fashion-mnist
"$BUILD/client/logit" predict --model "$MODEL" \
  --input "$D/t10k-images-idx3-ubyte.gz" --labels "$D/t10k-labels-idx1-ubyte.gz" \
  --out "$OUT/fashion-mnist-predictions.csv"
head -6 "$OUT/fashion-mnist-predictions.csv"
