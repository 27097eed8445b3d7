"""``ehrscale summary``: summary.md, the fits' sections joined in order (loss laws, then utility laws).

Each fit rule writes its own section beside its JSON (``fits/scaling.md``, ``fits/utility.md``), so a
new probe record redraws only the utility section; this joins them, atomically.
"""

from __future__ import annotations

from pathlib import Path

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.files import atomic_path


def join_sections(sections, out) -> Path:
    """Write ``out`` as the concatenation of the section files, in the order given."""
    texts = []
    for path in map(Path, sections):
        try:
            texts.append(path.read_text())
        except OSError as err:
            raise EhrscaleError(f"summary section {path}: {err.strerror or err}") from err
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text("".join(texts))
    return out


def add_arguments(parser) -> None:
    parser.add_argument("sections", nargs="+", help="the sections' Markdown files, in order")
    parser.add_argument("--out", required=True, help="summary.md")


def run(args) -> int:
    join_sections(args.sections, args.out)
    return 0
