#!/usr/bin/env bash
# A folder of MIDI files (with optional `<name>.chords.json` beside each) as a token cache with
# context features and the chords of every bar, made in chunks: render a chunk into song
# folders (`stemgen data midi`), draw its pairs (`stemgen data cache`), delete its audio.
# Rendered stems take 15 MB per MMA groove and about 100 MB per corpus work (quartet movements
# run for minutes), more than a small machine has to spare for a whole library; a chunk needs
# a few GB. Finished chunks are skipped, so an interrupted run goes on where it stopped.
#
#     IN=work-data/corpus/midi/train OUT=work-data/corpus/cache CHUNK=50 xtask/recipes/midi_cache.sh
#
# IN and OUT are required; CHUNK (files per chunk, 150), PAIRS (pairs of 10 s per song, 3),
# CHUNKS (only the first N chunks), ORDER (`shuffled`: a fixed shuffle by checksum of the name,
# so every chunk mixes styles and a run cut short still trains on a spread of them; `sorted`:
# by name), BIN (a stemgen binary used as it is, e.g. a copy kept while the tree is rebuilt).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${IN:?IN: the folder of MIDI files}" "${OUT:?OUT: the folder of cache chunks}"
CHUNK=${CHUNK:-150}
PAIRS=${PAIRS:-3}
ORDER=${ORDER:-shuffled}
CHUNKS=${CHUNKS:-}
if [ -z "${BIN:-}" ]; then
    BIN=target/release/stemgen
    cargo build --release -p stemgen-engine --bin stemgen
fi
if [ "$ORDER" = sorted ]; then
    mapfile -t mids < <(find "$IN" -name '*.mid' | sort)
else
    mapfile -t mids < <(find "$IN" -name '*.mid' | while read -r f; do
        echo "$(basename "$f" | md5sum | cut -c1-12) $f"; done | sort | cut -d' ' -f2-)
fi
[ "${#mids[@]}" -gt 0 ] || { echo "midi_cache.sh: no .mid files under $IN" >&2; exit 1; }
chunks=$(( (${#mids[@]} + CHUNK - 1) / CHUNK ))
[ -n "$CHUNKS" ] && [ "$CHUNKS" -lt "$chunks" ] && chunks=$CHUNKS
tmp="$OUT.tmp"
for k in $(seq 0 $((chunks - 1))); do
    out="$OUT/chunk-$k"
    [ -f "$out/cache-0-of-1.safetensors" ] && continue
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
