#!/usr/bin/env bash
# MMA's grooves (xtask/recipes/mma_songs.py) as a token cache with context features and the
# true chords of every bar, made in chunks by midi_cache.sh (the whole library rendered would
# take 25 GB). Finished chunks are skipped, so an interrupted run goes on where it stopped.
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
IN="$W/mma/midi/train" OUT="$OUT" CHUNK="$CHUNK" PAIRS="$PAIRS" ORDER="$ORDER" CHUNKS="$CHUNKS" \
    BIN="$BIN" xtask/recipes/midi_cache.sh
