"""MEDS timelines -> ETHOS-style token streams (``ehrscale tokenize MEDS_DIR TOKENS_DIR``).

This module only writes the token store; every reader goes through :mod:`ehrscale.tokens.store`,
which owns the layout (documented there). The store is written atomically as one directory.

Every subject's stream is ``[GENDER RACE MARITAL AGE] (intervals* code-tokens Q?)* [TIMELINE_END]``
(token design in :mod:`ehrscale.tokens.vocab`). Event order is the MEDS row order (subject_id, time, then
the extractor's stable order for equal times). Times are non-decreasing within a subject:

* static prefix: the ``MEDS_BIRTH`` time (the first timed event when a subject has none), so with
  a birth event the prefix is strictly earlier than any clinical event;
* interval tokens: the time of the event that *follows* them (a probe cut never sees a gap that
  has not elapsed yet);
* code and quantile tokens: their event's time; ``[TIMELINE_END]``: the last event's time.

How raw codes become tokens (hierarchy, renames, which codes fill the prefix) is the code map's
(``tokenize.code_map``, :mod:`ehrscale.tokens.codemap`: ``mimic`` by default, ``generic`` for any MEDS dataset).
Dropped (documented lossy steps): ``text_value``; static (null-time) codes other than the code
map's gender codes; race events (folded into the prefix). Windowing for training (never across
patients) lives in :mod:`ehrscale.train.data`; the prediction-time cut in :mod:`ehrscale.tokens.store`.

Memory does not grow with the cohort: the vocabulary is fitted by DuckDB aggregates over the
train shards, and the streams are encoded one parquet shard at a time (a subject never spans
shards) and appended to the ``.npy`` files, whose headers are fixed up at the end. Encoding is
vectorised (numpy/pyarrow): the parquet dictionary of ``code`` is mapped to token ids once per
distinct code string, intervals come from ``np.diff`` + ``searchsorted``, quantiles from 9 vector
comparisons, and the stream is interleaved with index arithmetic.
"""

from __future__ import annotations

import argparse
import json
import logging
import time as _time
from dataclasses import asdict, dataclass
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.files import atomic_dir, check_writable, write_json
from ehrscale.core.settings import load_settings
from ehrscale.core.sql import (
    add_duckdb_arguments,
    apply_duckdb_arguments,
    check_memory_limit,
    connect,
    duckdb_failure,
    parse_memory,
    quote_list,
)
from ehrscale.extract.dataset import split_shards
from ehrscale.extract.splits import SPLITS
from ehrscale.tokens.codemap import load_code_map
from ehrscale.tokens.store import SplitWriter
from ehrscale.tokens.vocab import (
    AGE_BIN_YEARS,
    AGE_TOKENS,
    END,
    INTERVAL_EDGES_US,
    INTERVAL_LONG,
    INTERVAL_TOKENS,
    MIN_INTERVAL_US,
    N_AGE_BINS,
    PAD,
    ROLE_BIRTH,
    ROLE_EVENT,
    ROLE_GENDER,
    ROLE_RACE,
    SIX_MONTHS_US,
    STATIC_PREFIX_LEN,
    Vocab,
    build_vocab,
    code_role,
    expand_code,
    gender_token,
    marital_token,
    race_group,
    token_group,
)

log = logging.getLogger(__name__)

YEAR_US = 365.25 * 24 * 3600 * 1_000_000
MAX_EXPANSION = 3
COLUMNS = ["subject_id", "time", "code", "numeric_value"]
_NULL_TIME = -(2**62)  # static (null-time) rows; far from any real time, and diff-safe


