#!/usr/bin/env bash
# The shop as containers (faultline up --runtime docker) against the shop as processes
# (--runtime process), in one run, on the same topology file:
#   1. time from `faultline up` to its ready line, ROUNDS rounds of each, interleaved,
#      with where a docker start spends its time (from the engine's events);
#   2. time from an agent API call to the fault in effect on replica content-1: kill
#      (--hold) and pause, CALLS calls of each, alternating the runtimes; then the
#      proxies' partition content <-> cdn (both runtimes) and, for the container only,
#      partition container:CONTENT-1 network:RUN-NETWORK (a forced disconnect), with
#      their heals;
#   3. gateway throughput and p99 on the cdn-hit path (bench/gateway.sh's load:
#      wrk -t2 -cCONNS GET /api/v1/products/1), without and with the fault proxies,
#      TP_ROUNDS rounds of each runtime, interleaved.
#
# Needs: a release build and images built from it, for example
#   CARGO_TARGET_DIR=/work/bench-target cargo build --release --workspace --bins
#   /work/bench-target/release/faultline images build --tag bench --bin-dir /work/bench-target/release
# then BIN=/work/bench-target/release bench/docker.sh. A running Docker engine
# (/var/run/docker.sock), wrk, python3, curl.
#
# The docker runs use the images tagged TAG (default bench): a copy of
# target-system/topology.toml with image = "faultline/shop:TAG", and
# FAULTLINE_REAPER_IMAGE=faultline/agent:TAG. Both runtimes run that copy, which also
# sets SHOP_RATE_LIMIT_RPS=0 in its [env] (containers get the topology's environment,
# not the caller's; one wrk is one client). Processes listen on 127.0.0.1; containers on
# the Docker network each run makes (faultline-<run id>), reached from the host at
# their container addresses. Every `faultline up` started here gets SIGTERM and is
# waited for; the script then checks that nothing of its runs is left on the engine.
#
# Usage: BIN=DIR [TAG=bench] [ROUNDS=5] [CALLS=20] [TP_ROUNDS=3] [PHASES="startup throughput faults"] bench/docker.sh [duration=15s] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-15s}
CONNS=${2:-64}
BIN=${BIN:-target/release}
TAG=${TAG:-bench}
ROUNDS=${ROUNDS:-5}
CALLS=${CALLS:-20}
TP_ROUNDS=${TP_ROUNDS:-3}
# Which parts run (the fault timing starts the shops with proxies even without "throughput").
PHASES=${PHASES:-startup throughput faults}
has() { [[ " $PHASES " == *" $1 "* ]]; }
SHOP_IMAGE=faultline/shop:$TAG
export FAULTLINE_REAPER_IMAGE=faultline/agent:$TAG
WORK=$(mktemp -d)
export FAULTLINE_HOME=$WORK/home
PIDS=()
RUN_IDS=()
# SIGTERM (faultline up heals, stops its replicas, removes its containers and network)
# and wait, for every process still running.
stop_all() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; PIDS=(); }
cleanup() { stop_all; rm -rf "$WORK"; }
trap cleanup EXIT
. bench/common.sh

for i in "$SHOP_IMAGE" "$FAULTLINE_REAPER_IMAGE"; do
  docker image inspect "$i" > /dev/null 2>&1 || { echo "no image $i: run $BIN/faultline images build --tag $TAG --bin-dir $BIN" >&2; exit 1; }
done
TOPO=$WORK/topology.toml
sed -e "s|^image = \"faultline/shop\"\$|image = \"$SHOP_IMAGE\"|" \
    -e 's|^SHOP_JWT_SECRET = .*|&\nSHOP_RATE_LIMIT_RPS = "0"|' target-system/topology.toml > "$TOPO"
