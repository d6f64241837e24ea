#!/usr/bin/env python3
"""The music21 corpus (PyPI `music21`, BSD; its wheel carries the scores) as multitrack MIDI
for `stemgen data midi`: Bach chorales, Palestrina, Monteverdi madrigals, string quartets and
every other work with two or more parts.

Each part gets a General MIDI program from a category no other part of the work has (so each
voice becomes its own stem: soprano as a flute, tenor as a horn, the bass as a bass or cello,
...), drawn per work; quartets are played by strings and a bass. Tempos are spread (60-120 BPM
for vocal works, 70-140 otherwise). The harmony per bar (the chordified score's longest
nameable sonority in each bar; "N.C." where none has a name; no sidecar when more than a
quarter of the bars have none) goes into `<name>.chords.json` for the harmony conditioning.
Whole works are held out (every tenth by path) into `held-out/`.

Resumable: works whose MIDI file exists are skipped, and so are the files listed in
`<out>/not-exported.tsv` (those with one part or that music21 cannot read or export, each
reported by name once), so a resumed run does not parse them again.

    python3 -m venv work-data/venv-m21 && work-data/venv-m21/bin/pip install music21
    work-data/venv-m21/bin/python xtask/recipes/corpus_songs.py --out work-data/corpus/midi
    target/release/stemgen data midi --in work-data/corpus/midi/train --out work-data/corpus/songs/train
"""
import argparse
import hashlib
import json
import pathlib
import random
import re
import sys

from music21 import corpus, harmony, instrument, meter, tempo

# (category, GM programs) a part can be played as; no two parts of a work share a category.
VOICES = [
    ("pipe", [73, 72, 74]),  # flute, piccolo, recorder
    ("reed", [68, 71, 70, 65]),  # oboe, clarinet, bassoon, alto sax
    ("brass", [60, 56, 57]),  # horn, trumpet, trombone
    ("strings", [40, 41, 42]),  # violin, viola, cello
    ("organ", [19, 20]),  # church organ, reed organ
    ("piano", [0, 1]),
    ("ensemble", [52, 48]),  # choir aahs, string ensemble
    ("guitar", [24, 25]),
    ("chromatic-percussion", [11, 12]),  # vibraphone, marimba
]
BASS = ("bass", [32, 33])  # acoustic, finger bass
SYMBOL = re.compile(
    r"^[A-G](#|b)?(m|maj7|m7|7|dim|dim7|aug|sus|sus2|sus4|6|m6|9|m7b5)?(/[A-G](#|b)?)?$"
)


def work_paths():
    return sorted(str(p) for p in corpus.getPaths())


def programs_for(rng, parts, quartet):
    """One (category, program) per part, distinct categories, lowest part sometimes a bass."""
    if quartet:
        pool = [("strings", [40]), ("reed", [68]), ("pipe", [73]), ("brass", [60])]
        rng.shuffle(pool)
        chosen = pool[: parts - 1] + [BASS]
    else:
        pool = VOICES[:]
        rng.shuffle(pool)
        chosen = pool[:parts]
        if parts >= 3 and rng.random() < 0.5:
            chosen[-1] = BASS
    return [(c, rng.choice(p)) for c, p in chosen]


def figure(ch):
    """A chord symbol StemGen and MMA read, or None."""
    try:
        text = harmony.chordSymbolFigureFromChord(ch)
    except Exception:  # music21 raises on clusters it cannot name
        return None
    text = text.replace("-", "b")
    return text if SYMBOL.match(text) else None


def bar_chords(score):
    """Chords per bar from the first full bar, and the pickup's length in quarter notes."""
    chords = score.chordify()
    measures = list(chords.getElementsByClass("Measure"))
    if not measures:
        return None, 0.0
    ts = score.recurse().getElementsByClass(meter.TimeSignature).first()
    bar = ts.barDuration.quarterLength if ts else 4.0
    pickup = 0.0
    if measures[0].duration.quarterLength < bar - 1e-6:
        pickup = measures[0].duration.quarterLength
        measures = measures[1:]
    out = []
    unnamed = 0
    for m in measures:
        # The bar's longest sonority that has a name (passing notes make many chordified
        # slices clusters); the downbeat's wins a tie.
        found = sorted(
            (c for c in m.notes if c.isChord), key=lambda c: -c.duration.quarterLength
        )
        name = next((n for n in map(figure, found) if n), None)
        if name is None:
            unnamed += found != []
            out.append(["N.C."])
            continue
        out.append([name])
    if unnamed * 4 > len(out):  # a harmony we cannot name is better left unknown
        return None, pickup
    return out, pickup


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--limit", type=int, default=0, help="at most this many works")
    args = ap.parse_args()
    paths = work_paths()
    if args.limit:
        paths = paths[: args.limit]
    made = skipped = left_out = failed = single = 0
    args.out.mkdir(parents=True, exist_ok=True)
    not_exported_file = args.out / "not-exported.tsv"
    not_exported = set()
    if not_exported_file.exists():
        not_exported = {l.split("\t", 1)[0] for l in not_exported_file.read_text().splitlines()}
    log = not_exported_file.open("a")

    def leave_out(rel, reason):
        log.write(f"{rel}\t{reason}\n")
        log.flush()

    for i, path in enumerate(paths):
        split = "held-out" if i % 10 == 9 else "train"
        rel = path.split("corpus/", 1)[-1]
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", rel.rsplit(".", 1)[0])
        folder = args.out / split
        folder.mkdir(parents=True, exist_ok=True)
        midi = folder / f"{name}.mid"
        if midi.exists():
            skipped += 1
            continue
        if rel in not_exported:
            left_out += 1
            continue
        try:
            score = corpus.parse(path)
        except Exception as e:  # a file music21 cannot read
            failed += 1
            print(f"{rel}: cannot parse ({e})", file=sys.stderr)
            leave_out(rel, "cannot parse")
            continue
        parts = list(getattr(score, "parts", []))
        if len(parts) < 2:
            single += 1
            leave_out(rel, "one part")
            continue
        rng = random.Random(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little"))
        vocal = any(k in rel for k in ("bach", "palestrina", "monteverdi", "josquin", "luca"))
        quartet = "quartet" in rel.lower() or (
            len(parts) == 4 and any(k in rel for k in ("haydn", "mozart", "beethoven"))
        )
        try:
            for part, (_, program) in zip(parts, programs_for(rng, len(parts), quartet)):
                for old in part.recurse().getElementsByClass(instrument.Instrument):
                    old.activeSite.remove(old)
                part.insert(0, instrument.instrumentFromMidiProgram(program))
            for old in score.recurse().getElementsByClass(tempo.MetronomeMark):
                old.activeSite.remove(old)
            bpm = rng.randint(60, 120) if vocal else rng.randint(70, 140)
            parts[0].insert(0, tempo.MetronomeMark(number=bpm))
            chords, pickup = bar_chords(score)
            score.write("midi", fp=str(midi))
        except Exception as e:
            failed += 1
            midi.unlink(missing_ok=True)
            print(f"{rel}: cannot export ({e})", file=sys.stderr)
            leave_out(rel, "cannot export")
            continue
        if chords:
            sidecar = {"bars": chords, "pickup_beats": pickup}
            (folder / f"{name}.chords.json").write_text(json.dumps(sidecar) + "\n")
        made += 1
    print(
        f"{args.out}: {made} works written, {skipped} already there, {left_out} left out before "
        f"(not-exported.tsv), {single} with one part, "
        f"{failed} failed ({len(paths)} corpus files)"
    )
    log.close()


if __name__ == "__main__":
    main()
