"""A Llama-style decoder written from scratch (nanoGPT-sized), its parameter counts and FLOPs.

Architecture: token embedding -> ``n_layer`` pre-norm blocks -> RMSNorm -> output head.
Each block is ``x + Attn(RMSNorm(x))`` then ``x + SwiGLU(RMSNorm(x))``.

* RMSNorm (learned scale, no bias), rotary position embeddings (rotate-half form, theta
  10 000), SwiGLU MLP with hidden size ``ffn_multiple_of * ceil(8/3 * d_model / ffn_multiple_of)``
  (Llama's rule), no biases anywhere.
* **Tied embeddings**: the output head reuses the input embedding matrix, so the vocabulary
  costs ``vocab_size * d_model`` parameters once.
* Attention is ``torch.nn.functional.scaled_dot_product_attention``: ``is_causal=True`` when
  a batch holds one patient segment per row (flash/efficient kernels stay available); a
  boolean block-diagonal causal mask when several patients are packed into one row
  (see ``ehrscale.data``), so attention never crosses patients.
* q/k/v and the SwiGLU gate/up projections are fused into single matmuls (same parameters
  as the unfused form, fewer kernel launches).
* Initialisation: every matrix ~ N(0, init_std^2), the residual outputs (attention out,
  SwiGLU down) scaled by ``1/sqrt(2 n_layer)`` (GPT-2). ``init_std`` defaults to
  ``1/sqrt(d_model)``: GPT-2's fixed 0.02 is that rule near width 768 (0.036), but at the
  default run's widths 4-64 it left attention near uniform and the loss on a plateau whose
  exit was seed-random (docs/wsd.md, "Equivalence").

Parameter counts (``param_counts``)::

    per layer    = 4 d^2            (q, k, v, o)
                 + 3 d h            (SwiGLU gate, up, down; h = ffn hidden size)
                 + 2 d              (two RMSNorm scales)
    non-embedding = n_layer * per_layer + d        (final RMSNorm)
    total         = non-embedding + vocab_size * d (tied: counted once)

Scaling fits default to TOTAL parameters (as Chinchilla does): at EHR scale the vocabulary
embedding is 70-90 % of the parameters near the compute optimum, and with tied embeddings
its matrix is also the output head, which costs ``2 * vocab * d`` FLOPs per token forward.

FLOPs per token for training (``flops_per_token``), forward + backward = 3 x forward::

    6 * N_total  +  6 * n_layer * context_length * d_model

The first term counts every weight matmul (the output head included via the tied
embedding; the embedding lookup itself is free, the norm scales are negligible). The
second is attention scores (QK^T) and the weighted sum (AV): ``2 * 2 * ctx * d`` per
layer per token forward if every query saw all ``ctx`` keys; a causal query sees on
average ``ctx / 2`` keys, so we count the causal half (Kaplan et al. 2020's
``2 * n_layer * n_ctx * d_attn`` forward). ``attention="full"`` gives the un-halved
``12 * n_layer * ctx * d`` that ``FlopCounterMode`` measures (it does not discount
masked entries); the tests check that form against the counter.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ehrscale.errors import EhrscaleError

# Default IsoFLOPs ladder for GPU runs: ~0.1M to ~1B non-embedding parameters, about
# half a decade apart. Names give the approximate non-embedding parameter count.
DEFAULT_SIZES: dict[str, dict[str, int]] = {
    "n0.1M": {"n_layer": 2, "d_model": 64, "n_head": 2},
    "n0.3M": {"n_layer": 3, "d_model": 96, "n_head": 3},
    "n1M": {"n_layer": 5, "d_model": 128, "n_head": 4},
    "n3M": {"n_layer": 7, "d_model": 192, "n_head": 6},
    "n10M": {"n_layer": 8, "d_model": 320, "n_head": 5},
    "n30M": {"n_layer": 10, "d_model": 512, "n_head": 8},
    "n100M": {"n_layer": 14, "d_model": 768, "n_head": 12},
    "n300M": {"n_layer": 24, "d_model": 1024, "n_head": 16},
    "n1B": {"n_layer": 20, "d_model": 2048, "n_head": 16},
}

# Tiny CPU ladder (head dim 8-16) that reproduces the measured CPU IsoFLOPs facts: with
# vocab 2000 and context 256 it spans ~18k to ~520k total parameters; budgets 3e11, 1e12,
# 3e12 give interior minima near 23k, 50k, 110k total parameters.
DEBUG_SIZES: dict[str, dict[str, int]] = {
    "d8L2": {"n_layer": 2, "d_model": 8, "n_head": 1},
    "d12L2": {"n_layer": 2, "d_model": 12, "n_head": 1},
    "d16L2": {"n_layer": 2, "d_model": 16, "n_head": 1},
    "d24L2": {"n_layer": 2, "d_model": 24, "n_head": 2},
    "d32L2": {"n_layer": 2, "d_model": 32, "n_head": 2},
    "d48L2": {"n_layer": 2, "d_model": 48, "n_head": 3},
    "d64L3": {"n_layer": 3, "d_model": 64, "n_head": 4},
    "d96L3": {"n_layer": 3, "d_model": 96, "n_head": 6},
}


@dataclasses.dataclass
class ModelSettings:
    """The ``model`` config section: shape-independent architecture settings."""

    context_length: int = 256
    rope_theta: float = 10000.0
    ffn_multiple_of: int = 8
    norm_eps: float = 1e-5
    init_std: float | None = None  # None: 1/sqrt(d_model) (GPTConfig)


@dataclasses.dataclass
class GPTConfig:
    vocab_size: int
    n_layer: int
    d_model: int
    n_head: int
    context_length: int = 256
    ffn_hidden: int | None = None  # None: Llama's 8/3 rule rounded up to ffn_multiple_of
    ffn_multiple_of: int = 8
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float | None = None  # None: 1/sqrt(d_model), LeCun's fan-in rule (why: module docstring)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "d_model", "n_head", "context_length"):
            if int(getattr(self, name)) <= 0:
                raise EhrscaleError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise EhrscaleError(f"model d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if (self.d_model // self.n_head) % 2:
            raise EhrscaleError(f"model head dim {self.d_model // self.n_head} must be even for rotary embeddings")
        if self.ffn_hidden is None:
            m = self.ffn_multiple_of
            self.ffn_hidden = m * math.ceil(8 * self.d_model / 3 / m)
        if self.init_std is None:
            self.init_std = 1.0 / math.sqrt(self.d_model)
        elif not self.init_std > 0:
            raise EhrscaleError(f"model.init_std must be positive (or null for 1/sqrt(d_model)), got {self.init_std}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @classmethod
    def from_size(cls, size: dict[str, Any], vocab_size: int, model: ModelSettings | None = None) -> "GPTConfig":
        model = model or ModelSettings()
        allowed = {"n_layer", "d_model", "n_head", "ffn_hidden"}
        unknown = sorted(set(size) - allowed)
        if unknown:
            raise EhrscaleError(f"unknown key(s) in model size: {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        missing = sorted({"n_layer", "d_model", "n_head"} - set(size))
        if missing:
            raise EhrscaleError(f"model size is missing key(s): {', '.join(missing)}")
        return cls(
            vocab_size=int(vocab_size),
            n_layer=int(size["n_layer"]),
            d_model=int(size["d_model"]),
            n_head=int(size["n_head"]),
            ffn_hidden=size.get("ffn_hidden"),
            context_length=model.context_length,
            ffn_multiple_of=model.ffn_multiple_of,
            rope_theta=model.rope_theta,
            norm_eps=model.norm_eps,
            init_std=model.init_std,
        )


def param_counts(cfg: GPTConfig) -> dict[str, int]:
    """Closed-form parameter counts: ``{"total", "non_embedding", "embedding"}``."""
    d, h = cfg.d_model, cfg.ffn_hidden
    per_layer = 4 * d * d + 3 * d * h + 2 * d
    non_embedding = cfg.n_layer * per_layer + d
    embedding = cfg.vocab_size * d
    return {"total": non_embedding + embedding, "non_embedding": non_embedding, "embedding": embedding}


def flops_per_token(cfg: GPTConfig, context_length: int | None = None, attention: str = "causal") -> float:
    """Training FLOPs per token (forward + backward); see the module docstring.

    ``attention``: ``"causal"`` (default, counts the causal half), ``"full"`` (what
    FlopCounterMode reports) or ``"none"`` (plain ``6 N``).
    """
    ctx = cfg.context_length if context_length is None else context_length
    n = param_counts(cfg)["total"]
    factor = {"causal": 6, "full": 12, "none": 0}.get(attention)
    if factor is None:
        raise EhrscaleError(f"attention must be 'causal', 'full' or 'none', got {attention!r}")
    return float(6 * n + factor * cfg.n_layer * ctx * cfg.d_model)


# Dense bf16 peak FLOP/s for MFU, by substring of torch.cuda.get_device_name().
PEAK_FLOPS_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}


def peak_flops_for(device_name: str) -> float | None:
    for key, val in PEAK_FLOPS_BF16.items():
        if key in device_name:
            return val
    return None


def mfu(cfg: GPTConfig, tokens_per_second: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: useful training FLOPs per second / hardware peak."""
    if not peak_flops:
        return None
    return flops_per_token(cfg) * tokens_per_second / peak_flops


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
        xf = x.float()  # low precision: normalise in fp32
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def _swap_halves(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE: ``x * cos + rotate_half(x) * sin`` with the sign folded into
    ``sin_signed = cat(-sin, sin)`` so ``rotate_half(x) * sin == swap_halves(x) * sin_signed``."""
    if cos.dtype != x.dtype:  # under autocast keep q/k in bf16 rather than promoting to fp32
        cos, sin_signed = cos.to(x.dtype), sin_signed.to(x.dtype)
    return x * cos + _swap_halves(x) * sin_signed


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.n_head, self.head_dim)
        qk, v = qkv.split([2, 1], dim=2)  # split, not slicing: its backward is one cat, no zero-fill
        qk = apply_rotary(qk, cos, sin)  # q and k rotated together: (b, t, 2, h, hd)
        q, k = qk.permute(2, 0, 3, 1, 4).unbind(0)  # (b, h, t, hd)
        v = v.squeeze(2).transpose(1, 2)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))

    def forward_at(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rows: torch.Tensor,
                   cols: torch.Tensor) -> torch.Tensor:
        """The output at positions (rows[i], cols[i]) only, (n, d): keys and values everywhere,
        queries only there, each seeing keys 0..cols[i] of its row (causal, one segment per row)."""
        b, t, d = x.shape
        w_q, w_kv = self.qkv.weight.split([d, 2 * d])
        kv = F.linear(x, w_kv).view(b, t, 2, self.n_head, self.head_dim)
        k = apply_rotary(kv[:, :, :1], cos, sin)[:, :, 0].transpose(1, 2)[rows]  # (n, h, t, hd)
        v = kv[:, :, 1].transpose(1, 2)[rows]
        q = apply_rotary(F.linear(x[rows, cols], w_q).view(-1, self.n_head, self.head_dim), cos[cols, 0], sin[cols, 0])
        scores = torch.einsum("nhd,nhtd->nht", q, k) / math.sqrt(self.head_dim)
        future = torch.arange(t, device=x.device)[None, :] > cols[:, None]
        w = torch.softmax(scores.float().masked_fill(future[:, None, :], float("-inf")), dim=-1).type_as(v)
        return self.proj(torch.einsum("nht,nhtd->nhd", w, v).reshape(-1, d))


class SwiGLU(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.hidden = cfg.ffn_hidden
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.ffn_hidden, bias=False)
        self.down = nn.Linear(cfg.ffn_hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).split(self.hidden, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x, cos, sin, mask):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return x + self.mlp(self.mlp_norm(x))

    def forward_at(self, x, cos, sin, rows, cols):
        """``forward(x)[rows, cols]`` (causal, no mask), computing only what those positions need."""
        y = x[rows, cols] + self.attn.forward_at(self.attn_norm(x), cos, sin, rows, cols)
        return y + self.mlp(self.mlp_norm(y))


class GPT(nn.Module):
    """Llama-style decoder. ``forward(idx, targets=None, positions=None, segments=None)``.

    ``positions`` (B, T) restart rotary positions per packed patient segment; ``segments``
    (B, T) label each position's patient segment so attention stays within it. Leave both
    None for one segment per row starting at position 0 (pure causal attention).
    Returns ``(logits, loss)``; ``loss`` is the mean cross-entropy over targets != -100.
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim))
        freqs = torch.outer(torch.arange(cfg.context_length, dtype=torch.float64), inv_freq)
        self.register_buffer("rope_cos", torch.cat((freqs.cos(), freqs.cos()), dim=-1).float(), persistent=False)
        self.register_buffer("rope_sin", torch.cat((-freqs.sin(), freqs.sin()), dim=-1).float(), persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.cfg.init_std
        nn.init.normal_(self.embed.weight, std=std)
        for name, p in self.named_parameters():
            if p.dim() == 2 and name != "embed.weight":
                # residual-stream outputs scaled down by depth (GPT-2 / nanoGPT)
                s = std / math.sqrt(2 * self.cfg.n_layer) if name.endswith(("proj.weight", "down.weight")) else std
                nn.init.normal_(p, std=s)

    def forward(self, idx, targets=None, positions=None, segments=None):
        x = self.hidden_states(idx, positions, segments)
        logits = F.linear(x, self.embed.weight)  # tied output head
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def hidden_states(self, idx, positions=None, segments=None) -> torch.Tensor:
        """The final hidden states (B, T, d_model), after the last RMSNorm: what the head reads,
        and the embedding a probe uses. Causal: position i depends on idx[:, :i+1] only."""
        b, t = idx.shape
        if t > self.cfg.context_length:
            raise EhrscaleError(f"sequence length {t} exceeds context_length {self.cfg.context_length}")
        # cos/sin broadcast over the (b, t, 2, h, hd) q/k tensor
        if positions is None:
            cos, sin = self.rope_cos[:t, None, None], self.rope_sin[:t, None, None]  # (t, 1, 1, hd)
        else:
            cos, sin = self.rope_cos[positions][:, :, None, None], self.rope_sin[positions][:, :, None, None]
        mask = None
        if segments is not None:
            causal = torch.ones(t, t, dtype=torch.bool, device=idx.device).tril()
            mask = ((segments[:, :, None] == segments[:, None, :]) & causal).unsqueeze(1)  # (b,1,t,t)
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, cos, sin, mask)
        return self.norm(x)

    def hidden_states_at(self, idx, rows, cols) -> torch.Tensor:
        """``hidden_states(idx)[rows, cols]``, (n, d_model), for plain causal rows (one segment
        each, starting at position 0). Every block but the last runs everywhere; the last one only
        where it is read (its keys and values everywhere, queries, output and MLP at the n
        positions), which saves most of that block when few positions per row are read."""
        b, t = idx.shape
        if t > self.cfg.context_length:
            raise EhrscaleError(f"sequence length {t} exceeds context_length {self.cfg.context_length}")
        cos, sin = self.rope_cos[:t, None, None], self.rope_sin[:t, None, None]
        x = self.embed(idx)
        for block in self.blocks[:-1]:
            x = block(x, cos, sin, None)
        return self.norm(self.blocks[-1].forward_at(x, cos, sin, rows, cols))

    def num_params(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        emb = self.embed.weight.numel()
        return {"total": total, "non_embedding": total - emb, "embedding": emb}


def load_model(path, map_location="cpu") -> tuple[GPT, dict]:
    """Rebuild a trained model from its ``model.pt`` alone (``{"config", "state_dict", "cell"}``).

    Returns ``(model in eval mode, checkpoint dict without the state_dict)``."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise EhrscaleError(f"model file not found: {path}")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise EhrscaleError(f"cannot read model file {path}: {err}") from err
    if not isinstance(ck, dict) or not {"config", "state_dict"} <= set(ck):
        raise EhrscaleError(f"{path} is not an ehrscale model file (needs 'config' and 'state_dict')")
    fields = {f.name for f in dataclasses.fields(GPTConfig)}
    unknown = sorted(set(ck["config"]) - fields)
    if unknown:
        raise EhrscaleError(f"{path}: unknown model config key(s) {unknown}")
    model = GPT(GPTConfig(**ck["config"]))
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as err:
        raise EhrscaleError(f"{path}: the weights do not match the stored config: {err}") from err
    model.eval()
    return model, {k: v for k, v in ck.items() if k != "state_dict"}
