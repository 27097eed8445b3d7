"""Patient-level splits that are a pure function of subject_id.

A subject's split comes from a keyed hash of its id mapped to [0, 1) and compared
with the cumulative fractions. It depends on nothing else, so growing a cohort
never moves an existing patient to another split, and no patient can be in two.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ehrscale.core.errors import EhrscaleError

SPLITS = ("train", "tuning", "held_out")
DEFAULT_FRACTIONS = {"train": 0.8, "tuning": 0.1, "held_out": 0.1}
DEFAULT_SALT = "ehrscale"


def check_fractions(fractions: dict[str, float]) -> dict[str, float]:
    if set(fractions) != set(SPLITS):
        raise EhrscaleError(f"split_fractions must have exactly the keys {list(SPLITS)}, got {sorted(fractions)}")
    if any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise EhrscaleError(f"split_fractions must be non-negative and sum to 1, got {fractions}")
    return {s: float(fractions[s]) for s in SPLITS}


def subject_unit_interval(subject_ids: np.ndarray, salt: str = DEFAULT_SALT) -> np.ndarray:
    """Map each subject_id to a uniform-looking number in [0, 1), stable across platforms."""
    out = np.empty(len(subject_ids), dtype=np.float64)
    key = salt.encode()
    for i, sid in enumerate(np.asarray(subject_ids, dtype=np.int64)):
        digest = hashlib.blake2b(int(sid).to_bytes(8, "little", signed=True), digest_size=8, key=key).digest()
        out[i] = int.from_bytes(digest, "little") / 2**64
    return out


def assign_splits(subject_ids, fractions: dict[str, float] | None = None, salt: str = DEFAULT_SALT) -> np.ndarray:
    """Return an array of split names, one per subject_id."""
    fractions = check_fractions(fractions or DEFAULT_FRACTIONS)
    u = subject_unit_interval(np.asarray(subject_ids), salt)
    edges = np.cumsum([fractions[s] for s in SPLITS])
    edges[-1] = 1.0 + 1e-12  # guard rounding: every u < 1 lands somewhere
    idx = np.searchsorted(edges, u, side="right")
    return np.asarray(SPLITS, dtype=object)[idx]


def assign_shards(subject_ids, splits, subjects_per_shard: int) -> np.ndarray:
    """Each subject's shard: its rank by subject_id within its split, divided by ``subjects_per_shard``."""
    subject_ids, splits = np.asarray(subject_ids), np.asarray(splits, dtype=object)
    shard = np.zeros(len(subject_ids), np.int32)
    for split in SPLITS:
        idx = np.flatnonzero(splits == split)
        shard[idx[np.argsort(subject_ids[idx], kind="stable")]] = np.arange(len(idx)) // subjects_per_shard
    return shard
