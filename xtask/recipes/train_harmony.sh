#!/usr/bin/env bash
# Recipe for the harmony-aware model (context features, ARCHITECTURE §3.8): the shipped
# default model's weights with a zero-initialised projection of the context features (chroma,
# bass chroma, onset strength, beat phase), trained further on a cache that stores the
# features and, for the synthetic songs, the chord templates of their true progressions.
# Every step resumes or skips what is done; run it again after an interruption.
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${W:-work-data}
BIN=target/release/stemgen
SF=${SF:-/usr/share/sounds/sf2/FluidR3_GM.sf2}   # Debian fluid-soundfont-gm
cargo build --release -p stemgen-engine --bin stemgen
# The 980 synthetic songs of the shipped model (seeds as in its model card).
synth() { [ -d "$W/$1" ] || $BIN data synth --out "$W/$1" --songs "$2" --seconds 60 --seed "$3" --soundfont "$SF"; }
synth songs 200 1000
synth songs-b 400 5000
synth songs-pn 180 3000
synth songs-pn2 200 9000
if [ ! -d "$W/v2/all" ]; then
    mkdir -p "$W/v2/all"
    for spec in a:songs b:songs-b c:songs-pn d:songs-pn2; do
        for d in "$W/${spec#*:}"/song-*; do
            ln -s "$(realpath --relative-to="$W/v2/all" "$d")" "$W/v2/all/${spec%%:*}-$(basename "$d")"
        done
    done
fi
# 4900 pairs (5 per song) with their context features, tokenised with the shipped tokenizer;
# ten shards, so an interrupted run keeps the finished ones.
for i in $(seq 0 9); do
    [ -f "$W/h1/cache/cache-$i-of-10.safetensors" ] || $BIN data cache --songs "$W/v2/all" \
        --tokenizer assets/default/tokenizer --out "$W/h1/cache" --shard "$i/10" \
        --pairs-per-song 5 --crop-seconds 10 --seed 0
done
# From the shipped weights: measured features for most examples, the true chords' templates
# for 30% of those with known chords, no features for 10%.
$BIN train model --cache "$W/h1/cache" --tokenizer assets/default/tokenizer --out "$W/h1/model" \
    --config xtask/recipes/model_5x1024_harmony.json --init-from assets/default \
    --steps "${STEPS:-1000}" --batch-size 8 --lr 4e-4 --warmup 30 --checkpoint-every 50 \
    --validate-every 250 --seed 11 --whole-level0-share 0.4 --context-onset-weight 4 \
    --chord-template-share 0.3 --feature-drop-share 0.1
$BIN validate --model "$W/h1/model/checkpoint" --cache "$W/h1/cache" --batches 8 --context-probes --whole-level
