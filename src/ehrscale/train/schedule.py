"""The learning-rate schedule as a small component: warmup, then cosine, or warmup-stable-decay.

Both warm up linearly over ``warmup_tokens_per_param x N`` tokens (N total parameters:
Porian et al. 2024 warm up for N tokens), then

* ``cosine``: decay to ``final_lr_fraction`` x peak at ``D``;
* ``wsd`` (Hägele et al. 2024): hold the peak, and over the last ``cooldown_fraction`` of ``D``
  decay to ``final_lr_fraction`` x peak in the ``1 - sqrt`` shape.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Peak LR as a function of tokens done at the end of a step (see the module docstring).

    ``total`` is the cell's D (None for a stable segment, which never decays). For ``wsd``
    the decay starts at ``branch``, the tokens actually done when the stable phase stopped.
    """

    kind: str
    peak: float
    warmup: float
    final_fraction: float
    total: int | None = None

    def lr(self, tokens: int, branch: int | None = None) -> float:
        warm = self.peak * min(1.0, tokens / self.warmup) if self.warmup > 0 else self.peak
        low = self.peak * self.final_fraction
        if self.kind == "cosine":
            if tokens < self.warmup:
                return warm
            t = (tokens - self.warmup) / max(self.total - self.warmup, 1e-12)
            return low + 0.5 * (self.peak - low) * (1.0 + math.cos(math.pi * min(t, 1.0)))
        if branch is None:
            return warm
        start = self.peak * min(1.0, branch / self.warmup) if self.warmup > 0 else self.peak
        x = min(max((tokens - branch) / max(self.total - branch, 1), 0.0), 1.0)
        return low + (start - low) * (1.0 - math.sqrt(x))