grep -q "^image = \"$SHOP_IMAGE\"\$" "$TOPO" && grep -q '^SHOP_RATE_LIMIT_RPS = "0"$' "$TOPO" \
  || { echo "cannot make the topology copy (target-system/topology.toml changed?)" >&2; exit 1; }

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
echo "# docker: client $(docker version -f '{{.Client.Version}}'), engine $(docker version -f '{{.Server.Version}}') (API $(docker version -f '{{.Server.APIVersion}}')), $(docker info -f 'storage {{.Driver}}, cgroup {{.CgroupVersion}} ({{.CgroupDriver}})')"
echo "# images: $SHOP_IMAGE $(docker image inspect -f '{{.Id}}' "$SHOP_IMAGE" | cut -c8-19), $FAULTLINE_REAPER_IMAGE $(docker image inspect -f '{{.Id}}' "$FAULTLINE_REAPER_IMAGE" | cut -c8-19); $($BIN/faultline --version 2>&1 | head -1)"
echo "# tools: $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), $(python3 --version)"
load() { echo "# load $1: $(uptime | sed 's/.*load average/load average/'); busiest: $(top -bn1 -o %CPU | sed -n '8,12p' | awk '{printf "%s %s%%, ", $12, $9}')"; }
load "at the start"

# up NAME RUNTIME [ARGS...]: starts faultline up in the background (UP_PID, UP_START_NS).
up() {
  local name=$1 rt=$2; shift 2
  UP_START_NS=$(date +%s%N)
  $BIN/faultline up --runtime "$rt" --topology "$TOPO" --entrypoint-port 0 --run-dir "$WORK/run-$name" "$@" \
    > "$WORK/$name.out" 2> "$WORK/$name.err" &
  UP_PID=$!; PIDS+=("$UP_PID")
}
# ready NAME PID: waits for the ready line (3 min at most); prints nothing.
ready() {
  local end=$(( $(date +%s) + 180 ))
  until grep -q '^ready:' "$WORK/$1.out" 2>/dev/null; do
    if ! kill -0 "$2" 2>/dev/null || [ "$(date +%s)" -gt "$end" ]; then
      echo "faultline up ($1) did not get ready:" >&2; cat "$WORK/$1.out" "$WORK/$1.err" >&2; exit 1
    fi
    sleep 0.005
  done
  local id; id=$(sed -n 's/^ready: .*docker=faultline-\([0-9a-f]*\).*/\1/p' "$WORK/$1.out")
  [ -n "$id" ] && RUN_IDS+=("$id")
  return 0
}
field() { sed -n "s/^ready: .*$2=\([^ ]*\).*/\1/p" "$WORK/$1.out"; }
# stop PID: SIGTERM and wait; STOP_MS is the ms it took.
stop() {
  local t0; t0=$(date +%s%N); kill -TERM "$1"; wait "$1" || true
  STOP_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
  local left=() p; for p in "${PIDS[@]}"; do [ "$p" != "$1" ] && left+=("$p"); done; PIDS=("${left[@]}")
}
# gone ID: waits (20 s at most) until nothing labelled with run ID is on the engine.
gone() {
  for _ in $(seq 1 200); do
    [ -z "$(docker ps -aq --filter "label=faultline.run=$1")$(docker ps -aq --filter "label=faultline.reaper=$1")$(docker network ls -q --filter "label=faultline.run=$1")" ] && return 0
    sleep 0.1
  done
  return 1
}

