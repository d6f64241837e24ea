#!/usr/bin/env bash
# Recipe for the shipped default model (assets/default, since 2026-12-05): the v2 model of
# xtask/recipes/train_v2.sh trained further until it listens to its context (see
# assets/default/MODEL_CARD.md). Each step resumes or skips what is done.
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${W:-work-data}
BIN=target/release/stemgen
cargo build --release -p stemgen-engine --bin stemgen
# A second cache of the same 980 songs: new crops, targets and context subsets.
[ -n "$(ls "$W"/v2/cache2/*.safetensors 2>/dev/null)" ] || $BIN data cache --songs "$W/v2/all" \
    --tokenizer "$W/tok-F" --out "$W/v2/cache2" --pairs-per-song 5 --crop-seconds 10 --seed 1
CACHES=(--cache "$W/v2/cache" --cache "$W/v2/cache2")
GAIN=xtask/recipes/model_5x1024_gain.json   # the v2 config plus a level-0 gain embedding
# 1. From the v2 weights, 40% of examples as the sampler's first step (550 of 2000 steps).
$BIN train model "${CACHES[@]}" --tokenizer "$W/tok-F-pn" --out "$W/v2/drill" --config "$GAIN" \
    --init-from "$W/v2/final" --steps 2000 --stop-after 550 --batch-size 8 --lr 4e-4 --warmup 50 \
    --checkpoint-every 50 --validate-every 500 --seed 2 --whole-level0-share 0.4
# 2. Plus the loss weighted 4x on frames where the context has an onset.
$BIN train model "${CACHES[@]}" --tokenizer "$W/tok-F-pn" --out "$W/v2/onset" --config "$GAIN" \
    --init-from "$W/v2/drill/checkpoint" --steps 1500 --batch-size 8 --lr 4e-4 --warmup 30 \
    --checkpoint-every 50 --validate-every 500 --seed 4 --whole-level0-share 0.4 --context-onset-weight 4
# 3. 3000 more steps of the same, annealed at the end (run 4 in the model card).
$BIN train model "${CACHES[@]}" --tokenizer "$W/tok-F-pn" --out "$W/v2/listen2" --config "$GAIN" \
    --init-from "$W/v2/onset/checkpoint" --steps 3000 --batch-size 8 --lr 3e-4 --warmup 30 \
    --checkpoint-every 50 --validate-every 500 --seed 5 --whole-level0-share 0.4 --context-onset-weight 4
# Does it listen? Own context should score clearly better than reversed / other / dropped.
$BIN validate --model "$W/v2/listen2/checkpoint" --cache "$W/v2/cache" --batches 8 --context-probes --whole-level
# Ship it: f16 weights and codebooks with the tokenizer (the model card lists the figures).
$BIN export "$W/v2/listen2/checkpoint" --out "${OUT:-assets/default}"
# The decoder: PGHI phase and 32 Griffin-Lim iterations instead of 96 from random phases (same
# tokens; `stemgen codec eval --stems --decoders ...` measured it, see the model card).
python3 - "${OUT:-assets/default}/tokenizer/config.json" <<'PY'
import json, sys
path = sys.argv[1]
doc = json.load(open(path))
doc["config"].update(phase_start="pghi", gl_iters=32)
open(path, "w").write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
PY