@dataclass
class TokenizeSettings:
    """Settings of ``ehrscale tokenize`` (section ``tokenize`` of the config)."""

    min_count: int = 5  # train occurrences a token needs; rarer ones map to <GROUP>//[UNK]
    n_bins: int = 10  # quantile bins of numeric values (Q1..Qn), edges from train only
    threads: int = 2  # threads for the vocabulary-fitting queries
    memory_limit: str = "2GB"  # DuckDB's memory cap while fitting the vocabulary
    exact_quantiles: bool = True  # quantile_cont (exact; holds the train values of an item) or
    # approx_quantile (t-digest, bounded memory) for the decile edges
    chunk_rows: int = 1_000_000  # MEDS rows encoded at once (whole subjects): bounds memory, ~250 bytes a row
    code_map: str = "mimic"  # how codes become tokens: a built-in code map (mimic | mimic_iv_meds | generic)
    # or a YAML file (ehrscale.tokens.codemap)

    def __post_init__(self) -> None:
        for name in ("min_count", "n_bins", "threads", "chunk_rows"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise EhrscaleError(f"tokenize.{name} must be a positive integer, got {v!r}")
        if not 2 <= self.n_bins <= 100:
            raise EhrscaleError(f"tokenize.n_bins must be in [2, 100], got {self.n_bins}")
        if not isinstance(self.exact_quantiles, bool):
            raise EhrscaleError(f"tokenize.exact_quantiles must be true or false, got {self.exact_quantiles!r}")
        if not isinstance(self.code_map, str) or not self.code_map:
            raise EhrscaleError(f"tokenize.code_map must be a code map name or a YAML path, got {self.code_map!r}")
        load_code_map(self.code_map)  # fails now, naming the key, if it is neither
        check_memory_limit(self.memory_limit, "tokenize.memory_limit")


# --------------------------------------------------------------------------- MEDS input


# Exact quantiles hold every value of the items being aggregated, and DuckDB cannot spill that
# state; so the items are aggregated a batch at a time, each batch's values within this share of
# DuckDB's limit (a value costs ~QUANTILE_BYTES_PER_VALUE in the aggregate's state).
QUANTILE_MEMORY_SHARE = 0.5
QUANTILE_BYTES_PER_VALUE = 32


def fit_vocab(train_shards: list[Path], settings: TokenizeSettings) -> Vocab:
    """Count codes and compute numeric quantile edges over the train shards with DuckDB, in memory
    bounded by ``settings.memory_limit`` at any cohort size (exact quantiles: a batch of items at a time)."""
    import duckdb

    if not train_shards:
        raise EhrscaleError("empty cohort: the MEDS train split has no parquet shards (data/train/*.parquet)")
    con = connect(threads=settings.threads, memory_limit=settings.memory_limit)
    src = f"read_parquet({quote_list(train_shards)})"
    numeric = "numeric_value IS NOT NULL AND isfinite(numeric_value)"
    try:
        rows = con.execute(  # counts spill under the limit; ordered for stable vocab.json bytes
            f"SELECT code, count(*), count(*) FILTER (WHERE {numeric}) FROM {src} "
            "WHERE code IS NOT NULL GROUP BY code ORDER BY code"
        ).fetchall()
        counts = {code: int(n) for code, n, _ in rows}
        edges = _quantile_edges(con, src, numeric, {code: n for code, _, n in rows if n}, settings)
    except duckdb.Error as err:
        raise duckdb_failure(err, "cannot read the MEDS train shards", settings.memory_limit) from err
    finally:
        con.close()
    if not counts:
        raise EhrscaleError("empty cohort: the MEDS train split has no events")
    return build_vocab(counts, edges, min_count=settings.min_count, n_bins=settings.n_bins,
                       code_map=load_code_map(settings.code_map))


def _quantile_edges(con, src: str, numeric: str, n_values: dict[str, int], settings: TokenizeSettings) -> dict:
    """Decile edges (n_bins - 1 quantiles) of each code's train values: ``{code: [edge, ...]}``."""
    qs = [i / settings.n_bins for i in range(1, settings.n_bins)]
    if not settings.exact_quantiles:  # t-digest: bounded state, one pass
        batches = [None]
    else:
        budget = max(1, int(parse_memory(settings.memory_limit) * QUANTILE_MEMORY_SHARE / QUANTILE_BYTES_PER_VALUE))
        batches = _batches(n_values, budget)
    agg = "quantile_cont" if settings.exact_quantiles else "approx_quantile"
    edges = {}
    for i, batch in enumerate(batches):
        where = f"code IS NOT NULL AND {numeric}"
        if batch is not None:
            con.execute("CREATE OR REPLACE TEMP TABLE quantile_batch AS SELECT unnest($1::VARCHAR[]) AS code", [batch])
            where += " AND code IN (SELECT code FROM quantile_batch)"
        t0 = _time.perf_counter()
        edges.update(con.execute(f"SELECT code, {agg}(numeric_value::DOUBLE, {qs}) FROM {src} "
                                 f"WHERE {where} GROUP BY code").fetchall())
        if len(batches) > 1:
            log.info("quantile edges: batch %d/%d, %d items (%.1fs)", i + 1, len(batches), len(batch),
                     _time.perf_counter() - t0)
    return {code: list(e) for code, e in sorted(edges.items())}


def _batches(n_values: dict[str, int], budget: int) -> list[list[str]]:
    """Codes in runs whose values sum to at most ``budget`` (a code with more is a run of its own)."""
    out: list[list[str]] = []
    total = budget + 1
    for code, n in n_values.items():
        if total + n > budget:
            out.append([])
            total = 0
        out[-1].append(code)
        total += n
    return out


# --------------------------------------------------------------------------- encoding


class CodeTable:
    """Lookup columns indexed by a global code id, grown lazily from the distinct codes of each shard.

    Each distinct code string is expanded once (``expand_code`` + vocabulary lookup); a shard then
    maps its parquet dictionary to global ids with one dict lookup per distinct code, and every
    per-row property is a ``take`` from a small, cache-resident column.
    """

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self.ids: dict[str, int] = {}
        self._rows: list[tuple] = []
        self._n_built = -1
        self.nb = vocab.n_bins - 1

    def _add(self, code: str) -> int:
        v, cmap = self.vocab, self.vocab.code_map
        role = code_role(code, cmap)
        toks = expand_code(code, cmap)
        ids = [v.lookup(t) for t in toks] + [-1] * (MAX_EXPANSION - len(toks))
        edges = None
        if toks and all(i == v.token_to_id.get(t) for i, t in zip(ids, toks)):
            edges = v.edges.get(cmap.canonical(code))
        value = cmap.static_value(code)
        static = -1
        if role == ROLE_GENDER:
            static = v.token_to_id[gender_token(value)]
        elif role == ROLE_RACE:
            static = v.token_to_id[f"RACE//{race_group(value)}"]
        marital = v.token_to_id[marital_token(value)] if cmap.is_marital(code) else -1
        self._rows.append((role, ids, len(toks), edges, static, marital))
        self.ids[code] = len(self._rows) - 1
        return self.ids[code]

    def global_ids(self, dictionary: list) -> np.ndarray:
        ids = self.ids
        keys = ["[NULL]" if c is None else c for c in dictionary]  # a null code maps to [UNK]
        out = np.fromiter((ids[c] if c in ids else self._add(c) for c in keys), np.int64, len(keys))
        if len(self._rows) != self._n_built:
            self._build()
        return out

    def _build(self) -> None:
        rows = self._rows
        self.role = np.array([r[0] for r in rows], np.int8)
        exp = np.array([r[1] for r in rows], np.int64).reshape(len(rows), MAX_EXPANSION)
        self.exp = [np.ascontiguousarray(exp[:, j]) for j in range(MAX_EXPANSION)]
        self.n_exp = np.array([r[2] for r in rows], np.int64)
        self.has_edges = np.array([r[3] is not None for r in rows], bool)
        edges = np.array([r[3] if r[3] is not None else [np.inf] * self.nb for r in rows], np.float64)
        self.edges = [np.ascontiguousarray(edges.reshape(len(rows), self.nb)[:, j]) for j in range(self.nb)]
        self.static = np.array([r[4] for r in rows], np.int64)
        self.marital = np.array([r[5] for r in rows], np.int64)
        self._n_built = len(rows)


@dataclass
class Encoded:
    tokens: np.ndarray  # vocab dtype
    times: np.ndarray  # int64 µs
    subject_ids: np.ndarray  # int64, one per subject
    lengths: np.ndarray  # int64 tokens per subject


def _first_per_subject(subj: np.ndarray, rows: np.ndarray, values: np.ndarray, n_subj: int, default) -> np.ndarray:
    """values (aligned with rows) at the first of ``rows`` of each subject (rows sorted); default if none."""
    out = np.full(n_subj, default, dtype=np.asarray(values).dtype)
    if rows.size:
        s = subj[rows]
        first = np.r_[True, s[1:] != s[:-1]]
        out[s[first]] = values[first]
    return out


def _code_indices(col: pa.ChunkedArray) -> tuple[np.ndarray, list]:
    """Dictionary indices and dictionary of the code column (read as a dictionary when possible)."""
    if pa.types.is_dictionary(col.type):
        col = col.unify_dictionaries() if col.num_chunks > 1 else col
        if col.num_chunks == 0:
            return np.zeros(0, np.int64), []
        idx = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in col.chunks]).astype(np.int64)
        return idx, col.chunk(0).dictionary.to_pylist()
    enc = pc.dictionary_encode(col).combine_chunks()
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary.to_pylist()


