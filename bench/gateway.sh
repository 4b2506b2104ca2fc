#!/usr/bin/env bash
# Gateway throughput and p99 on the cdn-hit path, against HAProxy -> nginx on the same
# machine in the same run: two hops against two hops. Also the time from `faultline up`
# to its ready line.
#
# Needs: a release build (cargo build --release --workspace), and wrk, haproxy and
# nginx from Debian (apt-get install wrk haproxy nginx-light). Everything listens on
# 127.0.0.1 ports picked at run time and stops when the script ends.
#
# Usage: bench/gateway.sh [duration=15s] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-15s}
CONNS=${2:-64}
BIN=target/release
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

. bench/common.sh

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "# tools: $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), $(haproxy -v | head -1 | cut -d' ' -f1-3), $(nginx -v 2>&1 | cut -d' ' -f3)"

# --- startup time: faultline up -> ready, five runs --------------------------------
echo "## time from faultline up to ready (release build)"
for i in 1 2 3 4 5; do
  start=$(date +%s%N)
  FAULTLINE_HOME=$WORK/home $BIN/faultline up --entrypoint-port 0 --run-dir "$WORK/run-start-$i" > "$WORK/start-$i.out" 2>&1 &
  pid=$!
  until grep -q '^ready:' "$WORK/start-$i.out" 2>/dev/null; do sleep 0.005; done
  end=$(date +%s%N)
  echo "run $i: $(( (end - start) / 1000000 )) ms"
  kill -TERM $pid; wait $pid || true
done

# --- the shop's gateway --------------------------------------------------------------
# --no-proxies: two hops (gateway, cdn) against two hops (HAProxy, nginx); with the fault
# proxies on, every shop edge is one hop more.
SHOP_RATE_LIMIT_RPS=0 $BIN/faultline up --no-proxies --entrypoint-port 0 --run-dir "$WORK/run" > "$WORK/up.out" 2>&1 &
PIDS+=($!)
until grep -q '^ready:' "$WORK/up.out" 2>/dev/null; do sleep 0.05; done
GW=$(sed -n 's/^ready: gateway=\([^ ]*\).*/\1/p' "$WORK/up.out")
curl -sf -o "$WORK/product.json" "$GW/api/v1/products/1"
curl -sf -D - -o /dev/null "$GW/api/v1/products/1" | grep -i '^x-cache: HIT' > /dev/null
SIZE=$(stat -c %s "$WORK/product.json")

# --- HAProxy -> nginx serving a static body of the same size -------------------------
NGINX_PORT=$(free_port); HAPROXY_PORT=$(free_port)
nginx_conf "$WORK" "$NGINX_PORT" "$WORK/product.json"
cat > "$WORK/haproxy.cfg" <<CONF
global
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend be
backend be
  http-reuse always
  server nginx 127.0.0.1:$NGINX_PORT
CONF
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" & PIDS+=($!)
haproxy -f "$WORK/haproxy.cfg" -db & PIDS+=($!)
wait_http "http://127.0.0.1:$NGINX_PORT/"
wait_http "http://127.0.0.1:$HAPROXY_PORT/"

run_wrk() { # name url
  echo "## $1: wrk -t2 -c$CONNS -d$DURATION --latency $2"
  wrk -t2 -c"$CONNS" -d"$DURATION" --latency "$2" | tee "$WORK/$1.wrk" | grep -E 'Requests/sec|99%|50%|Non-2xx|Socket errors' || true
}
echo "# response body: $SIZE bytes"
run_wrk haproxy "http://127.0.0.1:$HAPROXY_PORT/api/v1/products/1"
run_wrk gateway "$GW/api/v1/products/1"

rps() { awk '/Requests\/sec/ {print $2}' "$WORK/$1.wrk"; }
echo "## ratio gateway / haproxy->nginx requests/s: $(python3 -c "print(round($(rps gateway)/$(rps haproxy), 3))")"
