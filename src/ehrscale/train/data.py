"""Training windows over the token store (:mod:`ehrscale.tokens.store`, which owns the layout).

Patient ``p`` of a split is ``tokens[offsets[p]:offsets[p+1]]``; tokens are sliced from the
memmap a row at a time.

**Windows never cross a patient boundary** (the paper's change to ETHOS). A patient of
``n`` tokens has ``n - 1`` next-token targets. It is cut into consecutive *segments* of at
most ``context_length`` targets: segment ``k`` reads tokens ``[k*L, min((k+1)*L + 1, n))``,
inputs are all but its last token, targets all but its first. Every target of every
patient is therefore in exactly one segment per epoch; a segment restarts at rotary
position 0.

**Packing (default, ``window_mode="pack"``)**: each epoch the segments are shuffled (seed,
epoch); a full-length segment fills a row alone, shorter ones are laid first-fit into a
few open rows of ``context_length`` positions (segments are never split again), the rows
are shuffled, and what is left of a row is padded (input id 0 = ``[PAD]``, target -100). Attention inside a row is
block-diagonal causal, so no token ever sees another patient. Why pack rather than pad:
EHR timelines are heavy-tailed, most patients are much shorter than the context, and one
patient per row would spend most of the compute on padding. The price is a dense boolean
mask, which rules out SDPA's flash kernel (the memory-efficient kernel still runs on GPU);
a batch whose rows each hold one segment falls back to ``is_causal=True`` with no mask.
``window_mode="pad"`` puts one segment per row (always flash-eligible) for comparison.

Either way ``D`` counts *real target tokens* only (never padding), which is also what
``tokens_per_second`` reports.

Order is a pure function of ``(seed, epoch)``; a position in the stream is
``(epoch, row)``, so training resumes exactly from a checkpointed position.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ehrscale.core.errors import EhrscaleError
from ehrscale.plan.rules import WINDOW_MODES
from ehrscale.tokens.store import TokenSplit


@dataclasses.dataclass
class Batch:
    inputs: torch.Tensor  # (B, L) int64
    targets: torch.Tensor  # (B, L) int64, -100 where no target
    positions: torch.Tensor | None  # (B, L) int64 rotary positions, None when every row is one segment
    segments: torch.Tensor | None  # (B, L) int64 segment labels for the attention mask, None likewise
    n_targets: int  # real target tokens

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.inputs), move(self.targets), move(self.positions), move(self.segments), self.n_targets)


def make_segments(offsets: np.ndarray, context_length: int, patients: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Segments of at most ``context_length`` targets within each patient (of ``patients``, row indices;
    None: every patient).

    Returns ``(starts, n_pos)``: segment i reads ``tokens[starts[i] : starts[i] + n_pos[i] + 1]``.
    """
    L = int(context_length)
    begin, lengths = offsets[:-1], np.diff(offsets)
    if patients is not None:
        begin, lengths = begin[patients], lengths[patients]
    n_tgt = np.maximum(lengths - 1, 0)
    n_chunks = -(-n_tgt // L)  # ceil
    patient = np.repeat(np.arange(len(lengths)), n_chunks)
    first = np.cumsum(n_chunks) - n_chunks
    k = np.arange(len(patient)) - np.repeat(first, n_chunks)
    starts = begin[patient] + k * L
    n_pos = np.minimum(L, n_tgt[patient] - k * L)
    return starts.astype(np.int64), n_pos.astype(np.int64)


def pack_rows(n_pos: np.ndarray, order: np.ndarray, context_length: int, mode: str,
              rng: np.random.Generator | None = None, open_rows: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Lay segments (visited in ``order``) into rows of ``context_length`` positions.

    Returns ``(seg_by_row, row_ptr)``: row r holds segments ``seg_by_row[row_ptr[r]:row_ptr[r+1]]``.
    ``pad``: one segment per row, in ``order``. ``pack``: a full-length segment fills a row
    alone; shorter ones go first-fit into the last ``open_rows`` open rows (a new row opens
    when none has room; the oldest closes beyond ``open_rows``); then the rows are shuffled
    with ``rng`` so packed and full rows interleave.
    """
    if mode == "pad":
        return np.asarray(order, dtype=np.int64), np.arange(len(order) + 1, dtype=np.int64)
    if mode != "pack":
        raise EhrscaleError(f"window_mode must be one of {WINDOW_MODES}, got {mode!r}")
    L = int(context_length)
    rows: list[list[int]] = []
    open_: list[tuple[int, int]] = []  # (row index, fill)
    sizes = n_pos[order].tolist()
    for seg, m in zip(order.tolist(), sizes):
        if m >= L:
            rows.append([seg])
            continue
        for k, (r, fill) in enumerate(open_):
            if fill + m <= L:
                rows[r].append(seg)
                open_[k] = (r, fill + m)
                break
        else:
            rows.append([seg])
            open_.append((len(rows) - 1, m))
            if len(open_) > open_rows:
                open_.pop(0)
    perm = rng.permutation(len(rows)) if rng is not None else np.arange(len(rows))
    seg_by_row = [s for r in perm.tolist() for s in rows[r]]
    row_ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    row_ptr[1:] = np.cumsum([len(rows[r]) for r in perm.tolist()])
    return np.asarray(seg_by_row, dtype=np.int64), row_ptr


class WindowStream:
    """Deterministic, resumable stream of training rows over one split (or over ``patients`` of it: a
    unique-data subset, :func:`ehrscale.tokens.store.data_subset`; an epoch is then one pass over them)."""

    def __init__(self, split: TokenSplit, context_length: int, seed: int, mode: str = "pack", shuffle: bool = True,
                 patients: np.ndarray | None = None) -> None:
        if mode not in WINDOW_MODES:
            raise EhrscaleError(f"window_mode must be one of {WINDOW_MODES}, got {mode!r}")
        self.split, self.L, self.seed, self.mode, self.shuffle = split, int(context_length), int(seed), mode, shuffle
        self.starts, self.n_pos = make_segments(split.offsets, self.L, patients)
        self.n_targets = int(self.n_pos.sum())
        if len(self.starts) == 0:
            raise EhrscaleError(f"{split.path} has no patient with at least two tokens")
        self._plan_epoch: int | None = None
        self._order = self._row_ptr = None

    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(segment order, row pointers) for ``epoch``; cached for the current epoch."""
        if self._plan_epoch != epoch:
            rng = np.random.default_rng([self.seed, int(epoch)]) if self.shuffle else None
            order = rng.permutation(len(self.starts)) if rng is not None else np.arange(len(self.starts))
            self._order, self._row_ptr = pack_rows(self.n_pos, order, self.L, self.mode, rng)
            self._plan_epoch = epoch
        return self._order, self._row_ptr

    def n_rows(self, epoch: int) -> int:
        return len(self.plan(epoch)[1]) - 1

    def rows(self, epoch: int, r0: int, r1: int) -> list[list[tuple[int, int]]]:
        """Rows ``r0:r1`` of ``epoch`` as lists of (start, n_pos) segments."""
        order, ptr = self.plan(epoch)
        out = []
        for r in range(r0, r1):
            segs = order[ptr[r] : ptr[r + 1]]
            out.append(list(zip(self.starts[segs].tolist(), self.n_pos[segs].tolist())))
        return out

    def next_batch(self, epoch: int, row: int, batch_size: int) -> tuple[Batch, int, int]:
        """The batch at position (epoch, row) and the position after it (rolls over epochs)."""
        rows: list[list[tuple[int, int]]] = []
        while len(rows) < batch_size:
            n = self.n_rows(epoch)
            take = min(batch_size - len(rows), n - row)
            rows += self.rows(epoch, row, row + take)
            row += take
            if row >= n:
                epoch, row = epoch + 1, 0
        return self.collate(rows), epoch, row

    def collate(self, rows: list[list[tuple[int, int]]]) -> Batch:
        return collate(self.split.tokens, rows, self.L)


def collate(tokens: np.ndarray, rows: list[list[tuple[int, int]]], L: int) -> Batch:
    b = len(rows)
    inputs = np.zeros((b, L), dtype=np.int64)
    targets = np.full((b, L), -100, dtype=np.int64)
    positions = np.zeros((b, L), dtype=np.int64)
    segments = np.full((b, L), -1, dtype=np.int64)
    packed = False
    n_targets = 0
    for i, segs in enumerate(rows):
        packed |= len(segs) > 1
        f = 0
        for j, (start, m) in enumerate(segs):
            tok = np.asarray(tokens[start : start + m + 1], dtype=np.int64)
            inputs[i, f : f + m] = tok[:-1]
            targets[i, f : f + m] = tok[1:]
            positions[i, f : f + m] = np.arange(m)
            segments[i, f : f + m] = j
            f += m
            n_targets += m
    t = torch.from_numpy
    if packed:
        return Batch(t(inputs), t(targets), t(positions), t(segments), n_targets)
    return Batch(t(inputs), t(targets), None, None, n_targets)


def validation_batches(split: TokenSplit, context_length: int, n_windows: int, batch_size: int, mode: str = "pack", seed: int = 0) -> list[Batch]:
    """The fixed validation windows: the first ``n_windows`` rows of epoch 0 of a stream
    seeded with ``seed``. They depend only on the tokens, the context length, the window
    mode and the seed, never on the model, so every cell is scored on the same windows."""
    stream = WindowStream(split, context_length, seed=seed, mode=mode)
    n = min(int(n_windows), stream.n_rows(0))
    rows = stream.rows(0, 0, n)
    return [stream.collate(rows[i : i + batch_size]) for i in range(0, n, batch_size)]
