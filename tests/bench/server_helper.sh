# Sourced by the benchmark scripts that need a server: starts logit-server with one local worker
# on a free loopback port (data under a temporary directory), stops it and removes the directory
# on exit, and sets ADDR (host:port), TMP and PID. Needs BUILD (the build directory).
TMP="$(mktemp -d)"
"$BUILD/server/logit-server" --listen 127.0.0.1:0 --local-workers 1 \
  --data-root /usr/share/datasets --data-dir "$TMP/data" > "$TMP/server.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID; wait $PID 2>/dev/null || true; rm -rf "$TMP"' EXIT
ADDR=""
for _ in $(seq 100); do
  ADDR="$(sed -n 's/^logit-server listening on \([^ ]*\).*/\1/p' "$TMP/server.log")"
  [[ -n "$ADDR" ]] && break
  sleep 0.1
done
if [[ -z "$ADDR" ]]; then
  echo "logit-server did not start; its log:" >&2
  cat "$TMP/server.log" >&2
  exit 1
fi
