#!/usr/bin/env bash
# Side-by-side benchmark: the same workloads straight to the backends
# ("direct") and through nginx, HAProxy and wslb, one after another, all on
# loopback. See bench/README.md.
#
#   bench/run.sh                    all four targets
#   bench/run.sh wslb haproxy       a subset (or TARGETS="wslb haproxy")
#   DURATION=10s IDLE_CONNS=9500 ROUNDS=1 bench/run.sh
#   PHASES=storm bench/run.sh       only some phases (throughput idle-l7 idle-l4 storm)
#
# Results: bench/results/<UTC timestamp>/ (table.md, results.jsonl, configs,
# logs); bench/results/latest points at the newest.
set -euo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)

# ---- knobs ---------------------------------------------------------------
DURATION=${DURATION:-5s}              # each workload's measured window
[[ $DURATION =~ ^[0-9]+$ ]] && DURATION=${DURATION}s
IDLE_CONNS=${IDLE_CONNS:-9000}        # idle conns held (a proxy needs 2 fds each; hard limit 20000)
HTTP_CONNS=${HTTP_CONNS:-50}          # keep-alive conns for the HTTP workload
WS_CONNS=${WS_CONNS:-50}              # WebSocket conns for the echo workloads
HS_WORKERS=${HS_WORKERS:-50}          # concurrent handshake workers
PACED_RATE=${PACED_RATE:-20000}       # msgs/s in total for the paced echo
SETTLE=${SETTLE:-3s}                  # wait after the idle conns are open, before measuring
HTTP_ENGINE=${HTTP_ENGINE:-auto}      # wrk when installed, else the Go client (or: go, wrk)
PHASES=${PHASES:-throughput idle-l7 idle-l4 storm}   # a subset for quick iteration
ROUNDS=${ROUNDS:-3}                   # throughput rounds, targets in turn; the table shows medians
STORM_CLIENTS=${STORM_CLIENTS:-9000}  # reconnect storm: clients at once (a proxy needs 2 fds each)
STORM_TIMEOUT=${STORM_TIMEOUT:-60s}   # a storm client's dial, handshake and echo, SYN retries included

# ---- every address, in one place ----------------------------------------
HOST=127.0.0.1
HTTP_PORTS=(19001 19002 19003)        # backends: HTTP GET / and WebSocket echo on /ws
TCP_PORTS=(19011 19012 19013)         # backends: raw TCP echo / sink
L7_PORT=18080                         # the proxy under test: l7 (HTTP, WebSocket)
L4_PORT=18081                         # the proxy under test: l4 (raw TCP)
ADMIN_PORT=18090                      # wslb's admin listener

ALL_TARGETS=(direct nginx haproxy wslb)
if (($#)); then targets=("$@"); else read -r -a targets <<<"${TARGETS:-${ALL_TARGETS[*]}}"; fi
for t in "${targets[@]}"; do
  case $t in direct|nginx|haproxy|wslb) ;; *) echo "unknown target $t (want: ${ALL_TARGETS[*]})" >&2; exit 2 ;; esac
done
wants() { local t; for t in "${targets[@]}"; do [[ $t == "$1" ]] && return 0; done; return 1; }

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$BENCH/results/$STAMP
mkdir -p "$OUT/conf" "$OUT/logs"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
exec > >(tee -a "$OUT/run.log") 2>&1
T_START=$(date +%s)
say() { printf '\n== %s %s\n' "$(date -u +%H:%M:%S)" "$*"; }

TMP=$(mktemp -d /tmp/wslb-bench.XXXXXX)
PIDS=()
PROXY_PID=0

