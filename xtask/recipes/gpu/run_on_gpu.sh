#!/usr/bin/env bash
# Fine-tunes the default model on a lent GPU machine (run from the repository root there;
# `train_twin.py` says why this is PyTorch). Two runs share the GPU at once, one learning
# rate and length each (RUNS="name:lr:steps ..."): the model is small, so one run leaves most of the GPU idle, and which rate is
# better for a given pack is cheaper to try than to guess. Each keeps its best checkpoints by
# held-out loss under $OUT/<run>/; the logs go there too.
#
#     OUT=/tmp/out MINUTES=7 xtask/recipes/gpu/run_on_gpu.sh gpu-data/pack.xz
set -euo pipefail
PACK=${1:?usage: run_on_gpu.sh PACK}
OUT=${OUT:?set OUT to where the checkpoints go}
MINUTES=${MINUTES:-7}
MODEL=${MODEL:-assets/default}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
export PYTHONUNBUFFERED=1
pids=()
for run in ${RUNS:-a:4e-4:3000 b:6e-4:6000}; do
    IFS=: read -r name lr steps <<< "$run"
    mkdir -p "$OUT/$name"
    python3 xtask/recipes/gpu/train_twin.py --model "$MODEL" --pack "$PACK" --out "$OUT/$name" \
        --steps "$steps" --minutes "$MINUTES" --lr "$lr" --batch-size "${BATCH:-64}" \
        --keep 2 --seed "${#pids[@]}" > "$OUT/$name/train.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for run in ${RUNS:-a:4e-4:3000 b:6e-4:6000}; do
    name=${run%%:*}
    echo "== $name"; grep -E '^\{|kept|Error|error' "$OUT/$name/train.log" | cut -c1-400 || true
    tail -n 3 "$OUT/$name/train.log"
    # The config is the starting model's; only the weights come back.
    find "$OUT/$name" -name config.json -delete
done
exit $status
