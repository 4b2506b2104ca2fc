#!/usr/bin/env bash
# `faultline load --workers` (issue 17) against one nginx serving a 170-byte file on
# loopback, with wrk as the peer in the same run:
#   long, short: the controller's peak RSS and CPU time (user+sys) with NWORKERS workers for
#      LONG at CTRL_RATE req/s (CTRL_CONNS connections in all) (long), against 1 worker and
#      against one process (no workers), each for SHORT at the same rate (short); the merge cost per
#      second per worker is controller CPU / (seconds x workers);
#   closed: closed model, CONNS connections for CLOSED: wrk -t2, faultline load alone and
#      faultline load split over two workers (CONNS users in all), req/s and p99;
#   open: open model, RATE req/s for OPEN: one process against two workers, achieved rate
#      and p99 from the intended send time.
# closed and open run ROUNDS times, the setups interleaved (order reversed every other
# round). Every worker is a fresh `faultline worker --listen 127.0.0.1:0`, started for
# its run and stopped after it, so its CPU and peak RSS are that run's. Every run also
# records the CPU the rest of the machine used meanwhile (all busy CPU from /proc/stat
# less the load generator's, its workers' and nginx's), since these 2 cores are shared.
# Progress goes to stderr, results to stdout.
#
# On one machine the workers share its cores with each other, the controller and nginx:
# this measures what splitting the load costs, not how it scales over machines.
#
# Needs: a release build (cargo build --release -p faultline; set FAULTLINE=path or
# CARGO_TARGET_DIR if it is not in target/), and wrk, nginx-light and time from Debian
# (apt-get install wrk nginx-light time); python3, curl.
# Everything listens on 127.0.0.1 on ports picked at run time and stops when the script ends.
#
# Usage: bench/workers.sh   (env: CONNS=64 CLOSED=15s RATE=5000 OPEN=15s ROUNDS=2
#                           CTRL_RATE=1000 CTRL_CONNS=50 LONG=10m SHORT=60s NWORKERS=10
#                           PHASES="long short closed open" to run only some;
#                           KEEP=dir keeps every run's raw output there)
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-64}
CLOSED=${CLOSED:-15s}
RATE=${RATE:-5000}
OPEN=${OPEN:-15s}
ROUNDS=${ROUNDS:-2}
CTRL_RATE=${CTRL_RATE:-1000}
CTRL_CONNS=${CTRL_CONNS:-50}
LONG=${LONG:-10m}
SHORT=${SHORT:-60s}
NWORKERS=${NWORKERS:-10}
PHASES=${PHASES:-long short closed open}
KEEP=${KEEP:-}
FAULTLINE=${FAULTLINE:-${CARGO_TARGET_DIR:-target}/release/faultline}
WORK=$(mktemp -d)
PIDS=()
WPIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  if [ -n "$KEEP" ]; then mkdir -p "$KEEP" && cp "$WORK"/*.out "$WORK"/*.err "$WORK"/*.time "$WORK"/*.acct "$WORK"/*.workers "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "[workers.sh $(date +%T)] $*" >&2; }
need() { command -v "$1" > /dev/null || { echo "workers.sh: $1 not found (install: $2)" >&2; exit 1; }; }
need wrk "apt-get install wrk"
need nginx "apt-get install nginx-light"
need python3 "apt-get install python3"
need curl "apt-get install curl"
[ -x /usr/bin/time ] || { echo "workers.sh: /usr/bin/time not found (install: apt-get install time)" >&2; exit 1; }
[ -x "$FAULTLINE" ] || { echo "workers.sh: no faultline binary at $FAULTLINE (cargo build --release -p faultline, or set FAULTLINE)" >&2; exit 1; }

. bench/common.sh

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "# tools: $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(nginx -v 2>&1 | cut -d' ' -f3), $("$FAULTLINE" --version)"
echo "# started $(date -u +%FT%TZ), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- nginx serving a 170-byte file ---------------------------------------------------
PORT=$(free_port)
URL="http://127.0.0.1:$PORT/"
nginx_conf "$WORK" "$PORT"
log "starting nginx on 127.0.0.1:$PORT"
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" & NGINX=$!; PIDS+=("$NGINX")
wait_http "$URL"
[ "$(curl -sf "$URL" | wc -c)" = 170 ] || { echo "nginx does not serve the 170-byte body" >&2; exit 1; }

# --- CPU accounting (clock ticks) ------------------------------------------------------
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }
ticks_of() { local t=0 p; for p in "$@"; do [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }
nginx_ticks() { ticks_of "$NGINX" $(ps -o pid= --ppid "$NGINX"); }

# start_workers N NAME: N fresh workers; their pids in WPIDS, their URLs (comma-separated)
# in WURLS.
start_workers() {
  local n=$1 name=$2 i f url
  WPIDS=(); WURLS=""
  for i in $(seq 1 "$n"); do
    f="$WORK/$name.worker$i"
    "$FAULTLINE" worker --listen 127.0.0.1:0 > "$f.out" 2> "$f.err" & WPIDS+=($!); PIDS+=($!)
  done
  for i in $(seq 1 "$n"); do
    f="$WORK/$name.worker$i"
    for _ in $(seq 1 200); do grep -q '^ready: worker=' "$f.out" 2>/dev/null && break; sleep 0.05; done
    url=$(sed -n 's/^ready: worker=//p' "$f.out")
    [ -n "$url" ] || { echo "workers.sh: worker $i of $name did not get ready:" >&2; cat "$f.err" >&2; exit 1; }
    WURLS+="${WURLS:+,}$url"
  done
}
# stop_workers NAME: their CPU ticks and peak RSS (VmHWM, kB) to NAME.workers, then stop them.
stop_workers() {
  local p
  for p in "${WPIDS[@]}"; do
    echo "$p $(ticks_of "$p") $(awk '/^VmHWM/{print $2}' "/proc/$p/status")" >> "$WORK/$1.workers"
  done
  for p in "${WPIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  WPIDS=()
}

# run NAME CMD...: CMD's stdout to $WORK/NAME.out, stderr to NAME.err, /usr/bin/time -v
# to NAME.time, and NAME.acct: wall seconds, busy ticks of the machine, of nginx and of
# the workers over the run, the load average after. A failed run stops the script.
run() {
  local name=$1; shift
  log "$name: $*"
  local t0 b0 n0 w0 t1
  t0=$(date +%s.%N); b0=$(busy_ticks); n0=$(nginx_ticks); w0=$(ticks_of "${WPIDS[@]}")
  if ! /usr/bin/time -v -o "$WORK/$name.time" "$@" > "$WORK/$name.out" 2> "$WORK/$name.err"; then
    echo "workers.sh: $name failed:" >&2; cat "$WORK/$name.err" "$WORK/$name.out" >&2; exit 1
  fi
  t1=$(date +%s.%N)
  echo "$(echo "$t1 - $t0" | bc) $(( $(busy_ticks) - b0 )) $(( $(nginx_ticks) - n0 )) $(( $(ticks_of "${WPIDS[@]}") - w0 )) $(cut -d' ' -f1 /proc/loadavg)" > "$WORK/$name.acct"
  sleep 1
}
# load_run NAME WORKERS ARGS...: faultline load URL ARGS --json, split over WORKERS fresh
# workers (0: this process makes the load).
load_run() {
  local name=$1 n=$2; shift 2
  if [ "$n" = 0 ]; then run "$name" "$FAULTLINE" load "$URL" "$@" --json; return; fi
  start_workers "$n" "$name"
  run "$name" "$FAULTLINE" load "$URL" "$@" --workers "$WURLS" --json
  stop_workers "$name"
}
order() { if (( $1 % 2 )); then echo "$2"; else echo "$2" | tr ' ' '\n' | tac | xargs; fi; }
phase() { [[ " $PHASES " == *" $1 "* ]]; }
need bc "apt-get install bc"

if phase long; then
  log "long: $CTRL_RATE req/s, $CTRL_CONNS connections: $NWORKERS workers for $LONG"
  load_run "ctrl.w$NWORKERS" "$NWORKERS" -r "$CTRL_RATE" -d "$LONG" -c "$CTRL_CONNS"
fi
if phase short; then
  log "short: $CTRL_RATE req/s, $CTRL_CONNS connections: 1 worker and one process for $SHORT"
  load_run "ctrl.w1" 1 -r "$CTRL_RATE" -d "$SHORT" -c "$CTRL_CONNS"
  load_run "ctrl.w0" 0 -r "$CTRL_RATE" -d "$SHORT" -c "$CTRL_CONNS"
fi
if phase closed; then
  log "closed: $CONNS connections, $CLOSED, $ROUNDS rounds"
  for r in $(seq 1 "$ROUNDS"); do
    for t in $(order "$r" "wrk one two"); do
      case $t in
        wrk) run "closed.wrk.$r" wrk -t2 -c"$CONNS" -d"$CLOSED" --latency "$URL" ;;
        one) load_run "closed.one.$r" 0 -c "$CONNS" -d "$CLOSED" ;;
        two) load_run "closed.two.$r" 2 -c "$CONNS" -d "$CLOSED" ;;
      esac
    done
  done
fi
if phase open; then
  log "open: $RATE req/s, $CONNS connections, $OPEN, $ROUNDS rounds"
  for r in $(seq 1 "$ROUNDS"); do
    for t in $(order "$r" "one two"); do
      case $t in
        one) load_run "open.one.$r" 0 -r "$RATE" -c "$CONNS" -d "$OPEN" ;;
        two) load_run "open.two.$r" 2 -r "$RATE" -c "$CONNS" -d "$OPEN" ;;
      esac
    done
  done
fi
echo "# ended $(date -u +%FT%TZ), load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$WORK" "$ROUNDS" "$PHASES" "$NWORKERS" "$(getconf CLK_TCK)" "$CONNS" "$CLOSED" "$RATE" "$OPEN" "$CTRL_RATE" "$CTRL_CONNS" "$LONG" "$SHORT" <<'PY'
import glob, json, os, re, statistics, sys
work, rounds, phases, nworkers, hz = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), int(sys.argv[4]), int(sys.argv[5])
conns, closed_d, rate, open_d, ctrl_rate, ctrl_conns, long_d, short_d = sys.argv[6:14]
def text(name): return open(f"{work}/{name}").read()
def timing(name):
    t = text(f"{name}.time")
    num = lambda k: float(re.search(rf"{k}: ([\d.]+)", t).group(1))
    return num("Maximum resident set size \\(kbytes\\)") / 1024, num("User time \\(seconds\\)") + num("System time \\(seconds\\)")
def workers(name):
    p = f"{work}/{name}.workers"
    if not os.path.exists(p): return 0.0, 0.0, 0
    rows = [l.split() for l in open(p).read().split("\n") if l.strip()]
    return sum(int(r[1]) for r in rows) / hz, max(int(r[2]) for r in rows) / 1024, len(rows)
def acct(name):
    wall, busy, nginx, wticks, load = text(f"{name}.acct").split()
    return float(wall), int(busy) / hz, int(nginx) / hz, int(wticks) / hz, float(load)
def ms(v, unit): return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
def parse(name):
    out = text(f"{name}.out")
    rss, cpu = timing(name)
    wall, busy, ngx, wcpu, load = acct(name)
    wcpu_total, wrss, nw = workers(name)
    d = dict(rss=rss, cpu=cpu, wcpu=wcpu_total, wrss=wrss, nw=nw, nginx=ngx, load=load,
             others=max(0.0, busy - cpu - wcpu - ngx) / wall)
    if name.split(".")[1] == "wrk":
        d["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        d["p99"] = ms(*re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups())
        d["notes"] = "; ".join(l.strip() for l in out.splitlines() if "Non-2xx" in l or "Socket errors" in l)
        return d
    j = json.loads(out)
    d.update(rps=j["requests_per_s"], ok=j["ok_per_s"], p99=j["latency_ms"]["p99"], p50=j["latency_ms"]["p50"],
             lag99=j["scheduler_lag_ms"]["p99"], requests=j["requests"], dropped=j["dropped"], duration=j["duration_s"],
             wsum=sum(w["requests"] for w in j["workers"]), wlist=j["workers"])
    notes = ([f"dropped {j['dropped']}"] if j["dropped"] else []) + [f"{k}: {v}" for k, v in j["errors"].items()]
    bad = {k: v for k, v in j["statuses"].items() if not k.startswith("2")}
    notes += [f"status {k}: {v}" for k, v in bad.items()]
    if j["workers"] and d["wsum"] != j["requests"]: notes.append(f"MISMATCH: workers sum {d['wsum']} != requests {j['requests']}")
    d["notes"] = "; ".join(notes)
    return d

res = {}
def get(phase, setup): return [parse(f"{phase}.{setup}.{r}") for r in range(1, rounds + 1)]
def mean(xs, k): return statistics.mean(x[k] for x in xs)

if "long" in phases or "short" in phases:
    print(f"\n## controller: {ctrl_rate} req/s, {ctrl_conns} connections in all")
    print("| run | length | workers | requests | sum of the workers' | achieved req/s | p99 ms | scheduler lag p99 ms | controller peak RSS MiB | controller CPU s | controller CPU per second per worker | workers' CPU s (all) | worker peak RSS MiB (max) | others' CPU (cores) | notes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, n, length in ((f"ctrl.w{nworkers}", nworkers, long_d), ("ctrl.w1", 1, short_d), ("ctrl.w0", 0, short_d)):
        if not os.path.exists(f"{work}/{name}.out"): continue
        d = parse(name)
        per = f"{d['cpu'] / (d['duration'] * n) * 1e6:,.0f} µs" if n else "-"
        wsum = f"{d['wsum']:,}" if n else "-"
        print(f"| {name} | {length} | {n} | {d['requests']:,} | {wsum} | {d['rps']:,.1f} | {d['p99']:.2f} | {d['lag99']:.2f} | {d['rss']:.1f} | {d['cpu']:.2f} | {per} | "
              f"{d['wcpu']:.1f} | {d['wrss']:.1f} | {d['others']:.2f} | {d['notes'] or '-'} |")
        if n: print("  per worker: " + ", ".join(f"{w['segment']} {w['requests']:,}" for w in d["wlist"]), file=sys.stdout)
if "closed" in phases:
    print(f"\n## closed model, {conns} connections in all, {closed_d}")
    print("| setup | round | req/s | p99 ms | generator CPU s (controller or process + workers) | others' CPU (cores) | notes |")
    print("|---|---|---|---|---|---|---|")
    for setup in ("wrk", "one", "two"):
        res[setup] = get("closed", setup)
        for r, d in enumerate(res[setup], 1):
            print(f"| {setup} | {r} | {d['rps']:,.0f} | {d['p99']:.2f} | {d['cpu']:.2f} + {d['wcpu']:.1f} | {d['others']:.2f} | {d['notes'] or '-'} |")
    w, o, t = (mean(res[s], "rps") for s in ("wrk", "one", "two"))
    print(f"means: wrk {w:,.0f}, one process {o:,.0f}, two workers {t:,.0f} req/s; "
          f"two workers / one process {t/o:.2f}; one process / wrk {o/w:.2f}; two workers / wrk {t/w:.2f}; "
          f"p99 means wrk {mean(res['wrk'],'p99'):.2f}, one {mean(res['one'],'p99'):.2f}, two {mean(res['two'],'p99'):.2f} ms")
if "open" in phases:
    print(f"\n## open model, {rate} req/s, {conns} connections in all, {open_d} (p99 from the intended send time)")
    print("| setup | round | achieved req/s | p50 ms | p99 ms | scheduler lag p99 ms | generator CPU s (controller or process + workers) | others' CPU (cores) | notes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for setup in ("one", "two"):
        res["o" + setup] = get("open", setup)
        for r, d in enumerate(res["o" + setup], 1):
            print(f"| {setup} | {r} | {d['rps']:,.1f} | {d['p50']:.2f} | {d['p99']:.2f} | {d['lag99']:.2f} | {d['cpu']:.2f} + {d['wcpu']:.1f} | {d['others']:.2f} | {d['notes'] or '-'} |")
    o, t = res["oone"], res["otwo"]
    print(f"means: achieved one {mean(o,'rps'):,.1f}, two {mean(t,'rps'):,.1f}; p99 one {mean(o,'p99'):.2f}, two {mean(t,'p99'):.2f} ms "
          f"(two / one {mean(t,'p99')/mean(o,'p99'):.2f}); CPU one {mean(o,'cpu'):.1f} s, two {mean(t,'cpu')+mean(t,'wcpu'):.1f} s")
PY
