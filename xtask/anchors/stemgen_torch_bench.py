#!/usr/bin/env python3
"""PyTorch anchor for `stemgen bench model`: seconds per guided sampler iteration of a
StemGen-shaped transformer, timed on this machine with seeded random weights.

The network mirrors engine/src/model/transformer.rs (speed does not depend on the weights):
- per channel (context, target), one embedding table per RVQ level with a MASK row; a
  frame's channel vector is the sum of its level embeddings, width d_model / 2;
- a category embedding (with a NULL row) added to both channels, a learned NULL vector in
  place of a dropped context, and the two channels concatenated to d_model;
- pre-norm bidirectional blocks: RMSNorm, fused QKV projection, rotary positions
  (half-split), scaled_dot_product_attention without a mask, output projection; RMSNorm,
  fused gate/up projection, SwiGLU (hidden width floor(8 d / 3)), down projection;
- a final RMSNorm and one output head per level.

One iteration is what the sampler runs per step: a forward of the classifier-free-guidance
batch of 3 rows (context + NULL category, NULL context + category, both NULL) over all
frames, then the head of one level.

usage: stemgen_torch_bench.py [SIZES] [REPEATS]
  SIZES    comma-separated names from the table below (default: paper-250M,small)
  REPEATS  timed forwards per size after one warm-up; the best is printed (default: 2)

Prints one JSON line per size: {"anchor", "params_m", "frames", "iteration_s"}.
"""
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

LEVELS = 4
CODEBOOK = 2048
CATEGORIES = 18
ROPE_THETA = 10_000.0
EPS = 1e-5

# name -> (d_model, layers, heads, frames); the sizes `stemgen bench model --sizes paper,small`
# builds on the Rust side (20 s and 10 s windows at 50 frames per second).
SIZES = {
    "paper-250M": (1024, 20, 16, 1000),
    "small": (512, 8, 8, 500),
}
ALIASES = {"paper": "paper-250M"}


def rms_norm(dim):
    """PyTorch's own RMSNorm where it has one (2.4 and later), else the same from primitives."""
    if hasattr(nn, "RMSNorm"):
        return nn.RMSNorm(dim, eps=EPS)
    return RMSNorm(dim)


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * self.weight


def rotary_tables(frames, head_dim):
    half = head_dim // 2
    inv_freq = ROPE_THETA ** (-2.0 * torch.arange(half, dtype=torch.float64) / head_dim)
    angles = torch.arange(frames, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().float(), angles.sin().float()


def rotate(x, cos, sin):
    """x [B, H, N, hd], GPT-NeoX half-split layout."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        hidden = 8 * d // 3
        self.attn_norm = rms_norm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.mlp_norm = rms_norm(d)
        self.gate_up = nn.Linear(d, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d, bias=False)

    def forward(self, x, cos, sin):
        b, n, d = x.shape
        qkv = self.qkv(self.attn_norm(x)).view(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, N, hd]
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        attn = F.scaled_dot_product_attention(q, k, v)  # no mask: bidirectional
        x = x + self.out(attn.transpose(1, 2).reshape(b, n, d))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class StemGenShaped(nn.Module):
    def __init__(self, d, layers, heads):
        super().__init__()
        c = d // 2
        self.context_embed = nn.ModuleList(nn.Embedding(CODEBOOK + 1, c) for _ in range(LEVELS))
        self.target_embed = nn.ModuleList(nn.Embedding(CODEBOOK + 1, c) for _ in range(LEVELS))
        self.category_embed = nn.Embedding(CATEGORIES + 1, c)
        self.null_context = nn.Parameter(torch.randn(c) * 0.02)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.final_norm = rms_norm(d)
        self.heads = nn.ModuleList(nn.Linear(d, CODEBOOK, bias=False) for _ in range(LEVELS))
        self.head_dim = d // heads

    def hidden(self, context, target, category, context_dropped):
        """context, target [B, Q, N] ids; category [B]; context_dropped [B] bool."""
        h_ctx = sum(e(context[:, q]) for q, e in enumerate(self.context_embed))
        h_tgt = sum(e(target[:, q]) for q, e in enumerate(self.target_embed))
        keep = (~context_dropped).float()[:, None, None]
        h_ctx = keep * h_ctx + (1.0 - keep) * self.null_context
        e_c = self.category_embed(category)[:, None, :]
        x = torch.cat([h_ctx + e_c, h_tgt + e_c], dim=-1)
        cos, sin = rotary_tables(x.shape[1], self.head_dim)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.final_norm(x)


def time_size(name, repeats):
    d, layers, heads, frames = SIZES[name]
    torch.manual_seed(0)
    model = StemGenShaped(d, layers, heads).eval()
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    context = torch.randint(0, CODEBOOK, (3, LEVELS, frames))
    target = torch.randint(0, CODEBOOK + 1, (3, LEVELS, frames))  # codes and MASK ids
    category = torch.tensor([CATEGORIES, 0, CATEGORIES])  # NULL, real, NULL
    dropped = torch.tensor([False, True, True])

    def iteration():
        return model.heads[0](model.hidden(context, target, category, dropped))

    best = math.inf
    with torch.inference_mode():
        iteration()  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            iteration()
            best = min(best, time.perf_counter() - start)
    return {
        "anchor": "pytorch-stemgen-" + name,
        "params_m": round(params_m, 1),
        "frames": frames,
        "iteration_s": round(best, 3),
    }


def main():
    names = sys.argv[1].split(",") if len(sys.argv) > 1 and sys.argv[1] else list(SIZES)
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    names = [ALIASES.get(n, n) for n in names]
    unknown = [n for n in names if n not in SIZES]
    if unknown or repeats < 1:
        sys.exit(f"usage: {sys.argv[0]} [{','.join(SIZES)}] [REPEATS>=1]")
    for name in names:
        print(json.dumps(time_size(name, repeats)), flush=True)


if __name__ == "__main__":
    main()
