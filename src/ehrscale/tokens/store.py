"""The token store: the one owner of the tokenizer's on-disk layout, for every reader.

:mod:`ehrscale.tokens.encode` writes it through :class:`SplitWriter`; training windows (:mod:`ehrscale.train.data`), probe inputs
(:mod:`ehrscale.probe.inputs`) and embeddings (:mod:`ehrscale.probe`) read it through here::

    TOKENS/vocab.json                     see ehrscale.tokens.vocab (fitted on train only)
    TOKENS/stats.json                     vocab_size, per-split n_subjects / n_tokens, tokens_per_subject
    TOKENS/<split>/tokens.npy             uint16 (uint32 if the vocab has > 65536 tokens)
    TOKENS/<split>/offsets.npy            int64, n_subjects + 1; subject i is tokens[offsets[i]:offsets[i+1]]
    TOKENS/<split>/times.npy              int64 µs since epoch of each token (prefix: birth time)
    TOKENS/<split>/subject_ids.npy        int64, n_subjects

Only ``offsets`` (and ``subject_ids``) are read into memory; tokens and times are memmapped.

**The prediction-time cut** (:func:`probe_span`). A probe input for (patient, prediction_time)
is the static prefix followed by the patient's tokens whose time is *strictly before* the
prediction time, truncated from the left to fit ``context_length``. Token times are
non-decreasing within a patient (intervals carry the time of the event that follows them), so
the end is one ``searchsorted``. The ``[TIMELINE_END]`` token is never included. The left cut
falls on an **event boundary**: the kept body starts at the first token that begins an event
(its interval tokens, else its first code token), never at a quantile token, an ICD detail token
without its category, a PCS body-system token without its section, or a code whose interval
tokens were cut off.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ehrscale.core.errors import EhrscaleError
from ehrscale.extract.splits import SPLITS, subject_unit_interval
from ehrscale.tokens.vocab import STATIC_PREFIX_LEN, token_group

__all__ = ["TokenSplit", "SplitWriter", "data_subset", "DATA_SALT", "read_stats", "target_tokens_from_stats", "read_vocab_tokens", "event_start_tables",
           "probe_span", "probe_spans", "probe_input", "earlier_cuts", "history_chains", "split_of_subjects", "to_us"]

ARRAYS = ("tokens", "offsets", "times", "subject_ids")


def _read_store_json(path: Path, what: str, key: str) -> dict:
    """One of the store's JSON files, which must hold ``key``."""
    if not path.exists():
        raise EhrscaleError(f"{what} not found: {path}")
    data = json.loads(path.read_text())
    if key not in data:
        raise EhrscaleError(f"{path} has no '{key}'")
    return data


def read_stats(tokens_dir: str | Path) -> dict:
    return _read_store_json(Path(tokens_dir) / "stats.json", "token stats", "vocab_size")


def target_tokens_from_stats(stats: dict, split: str = "train") -> int | None:
    """Next-token targets in a split: n_tokens - n_subjects (each patient's first token is no target)."""
    s = stats.get("splits", {}).get(split)
    if not s:
        return None
    return int(s["n_tokens"]) - int(s["n_subjects"])


def read_vocab_tokens(tokens_dir: str | Path) -> list[str]:
    return list(_read_store_json(Path(tokens_dir) / "vocab.json", "vocabulary", "tokens")["tokens"])


