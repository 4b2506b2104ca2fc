#!/usr/bin/env bash
# The fault proxy's user-space instructions per request, under callgrind: repeatable
# where req/s and CPU time on a shared 2-core machine are not. One edge proxy (no
# toxics) in front of nginx; `faultline load -c 8 -n COUNT` through it; the proxy's
# instruction total over the requests.
#
# Needs: cargo build --release --workspace --bins --examples; nginx-light and valgrind
# from Debian; python3. Everything on 127.0.0.1, stopped when the script ends.
#
# Usage: bench/proxy-instructions.sh [count=5000] [proxy binary=target/release/examples/edge_proxy]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-5000}
PROXY=${2:-target/release/examples/edge_proxy}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
. bench/common.sh

NGINX_PORT=$(free_port); PROXY_PORT=$(free_port)
nginx_conf "$WORK" "$NGINX_PORT"
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" & PIDS+=($!)
wait_http "http://127.0.0.1:$NGINX_PORT/"
valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
  "$PROXY" "127.0.0.1:$PROXY_PORT" "127.0.0.1:$NGINX_PORT" > /dev/null 2> "$WORK/valgrind.err" &
VG=$!
wait_http "http://127.0.0.1:$PROXY_PORT/"
target/release/faultline load "http://127.0.0.1:$PROXY_PORT/" -c 8 -n "$COUNT" --json > "$WORK/load.json" 2> /dev/null
# The proxy stops on SIGINT, and callgrind writes its counts as it exits.
kill -INT "$VG"; wait "$VG" || true
python3 - "$WORK/load.json" "$WORK/callgrind.out" <<'PY'
import json, re, sys
load = json.load(open(sys.argv[1]))
total = int(re.search(r"^summary: (\d+)", open(sys.argv[2]).read(), re.M).group(1))
n = load["requests"] + 1  # and the readiness check's request
print(f"requests {load['requests']} (statuses {load['statuses']}), proxy instructions {total:,}, per request {total / n:,.0f}")
PY
