#!/usr/bin/env bash
# The autoscaler's reaction time to a step in load: a shop content service in front of
# a cache that is an auto-scaling group (target 20 requests a second per replica, 1 to
# 4 replicas); `faultline load` steps from nothing to RATE requests a second; the time
# from the step to the scale-out being done (new replicas healthy and in the caller's
# upstream file: the scaling's `at_ms` in the agent's status) and to the first
# decision (the agent's `faultline_agent_autoscale_desired_replicas` above 1), TRIALS
# times, each after the group is back at one replica.
#
# Needs: a build (cargo build --release -p faultline -p shop), python3, curl.
# Loopback only; everything stops when the script ends.
# Usage: bench/autoscale.sh   (env: RATE=100 TRIALS=10)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-100}
TRIALS=${TRIALS:-10}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
PROFILE=${PROFILE:-release}
FAULTLINE=$(realpath "${FAULTLINE:-$TARGET_DIR/$PROFILE/faultline}")
SHOP=$(realpath "${SHOP:-$TARGET_DIR/$PROFILE/shop}")
WORK=$(mktemp -d)
cleanup() { [ -n "${UP:-}" ] && kill "$UP" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cat > "$WORK/t.toml" <<TOML
entrypoint = "content"
[services.cache]
command = ["$SHOP", "cache", "--listen", "{listen}"]
autoscale = { min = 1, max = 4, target = 20, scale_in_window = "5s", scale_out_cooldown = "1s" }
[services.content]
command = ["$SHOP", "content", "--listen", "{listen}", "--cache", "@{upstream-file:cache}"]
calls = ["cache"]
TOML
FAULTLINE_HOME="$WORK/home" "$FAULTLINE" up --topology "$WORK/t.toml" --run-dir "$WORK/run" \
  --entrypoint-port 0 > "$WORK/up.out" 2> "$WORK/up.err" & UP=$!
for _ in $(seq 1 200); do grep -q '^ready:' "$WORK/up.out" 2>/dev/null && break; sleep 0.05; done
READY=$(grep '^ready:' "$WORK/up.out")
URL=$(echo "$READY" | tr ' ' '\n' | sed -n 's/^content=//p')
AGENT=$(echo "$READY" | tr ' ' '\n' | sed -n 's/^agent=//p')

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "# $("$FAULTLINE" --version), a step from 0 to $RATE requests/s, target 20/s per replica"
echo "| trial | step -> decision (ms) | step -> scaled out (ms) | replicas after |"
echo "|---|---|---|---|"
replicas() { curl -sf "$AGENT/v1/status" | python3 -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin)["replicas"] if r["service"]=="cache"))'; }
now_ms() { python3 -c 'import time; print(int(time.time()*1000))'; }
for t in $(seq 1 "$TRIALS"); do
  for _ in $(seq 1 600); do [ "$(replicas)" = 1 ] && break; sleep 0.1; done
  sleep 3   # the last scaling's cooldown and a quiet window before the step
  T0=$(now_ms)
  "$FAULTLINE" load "$URL/api/v1/products/7" -r "$RATE" -d 10s -c 16 > /dev/null 2>&1 & LOAD=$!
  python3 - "$AGENT" "$T0" "$t" <<'PY'
import json, sys, time, urllib.request
agent, t0, trial = sys.argv[1], int(sys.argv[2]), sys.argv[3]
decided = done = None
deadline = time.time() + 30
while time.time() < deadline and done is None:
    if decided is None:
        m = urllib.request.urlopen(agent + "/metrics").read().decode()
        for line in m.splitlines():
            if line.startswith('faultline_agent_autoscale_desired_replicas{service="cache"}') and float(line.split()[-1]) > 1:
                decided = int(time.time() * 1000) - t0
    s = json.load(urllib.request.urlopen(agent + "/v1/status"))
    outs = [x for x in s.get("scalings", []) if x["at_ms"] >= t0 and x["to"] > x["from"]]
    if outs:
        done = outs[0]["at_ms"] - t0
        after = outs[0]["to"]
    time.sleep(0.02)
print(f"| {trial} | {decided} | {done} | {after if done else '-'} |")
PY
  wait "$LOAD" || true
done 2>&1 | tee "$WORK/rows"
python3 - "$WORK/rows" <<'PY'
import statistics, sys
rows = [l.split("|") for l in open(sys.argv[1]) if l.startswith("| ") and l.split("|")[1].strip().isdigit()]
def col(i): return sorted(int(r[i]) for r in rows if r[i].strip() not in ("None", "-"))
for name, i in (("decision", 2), ("scaled out", 3)):
    v = col(i)
    if v:
        p99 = v[min(len(v) - 1, int(round(0.99 * (len(v) - 1))))]
        print(f"step -> {name}: p50 {statistics.median(v):.0f} ms, p99 {p99} ms, max {v[-1]} ms over {len(v)} trials")
PY
