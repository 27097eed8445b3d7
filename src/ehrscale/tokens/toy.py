"""A small EHR-like token store for tests and benchmarks, written through the store's own writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ehrscale.tokens.store import SplitWriter


def write_synthetic_tokens(out_dir: str | Path, vocab_size: int = 64, n_subjects: dict[str, int] | None = None,
                           mean_length: int = 120, seed: int = 0, dtype=np.uint16) -> Path:
    """Write a small EHR-like token directory in the tokenizer's layout (for tests and benchmarks).

    Each patient: a static prefix (3 tokens), a timeline from a sparse random Markov chain
    (so there is something to learn), and a timeline-end token; lengths are heavy-tailed.
    Id 0 is ``[PAD]``, 1 ``[TIMELINE_END]``, 2..9 prefix tokens.
    """
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    n_subjects = n_subjects or {"train": 200, "tuning": 40, "held_out": 40}
    V = int(vocab_size)
    body = np.arange(10, V)
    nxt = rng.integers(10, V, size=(V, 3))  # each token has 3 likely successors
    stats = {"vocab_size": V, "splits": {}}
    sid = 1000
    for split, n in n_subjects.items():
        toks, offs, subj = [], [0], []
        for _ in range(n):
            length = int(min(max(2, rng.lognormal(np.log(mean_length), 0.9)), 20 * mean_length))
            seq = [int(rng.integers(2, 6)), int(rng.integers(6, 8)), int(rng.integers(8, 10))]
            cur = int(rng.choice(body))
            for _ in range(length):
                seq.append(cur)
                cur = int(nxt[cur, rng.integers(0, 3)]) if rng.random() < 0.85 else int(rng.choice(body))
            seq.append(1)
            toks.extend(seq)
            offs.append(len(toks))
            subj.append(sid)
            sid += 1
        with SplitWriter(out / split, dtype) as writer:
            writer.append(np.asarray(toks), np.zeros(len(toks), np.int64), np.asarray(subj), np.diff(offs))
        stats["splits"][split] = {"n_subjects": n, "n_tokens": len(toks)}
    vocab = ["[PAD]", "[TIMELINE_END]"] + [f"STATIC_{i}" for i in range(2, 10)] + [f"CODE_{i}" for i in range(10, V)]
    (out / "vocab.json").write_text(json.dumps({"tokens": vocab}))
    (out / "stats.json").write_text(json.dumps(stats))
    return out
