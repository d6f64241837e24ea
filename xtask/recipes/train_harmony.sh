#!/usr/bin/env bash
# Recipe for the harmony-aware default model (context features, ARCHITECTURE §3.8), shipped
# on 2026-12-06: the session-13 default's weights with a zero-initialised projection of the
# context features (chroma, bass chroma, onset strength, beat phase), trained further on a
# cache that stores the features and, for the synthetic songs, the chord templates of their
# true progressions (run 1, 1000 steps), then on that cache plus MMA's accompaniment grooves
# with their chords (run 2, 3000 steps). Every step resumes or skips what is done; run it
# again after an interruption. Needs the git history (the session-13 weights come from it).
# DATA_ONLY=1 stops once the songs and caches exist (what train_harmony_run3.sh builds on).
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${W:-work-data}
SF=${SF:-/usr/share/sounds/sf2/FluidR3_GM.sf2}   # Debian fluid-soundfont-gm
# BIN: a stemgen binary to use as it is (e.g. a copy kept while the tree is rebuilt).
if [ -z "${BIN:-}" ]; then
    BIN=target/release/stemgen
    cargo build --release -p stemgen-engine --bin stemgen
fi
# The session-13 default, the starting point (assets/default holds this recipe's result now).
BASE="$W/default-session13"
if [ ! -f "$BASE/model.safetensors" ]; then
    mkdir -p "$BASE"
    for f in config.json model.safetensors tokenizer.json; do
        git show "cae82d7:assets/default/$f" > "$BASE/$f"
    done
    cp -r assets/default/tokenizer "$BASE/"
fi
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
# MMA's grooves for run 2: the first 150 by name, then two chunks of the fixed shuffle; 3 pairs
# per groove with the chords of every bar.
ORDER=sorted CHUNKS=1 OUT="$W/mma/cache-sorted" W="$W" xtask/recipes/mma_cache.sh
CHUNKS=2 W="$W" xtask/recipes/mma_cache.sh
[ -n "${DATA_ONLY:-}" ] && exit 0
# From the shipped weights: measured features for most examples, the true chords' templates
# for 30% of those with known chords, no features for 10%.
$BIN train model --cache "$W/h1/cache" --tokenizer assets/default/tokenizer --out "$W/h1/model" \
    --config xtask/recipes/model_5x1024_harmony.json --init-from "$BASE" \
    --steps "${STEPS:-1000}" --batch-size 8 --lr 4e-4 --warmup 30 --checkpoint-every 50 \
    --validate-every 250 --seed 11 --whole-level0-share 0.4 --context-onset-weight 4 \
    --chord-template-share 0.3 --feature-drop-share 0.1
$BIN validate --model "$W/h1/model/checkpoint" --cache "$W/h1/cache" --batches 8 --context-probes --whole-level
[ -f "$W/h1/export/model.safetensors" ] || $BIN export "$W/h1/model/checkpoint" --out "$W/h1/export"
# Run 2: MMA's grooves (cached above) beside run 1's cache; the feature projection learns at
# 10 times the rate of the rest.
$BIN train model --cache "$W/h1/cache" --cache "$W/mma/cache-sorted/chunk-0" \
    --cache "$W/mma/cache/chunk-0" --cache "$W/mma/cache/chunk-1" \
    --tokenizer assets/default/tokenizer --out "$W/h2/model" --init-from "$W/h1/export" \
    --steps 3000 --batch-size 8 --lr 3e-4 --warmup 30 --checkpoint-every 50 \
    --validate-every 500 --seed 12 --whole-level0-share 0.4 --context-onset-weight 4 \
    --chord-template-share 0.3 --feature-drop-share 0.1 --features-lr-scale 10
[ -f "$W/h2/export/model.safetensors" ] || $BIN export "$W/h2/model/checkpoint" --out "$W/h2/export"
echo "the default model: $W/h2/export (ship its config.json and model.safetensors in assets/default)"
