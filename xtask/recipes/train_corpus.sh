#!/usr/bin/env bash
# Run 4 of the harmony model (issue: training on music people wrote): the shipped weights
# trained further on three sources at once, each with the chords of every bar where known:
#   - the synthetic feature cache of train_harmony.sh (4900 pairs of 980 songs);
#   - MMA's accompaniment grooves (mma_cache.sh: the first 150 by name and the first five
#     chunks of the fixed shuffle, about 2,700 pairs);
#   - the music21 corpus (corpus_songs.py: chorales, madrigals, quartets, ... 1209 training
#     works, 3 pairs each, cached in chunks of 50 by midi_cache.sh).
# The same harmony options as runs 2 and 3. Resumable like the recipes it calls: run it again
# after an interruption. Needs `mma` (Debian) and a venv with music21 for the corpus export.
#
#     xtask/recipes/train_corpus.sh                 # data, then 1500 steps, then the export
#     DATA_ONLY=1 xtask/recipes/train_corpus.sh     # only the songs and caches
#     BIN=work-data/bin/stemgen ...   # a copy of the binary, so the tree can be rebuilt meanwhile
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${W:-work-data}
if [ -z "${BIN:-}" ]; then
    BIN=target/release/stemgen
    cargo build --release -p stemgen-engine --bin stemgen
fi
for i in $(seq 0 9); do
    if [ ! -f "$W/h1/cache/cache-$i-of-10.safetensors" ]; then
        DATA_ONLY=1 W="$W" BIN="$BIN" xtask/recipes/train_harmony.sh
        break
    fi
done
CHUNKS=5 W="$W" BIN="$BIN" xtask/recipes/mma_cache.sh
if [ ! -d "$W/corpus/midi/train" ]; then
    [ -x "$W/venv-m21/bin/python" ] || { python3 -m venv "$W/venv-m21" && "$W/venv-m21/bin/pip" install music21; }
    "$W/venv-m21/bin/python" xtask/recipes/corpus_songs.py --out "$W/corpus/midi"
fi
IN="$W/corpus/midi/train" OUT="$W/corpus/cache" CHUNK=50 BIN="$BIN" xtask/recipes/midi_cache.sh
[ -n "${DATA_ONLY:-}" ] && exit 0
caches=(--cache "$W/h1/cache" --cache "$W/mma/cache-sorted/chunk-0")
for k in 0 1 2 3 4; do
    caches+=(--cache "$W/mma/cache/chunk-$k")
done
for chunk in "$W"/corpus/cache/chunk-*; do
    caches+=(--cache "$chunk")
done
$BIN train model "${caches[@]}" --tokenizer assets/default/tokenizer --out "$W/h4/model" \
    --init-from assets/default --steps "${STEPS:-1500}" --batch-size 8 --lr 2e-4 --warmup 30 \
    --checkpoint-every 50 --validate-every 500 --seed 17 --whole-level0-share 0.4 \
    --context-onset-weight 4 --chord-template-share 0.3 --feature-drop-share 0.1 \
    --features-lr-scale 10
[ -f "$W/h4/export/model.safetensors" ] || $BIN export "$W/h4/model/checkpoint" --out "$W/h4/export"
echo "run 4: $W/h4/export (compare with assets/default by stemgen eval and eval-compare first)"
