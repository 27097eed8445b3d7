"""Atomic outputs, and JSON read and written.

Every output is written under a temporary name beside its final path and renamed
into place only when complete, so a crash never leaves a partial output that
Snakemake (or a user) could mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ehrscale.core.errors import EhrscaleError


def check_writable(path: str | os.PathLike) -> None:
    """Fail now, with a clear message, if ``path`` (file or directory) could not be written later."""
    path = Path(path)
    if path.exists() and path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise EhrscaleError(f"cannot write output {path}: it exists and is not writable")
    for parent in (path.parent, *path.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise EhrscaleError(f"cannot write output {path}: {parent} is a file, not a directory")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent))
    except OSError as err:
        raise EhrscaleError(f"cannot write output {path}: {err.strerror or err} ({err.filename or path.parent})") from err


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path; on success rename it onto ``path``, else delete it."""
    path = Path(path)
    check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``path`` whole."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EhrscaleError(f"cannot write output directory {path}: a file is in the way")
    check_writable(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file; a missing or malformed one is an error naming ``what`` and the path."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise EhrscaleError(f"{what} not found: {path}") from err
    except json.JSONDecodeError as err:
        raise EhrscaleError(f"{path}: not valid JSON: {err}") from err