# shellcheck source=procs.sh
source "$BENCH/procs.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- tools -----------------------------------------------------------------
need=()
if wants nginx; then
  command -v nginx >/dev/null || need+=(nginx)
  # Debian builds the stream module as a dynamic module in its own package.
  [[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || need+=(libnginx-mod-stream)
fi
if wants haproxy; then command -v haproxy >/dev/null || need+=(haproxy); fi
if [[ $HTTP_ENGINE != go ]]; then command -v wrk >/dev/null || need+=(wrk); fi
command -v perf >/dev/null || need+=(linux-perf)
if ((${#need[@]})); then
  say "installing ${need[*]}"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; }; then
    echo "apt-get install failed; targets whose tool is missing are skipped" >&2
  fi
fi
# nginx and haproxy are started by hand below; the distro services must not
# run (nor hold port 80) during the benchmark.
if command -v service >/dev/null; then
  service nginx stop >/dev/null 2>&1 || true
  service haproxy stop >/dev/null 2>&1 || true
fi
runnable=()
for t in "${targets[@]}"; do
  case $t in
    nginx|haproxy) if ! command -v "$t" >/dev/null; then echo "skipping $t: not installed" >&2; continue; fi ;;
  esac
  runnable+=("$t")
done
targets=("${runnable[@]}")

# perf counts the proxy's syscalls and context switches (loadgen -perf). The
# syscall tracepoint needs tracefs and root or a low perf_event_paranoid;
# when it still cannot count, the table says why in those rows.
PERF_FLAGS=(-perf perf)
PARANOID_WAS=""
perf_try() { perf stat -e raw_syscalls:sys_enter,context-switches true 2>&1 || true; } # output only
perf_counts() { grep -Eq '^ *[0-9,]+ +raw_syscalls:sys_enter' <<<"$(perf_try)"; }
if ! command -v perf >/dev/null; then
  PERF_FLAGS=(-perf "" -perf-na "perf is not installed and apt-get install linux-perf failed")
elif ! perf_counts; then
  if [[ -w /proc/sys/kernel/perf_event_paranoid ]]; then
    PARANOID_WAS=$(cat /proc/sys/kernel/perf_event_paranoid)
    echo -1 >/proc/sys/kernel/perf_event_paranoid # put back on exit
  fi
  if ! perf_counts; then
    # perf's "Error: ..." line says why best; else the first complaint.
    why=$(perf_try | grep -iE '^ *error' | head -1)
    [[ -n $why ]] || why=$(perf_try | grep -iE 'not supported|permission|denied|no such|invalid|syntax' | head -1)
    why=$(tr -d '|' <<<"$why" | sed 's/^ *//')
    PERF_FLAGS=(-perf "" -perf-na "${why:-perf stat -e raw_syscalls:sys_enter counted nothing}")
    echo "perf cannot count here: ${PERF_FLAGS[3]}; the syscall rows will say n/a" >&2
  fi
fi
restore_paranoid() { [[ -z $PARANOID_WAS ]] || echo "$PARANOID_WAS" >/proc/sys/kernel/perf_event_paranoid; }
trap 'cleanup; restore_paranoid' EXIT

# Every process started from here on inherits the hard fd limit.
ulimit -n "$(ulimit -Hn)"

ports_free "$HOST" "${HTTP_PORTS[@]}" "${TCP_PORTS[@]}" "$L7_PORT" "$L4_PORT" "$ADMIN_PORT"

# ---- build -----------------------------------------------------------------
say "building"
cd "$ROOT"
go build -o "$TMP/loadgen" ./bench/loadgen
go build -o "$TMP/backend" ./bench/backend
LG=$TMP/loadgen
if wants wslb; then
  # Others may be mid-edit in the tree: a broken build is retried a few times.
  for i in 1 2 3 4 5; do
    if go build -o "$TMP/wslb" ./cmd/wslb; then break; fi
    if ((i == 5)); then echo "go build ./cmd/wslb failed 5 times" >&2; exit 1; fi
    echo "go build ./cmd/wslb failed; retrying in 30s" >&2
    sleep 30
  done
fi

# ---- configs ---------------------------------------------------------------
LOAD_STREAM=""
if command -v nginx >/dev/null && nginx -V 2>&1 | grep -q -- '--with-stream=dynamic'; then
  LOAD_STREAM="load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
fi
render() {
  sed -e "s|@L7@|$HOST:$L7_PORT|g" -e "s|@L4@|$HOST:$L4_PORT|g" -e "s|@ADMIN@|$HOST:$ADMIN_PORT|g" \
      -e "s|@H1@|$HOST:${HTTP_PORTS[0]}|g" -e "s|@H2@|$HOST:${HTTP_PORTS[1]}|g" -e "s|@H3@|$HOST:${HTTP_PORTS[2]}|g" \
      -e "s|@T1@|$HOST:${TCP_PORTS[0]}|g" -e "s|@T2@|$HOST:${TCP_PORTS[1]}|g" -e "s|@T3@|$HOST:${TCP_PORTS[2]}|g" \
      -e "s|@LOAD_STREAM@|$LOAD_STREAM|g" "$BENCH/$1" >"$OUT/conf/$1"
}
render nginx.conf
render haproxy.cfg
render wslb.yaml
NGINX_PREFIX=$OUT/nginx-prefix
mkdir -p "$NGINX_PREFIX/tmp"

# ---- run info --------------------------------------------------------------
{
  echo "run: \`bench/run.sh ${targets[*]}\` at $STAMP (UTC); ROUNDS=$ROUNDS DURATION=$DURATION IDLE_CONNS=$IDLE_CONNS HTTP_CONNS=$HTTP_CONNS WS_CONNS=$WS_CONNS HS_WORKERS=$HS_WORKERS PACED_RATE=$PACED_RATE STORM_CLIENTS=$STORM_CLIENTS PHASES=\"$PHASES\""
  echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB, Linux $(uname -r), fd hard limit $(ulimit -Hn)"
  echo "versions: $(go version | cut -d' ' -f3)$(wants wslb && echo ", $("$TMP/wslb" version 2>&1 | head -1) at $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- . ':!bench' 2>/dev/null || echo '+uncommitted changes')")$(command -v nginx >/dev/null && wants nginx && echo ", $(nginx -v 2>&1 | sed 's/.*: //')")$(command -v haproxy >/dev/null && wants haproxy && echo ", HAProxy $(haproxy -v | head -1 | awk '{print $3}')")$(command -v wrk >/dev/null && echo ", $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')")"
} >"$OUT/meta.txt"
cat "$OUT/meta.txt"

# ---- backends --------------------------------------------------------------
say "starting 3 backends"
for i in 0 1 2; do
  "$TMP/backend" -http "$HOST:${HTTP_PORTS[i]}" -tcp "$HOST:${TCP_PORTS[i]}" >>"$OUT/logs/backend-$((i + 1)).log" 2>&1 &
  PIDS+=($!)
done
DIRECT_L7=$HOST:${HTTP_PORTS[0]},$HOST:${HTTP_PORTS[1]},$HOST:${HTTP_PORTS[2]}
DIRECT_L4=$HOST:${TCP_PORTS[0]},$HOST:${TCP_PORTS[1]},$HOST:${TCP_PORTS[2]}
"$LG" probe -l7 "$DIRECT_L7" -l4 "$DIRECT_L4" -timeout 20s

# ---- proxies -----------------------------------------------------------------
# start_proxy TARGET: start it fresh, wait until both listeners answer; sets PROXY_PID.
start_proxy() {
  local t=$1 log=$OUT/logs/$1.log
  echo "--- start $(date -u +%H:%M:%S)" >>"$log"
  case $t in
    direct) PROXY_PID=0; return 0 ;;
    nginx)
      nginx -t -q -p "$NGINX_PREFIX/" -c "$OUT/conf/nginx.conf" -e stderr >>"$log" 2>&1
      nginx -p "$NGINX_PREFIX/" -c "$OUT/conf/nginx.conf" -e stderr >>"$log" 2>&1 &
      ;;
    haproxy)
      haproxy -c -q -f "$OUT/conf/haproxy.cfg" >>"$log" 2>&1
      haproxy -db -f "$OUT/conf/haproxy.cfg" >>"$log" 2>&1 &
      ;;
    wslb)
      "$TMP/wslb" -check -config "$OUT/conf/wslb.yaml" >>"$log" 2>&1
      "$TMP/wslb" -config "$OUT/conf/wslb.yaml" -access-log off >>"$log" 2>&1 &
      ;;
  esac
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  if ! "$LG" probe -l7 "$HOST:$L7_PORT" -l4 "$HOST:$L4_PORT" -timeout 20s; then
    echo "$t did not come up; see $log" >&2
    stop_proxy
    return 1
  fi
  sleep 1 # let start-up work (health checks, worker spawn) finish before a baseline
}
stop_proxy() {
  if ((PROXY_PID > 0)); then
    stop_pid "$PROXY_PID"
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$PROXY_PID" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
  fi
  PROXY_PID=0
}

