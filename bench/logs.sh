#!/usr/bin/env bash
# Bounded logs (issue 18): disk use of the broker's, the bank's, notifications' and a store
# member's data directories, and their recovery time, after ORDERS orders' worth of log records, without
# checkpoints (CHECKPOINT_BYTES 0, the log of before) and with them (the default 16 MiB).
#
# The records are written through each service's own state machine, group committer and
# log, in process (target-system/examples/log_soak.rs): per order, the broker's nine
# records (the order published to `orders`, received from `payments`, the outcome
# published to `payment-events`, the payment deleted, the outcome received and deleted
# from `order-events` and `notifications`), one bank charge, one notification, and the
# store's five batches (the idempotency claim; the order, its outbox entry and
# idempotency record; the relay's claim of the entry and its delete; the outcome) on one
# member leading alone. HTTP is
# left out so that a million orders fit in minutes. Recovery is timed twice: in process
# (snapshot + log read back, state rebuilt), and as a real `shop broker`/`shop bank`
# process from its start to its first healthy answer (not notifications).
#
# Usage: bench/logs.sh [ORDERS] [SERVICE...]   (default: 1000000 broker bank notifications store)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
n=${1:-1000000}
shift || true
services=("$@")
[ ${#services[@]} -gt 0 ] || services=(broker bank notifications store)
# PROFILE=debug uses the test build (its dependencies are optimised, the shop's code not).
profile=${PROFILE:-release}
if [ "$profile" = release ] && [ -z "${NO_BUILD:-}" ]; then cargo build --release -p shop --bin shop --example log_soak >&2; fi
soak=target/$profile/examples/log_soak
shop=target/$profile/shop
dir=$(mktemp -d -p "${BENCH_DIR:-/tmp}")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT

# restart SERVICE DATA_DIR: seconds from the process's start to its first /health answer.
restart() {
  local svc=$1 data=$2 port extra=()
  port=$(free_port)
  [ "$svc" = broker ] && extra=(--queue payments:max_receives=10,dlq=payments-dlq --queue payments-dlq
    --queue order-events:max_receives=10,dlq=order-events-dlq --queue order-events-dlq
    --queue notifications:max_receives=10,dlq=notifications-dlq --queue notifications-dlq
    --topic orders=payments --topic payment-events=order-events,notifications)
  # A lone primary (no replica, no witness): it serves once its log is read back.
  [ "$svc" = store ] && extra=(--role primary --shard 1 --replication async)
  local start end
  start=$(date +%s.%N)
  "$shop" "$svc" --listen "127.0.0.1:$port" --data-dir "$data" "${extra[@]}" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 12000); do curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.01; done
  end=$(date +%s.%N)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$end - $start" | bc
}

printf '%-14s %-11s %14s %10s %12s %12s %12s %10s\n' service checkpoint disk_bytes write_s recover_s restart_s checkpoints stall_max
for svc in "${services[@]}"; do
  for bytes in 0 16777216; do
    d="$dir/$svc-$bytes"
    out=$("$soak" write "$svc" "$d" "$n" "$bytes")
    write_s=$(awk '/^write_seconds/ {print $2}' <<<"$out")
    checkpoints=$(awk '/^wal_checkpoints_total/ {print $2}' <<<"$out")
    # The committer's longest checkpoint pause: the first histogram bucket holding them all.
    stall=$(awk '/^wal_checkpoint_stall_seconds_count/ {c=$2}
      /^wal_checkpoint_stall_seconds_bucket/ && !done && c>0 && $2>=c {split($0,a,"le=\""); split(a[2],b,"\""); first=b[1]; done=1}
      END {print (c>0 ? "<=" first "s" : "-")}' <<<"$out")
    disk=$(du -sb "$d" | cut -f1)
    rec=$("$soak" recover "$svc" "$d" "$n" "$bytes" | awk '/^recover_seconds/ {print $2}')
    rs="-"
    [ "$svc" != notifications ] && rs=$(restart "$svc" "$d")
    printf '%-14s %-11s %14s %10s %12s %12s %12s %10s\n' "$svc" "$bytes" "$disk" "$write_s" "$rec" "$rs" "${checkpoints:-0}" "$stall"
    rm -rf "$d"
  done
done
