#!/usr/bin/env python3
"""`stemgen train model` for a lent GPU: the same network, objective and data mix in PyTorch.

Why a second implementation: the engine's `--features cuda` build needs the CUDA toolkit
where it is compiled (candle compiles its kernels with nvcc), and our development machines
have none; the GPU machines we are lent have PyTorch. This script reads a model directory
(`config.json` + `model.safetensors`, or only its config with `--random-init`) and a pack of token caches (`pack_caches.py`), trains,
and writes model directories that `stemgen` loads unchanged (the same tensor names, f16 like
`stemgen export`). It is checked against the engine by `--check`: the held-out accuracy of a
model computed here must match `stemgen validate` on the same cache (see docs/TRAINING.md).

What it mirrors (engine/src/model/transformer.rs, model/objective.rs, train/model.rs,
train/features.rs): level embeddings summed per channel, the level-0 gain embedding, the
context-feature projection added to the context channel before the NULL-context blend, the
category added to both channels, pre-norm bidirectional blocks with half-split rotary
positions and SwiGLU, one head per level; masks drawn per example (level uniform, share
cos(u), whole level 0 for a share of examples), context and category dropout, context-onset
loss weights, measured features / chord templates / no features per example, AdamW with
decoupled weight decay and a higher rate for the feature projection, global-norm clipping.
Batches are drawn by torch's RNG, not the engine's: a run here is not bit-identical to one
there, only the same objective.

    python3 train_twin.py --model DIR --pack pack.xz --out OUT [--steps N --minutes M ...]
    python3 train_twin.py --model DIR --random-init ...     # from scratch, DIR's config
    python3 train_twin.py --model DIR --pack pack.xz --check   # held-out accuracy only
"""
import argparse
import json
import lzma
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

RMS_EPS = 1e-5
ONSET_GAIN_STEPS = 3
NP_DTYPES = {"F16": np.float16, "F32": np.float32, "BF16": None}


# ---------------------------------------------------------------- safetensors (numpy only)
def load_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        blob = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, spec in header.items():
        if NP_DTYPES.get(spec["dtype"]) is None:
            sys.exit(f"{path}: tensor {name} has dtype {spec['dtype']}, expected F16 or F32")
        s, e = spec["data_offsets"]
        a = np.frombuffer(blob[s:e], NP_DTYPES[spec["dtype"]]).reshape(spec["shape"])
        out[name] = torch.from_numpy(a.astype(np.float32))
    return out


