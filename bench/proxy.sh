#!/usr/bin/env bash
# The fault proxy's cost: wrk with HTTP keep-alive against nginx directly, through one
# faultline edge proxy (no toxics), through HAProxy in TCP mode, through tokio's
# copy_bidirectional, and through a proxy made with faultline's Toxiproxy-compatible API
# (faultline-agent --toxiproxy-listen, POST /proxies), in one run, with every
# process on both cores and then with the proxy on a core of its own; the CPU each proxy
# spends per request. Then the time from an agent API call to the fault being in effect,
# for kill and for partition.
#
# Needs: cargo build --release --workspace --bins --examples; wrk, haproxy, nginx-light from
# Debian; python3, taskset (util-linux). Everything on 127.0.0.1, stopped when the script
# ends.
#
# Usage: bench/proxy.sh [duration=15s] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-15s}
CONNS=${2:-64}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
. bench/common.sh

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
NGINX_PORT=$(free_port); PROXY_PORT=$(free_port); HAPROXY_PORT=$(free_port); COPY_PORT=$(free_port)
TOXI_API_PORT=$(free_port); TOXI_PORT=$(free_port)
nginx_conf "$WORK" "$NGINX_PORT"
cat > "$WORK/haproxy.cfg" <<CONF
global
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
listen tcp
  bind 127.0.0.1:$HAPROXY_PORT
  server nginx 127.0.0.1:$NGINX_PORT
CONF
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" & PIDS+=($!)
haproxy -f "$WORK/haproxy.cfg" -db 2>/dev/null & PIDS+=($!)
target/release/examples/edge_proxy "127.0.0.1:$PROXY_PORT" "127.0.0.1:$NGINX_PORT" > /dev/null & PIDS+=($!)
target/release/examples/plain_copy "127.0.0.1:$COPY_PORT" "127.0.0.1:$NGINX_PORT" & PIDS+=($!)
# The agent with no topology, serving Toxiproxy's API; the proxy under test is made through
# that API as a Toxiproxy client makes it, and runs inside the agent process.
FAULTLINE_HOME="$WORK/home" target/release/faultline-agent --run-dir "$WORK/agent-run" \
  --toxiproxy-listen "127.0.0.1:$TOXI_API_PORT" > "$WORK/agent.out" & PIDS+=($!)
for _ in $(seq 1 200); do grep -q '^run directory:' "$WORK/agent.out" 2>/dev/null && break; sleep 0.05; done
grep -q "^ready: .*toxiproxy=http://127.0.0.1:$TOXI_API_PORT" "$WORK/agent.out" \
  || { echo "faultline-agent did not report ready:" >&2; cat "$WORK/agent.out" >&2; exit 1; }
code=$(curl -s -o "$WORK/toxiproxy-create.json" -w '%{http_code}' -XPOST "http://127.0.0.1:$TOXI_API_PORT/proxies" \
  -d "{\"name\":\"nginx\",\"listen\":\"127.0.0.1:$TOXI_PORT\",\"upstream\":\"127.0.0.1:$NGINX_PORT\"}")
[ "$code" = 201 ] || { echo "POST /proxies answered $code: $(cat "$WORK/toxiproxy-create.json")" >&2; exit 1; }
for p in $NGINX_PORT $HAPROXY_PORT $PROXY_PORT $COPY_PORT $TOXI_PORT; do wait_http "http://127.0.0.1:$p/"; done

