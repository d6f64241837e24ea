#!/usr/bin/env python3
"""PyTorch anchor for `stemgen bench codec`: encode and decode time of MusicGen's EnCodec
32 kHz (Hugging Face transformers' EncodecModel) on this machine.

Nothing is downloaded: the model is built from an EncodecConfig that spells out the values of
facebook/encodec_32khz, with seeded random weights (its speed does not depend on them).

usage: encodec_bench.py [SECONDS]     (default 10 s of audio)

Prints one JSON line: {"anchor", "audio_s", "threads", "encode_s", "decode_s",
"encode_gflop", "decode_gflop"}. The times are one timed call each after a warm-up call; the
GFLOP figures are PyTorch's FLOP counter, which counts convolutions and matrix products but
not the LSTMs.
"""
import json
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import EncodecConfig, EncodecModel

RATE = 32_000
BANDWIDTH_KBPS = 2.2  # 4 RVQ levels x 11 bits x 50 frames/s

# MusicGen's 32 kHz EnCodec: mono, SEANet with 64 base filters and strides 8-5-4-4 (hop 640,
# 50 frames/s), a 2-layer LSTM, reflect padding, non-causal, weight norm, 4 x 2048 RVQ.
MUSICGEN_32KHZ = dict(
    sampling_rate=RATE,
    audio_channels=1,
    num_filters=64,
    upsampling_ratios=[8, 5, 4, 4],
    codebook_size=2048,
    codebook_dim=128,
    hidden_size=128,
    num_lstm_layers=2,
    num_residual_layers=1,
    residual_kernel_size=3,
    dilation_growth_rate=2,
    kernel_size=7,
    last_kernel_size=7,
    compress=2,
    use_causal_conv=False,
    use_conv_shortcut=False,
    norm_type="weight_norm",
    pad_mode="reflect",
    normalize=False,
    trim_right_ratio=1.0,
    target_bandwidths=[BANDWIDTH_KBPS],
    chunk_length_s=None,
    overlap=None,
)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def gflop(fn):
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    if not seconds > 0:
        sys.exit(f"usage: {sys.argv[0]} [SECONDS>0]")
    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(**MUSICGEN_32KHZ)).eval()
    audio = 0.1 * torch.randn(1, 1, int(RATE * seconds))

    def encode():
        return model.encode(audio, bandwidth=BANDWIDTH_KBPS).audio_codes

    # no_grad rather than inference_mode: the weight-norm parametrizations fail under the FLOP
    # counter in inference mode.
    with torch.no_grad():
        codes = encode()  # warm-up
        model.decode(codes, [None])
        encode_s, codes = timed(encode)
        decode_s, _ = timed(lambda: model.decode(codes, [None]))
        encode_gflop = gflop(encode)
        decode_gflop = gflop(lambda: model.decode(codes, [None]))
    print(json.dumps({
        "anchor": "pytorch-encodec-32khz",
        "audio_s": seconds,
        "threads": torch.get_num_threads(),
        "encode_s": round(encode_s, 3),
        "decode_s": round(decode_s, 3),
        "encode_gflop": round(encode_gflop, 1),
        "decode_gflop": round(decode_gflop, 1),
    }))


if __name__ == "__main__":
    main()
