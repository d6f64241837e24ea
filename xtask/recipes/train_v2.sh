#!/usr/bin/env bash
# Recipe for the v2 model, the base of the shipped one (xtask/recipes/train_v2_listen.sh continues
# it; see assets/default/MODEL_CARD.md): a 5 x 1024 magnitude tokenizer learned
# from 580 songs, encoded by beam search, decoded by the refinement filter and a postnet; then
# the StemGen model on 980 songs. Every step skips what is already done and the model resumes
# from its last checkpoint, so the script can be re-run after an interruption. Data and
# checkpoints live in work-data/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${W:-work-data}
BIN=target/release/stemgen
cargo build --release -p stemgen-engine --bin stemgen
SF=/usr/share/sounds/sf2/FluidR3_GM.sf2   # apt-get install fluid-soundfont-gm
synth() { [ -d "$W/$1" ] || $BIN data synth --out "$W/$1" --songs "$2" --seconds 60 --seed "$3" --soundfont "$SF"; }
synth songs 200 1000     # the tokenizer's songs; every 10th is the held-out set of every report
synth songs-b 400 5000   # more tokenizer songs
synth songs-pn 180 3000  # songs the codebooks never see, for the postnet
synth songs-pn2 200 9000
# Symlink folders: the postnet's training songs, and every song for the model.
link() { # link DIR PREFIX:SOURCE...
    local dir=$1; shift
    [ -d "$W/$dir" ] && return
    mkdir -p "$W/$dir"
    for spec in "$@"; do
        for d in "$W/${spec#*:}"/song-*; do
            ln -s "$(realpath --relative-to="$W/$dir" "$d")" "$W/$dir/${spec%%:*}-$(basename "$d")"
        done
    done
}
link pn-train a:songs-pn b:songs-pn2
link v2/all a:songs b:songs-b c:songs-pn d:songs-pn2

# Tokens: 5 levels x 1024 codes at 50 Hz (2.5 kbps), gain = the frame's mean dB, k-means on
# all 1.74M frames of 580 songs (15 min), beam-search encoding with 8 paths.
[ -f "$W/tok-F/tokenizer.json" ] || $BIN train tokenizer --songs "$W/songs" --extra-songs "$W/songs-b" \
    --out "$W/tok-F" --levels 5 --codebook-size 1024 --gain-reference mean --train-frames 1800000 \
    --kmeans-iters 15 --encode-beam 8 --full-grid-only --seed 0
# Decoder: the linear refinement filter, then the postnet on 380 songs the codebooks never saw,
# then Griffin-Lim with 96 iterations.
[ -f "$W/tok-F-refine/tokenizer.json" ] || $BIN train refine --tokenizer "$W/tok-F" --songs "$W/songs" --out "$W/tok-F-refine"
[ -f "$W/tok-F-pn/tokenizer.json" ] || $BIN train postnet --tokenizer "$W/tok-F-refine" --songs "$W/songs" \
    --train-songs "$W/pn-train" --out "$W/tok-F-pn" --width 512 --layers 4 --kernel 3 --steps 4000 \
    --validate-every 500 --gl-iters 96

# The model: 4900 pairs (5 per song) of 980 songs, tokenised once; the decoder is not needed
# for the cache, only the token definition.
[ -n "$(ls "$W"/v2/cache/*.safetensors 2>/dev/null)" ] || $BIN data cache --songs "$W/v2/all" \
    --tokenizer "$W/tok-F" --out "$W/v2/cache" --pairs-per-song 5 --crop-seconds 10 --seed 0
$BIN train model --cache "$W/v2/cache" --tokenizer "$W/tok-F-pn" --out "$W/v2/model" \
    --config xtask/recipes/model_5x1024.json --steps 4500 --batch-size 8 --lr 7e-4 --warmup 150 \
    --checkpoint-every 50 --validate-every 500 --seed 0