# --- 1. faultline up -> ready ---------------------------------------------------------
if has startup; then
echo "## 1. time from faultline up to ready, $ROUNDS interleaved rounds per runtime (first an uncounted warm-up of each)"
: > "$WORK/startup.txt"
for round in $(seq 0 "$ROUNDS"); do
  for rt in process docker; do
    up "start-$rt-$round" "$rt"; pid=$UP_PID; t0=$UP_START_NS
    ready "start-$rt-$round" "$pid"
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    end_ns=$(date +%s%N)
    stop "$pid"; stop_ms=$STOP_MS
    extra=""
    if [ "$rt" = docker ]; then
      id=${RUN_IDS[-1]}
      gone "$id" || echo "# warning: run $id left something on the engine 20 s after its stop" >&2
      # The engine's events of the run, for where the time went.
      # (Not by label: the engine ANDs label filters, and the reaper has its own label.)
      docker events --since "$(( t0 / 1000000000 ))" --until "$(( end_ns / 1000000000 + 1 ))" \
        --format '{{.TimeNano}} {{.Type}} {{.Action}} {{.Actor.Attributes.name}}' \
        | grep " faultline-$id" > "$WORK/events-$round.txt" || true
      extra=$(python3 - "$WORK/events-$round.txt" "$t0" "$end_ns" <<'PY'
import sys
events = [l.split() for l in open(sys.argv[1]) if l.strip()]
t0, ready = int(sys.argv[2]), int(sys.argv[3])
def first(pred):
    t = [int(e[0]) for e in events if pred(e)]
    return (min(t) - t0) / 1e6 if t else float("nan")
def last(pred):
    t = [int(e[0]) for e in events if pred(e)]
    return (max(t) - t0) / 1e6 if t else float("nan")
reaper = first(lambda e: e[1] == "container" and e[2] == "start" and "reaper" in e[3])
net = first(lambda e: e[1] == "network" and e[2] == "create" and not e[3].endswith("-probe"))
c0 = first(lambda e: e[1] == "container" and e[2] == "create" and "reaper" not in e[3])
c1 = last(lambda e: e[1] == "container" and e[2] == "start" and "reaper" not in e[3])
n = len({e[3] for e in events if e[1] == "container" and e[2] == "start" and "reaper" not in e[3]})
# Per replica container: create -> start, and how many were between the two at once.
spans = {}
for e in events:
    if e[1] == "container" and "reaper" not in e[3] and e[2] in ("create", "start"):
        spans.setdefault(e[3], {})[e[2]] = int(e[0])
spans = [(v["create"], v["start"]) for v in spans.values() if len(v) == 2]
each = sorted((b - a) / 1e6 for a, b in spans)
overlap = max(sum(1 for a2, b2 in spans if a2 <= a < b2) for a, b in spans) if spans else 0
print(f"reaper started {reaper:.0f}, network made {net:.0f}, first replica created {c0:.0f}, last of {n} started {c1:.0f}, ready {(ready - t0) / 1e6:.0f} ms; "
      f"create->start per container median {each[len(each) // 2]:.0f} ms (max {each[-1]:.0f}), at most {overlap} at once")
PY
)
    fi
    if [ "$round" = 0 ]; then
      echo "warm-up $rt: $ms ms (stop $stop_ms ms) $extra"
    else
      echo "$rt $ms $stop_ms" >> "$WORK/startup.txt"
      echo "round $round $rt: ready $ms ms, stopped $stop_ms ms after SIGTERM${extra:+; events: $extra}"
    fi
  done
done
python3 - "$WORK/startup.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for rt in ("process", "docker"):
    v = [int(r[1]) for r in rows if r[0] == rt]; s = [int(r[2]) for r in rows if r[0] == rt]
    med[rt] = statistics.median(v)
    print(f"{rt:8} ready: median {med[rt]:.0f} ms, min {min(v)}, max {max(v)} (runs {', '.join(map(str, v))}); stop after SIGTERM median {statistics.median(s):.0f} ms")
print(f"ratio docker / process (median time to ready): {med['docker'] / med['process']:.1f}")
PY
load "after the startup rounds"
fi

