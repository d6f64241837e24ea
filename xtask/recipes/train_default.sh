#!/usr/bin/env bash
# Recipe for the stage-4 model, the default until 2026-12-05 (the shipped one is now made by
# train_v2.sh, then train_v2_listen.sh; OUT=assets/default puts stage 4 back): synthetic
# FluidR3 songs -> magnitude-RVQ tokenizer -> token cache -> StemGen model -> f16 export. Every step resumes or
# skips what is already done, so the script can be re-run after an interruption (the model
# resumes from its last checkpoint). Data and checkpoints live in work-data/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${W:-work-data/default}
BIN=target/release/stemgen
cargo build --release -p stemgen-engine --bin stemgen
SF=/usr/share/sounds/sf2/FluidR3_GM.sf2   # apt-get install fluid-soundfont-gm
# 600 one-minute songs in two seeded batches; the tokenizer learns from the first 200 mixes.
[ -d "$W/songs" ] || $BIN data synth --out "$W/songs" --songs 200 --seconds 60 --seed 1000 --soundfont "$SF"
[ -d "$W/songs-b" ] || $BIN data synth --out "$W/songs-b" --songs 400 --seconds 60 --seed 5000 --soundfont "$SF"
if [ ! -d "$W/all" ]; then
    mkdir -p "$W/all"
    for d in "$W"/songs/song-*; do ln -s "../songs/$(basename "$d")" "$W/all/a-$(basename "$d")"; done
    for d in "$W"/songs-b/song-*; do ln -s "../songs-b/$(basename "$d")" "$W/all/b-$(basename "$d")"; done
fi
[ -f "$W/tokenizer/tokenizer.json" ] || $BIN train tokenizer --songs "$W/songs" --out "$W/tokenizer" --seed 0
[ -n "$(ls "$W"/cache/*.safetensors 2>/dev/null)" ] || $BIN data cache --songs "$W/all" --tokenizer "$W/tokenizer" --out "$W/cache" --pairs-per-song 8 --crop-seconds 10 --seed 0
# ModelConfig::cpu_default (d_model 256, 4 layers); every 10th song is held out for validation.
# Stage 1 (session 1): 1200 steps of a 1600-step schedule, exported as f16.
$BIN train model --cache "$W/cache" --tokenizer "$W/tokenizer" --out "$W/model" --steps 1600 --stop-after 1200 \
    --batch-size 8 --lr 7e-4 --warmup 150 --checkpoint-every 50 --validate-every 200 --seed 0
[ -f "$W/stage1/model.safetensors" ] || $BIN export "$W/model/checkpoint" --out "$W/stage1"
# Stage 2 (session 2): a fresh schedule from the stage-1 weights (STAGE2_STOP: where it was stopped).
$BIN train model --cache "$W/cache" --tokenizer "$W/tokenizer" --out "$W/model-continued" \
    --init-from "$W/stage1" --steps 1400 --stop-after "${STAGE2_STOP:-1400}" --batch-size 8 --lr 5e-4 \
    --warmup 100 --checkpoint-every 50 --validate-every 200 --seed 1
[ -f "$W/stage2/model.safetensors" ] || $BIN export "$W/model-continued/checkpoint" --out "$W/stage2"
# Stage 3 (session 3): the stage-2 weights on 4800 new pairs of the same songs (cache seed 3:
# other crops, targets and context subsets), tokenised with the stage-2 tokenizer. 3a: 250
# steps of a 2000-step schedule; 3b: a fresh, shorter schedule from 3a's checkpoint, so that it
# decays within the session (STAGE3B_STOP: where it was stopped).
[ -n "$(ls "$W"/cache3/*.safetensors 2>/dev/null)" ] || $BIN data cache --songs "$W/all" --tokenizer "$W/stage2" --out "$W/cache3" --pairs-per-song 8 --crop-seconds 10 --seed 3
$BIN train model --cache "$W/cache3" --tokenizer "$W/stage2/tokenizer" --out "$W/model-stage3" \
    --init-from "$W/stage2" --steps 2000 --stop-after 250 --batch-size 8 --lr 5e-4 \
    --warmup 100 --checkpoint-every 50 --validate-every 200 --seed 2
$BIN train model --cache "$W/cache3" --tokenizer "$W/stage2/tokenizer" --out "$W/model-stage3b" \
    --init-from "$W/model-stage3/checkpoint" --steps 1000 --stop-after "${STAGE3B_STOP:-1000}" \
    --batch-size 8 --lr 5e-4 --warmup 50 --checkpoint-every 50 --validate-every 200 --seed 4
[ -f "$W/stage3/model.safetensors" ] || $BIN export "$W/model-stage3b/checkpoint" --out "$W/stage3"
# Stage 4 (session 4): the stage-3 weights on 4800 new pairs (cache seed 4). 4a: part of a
# 1400-step schedule at peak 4e-4, stopped at step 500 for the session's time; 4b: a fresh 250-step
# schedule from 4a's checkpoint that decays to 5e-5, so the run ends annealed.
[ -n "$(ls "$W"/cache4/*.safetensors 2>/dev/null)" ] || $BIN data cache --songs "$W/all" --tokenizer "$W/stage3" --out "$W/cache4" --pairs-per-song 8 --crop-seconds 10 --seed 4
$BIN train model --cache "$W/cache4" --tokenizer "$W/stage3/tokenizer" --out "$W/model-stage4" \
    --init-from "$W/stage3" --steps 1400 --stop-after "${STAGE4A_STOP:-500}" --batch-size 8 --lr 4e-4 \
    --warmup 50 --checkpoint-every 50 --validate-every 350 --seed 5
$BIN train model --cache "$W/cache4" --tokenizer "$W/stage3/tokenizer" --out "$W/model-stage4b" \
    --init-from "$W/model-stage4/checkpoint" --steps 250 --batch-size 8 --lr 2e-4 \
    --warmup 10 --checkpoint-every 25 --validate-every 125 --seed 6
$BIN export "$W/model-stage4b/checkpoint" --out "${OUT:-$W/stage4-export}"
# The example context: 8 bars of a held-out song without its bass (and that bass, for reference).
python3 xtask/recipes/make_example_context.py "$W/songs/song-00050" assets/examples/song50-no-bass.wav 4 8 drums piano strings
python3 xtask/recipes/make_example_context.py "$W/songs/song-00050" assets/examples/song50-bass.wav 4 8 bass
