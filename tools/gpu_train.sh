#!/usr/bin/env bash
# Train on a GPU for a fixed wall-time budget, bf16, a checkpoint every minute, resumable.
# Prepare HERE first (the GPU machine has no package index and no ../shared):
#   python -m tools.gpu_train_pack            # -> gpu_data/ (git-ignored): train/ val/ wheels/
# then, through the device tool, with carry ["gpu_data"] (and ["gpu_data", "gpu_resume"] to continue):
#   bash tools/gpu_train.sh
# Settings (environment):
#   GPU_TRAIN_SECONDS=360     training wall time (the build and start-up come on top) [360]
#   GPU_TRAIN_CKPT_EVERY=60   seconds between checkpoints [60]
#   GPU_TRAIN_ARGS="..."      fastreshuffle train options [--preset small --codec jpeg --quality 5-95 ...]
#   GPU_TRAIN_RESUME=DIR      a run folder brought back from an earlier call (state.safetensors +
#                             log.csv ...): copied to $OUT/run and continued [gpu_resume]; a folder
#                             there without state.safetensors stops the script before the build
#   GPU_TRAIN_DATA=DIR        the packed data [gpu_data]
#   GPU_TRAIN_DEVICE=cuda     (cpu for the dry run of the tests)
#   GPU_TRAIN_SKIP_BUILD=1    do not build (the tests; an installed checkout)
#   GPU_TRAIN_CUDA_EXT=0|1    build the CUDA kernels too [0: training on CUDA runs the reference
#                             network on torch ops, so only the CPU extension is built: ~1 min less]
#   GPU_TRAIN_RETURN_KIB=N    files in $OUT larger than this are moved to GPU_TRAIN_PARK, since the
#                             device tool brings back no file over 16 MiB [16384]
#   GPU_TRAIN_PARK=DIR        where they go [/tmp/gpu_train_parked]
# Output in $OUT (default ./out/gpu_train): weights_fp16.safetensors (the last step's weights as a
# shipped model file: the paper preset's 6.8 M parameters are 12.9 MiB in fp16 but 26 MiB in fp32,
# its Adam state 78 MiB), run/ (log.csv, last/best.safetensors, state.json, state.safetensors:
# those over the limit are parked; a later call continues from the fp16 file with --init), train.log,
# gpu.txt: at most 8 files come back from a device call.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out/gpu_train}"
if [ -e "$OUT/train.log" ] || [ -e "$OUT/run" ]; then   # (on the device $OUT is new each call)
  echo "$OUT already holds a gpu_train output (train.log, run/): name another OUT, or move it away"; exit 2
fi
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
SECONDS_BUDGET="${GPU_TRAIN_SECONDS:-360}"
CKPT_EVERY="${GPU_TRAIN_CKPT_EVERY:-60}"
DATA="${GPU_TRAIN_DATA:-gpu_data}"
RESUME="${GPU_TRAIN_RESUME:-gpu_resume}"
DEVICE="${GPU_TRAIN_DEVICE:-cuda}"
ARGS="${GPU_TRAIN_ARGS:---preset small --codec jpeg --quality 5-95 --batch-size 64 --patch 96 --steps 100000 --val-every 500 --workers 14}"
RUN="$OUT/run"
T0=$SECONDS

echo "=== environment ($(date -u +%Y-%m-%dT%H:%MZ))"
{ command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } 2>&1 | tee "$OUT/gpu.txt"

[ -d "$DATA/train" ] || { echo "no training data in $DATA/train: run python -m tools.gpu_train_pack here and carry gpu_data"; exit 2; }
# what train --resume needs is state.safetensors (state.json is a copy): checked before the build
if [ -d "$RESUME" ] && [ -n "$(ls -A "$RESUME" 2>/dev/null)" ] && [ ! -f "$RESUME/state.safetensors" ]; then
  echo "$RESUME holds no state.safetensors (set aside as too large to come back, or the run folder is one level"
  echo "deeper): nothing to resume. Continue from its weights instead: python -m tools.gpu_train_pack --init FILE,"
  echo "--init gpu_data/init.safetensors in GPU_TRAIN_ARGS, and $RESUME left out of carry"
  exit 2
fi
if compgen -G "$DATA/wheels/*.whl" >/dev/null; then
  echo "=== wheels from $DATA/wheels"
  python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_train_site \
    "$DATA"/wheels/*.whl || { echo "wheel install FAILED"; exit 2; }
  export PYTHONPATH="/tmp/gpu_train_site${PYTHONPATH:+:$PYTHONPATH}"
fi

if [ "${GPU_TRAIN_SKIP_BUILD:-0}" != 1 ]; then
  echo "=== build (FORCE_CUDA=${GPU_TRAIN_CUDA_EXT:-0})"
  if ! FORCE_CUDA="${GPU_TRAIN_CUDA_EXT:-0}" MAX_JOBS=16 timeout 300 python -m pip install --no-build-isolation --no-deps -e . \
      >"$OUT/install.log" 2>&1; then
    echo "install FAILED (tail of $OUT/install.log):"; tail -40 "$OUT/install.log"; exit 2
  fi
  rm -f "$OUT/install.log"
fi

resume=()
if [ -f "$RESUME/state.safetensors" ]; then
  echo "=== resuming the run in $RESUME"
  mkdir -p "$RUN" && cp "$RESUME"/* "$RUN"/ && resume=(--resume)
fi
val=()
[ -d "$DATA/val" ] && val=(--val "$DATA/val")
[ -d "$DATA/val" ] || val=(--val none)

echo "=== train: ${SECONDS_BUDGET} s, checkpoint every ${CKPT_EVERY} s, bf16, on $DEVICE ($((SECONDS - T0)) s spent before)"
# shellcheck disable=SC2086  # ARGS is a list of options
python -m fastreshuffle.cli train --data "$DATA/train" "${val[@]}" --out "$RUN" --device "$DEVICE" \
  --precision bf16 --time-budget "$SECONDS_BUDGET" --checkpoint-every "$CKPT_EVERY" --no-progress \
  $ARGS "${resume[@]}" 2>&1 | tee "$OUT/train.log"
rc=${PIPESTATUS[0]}
echo "=== log (last rows of $RUN/log.csv)"
tail -5 "$RUN/log.csv" 2>/dev/null
python -c "import json, sys; m = json.load(open(sys.argv[1])); print('state: step', m['step'], 'of', m['steps'], 'best val PSNR', m.get('best_psnr'))" \
  "$RUN/state.json" 2>/dev/null
if [ -f "$RUN/last.safetensors" ] && [ -f "$RUN/state.json" ]; then
  step=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['step'])" "$RUN/state.json")
  python -m tools.export_weights "$RUN/last.safetensors" "$OUT/weights_fp16.safetensors" --overwrite \
    --meta steps="$step" --meta date="$(date -u +%Y-%m-%d)" --meta hardware="$(head -1 "$OUT/gpu.txt")" \
    --meta "command=tools/gpu_train.sh, GPU_TRAIN_ARGS=$ARGS" || rc=2
fi
PARK="${GPU_TRAIN_PARK:-/tmp/gpu_train_parked}"
while IFS= read -r -d '' big; do
  mkdir -p "$PARK" && mv "$big" "$PARK"/ && echo "parked $big in $PARK: over ${GPU_TRAIN_RETURN_KIB:-16384} KiB, it would not come back"
done < <(find "$OUT" -type f -size +"${GPU_TRAIN_RETURN_KIB:-16384}"k -print0)
echo "gpu_train finished with status $rc after $((SECONDS - T0)) s; run folder $RUN"
exit "$rc"
