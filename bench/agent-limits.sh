#!/usr/bin/env bash
# The agent under a careless or hostile client, loopback only:
# 1. N latency faults created one after another on one edge (the cost of each new fault
#    as the edge's toxic list grows), and /v1/status's p99 every 1,000 faults;
# 2. the agent's resident memory with 10,000 half-sent requests held against its API.
#
# Usage: bench/agent-limits.sh [AGENT_BINARY] [N]   (default: target/release, 10000)
# Compare two builds by passing each binary (e.g. one built from an older commit).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
agent=$(realpath "${1:-target/release/faultline-agent}")
n=${2:-10000}
shop=$(dirname "$agent")/shop
[ -x "$agent" ] && [ -x "$shop" ] || { echo "build first: cargo build --release --workspace" >&2; exit 2; }
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$dir"' EXIT
cat > "$dir/t.toml" <<EOF
entrypoint = "content"
[services.cache]
command = ["$shop", "cache", "--listen", "{listen}"]
[services.content]
command = ["$shop", "content", "--listen", "{listen}", "--cache", "{upstream:cache}"]
calls = ["cache"]
EOF
# An older agent has no --max-faults (and no cap): try with it, then without.
extra=()
"$agent" --help > "$dir/help"
grep -q -- --max-faults "$dir/help" && extra=(--max-faults $((n + 10)))
"$agent" --topology "$dir/t.toml" --run-dir "$dir/run" "${extra[@]}" > "$dir/out" 2> "$dir/err" &
pid=$!
for _ in $(seq 1 200); do grep -q '^ready:' "$dir/out" 2>/dev/null && break; sleep 0.05; done
url=$(grep -o 'agent=[^ ]*' "$dir/out" | cut -d= -f2) || { cat "$dir/err" >&2; exit 1; }
echo "agent $agent (pid $pid) at $url"
python3 - "$url" "$n" "$pid" <<'EOF'
import json, socket, sys, time, urllib.request
url, n, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def rss_mb():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
def p99_status(k=100):
    ts = []
    for _ in range(k):
        t = time.perf_counter(); urllib.request.urlopen(url + "/v1/status").read(); ts.append(time.perf_counter() - t)
    ts.sort(); return ts[int(k * 0.99) - 1] * 1000
body = json.dumps({"kind": "latency", "target": "content->cache", "delay_ms": 1, "ttl_ms": 3600000}).encode()
start = last = time.perf_counter()
for i in range(1, n + 1):
    req = urllib.request.Request(url + "/v1/faults", data=body, headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()
    if i % 1000 == 0:
        now = time.perf_counter()
        print(f"faults {i:6}: last 1000 in {now - last:6.2f} s; /v1/status p99 {p99_status():7.1f} ms", flush=True)
        last = now
print(f"faults: {n} in {time.perf_counter() - start:.2f} s")
urllib.request.urlopen(urllib.request.Request(url + "/v1/faults", method="DELETE")).read()
base = rss_mb()
addr = url.removeprefix("http://").rsplit(":", 1)
held = []
for _ in range(10000):
    s = socket.create_connection((addr[0], int(addr[1])))
    s.send(b"GET /v1/status HTTP/1.1\r\nhost: x\r\nx-wait: ")
    held.append(s)
time.sleep(1)
print(f"idle connections: RSS {base:.1f} MB before, {rss_mb():.1f} MB with 10000 half-sent requests held")
EOF
