#!/usr/bin/env bash
# Predict latency: starts logit-server with one local worker, trains Iris (4 features) and
# Fashion-MNIST (784 features, 10 classes), then times Predict and ModelInfer on loopback.
#   bash tests/bench/run_predict_bench.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="${BUILD_DIR:-$ROOT/build}"
cmake --build "$BUILD" --target predict_bench logit logit-server logit-worker -j2 >/dev/null
source "$ROOT/tests/bench/server_helper.sh"  # sets ADDR, TMP, PID; stops it on exit
L="$BUILD/client/logit"
iris=$("$L" --server "$ADDR" -o json train --data "$ROOT/tests/data/iris.csv" \
  --label-column target | tail -1 | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["model_id"])')
F=server:fashion-mnist
fm=$("$L" --server "$ADDR" -o json train --data "$F/train-images-idx3-ubyte.gz" \
  --labels "$F/train-labels-idx1-ubyte.gz" --optimizer adam --epochs 1 | tail -1 |
  /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["model_id"])')
echo "iris ($iris): $("$BUILD/tests/predict_bench" "$ADDR" "$iris" 4)"
echo "fashion-mnist ($fm): $("$BUILD/tests/predict_bench" "$ADDR" "$fm" 784)"
# Peer, same run: scikit-learn's predict_proba in-process on the same weights (its own time, no
# transport), for one row and 1,000 rows.
"$L" --server "$ADDR" model get "$fm" "$TMP/fm.npz" > /dev/null
/usr/bin/python3 - "$TMP/fm.npz" <<'PY'
import sys, time
import numpy as np
from sklearn.linear_model import LogisticRegression
z = np.load(sys.argv[1])
m = LogisticRegression()
m.coef_, m.intercept_ = z["W"].T.astype(np.float64), z["b"].astype(np.float64)
m.classes_ = np.arange(z["W"].shape[1])
x1, xb = np.random.rand(1, 784), np.random.rand(1000, 784)
def p50(f, n):
    t = []
    for _ in range(n):
        s = time.perf_counter(); f(); t.append(time.perf_counter() - s)
    return 1e6 * sorted(t)[len(t) // 2]
print(f"scikit-learn predict_proba (fashion-mnist weights): one row p50 {p50(lambda: m.predict_proba(x1), 2000):.1f} us, "
      f"1000 rows p50 {p50(lambda: m.predict_proba(xb), 100):.1f} us")
PY
