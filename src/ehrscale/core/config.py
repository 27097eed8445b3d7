"""Workflow config validation with messages that name the offending key."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from ehrscale.core.errors import EhrscaleError

ROOT = Path(__file__).resolve().parents[3]  # the repository: the workflow and its config live beside src/
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = ROOT / "config" / "config.yaml"


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


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise EhrscaleError(f"config file not found: {path}")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise EhrscaleError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(config, dict):
        raise EhrscaleError(f"config file {path} must hold a mapping of sections")
    return config


def load_config(path: str | Path) -> dict:
    """A config file as the workflow sees it, validated: a preset is an overlay, laid over
    ``config/config.yaml`` exactly as Snakemake lays ``--configfile`` over the Snakefile's config
    (:func:`snakemake.utils.update_config`: mappings merge key by key, anything else replaces)."""
    from snakemake.utils import update_config

    path = Path(path)
    overlay = read_yaml(path)
    if DEFAULT_CONFIG.exists() and path.resolve() != DEFAULT_CONFIG.resolve():
        config = read_yaml(DEFAULT_CONFIG)
        update_config(config, overlay)
    else:
        config = overlay
    validate_config(config)
    return config