# pids: the process whose CPU is counted for each target (direct counts none).
declare -A PID=([direct]=0 [faultline-proxy]=${PIDS[2]} [haproxy-tcp]=${PIDS[1]} [tokio-copy]=${PIDS[3]} [toxiproxy-api]=${PIDS[4]})
declare -A PORT=([direct]=$NGINX_PORT [faultline-proxy]=$PROXY_PORT [haproxy-tcp]=$HAPROXY_PORT [tokio-copy]=$COPY_PORT [toxiproxy-api]=$TOXI_PORT)
TARGETS="direct faultline-proxy haproxy-tcp tokio-copy toxiproxy-api"
PROXY_PIDS="${PIDS[1]} ${PIDS[2]} ${PIDS[3]} ${PIDS[4]}"
cpu_ticks() { [ "$1" = 0 ] && echo "0 0" || awk '{print $14, $15}' "/proc/$1/stat"; }
# pin CPUS PID...: every thread of every PID onto CPUS.
pin() { local c=$1; shift; for p in "$@"; do taskset -a -c -p "$c" "$p" > /dev/null; done; }
NGINX_PIDS="${PIDS[0]} $(pgrep -P "${PIDS[0]}" | xargs)"

# Two layouts, both on this 2-core machine:
#  shared: wrk (2 threads), nginx and the proxy under test all share both cores, so the
#          proxy's CPU is taken from the load generator and the server: this measures the
#          proxy's CPU cost per request more than its capacity.
#  pinned: wrk (1 thread) and nginx on CPU 0, the proxy under test alone on CPU 1: the
#          proxy has a core of its own, as a sidecar or a proxy host has, and the question
#          is whether it holds the rate that the client and the server make between them.
# Run-to-run noise on a shared 2-core machine is large (10-25%), so every target runs
# ROUNDS times, interleaved, and the medians are compared.
ROUNDS=${ROUNDS:-5}
for layout in shared pinned; do
  if [ "$layout" = pinned ]; then
    pin 0 $NGINX_PIDS; pin 1 $PROXY_PIDS; WRK="taskset -c 0 wrk -t1"
  else
    pin 0-1 $NGINX_PIDS $PROXY_PIDS; WRK="wrk -t2"
  fi
  echo "## $layout: $WRK -c$CONNS -d$DURATION --latency, $ROUNDS interleaved rounds"
  for round in $(seq 1 "$ROUNDS"); do
    for t in $TARGETS; do
      before=$(cpu_ticks "${PID[$t]}")
      $WRK -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:${PORT[$t]}/" > "$WORK/$layout.$t.$round.wrk"
      echo "$before $(cpu_ticks "${PID[$t]}")" > "$WORK/$layout.$t.$round.cpu"
    done
  done
done
pin 0-1 $NGINX_PIDS $PROXY_PIDS
python3 - "$WORK" "$ROUNDS" "$(getconf CLK_TCK)" <<'PY'
import re, statistics, sys
work, rounds, tck = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def ms(v, unit): return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
names = ["direct", "faultline-proxy", "haproxy-tcp", "tokio-copy", "toxiproxy-api"]
for layout in ["shared", "pinned"]:
    print(f"### {layout}")
    res = {}
    for name in names:
        rps, p50, p99, usr, krn = [], [], [], [], []
        for r in range(1, rounds + 1):
            t = open(f"{work}/{layout}.{name}.{r}.wrk").read()
            rps.append(float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)))
            p50.append(ms(*re.search(r"50%\s+([\d.]+)(us|ms|s)", t).groups()))
            p99.append(ms(*re.search(r"99%\s+([\d.]+)(us|ms|s)", t).groups()))
            reqs = int(re.search(r"(\d+) requests in", t).group(1))
            u0, s0, u1, s1 = map(int, open(f"{work}/{layout}.{name}.{r}.cpu").read().split())
            usr.append((u1 - u0) / tck * 1e6 / reqs); krn.append((s1 - s0) / tck * 1e6 / reqs)
        res[name] = [statistics.median(x) for x in (rps, p50, p99, usr, krn)]
        cpu = "" if name == "direct" else f"  CPU per request: user {res[name][3]:.1f} us + kernel {res[name][4]:.1f} us"
        print(f"{name:16} req/s median {res[name][0]:8.0f} (runs {', '.join(f'{x:.0f}' for x in rps)})  p50 {res[name][1]:.2f} ms  p99 {res[name][2]:.2f} ms{cpu}")
    d, p, h = res["direct"], res["faultline-proxy"], res["haproxy-tcp"]
    print(f"ratio proxy/direct {p[0]/d[0]:.2f}, haproxy/direct {h[0]/d[0]:.2f}, proxy/haproxy {p[0]/h[0]:.2f}, proxy/tokio-copy {p[0]/res['tokio-copy'][0]:.2f}")
    print(f"CPU per request, proxy/haproxy {(p[3] + p[4]) / (h[3] + h[4]):.2f}")
    print(f"added latency over direct: proxy p50 {p[1]-d[1]:+.2f} ms p99 {p[2]-d[2]:+.2f} ms; haproxy p50 {h[1]-d[1]:+.2f} ms p99 {h[2]-d[2]:+.2f} ms")
    x = res["toxiproxy-api"]
    print(f"ratio toxiproxy-api/direct {x[0]/d[0]:.2f}, toxiproxy-api/haproxy {x[0]/h[0]:.2f}, toxiproxy-api/proxy {x[0]/p[0]:.2f}")
    print(f"CPU per request, toxiproxy-api/proxy {(x[3] + x[4]) / (p[3] + p[4]):.2f}, toxiproxy-api/haproxy {(x[3] + x[4]) / (h[3] + h[4]):.2f}")
    print(f"added latency over direct: toxiproxy-api p50 {x[1]-d[1]:+.2f} ms p99 {x[2]-d[2]:+.2f} ms")
