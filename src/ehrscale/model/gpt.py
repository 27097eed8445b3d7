"""A Llama-style decoder written from scratch (nanoGPT-sized).

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
  (see ``ehrscale.train.data``), so attention never crosses patients.
* q/k/v and the SwiGLU gate/up projections are fused into single matmuls (same parameters
  as the unfused form, fewer kernel launches).
* Initialisation: every matrix ~ N(0, init_std^2), the residual outputs (attention out,
  SwiGLU down) scaled by ``1/sqrt(2 n_layer)`` (GPT-2). ``init_std`` defaults to
  ``1/sqrt(d_model)``: GPT-2's fixed 0.02 is that rule near width 768 (0.036), but at the
  default run's widths 4-64 it left attention near uniform and the loss on a plateau whose
  exit was seed-random (docs/wsd.md, "Equivalence").

Its shape (``GPTConfig``), parameter counts and FLOPs live in :mod:`ehrscale.model.config`, which
imports no torch.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ehrscale.core.errors import EhrscaleError
from ehrscale.model.config import GPTConfig


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
