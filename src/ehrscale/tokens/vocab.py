"""The token vocabulary: ETHOS-style tokens for MEDS codes, fitted on the train split only.

Token design (every token is ``GROUP//value``; a token's group is the text before the first ``//``):

* **Special**: ``[PAD]`` (id 0), ``[UNK]`` (a code whose group was never seen in train),
  ``[TIMELINE_END]`` (last token of every subject).
* **Static prefix** (always the first ``STATIC_PREFIX_LEN`` = 4 tokens of a subject, in this order):
  ``GENDER//F|M|UNKNOWN``; ``RACE//WHITE|BLACK|HISPANIC|ASIAN|OTHER|UNKNOWN`` (MIMIC race coarsened,
  see :func:`race_group`); ``MARITAL//<status>|UNKNOWN``; ``AGE//<lo>-<hi>`` (5-year bins, ``AGE//95+``,
  ``AGE//UNKNOWN``). No leakage: race and marital status are the values recorded at the subject's
  *first* admission (the first ``RACE//`` / ``MARITAL_STATUS//`` event), age is the age at the first
  timeline event (the first timed event other than ``MEDS_BIRTH``). Later admissions' values are never
  used for the prefix (changes of marital status still appear in the timeline as
  ``MARITAL_STATUS//`` events, at their admission).
* **Codes keep their hierarchy** (see :func:`expand_code`):
  ``ICD10CM//I509`` -> ``ICD10CM//I50`` ``ICD10CM_DETAIL//9``; ``ICD9CM//4280`` -> ``ICD9CM//428``
  ``ICD9CM_DETAIL//0`` (``E`` codes use 4-character categories); ``ICD10PCS//0DTJ4ZZ`` ->
  ``ICD10PCS_SECTION//0`` ``ICD10PCS//DTJ`` (body system + root operation) ``ICD10PCS_DETAIL//4ZZ``
  (body part... qualifier chars 5-7); ``ICD9PCS//3893`` -> ``ICD9PCS//38`` ``ICD9PCS_DETAIL//93``.
  Every other code is one token named as the code (``LAB//50912//mg/dL``, ``MEDICATION//Furosemide``,
  ``ADMISSION//EW EMER.``, ``DISCHARGE//HOME``, ``ICU_ADMISSION//...``, ``TRANSFER//...``, ``SERVICE//...``,
  ``DRG//APR//123``, ``MEDS_DEATH``...). ``RACE//`` events are folded into the static prefix,
  ``GENDER//`` and ``MEDS_BIRTH`` likewise (birth gives the age token).
* The rules above are the ``mimic`` code map (:mod:`ehrscale.tokens.codemap`, the default); the
  ``generic`` one splits any code of 3+ ``//`` parts into its category and ``<NS>_DETAIL//<last part>``,
  and ``mimic_iv_meds`` renames the official MIMIC_IV_MEDS ETL's codes onto these. vocab.json keeps the
  code map it was built with.
* **Numeric values**: the item's token followed by ``Q1``..``Q<n_bins>``; the ``n_bins - 1`` inner
  quantile edges per raw code come from the train split only (``decile_edges`` in vocab.json).
  ``Q = 1 + #(edges <= value)``. Text values are dropped.
* **Time intervals** between consecutive distinct event times >= 5 min: one of 12 ETHOS bins
  (:data:`INTERVAL_BINS`); a gap of 6 months or more emits ``floor(gap / 6mt)`` copies of
  ``[INTERVAL//6mt]`` followed by the bin token of the remainder when that is >= 5 min. A month is
  365.25 / 12 days. Each interval token carries the timestamp of the event that *follows* it, so it
  never reveals the future to a probe cut at a prediction time.
* **Unknowns**: a token seen fewer than ``min_count`` times in train maps to ``<GROUP>//[UNK]``; a
  group absent from train maps to ``[UNK]``. An unknown numeric item loses its value token.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ehrscale.core.errors import EhrscaleError

PAD, UNK, END = "[PAD]", "[UNK]", "[TIMELINE_END]"
SPECIAL_TOKENS = (PAD, UNK, END)
STATIC_PREFIX_LEN = 4
BIRTH_CODE, DEATH_CODE = "MEDS_BIRTH", "MEDS_DEATH"

_MIN = 60 * 1_000_000  # microseconds
_HOUR, _DAY = 60 * _MIN, 24 * 60 * _MIN
_MONTH = int(round(365.25 / 12 * _DAY))
# (token, lower edge in µs); upper edge = next lower edge; the last bin is [3mt, 6mt)
INTERVAL_BINS: tuple[tuple[str, int], ...] = (
    ("[INTERVAL//5m-15m]", 5 * _MIN),
    ("[INTERVAL//15m-1h]", 15 * _MIN),
    ("[INTERVAL//1h-2h]", _HOUR),
    ("[INTERVAL//2h-6h]", 2 * _HOUR),
    ("[INTERVAL//6h-12h]", 6 * _HOUR),
    ("[INTERVAL//12h-1d]", 12 * _HOUR),
    ("[INTERVAL//1d-3d]", _DAY),
    ("[INTERVAL//3d-1w]", 3 * _DAY),
    ("[INTERVAL//1w-2w]", 7 * _DAY),
    ("[INTERVAL//2w-1mt]", 14 * _DAY),
    ("[INTERVAL//1mt-3mt]", _MONTH),
    ("[INTERVAL//3mt-6mt]", 3 * _MONTH),
)
INTERVAL_LONG = "[INTERVAL//6mt]"
SIX_MONTHS_US = 6 * _MONTH
MIN_INTERVAL_US = 5 * _MIN
INTERVAL_EDGES_US = np.array([lo for _, lo in INTERVAL_BINS], dtype=np.int64)
INTERVAL_TOKENS = tuple(t for t, _ in INTERVAL_BINS) + (INTERVAL_LONG,)

GENDERS = ("F", "M", "UNKNOWN")
RACE_GROUPS = ("WHITE", "BLACK", "HISPANIC", "ASIAN", "OTHER", "UNKNOWN")
MARITAL = ("MARRIED", "SINGLE", "WIDOWED", "DIVORCED", "UNKNOWN")
AGE_BIN_YEARS = 5
N_AGE_BINS = 20  # 0-4 ... 90-94, 95+
AGE_TOKENS = tuple(
    f"AGE//{i * AGE_BIN_YEARS}-{i * AGE_BIN_YEARS + AGE_BIN_YEARS - 1}" for i in range(N_AGE_BINS - 1)
) + (f"AGE//{(N_AGE_BINS - 1) * AGE_BIN_YEARS}+", "AGE//UNKNOWN")
STATIC_TOKENS = (
    tuple(f"GENDER//{g}" for g in GENDERS)
    + tuple(f"RACE//{r}" for r in RACE_GROUPS)
    + tuple(f"MARITAL//{m}" for m in MARITAL)
    + AGE_TOKENS
)
# codes that are always in the vocabulary whatever their train count
ALWAYS_CODES = (DEATH_CODE,)

# roles of raw MEDS codes
from ehrscale.tokens.codemap import MIMIC, ROLE_BIRTH, ROLE_EVENT, ROLE_GENDER, ROLE_RACE, CodeMap  # noqa: E402,F401


def q_tokens(n_bins: int) -> tuple[str, ...]:
    return tuple(f"Q{i}" for i in range(1, n_bins + 1))


def token_group(token: str) -> str:
    """The group of a token: its namespace before ``//``; special/interval/quantile tokens by kind."""
    if token in SPECIAL_TOKENS:
        return "SPECIAL"
    if token.startswith("[INTERVAL//"):
        return "INTERVAL"
    if token[:1] == "Q" and token[1:].isdigit():
        return "QUANTILE"
    return token.split("//", 1)[0]


