#!/usr/bin/env bash
# The shop's order path: acknowledged orders per second at saturation (fsync on), the
# order->paid latency at a fixed ~200 orders/s, and the store's write throughput (fsync
# and group commit) against PostgreSQL single-row inserts with synchronous commit, all in
# one run on this machine.
#
# Needs: a release build (cargo build --release --workspace), wrk and postgresql from
# Debian (apt-get install wrk postgresql), python3. Everything runs on 127.0.0.1 ports
# picked at run time and stops when the script ends.
#
# Usage: bench/orders.sh [duration=15s]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-15s}
BIN=target/release
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${PGDATA:-}" ] && su postgres -c "$PGBIN/pg_ctl -D $PGDATA -m immediate stop" >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
. bench/common.sh

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r), $(df -T "$WORK" | awk 'NR==2 {print $2}') on $(df "$WORK" | awk 'NR==2 {print $1}')"

SHOP_RATE_LIMIT_RPS=0 $BIN/faultline up --entrypoint-port 0 --run-dir "$WORK/run" > "$WORK/up.out" 2>&1 &
PIDS+=($!)
until grep -q '^logs:' "$WORK/up.out" 2>/dev/null; do sleep 0.05; done
GW=$(sed -n 's/^ready: gateway=\([^ ]*\).*/\1/p' "$WORK/up.out")
addr() { awk -v r="$1" '$2==r {print $4}' "$WORK/up.out"; }
for i in $(seq 1 64); do
  curl -sf -X POST "$GW/api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"username\":\"user$i\",\"password\":\"pass$i\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
done > "$WORK/tokens"
# Warm the cdn so pricing is a cache hit, as in steady state.
for p in $(seq 1 50); do curl -sf -o /dev/null "$GW/api/v1/products/$p"; done

# The paced phase runs first: after saturation the payment path has a backlog to drain
# (payments charges at most workers / bank latency: 8 / 20 ms = 400 a second).
echo "## order -> paid at a fixed rate: 20 connections pacing 100 ms (about 200 orders/s) for $DURATION"
START_MS=$(python3 -c 'import time; print(int(time.time()*1000))')
TOKENS="$WORK/tokens" PACE_MS=100 wrk -t2 -c20 -d"$DURATION" -s bench/lua/orders.lua "$GW" > "$WORK/paced.wrk"
grep -E 'Requests/sec|Non-2xx' "$WORK/paced.wrk"
# Wait (at most 30 s) until every order of the phase is paid or failed, then read the
# created and updated times the orders service recorded.
for _ in $(seq 1 300); do
  curl -sf "http://$(addr orders-1)/v1/audit/orders" > "$WORK/audit.json"
  python3 -c "import json,sys; o=json.load(open('$WORK/audit.json'))['orders']; sys.exit(any(x['status']=='pending' for x in o))" && break
  sleep 0.1
done
python3 - "$WORK/audit.json" "$START_MS" <<'PY'
import json, sys
orders = json.load(open(sys.argv[1]))["orders"]
start = int(sys.argv[2])
lat = sorted(o["updated_ms"] - o["created_ms"] for o in orders if o["created_ms"] >= start and o["status"] != "pending")
pending = sum(1 for o in orders if o["created_ms"] >= start and o["status"] == "pending")
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"order->paid over {len(lat)} orders ({pending} still pending): p50 {q(0.5)} ms, p99 {q(0.99)} ms, max {lat[-1]} ms")
PY

echo "## store writes: wrk -t2 -c64 -d$DURATION -s bench/lua/store.lua (one-key batches to a primary)"
wrk -t2 -c64 -d"$DURATION" --latency -s bench/lua/store.lua "http://$(addr store-primary-1)" > "$WORK/store.wrk"
grep -E 'Requests/sec|50%|99%|Non-2xx' "$WORK/store.wrk"
curl -sf "http://$(addr store-primary-1)/metrics" | grep -E '^shop_store_wal_group_commit_size_(sum|count)' || true

echo "## PostgreSQL: pgbench -c64 -j2 -T ${DURATION%s} single-row INSERTs, synchronous_commit=on"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGDATA="$WORK/pg"
PGPORT=$(free_port)
mkdir -p "$PGDATA"; chown postgres "$PGDATA" "$WORK"; chmod 755 "$WORK"
su postgres -c "$PGBIN/initdb -D $PGDATA -A trust" > /dev/null
su postgres -c "$PGBIN/pg_ctl -D $PGDATA -o '-p $PGPORT -k $WORK -c listen_addresses=127.0.0.1 -c synchronous_commit=on -c fsync=on -c max_connections=100' -l $WORK/pg.log start" > /dev/null
su postgres -c "$PGBIN/psql -h 127.0.0.1 -p $PGPORT -q -c 'CREATE TABLE kv (k text PRIMARY KEY, v jsonb)' postgres"
cat > "$WORK/insert.sql" <<'SQL'
\set n random(1, 1000000000)
INSERT INTO kv VALUES ('bench/' || :client_id || '/' || :n || '/' || random(), '{"n": 1, "payload": "0123456789abcdef0123456789abcdef"}');
SQL
chmod 644 "$WORK/insert.sql"
su postgres -c "$PGBIN/pgbench -h 127.0.0.1 -p $PGPORT -n -c 64 -j 2 -T ${DURATION%s} -f $WORK/insert.sql postgres" > "$WORK/pg.out" 2>&1
grep -E '^tps|latency average' "$WORK/pg.out"
python3 - "$WORK/store.wrk" "$WORK/pg.out" <<'PY'
import re, sys
store = float(re.search(r"Requests/sec:\s+([\d.]+)", open(sys.argv[1]).read()).group(1))
pg = float(re.search(r"tps = ([\d.]+)", open(sys.argv[2]).read()).group(1))
print(f"store writes/s {store:.0f}, PostgreSQL inserts/s {pg:.0f}, ratio store/PostgreSQL {store / pg:.2f}")
PY

# Saturation last: it leaves a payment backlog that would load the machine for the
# measurements above.
echo "## saturation: wrk -t2 -c64 -d$DURATION -s bench/lua/orders.lua (POST /api/v1/orders)"
TOKENS="$WORK/tokens" wrk -t2 -c64 -d"$DURATION" --latency -s bench/lua/orders.lua "$GW" > "$WORK/sat.wrk"
grep -E 'Requests/sec|50%|99%|Non-2xx|requests in' "$WORK/sat.wrk"
python3 - "$WORK/sat.wrk" "$DURATION" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
total = int(re.search(r"(\d+) requests in", text).group(1))
non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
secs = float(re.search(r"requests in ([\d.]+)s", text).group(1))
print(f"acknowledged orders/s: {(total - non2xx) / secs:.0f} ({non2xx} refused of {total})")
PY

