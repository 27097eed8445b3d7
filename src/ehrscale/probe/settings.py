"""The ``probe`` config section: the probe's regularisation path, bootstrap, and which examples it embeds."""

from __future__ import annotations

import dataclasses

from ehrscale.core.errors import EhrscaleError

HISTORIES = ("recent", "whole")


@dataclasses.dataclass
class ProbeSettings:
    """The ``probe`` config section."""

    c_values: list = dataclasses.field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0])
    max_iter: int = 2000
    bootstrap: int = 1000  # stratified bootstrap resamples of held_out
    seed: int = 0
    ci_level: float = 0.95
    min_positives: int = 10  # positives (and negatives) each of train, tuning and held_out needs
    device: str = "auto"  # embedding: auto | cpu | cuda | cuda:N
    batch_tokens: int = 16384  # embedding: padded tokens per forward batch (CPU: larger batches cost more, bench/probe.py)
    # Train examples per task the probe fits on, and tuning examples per task C is chosen on
    # (fixed, label-stratified subsets; null: all). held_out is always used whole, so its
    # intervals are those of the whole split. Why caps: embedding costs a forward pass per
    # example, and every example would cost more than training a small cell.
    max_train_examples: int | None = 3000
    max_tuning_examples: int | None = 1000
    # The baseline's own train cap (null: all); it uses tuning whole. The caps above save
    # embedding, which the baseline never pays (it is fitted once per task), and its ~vocab_size
    # features need far more examples than a probe's d_model: capped like the probe, it would
    # understate the no-model line. held_out, where the two are compared, is the same.
    baseline_max_train_examples: int | None = None
    # What the model reads of a long history: "recent", the last context window before the
    # prediction time; "whole", every earlier window too, each embedded and the states mean-pooled,
    # so the model sees what the count baseline sees (ehrscale.probe.embed). Default recent: on the
    # default run whole cost 3.4-3.6x the embedding and lowered AUROC beyond its paired interval on
    # 6 of 12 (cell, task) pairs, raised it beyond on none (bench/history.py).
    history: str = "recent"

    def __post_init__(self) -> None:
        c = self.c_values
        if not isinstance(c, list) or len(c) < 7 or not all(isinstance(v, (int, float)) and v > 0 for v in c):
            raise EhrscaleError(f"probe.c_values must be a list of at least 7 positive numbers, got {c!r}")
        for name in ("max_train_examples", "max_tuning_examples", "baseline_max_train_examples"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise EhrscaleError(f"probe.{name} must be a positive integer or null, got {v!r}")
        for name in ("max_iter", "min_positives", "batch_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise EhrscaleError(f"probe.{name} must be a positive integer, got {v!r}")
        if not isinstance(self.bootstrap, int) or self.bootstrap < 0:
            raise EhrscaleError(f"probe.bootstrap must be a non-negative integer, got {self.bootstrap!r}")
        if self.history not in HISTORIES:
            raise EhrscaleError(f"probe.history must be one of {', '.join(HISTORIES)}, got {self.history!r}")
        if not 0 < float(self.ci_level) < 1:
            raise EhrscaleError(f"probe.ci_level must be in (0, 1), got {self.ci_level!r}")