def unk_token(group: str) -> str:
    return f"{group}//[UNK]"


def race_group(race: str | None) -> str:
    """Coarsen a MIMIC race string to WHITE/BLACK/HISPANIC/ASIAN/OTHER/UNKNOWN."""
    r = (race or "").strip().upper()
    if not r or r in {"UNKNOWN", "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER"}:
        return "UNKNOWN"
    if r.startswith("WHITE") or r == "PORTUGUESE":
        return "WHITE"
    if r.startswith("BLACK"):
        return "BLACK"
    if r.startswith("HISPANIC") or r == "SOUTH AMERICAN":
        return "HISPANIC"
    if r.startswith("ASIAN"):
        return "ASIAN"
    return "OTHER"


def marital_token(value: str | None) -> str:
    v = (value or "").strip().upper()
    return f"MARITAL//{v if v in MARITAL else 'UNKNOWN'}"


def gender_token(value: str | None) -> str:
    v = (value or "").strip().upper()
    return f"GENDER//{v if v in GENDERS else 'UNKNOWN'}"


def age_token(age_years: float | None) -> str:
    if age_years is None or not math.isfinite(age_years) or age_years < 0:
        return AGE_TOKENS[-1]
    return AGE_TOKENS[min(int(age_years // AGE_BIN_YEARS), N_AGE_BINS - 1)]


def code_role(code: str, code_map: CodeMap = MIMIC) -> int:
    return code_map.role(code)


def expand_code(code: str, code_map: CodeMap = MIMIC) -> tuple[str, ...]:
    """The timeline tokens of one raw MEDS code (before vocabulary lookup); () for prefix-only codes.

    The rules are the code map's (:mod:`ehrscale.tokens.codemap`; ehrscale's own extraction by default)."""
    return code_map.expand(code)


@dataclass
class Vocab:
    """Token <-> id map plus per-code quantile edges; serialised as ``vocab.json``."""

    tokens: list[str]
    edges: dict[str, list[float]] = field(default_factory=dict)  # code token -> n_bins-1 edges
    n_bins: int = 10
    min_count: int = 5
    counts: dict[str, int] = field(default_factory=dict)
    code_map: CodeMap = MIMIC  # how raw codes became tokens (ehrscale.tokens.codemap)

    def __post_init__(self) -> None:
        if self.tokens[0] != PAD:
            raise EhrscaleError("vocab: token id 0 must be [PAD]")
        self.token_to_id = {t: i for i, t in enumerate(self.tokens)}
        if len(self.token_to_id) != len(self.tokens):
            raise EhrscaleError("vocab: duplicate tokens")
        self.groups = [token_group(t) for t in self.tokens]
        self.q_ids = np.array([self.token_to_id[q] for q in q_tokens(self.n_bins)], dtype=np.int64)
        self.interval_ids = np.array([self.token_to_id[t] for t in INTERVAL_TOKENS], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint16) if len(self.tokens) <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)

    def lookup(self, token: str) -> int:
        """Id of ``token``; its group's unknown token if absent; ``[UNK]`` if the group is unknown too."""
        i = self.token_to_id.get(token)
        if i is not None:
            return i
        return self.token_to_id.get(unk_token(token_group(token)), self.token_to_id[UNK])

    def is_unknown(self, token_id: int) -> bool:
        t = self.tokens[token_id]
        return t == UNK or t.endswith("//[UNK]")

    def to_json(self) -> dict:
        return {
            "format": "ehrscale-vocab-1",
            "vocab_size": len(self.tokens),
            "dtype": self.dtype.name,
            "tokens": self.tokens,
            "token_to_id": self.token_to_id,
            "groups": self.groups,
            "special_tokens": {"pad": PAD, "unk": UNK, "timeline_end": END},
            "static_prefix_len": STATIC_PREFIX_LEN,
            "static_prefix": ["GENDER", "RACE", "MARITAL", "AGE"],
            "interval_tokens": list(INTERVAL_TOKENS),
            "interval_lower_edges_us": INTERVAL_EDGES_US.tolist(),
            "interval_long_us": SIX_MONTHS_US,
            "quantile_tokens": list(q_tokens(self.n_bins)),
            "n_bins": self.n_bins,
            "min_count": self.min_count,
            "decile_edges": self.edges,
            "train_counts": self.counts,
            "code_map": self.code_map.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict) -> "Vocab":
        return cls(
            tokens=list(data["tokens"]),
            edges={k: list(v) for k, v in data.get("decile_edges", {}).items()},
            n_bins=int(data.get("n_bins", 10)),
            min_count=int(data.get("min_count", 5)),
            counts=dict(data.get("train_counts", {})),
            code_map=CodeMap.from_dict(data["code_map"], "vocab.json") if "code_map" in data else MIMIC,
        )

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        path = Path(path)
        if path.is_dir():
            path = path / "vocab.json"
        if not path.exists():
            raise EhrscaleError(f"vocabulary not found: {path}")
        return cls.from_json(json.loads(path.read_text()))


def build_vocab(
    code_counts: dict[str, int],
    numeric_edges: dict[str, list[float]],
    min_count: int = 5,
    n_bins: int = 10,
    code_map: CodeMap = MIMIC,
) -> Vocab:
    """Build the vocabulary from per-raw-code train counts and per-raw-code train quantile edges.

    Edges are kept per raw code (after the code map's renames; for a one-token code, its token) when
    every token of the code is in the vocabulary."""
    if min_count < 1:
        raise EhrscaleError(f"tokenize.min_count must be >= 1, got {min_count}")
    if not 2 <= n_bins <= 100:
        raise EhrscaleError(f"tokenize.n_bins must be in [2, 100], got {n_bins}")
    token_counts: dict[str, int] = {}
    for code, n in code_counts.items():
        for tok in code_map.expand(code):
            token_counts[tok] = token_counts.get(tok, 0) + int(n)
    fixed = list(SPECIAL_TOKENS) + list(INTERVAL_TOKENS) + list(q_tokens(n_bins)) + list(STATIC_TOKENS)
    fixed += list(ALWAYS_CODES)
    kept = {t for t, n in token_counts.items() if n >= min_count} - set(fixed)
    groups = sorted({token_group(t) for t in token_counts})
    unks = [unk_token(g) for g in groups]
    tokens = fixed + [u for u in unks if u not in fixed] + sorted(kept, key=lambda t: (token_group(t), t))
    edges: dict[str, list[float]] = {}
    present = set(tokens)
    for code, e in numeric_edges.items():
        toks = code_map.expand(code)
        if toks and all(t in present for t in toks) and e is not None and len(e) == n_bins - 1:
            edges[code_map.canonical(code)] = [float(x) for x in e]
    return Vocab(tokens=tokens, edges=edges, n_bins=n_bins, min_count=min_count, counts=token_counts,
                 code_map=code_map)
