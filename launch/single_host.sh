#!/usr/bin/env bash
# One host, one process, all local GPUs, bfloat16 compute.
#
#   launch/single_host.sh CONFIG WORKDIR [--config.x=y ...]
#
# Environment (see launch/README.md): PYTHON, DTYPE_FLAGS,
# XLA_PYTHON_CLIENT_MEM_FRACTION, CUDA_VISIBLE_DEVICES, EXTRA_XLA_FLAGS.
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
# bf16 compute for the LLM; set DTYPE_FLAGS="" for configs without an llm section.
DTYPE_FLAGS=${DTYPE_FLAGS---config.llm.dtype=bfloat16}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true ${EXTRA_XLA_FLAGS:-}"
# One process: make sure no stale multi-process variables leak in.
unset SBRJAX_COORDINATOR_ADDRESS SBRJAX_NUM_PROCESSES SBRJAX_PROCESS_ID

# shellcheck disable=SC2086  # DTYPE_FLAGS is a list of flags
exec "$PYTHON" -m sbrjax.main --config="$CONFIG" --workdir="$WORKDIR" \
  $DTYPE_FLAGS "$@"