# --- 3. gateway throughput (before 2: the fault timing reuses the second pair) -------
run_wrk() { # name url
  wrk -t2 -c"$CONNS" -d"$DURATION" --latency "$2" > "$WORK/$1.wrk"
  echo "$1: $(awk '/Requests\/sec/ {print $2}' "$WORK/$1.wrk") req/s, p50 $(awk '$1 == "50%" {print $2}' "$WORK/$1.wrk"), p99 $(awk '$1 == "99%" {print $2}' "$WORK/$1.wrk")$(grep -E 'Non-2xx|Socket errors' "$WORK/$1.wrk" | sed 's/^ */; /' | tr -d '\n')"
}
declare -A GW AGENT
LAYOUTS="no-proxies proxies"; has throughput || LAYOUTS=proxies; has throughput || has faults || LAYOUTS=
for layout in $LAYOUTS; do
  args=(); [ "$layout" = no-proxies ] && args=(--no-proxies)
  has throughput && echo "## 3. gateway throughput, $layout: wrk -t2 -c$CONNS -d$DURATION --latency GATEWAY/api/v1/products/1, $TP_ROUNDS interleaved rounds"
  for rt in process docker; do
    up "tp-$layout-$rt" "$rt" "${args[@]}"; eval "PID_${rt}=$UP_PID"
  done
  for rt in process docker; do
    pidvar=PID_$rt; ready "tp-$layout-$rt" "${!pidvar}"
    GW[$rt]=$(field "tp-$layout-$rt" gateway); AGENT[$rt]=$(field "tp-$layout-$rt" agent)
    curl -sf -o /dev/null "${GW[$rt]}/api/v1/products/1"
    curl -sf -D - -o /dev/null "${GW[$rt]}/api/v1/products/1" | grep -qi '^x-cache: HIT' \
      || { echo "no cache hit through the $rt gateway" >&2; exit 1; }
    echo "# $rt: gateway ${GW[$rt]}, agent ${AGENT[$rt]} $(field "tp-$layout-$rt" docker)"
  done
  has throughput || continue
  for round in $(seq 1 "$TP_ROUNDS"); do
    for rt in process docker; do run_wrk "$layout.$rt.$round" "${GW[$rt]}/api/v1/products/1"; done
  done
  python3 - "$WORK" "$layout" "$TP_ROUNDS" <<'PY'
import re, statistics, sys
work, layout, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
def ms(v, unit): return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
med = {}
for rt in ("process", "docker"):
    rps, p50, p99 = [], [], []
    for r in range(1, rounds + 1):
        t = open(f"{work}/{layout}.{rt}.{r}.wrk").read()
        rps.append(float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)))
        p50.append(ms(*re.search(r"50%\s+([\d.]+)(us|ms|s)", t).groups()))
        p99.append(ms(*re.search(r"99%\s+([\d.]+)(us|ms|s)", t).groups()))
    med[rt] = [statistics.median(x) for x in (rps, p50, p99)]
    print(f"{layout} {rt:8} req/s median {med[rt][0]:.0f} (runs {', '.join(f'{x:.0f}' for x in rps)})  p50 {med[rt][1]:.2f} ms  p99 {med[rt][2]:.2f} ms (runs {', '.join(f'{x:.2f}' for x in p99)})")
print(f"{layout} ratio docker / process: req/s {med['docker'][0] / med['process'][0]:.2f}, p99 {med['docker'][2] / med['process'][2]:.2f}")
PY
  load "after the $layout rounds"
  if [ "$layout" = no-proxies ]; then for rt in process docker; do pidvar=PID_$rt; stop "${!pidvar}"; done; fi
done

