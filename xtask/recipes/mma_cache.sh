#!/usr/bin/env bash
# MMA's grooves (xtask/recipes/mma_songs.py) as a token cache with context features and the
# true chords of every bar, made in chunks: render a chunk of MIDI files into song folders
# (`stemgen data midi`), draw its pairs (`stemgen data cache`), delete its audio. Rendered
# stems take about 15 MB per groove, 25 GB for the whole library, more than a small machine
# has to spare; a chunk needs a few GB. Finished chunks are skipped, so an interrupted run
# goes on where it stopped.
#
#     xtask/recipes/mma_cache.sh            # train split -> work-data/mma/cache/chunk-K
#     CHUNKS=2 xtask/recipes/mma_cache.sh   # only the first two chunks (run 2 of the default)
#     ORDER=sorted CHUNKS=1 OUT=work-data/mma/cache-sorted xtask/recipes/mma_cache.sh
#                                           # the first 150 by name (run 2's first chunk)
#     SPLIT=held-out xtask/recipes/mma_cache.sh   # rendered songs kept for `eval --songs`
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${W:-work-data}
CHUNK=${CHUNK:-150}
PAIRS=${PAIRS:-3}
SPLIT=${SPLIT:-train}
ORDER=${ORDER:-shuffled}
CHUNKS=${CHUNKS:-}
OUT=${OUT:-$W/mma/cache}
# BIN: a stemgen binary to use as it is (e.g. a copy kept while the tree is rebuilt).
if [ -z "${BIN:-}" ]; then
    BIN=target/release/stemgen
    cargo build --release -p stemgen-engine --bin stemgen
fi
python3 xtask/recipes/mma_songs.py --out "$W/mma/midi"
if [ "$SPLIT" != train ]; then
    # Held-out grooves stay rendered: they are what `stemgen eval --songs` reads.
    $BIN data midi --in "$W/mma/midi/$SPLIT" --out "$W/mma/songs/$SPLIT"
    exit 0
fi
# A fixed shuffle (by checksum of the name), so every chunk mixes the libraries and styles
# and a run cut short still trains on a spread of them.
if [ "$ORDER" = sorted ]; then
    mapfile -t mids < <(find "$W/mma/midi/train" -name '*.mid' | sort)
else
    mapfile -t mids < <(find "$W/mma/midi/train" -name '*.mid' | while read -r f; do
        echo "$(basename "$f" | md5sum | cut -c1-12) $f"; done | sort | cut -d' ' -f2-)
fi
chunks=$(( (${#mids[@]} + CHUNK - 1) / CHUNK ))
[ -n "$CHUNKS" ] && [ "$CHUNKS" -lt "$chunks" ] && chunks=$CHUNKS
for k in $(seq 0 $((chunks - 1))); do
    out="$OUT/chunk-$k"
    [ -f "$out/cache-0-of-1.safetensors" ] && continue
    tmp="$W/mma/chunk-tmp"
    rm -rf "$tmp"
    mkdir -p "$tmp/midi"
    for mid in "${mids[@]:$((k * CHUNK)):CHUNK}"; do
        ln "$mid" "$tmp/midi/"
        chords="${mid%.mid}.chords.json"
        [ -f "$chords" ] && ln "$chords" "$tmp/midi/"
    done
    $BIN data midi --in "$tmp/midi" --out "$tmp/songs"
    $BIN data cache --songs "$tmp/songs" --tokenizer assets/default/tokenizer --out "$out" \
        --pairs-per-song "$PAIRS" --crop-seconds 10 --seed "$k"
    rm -rf "$tmp"
    echo "chunk $((k + 1)) of $chunks done"
done