PY

echo "## time from the API call to the fault in effect (faultline up, release build)"
target/release/faultline up --entrypoint-port 0 --run-dir "$WORK/run" > "$WORK/up.out" 2>/dev/null & PIDS+=($!)
until grep -q '^logs:' "$WORK/up.out" 2>/dev/null; do sleep 0.05; done
AGENT=$(sed -n "s/^ready: .*agent=//p" "$WORK/up.out")
echo "# agent at $AGENT"
python3 - "$AGENT" <<'PY'
import http.client, json, os, sys, time, urllib.parse
agent = urllib.parse.urlparse(sys.argv[1])
def call(method, path, body=None):
    c = http.client.HTTPConnection(agent.hostname, agent.port)
    c.request(method, path, json.dumps(body) if body else None, {"content-type": "application/json"})
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, json.loads(data) if data else None
def replica(name):
    _, st = call("GET", "/v1/status")
    return next(r for r in st["replicas"] if r["name"] == name)
def alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False
def pct(v, p): v = sorted(v); return v[min(len(v) - 1, int(p * len(v)))]
kill_api, kill_dead = [], []
for _ in range(20):
    while replica("content-1")["state"] != "healthy": time.sleep(0.01)
    pid = replica("content-1")["pid"]
    t0 = time.perf_counter()
    status, f = call("POST", "/v1/faults", {"kind": "kill", "target": "content-1", "hold": True, "ttl_ms": 60000})
    t1 = time.perf_counter()
    while alive(pid): pass
    t2 = time.perf_counter()
    assert status == 201, f
    kill_api.append((t1 - t0) * 1000); kill_dead.append((t2 - t0) * 1000)
    call("DELETE", f"/v1/faults/{f['id']}")
part_api = []
for _ in range(20):
    t0 = time.perf_counter()
    status, f = call("POST", "/v1/faults", {"kind": "partition", "target": "orders", "with": "broker", "ttl_ms": 60000})
    part_api.append((time.perf_counter() - t0) * 1000)
    assert status == 201, f
    call("DELETE", f"/v1/faults/{f['id']}")
print(f"kill (hold): API answered p50 {pct(kill_api, .5):.2f} ms p99 {pct(kill_api, .99):.2f} ms; process gone p50 {pct(kill_dead, .5):.2f} ms p99 {pct(kill_dead, .99):.2f} ms")
print(f"partition orders<->broker: API answered (toxics installed on every edge) p50 {pct(part_api, .5):.2f} ms p99 {pct(part_api, .99):.2f} ms")
PY
