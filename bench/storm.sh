#!/usr/bin/env bash
# Reconnect storm: STORM_CLIENTS WebSocket clients connect at once through a
# wslb l7 listener to 3 backends, once for each max_accept_rate in RATES
# (0 = unlimited), each against a freshly started wslb. See bench/README.md,
# "Reconnect storm".
#
#   bench/storm.sh                          9,000 clients, unpaced then 1000/s
#   RATES="0 500 2000" STORM_CLIENTS=5000 bench/storm.sh
#
# Results: bench/results/storm-<UTC timestamp>/ (table.md, results.jsonl,
# logs); the table is printed at the end.
set -euo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)

STORM_CLIENTS=${STORM_CLIENTS:-9000}  # a proxy needs 2 fds a client; hard limit 20000
RATES=${RATES:-0 1000}                # max_accept_rate of each run
TIMEOUT=${TIMEOUT:-60s}               # a client's dial and handshake, SYN retries included

HOST=127.0.0.1
HTTP_PORTS=(19101 19102 19103)        # backends (ports of their own: run.sh may run too)
L7_PORT=18180
ADMIN_PORT=18190

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$BENCH/results/storm-$STAMP
mkdir -p "$OUT/logs"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
exec > >(tee -a "$OUT/run.log") 2>&1
say() { printf '\n== %s %s\n' "$(date -u +%H:%M:%S)" "$*"; }

TMP=$(mktemp -d /tmp/wslb-storm.XXXXXX)
PIDS=()
# shellcheck source=procs.sh
source "$BENCH/procs.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

ulimit -n "$(ulimit -Hn)"
ports_free "$HOST" "${HTTP_PORTS[@]}" "$L7_PORT" "$ADMIN_PORT"

say "building"
cd "$ROOT"
go build -o "$TMP/loadgen" ./bench/loadgen
go build -o "$TMP/backend" ./bench/backend
go build -o "$TMP/wslb" ./cmd/wslb
LG=$TMP/loadgen
{
  echo "run: \`STORM_CLIENTS=$STORM_CLIENTS RATES=\"$RATES\" bench/storm.sh\` at $STAMP (UTC)"
  echo "machine: $(nproc) cores, Linux $(uname -r), fd hard limit $(ulimit -Hn), $(sysctl -n net.core.somaxconn 2>/dev/null | sed 's/^/somaxconn /'), $(sysctl -n net.ipv4.tcp_max_syn_backlog 2>/dev/null | sed 's/^/tcp_max_syn_backlog /'), $(sysctl -n net.ipv4.tcp_syncookies 2>/dev/null | sed 's/^/tcp_syncookies /')"
  echo "wslb: $("$TMP/wslb" version 2>&1 | head -1) at $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- . 2>/dev/null || echo '+uncommitted changes'), workers 0 (GOMAXPROCS)"
} >"$OUT/meta.txt"
cat "$OUT/meta.txt"

say "starting 3 backends"
BACKENDS=""
for i in 0 1 2; do
  "$TMP/backend" -http "$HOST:${HTTP_PORTS[i]}" -tcp "" >>"$OUT/logs/backend-$((i + 1)).log" 2>&1 &
  PIDS+=($!)
  BACKENDS+="${BACKENDS:+,}$HOST:${HTTP_PORTS[i]}"
done
"$LG" probe -l7 "$BACKENDS" -l4 "" -timeout 20s

for rate in $RATES; do
  say "storm of $STORM_CLIENTS clients, max_accept_rate $rate (fresh wslb)"
  cat >"$OUT/wslb-$rate.yaml" <<YAML
# wslb for bench/storm.sh
shutdown: {drain_timeout: 0s, close_spread: 0s}
admin: {listen: $HOST:$ADMIN_PORT}
listeners:
  - {name: l7, listen: $HOST:$L7_PORT, mode: l7, pool: web, max_accept_rate: $rate}
pools:
  - name: web
    backends:
      - address: $HOST:${HTTP_PORTS[0]}
      - address: $HOST:${HTTP_PORTS[1]}
      - address: $HOST:${HTTP_PORTS[2]}
YAML
  "$TMP/wslb" -check -config "$OUT/wslb-$rate.yaml"
  "$TMP/wslb" -config "$OUT/wslb-$rate.yaml" -access-log off >>"$OUT/logs/wslb-$rate.log" 2>&1 &
  WSLB=$!
  PIDS+=("$WSLB")
  "$LG" probe -l7 "$HOST:$L7_PORT" -l4 "" -timeout 20s
  sleep 2 # the probe's conns and the first health checks out of the backends' windows
  timeout -k 5 400 "$LG" storm -target wslb -addr "$HOST:$L7_PORT" -n "$STORM_CLIENTS" -timeout "$TIMEOUT" \
    -backends "$BACKENDS" -rate-label "$rate" 2>>"$OUT/logs/loadgen.log" | tee -a "$RESULTS"
  tail -1 "$OUT/logs/loadgen.log"
  curl -s "http://$HOST:$ADMIN_PORT/metrics" 2>/dev/null | grep -E '^wslb_(connections_accepted_total|errors_total\{.*(limit|timeout)")' || true
  stop_pid "$WSLB"
  PIDS=("${PIDS[@]/$WSLB/}")
  sleep 2
done

"$LG" stormtable -in "$RESULTS" >"$OUT/table.md"
echo
cat "$OUT/meta.txt" "$OUT/table.md"
