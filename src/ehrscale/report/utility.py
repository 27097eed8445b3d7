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


def _law(r: dict | None, prec: str = ".3f") -> str:
    if not r:
        return "not fitted"
    if r.get("identified") is False:
        return f"not identified ({r.get('reason', '')})"
    return format_interval(r, prec)


def _consistent(b: dict) -> str:
    if not b.get("estimable"):
        return "not estimable"
    inside = {True: "consistent", False: "inconsistent", None: "no interval"}[b["observed_in_interval"]]
    e = b["error"]
    return f"{e['estimate']:+.3f} ({e['ci_low']:+.3f} to {e['ci_high']:+.3f}), {inside}" if e.get("ci_low") is not None \
        else f"{e['estimate']:+.3f}, {inside}"


def _paired(r: dict | None) -> str:
    if not r or r.get("estimate") is None:
        return "-"
    if r.get("ci_low") is None:
        return f"{r['estimate']:+.3f} (no interval)"
    return f"{r['estimate']:+.3f} ({r['ci_low']:+.3f} to {r['ci_high']:+.3f})"


def _frontier_rows(tasks: dict) -> list[str]:
    lines = ["| task | smallest budget: its cell's AUROC | largest budget: its cell's AUROC | rise (paired interval) | "
             "intervals apart | backtest error: frontier | backtest error: two-stage |", "|---|---|---|---|---|---|---|"]
    for task, t in tasks.items():
        if not t.get("n_cells"):
            lines.append(f"| {task} | not scored | | | | | |")
            continue
        rise, bt = t["rise"], t["backtest"]
        lines.append(f"| {task} | {rise['smallest']['cell']}: {format_interval(rise['smallest'])} | "
                     f"{rise['largest']['cell']}: {format_interval(rise['largest'])} | {_paired(rise.get('paired'))} | "
                     f"{'yes' if rise['beyond_intervals'] else 'no'} | {_consistent(bt.get('frontier', {}))} | "
                     f"{_consistent(bt.get('two_stage', {}))} |")
    return lines


def _baseline_rows(tasks: dict) -> list[str]:
    lines = ["| task | counts, full history | counts, the probe's examples | counts, the model's window | "
             "largest budget's cell | its embedding + counts over counts alone |", "|---|---|---|---|---|---|"]
    for task, t in tasks.items():
        if not t.get("n_cells"):
            continue
        base = t.get("baselines") or {}
        cells = [format_interval(v["auroc"]) if v.get("status") == "ok" else f"skipped ({v.get('reason')})"
                 for v in (base.get(k, {"status": "none", "reason": "none"}) for k in ("full_history", "same_examples", "same_window"))]
        top = (t.get("combined") or [None])[-1]
        gain = "-" if not top or top["budget"] != t["budgets"][-1] else _paired(top["gain_over_counts"])
        lines.append(f"| {task} | {' | '.join(cells)} | {t['rise']['largest']['cell']} | {gain} |")
    return lines


def _law_rows(tasks: dict) -> list[str]:
    lines = ["| task | frontier A (ceiling) | k | γ | reaches the counts of the probe's examples at C = | two-stage slope b (per nat of loss) |",
             "|---|---|---|---|---|---|"]
    for task, t in tasks.items():
        if not t.get("n_cells"):
            continue
        fr, ts = t["frontier"], t["two_stage"]
        if fr.get("fitted"):
            law = [_law(fr["A"]), _law(fr["k"]), _law(fr["gamma"], ".2f")]
        else:
            law = [fr.get("reason", "not fitted")] + ["-", "-"]
        cross = ((t.get("baselines") or {}).get("same_examples") or {}).get("crossover")
        cross_s = "-" if cross is None else (_law(cross, ".3g") if cross.get("identified") else f"not identified ({cross['reason']})")
        slope = _law(ts.get("b")) if ts.get("fitted") else ts.get("reason", "not fitted")
        lines.append(f"| {task} | {' | '.join(law)} | {cross_s} | {slope} |")
    return lines


def utility_section(result: dict) -> str:
    """The utility section of summary.md, from utility.json."""
    pct = f"{100 * result['ci_level']:.0f} %"
    paper, tasks = result["paper"], result["tasks"]
    n = len(tasks)
    lines = ["", "## Clinical utility", "",
             f"Linear probes of every trained cell on held-out examples. The cell that represents each budget is the one "
             f"with the highest **tuning** AUROC; held_out is read once for each number, never to choose. {pct} intervals "
             f"resample held-out patients, jointly for every cell and baseline, and refit each law on every resample. "
             f"Paper ({paper['task']}): {paper['auroc_small']:.2f} at ~1M parameters -> {paper['auroc_large']:.2f} at ~28M, "
             "then level.", "", *_frontier_rows(tasks), "",
             f"AUROC rises with compute beyond both cells' intervals on **{result['n_tasks_rising']} of {n}** tasks, and "
             f"beyond the rise's paired interval on **{result.get('n_tasks_rising_paired', 0)} of {n}**. Backtests fit each "
             "law without the largest budget and predict its cell's held-out AUROC; the error is predicted - observed, "
             "its interval resamples the law and the observation together, and 'consistent' means it holds 0.", "",
             "No-model baselines (log counts of tokens before the prediction time, the same probe), labelled by what they "
             "see, and what the model adds to counts: the probe on the embedding and the counts of the same examples, "
             "minus counts alone (paired interval).", "", *_baseline_rows(tasks), "",
             "Law parameters. A parameter at a bound of its box (A, k in [0, 1], γ in [0, 3]) or whose interval reaches one "
             "is not identified: the box, not the data, sets it.", "", *_law_rows(tasks)]
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
                ax.plot(fb["budget"], fb["auroc"], "s", color="crimson", ms=7, mfc="none", label="chosen on tuning")
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
            base = (t.get("baselines") or {}).get("full_history") or {}
            if base.get("status") == "ok":
                ax.axhline(base["auroc"]["estimate"], color="grey", ls="--", lw=1, label="counts, full history")
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
