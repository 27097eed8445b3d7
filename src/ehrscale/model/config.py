"""A model's shape, its parameter counts and its training FLOPs: no torch, so planning imports it.

The decoder itself is :mod:`ehrscale.model.gpt`; a checkpoint stores ``GPTConfig`` as a dict, so the model
rebuilds from the file alone.

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

from ehrscale.core.errors import EhrscaleError

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
    context_length: int = ModelSettings.context_length  # the architecture settings' defaults are ModelSettings'
    ffn_hidden: int | None = None  # None: Llama's 8/3 rule rounded up to ffn_multiple_of
    ffn_multiple_of: int = ModelSettings.ffn_multiple_of
    rope_theta: float = ModelSettings.rope_theta
    norm_eps: float = ModelSettings.norm_eps
    init_std: float | None = ModelSettings.init_std  # None: 1/sqrt(d_model), LeCun's fan-in rule (why: docs of gpt)

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
            **dataclasses.asdict(model),
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