@dataclass
class _Rows:
    """A shard's rows in (subject, time) order: each row's subject index, time and global code id."""

    subj: np.ndarray  # 0..n_subj-1 per row
    subject_ids: np.ndarray  # one per subject
    time: np.ndarray  # µs, _NULL_TIME for static rows
    local: np.ndarray  # index into ``dictionary``
    dictionary: list
    gid: np.ndarray  # CodeTable id per row
    role: np.ndarray
    numeric: pa.ChunkedArray

    @property
    def n_subj(self) -> int:
        return len(self.subject_ids)


def _read_rows(table: pa.Table, codes: CodeTable) -> _Rows:
    sid = table.column("subject_id").to_numpy().astype(np.int64, copy=False)
    tcol = table.column("time")
    if not pa.types.is_timestamp(tcol.type):
        raise EhrscaleError(f"MEDS column 'time' must be a timestamp, got {tcol.type}")
    tcol = pc.cast(tcol, pa.timestamp("us")).cast(pa.int64())
    time = pc.fill_null(tcol, _NULL_TIME).to_numpy().astype(np.int64, copy=False)
    # MEDS guarantees the order; re-sort (stably) only if a shard breaks it
    dsid = np.diff(sid)
    if (dsid < 0).any() or ((dsid == 0) & (np.diff(time) < 0)).any():
        order = np.lexsort((time, sid))
        table, sid, time = table.take(order), sid[order], time[order]
    local, dictionary = _code_indices(table.column("code"))
    gid = codes.global_ids(dictionary).take(local)
    change = np.flatnonzero(sid[1:] != sid[:-1]) + 1
    subj = np.zeros(len(sid), np.int64)
    subj[change] = 1
    return _Rows(np.cumsum(subj), sid[np.r_[0, change]], time, local, dictionary, gid, codes.role.take(gid),
                 table.column("numeric_value"))