def event_start_tables(tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per token id: (continues, interval). ``continues``: the token never starts an event (a
    quantile, an ICD detail, an ICD10PCS body-system token after its section); ``interval``:
    an interval token (the token after one never starts an event either)."""
    groups = [token_group(t) for t in tokens]
    continues = np.array([g == "QUANTILE" or g.endswith("_DETAIL") or g == "ICD10PCS" for g in groups], bool)
    interval = np.array([g == "INTERVAL" for g in groups], bool)
    return continues, interval


class TokenSplit:
    """One split of the token store: tokens and times memory-mapped, offsets in memory."""

    def __init__(self, split_dir: str | Path) -> None:
        split_dir = Path(split_dir)
        if not split_dir.is_dir():
            raise EhrscaleError(f"token split directory not found: {split_dir}")
        for name in ("tokens.npy", "offsets.npy"):
            if not (split_dir / name).exists():
                raise EhrscaleError(f"missing {split_dir / name}")
        self.path = split_dir
        self.tokens = np.load(split_dir / "tokens.npy", mmap_mode="r")
        self.offsets = np.asarray(np.load(split_dir / "offsets.npy"), dtype=np.int64)
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or self.offsets[0] != 0 or self.offsets[-1] != len(self.tokens):
            raise EhrscaleError(f"{split_dir / 'offsets.npy'} does not span {split_dir / 'tokens.npy'}")
        lengths = np.diff(self.offsets)
        if (lengths < 0).any():
            raise EhrscaleError(f"{split_dir / 'offsets.npy'} is not non-decreasing")
        self.n_subjects = len(lengths)
        self.n_targets = int(np.maximum(lengths - 1, 0).sum())
        self._times = self._sids = self._starts = None

    @property
    def times(self) -> np.ndarray:
        if self._times is None:
            self._times = self._load("times", mmap=True)
            if len(self._times) != len(self.tokens):
                raise EhrscaleError(f"{self.path / 'times.npy'} and tokens.npy differ in length")
        return self._times

    @property
    def subject_ids(self) -> np.ndarray:
        if self._sids is None:
            self._sids = np.asarray(self._load("subject_ids", mmap=False), np.int64)
            if len(self._sids) != self.n_subjects:
                raise EhrscaleError(f"{self.path / 'subject_ids.npy'} does not match offsets.npy")
        return self._sids

    def _load(self, name: str, mmap: bool) -> np.ndarray:
        path = self.path / f"{name}.npy"
        if not path.exists():
            raise EhrscaleError(f"missing {path}")
        return np.load(path, mmap_mode="r" if mmap else None)

    @property
    def start_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(continues, interval) per token id, from the store's vocab.json (see :func:`event_start_tables`)."""
        if self._starts is None:
            self._starts = event_start_tables(read_vocab_tokens(self.path.parent))
        return self._starts

    def __len__(self) -> int:
        return self.n_subjects

    def index_of(self, subject_ids) -> np.ndarray:
        """Row index of each subject id (raises if one is absent)."""
        sids = self.subject_ids
        q = np.asarray(subject_ids, np.int64)
        if len(sids) == 0:
            if len(q):
                raise EhrscaleError(f"subject_id(s) not in this token split ({self.path}): {q[:5].tolist()}")
            return np.zeros(0, np.int64)
        order = np.argsort(sids, kind="stable")
        pos = np.clip(np.searchsorted(sids[order], q), 0, len(sids) - 1)
        bad = sids[order][pos] != q
        if bad.any():
            raise EhrscaleError(f"subject_id(s) not in this token split ({self.path}): {q[bad][:5].tolist()}")
        return order[pos]

    def subject(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return np.asarray(self.tokens[a:b]), np.asarray(self.times[a:b])


DATA_SALT = "ehrscale-data"  # the unique-data subsets' hash key: independent of the split's


def data_subset(split: TokenSplit, fraction: float) -> np.ndarray:
    """The patients (row indices, ascending) of a unique-data subset of ``split``: those whose keyed hash
    of subject_id is below ``fraction``. The subset of a smaller fraction lies inside every larger one,
    growing the cohort never moves a patient out, and 1 is the whole split (a data-constrained grid trains
    on these; validation and probes always use the whole tuning and held_out splits)."""
    if not 0 < fraction <= 1:
        raise EhrscaleError(f"a data fraction must be in (0, 1], got {fraction}")
    if fraction >= 1:
        return np.arange(split.n_subjects)
    return np.flatnonzero(subject_unit_interval(split.subject_ids, DATA_SALT) < fraction)


def subset_targets(split: TokenSplit, patients: np.ndarray) -> int:
    """Next-token targets of ``patients`` (each patient's first token is no target): a subset's U."""
    lengths = split.offsets[np.asarray(patients) + 1] - split.offsets[np.asarray(patients)]
    return int(np.maximum(lengths - 1, 0).sum())


def split_of_subjects(tokens_dir: str | Path, subject_ids) -> np.ndarray:
    """The split name of each subject id (object array), from the token store's subject lists.

    Label files carry only the MEDS label columns; which split an example belongs to is a fact
    of the store. Raises naming the ids found in no split."""
    q = np.asarray(subject_ids, np.int64)
    out = np.full(len(q), None, dtype=object)
    for split in SPLITS:
        d = Path(tokens_dir) / split
        if not (d / "subject_ids.npy").exists():
            continue
        out[np.isin(q, np.load(d / "subject_ids.npy"))] = split
    missing = q[out == None]  # noqa: E711
    if len(missing):
        raise EhrscaleError(f"subject_id(s) in no split of the token store {tokens_dir}: {missing[:5].tolist()}")
    return out


def to_us(t) -> np.ndarray | int:
    """Timestamps (numpy datetime64 / pandas / int µs) -> int64 µs since epoch."""
    a = np.asarray(t)
    if np.issubdtype(a.dtype, np.datetime64):
        a = a.astype("datetime64[us]").astype(np.int64)
    elif a.dtype == object:
        a = np.asarray([np.datetime64(x, "us") for x in a.ravel()]).astype(np.int64).reshape(a.shape)
    else:
        a = a.astype(np.int64)
    return int(a) if a.ndim == 0 else a


def _first_event_starts(split: TokenSplit, lo: np.ndarray, hi: np.ndarray, floor: np.ndarray, chunk: int = 32) -> np.ndarray:
    """Per example, the first index in [lo, hi) that starts an event, hi when none does; ``floor``
    (the body start) itself when lo <= floor. Scans forward ``chunk`` tokens at a time, so only
    the few tokens after each lo are read."""
    out = np.where(lo <= floor, floor, hi)
    todo = np.flatnonzero((lo > floor) & (lo < hi))
    pos = lo[todo]
    if not len(todo):
        return out
    continues, interval = split.start_tables
    step = np.arange(chunk)
    while len(todo):
        j = pos[:, None] + step
        stop = hi[todo][:, None]
        j_in = np.minimum(j, stop - 1)
        tok = np.asarray(split.tokens[j_in.ravel()], np.int64).reshape(j.shape)
        before = np.asarray(split.tokens[(j_in - 1).ravel()], np.int64).reshape(j.shape)  # j - 1 >= lo - 1 >= floor
        starts = ~continues[tok] & ~interval[before] & (j < stop)
        found = starts.any(1)
        out[todo[found]] = pos[found] + starts[found].argmax(1)
        more = ~found & (pos + chunk < hi[todo])
        todo, pos = todo[more], pos[more] + chunk
    return out


def _search_left(times: np.ndarray, lo: np.ndarray, hi: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per example, the first index in [lo, hi) whose time is >= t (hi when none): a vectorised
    ``searchsorted(side="left")`` of each example's own sorted range."""
    lo, hi = lo.copy(), hi.copy()
    while True:
        active = np.flatnonzero(lo < hi)
        if not len(active):
            return lo
        mid = (lo[active] + hi[active]) // 2
        before = np.asarray(times[mid]) < t[active]
        lo[active[before]] = mid[before] + 1
        hi[active[~before]] = mid[~before]


def probe_spans(split: TokenSplit, patient_index, prediction_time, context_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, cut, end) per example (absolute indices): the prefix is tokens[start:start+P], the
    body tokens[cut:end], for arrays of patient indices and prediction times."""
    if context_length <= STATIC_PREFIX_LEN:
        raise EhrscaleError(f"context_length must exceed the static prefix ({STATIC_PREFIX_LEN}), got {context_length}")
    idx = np.atleast_1d(np.asarray(patient_index, np.int64))
    bad = (idx < 0) | (idx >= len(split))
    if bad.any():
        raise EhrscaleError(f"patient_index {int(idx[bad][0])} out of range for a split of {len(split)} subjects")
    t = np.atleast_1d(to_us(prediction_time)).astype(np.int64)
    a, b = split.offsets[idx], split.offsets[idx + 1]
    body_start, body_stop = a + STATIC_PREFIX_LEN, b - 1  # exclude [TIMELINE_END]
    end = _search_left(split.times, body_start, np.maximum(body_stop, body_start), t)
    cut = _first_event_starts(split, np.maximum(body_start, end - (context_length - STATIC_PREFIX_LEN)), end, body_start)
    return a, cut, end


def probe_span(split: TokenSplit, patient_index: int, prediction_time, context_length: int) -> tuple[int, int, int]:
    """(start, cut, end) of one example (see :func:`probe_spans`)."""
    a, cut, end = probe_spans(split, [patient_index], [to_us(prediction_time)], context_length)
    return int(a[0]), int(cut[0]), int(end[0])


def earlier_cuts(split: TokenSplit, patient_index, cut, context_length: int) -> np.ndarray:
    """Per example, the cut of the window just before a body that starts at ``cut``: the earlier
    window's body is ``tokens[earlier:cut]``, where ``earlier`` is the first event start at or
    after ``cut - (context_length - P)``, never before the body start (the same event-boundary
    rule as :func:`probe_spans`' left cut, applied at ``cut`` instead of at the end).

    Returns ``cut`` itself when there is no earlier window: ``cut`` is the body start, or no event
    starts in the budget before it (one event longer than the context; what lies before it is not
    reachable at an event boundary). Every earlier window ends at ``cut``, so a chain of them
    starting from a probe cut never reads a token at or after that cut."""
    if context_length <= STATIC_PREFIX_LEN:
        raise EhrscaleError(f"context_length must exceed the static prefix ({STATIC_PREFIX_LEN}), got {context_length}")
    idx = np.atleast_1d(np.asarray(patient_index, np.int64))
    c = np.atleast_1d(np.asarray(cut, np.int64))
    if idx.shape != c.shape:
        raise EhrscaleError(f"earlier_cuts: {len(idx)} patient indices but {len(c)} cuts")
    bad = (idx < 0) | (idx >= len(split))
    if bad.any():
        raise EhrscaleError(f"patient_index {int(idx[bad][0])} out of range for a split of {len(split)} subjects")
    body_start = split.offsets[idx] + STATIC_PREFIX_LEN
    body_stop = np.maximum(split.offsets[idx + 1] - 1, body_start)
    outside = (c < body_start) | (c > body_stop)
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        raise EhrscaleError(f"cut {int(c[k])} is outside patient {int(idx[k])}'s body [{int(body_start[k])}, {int(body_stop[k])}]")
    return _first_event_starts(split, np.maximum(body_start, c - (context_length - STATIC_PREFIX_LEN)), c, body_start)


def history_chains(split: TokenSplit, patient_index, cut, context_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every earlier window of every example, walking :func:`earlier_cuts` back from ``cut`` until
    it reaches the body start (or can go no further). Returns flat arrays ``(example, start, lo, hi)``:
    earlier window ``k`` (k = 1, 2, ...) of example ``example`` is the prefix ``tokens[start:start+P]``
    and the body ``tokens[lo:hi]``, with ``hi`` = cut_{k-1} (cut_0 = ``cut``) and ``lo`` = cut_k;
    rows are ordered by k, then by example. Windows are not deduplicated here."""
    idx = np.atleast_1d(np.asarray(patient_index, np.int64))
    cur = np.atleast_1d(np.asarray(cut, np.int64)).copy()
    ex = np.arange(len(idx))
    out: list[tuple[np.ndarray, ...]] = []
    while len(ex):
        nxt = earlier_cuts(split, idx, cur, context_length)
        go = nxt < cur
        ex, idx, lo, hi = ex[go], idx[go], nxt[go], cur[go]
        out.append((ex, split.offsets[idx], lo, hi))
        cur = lo
    if not out:
        return tuple(np.zeros(0, np.int64) for _ in range(4))  # type: ignore[return-value]
    return tuple(np.concatenate([o[j] for o in out]).astype(np.int64) for j in range(4))  # type: ignore[return-value]


def probe_input(split: TokenSplit, patient_index: int, prediction_time, context_length: int) -> np.ndarray:
    """The patient's token ids for a prediction at ``prediction_time`` (at most ``context_length``)."""
    a, cut, end = probe_span(split, patient_index, prediction_time, context_length)
    tok = split.tokens
    return np.concatenate([np.asarray(tok[a : a + STATIC_PREFIX_LEN]), np.asarray(tok[cut:end])]).astype(np.int64)


# ---------------------------------------------------------------------------- writing


class NpyAppender:
    """Write a 1-D ``.npy`` file by appending chunks; the header is fixed up on close."""

    HEADER_BYTES = 128

    def __init__(self, path: Path, dtype):
        self.path, self.dtype, self.n = path, np.dtype(dtype), 0
        self.f = open(path, "wb")
        self.f.write(b"\0" * self.HEADER_BYTES)

    def append(self, arr: np.ndarray) -> None:
        a = np.ascontiguousarray(arr, dtype=self.dtype)
        self.f.write(memoryview(a).cast("B"))
        self.n += a.size

    def close(self) -> None:
        header = "{'descr': %r, 'fortran_order': False, 'shape': (%d,), }" % (
            np.lib.format.dtype_to_descr(self.dtype),
            self.n,
        )
        room = self.HEADER_BYTES - 10
        body = header.ljust(room - 1).encode("latin1") + b"\n"
        if len(body) != room:
            raise EhrscaleError("npy header overflow")  # pragma: no cover
        self.f.seek(0)
        self.f.write(b"\x93NUMPY\x01\x00" + room.to_bytes(2, "little") + body)
        self.f.close()


class SplitWriter:
    """The one writer of a split's arrays: whole subjects appended in order, headers fixed on close.

    Memory holds only the per-subject lengths and ids, never the tokens, so a split of any size
    streams through it (``ehrscale.tokens.encode`` appends one MEDS shard at a time).
    """

    def __init__(self, split_dir: str | Path, dtype) -> None:
        self.path = Path(split_dir)
        self.path.mkdir(parents=True, exist_ok=True)
        self._tokens = NpyAppender(self.path / "tokens.npy", dtype)
        self._times = NpyAppender(self.path / "times.npy", np.int64)
        self._offsets = NpyAppender(self.path / "offsets.npy", np.int64)
        self._sids = NpyAppender(self.path / "subject_ids.npy", np.int64)
        self._offsets.append(np.zeros(1, np.int64))
        self._total = 0
        self._lengths: list[np.ndarray] = []
        self._subject_ids: list[np.ndarray] = []

    def append(self, tokens: np.ndarray, times: np.ndarray, subject_ids: np.ndarray, lengths: np.ndarray) -> None:
        """Subjects ``subject_ids``, whose streams of ``lengths`` tokens lie end to end in ``tokens`` and ``times``."""
        lengths = np.asarray(lengths, np.int64)
        self._tokens.append(tokens)
        self._times.append(times)
        self._sids.append(subject_ids)
        self._offsets.append(self._total + np.cumsum(lengths))
        self._total += int(lengths.sum())
        self._lengths.append(lengths)
        self._subject_ids.append(np.asarray(subject_ids, np.int64))

    def close(self) -> None:
        for appender in (self._tokens, self._times, self._offsets, self._sids):
            appender.close()

    def __enter__(self) -> "SplitWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def lengths(self) -> np.ndarray:
        return np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)

    @property
    def subject_ids(self) -> np.ndarray:
        return np.concatenate(self._subject_ids) if self._subject_ids else np.zeros(0, np.int64)
