#!/usr/bin/env bash
# What the live dashboard costs: `faultline load -r RATE -d DUR` against nginx (a 170-byte
# file on loopback), run in a tmux terminal with --tui and without, ROUNDS times each,
# interleaved; the CPU time (user + sys, /usr/bin/time) of each run. The dashboard's cost
# is the difference, as a share of one core over the run.
#
# Needs: a release build (cargo build --release -p faultline), tmux, nginx-light, time,
# python3, curl. Loopback only; everything stops when the script ends.
# Usage: bench/tui.sh   (env: RATE=10000 DUR=30 ROUNDS=2)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-10000}
DUR=${DUR:-30}
ROUNDS=${ROUNDS:-2}
FAULTLINE=$(realpath "${FAULTLINE:-${CARGO_TARGET_DIR:-target}/release/faultline}")
WORK=$(mktemp -d)
SOCK="faultline-bench-$$"
cleanup() { tmux -L "$SOCK" kill-server 2>/dev/null || true; [ -n "${NGINX:-}" ] && kill "$NGINX" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
. bench/common.sh

PORT=$(free_port)
nginx_conf "$WORK" "$PORT"
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" & NGINX=$!
wait_http "http://127.0.0.1:$PORT/"

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "# $("$FAULTLINE" --version), load -r $RATE -d ${DUR}s, in a 120x40 tmux terminal"
echo "| run | mode | CPU s (user+sys) | CPU share of one core |"
echo "|---|---|---|---|"
one() { # MODE ROUND
  local out="$WORK/$1-$2"
  # The dashboard needs the terminal as stdout; the plain run's output goes to a file.
  local flag="> $out.out 2>&1"; [ "$1" = tui ] && flag="--tui 2> $out.err"
  tmux -L "$SOCK" new-session -d -s b -x 120 -y 40 \
    "/usr/bin/time -f '%U %S' -o $out.time $FAULTLINE load http://127.0.0.1:$PORT/ -r $RATE -d ${DUR}s -c 64 $flag; echo done > $out.done"
  # The dashboard waits for q once the load is over.
  while [ ! -f "$out.done" ]; do
    if [ "$1" = tui ] && [ -n "$(tmux -L "$SOCK" capture-pane -p -t b 2>/dev/null | grep -F 'q shows the summary')" ]; then
      tmux -L "$SOCK" send-keys -t b q
    fi
    sleep 0.5
  done
  tmux -L "$SOCK" kill-server 2>/dev/null || true
  read -r u s < "$out.time"
  local cpu; cpu=$(python3 -c "print(round($u+$s,2))")
  echo "| $2 | $1 | $cpu | $(python3 -c "print(f'{($u+$s)/$DUR*100:.1f}%')") |"
  echo "$cpu" > "$out.cpu"
}
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then one plain "$r"; one tui "$r"; else one tui "$r"; one plain "$r"; fi
done
python3 - "$WORK" "$ROUNDS" "$DUR" <<'PY'
import sys, statistics
w, n, d = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
plain = statistics.mean(float(open(f"{w}/plain-{r}.cpu").read()) for r in range(1, n + 1))
tui = statistics.mean(float(open(f"{w}/tui-{r}.cpu").read()) for r in range(1, n + 1))
print(f"\ndashboard cost: {tui - plain:.2f} CPU s over {d:.0f} s = {(tui - plain) / d * 100:.1f}% of one core (plain {plain:.2f} s, with the dashboard {tui:.2f} s)")
PY
