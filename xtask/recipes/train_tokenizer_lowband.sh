#!/usr/bin/env bash
# The shipped tokenizer's recipe (train_v2.sh: 5 x 1024 codes, k-means on the 1.74M frames of
# 580 songs, beam 8, refinement filter, postnet) with the low band weighted in code space
# (`--low-band-emphasis 300:32`, weights up to 32x below 300 Hz). The shipped codebooks keep
# 12 of 25 bass pitches E1-E3 (`stemgen codec pitch`); on a 60k-frame probe this emphasis kept
# 18 of 25 for 0.4 dB more log-spectral distance (HISTORY, session 17). Its tokens are not the
# shipped model's: a model for it must be trained on caches made with it.
#
#     xtask/recipes/train_tokenizer_lowband.sh   # -> work-data/tok-L-pn (resumes, skips what exists)
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${W:-work-data}
BIN=${BIN:-target/release/stemgen}
EMPH=${EMPH:-300:32}
for d in songs songs-b songs-pn songs-pn2; do
    [ -d "$W/$d" ] || { echo "needs $W/$d: run the song steps of xtask/recipes/train_v2.sh first" >&2; exit 1; }
done
# The postnet's training songs, as train_v2.sh links them.
if [ ! -d "$W/pn-train" ]; then
    mkdir -p "$W/pn-train"
    for spec in a:songs-pn b:songs-pn2; do
        for d in "$W/${spec#*:}"/song-*; do
            ln -s "$(realpath --relative-to="$W/pn-train" "$d")" "$W/pn-train/${spec%%:*}-$(basename "$d")"
        done
    done
fi
[ -f "$W/tok-L/tokenizer.json" ] || $BIN train tokenizer --songs "$W/songs" --extra-songs "$W/songs-b" \
    --out "$W/tok-L" --levels 5 --codebook-size 1024 --gain-reference mean --train-frames 1800000 \
    --kmeans-iters 15 --encode-beam 8 --full-grid-only --seed 0 --low-band-emphasis "$EMPH"
[ -f "$W/tok-L-refine/tokenizer.json" ] || $BIN train refine --tokenizer "$W/tok-L" --songs "$W/songs" --out "$W/tok-L-refine"
[ -f "$W/tok-L-pn/tokenizer.json" ] || $BIN train postnet --tokenizer "$W/tok-L-refine" --songs "$W/songs" \
    --train-songs "$W/pn-train" --out "$W/tok-L-pn" --width 512 --layers 4 --kernel 3 --steps 4000 \
    --validate-every 500 --gl-iters 96
$BIN codec pitch --tokenizer "$W/tok-L-pn"
$BIN codec pitch --tokenizer assets/default/tokenizer
