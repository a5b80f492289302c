#!/usr/bin/env bash
# The LLMGR scaling study of issue 12 on ml-100k (README, "LLMGR over scale").
#
#   launch/llmgr_scaling_ml100k.sh OUT [GCSAN_CHECKPOINT]
#
# Every point wraps one pre-trained GC-SAN: GCSAN_CHECKPOINT (e.g. the
# sbr_pretrain folder of a default run), or, if not given, the one the first
# run (the embedded default, OUT/R_4k_L6) trains. Points: training prompts per
# task {1k, 4k, 16k} x decoder blocks {0 (no decoder), 2, 6, 30} for the
# residual head (the default, beyond the paper) and the paper head
# (configs/llmgr_ml100k.py); POINTS=name,name,... runs only those. Finished
# points are skipped, so the script can be rerun after an interruption. Then
# writes OUT/analysis/summary.md and OUT/analysis/scaling_llmgr.png.
#
# Environment: PYTHON (default python), SEED (default 0), EXTRA (flags added to
# every run, e.g. --config.llm.dtype=bfloat16 on a GPU).
set -euo pipefail
out=${1:?usage: $0 OUT [GCSAN_CHECKPOINT]}
ckpt=${2:-}
PYTHON=${PYTHON:-python}
SEED=${SEED:-0}
EXTRA=${EXTRA:-}
mkdir -p "$out"

run() {  # run NAME CONFIG FLAGS...
  local name=$1 config=$2; shift 2
  if [[ -n "${POINTS:-}" && ",$POINTS," != *",$name,"* ]]; then return 0; fi
  if [[ -f "$out/$name/results.json" ]]; then echo "skip $name (finished)"; return 0; fi
  local s=()
  if [[ -n "$ckpt" ]]; then s=(--config.llmgr.sbr_checkpoint="$ckpt"); fi
  echo "run $name"
  # shellcheck disable=SC2086
  "$PYTHON" -m sbrjax.main --config="$config" --config.seed="$SEED" "${s[@]}" "$@" \
      --workdir="$out/$name" $EXTRA
}

R=configs/llmgr_residual_ml100k.py
P=configs/llmgr_ml100k.py
if [[ -z "$ckpt" ]]; then
  run R_4k_L6 "$R"
  ckpt="$out/R_4k_L6/sbr_pretrain"
else
  run R_4k_L6 "$R"
fi
for head in R P; do
  config=$R; [[ $head == P ]] && config=$P
  for limit in 1024 4096 16384; do
    tag=$((limit / 1024))k
    run "${head}_${tag}_L0" "$config" --config.llmgr.train_limit=$limit \
        --config.llmgr.control=no_decoder
    for layers in 2 6 30; do
      [[ $head$tag$layers == R4k6 ]] && continue   # the default: run above
      run "${head}_${tag}_L${layers}" "$config" --config.llmgr.train_limit=$limit \
          --config.llm.num_layers=$layers
    done
  done
done
dirs=()
for d in "$out"/[RP]_*/; do [[ -f "$d/results.json" ]] && dirs+=(--workdir="${d%/}"); done
"$PYTHON" -m sbrjax.analyze "${dirs[@]}" --out="$out/analysis" --pca=false
