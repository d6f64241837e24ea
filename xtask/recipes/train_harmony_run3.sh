#!/usr/bin/env bash
# Run 3 of the harmony model: the shipped weights (train_harmony.sh's run 2) trained further on
# the synthetic cache and every training chunk of MMA's grooves (about 1,800 grooves, 12
# chunks of 150), with the same harmony options as run 2. Resumable like the recipes it calls:
# run it again after an interruption. Needs `mma` (Debian) for the grooves.
#
#     xtask/recipes/train_harmony_run3.sh            # data, then 2400 steps
#     DATA_ONLY=1 xtask/recipes/train_harmony_run3.sh   # only the songs and caches
#     BIN=work-data/bin/stemgen ...   # a copy of the binary, so the tree can be rebuilt meanwhile
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${W:-work-data}
BIN=${BIN:-target/release/stemgen}
DATA_ONLY=1 W="$W" xtask/recipes/train_harmony.sh
W="$W" xtask/recipes/mma_cache.sh
[ -n "${DATA_ONLY:-}" ] && exit 0
caches=(--cache "$W/h1/cache" --cache "$W/mma/cache-sorted/chunk-0")
for chunk in "$W"/mma/cache/chunk-*; do
    caches+=(--cache "$chunk")
done
$BIN train model "${caches[@]}" --tokenizer assets/default/tokenizer --out "$W/h3/model" \
    --init-from assets/default --steps "${STEPS:-2400}" --batch-size 8 --lr 2e-4 --warmup 30 \
    --checkpoint-every 50 --validate-every 400 --seed 13 --whole-level0-share 0.4 \
    --context-onset-weight 4 --chord-template-share 0.3 --feature-drop-share 0.1 \
    --features-lr-scale 10
[ -f "$W/h3/export/model.safetensors" ] || $BIN export "$W/h3/model/checkpoint" --out "$W/h3/export"
echo "run 3: $W/h3/export (compare with assets/default by stemgen eval and eval-compare first)"
