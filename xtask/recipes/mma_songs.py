#!/usr/bin/env python3
"""Accompaniment arrangements written by musicians: every groove of MMA's library (Debian
`mma`, GPL; its grooves were written by many contributors) played over a chord chart, as
multitrack MIDI with the exact chords per bar beside it, then rendered into song folders by
`stemgen data midi`.

For each groove (every `DefGroove` of /usr/share/mma/lib, variants such as Intro, Fill, Sus
and End included) this writes a chart in a random key and tempo, 30-60 s long, with a
progression drawn from common pop, jazz, blues and minor-key cadences and the synthetic song
plans' own progressions; `mma` turns it into `<name>.mid`, and `<name>.chords.json` records the
chords of every bar (what the harmony conditioning trains on). Whole style files are held out
(every tenth, sorted by name): their grooves go to `held-out/` instead of `train/`.

Resumable: charts whose MIDI file exists are skipped. Standard library only.

    python3 xtask/recipes/mma_songs.py --out work-data/mma/midi [--limit N]
    target/release/stemgen data midi --in work-data/mma/midi/train --out work-data/mma/songs/train
"""
import argparse
import hashlib
import json
import pathlib
import random
import re
import subprocess
import sys

LIB = pathlib.Path("/usr/share/mma/lib")
NAMES = ["C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B"]

# Progressions as (semitones above the tonic, quality) per chord. Qualities are written the
# way both MMA and StemGen's chord parser read them.
MAJOR = [
    [(0, ""), (7, ""), (9, "m"), (5, "")],  # I V vi IV
    [(0, ""), (9, "m"), (5, ""), (7, "")],  # I vi IV V
    [(9, "m"), (5, ""), (0, ""), (7, "")],  # vi IV I V
    [(0, ""), (5, ""), (7, ""), (5, "")],  # I IV V IV
    [(0, ""), (5, ""), (0, ""), (7, "")],  # I IV I V
    [(2, "m"), (7, ""), (0, ""), (0, "")],  # ii V I I
    [(0, ""), (4, "m"), (5, ""), (7, "")],  # I iii IV V
    [(5, ""), (0, ""), (7, ""), (9, "m")],  # IV I V vi
    [(2, "m7"), (7, "7"), (0, "maj7"), (0, "maj7")],  # ii7 V7 Imaj7
    [(0, "maj7"), (9, "m7"), (2, "m7"), (7, "7")],  # I vi ii V
    [(4, "m7"), (9, "m7"), (2, "m7"), (7, "7")],  # iii vi ii V
    [(0, ""), (10, ""), (5, ""), (0, "")],  # I bVII IV I
    [(0, "6"), (9, "m7"), (2, "m7"), (7, "7")],  # I6 vi ii V
]
MINOR = [
    [(0, "m"), (8, ""), (3, ""), (10, "")],  # i VI III VII
    [(0, "m"), (5, "m"), (7, "m"), (0, "m")],  # i iv v i
    [(0, "m"), (10, ""), (8, ""), (10, "")],  # i VII VI VII
    [(0, "m"), (5, "m"), (10, ""), (3, "")],  # i iv VII III
    [(0, "m"), (8, ""), (5, "m"), (7, "")],  # i VI iv V
    [(2, "m7b5"), (7, "7"), (0, "m"), (0, "m")],  # ii7b5 V7 i
    [(0, "m7"), (5, "m7"), (7, "7"), (0, "m7")],  # i7 iv7 V7 i7
    [(0, "m"), (7, ""), (8, ""), (7, "")],  # i V VI V
]
BLUES = [(0, "7")] * 4 + [(5, "7")] * 2 + [(0, "7")] * 2 + [(7, "7"), (5, "7"), (0, "7"), (7, "7")]


def grooves():
    """(style file, groove name, beats per bar) for every DefGroove in the library."""
    out = []
    for path in sorted(LIB.rglob("*.mma")):
        beats = 4
        for line in path.read_text(errors="replace").splitlines():
            words = line.split()
            if len(words) >= 2 and words[0].lower() == "time":
                try:
                    beats = int(float(words[1]))
                except ValueError:
                    pass
            if len(words) >= 2 and words[0].lower() == "defgroove":
                out.append((path, words[1], beats))
    return out


def chart(rng, groove, beats):
    """An MMA chart and its chords per bar."""
    tempo = rng.randint(70, 160)
    tonic = rng.randrange(12)
    kind = rng.random()
    if kind < 0.12:
        prog = BLUES
    elif kind < 0.6:
        prog = rng.choice(MAJOR)
    else:
        prog = rng.choice(MINOR)
    seconds = rng.uniform(30, 60)
    bars = max(4, round(seconds / (beats * 60.0 / tempo)))
    two_per_bar = beats == 4 and len(prog) == 4 and rng.random() < 0.25
    symbols = [NAMES[(tonic + s) % 12] + q for s, q in prog]
    per_bar = []
    i = 0
    for _ in range(bars):
        if two_per_bar:
            per_bar.append([symbols[i % len(symbols)], symbols[(i + 1) % len(symbols)]])
            i += 2
        else:
            per_bar.append([symbols[i % len(symbols)]])
            i += 1
    lines = [f"Tempo {tempo}", f"Groove {groove}"]
    for n, chords in enumerate(per_bar, start=1):
        if len(chords) == 2:
            lines.append(f"{n} {chords[0]} / {chords[1]} /")
        else:
            lines.append(f"{n} {chords[0]}")
    return "\n".join(lines) + "\n", per_bar


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--limit", type=int, default=0, help="at most this many grooves")
    args = ap.parse_args()
    if not LIB.is_dir():
        sys.exit(f"{LIB}: no MMA library; install it with `apt-get install mma`")
    found = grooves()
    styles = sorted({str(p) for p, _, _ in found})
    held_out = {s for i, s in enumerate(styles) if i % 10 == 9}
    if args.limit:
        found = found[: args.limit]
    made = skipped = failed = 0
    for path, groove, beats in found:
        split = "held-out" if str(path) in held_out else "train"
        style = path.relative_to(LIB).with_suffix("").as_posix().replace("/", "-")
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{style}--{groove}")
        folder = args.out / split
        folder.mkdir(parents=True, exist_ok=True)
        midi = folder / f"{name}.mid"
        if midi.exists():
            skipped += 1
            continue
        seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
        text, per_bar = chart(random.Random(seed), groove, beats)
        source = folder / f"{name}.mma"
        source.write_text(text)
        run = subprocess.run(
            ["mma", "-f", str(midi), str(source)], capture_output=True, text=True
        )
        if run.returncode != 0 or not midi.exists():
            failed += 1
            print(f"{name}: mma failed: {run.stderr.strip()[-300:]}", file=sys.stderr)
            midi.unlink(missing_ok=True)
            continue
        (folder / f"{name}.chords.json").write_text(json.dumps({"bars": per_bar}) + "\n")
        made += 1
    print(
        f"{args.out}: {made} grooves written, {skipped} already there, {failed} failed "
        f"({len(found)} grooves in {len(styles)} style files, {len(held_out)} styles held out)"
    )


if __name__ == "__main__":
    main()
