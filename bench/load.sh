#!/usr/bin/env bash
# `faultline load` against oha (the peer load generator, also Rust and tokio) and wrk, in
# the same run, against one nginx serving a 170-byte file on loopback:
#   a. closed model, CONNS connections for CLOSED: wrk, oha and faultline, req/s and p99;
#   b. open model, RATE req/s for OPEN: oha (-q, --latency-correction) and faultline (-r),
#      achieved rate, p99 from the intended send time, peak RSS and CPU time;
#   c. the same open model for LONG: peak RSS (does memory grow with the run's length?).
# Every measurement runs ROUNDS times, the tools interleaved (order reversed every other
# round). Progress goes to stderr, results to stdout.
#
# Needs: a release build (cargo build --release -p faultline; set FAULTLINE=path or
# CARGO_TARGET_DIR if it is not in target/), oha (cargo install oha --locked), and wrk,
# nginx-light and time from Debian (apt-get install wrk nginx-light time); python3, curl.
# Everything listens on 127.0.0.1 on a port picked at run time and stops when the script ends.
#
# Usage: bench/load.sh   (env: CONNS=64 RATE=10000 CLOSED=10s OPEN=20s LONG=60s ROUNDS=2
#                        PHASES="closed open long" to run only some of a, b, c)
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-64}
RATE=${RATE:-10000}
CLOSED=${CLOSED:-10s}
OPEN=${OPEN:-20s}
LONG=${LONG:-60s}
ROUNDS=${ROUNDS:-2}
PHASES=${PHASES:-closed open long}
FAULTLINE=${FAULTLINE:-${CARGO_TARGET_DIR:-target}/release/faultline}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

log() { echo "[load.sh $(date +%T)] $*" >&2; }
need() { command -v "$1" > /dev/null || { echo "load.sh: $1 not found (install: $2)" >&2; exit 1; }; }
need wrk "apt-get install wrk"
need nginx "apt-get install nginx-light"
need oha "cargo install oha --locked"
need python3 "apt-get install python3"
need curl "apt-get install curl"
[ -x /usr/bin/time ] || { echo "load.sh: /usr/bin/time not found (install: apt-get install time)" >&2; exit 1; }
[ -x "$FAULTLINE" ] || { echo "load.sh: no faultline binary at $FAULTLINE (cargo build --release -p faultline, or set FAULTLINE)" >&2; exit 1; }

. bench/common.sh

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "# tools: $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(oha --version), $(nginx -v 2>&1 | cut -d' ' -f3), $("$FAULTLINE" --version)"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- nginx serving a 170-byte file ---------------------------------------------------
PORT=$(free_port)
URL="http://127.0.0.1:$PORT/"
nginx_conf "$WORK" "$PORT"
log "starting nginx on 127.0.0.1:$PORT"
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" & PIDS+=($!)
wait_http "$URL"
[ "$(curl -sf "$URL" | wc -c)" = 170 ] || { echo "nginx does not serve the 170-byte body" >&2; exit 1; }

# run NAME CMD...: CMD's stdout to $WORK/NAME.out, stderr to NAME.err, /usr/bin/time -v
# to NAME.time. A failed run stops the script and shows why.
run() {
  local name=$1; shift
  log "$name: $*"
  if ! /usr/bin/time -v -o "$WORK/$name.time" "$@" > "$WORK/$name.out" 2> "$WORK/$name.err"; then
    echo "load.sh: $name failed:" >&2; cat "$WORK/$name.err" "$WORK/$name.out" >&2; exit 1
  fi
  sleep 1
}
closed() { # tool round
  case $1 in
    wrk) run "closed.wrk.$2" wrk -t2 -c"$CONNS" -d"$CLOSED" --latency "$URL" ;;
    oha) run "closed.oha.$2" oha -z "$CLOSED" -c "$CONNS" --no-tui --output-format json "$URL" ;;
    faultline) run "closed.faultline.$2" "$FAULTLINE" load "$URL" -c "$CONNS" -d "$CLOSED" --json ;;
  esac
}
open_model() { # phase duration tool round
  case $3 in
    oha) run "$1.oha.$4" oha -q "$RATE" -z "$2" -c "$CONNS" --latency-correction --no-tui --output-format json "$URL" ;;
    faultline) run "$1.faultline.$4" "$FAULTLINE" load "$URL" -r "$RATE" -c "$CONNS" -d "$2" --json ;;
  esac
}
order() { if (( $1 % 2 )); then echo "$2"; else echo "$2" | tr ' ' '\n' | tac | xargs; fi; }

phase() { [[ " $PHASES " == *" $1 "* ]]; }
if phase closed; then
  log "a. closed model, $CONNS connections, $CLOSED, $ROUNDS rounds"
  for r in $(seq 1 "$ROUNDS"); do for t in $(order "$r" "wrk oha faultline"); do closed "$t" "$r"; done; done
fi
if phase open; then
  log "b. open model, $RATE req/s, $OPEN, $ROUNDS rounds"
  for r in $(seq 1 "$ROUNDS"); do for t in $(order "$r" "oha faultline"); do open_model open "$OPEN" "$t" "$r"; done; done