def _prefix_tokens(rows: _Rows, vocab: Vocab, codes: CodeTable) -> tuple[list[np.ndarray], np.ndarray]:
    """Per subject: the static prefix's four token ids, and the time of ``MEDS_BIRTH`` (_NULL_TIME if none)."""
    subj, time, gid, role, n_subj = rows.subj, rows.time, rows.gid, rows.role, rows.n_subj
    timed = time != _NULL_TIME
    v = vocab.token_to_id
    r = np.flatnonzero(role == ROLE_GENDER)
    gender = _first_per_subject(subj, r, codes.static.take(gid[r]), n_subj, v["GENDER//UNKNOWN"])
    # Race and marital status come from the first admission only: taking the first non-null
    # value would reveal, in every probe's prefix, that a later admission exists.
    is_admission = np.fromiter((c is not None and vocab.code_map.is_first_admission(c) for c in rows.dictionary), bool,
                               len(rows.dictionary))
    marital_of = codes.marital.take(gid)
    admission_fact = is_admission[rows.local] | (role == ROLE_RACE) | (marital_of >= 0)
    r = np.flatnonzero(admission_fact & timed)
    first_admission = _first_per_subject(subj, r, time[r], n_subj, _NULL_TIME)
    at_first_admission = timed & (time == first_admission[subj])
    r = np.flatnonzero((role == ROLE_RACE) & at_first_admission)
    race = _first_per_subject(subj, r, codes.static.take(gid[r]), n_subj, v["RACE//UNKNOWN"])
    r = np.flatnonzero((marital_of >= 0) & at_first_admission)
    marital = _first_per_subject(subj, r, codes.marital.take(gid[r]), n_subj, v["MARITAL//UNKNOWN"])
    r = np.flatnonzero((role == ROLE_BIRTH) & timed)
    birth = _first_per_subject(subj, r, time[r], n_subj, _NULL_TIME)
    return [gender, race, marital], birth


