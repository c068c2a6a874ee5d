# Shared by run.sh and storm.sh (sourced): stopping the processes a bench
# script started, and checking its ports are free. The script sets PIDS (its processes) and TMP (a scratch
# folder), and installs cleanup as its EXIT trap.

# stop_pid PID: TERM, up to 10 s, then KILL. Only processes this script started.
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do [[ -n $pid ]] && stop_pid "$pid"; done
  rm -rf "$TMP"
}

# ports_free HOST PORT...: exit 1 unless every port is free on HOST.
ports_free() {
  local host=$1 p
  shift
  for p in "$@"; do
    if (exec 3<>"/dev/tcp/$host/$p") 2>/dev/null; then
      echo "port $host:$p is already in use; stop whatever holds it" >&2
      exit 1
    fi
  done
}
