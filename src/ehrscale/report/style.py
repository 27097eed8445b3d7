"""What every figure shares: a headless backend, one palette per budget, and byte-identical files.

Figures are written as PNG and SVG, atomically, with a fixed SVG hash salt and no date, so the
same fit draws the same bytes in any process.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from ehrscale.core.files import atomic_path, check_writable  # noqa: E402

FORMATS = ("png", "svg")


def figure_dir(path) -> Path:
    """The figures' directory, created; a file in its way or no permission is a clear error, before any drawing."""
    path = Path(path)
    check_writable(path / "figure.png")
    path.mkdir(parents=True, exist_ok=True)
    return path


def save(fig, fig_dir: Path, name: str) -> list[Path]:
    out = []
    for fmt in FORMATS:
        path = fig_dir / f"{name}.{fmt}"
        # a fixed salt: SVG element ids are otherwise random per process (no byte-identical reruns)
        with atomic_path(path) as tmp, matplotlib.rc_context({"svg.hashsalt": "ehrscale"}):
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
        out.append(path)
    plt.close(fig)
    return out


def note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_axis_off()


def budget_colors(budgets) -> dict:
    pal = sns.color_palette("viridis", len(budgets))
    return {b: pal[i] for i, b in enumerate(sorted(budgets))}