@dataclass
class _Events:
    """The clinical events (rows of role ROLE_EVENT with a time) and how many tokens each becomes."""

    row: np.ndarray  # row index of each event
    subj: np.ndarray
    time: np.ndarray
    code: np.ndarray  # CodeTable id
    k6: np.ndarray  # whole six-month gaps before the event (one INTERVAL//6mt token each)
    rem: np.ndarray  # the rest of the gap
    n_int: np.ndarray  # interval tokens before the event
    n_code: np.ndarray  # code tokens (the code's hierarchy)
    rq: np.ndarray  # events with a quantile token
    q: np.ndarray | None  # their quantile bin
    total: np.ndarray  # tokens per event

    def __len__(self) -> int:
        return len(self.row)


def _events(rows: _Rows, codes: CodeTable) -> _Events:
    ev = np.flatnonzero((rows.role == ROLE_EVENT) & (rows.time != _NULL_TIME))
    e_subj, e_time, e_code = rows.subj[ev], rows.time[ev], rows.gid[ev]
    n_ev = len(ev)
    # interval tokens between consecutive distinct event times of a subject
    gap = np.zeros(n_ev, np.int64)
    if n_ev > 1:
        np.subtract(e_time[1:], e_time[:-1], out=gap[1:])
        gap[1:][e_subj[1:] != e_subj[:-1]] = 0
    k6 = gap // SIX_MONTHS_US
    rem = gap - k6 * SIX_MONTHS_US
    n_int = k6 + (rem >= MIN_INTERVAL_US)
    n_code = codes.n_exp.take(e_code)
    # quantile token: numeric value present and the item has train edges
    rq = np.flatnonzero(codes.has_edges.take(e_code))
    q = None
    num = rows.numeric
    if rq.size and num.null_count < len(rows.time):
        vals = pc.fill_null(num.take(pa.array(ev[rq])), np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
        ok = np.isfinite(vals)
        rq, vals = rq[ok], vals[ok]
        cq = e_code[rq]
        q = np.zeros(len(rq), np.int64)
        for col in codes.edges:
            q += vals >= col.take(cq)
    else:
        rq = rq[:0]
    has_q = np.zeros(n_ev, np.int64)
    has_q[rq] = 1
    return _Events(ev, e_subj, e_time, e_code, k6, rem, n_int, n_code, rq, q, n_int + n_code + has_q)


def _age_tokens(events: _Events, birth: np.ndarray, vocab: Vocab, n_subj: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per subject: the age token at the first event, and the first and last event times (_NULL_TIME if none)."""
    has_ev = np.zeros(n_subj, bool)
    has_ev[events.subj] = True
    first_time = _first_per_subject(events.subj, np.arange(len(events)), events.time, n_subj, _NULL_TIME)
    last_time = np.full(n_subj, _NULL_TIME, np.int64)
    if len(events):
        last = np.flatnonzero(np.r_[events.subj[1:] != events.subj[:-1], True])
        last_time[events.subj[last]] = events.time[last]
    ok_age = (birth != _NULL_TIME) & has_ev & (first_time >= birth)
    age_bin = np.full(n_subj, len(AGE_TOKENS) - 1, np.int64)  # AGE//UNKNOWN
    years = (first_time[ok_age] - birth[ok_age]) / YEAR_US
    age_bin[ok_age] = np.minimum((years // AGE_BIN_YEARS).astype(np.int64), N_AGE_BINS - 1)
    return np.array([vocab.token_to_id[t] for t in AGE_TOKENS], np.int64)[age_bin], first_time, last_time


def _stream_times(events: _Events, prefix_time: np.ndarray, end_time: np.ndarray) -> np.ndarray:
    """One time per token: each item (prefix, event, end) repeated over the item's tokens."""
    n_subj, n_ev = len(prefix_time), len(events)
    item_time = np.empty(n_ev + 2 * n_subj, np.int64)
    item_len = np.empty(n_ev + 2 * n_subj, np.int64)
    ev_count = np.bincount(events.subj, minlength=n_subj)
    p_item = np.cumsum(ev_count) - ev_count + 2 * np.arange(n_subj)
    e_item = np.arange(n_ev) + 2 * events.subj + 1
    end_item = p_item + ev_count + 1
    item_time[p_item], item_len[p_item] = prefix_time, STATIC_PREFIX_LEN
    item_time[e_item], item_len[e_item] = events.time, events.total
    item_time[end_item], item_len[end_item] = end_time, 1
    return np.repeat(item_time, item_len)


def _place_event_tokens(out_tok: np.ndarray, events: _Events, vocab: Vocab, codes: CodeTable) -> None:
    """Write each event's interval, code and quantile tokens at its place in the stream."""
    e, v = events, vocab.token_to_id
    pos = (STATIC_PREFIX_LEN + 1) * e.subj + STATIC_PREFIX_LEN + (np.cumsum(e.total) - e.total)
    ri = np.flatnonzero(e.n_int)
    if ri.size:
        cnt = e.n_int[ri]
        rep = np.repeat(ri, cnt)
        within = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        rem_bin = np.searchsorted(INTERVAL_EDGES_US, e.rem[rep], side="right") - 1
        ids = np.where(within < e.k6[rep], v[INTERVAL_LONG], vocab.interval_ids.take(np.maximum(rem_bin, 0)))
        out_tok[pos[rep] + within] = ids
    base = pos + e.n_int
    out_tok[base] = codes.exp[0].take(e.code)
    for j in range(1, MAX_EXPANSION):
        m = np.flatnonzero(e.n_code > j)
        out_tok[base[m] + j] = codes.exp[j].take(e.code[m])
    if e.rq.size:
        out_tok[base[e.rq] + e.n_code[e.rq]] = vocab.q_ids.take(e.q)


def encode_table(table: pa.Table, vocab: Vocab, codes: CodeTable) -> Encoded:
    """Encode the events of whole subjects (one MEDS shard) into one token stream."""
    if table.num_rows == 0:
        z = np.zeros(0, np.int64)
        return Encoded(np.zeros(0, vocab.dtype), z, z, z)
    rows = _read_rows(table, codes)
    n_subj = rows.n_subj
    static, birth = _prefix_tokens(rows, vocab, codes)
    events = _events(rows, codes)
    age_ids, first_time, last_time = _age_tokens(events, birth, vocab, n_subj)
    r = np.flatnonzero(rows.time != _NULL_TIME)
    any_time = _first_per_subject(rows.subj, r, rows.time[r], n_subj, 0)
    has_ev = first_time != _NULL_TIME
    prefix_time = np.where(birth != _NULL_TIME, birth, np.where(has_ev, first_time, any_time))
    end_time = np.where(has_ev, last_time, prefix_time)

    lengths = np.bincount(events.subj, weights=events.total, minlength=n_subj).astype(np.int64) + STATIC_PREFIX_LEN + 1
    starts = np.cumsum(lengths) - lengths
    out_tok = np.empty(int(lengths.sum()), np.int64)
    for j, ids in enumerate((*static, age_ids)):
        out_tok[starts + j] = ids
    out_tok[starts + lengths - 1] = vocab.token_to_id[END]
    if len(events):
        _place_event_tokens(out_tok, events, vocab, codes)
    return Encoded(out_tok.astype(vocab.dtype), _stream_times(events, prefix_time, end_time), rows.subject_ids, lengths)


def encode(events, vocab: Vocab) -> Encoded:
    """Encode MEDS events (a pyarrow Table or pandas DataFrame with subject_id, time, code,
    numeric_value) of whole subjects; the inverse, up to the lossy steps, of :func:`decode`."""
    if not isinstance(events, pa.Table):
        events = pa.Table.from_pandas(events[COLUMNS], preserve_index=False)
    return encode_table(events.select(COLUMNS), vocab, CodeTable(vocab))


# --------------------------------------------------------------------------- output


def _length_stats(lengths: np.ndarray) -> dict:
    if lengths.size == 0:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "min": 0, "max": 0}
    return {
        "mean": float(lengths.mean()),
        "median": float(np.median(lengths)),
        "p90": float(np.percentile(lengths, 90)),
        "min": int(lengths.min()),
        "max": int(lengths.max()),
    }


def read_shard(shard: Path, chunk_rows: int) -> Iterator[pa.Table]:
    """A MEDS shard's rows as tables of whole subjects, about ``chunk_rows`` rows each (one subject with
    more rows is one table): memory stays bounded whatever the shard's size."""
    try:
        parquet = pq.ParquetFile(shard, read_dictionary=["code"])
        pending: list[pa.RecordBatch] = []
        last_sid, row = None, 0
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=COLUMNS):
            sid = batch.column("subject_id").to_numpy(zero_copy_only=False)
            if not len(sid):
                continue
            if (np.diff(sid) < 0).any() or (last_sid is not None and sid[0] < last_sid):
                raise EhrscaleError(f"MEDS shard {shard}: rows are not sorted by subject_id near row {row}; "
                                    "column 'subject_id' (MEDS requires each subject's rows to be contiguous, in order)")
            last_sid, row = sid[-1], row + len(sid)
            cut = int(np.searchsorted(sid, sid[-1]))  # where the batch's last (maybe unfinished) subject starts
            if cut:
                yield pa.Table.from_batches([*pending, batch.slice(0, cut)])
                pending = []
            pending.append(batch.slice(cut))
        if pending:
            yield pa.Table.from_batches(pending)
    except (pa.ArrowInvalid, KeyError, OSError) as err:
        raise EhrscaleError(f"cannot read MEDS shard {shard}: {err}") from err


