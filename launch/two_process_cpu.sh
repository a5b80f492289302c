#!/usr/bin/env bash
# Two local CPU processes joined by jax.distributed over 127.0.0.1, each with
# DEVICES_PER_PROCESS simulated devices: a laptop rehearsal of a multi-host run.
# EXTRA_XLA_FLAGS are appended to the device-count flag.
#
#   launch/two_process_cpu.sh CONFIG WORKDIR [--config.x=y ...]
#
# Both processes write logs to WORKDIR/process_{0,1}.log; the script exits
# non-zero if either fails and kills the other.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
CONFIG=$1
WORKDIR=$2
shift 2
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-2}
PORT=${PORT:-$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
mkdir -p "$WORKDIR"

export JAX_PLATFORMS=cpu
export XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS ${EXTRA_XLA_FLAGS:-}"
export SBRJAX_COORDINATOR_ADDRESS="127.0.0.1:$PORT"
export SBRJAX_NUM_PROCESSES=2

pids=()
for i in 0 1; do
  SBRJAX_PROCESS_ID=$i "$PYTHON" -m sbrjax.main --config="$CONFIG" \
    --workdir="$WORKDIR" "$@" >"$WORKDIR/process_$i.log" 2>&1 &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT INT TERM

status=0
# Wait for whichever finishes first; a failure stops the other one.
for _ in 0 1; do
  if ! wait -n; then
    status=1
    echo "a process failed; see $WORKDIR/process_*.log" >&2
    kill "${pids[@]}" 2>/dev/null || true
    break
  fi
done
wait || true
exit $status