# load TARGET SUBCOMMAND ARGS...: one workload, its JSON line into results.jsonl.
ROUND=0
load() {
  local t=$1 sub=$2
  shift 2
  printf '  %-10s %-9s %s\n' "$t" "$sub" "$*"
  if ! timeout -k 5 900 "$LG" "$sub" -target "$t" -round "$ROUND" -proxy-pid "$PROXY_PID" "${PERF_FLAGS[@]}" "$@" \
       2>>"$OUT/logs/loadgen-$t.log" | tee -a "$RESULTS" | sed 's/^/    /'; then
    echo "    FAILED: $t $sub (see logs/loadgen-$t.log)"
  fi
  sleep 1
}

# addresses ADDRS for target $1: l7, l4 and the one HTTP address wrk loads.
addrs() {
  if [[ $1 == direct ]]; then
    L7=$DIRECT_L7 L4=$DIRECT_L4 HTTP_ADDR=$HOST:${HTTP_PORTS[0]} # wrk loads one address
  else
    L7=$HOST:$L7_PORT L4=$HOST:$L4_PORT HTTP_ADDR=$HOST:$L7_PORT
  fi
}

throughput() {
  local t=$1
  addrs "$t"
  say "$t: throughput, round $ROUND of $ROUNDS"
  start_proxy "$t" || return 0
  load "$t" http -addr "$HTTP_ADDR" -d "$DURATION" -c "$HTTP_CONNS" -engine "$HTTP_ENGINE"
  load "$t" handshake -addr "$L7" -d "$DURATION" -c "$HS_WORKERS"
  load "$t" wsecho -addr "$L7" -d "$DURATION" -c "$WS_CONNS"
  load "$t" wsecho -addr "$L7" -d "$DURATION" -c "$WS_CONNS" -rate "$PACED_RATE"
  load "$t" bulk -addr "$L4" -d "$DURATION" -streams 1
  load "$t" bulk -addr "$L4" -d "$DURATION" -streams 8
  stop_proxy
}

