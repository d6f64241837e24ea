#!/usr/bin/env bash
# EnCodec 32 kHz, ours against the PyTorch reference, side by side on this machine.
#
# Rounds alternate the two so that a noisy neighbour slows both alike. In each round the
# reference runs 3 times and keeps its best; `stemgen bench codec --repeats 3` reports its best
# too. Prints one line per round and the median ratios. Run it on a quiet machine (no build,
# no training); it needs the one-time venv of xtask/anchors/README.md.
#
#   xtask/recipes/bench_codec_vs_reference.sh [ROUNDS] [SECONDS]
#
# On an AVX-512 CPU, compare the AVX2 code paths of both sides (the environment reaches both):
#   STEMGEN_MAX_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
#     xtask/recipes/bench_codec_vs_reference.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-5}
seconds=${2:-10}
python=${ANCHOR_PYTHON:-.venv-anchors/bin/python}
anchor=${ANCHOR_SCRIPT:-xtask/anchors/encodec_bench.py}
stemgen=target/release/stemgen
[ -x "$python" ] || { echo "no reference venv at $python (see xtask/anchors/README.md)" >&2; exit 1; }
[ -f "$anchor" ] || { echo "no anchor script at $anchor" >&2; exit 1; }
cargo build --release -q -p stemgen-engine --bin stemgen

"$python" - "$rounds" "$seconds" "$python" "$anchor" "$stemgen" <<'EOF'
import json, statistics, subprocess, sys
rounds, seconds, python, anchor, stemgen = int(sys.argv[1]), sys.argv[2], *sys.argv[3:]
enc_ratios, dec_ratios = [], []
print(f"{'round':>5} {'ref enc':>8} {'ours enc':>8} {'ratio':>6} {'ref dec':>8} {'ours dec':>8} {'ratio':>6} {'matmul GFLOP/s':>15}")
for r in range(rounds):
    refs = [json.loads(subprocess.check_output([python, anchor, seconds]).decode().strip().splitlines()[-1])
            for _ in range(3)]
    ref_enc = min(x["encode_s"] for x in refs)
    ref_dec = min(x["decode_s"] for x in refs)
    ours = json.loads(subprocess.check_output(
        [stemgen, "bench", "codec", "--seconds", seconds, "--repeats", "3", "--json"]).decode())
    enc, dec = ours["encode_seconds"], ours["decode_seconds"]
    enc_ratios.append(ref_enc / enc)
    dec_ratios.append(ref_dec / dec)
    print(f"{r + 1:>5} {ref_enc:>8.3f} {enc:>8.3f} {ref_enc / enc:>6.2f} {ref_dec:>8.3f} {dec:>8.3f} "
          f"{ref_dec / dec:>6.2f} {ours['matmul_gflops']:>15.1f}", flush=True)
print(f"median speed-up over the reference: encode {statistics.median(enc_ratios):.2f}x "
      f"(min {min(enc_ratios):.2f}x), decode {statistics.median(dec_ratios):.2f}x (min {min(dec_ratios):.2f}x)")
EOF
