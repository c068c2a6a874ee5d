#!/usr/bin/env bash
# HTTP/2 against HTTP/1.1 through one wslb TLS listener (see bench/README.md,
# "HTTP/2"): keep-alive requests per CPU second (wrk over HTTPS/1.1, h2load
# over h2, the same number of requests in flight) and memory per idle
# WebSocket (loadgen idle over wss, one conn each, and over h2, many streams
# per conn).
#
#   bench/h2.sh
#   DURATION=10s IDLE=2000 bench/h2.sh
set -euo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
DURATION=${DURATION:-5s}      # each HTTP workload's window
INFLIGHT=${INFLIGHT:-50}      # requests in flight: wrk conns; h2load conns x streams
H2_CONNS=${H2_CONNS:-5}       # h2load's conns (INFLIGHT/H2_CONNS streams each)
IDLE=${IDLE:-2000}            # idle WebSockets held, each way
PARTS=${PARTS:-http idle}     # a subset for quick iteration
HOST=127.0.0.1 PORT=18443 ADMIN=18090 BACKENDS=(19001 19002 19003)

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  echo "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

TMP=$(mktemp -d /tmp/wslb-h2.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

(cd "$ROOT" && go build -o "$TMP/wslb" ./cmd/wslb && go build -o "$TMP/backend" ./bench/backend && go build -o "$TMP/loadgen" ./bench/loadgen)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
cat >"$TMP/wslb.yaml" <<YAML
shutdown: {drain_timeout: 0s, close_spread: 0s}
admin: {listen: "$HOST:$ADMIN"}
listeners:
  - name: https
    listen: $HOST:$PORT
    mode: l7
    pool: web
    tls: {cert: $TMP/cert.pem, key: $TMP/key.pem}
    timeouts: {idle: 1h}
pools:
  - name: web
    backends:
$(for p in "${BACKENDS[@]}"; do echo "      - address: $HOST:$p"; done)
YAML
for p in "${BACKENDS[@]}"; do "$TMP/backend" -http "$HOST:$p" -tcp "$HOST:$((p + 100))" >/dev/null 2>&1 & PIDS+=($!); done
# start_wslb starts a fresh wslb (WSLB is its PID) and waits until it answers;
# stop_wslb stops it. Each idle measurement gets a fresh one: memory an
# earlier workload freed is not always back with the kernel yet.
start_wslb() {
  "$TMP/wslb" -config "$TMP/wslb.yaml" -access-log off >>"$TMP/wslb.log" 2>&1 & WSLB=$!; PIDS+=($WSLB)
  for _ in $(seq 50); do curl -sk "https://$HOST:$PORT/" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "wslb did not start: $(tail -3 "$TMP/wslb.log")" >&2; exit 1
}
stop_wslb() { kill "$WSLB"; wait "$WSLB" 2>/dev/null || true; }

cpu() { awk '{print $14 + $15}' "/proc/$WSLB/stat"; }   # clock ticks (USER_HZ, 100/s)
TICKS=$(getconf CLK_TCK)

http_row() { # name requests cpu_ticks
  awk -v n="$1" -v r="$2" -v c="$3" -v hz="$TICKS" -v d="$DURATION" \
    'BEGIN { printf "| %s | %d | %.0f | %.1f |\n", n, r, r / (c / hz), (c / hz) * 1e6 / r }'
}

if [[ " $PARTS " == *" http "* ]]; then
start_wslb
echo "## keep-alive requests, $INFLIGHT in flight, $DURATION each"
echo "| client | requests | requests per wslb CPU second | wslb CPU µs per request |"
echo "| --- | --: | --: | --: |"
c0=$(cpu); out=$(wrk -t2 -c"$INFLIGHT" -d"$DURATION" "https://$HOST:$PORT/"); c1=$(cpu)
http_row "HTTP/1.1 (wrk, $INFLIGHT conns)" "$(awk '/requests in/ {print $1}' <<<"$out")" $((c1 - c0))
c0=$(cpu); out=$(h2load -c"$H2_CONNS" -m$((INFLIGHT / H2_CONNS)) -D"${DURATION%s}" "https://$HOST:$PORT/" 2>&1); c1=$(cpu)
http_row "HTTP/2 (h2load, $H2_CONNS conns x $((INFLIGHT / H2_CONNS)) streams)" "$(awk '/^requests:/ {print $8}' <<<"$out")" $((c1 - c0))
stop_wslb
fi

[[ " $PARTS " == *" idle "* ]] || exit 0
echo
echo "## idle WebSockets through the TLS listener: $IDLE held, wslb's RSS and descriptors per WebSocket"
echo "| carried over | RSS KB per WebSocket | descriptors per WebSocket |"
echo "| --- | --: | --: |"
for mode in wss h2; do
  start_wslb
  "$TMP/loadgen" idle -mode "$mode" -addr "$HOST:$PORT" -n "$IDLE" -d 3s -target wslb -proxy-pid "$WSLB" \
    >"$TMP/idle-$mode.json" 2>"$TMP/idle-$mode.log" || { cat "$TMP/idle-$mode.log" >&2; exit 1; }
  python3 - "$TMP/idle-$mode.json" "$mode" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).readline())
what = {"wss": "HTTP/1.1 (a TLS conn each)", "h2": "HTTP/2 (streams sharing conns)"}[sys.argv[2]]
if r.get("sample_ok") != r.get("sample_tried"):
    sys.exit("%s: %s of %s sampled WebSockets echoed: %s" % (what, r.get("sample_ok"), r.get("sample_tried"), r.get("note", "")))
print("| %s | %.1f | %.2f |" % (what, r["rss_kb_per_conn"], r["fds_per_conn"]))
PY
  stop_wslb
done