# --- 2. API call -> fault in effect, on the second pair (proxies on, the default) ---
if has faults; then
echo "## 2. time from the API call to the fault in effect on content-1, $CALLS calls each, the runtimes alternating"
python3 - "$CALLS" "${AGENT[process]}" "${AGENT[docker]}" "${RUN_IDS[-1]}" "$(field tp-proxies-docker docker)" <<'PY'
import http.client, json, os, socket, statistics, sys, threading, time, urllib.parse
calls, run_id, network = int(sys.argv[1]), sys.argv[4], sys.argv[5]
class Agent:
    def __init__(self, url): u = urllib.parse.urlparse(url); self.host, self.port = u.hostname, u.port
    def call(self, method, path, body=None):
        c = http.client.HTTPConnection(self.host, self.port)
        c.request(method, path, json.dumps(body) if body else None, {"content-type": "application/json"})
        r = c.getresponse(); data = r.read(); c.close()
        return r.status, json.loads(data) if data else None
    def replica(self, name):
        _, st = self.call("GET", "/v1/status")
        return next(r for r in st["replicas"] if r["name"] == name)
    def healthy(self, name, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r = self.replica(name)
            if r["state"] == "healthy" and r.get("pid"): return r
            time.sleep(0.01)
        raise SystemExit(f"{name} not healthy again within {timeout} s: {r}")
agents = {"process": Agent(sys.argv[2]), "docker": Agent(sys.argv[3])}

class Events(threading.Thread):
    """The engine's events (GET /events on the local socket): by default the container
    events of the run, each under its container's name; network events are kept under
    the id of the container they concern."""
    def __init__(self, filters):
        super().__init__(daemon=True)
        self.seen, self.cond = [], threading.Condition()
        self.s = socket.socket(socket.AF_UNIX); self.s.connect("/var/run/docker.sock")
        q = urllib.parse.quote(json.dumps(filters))
        self.s.sendall(f"GET /events?filters={q} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
        self.f = self.s.makefile("rb")
        status = self.f.readline()
        assert b" 200 " in status, status
        while self.f.readline() not in (b"\r\n", b"\n", b""): pass
        self.start()
    def run(self):
        for line in self.f:
            line = line.strip()
            if not line.startswith(b"{"): continue
            ev = json.loads(line)
            with self.cond:
                attrs = ev["Actor"]["Attributes"]
                who = attrs.get("container", "") if ev["Type"] == "network" else attrs.get("name", "")
                self.seen.append((ev["Action"], who, ev["timeNano"]))
                self.cond.notify_all()
    def wait_for(self, name, action, after_ns, timeout=10):
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                hit = [t for a, n, t in self.seen if a == action and n == name and t >= after_ns]
                if hit: return min(hit)
                left = end - time.monotonic()
                if left <= 0: return None
                self.cond.wait(left)
events = Events({"type": ["container"], "label": [f"faultline.run={run_id}"]})
net_events = Events({"type": ["network"], "network": [network]})

def alive(pid):
    try: return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError: return False
def freezer(pid):
    """Where pid's freezing shows: its v1 freezer cgroup's freezer.state (Docker's, here),
    else its cgroup2 cgroup.events (faultline's own replica cgroups), else None."""
    v1 = v2 = None
    for line in open(f"/proc/{pid}/cgroup"):
        _, ctrl, path = line.strip().split(":", 2)
        if "freezer" in ctrl.split(",") and path != "/": v1 = f"/sys/fs/cgroup/freezer{path}/freezer.state"
        if ctrl == "" and path != "/":
            root = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
            v2 = f"{root}{path}/cgroup.events"
    return v1 or v2
def stopped(pid, state_file):
    if state_file is None: return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "T"
    text = open(state_file).read()
    return text.strip() == "FROZEN" if state_file.endswith("freezer.state") else "frozen 1" in text
def answers(addr):
    c = http.client.HTTPConnection(*addr.rsplit(":", 1), timeout=0.3)
    try: c.request("GET", "/health"); return c.getresponse().status == 200
    except OSError: return False
    finally: c.close()
TICK = 0.0001  # polls every 0.1 ms (plus Python's own time), so as not to take a core from the engine
def watch(cond):
    """Polls cond() from now on, in a thread (the API may answer after the fault is in
    effect); the returned function gives the perf_counter time it first held."""
    out = {}
    def run():
        while not cond(): time.sleep(TICK)
        out["t"] = time.perf_counter()
    th = threading.Thread(target=run, daemon=True); th.start()
    def when(timeout=30):
        th.join(timeout)
        if "t" not in out: raise SystemExit("the fault did not take effect within 30 s")
        return out["t"]
    return when

res = {rt: {} for rt in agents}
def add(rt, key, ms): res[rt].setdefault(key, []).append(ms)
mech = {}
for i in range(calls):
    for rt, a in agents.items():
        # kill --hold: the API's answer; the replica's first process gone (its host pid,
        # for a container the shop process the container runs); for a container the
        # engine's `die` (not running) and `destroy` (the old container removed) events;
        # after the heal, healthy again (a new process or container).
        r = a.healthy("content-1"); pid, cont = r["pid"], r.get("container")
        gone = watch(lambda: not alive(pid))
        w0 = time.time_ns(); t0 = time.perf_counter()
        status, f = a.call("POST", "/v1/faults", {"kind": "kill", "target": "content-1", "hold": True, "ttl_ms": 60000})
        t1 = time.perf_counter()
        assert status == 201, f
        t2 = gone()
        add(rt, "kill answered", (t1 - t0) * 1e3); add(rt, "kill: process gone", (t2 - t0) * 1e3)
        if cont:
            for action, key in (("die", "kill: engine says not running (die)"), ("destroy", "kill: old container removed (destroy)")):
                t = events.wait_for(cont, action, w0)
                if t is not None: add(rt, key, (t - w0) / 1e6)
        h0 = time.perf_counter(); a.call("DELETE", f"/v1/faults/{f['id']}"); a.healthy("content-1")
        add(rt, "kill: healthy again after the heal", (time.perf_counter() - h0) * 1e3)
        # pause: the API's answer; every process of the replica frozen (the freezer
        # cgroup of its first process FROZEN, or the process stopped without cgroups);
        # for a container the engine's `pause` event.
        r = a.healthy("content-1"); pid, cont = r["pid"], r.get("container")
        state_file = freezer(pid); mech[rt] = state_file or "SIGSTOP (no freezer cgroup; in effect = state T)"
        frozen = watch(lambda: stopped(pid, state_file))
        w0 = time.time_ns(); t0 = time.perf_counter()
        status, f = a.call("POST", "/v1/faults", {"kind": "pause", "target": "content-1", "ttl_ms": 60000})
        t1 = time.perf_counter()
        assert status == 201, f
        t2 = frozen()
        add(rt, "pause answered", (t1 - t0) * 1e3); add(rt, "pause: frozen", (t2 - t0) * 1e3)
        if cont:
            t = events.wait_for(cont, "pause", w0)
            if t is not None: add(rt, "pause: engine's pause event", (t - w0) / 1e6)
        if i == 0: add(rt, "pause: /health still answered (0.3 s timeout), count", int(answers(r["addr"])))
        a.call("DELETE", f"/v1/faults/{f['id']}")
        while stopped(pid, state_file): time.sleep(TICK)

# Network partitions. A prober (one thread) starts a new connection to ADDR every
# millisecond, each sending GET /health and allowed 0.25 s for its 200 (closed with a
# RST, so no TIME_WAIT piles up); attempts overlap, so a heal is seen within about a
# millisecond, not a connect timeout later. Of the attempts before the heal (DELETE),
# the last answered one and the first after it sent bound the moment the partition took
# effect: its last answer came before, that attempt's connection or request met it
# (each bound is off by the path's transit time, under a millisecond when answered). It
# is healed ("answers again") at the first answer after the DELETE.
import selectors
class Prober(threading.Thread):
    EVERY, LIFE = 0.001, 0.25
    def __init__(self, addr):
        super().__init__(daemon=True)
        host, port = addr.rsplit(":", 1); self.addr = (host, int(port))
        self.tries, self.stop = [], threading.Event()  # [launch, end or None, ok]
        self.start()
    def run(self):
        sel, live, nxt = selectors.DefaultSelector(), {}, time.perf_counter()
        req = b"GET /health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
        def done(s, ok):
            t = live.pop(s); t[1], t[2] = time.perf_counter(), ok
            sel.unregister(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0"); s.close()
        while not self.stop.is_set():
            now = time.perf_counter()
            if now >= nxt:
                s = socket.socket(); s.setblocking(False)
                t = [now, None, False]; self.tries.append(t); live[s] = t
                s.connect_ex(self.addr); sel.register(s, selectors.EVENT_WRITE)
                nxt = max(nxt + self.EVERY, now)
            for key, ev in sel.select(max(0.0, nxt - time.perf_counter())):
                s = key.fileobj
                if ev & selectors.EVENT_WRITE:
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR): done(s, False); continue
                    try: s.send(req)
                    except OSError: done(s, False); continue
                    sel.modify(s, selectors.EVENT_READ)
                else:
                    try: data = s.recv(64)
                    except OSError: data = b""
                    done(s, data.startswith(b"HTTP/1.1 200"))
            now = time.perf_counter()
            for s in [s for s, t in live.items() if now - t[0] > self.LIFE]: done(s, False)
        for s in list(live): done(s, False)
    def analyse(self, h0):
        """(last answer, first unanswered attempt sent, answered again), perf_counter
        times, or None where not seen; waits (15 s at most) for an answer after h0."""
        until(lambda: any(t[2] and t[1] > h0 for t in self.tries))
        self.stop.set(); self.join()
        tries = sorted(self.tries)
        before = [t for t in tries if t[2] and t[1] < h0]
        last = max(before) if before else None
        cut = [t[0] for t in tries if last and last[0] < t[0] < h0 and not (t[2] and t[1] < h0)]
        back = [t[1] for t in tries if t[2] and t[1] > h0]
        return (last[1] if last else None), (min(cut) if cut else None), (min(back) if back else None)
def until(cond, timeout=15):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end: raise SystemExit("timed out waiting for a partition's effect")
        time.sleep(0.01)
def links(pid):
    """The interfaces of pid's network namespace but lo (Docker's end of the veth: eth0
    at first, and after a reconnect the next free ethN)."""
    return [n for n in (l.split(":")[0].strip() for l in open(f"/proc/{pid}/net/dev").readlines()[2:]) if n != "lo"]
names = {}
def inspect(name):
    s = socket.socket(socket.AF_UNIX); s.connect("/var/run/docker.sock")
    s.sendall(f"GET /containers/{name}/json HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
    data = b"".join(iter(lambda: s.recv(65536), b"")); s.close()
    return json.loads(data.split(b"\r\n\r\n", 1)[1])
def edge(a, name):
    _, st = a.call("GET", "/v1/status")
    return str(next(e["listen"] for e in st["edges"] if e["name"] == name))
moved = 0
for i in range(calls):
    # The proxies' partition content <-> cdn (toxics holding every byte on the edges
    # cdn->content-N), both runtimes, probed through edge cdn->content-1's proxy.
    for rt, a in agents.items():
        a.healthy("content-1"); pr = Prober(edge(a, "cdn->content-1")); time.sleep(0.05)
        t0 = time.perf_counter()
        status, f = a.call("POST", "/v1/faults", {"kind": "partition", "target": "content", "with": "cdn", "ttl_ms": 60000})
        t1 = time.perf_counter()
        assert status == 201, f
        time.sleep(0.5)
        h0 = time.perf_counter(); a.call("DELETE", f"/v1/faults/{f['id']}")
        last, cut, back = pr.analyse(h0)
        add(rt, "proxy partition answered", (t1 - t0) * 1e3)
        if last is not None: add(rt, "proxy partition: last answer", (last - t0) * 1e3)
        if cut is not None: add(rt, "proxy partition: first unanswered sent", (cut - t0) * 1e3)
        if back is not None: add(rt, "proxy partition heal: answers again", (back - h0) * 1e3)
    # The container's partition from the run's network (a forced disconnect), docker only,
    # probed at the container's own address from the host.
    a = agents["docker"]
    r = a.healthy("content-1"); pid, cont, addr = r["pid"], r["container"], r["addr"]
    info = inspect(cont); cid = info["Id"]; ip = info["NetworkSettings"]["Networks"][network]["IPAddress"]
    assert addr.rsplit(":", 1)[0] == ip, (addr, ip)
    pr = Prober(addr); time.sleep(0.05)
    gone = watch(lambda: not links(pid))
    w0 = time.time_ns(); t0 = time.perf_counter()
    status, f = a.call("POST", "/v1/faults", {"kind": "partition", "target": f"container:{cont}", "with": f"network:{network}", "ttl_ms": 60000})
    t1 = time.perf_counter()
    assert status == 201, f
    t2 = gone(); ev = net_events.wait_for(cid, "disconnect", w0)
    time.sleep(0.5)
    back_eth = watch(lambda: bool(links(pid)))
    hw = time.time_ns(); h0 = time.perf_counter(); a.call("DELETE", f"/v1/faults/{f['id']}")
    h1 = time.perf_counter(); h2 = back_eth(); hev = net_events.wait_for(cid, "connect", hw)
    last, cut, back = pr.analyse(h0)
    after = inspect(cont)["NetworkSettings"]["Networks"].get(network, {}).get("IPAddress")
    moved += after != ip
    for n in links(pid): names[n] = names.get(n, 0) + 1
    add("docker", "disconnect answered", (t1 - t0) * 1e3)
    add("docker", "disconnect: interface gone from its netns", (t2 - t0) * 1e3)
    if ev is not None: add("docker", "disconnect: engine's disconnect event", (ev - w0) / 1e6)
    if last is not None: add("docker", "disconnect: last answer at its address", (last - t0) * 1e3)
    if cut is not None: add("docker", "disconnect: first unanswered sent", (cut - t0) * 1e3)
    add("docker", "reconnect (heal) answered", (h1 - h0) * 1e3)
    add("docker", "reconnect: an interface back in its netns", (h2 - h0) * 1e3)
    if hev is not None: add("docker", "reconnect: engine's connect event", (hev - hw) / 1e6)
    if back is not None: add("docker", "reconnect: answers again at its address", (back - h0) * 1e3)
print(f"# docker: after {calls} reconnects, content-1 had another address {moved} times; its interface after each: {names}")
def pct(v, p): v = sorted(v); return v[min(len(v) - 1, int(p * len(v)))]
for rt in agents:
    print(f"# {rt}: pause acts through {mech[rt]}")
    for key, v in res[rt].items():
        if key.endswith("count"): print(f"{rt:8} {key}: {sum(v)}"); continue
        print(f"{rt:8} {key:44} p50 {pct(v, .5):8.2f} ms  p90 {pct(v, .9):8.2f} ms  max {max(v):8.2f} ms  ({len(v)} calls)")
for key in ("kill: process gone", "pause: frozen", "proxy partition: first unanswered sent", "proxy partition heal: answers again"):
    print(f"ratio docker / process, {key}, p50: {pct(res['docker'][key], .5) / pct(res['process'][key], .5):.1f}")
for key, peer in (("disconnect: first unanswered sent", "proxy partition: first unanswered sent"), ("reconnect: answers again at its address", "proxy partition heal: answers again")):
    print(f"ratio docker {key} / process {peer}, p50: {pct(res['docker'][key], .5) / pct(res['process'][peer], .5):.1f}")
PY
fi

load "at the end"
[ -n "$LAYOUTS" ] && for rt in process docker; do pidvar=PID_$rt; stop "${!pidvar}"; echo "# stopped the $rt shop in $STOP_MS ms"; done
for id in "${RUN_IDS[@]}"; do gone "$id" || echo "# warning: run $id left something on the engine" >&2; done
echo "# every run removed its containers and network (${#RUN_IDS[@]} docker runs)"