def save_safetensors(tensors, path):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = tensors[name].detach().float().cpu().numpy().astype(np.float16)
        b = a.tobytes()
        header[name] = {"dtype": "F16", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    head = json.dumps(header).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    os.replace(path + ".tmp", path)


# ---------------------------------------------------------------- the network
class StemGen(torch.nn.Module):
    """Parameters are named exactly as the engine's safetensors keys."""

    def __init__(self, cfg, weights):
        super().__init__()
        self.cfg = cfg
        known = set()

        def param(name):
            if name not in weights:
                sys.exit(f"model.safetensors lacks {name}")
            known.add(name)
            p = torch.nn.Parameter(weights[name].clone())
            self.register_parameter(name.replace(".", "__"), p)
            return p

        self.names = {}
        for name in sorted(weights):
            self.names[name] = param(name)
        extra = set(weights) - known
        if extra:
            sys.exit(f"model.safetensors has unknown tensors {sorted(extra)}")
        self.levels = cfg["levels"]
        self.size = cfg["codebook_size"]
        self.heads_n = cfg["n_heads"]
        self.layers = cfg["n_layers"]
        self.shapes = self.size // cfg["gain_steps"] if cfg.get("gain_steps", 0) else 0
        d = cfg["d_model"]
        hd = d // self.heads_n
        inv = 1.0 / cfg["rope_theta"] ** (torch.arange(hd // 2, dtype=torch.float64) * 2 / hd)
        ang = torch.arange(cfg["max_frames"], dtype=torch.float64)[:, None] * inv[None]
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)
        rows = self.size + 1
        self.register_buffer("offsets", (torch.arange(self.levels) * rows)[None, :, None], persistent=False)

    def p(self, name):
        return self.names[name]

    def rms(self, x, name):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + RMS_EPS)).to(x.dtype) * self.p(name).to(x.dtype)

    def rotary(self, x, n):
        half = x.shape[-1] // 2
        cos, sin = self.cos[:n].to(x.dtype), self.sin[:n].to(x.dtype)
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)

    def hidden(self, context, target, category, dropped, features):
        """context/target [B, Q, N] long, category [B] long, dropped [B] float, features
        [B, N, F] float or None -> final-normalised hidden states [B, N, d]."""
        b, q, n = context.shape
        ce, te = self.p("context_embed"), self.p("target_embed")
        c = ce.shape[-1]
        ctx = ce.reshape(-1, c)[(context + self.offsets).reshape(-1)].reshape(b, q, n, c).sum(1)
        tgt = te.reshape(-1, c)[(target + self.offsets).reshape(-1)].reshape(b, q, n, c).sum(1)
        if self.shapes:
            g = self.p("gain_embed")
            ctx = ctx + g[0][context[:, 0] // self.shapes]
            tgt = tgt + g[1][target[:, 0] // self.shapes]
        if features is not None:
            ctx = ctx + features @ self.p("context_features_proj")
        d = dropped[:, None, None]
        ctx = ctx * (1 - d) + self.p("null_context")[None, None] * d
        cat = self.p("category_embed")[category][:, None]
        x = torch.cat([ctx + cat, tgt + cat], -1)
        h = self.heads_n
        for i in range(self.layers):
            pre = f"blocks.{i}."
            y = self.rms(x, pre + "attn_norm.weight")
            qkv = (y @ self.p(pre + "attn.qkv.weight").t()).reshape(b, n, 3, h, -1)
            qq, kk, vv = (qkv[:, :, j].transpose(1, 2) for j in range(3))
            qq, kk = self.rotary(qq, n), self.rotary(kk, n)
            if hasattr(F, "scaled_dot_product_attention"):
                a = F.scaled_dot_product_attention(qq, kk, vv)
            else:
                s = (qq / math.sqrt(qq.shape[-1])) @ kk.transpose(-1, -2)
                a = s.softmax(-1) @ vv
            a = a.transpose(1, 2).reshape(b, n, -1)
            x = x + a @ self.p(pre + "attn.out.weight").t()
            y = self.rms(x, pre + "mlp_norm.weight")
            gu = y @ self.p(pre + "mlp.gate_up.weight").t()
            hid = gu.shape[-1] // 2
            x = x + (F.silu(gu[..., :hid]) * gu[..., hid:]) @ self.p(pre + "mlp.down.weight").t()
        return self.rms(x, "final_norm.weight")

    def logits(self, hidden, level):
        return hidden @ self.p(f"heads.{level}.weight").t().to(hidden.dtype)


# ---------------------------------------------------------------- data
class Pack:
    def __init__(self, path, device):
        raw = lzma.decompress(open(path, "rb").read())
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        pos, arrays = 8 + n, {}
        for name, (dtype, shape) in header["arrays"].items():
            count = int(np.prod(shape))
            a = np.frombuffer(raw, np.dtype(dtype), count, pos).reshape(shape)
            pos += a.nbytes
            arrays[name] = a
        lv = (1 << header["feature_bits"]) - 1
        lo = torch.tensor([0.0] * 25 + [-1.0, -1.0])
        hi = torch.ones(27)
        t = lambda a, dt: torch.from_numpy(a.astype(dt)).to(device)
        self.context = t(arrays["context"], np.int64)
        self.target = t(arrays["target"], np.int64)
        self.category = t(arrays["category"], np.int64)
        self.has_chords = t(arrays["has_chords"], np.int64).bool()
        feats = torch.from_numpy(arrays["features"].astype(np.float32)).transpose(1, 2)  # [P, N, 27]
        self.features = (feats / lv * (hi - lo) + lo).to(device)
        templates = torch.zeros(len(self.category), feats.shape[1], 24)
        rows = torch.from_numpy(arrays["template_row"].astype(np.int64))
        templates[rows] = torch.from_numpy(arrays["template"].astype(np.float32))
        self.templates = templates.to(device)
        song = arrays["song"].astype(np.int64)
        held = song % 10 == 0
        self.train_idx = torch.from_numpy(np.nonzero(~held)[0]).to(device)
        self.val_idx = torch.from_numpy(np.nonzero(held)[0]).to(device)
        self.sources = header["sources"]

    def __len__(self):
        return len(self.category)


def batch_features(pack, idx, template_share, drop_share, gen):
    f = pack.features[idx].clone()
    b = len(idx)
    dropped = torch.rand(b, generator=gen, device=f.device) < drop_share
    use_t = pack.has_chords[idx] & (torch.rand(b, generator=gen, device=f.device) < template_share)
    f[use_t, :, :24] = pack.templates[idx][use_t]
    f[dropped] = 0.0
    return f


def draw_masks(cfg, b, n, gen, device, whole_level0_share):
    """level [B], masked [B, N] bool, context dropped [B], category dropped [B]."""
    level = torch.randint(0, cfg["levels"], (b,), generator=gen, device=device)
    ratio = torch.cos(torch.rand(b, generator=gen, device=device) * (math.pi / 2))
    masked = torch.rand(b, n, generator=gen, device=device) < ratio[:, None]
    none = ~masked.any(1)
    if none.any():
        pick = torch.randint(0, n, (b,), generator=gen, device=device)
        masked[none, pick[none]] = True
    ctx_drop = torch.rand(b, generator=gen, device=device) < cfg["p_ctx"]
    cat_drop = torch.rand(b, generator=gen, device=device) < cfg["p_cat"]
    if whole_level0_share > 0:
        whole = torch.rand(b, generator=gen, device=device) < whole_level0_share
        level[whole] = 0
        masked[whole] = True
    return level, masked, ctx_drop, cat_drop


def objective(model, pack, idx, masks, features, onset_weight):
    cfg = model.cfg
    level, masked, ctx_drop, cat_drop = masks
    ctx, tgt = pack.context[idx], pack.target[idx]
    b, q, n = tgt.shape
    qs = torch.arange(q, device=tgt.device)[None, :, None]
    hide = (qs > level[:, None, None]) | ((qs == level[:, None, None]) & masked[:, None, :])
    seen = torch.where(hide, torch.full_like(tgt, cfg["codebook_size"]), tgt)
    category = torch.where(cat_drop, torch.full_like(pack.category[idx], cfg["n_categories"]), pack.category[idx])
    hidden = model.hidden(ctx, seen, category, ctx_drop.float(), features)
    weights = torch.ones(b, n, device=tgt.device)
    if onset_weight != 1.0:
        gain = ctx[:, 0] // model.shapes
        rise = torch.zeros_like(masked)
        rise[:, 1:] = gain[:, 1:] >= gain[:, :-1] + ONSET_GAIN_STEPS
        weights[rise] = onset_weight
    total_nll, total_w, hits, count = 0.0, 0.0, 0, 0
    per_level = []
    for lv in range(q):
        sel = (level == lv)[:, None] & masked
        if not sel.any():
            per_level.append(None)
            continue
        rows = hidden[sel]
        labels = tgt[:, lv][sel]
        logits = model.logits(rows, lv).float()
        nll = F.cross_entropy(logits, labels, reduction="none")
        w = weights[sel]
        total_nll = total_nll + (nll * w).sum()
        total_w = total_w + w.sum()
        correct = (logits.argmax(-1) == labels)
        hits += int(correct.sum())
        count += int(sel.sum())
        per_level.append((float(nll.sum()), int(correct.sum()), int(sel.sum())))
    return total_nll / total_w, hits / max(count, 1), per_level


@torch.no_grad()
def validate(model, pack, batches, batch_size, whole_level, device, autocast):
    """Per-level held-out accuracy and nats per masked token: context and category kept,
    measured features, masks from a fixed seed."""
    gen = torch.Generator(device=device)
    gen.manual_seed(12345)
    model.eval()
    acc, loss = [], []
    val = pack.val_idx
    for lv in range(model.cfg["levels"]):
        nll, hit, cnt = 0.0, 0, 0
        for k in range(batches):
            idx = val[(torch.arange(batch_size, device=device) + k * batch_size) % len(val)]
            b, n = len(idx), pack.target.shape[-1]
            level, masked, _, _ = draw_masks(model.cfg, b, n, gen, device, 0.0)
            level[:] = lv
            if whole_level:
                masked[:] = True
            none = torch.zeros(b, dtype=torch.bool, device=device)
            with autocast():
                _, _, per = objective(model, pack, idx, (level, masked, none, none), pack.features[idx], 1.0)
            s = per[lv]
            nll, hit, cnt = nll + s[0], hit + s[1], cnt + s[2]
        acc.append(hit / max(cnt, 1))
        loss.append(nll / max(cnt, 1))
    model.train()
    return acc, loss


def random_weights(cfg, seed):
    """Seeded random weights with the engine's initialisation (`ModelCheckpoint::random`):
    token embeddings N(0, 1/sqrt(Q)), category and NULL context N(0, 1), gain embedding and
    feature projection zero, norms one, linears LeCun-normal (output projections into the
    residual stream scaled by 1/sqrt(2 L), heads by 0.2). Not the engine's random stream."""
    g = torch.Generator().manual_seed(seed)
    q, rows, d = cfg["levels"], cfg["codebook_size"] + 1, cfg["d_model"]
    c, layers = d // 2, cfg["n_layers"]
    mult = cfg["ffn_multiple_of"]
    hidden = -(-int(8 * d / 3) // mult) * mult
    res = 1.0 / math.sqrt(2 * layers)
    randn = lambda shape, std: torch.randn(shape, generator=g) * std
    lin = lambda out, inp, scale=1.0: randn((out, inp), scale / math.sqrt(inp))
    w = {
        "context_embed": randn((q, rows, c), 1 / math.sqrt(q)),
        "target_embed": randn((q, rows, c), 1 / math.sqrt(q)),
        "category_embed": randn((cfg["n_categories"] + 1, c), 1.0),
        "null_context": randn((c,), 1.0),
        "final_norm.weight": torch.ones(d),
    }
    if cfg.get("gain_steps", 0):
        w["gain_embed"] = torch.zeros(2, cfg["gain_steps"] + 1, c)
    w["context_features_proj"] = torch.zeros(27, c)
    for i in range(layers):
        pre = f"blocks.{i}."
        w[pre + "attn_norm.weight"] = torch.ones(d)
        w[pre + "mlp_norm.weight"] = torch.ones(d)
        w[pre + "attn.qkv.weight"] = lin(3 * d, d)
        w[pre + "attn.out.weight"] = lin(d, d, res)
        w[pre + "mlp.gate_up.weight"] = lin(2 * hidden, d)
        w[pre + "mlp.down.weight"] = lin(d, hidden, res)
    for lv in range(q):
        w[f"heads.{lv}.weight"] = lin(cfg["codebook_size"], d, 0.2)
    return w


def export(model, cfg, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    save_safetensors(dict(model.names), os.path.join(out_dir, "model.safetensors"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model directory to start from (or whose config to use)")
    ap.add_argument("--random-init", action="store_true", help="start from seeded random weights of --model's config")
    ap.add_argument("--pack", required=True)
    ap.add_argument("--out")
    ap.add_argument("--check", action="store_true", help="print held-out accuracy and stop")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--minutes", type=float, default=0, help="stop (and export) after this long")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--final-lr-share", type=float, default=0.1, help="cosine decay to this share")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--clip-norm", type=float, default=1.0)
    ap.add_argument("--whole-level0-share", type=float, default=0.4)
    ap.add_argument("--context-onset-weight", type=float, default=4.0)
    ap.add_argument("--chord-template-share", type=float, default=0.3)
    ap.add_argument("--feature-drop-share", type=float, default=0.1)
    ap.add_argument("--features-lr-scale", type=float, default=10.0)
    ap.add_argument("--validate-every", type=int, default=250)
    ap.add_argument("--validation-batches", type=int, default=8)
    ap.add_argument("--keep", type=int, default=3, help="export the best this many validations")
    ap.add_argument("--seed", type=int, default=21)
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        import contextlib
        autocast = contextlib.nullcontext
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    if cfg.get("context_features") != ["chroma", "bass_chroma", "onset", "beat_phase"]:
        sys.exit(f"{args.model}: this trainer needs a model with all four context features")
    if args.random_init:
        weights = random_weights(cfg, args.seed)
    else:
        weights = load_safetensors(os.path.join(args.model, "model.safetensors"))
    model = StemGen(cfg, weights).to(device)
    t0 = time.time()
    pack = Pack(args.pack, device)
    print(f"pack: {len(pack)} pairs ({len(pack.train_idx)} train, {len(pack.val_idx)} held out), "
          f"{time.time() - t0:.1f} s, device {device}", flush=True)
    acc, loss = validate(model, pack, args.validation_batches, args.batch_size, False, device, autocast)
    wacc, wloss = validate(model, pack, args.validation_batches, args.batch_size, True, device, autocast)
    print(json.dumps({"step": 0, "val_acc": acc, "val_loss": loss, "whole_acc": wacc, "whole_loss": wloss}), flush=True)
    if args.check:
        return
    if not args.out:
        sys.exit("--out is required to train")
    os.makedirs(args.out, exist_ok=True)
    proj = model.names["context_features_proj"]
    rest = [p for n, p in model.names.items() if n != "context_features_proj"]
    opt = torch.optim.AdamW([{"params": rest, "lr_scale": 1.0},
                             {"params": [proj], "lr_scale": args.features_lr_scale}],
                            lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=args.weight_decay)
    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed)
    frames = pack.target.shape[-1]
    best = []  # (score, step, dir)
    log = open(os.path.join(args.out, "log.jsonl"), "a")
    start, tokens = time.time(), 0
    for step in range(args.steps):
        if step < args.warmup:
            lr = args.lr * (step + 1) / args.warmup
        else:
            t = (step - args.warmup) / max(1, args.steps - args.warmup)
            lr = args.lr * (args.final_lr_share + (1 - args.final_lr_share) * 0.5 * (1 + math.cos(math.pi * t)))
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        pick = torch.randint(0, len(pack.train_idx), (args.batch_size,), generator=gen, device=device)
        idx = pack.train_idx[pick]
        masks = draw_masks(cfg, len(idx), frames, gen, device, args.whole_level0_share)
        feats = batch_features(pack, idx, args.chord_template_share, args.feature_drop_share, gen)
        with autocast():
            loss, acc, _ = objective(model, pack, idx, masks, feats, args.context_onset_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(model.names.values()), args.clip_norm)
        opt.step()
        tokens += args.batch_size * frames * cfg["levels"]
        done = step + 1
        out_of_time = False
        if args.minutes and done == 100:
            # Fit the schedule to the time: the cosine should end when the time does
            # (validation and export take about a tenth on top of the steps).
            per_step = (time.time() - start) / done
            fits = int(args.minutes * 60 / (per_step * 1.1))
            if fits < args.steps:
                print(f"{per_step * 1000:.0f} ms per step: {fits} steps fit in {args.minutes} min", flush=True)
                args.steps = max(fits, args.warmup + 1)
        if done >= args.steps:
            out_of_time = True
        out_of_time = out_of_time or (args.minutes and time.time() - start > args.minutes * 60)
        if done % 50 == 0:
            el = time.time() - start
            print(f"step {done} lr {lr:.2e} loss {float(loss):.4f} acc {acc:.3f} norm {float(norm):.2f} "
                  f"{tokens / el:.0f} tok/s {el:.0f} s", flush=True)
        if done % args.validate_every == 0 or done == args.steps or out_of_time:
            vacc, vloss = validate(model, pack, args.validation_batches, args.batch_size, False, device, autocast)
            wacc, wloss = validate(model, pack, args.validation_batches, args.batch_size, True, device, autocast)
            score = sum(vloss) / len(vloss)
            rec = {"step": done, "val_acc": vacc, "val_loss": vloss, "whole_acc": wacc, "whole_loss": wloss,
                   "score": score, "seconds": time.time() - start}
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if len(best) < args.keep or score < max(best)[0]:
                d = os.path.join(args.out, f"step-{done}")
                export(model, cfg, d)
                best.append((score, done, d))
                best.sort()
                while len(best) > args.keep:
                    _, _, gone = best.pop()
                    for f in os.listdir(gone):
                        os.remove(os.path.join(gone, f))
                    os.rmdir(gone)
        if out_of_time:
            break
    print("kept:", [(round(s, 4), st) for s, st, _ in best], flush=True)


if __name__ == "__main__":
    main()
