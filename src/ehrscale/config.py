"""Workflow config validation with messages that name the offending key."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from ehrscale.errors import EhrscaleError

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def validate_config(config: dict, schema_path: str | Path = SCHEMA) -> None:
    """Raise EhrscaleError listing every violation as ``key 'a.b.c': message``."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return
    lines = []
    for err in errors:
        key = _key(err.absolute_path)
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            key = ", ".join(_key([*err.absolute_path, k]) for k in extra)
            lines.append(f"unknown key {key}")
        else:
            lines.append(f"key '{key}': {err.message}")
    raise EhrscaleError("invalid config:\n  " + "\n  ".join(lines))


def load_config(path: str | Path) -> dict:
    """Read and validate a workflow config file (for the CLIs that take --config)."""
    path = Path(path)
    if not path.exists():
        raise EhrscaleError(f"config file not found: {path}")
    config = yaml.safe_load(path.read_text()) or {}
    validate_config(config)
    return config