fi
if phase long; then
  log "c. open model, $RATE req/s, $LONG, $ROUNDS rounds"
  for r in $(seq 1 "$ROUNDS"); do for t in $(order "$r" "oha faultline"); do open_model long "$LONG" "$t" "$r"; done; done
fi
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$WORK" "$ROUNDS" "$CONNS" "$RATE" "$CLOSED" "$OPEN" "$LONG" "$PHASES" <<'PY'
import json, re, statistics, sys
work, rounds, conns, rate, closed_d, open_d, long_d, phases = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
phases = phases.split()
def text(name): return open(f"{work}/{name}").read()
def timing(name):
    t = text(f"{name}.time")
    num = lambda k: float(re.search(rf"{k}: ([\d.]+)", t).group(1))
    return num("Maximum resident set size \\(kbytes\\)") / 1024, num("User time \\(seconds\\)") + num("System time \\(seconds\\)")
def ms(v, unit): return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
def parse(name):
    """rate (the tool's own figure), ok_rate (2xx answers a second), p99 ms, problems."""
    tool = name.split(".")[1]
    out = text(f"{name}.out")
    if tool == "wrk":
        r = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        p99 = ms(*re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups())
        bad = [l.strip() for l in out.splitlines() if "Non-2xx" in l or "Socket errors" in l]
        return r, None if bad else r, p99, "; ".join(bad)
    j = json.loads(out)
    if tool == "oha":
        s = j["summary"]
        ok = sum(v for k, v in j["statusCodeDistribution"].items() if k.startswith("2"))
        errs = {k: v for k, v in j["errorDistribution"].items() if k != "aborted due to deadline"}
        aborted = j["errorDistribution"].get("aborted due to deadline", 0)
        p99 = j["latencyPercentiles"]["p99"] * 1000
        notes = ([f"{aborted} in flight at the deadline"] if aborted else []) + [f"{k}: {v}" for k, v in errs.items()]
        return s["requestsPerSec"], ok / s["total"], p99, "; ".join(notes)
    ok = sum(v for k, v in j["statuses"].items() if k.startswith("2"))
    notes = ([f"dropped {j['dropped']}"] if j["dropped"] else []) + [f"{k}: {v}" for k, v in j["errors"].items()]
    return j["requests_per_s"], ok / j["duration_s"], j["latency_ms"]["p99"], "; ".join(notes)

res = {}
def table(phase, tools, title, resources):
    print(f"\n## {title}")
    head = "| tool | run | req/s (tool's figure) | 2xx/s | p99 ms |" + (" peak RSS MiB | CPU s |" if resources else "") + " notes |"
    print(head); print("|" + "---|" * (head.count("|") - 1))
    for tool in tools:
        for r in range(1, rounds + 1):
            name = f"{phase}.{tool}.{r}"
            rps, ok, p99, notes = parse(name); rss, cpu = timing(name)
            res.setdefault((phase, tool), []).append(dict(rps=rps, ok=ok, p99=p99, rss=rss, cpu=cpu))
            row = f"| {tool} | {r} | {rps:,.0f} | {'-' if ok is None else f'{ok:,.0f}'} | {p99:.2f} |"
            if resources: row += f" {rss:.1f} | {cpu:.1f} |"
            print(row + f" {notes or '-'} |")
def mean(phase, tool, k): return statistics.mean(x[k] for x in res[(phase, tool)])

if "closed" in phases: table("closed", ["wrk", "oha", "faultline"], f"a. closed model, {conns} connections, {closed_d}", False)
if "open" in phases: table("open", ["oha", "faultline"], f"b. open model, {rate} req/s, {open_d} (p99 from the intended send time)", True)
if "long" in phases: table("long", ["oha", "faultline"], f"c. open model, {rate} req/s, {long_d}", True)
print("\n## ratios (means over the runs)")
if "closed" in phases: print(f"closed req/s: faultline/oha {mean('closed','faultline','rps')/mean('closed','oha','rps'):.2f}, faultline/wrk {mean('closed','faultline','rps')/mean('closed','wrk','rps'):.2f}, oha/wrk {mean('closed','oha','rps')/mean('closed','wrk','rps'):.2f}")
for ph, d in (("open", open_d), ("long", long_d)):
    if ph not in phases: continue
    print(f"open {d}: achieved rate faultline {mean(ph,'faultline','rps'):,.0f}, oha {mean(ph,'oha','rps'):,.0f}; "
          f"p99 faultline/oha {mean(ph,'faultline','p99')/mean(ph,'oha','p99'):.2f}; "
          f"peak RSS faultline/oha {mean(ph,'faultline','rss')/mean(ph,'oha','rss'):.2f}; CPU s faultline/oha {mean(ph,'faultline','cpu')/mean(ph,'oha','cpu'):.2f}")
for t in ("oha", "faultline"):
    if "open" in phases and "long" in phases: print(f"peak RSS {t}: {mean('open',t,'rss'):.1f} MiB at {open_d}, {mean('long',t,'rss'):.1f} MiB at {long_d}")
PY
