#!/usr/bin/env bash
# Recipe for the default model: synthetic FluidR3 songs -> magnitude-RVQ tokenizer -> token
# cache -> StemGen model. Every step resumes or skips what is already done, so the script can
# be re-run after an interruption. Data and checkpoints live in work-data/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${W:-work-data/default}
SONGS=${SONGS:-150}
STEPS=${STEPS:-20000}
BIN=target/release/stemgen
cargo build --release -p stemgen-engine
SF=/usr/share/sounds/sf2/FluidR3_GM.sf2   # apt-get install fluid-soundfont-gm
[ -d "$W/songs" ] || $BIN data synth --out "$W/songs" --songs "$SONGS" --seconds 60 --seed 1000 --soundfont "$SF"
[ -f "$W/tokenizer/tokenizer.json" ] || $BIN train tokenizer --songs "$W/songs" --out "$W/tokenizer" --seed 0
[ -n "$(ls "$W"/cache/*.safetensors 2>/dev/null)" ] || $BIN data cache --songs "$W/songs" --tokenizer "$W/tokenizer" --out "$W/cache" --pairs-per-song 8 --crop-seconds 10 --seed 0
$BIN train model --cache "$W/cache" --tokenizer "$W/tokenizer" --out "$W/model" --steps "$STEPS" \
    --batch-size 16 --lr 5e-4 --warmup 500 --checkpoint-every 50 --validate-every 250 --seed 0
