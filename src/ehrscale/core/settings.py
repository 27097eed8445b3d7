"""A config section as a settings dataclass: the one way every stage reads its settings.

A section arrives as a dict (from a config file), a JSON string or ``@file.json`` (from a
rule's ``--settings``). Unknown keys are an error naming ``section.key``: a typo must never be
ignored.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TypeVar

from ehrscale.core.errors import EhrscaleError

T = TypeVar("T")


def parse_section(raw: str | dict | None, section: str) -> dict:
    """A section as a dict, from a dict, a JSON string, ``@file.json`` or nothing (empty)."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    text = raw
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).read_text()
        except OSError as err:
            raise EhrscaleError(f"settings for '{section}': cannot read {raw[1:]}: {err.strerror or err}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise EhrscaleError(f"settings for '{section}' are not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise EhrscaleError(f"settings for '{section}' must be a mapping, got {type(data).__name__}")
    return data


def load_settings(cls: type[T], raw: str | dict | None, section: str) -> T:
    """Build a settings dataclass from a dict, a JSON string, or ``@file.json``.

    Unknown keys are an error naming ``section.key``: a typo must never be ignored.
    """
    data = parse_section(raw, section)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        raise EhrscaleError(
            f"unknown key(s) in '{section}': {', '.join(f'{section}.{k}' for k in unknown)}; "
            f"allowed: {', '.join(sorted(fields))}"
        )
    return cls(**data)
