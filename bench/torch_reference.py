#!/usr/bin/env python3
"""Plain-PyTorch reference of the dsmoe model and training step, for CPU throughput comparison.

Reads a dsmoe YAML config (keys: docs/config.md, math: docs/model.md, both in this repository),
builds the same model as an ordinary eager nn.Module (no torch.compile, no fused kernels of our own)
and times WARMUP + STEPS optimizer steps on random byte tokens.

usage: /usr/bin/python3 bench/torch_reference.py CONFIG [--steps 5] [--warmup 1] [--threads T]

The last line printed is one JSON object:
  {"impl": "pytorch", "torch_version", "tokens_per_s", "ms_per_step", "threads", "steps", ...}
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

# ---------------------------------------------------------------------------------------------
# Config: the keys of docs/config.md (not its Extensions) with their defaults; the YAML overrides them.

DEFAULTS = {
    "name": "run",
    "seed": 1234,
    "backend": "auto",
    "precision": "fp32",
    "model": {
        "vocab_size": 0, "d_model": 256, "n_layers": 4, "n_heads": 4, "seq_len": 256,
        "first_dense_layers": 1, "dense_hidden": 1024, "rope_theta": 10000.0, "norm_eps": 1e-6,
        "tie_embeddings": False, "init_std": 0.02,
    },
    "moe": {
        "n_routed": 16, "n_shared": 1, "top_k": 2, "expert_hidden": 256, "score": "softmax",
        "norm_topk": False, "router_noise": 0.0, "capacity_factor": 0.0, "route_devices": 0,
    },
    "balance": {
        "expert_alpha": 0.01, "device_alpha": 0.0, "device_groups": 0, "seq_alpha": 0.0,
        "comm_alpha": 0.0, "bias_rate": 0.0,
    },
    "train": {
        "steps": 1000, "batch_size": 32, "micro_batches": 1, "lr": 1e-3, "min_lr": 1e-4,
        "warmup_steps": 100, "schedule": "cosine", "beta1": 0.9, "beta2": 0.95, "eps": 1e-8,
        "weight_decay": 0.1, "grad_clip": 1.0, "log_every": 10, "eval_every": 100,
        "eval_batches": 8, "checkpoint_every": 0,
    },
    "data": {"path": "default", "val_fraction": 0.005, "shuffle": True},
    "parallel": {"expert_parallel": 0},
    "out": "runs/run",
}


class Cfg(dict):
    """dict with attribute access, nested."""

    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError as e:
            raise AttributeError(k) from e


def resolve_vocab(data_path):
    """vocab_size 0 = from the data, as dsmoe does: max token + 1 for an llm.c .bin file, else 256.
    Only the vocabulary comes from the data; the benchmark's tokens are random."""
    if data_path == "default":
        d = os.environ.get("DSMOE_DATA_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
        data_path = os.path.join(d, "gcide.bin")
    if not data_path.endswith(".bin"):
        return 256
    try:
        import numpy as np
        return int(np.fromfile(data_path, dtype=np.uint16, offset=256 * 4).max()) + 1
    except (OSError, ValueError) as e:
        print(f"note: cannot read {data_path} ({e}); vocab_size 256", file=sys.stderr)
        return 256


def load_config(path):
    with open(path) as f:
        user = yaml.safe_load(f) or {}
    cfg = {}
    for k, v in DEFAULTS.items():
        if isinstance(v, dict):
            sec = dict(v)
            given = user.get(k) or {}
            unknown = set(given) - set(v)
            if unknown:
                sys.exit(f"{path}: unknown key(s) in '{k}': {sorted(unknown)}")
            sec.update(given)
            cfg[k] = Cfg(sec)
        else:
            cfg[k] = user.get(k, v)
    unknown = set(user) - set(DEFAULTS)
    if unknown:
        sys.exit(f"{path}: unknown top-level key(s): {sorted(unknown)}")
    cfg = Cfg(cfg)
    # Features that change the computation and that this reference does not implement: refuse
    # rather than time a different model.
    unsupported = []
    if cfg.moe.router_noise > 0: unsupported.append("moe.router_noise")
    if cfg.moe.capacity_factor > 0: unsupported.append("moe.capacity_factor")
    if cfg.moe.route_devices > 0: unsupported.append("moe.route_devices")
    for k in ("device_alpha", "seq_alpha", "comm_alpha", "bias_rate"):
        if cfg.balance[k] > 0: unsupported.append("balance." + k)
    if unsupported:
        sys.exit(f"{path}: not implemented in the PyTorch reference: {', '.join(unsupported)}")
    if cfg.precision != "fp32":
        print(f"note: precision {cfg.precision} ignored, the reference runs fp32 on CPU", file=sys.stderr)
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = resolve_vocab(cfg.data.path)
    if cfg.model.d_model % cfg.model.n_heads or (cfg.model.d_model // cfg.model.n_heads) % 2:
        sys.exit(f"{path}: d_model must split into heads of even size")
    if cfg.train.batch_size % cfg.train.micro_batches:
        sys.exit(f"{path}: train.batch_size must be a multiple of train.micro_batches")
    return cfg


# ---------------------------------------------------------------------------------------------
# Model (docs/model.md). Linear weights are [out, in], y = x W^T, no biases.


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(T, hd, theta):
    # Angles in double precision, then rounded to float32.
    i = torch.arange(hd // 2, dtype=torch.float64)
    freq = theta ** (-2.0 * i / hd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * freq[None, :]  # [T, hd/2]
    ang = torch.cat([ang, ang], dim=-1)  # [T, hd]
    return ang.cos().float(), ang.sin().float()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin):
    # out[i] = x[i] cos - x[i+hd/2] sin ; out[i+hd/2] = x[i+hd/2] cos + x[i] sin
    return x * cos + rotate_half(x) * sin


if hasattr(F, "scaled_dot_product_attention"):  # torch >= 2.0

    def causal_attention(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

else:  # torch 1.13 (Debian bookworm) has no public SDPA: the same math, written out

    def causal_attention(q, k, v):
        T = q.shape[-2]
        s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        s = s.masked_fill(mask, float("-inf"))
        return torch.softmax(s, dim=-1) @ v


class Attention(nn.Module):
    def __init__(self, d, H):
        super().__init__()
        self.H, self.hd = H, d // H
        self.wq = nn.Linear(d, d, bias=False)
        self.wk = nn.Linear(d, d, bias=False)
        self.wv = nn.Linear(d, d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)

    def forward(self, x, cos, sin):
        B, T, d = x.shape
        q = self.wq(x).view(B, T, self.H, self.hd).transpose(1, 2)  # [B, H, T, hd]
        k = self.wk(x).view(B, T, self.H, self.hd).transpose(1, 2)
        v = self.wv(x).view(B, T, self.H, self.hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = causal_attention(q, k, v)
        return self.wo(o.transpose(1, 2).reshape(B, T, d))


class SwiGLU(nn.Module):
    def __init__(self, d, n):
        super().__init__()
        self.w_gate = nn.Linear(d, n, bias=False)
        self.w_up = nn.Linear(d, n, bias=False)
        self.w_down = nn.Linear(n, d, bias=False)

    def forward(self, u):
        return self.w_down(F.silu(self.w_gate(u)) * self.w_up(u))


class MoE(nn.Module):
    """DeepSeekMoE FFN: fused shared experts + N routed experts, top-K, dropless."""

    def __init__(self, d, N, Ks, K, n, score, norm_topk, alpha):
        super().__init__()
        self.N, self.K, self.score, self.norm_topk, self.alpha = N, K, score, norm_topk, alpha
        self.shared = SwiGLU(d, Ks * n) if Ks > 0 else None
        self.router = nn.Parameter(torch.empty(N, d))
        # Experts stacked as in the checkpoint layout: [N, n, d], [N, n, d], [N, d, n].
        self.w_gate = nn.Parameter(torch.empty(N, n, d))
        self.w_up = nn.Parameter(torch.empty(N, n, d))
        self.w_down = nn.Parameter(torch.empty(N, d, n))

    def forward(self, u):
        shape = u.shape
        u = u.reshape(-1, shape[-1])  # [Tt, d]
        Tt, N, K = u.shape[0], self.N, self.K
        logits = u @ self.router.t()  # [Tt, N]
        if self.score == "sigmoid":
            s = torch.sigmoid(logits)
            _, sel = torch.topk(s, K, dim=-1)
            g = s.gather(1, sel)
            g = g / g.sum(-1, keepdim=True)
        elif self.score == "softmax_topk":
            s = torch.softmax(logits, dim=-1)
            top_logits, sel = torch.topk(logits, K, dim=-1)
            g = torch.softmax(top_logits, dim=-1)
        else:  # softmax (DeepSeekMoE)
            s = torch.softmax(logits, dim=-1)
            g, sel = torch.topk(s, K, dim=-1)
            if self.norm_topk:
                g = g / g.sum(-1, keepdim=True)

        # Routed experts, the usual eager way: sort (token, expert) pairs by expert, loop.
        flat_e = sel.reshape(-1)  # [Tt*K]
        counts = torch.bincount(flat_e, minlength=N)  # [N]
        order = torch.argsort(flat_e, stable=True)
        tok = order // K  # token of each sorted pair
        gate = g.reshape(-1)[order]
        xs = u[tok]  # [Tt*K, d]
        outs = []
        start = 0
        for e, c in enumerate(counts.tolist()):
            if c == 0:
                continue
            x_e = xs[start:start + c]
            h = F.silu(x_e @ self.w_gate[e].t()) * (x_e @ self.w_up[e].t())
            outs.append((h @ self.w_down[e].t()) * gate[start:start + c, None])
            start += c
        y = torch.zeros_like(u)
        if outs:
            y = y.index_add(0, tok, torch.cat(outs, 0))
        if self.shared is not None:
            y = y + self.shared(u)

        # Expert-level balance loss: alpha * sum_i f_i P_i, f without gradient.
        f = counts.to(u.dtype) * (N / (K * Tt))
        P = s.mean(0)
        aux = self.alpha * (f * P).sum()
        return y.reshape(shape), aux


class Block(nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        m, moe = cfg.model, cfg.moe
        self.attn_norm = RMSNorm(m.d_model, m.norm_eps)
        self.attn = Attention(m.d_model, m.n_heads)
        self.ffn_norm = RMSNorm(m.d_model, m.norm_eps)
        self.is_moe = layer >= m.first_dense_layers
        if self.is_moe:
            self.ffn = MoE(m.d_model, moe.n_routed, moe.n_shared, moe.top_k, moe.expert_hidden,
                           moe.score, moe.norm_topk, cfg.balance.expert_alpha)
        else:
            self.ffn = SwiGLU(m.d_model, m.dense_hidden)

    def forward(self, x, cos, sin):
        h = x + self.attn(self.attn_norm(x), cos, sin)
        if self.is_moe:
            y, aux = self.ffn(self.ffn_norm(h))
        else:
            y, aux = self.ffn(self.ffn_norm(h)), None
        return h + y, aux


class DSMoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        m = cfg.model
        self.tok_embedding = nn.Embedding(m.vocab_size, m.d_model)
        self.layers = nn.ModuleList(Block(cfg, l) for l in range(m.n_layers))
        self.final_norm = RMSNorm(m.d_model, m.norm_eps)
        self.tied = bool(m.tie_embeddings)
        if not self.tied:
            self.lm_head = nn.Linear(m.d_model, m.vocab_size, bias=False)
        cos, sin = rope_tables(m.seq_len, m.d_model // m.n_heads, float(m.rope_theta))
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=m.init_std)  # norms keep their ones

    def forward(self, tokens, targets):
        x = self.tok_embedding(tokens)
        T = tokens.shape[1]
        cos, sin = self.cos[:T], self.sin[:T]
        aux = x.new_zeros(())
        for blk in self.layers:
            x, a = blk(x, cos, sin)
            if a is not None:
                aux = aux + a
        x = self.final_norm(x)
        w = self.tok_embedding.weight if self.tied else self.lm_head.weight
        logits = x @ w.t()
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return ce, aux


# ---------------------------------------------------------------------------------------------
# Training step (docs/model.md, Optimizer and schedule).


def lr_at(cfg, s):
    t = cfg.train
    W = t.warmup_steps
    if s < W:
        return t.lr * (s + 1) / W
    if t.schedule == "constant":
        return t.lr
    p = min(max((s - W) / max(t.steps - W, 1), 0.0), 1.0)
    return t.min_lr + (t.lr - t.min_lr) * (1 + math.cos(math.pi * p)) / 2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    if a.steps <= 0 or a.warmup < 0:
        sys.exit("--steps must be positive and --warmup non-negative")

    torch.set_num_threads(a.threads)
    cfg = load_config(a.config)
    cfg.train.steps = max(cfg.train.steps, a.steps + a.warmup)  # as dsmoe bench does
    torch.manual_seed(cfg.seed)

    model = DSMoE(cfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    t = cfg.train
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps, weight_decay=t.weight_decay)
    params = list(model.parameters())

    B, T, M, V = t.batch_size, cfg.model.seq_len, t.micro_batches, cfg.model.vocab_size
    mb = B // M
    n_params = sum(p.numel() for p in params)
    print(f"{cfg.name}: {n_params} parameters, vocab {V}, batch {B} x {T} tokens in {M} micro-batch(es), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    def train_step(s):
        data = torch.randint(0, V, (B, T + 1))
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, s)
        opt.zero_grad(set_to_none=False)  # every parameter gets a (possibly zero) gradient
        loss_sum = aux_sum = 0.0
        for m in range(M):
            chunk = data[m * mb:(m + 1) * mb]
            ce, aux = model(chunk[:, :-1], chunk[:, 1:])
            ((ce + aux) / M).backward()
            loss_sum += ce.item()
            aux_sum += aux.item()
        gnorm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip) if t.grad_clip > 0 else None
        opt.step()
        return loss_sum / M, aux_sum / M, gnorm

    total = 0.0
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss, aux, _ = train_step(i)
        dt = time.perf_counter() - t0
        tag = " (warmup)" if i < a.warmup else ""
        print(f"step {i + 1}: {1e3 * dt:.1f} ms, loss {loss:.4f}, aux {aux:.4f}{tag}", flush=True)
        if i >= a.warmup:
            total += dt
    ms = 1e3 * total / a.steps
    tok_s = B * T / (ms / 1e3)
    print(f"{cfg.name}: {tok_s:.0f} tokens/s, {ms:.1f} ms/step (pytorch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")
    print(json.dumps({
        "impl": "pytorch", "name": cfg.name, "torch_version": torch.__version__,
        "tokens_per_s": round(tok_s, 1), "ms_per_step": round(ms, 3),
        "threads": torch.get_num_threads(), "steps": a.steps, "warmup": a.warmup,
        "params_total": n_params, "tokens_per_step": B * T,
    }))


if __name__ == "__main__":
    main()
