"""Code-mapping configs: how raw MEDS codes become timeline tokens, declared, not hard-wired.

A code map (``src/ehrscale/code_maps/<name>.yaml``, or any YAML file given by path as
``tokenize.code_map``) says:

* ``rename``: ``[regex, replacement]`` pairs, the first match rewrites a code before anything else
  (how a MIMIC_IV_MEDS dataset's ``DIAGNOSIS//ICD//10//I509`` becomes ehrscale's ``ICD10CM//I509``);
* ``static``: the code prefixes of the static prefix's facts (``gender``, ``race``, ``marital``) and of
  the event whose first occurrence dates them (``first_admission``; null: the fact's own first event).
  ``MEDS_BIRTH`` (the MEDS constant) gives the age token;
* ``icd_hierarchy``: ehrscale's ICD category/detail splits of ``ICD9CM//``, ``ICD10CM//``, ``ICD9PCS//``,
  ``ICD10PCS//`` codes (see :mod:`ehrscale.tokens.vocab`);
* ``split_hierarchy``: the generic rule, needing no knowledge of the dataset: a code of three or more
  ``//`` parts becomes its category (all parts but the last) and ``<first part>_DETAIL//<last part>``
  (``LAB//51221//%`` -> ``LAB//51221`` ``LAB_DETAIL//%``). Numeric values are binned per raw code.

Built in: ``mimic`` (ehrscale's own extraction; the default), ``mimic_iv_meds`` (the official
MIMIC_IV_MEDS ETL, mapped onto ehrscale's names) and ``generic`` (any MEDS dataset).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import meds

from ehrscale.core.errors import EhrscaleError

BUILTIN_DIR = Path(__file__).parent / "code_maps"
ROLE_EVENT, ROLE_BIRTH, ROLE_GENDER, ROLE_RACE = 0, 1, 2, 3
_KEYS = {"name", "description", "rename", "static", "icd_hierarchy", "split_hierarchy"}
_STATIC_KEYS = {"gender", "race", "marital", "first_admission"}


@dataclass(frozen=True)
class CodeMap:
    name: str = "mimic"
    rename: tuple[tuple[str, str], ...] = ()
    gender: str = "GENDER//"
    race: str = "RACE//"
    marital: str = "MARITAL_STATUS//"
    first_admission: str | None = "ADMISSION//"
    icd_hierarchy: bool = True
    split_hierarchy: bool = False
    _patterns: tuple = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            pats = tuple((re.compile(p), r) for p, r in self.rename)
        except (re.error, TypeError, ValueError) as err:
            raise EhrscaleError(f"code map {self.name}: bad rename rule: {err}") from err
        object.__setattr__(self, "_patterns", pats)

    # ---- serialisation (vocab.json keeps the map it was built with)
    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("_patterns")
        d["rename"] = [list(r) for r in self.rename]
        return d

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<dict>") -> "CodeMap":
        if not isinstance(raw, dict) or set(raw) - _KEYS - _STATIC_KEYS:
            bad = sorted(set(raw) - _KEYS - _STATIC_KEYS) if isinstance(raw, dict) else raw
            raise EhrscaleError(f"code map {source}: unknown key(s) {bad}; allowed: {sorted(_KEYS)}")
        static = dict(raw.get("static") or {})
        static.update({k: raw[k] for k in _STATIC_KEYS if k in raw})  # the flat form of to_json
        if set(static) - _STATIC_KEYS:
            raise EhrscaleError(f"code map {source}: static takes {sorted(_STATIC_KEYS)}, got {sorted(static)}")
        rename = raw.get("rename") or []
        if not all(isinstance(r, (list, tuple)) and len(r) == 2 and all(isinstance(x, str) for x in r)
                   for r in rename):
            raise EhrscaleError(f"code map {source}: rename must be a list of [regex, replacement] pairs")
        for k in ("icd_hierarchy", "split_hierarchy"):
            if not isinstance(raw.get(k, False), bool):
                raise EhrscaleError(f"code map {source}: {k} must be true or false")
        return cls(name=str(raw.get("name", Path(source).stem)), rename=tuple(tuple(r) for r in rename),
                   icd_hierarchy=raw.get("icd_hierarchy", False), split_hierarchy=raw.get("split_hierarchy", False),
                   **static)

    # ---- applying it
    def canonical(self, code: str) -> str:
        for pat, rep in self._patterns:
            if pat.match(code):
                return pat.sub(rep, code, count=1)
        return code

    def role(self, code: str) -> int:
        code = self.canonical(code)
        if code == meds.birth_code:
            return ROLE_BIRTH
        if code.startswith(self.gender):
            return ROLE_GENDER
        if code.startswith(self.race):
            return ROLE_RACE
        return ROLE_EVENT

    def static_value(self, code: str) -> str:
        """The value of a gender/race/marital code: the text after its prefix."""
        code = self.canonical(code)
        for prefix in (self.gender, self.race, self.marital):
            if code.startswith(prefix):
                return code[len(prefix):]
        return ""

    def is_marital(self, code: str) -> bool:
        return self.canonical(code).startswith(self.marital)

    def is_first_admission(self, code: str) -> bool:
        return self.first_admission is not None and self.canonical(code).startswith(self.first_admission)

    def expand(self, code: str) -> tuple[str, ...]:
        """The timeline tokens of one raw MEDS code (before vocabulary lookup); () for prefix-only codes."""
        if self.role(code) != ROLE_EVENT:
            return ()
        code = self.canonical(code)
        if self.icd_hierarchy:
            toks = _icd_tokens(code)
            if toks is not None:
                return toks
        if self.split_hierarchy:
            parts = code.split("//")
            if len(parts) >= 3 and all(parts):
                return ("//".join(parts[:-1]), f"{parts[0]}_DETAIL//{parts[-1]}")
        return (code,)


def _icd_tokens(code: str) -> tuple[str, ...] | None:
    ns, _, rest = code.partition("//")
    if ns not in {"ICD10CM", "ICD9CM", "ICD10PCS", "ICD9PCS"}:
        return None
    rest = rest.replace(".", "")
    if not rest:
        return (code,)
    if ns == "ICD10CM":
        return _split(ns, rest, 3)
    if ns == "ICD9CM":
        return _split(ns, rest, 4 if rest[0] == "E" else 3)
    if ns == "ICD9PCS":
        return _split(ns, rest, 2)
    out = (f"ICD10PCS_SECTION//{rest[0]}",)
    if len(rest) > 1:
        out += (f"ICD10PCS//{rest[1:4]}",)
    if len(rest) > 4:
        out += (f"ICD10PCS_DETAIL//{rest[4:]}",)
    return out


def _split(ns: str, rest: str, k: int) -> tuple[str, ...]:
    head, tail = rest[:k], rest[k:]
    return (f"{ns}//{head}", f"{ns}_DETAIL//{tail}") if tail else (f"{ns}//{head}",)


@lru_cache(maxsize=None)
def load_code_map(name_or_path: str = "mimic") -> CodeMap:
    """A built-in code map by name (``mimic``, ``mimic_iv_meds``, ``generic``) or a YAML file by path."""
    import yaml

    path = BUILTIN_DIR / f"{name_or_path}.yaml"
    if not re.fullmatch(r"[A-Za-z0-9_]+", name_or_path) or not path.is_file():
        path = Path(name_or_path)
    if not path.is_file():
        builtin = sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))
        raise EhrscaleError(f"tokenize.code_map: {name_or_path!r} is neither a built-in code map {builtin} "
                            "nor a YAML file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise EhrscaleError(f"code map {path} is not valid YAML: {err}") from err
    return CodeMap.from_dict(raw, str(path))


MIMIC = CodeMap()