def encode_split(shards: list[Path], out_dir: Path, vocab: Vocab, codes: CodeTable, chunk_rows: int) -> dict:
    """Encode one split, a chunk of whole subjects at a time, into ``out_dir``; returns its stats."""
    with SplitWriter(out_dir, vocab.dtype) as writer:
        for shard in shards:
            t0, n = _time.perf_counter(), 0
            for table in read_shard(shard, chunk_rows):
                e = encode_table(table, vocab, codes)
                writer.append(e.tokens, e.times, e.subject_ids, e.lengths)
                n += table.num_rows
            log.info("%s: %d rows (%.1fs)", shard, n, _time.perf_counter() - t0)
    lens, all_sids = writer.lengths, writer.subject_ids
    if len(np.unique(all_sids)) != len(all_sids):
        raise EhrscaleError(f"a subject spans several shards (or is unsorted) in {shards[0].parent}: MEDS requires "
                            "each subject's events to be contiguous in one shard")
    return {"n_subjects": int(lens.size), "n_tokens": int(lens.sum()), "tokens_per_subject": _length_stats(lens)}


def tokenize(meds_dir: str | Path, tokens_dir: str | Path, settings: TokenizeSettings | None = None) -> dict:
    """Fit the vocabulary on train and write every split's token stream; returns stats.json."""
    settings = settings or TokenizeSettings()
    shards = split_shards(meds_dir)
    check_writable(tokens_dir)  # before fitting the vocabulary, not after
    t0 = _time.perf_counter()
    vocab = fit_vocab(shards["train"], settings)
    log.info("vocabulary: %d tokens (%.1fs)", len(vocab), _time.perf_counter() - t0)
    codes = CodeTable(vocab)
    stats: dict = {"vocab_size": len(vocab), "dtype": vocab.dtype.name, "splits": {}, "tokens_per_subject": {}}
    with atomic_dir(tokens_dir) as tmp:
        write_json(tmp / "vocab.json", vocab.to_json())
        for split in SPLITS:
            s = encode_split(shards[split], tmp / split, vocab, codes, settings.chunk_rows)
            stats["splits"][split] = {"n_subjects": s["n_subjects"], "n_tokens": s["n_tokens"]}
            stats["tokens_per_subject"][split] = s["tokens_per_subject"]
            log.info("%s: %d subjects, %d tokens", split, s["n_subjects"], s["n_tokens"])
        if stats["splits"]["train"]["n_subjects"] == 0:
            raise EhrscaleError("empty cohort: no train subjects in the MEDS dataset")
        stats["settings"] = {k: v for k, v in asdict(settings).items() if k != "chunk_rows"}  # shapes no token
        write_json(tmp / "stats.json", stats)
    return stats


