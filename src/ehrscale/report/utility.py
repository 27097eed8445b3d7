"""The utility laws in the report: their figures and their section of summary.md (from utility.json).

    utility_compute  held-out AUROC against compute per task: every cell, the best per budget, the frontier law
    utility_loss     held-out AUROC against validation loss: every cell and the two-stage map
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ehrscale.fit.intervals import format_interval
from ehrscale.fit.utility import frontier_band
from ehrscale.report.style import budget_colors, figure_dir, plt, save

UTILITY_FIGURES = ("utility_compute", "utility_loss")


def utility_section(result: dict) -> str:
    """The utility section of summary.md, from utility.json."""
    pct = f"{100 * result['ci_level']:.0f} %"
    paper = result["paper"]
    lines = ["", "## Clinical utility", "",
             f"Linear probes of every trained cell on held-out examples; AUROC with stratified bootstrap {pct} intervals. "
             f"Paper ({paper['task']}): {paper['auroc_small']:.2f} at ~1M parameters -> {paper['auroc_large']:.2f} "
             "at ~28M, then level.", "",
             "| task | best AUROC, smallest budget | best AUROC, largest budget | rise (paired interval) | "
             "intervals apart | no-model baseline | frontier A (ceiling) | backtest error: frontier / two-stage |",
             "|---|---|---|---|---|---|---|---|"]
    for task, t in result["tasks"].items():
        if not t.get("n_cells"):
            lines.append(f"| {task} | not scored | | | | | | |")
            continue
        rise, bt = t["rise"], t["backtest"]
        base = t.get("baseline") or {}
        base_s = format_interval(base.get("auroc")) if base.get("status") == "ok" else f"skipped ({base.get('reason', 'none')})"
        fr = t["frontier"]
        ceiling = format_interval(fr["A"]) if fr.get("fitted") else fr.get("reason", "not fitted")

        def err(b):
            if not b.get("estimable"):
                return "not estimable"
            inside = {True: "inside", False: "outside", None: "no interval"}[b["observed_in_interval"]]
            return f"{b['error']:+.3f} ({inside})"

        paired = rise.get("paired")
        rise_s = (f"{paired['estimate']:+.3f} ({paired['ci_low']:+.3f} to {paired['ci_high']:+.3f})"
                  if paired and paired.get("ci_low") is not None else f"{rise['rise']:+.3f} (no paired interval)")
        lines.append(f"| {task} | {format_interval(rise['smallest'])} | {format_interval(rise['largest'])} | {rise_s} | "
                     f"{'yes' if rise['beyond_intervals'] else 'no'} | {base_s} | {ceiling} | "
                     f"{err(bt.get('frontier', {}))} / {err(bt.get('two_stage', {}))} |")
    lines += ["", f"Best AUROC rises with compute beyond its intervals (the two cells' intervals apart) on "
              f"**{result['n_tasks_rising']} of {len(result['tasks'])}** tasks; beyond the rise's own paired "
              f"interval (both cells scored on one bootstrap of the same held-out examples; lower bound above 0) on "
              f"**{result.get('n_tasks_rising_paired', 0)} of {len(result['tasks'])}**. Backtests fit each law without the largest budget and predict its "
              "best AUROC (error = predicted - observed; 'inside' when the observed value is in the predicted interval)."]
    for task, cells in result.get("skipped", {}).items():
        lines.append(f"\n{task}: skipped for {len(cells)} cell(s): {cells[0]['reason']}")
    return "\n".join(lines) + "\n"


def make_utility_figures(result: dict, df: pd.DataFrame, fig_dir) -> list[Path]:
    """utility_compute (AUROC against compute per task) and utility_loss (AUROC against loss)."""
    fig_dir = figure_dir(fig_dir)
    tasks = list(result["tasks"])
    out = []
    for name, xcol in (("utility_compute", "budget"), ("utility_loss", "loss")):
        ncol = min(2, max(1, len(tasks)))
        nrow = math.ceil(len(tasks) / ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.8 * nrow), squeeze=False)
        colors = budget_colors(sorted(df["budget"].unique())) if len(df) else {}
        for ax, task in zip(axes.ravel(), tasks):
            t, part = result["tasks"][task], df[df["task"] == task]
            for b, g in part.groupby("budget"):
                ax.errorbar(g[xcol], g["auroc"], yerr=[g["auroc"] - g["lo"], g["hi"] - g["auroc"]], fmt="o", ms=4,
                            color=colors[b], alpha=0.8, capsize=2, label=f"C = {b:.1e}")
            if xcol == "budget" and t.get("n_cells"):
                fb = pd.DataFrame(t["frontier_points"])
                ax.plot(fb["budget"], fb["auroc"], "s", color="crimson", ms=7, mfc="none", label="best per budget")
                if t["frontier"].get("fitted"):
                    cc = np.geomspace(fb["budget"].min() / 1.5, fb["budget"].max() * 3, 100)
                    ax.plot(cc, frontier_band(t["frontier"], cc), "-", color="crimson", lw=1.2, label="frontier law")
                ax.set_xscale("log")
                ax.set_xlabel("compute C (FLOPs)")
            elif xcol == "loss" and t.get("two_stage", {}).get("fitted"):
                a, b = t["two_stage"]["params"]
                xs = np.linspace(part["loss"].min(), part["loss"].max(), 50)
                ax.plot(xs, a + b * xs, "-", color="crimson", lw=1.2, label="two-stage map")
                ax.set_xlabel("validation loss")
            base = t.get("baseline") or {}
            if base.get("status") == "ok":
                ax.axhline(base["auroc"]["estimate"], color="grey", ls="--", lw=1, label="no-model baseline")
            ax.axhline(0.5, color="black", ls=":", lw=0.8)
            ax.set_title(task)
            ax.set_ylabel("held-out AUROC")
        for ax in axes.ravel()[len(tasks):]:
            ax.set_axis_off()
        if len(tasks):
            axes.ravel()[0].legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        out += save(fig, fig_dir, name)
    return out
