#!/usr/bin/env bash
# The store's failover and what safe replication costs, in one run on this machine:
# - failover time: a shard-1 leader SIGKILLed and held down (faultline fault kill
#   --hold), to the first write acknowledged by the new leader, over TRIALS trials,
#   with a client writing one-key batches to the shard without pause (following the
#   store's 421 leader hints, as orders does); p50, p99 and max;
# - acknowledged orders per second at saturation with semi-synchronous replication (the
#   default: a write is answered once a follower has it durably) and with asynchronous
#   replication (SHOP_STORE_REPLICATION=async: answered once the leader alone has it,
#   the store before failover), and their ratio; through the gateway (orders) and
#   straight to the store (one-key batches to shard 1's leader).
#
# - the peer: the same failover trials against a three-member etcd cluster
#   (bench/etcd_failover.py), and the ratio of the two.
#
# Needs: a release build (cargo build --release --workspace; BIN=target/debug to use a
# debug build instead), wrk, python3, curl, etcd (apt-get install wrk etcd-server).
# Everything runs on 127.0.0.1 ports picked at run time and stops when the script ends.
#
# Usage: bench/store-failover.sh [trials=20] [duration=15s]
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${1:-20}
DURATION=${2:-15s}
BIN=${BIN:-target/release}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
. bench/common.sh

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r), $(df -T "$WORK" | awk 'NR==2 {print $2}') on $(df "$WORK" | awk 'NR==2 {print $1}')"

# up NAME [ENV=VALUE...]: starts the shop in $WORK/NAME; sets GW, AGENT and addr().
up() {
  local name=$1; shift
  env SHOP_RATE_LIMIT_RPS=0 "$@" $BIN/faultline up --entrypoint-port 0 --run-dir "$WORK/$name" > "$WORK/$name.out" 2>&1 &
  UP_PID=$!
  PIDS+=($UP_PID)
  until grep -q '^logs:' "$WORK/$name.out" 2>/dev/null; do sleep 0.05; done
  GW=$(sed -n 's/^ready: gateway=\([^ ]*\).*/\1/p' "$WORK/$name.out")
  AGENT=$(sed -n 's/^ready: .*agent=\([^ ]*\).*/\1/p' "$WORK/$name.out")
  OUT="$WORK/$name.out"
}
addr() { awk -v r="$1" '$2==r {print $4}' "$OUT"; }
down() { kill "$UP_PID"; wait "$UP_PID" 2>/dev/null || true; }

saturate() {
  for i in $(seq 1 64); do
    curl -sf -X POST "$GW/api/v1/auth/login" -H 'content-type: application/json' \
      -d "{\"username\":\"user$i\",\"password\":\"pass$i\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
  done > "$WORK/tokens"
  for p in $(seq 1 50); do curl -sf -o /dev/null "$GW/api/v1/products/$p"; done
  TOKENS="$WORK/tokens" wrk -t2 -c64 -d"$DURATION" --latency -s bench/lua/orders.lua "$GW" > "$WORK/$1.wrk"
  grep -E 'Requests/sec|50%|99%|Non-2xx|requests in' "$WORK/$1.wrk"
  # The store alone: one-key batches straight to shard 1's leader, where replication
  # is the whole cost rather than a part of the order path's.
  wrk -t2 -c64 -d"$DURATION" --latency -s bench/lua/store_batch.lua "http://$(addr store-primary-1)" > "$WORK/$1-store.wrk"
  grep -E 'Requests/sec|50%|99%|Non-2xx|requests in' "$WORK/$1-store.wrk"
}

echo "## failover: $TRIALS trials, SIGKILL of shard 1's leader (held down 4 s) to the first write acknowledged by the new leader"
up failover
FAULTLINE_AGENT="$AGENT" python3 bench/store_failover.py "$TRIALS" "$BIN/faultline" \
  "store-primary-1=$(addr store-primary-1)" "store-replica-1=$(addr store-replica-1)" | tee "$WORK/store.trials"
down
echo "## the peer: the same trials against a three-member etcd cluster (etcd's defaults: election timeout 1 s, heartbeat 100 ms)"
mkdir -p "$WORK/etcd"
python3 bench/etcd_failover.py "$TRIALS" "$WORK/etcd" | tee "$WORK/etcd.trials"
python3 - "$WORK/store.trials" "$WORK/etcd.trials" <<'PY'
import re, sys
def q(path):
    m = re.search(r"p50 (\d+) ms, p99 (\d+) ms", open(path).read())
    return int(m.group(1)), int(m.group(2))
(s50, s99), (e50, e99) = q(sys.argv[1]), q(sys.argv[2])
print(f"failover store/etcd: p50 {s50}/{e50} ms = {s50 / e50:.2f}x, p99 {s99}/{e99} ms = {s99 / e99:.2f}x")
PY

echo "## acknowledged orders/s at saturation, semi-synchronous replication (default)"
up semi
saturate semi
down
echo "## acknowledged orders/s at saturation, asynchronous replication (SHOP_STORE_REPLICATION=async)"
up async SHOP_STORE_REPLICATION=async
saturate async
down
python3 - "$WORK/semi.wrk" "$WORK/async.wrk" "$DURATION" <<'PY'
import re, sys
def rate(path):
    text = open(path).read()
    total = int(re.search(r"(\d+) requests in", text).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
    secs = float(re.search(r"requests in ([\d.]+)s", text).group(1))
    return (total - non2xx) / secs, non2xx, total
for what, suffix in (("orders/s through the gateway", ""), ("store batches/s (shard 1's leader alone)", "-store")):
    semi, s_ref, s_tot = rate(sys.argv[1].replace(".wrk", suffix + ".wrk"))
    asyn, a_ref, a_tot = rate(sys.argv[2].replace(".wrk", suffix + ".wrk"))
    print(f"acknowledged {what}: semi-sync {semi:.0f} ({s_ref} refused of {s_tot}), async {asyn:.0f} ({a_ref} refused of {a_tot}), ratio semi-sync/async {semi / asyn:.2f}")
PY