# Each idle run starts from a freshly started proxy: its "before" is the same
# baseline for every proxy.
idle() {
  local t=$1
  addrs "$t"
  if [[ " $PHASES " == *" idle-l7 "* ]]; then
    say "$t: $IDLE_CONNS idle WebSockets via l7 (fresh proxy)"
    if start_proxy "$t"; then
      load "$t" idle -mode ws -addr "$L7" -n "$IDLE_CONNS" -d "$SETTLE"
      stop_proxy
    fi
  fi
  if [[ " $PHASES " == *" idle-l4 "* ]]; then
    say "$t: $IDLE_CONNS idle raw TCP conns via l4 (fresh proxy)"
    if start_proxy "$t"; then
      load "$t" idle -mode tcp -addr "$L4" -n "$IDLE_CONNS" -d "$SETTLE"
      stop_proxy
    fi
  fi
}

# The reconnect storm: STORM_CLIENTS WebSockets dial at once through a fresh
# proxy (direct: straight to the backends), each does its handshake and one
# echo and stays open until all have. Same backends, same l7 config as the
# handshake workload; wslb without max_accept_rate (bench/storm.sh paces).
storm() {
  local t=$1
  addrs "$t"
  say "$t: reconnect storm of $STORM_CLIENTS WebSocket clients (fresh proxy)"
  start_proxy "$t" || return 0
  sleep 2 # the probe's conns and the first health checks out of the backends' accept windows
  load "$t" storm -addr "$L7" -n "$STORM_CLIENTS" -timeout "$STORM_TIMEOUT" -backends "$DIRECT_L7"
  stop_proxy
}

# Rounds take the targets in turn, so a slow spell of a shared machine
# lands on every target's figures instead of one target's.
if [[ " $PHASES " == *" throughput "* ]]; then
  for ROUND in $(seq "$ROUNDS"); do
    for t in "${targets[@]}"; do throughput "$t"; done
  done
fi
ROUND=0
for t in "${targets[@]}"; do idle "$t"; done
if [[ " $PHASES " == *" storm "* ]]; then
  for t in "${targets[@]}"; do storm "$t"; done
fi

# ---- report ------------------------------------------------------------------
T_END=$(date +%s)
echo "took: $((T_END - T_START)) s" >>"$OUT/meta.txt"
(IFS=,; "$LG" report -in "$RESULTS" -targets "${targets[*]}" -meta "$OUT/meta.txt") >"$OUT/table.md"
ln -sfn "$STAMP" "$BENCH/results/latest"
say "done in $((T_END - T_START)) s: $OUT/table.md"
echo
cat "$OUT/table.md"
