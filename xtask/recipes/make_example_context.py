#!/usr/bin/env python3
"""Writes the example context shipped in assets/examples/: a few bars of a held-out synthetic
song (rendered by `stemgen data synth` with FluidR3, see train_default.sh) mixed from chosen
stems, mono 16-bit WAV at the song's rate. Standard library only.

usage: make_example_context.py SONG_DIR OUT.wav START_BAR BARS STEM [STEM ...]
"""
import array
import json
import sys
import wave

song, out, start_bar, bars, stems = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
meta = json.load(open(f"{song}/metadata.json"))
beats = meta["time_signature"][0]
bar_s = beats * 60.0 / meta["tempo_bpm"]
rate = meta["sample_rate"]
a, n = round(start_bar * bar_s * rate), round(bars * bar_s * rate)
mix = [0.0] * n
for stem in stems:
    with wave.open(f"{song}/{stem}.wav") as w:
        assert w.getsampwidth() == 2 and w.getframerate() == rate, f"{stem}: expected 16-bit at {rate} Hz"
        ch = w.getnchannels()
        w.setpos(a)
        pcm = array.array("h", w.readframes(n))
    for i in range(n):
        mix[i] += sum(pcm[i * ch + c] for c in range(ch)) / (ch * 32768.0)
peak = max(1e-9, max(abs(v) for v in mix))
gain = min(1.0, 0.89 / peak)  # at most -1 dBFS, never louder than the song
with wave.open(out, "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(array.array("h", (int(round(v * gain * 32767)) for v in mix)).tobytes())
print(f"{out}: {bars} bars of {song} from bar {start_bar} ({meta['tempo_bpm']} BPM, {meta['key']} {meta['mode']}), stems {', '.join(stems)}")
