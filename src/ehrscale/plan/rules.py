"""The training rules that planning needs, torch-free: the ``train`` settings, rows per step,
the peak LR and the WSD branch point. The grid (:mod:`ehrscale.plan.grid`), the workflow's DAG
(:mod:`ehrscale.plan.workflow`) and the trainer (:mod:`ehrscale.train.trainer`) all read them here.

**Batch size and LR** (``batch_size_for`` / ``learning_rate_for``), per size:

* rows per step = the power of two ``<= batch_tokens_per_param x N / (context_length x
  min_steps)``, clipped to ``[min_batch_size, max_batch_size]``: a cell with as few as
  ``batch_tokens_per_param`` tokens per parameter still gets ``min_steps`` steps, and the
  grid drops cells with fewer;
* peak LR = ``lr_base x (lr_ref_width / d_model) ** lr_width_exponent``, unless the
  workflow's ``tune`` step chose it (``--lr-file``) or ``learning_rate`` pins it.

What a size's chain shares with all its cells, and so is fixed per size: the batch size
(rows per step), the peak LR, the warmup, the data order (``seed``, ``window_mode``) and
every optimiser setting. Only ``D`` (and so the branch point) differs between cells.
"""

from __future__ import annotations

import dataclasses
import math

from ehrscale.core.errors import EhrscaleError

SCHEDULES = ("cosine", "wsd")
WINDOW_MODES = ("pack", "pad")


@dataclasses.dataclass
class TrainSettings:
    """The ``train`` config section."""

    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bfloat16 | float32
    compile: bool = False
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    window_mode: str = "pack"  # pack | pad (see ehrscale.train.data)
    schedule: str = "cosine"  # cosine | wsd
    cooldown_fraction: float = 0.2  # wsd: the decay's share of D
    batch_size: int | None = None  # rows per step; None: the per-size rule
    min_steps: int = 1000
    batch_tokens_per_param: float = 4.0  # the rule sizes the batch for a cell this short
    min_batch_size: int = 1
    max_batch_size: int = 256
    learning_rate: float | None = None  # peak LR; None: tuned (workflow) or the width rule
    lr_base: float = 3e-3
    lr_ref_width: int = 64
    lr_width_exponent: float = 0.75
    warmup_tokens_per_param: float = 1.0
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    val_windows: int = 256  # fixed validation windows from the tuning split
    val_batch_size: int = 32
    val_seed: int = 0
    log_every_steps: int = 50
    progress_seconds: float = 30.0
    checkpoint_minutes: float = 30.0
    checkpoint_every_steps: int | None = None
    peak_flops: float | None = None  # for MFU; None: looked up from the CUDA device name
    stop_after_steps: int | None = None  # test hook: send ourselves SIGTERM after this step


# Settings that change no result: left out of the hashes so a resume may alter them.
UNHASHED = {"threads", "log_every_steps", "progress_seconds", "checkpoint_minutes", "checkpoint_every_steps",
             "stop_after_steps", "compile", "peak_flops"}
# Settings a WSD stable phase does not depend on (only its cells do): changing them retrains no chain.
STABLE_INDEPENDENT = ("final_lr_fraction", "cooldown_fraction", "val_windows", "val_batch_size", "val_seed")


def batch_size_for(n_params: int, context_length: int, s: TrainSettings) -> int:
    """Rows per step for a size of ``n_params`` total parameters (the same for all its cells)."""
    if s.batch_size:
        return int(s.batch_size)
    raw = s.batch_tokens_per_param * n_params / (context_length * max(1, s.min_steps))
    rows = 2 ** int(math.floor(math.log2(raw))) if raw >= 1 else 1
    return int(min(max(rows, s.min_batch_size), s.max_batch_size))


def learning_rate_for(d_model: int, s: TrainSettings) -> float:
    if s.learning_rate:
        return float(s.learning_rate)
    return float(s.lr_base * (s.lr_ref_width / d_model) ** s.lr_width_exponent)


def branch_point(tokens: int, s: TrainSettings) -> int:
    """The nominal token count at which a WSD cell of ``tokens`` leaves its size's stable phase."""
    return int(math.ceil((1.0 - s.cooldown_fraction) * tokens))


def check_settings(s: TrainSettings) -> None:
    if s.window_mode not in WINDOW_MODES:
        raise EhrscaleError(f"train.window_mode must be one of {', '.join(WINDOW_MODES)}, got {s.window_mode!r}")
    if s.dtype not in ("auto", "bfloat16", "float32"):
        raise EhrscaleError(f"train.dtype must be auto, bfloat16 or float32, got {s.dtype!r}")
    if s.schedule not in SCHEDULES:
        raise EhrscaleError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got {s.schedule!r}")
    if not 0 < s.cooldown_fraction <= 1:
        raise EhrscaleError("train.cooldown_fraction must be in (0, 1]")
    if s.warmup_tokens_per_param < 0:
        raise EhrscaleError("train.warmup_tokens_per_param must be >= 0")
    if s.val_windows < 1 or s.val_batch_size < 1 or s.log_every_steps < 1:
        raise EhrscaleError("train.val_windows, train.val_batch_size and train.log_every_steps must be >= 1")
