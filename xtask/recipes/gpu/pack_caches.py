#!/usr/bin/env python3
"""Packs StemGen token caches (`stemgen data cache` shards) into one small file for
`train_twin.py` on a lent GPU machine, which receives at most a few tens of MB.

    python3 xtask/recipes/gpu/pack_caches.py --out gpu-data/pack.xz CACHE_DIR [CACHE_DIR ...]

What is kept, and how (numpy only, no safetensors package needed):
- context and target codes as u16 (codes are < 1024), category, song index, chord flag;
- the 27 measured context features (chroma, bass chroma, onset, beat phase) quantised to
  `--feature-bits` (6 by default: a step of 1/63, far below what separates two chroma
  bins; beat phase sin/cos are scaled from [-1, 1]), each feature's 500 frames side by side
  so that lzma finds their slow changes;
- the chord templates (24 values per frame) as f16, only for pairs whose song has chords.
`--max-pairs N` keeps the first N pairs of each cache folder (in file order), so a pack can
be sized to what the machine accepts. Held-out songs (song index divisible by 10) are kept:
the trainer validates on them as `stemgen train model` does.
"""
import argparse
import json
import lzma
import os
import struct
import sys

import numpy as np

FEATURE_LO = np.array([0.0] * 25 + [-1.0, -1.0], np.float32)
FEATURE_HI = np.ones(27, np.float32)
DTYPES = {"U32": np.uint32, "F16": np.float16, "F32": np.float32}


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        blob = f.read()
    meta = header.pop("__metadata__", {})
    arrays = {}
    for name, spec in header.items():
        start, end = spec["data_offsets"]
        arrays[name] = np.frombuffer(blob[start:end], DTYPES[spec["dtype"]]).reshape(spec["shape"])
    return meta, arrays


def cache_files(folder):
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    if not files:
        sys.exit(f"{folder}: no cache shards (*.safetensors)")
    return [os.path.join(folder, f) for f in files]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--feature-bits", type=int, default=6)
    ap.add_argument("--max-pairs", type=int, default=0, help="per cache folder, 0 = all")
    ap.add_argument("caches", nargs="+")
    args = ap.parse_args()
    levels = (1 << args.feature_bits) - 1
    parts = {k: [] for k in ("context", "target", "category", "song", "source", "has_chords", "features")}
    templates, template_rows = [], []
    total = 0
    for source, folder in enumerate(args.caches):
        kept = 0
        for path in cache_files(folder):
            meta, a = read_safetensors(path)
            if int(meta["levels"]) != 5 or int(meta["codebook_size"]) != 1024 or int(meta["crop_frames"]) != 500:
                sys.exit(f"{path}: expected 5 levels x 1024 codes x 500 frames, got {meta}")
            if "features" not in a:
                sys.exit(f"{path}: no context features in this cache")
            p = a["category"].shape[0]
            if args.max_pairs:
                p = min(p, args.max_pairs - kept)
            if p <= 0:
                break
            parts["context"].append(a["context"][:p].astype(np.uint16))
            parts["target"].append(a["target"][:p].astype(np.uint16))
            parts["category"].append(a["category"][:p].astype(np.uint8))
            parts["song"].append(a["song_index"][:p].astype(np.uint32))
            parts["source"].append(np.full(p, source, np.uint8))
            chords = a["has_chords"][:p].astype(np.uint8)
            parts["has_chords"].append(chords)
            f = a["features"][:p].astype(np.float32)
            q = np.round((f - FEATURE_LO) / (FEATURE_HI - FEATURE_LO) * levels)
            parts["features"].append(np.clip(q, 0, levels).astype(np.uint8).transpose(0, 2, 1))
            rows = np.nonzero(chords)[0]
            if len(rows):
                templates.append(a["chord_template"][:p][rows].astype(np.float16))
                template_rows.append(rows + total)
            kept += p
            total += p
        print(f"{folder}: {kept} pairs", file=sys.stderr)
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    arrays["template"] = np.concatenate(templates) if templates else np.zeros((0, 500, 24), np.float16)
    arrays["template_row"] = (np.concatenate(template_rows) if template_rows else np.zeros(0)).astype(np.uint32)
    header = {"feature_bits": args.feature_bits, "sources": args.caches,
              "arrays": {k: [str(v.dtype), list(v.shape)] for k, v in arrays.items()}}
    body = b"".join(np.ascontiguousarray(v).tobytes() for v in arrays.values())
    head = json.dumps(header).encode()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
    with open(args.out, "wb") as f:
        f.write(lzma.compress(struct.pack("<Q", len(head)) + head + body, filters=filters))
    print(f"{args.out}: {total} pairs, {os.path.getsize(args.out) / 1e6:.1f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
