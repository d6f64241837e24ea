#!/usr/bin/env bash
# The harmony checks of a model (default assets/default), 8 seeds each, keys by `stemgen
# coherence` (the key column is the generated stem's own Krumhansl-Schmuckler key):
# 1. the README's main job (a 123 BPM song in G major): the bass in G major or E minor;
# 2. a bass over a metronome with the chords "C | Am | F | G": in C major or A minor.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-assets/default}
OUT=${OUT:-$(mktemp -d)}
# GEN_ARGS: more `generate` flags for both jobs (e.g. GEN_ARGS="--harmony-prior 0.1").
read -r -a gen_args <<< "${GEN_ARGS:-}"
# BIN: a stemgen binary to use as it is (e.g. a copy kept while the tree is rebuilt).
if [ -z "${BIN:-}" ]; then
    BIN=target/release/stemgen
    cargo build --release -q -p stemgen-engine --bin stemgen
fi
SONG=assets/examples/song50-no-bass.wav
key_of() { $BIN coherence --context "$SONG" "$1" | awk -F'|' 'NR==4 {gsub(/^ +| +$/, "", $5); print $5}'; }
readme=0; chords=0
for seed in 1 2 3 4 5 6 7 8; do
    $BIN generate --model "$MODEL" --context "$SONG" --instrument bass --bars 4 --bpm 123 \
        --seed "$seed" "${gen_args[@]}" -o "$OUT/readme-$seed.wav" 2>/dev/null
    k=$(key_of "$OUT/readme-$seed.wav")
    case "$k" in "G major"|"E minor") readme=$((readme + 1));; esac
    $BIN generate --model "$MODEL" --metronome --bpm 120 --bars 4 --chords "C | Am | F | G" \
        --instrument bass --seed "$seed" "${gen_args[@]}" -o "$OUT/chords-$seed.wav" 2>/dev/null
    c=$(key_of "$OUT/chords-$seed.wav")
    case "$c" in "C major"|"A minor") chords=$((chords + 1));; esac
    echo "seed $seed: README job bass in $k; bass over C | Am | F | G in $c"
done
echo "README job: $readme of 8 in G major or E minor"
echo "metronome with chords C | Am | F | G: $chords of 8 in C major or A minor"
echo "stems in $OUT"