# --------------------------------------------------------------------------- decoding


_MERGE_GROUPS = {"ICD10CM_DETAIL", "ICD9CM_DETAIL", "ICD9PCS_DETAIL", "ICD10PCS_DETAIL"}


def _interval_range(tok: str) -> tuple[int, int]:
    if tok == INTERVAL_LONG:
        return SIX_MONTHS_US, SIX_MONTHS_US  # exactly one chunk of the long gap; remainder follows
    i = INTERVAL_TOKENS.index(tok)
    hi = int(INTERVAL_EDGES_US[i + 1]) if i + 1 < len(INTERVAL_EDGES_US) else SIX_MONTHS_US
    return int(INTERVAL_EDGES_US[i]), hi


def decode(token_ids, vocab: Vocab) -> list[dict]:
    """Turn token ids back into readable events.

    Returns a list of dicts: ``{"kind": "static", "token": ...}`` for the prefix,
    ``{"kind": "event", "code": ..., "tokens": [...], "quantile": int|None, "elapsed_us": (lo, hi)}``
    for each clinical event (``code`` rebuilds the MEDS code from its hierarchy tokens; unknown parts
    show as ``[UNK]``; ``elapsed_us`` = (lo, hi) bounds the time since the previous event: (0, 5 min)
    when no interval token precedes it, ``None`` for the first event after the prefix), and
    ``{"kind": "end"}``. ``[PAD]`` is skipped. Lossy steps:
    values -> quantile bins, rare codes -> unknown, gaps -> interval bins, text values dropped.
    """
    out: list[dict] = []
    ids = [t for t in np.asarray(token_ids).tolist() if vocab.tokens[t] != PAD]
    n_static = STATIC_PREFIX_LEN if ids and vocab.groups[ids[0]] == "GENDER" else 0
    out += [{"kind": "static", "token": vocab.tokens[t]} for t in ids[:n_static]]
    lo = hi = 0
    seen_interval = False
    first_event = True
    for tid in ids[n_static:]:
        tok, g = vocab.tokens[tid], vocab.groups[tid]
        if tok == END:
            out.append({"kind": "end"})
            continue
        if g == "INTERVAL":
            a, b = _interval_range(tok)
            lo, hi, seen_interval = lo + a, hi + b, True
            continue
        if g == "QUANTILE":
            if out and out[-1]["kind"] == "event":
                out[-1]["quantile"] = int(tok[1:])
            continue
        last = out[-1] if out and out[-1]["kind"] == "event" and out[-1]["quantile"] is None else None
        if last is not None and not seen_interval:
            head = token_group(last["tokens"][0])
            k = len(last["tokens"])
            if (
                (g in _MERGE_GROUPS and g != "ICD10PCS_DETAIL" and head == g[: -len("_DETAIL")] and k == 1)
                or (g == "ICD10PCS" and head == "ICD10PCS_SECTION" and k == 1)
                or (g == "ICD10PCS_DETAIL" and head == "ICD10PCS_SECTION" and k == 2)
            ):
                last["tokens"].append(tok)
                last["code"] = _join_code(last["tokens"])
                continue
        if first_event and not seen_interval:
            elapsed = None  # gap from the static prefix (birth) is not encoded
        else:
            elapsed = (lo, hi) if seen_interval else (0, MIN_INTERVAL_US)
        out.append({"kind": "event", "code": _join_code([tok]), "tokens": [tok], "quantile": None, "elapsed_us": elapsed})
        lo = hi = 0
        seen_interval = first_event = False
    return out


def _join_code(tokens: list[str]) -> str:
    first = tokens[0]
    g = token_group(first)
    if g == "ICD10PCS_SECTION":
        return "ICD10PCS//" + "".join(t.split("//", 1)[1] for t in tokens)
    if len(tokens) == 1:
        return first
    return first + "".join(t.split("//", 1)[1] for t in tokens[1:])


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("meds_dir", help="MEDS dataset root (with data/{train,tuning,held_out}/*.parquet)")
    parser.add_argument("tokens_dir", help="output directory (written atomically)")
    parser.add_argument("--settings", default=None, help="JSON object (or @file.json) of tokenize settings")
    add_duckdb_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(TokenizeSettings, args.settings, "tokenize")
    apply_duckdb_arguments(settings, args)
    t0 = _time.perf_counter()
    stats = tokenize(args.meds_dir, args.tokens_dir, settings)
    n = sum(s["n_tokens"] for s in stats["splits"].values())
    log.info("wrote %s: %d tokens, vocab %d, %.1fs", args.tokens_dir, n, stats["vocab_size"], _time.perf_counter() - t0)
    print(json.dumps({"vocab_size": stats["vocab_size"], "splits": stats["splits"]}))
    return 0
