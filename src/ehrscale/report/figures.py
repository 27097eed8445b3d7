"""Figures of the scaling fits, written as PNG and SVG (atomically) into a figures directory.

    isoflops             loss against N per budget, parabolas and their minima
    optimal_scaling      N_opt and D_opt against C, both approaches' power laws with bands
    parametric_contours  Approach 3's L(N, D) contours, the cells, the efficient frontier
    loss_curves          training loss against tokens per cell (from each cell's log.csv)
    loss_frontier        best loss against C with E + K C^-gamma and its band
    profile_landscape    variable projection's profile objective over (alpha, beta): how well the law is identified
    loss_epochs          loss against epochs of unique data at fixed compute, with the data-constrained law

A figure whose fit is missing is still written, saying so, so the workflow's outputs exist.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns

from ehrscale.fit.frontier import frontier_band
from ehrscale.fit.isoflops import predict_power_law
from ehrscale.fit.law import PARAM_NAMES, allocate, predict
from ehrscale.fit.points import fresh_cells
from ehrscale.fit.repetition import predict as predict_repeated
from ehrscale.report.style import budget_colors, figure_dir, note, plt, save

log = logging.getLogger(__name__)
FIGURES = ("isoflops", "optimal_scaling", "parametric_contours", "loss_curves", "loss_frontier", "profile_landscape",
           "loss_epochs")


def _est(r):
    return math.nan if not r or r.get("estimate") is None else r["estimate"]


def _err(r):
    e = _est(r)
    lo = r.get("ci_low") if r else None
    hi = r.get("ci_high") if r else None
    return [[e - lo if lo is not None else 0.0], [hi - e if hi is not None else 0.0]]


def isoflops_figure(points: pd.DataFrame, result: dict):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = budget_colors(points["budget"].unique())
    for rec in result["approach2"]["per_budget"]:
        b, col = rec["budget"], colors[rec["budget"]]
        g = points[points["budget"] == b]
        ax.scatter(g["n"], g["loss"], color=col, s=22, label=f"C = {b:.2g}", zorder=3)
        if not rec.get("fitted"):
            continue
        n = np.geomspace(rec["n_min"], rec["n_max"], 200)
        x = np.log(n) - rec["x_center"]
        c0, c1, c2 = rec["coef"]
        ax.plot(n, c0 + c1 * x + c2 * x * x, color=col, ls="-" if rec["reliable"] else ":", lw=1.3)
        n_opt = _est(rec["n_opt"]) if rec.get("n_opt") else None
        # A vertex outside the sampled sizes is only flagged, not drawn: it would wreck the axes.
        if n_opt and rec["n_min"] <= n_opt <= rec["n_max"]:
            ax.errorbar([n_opt], [rec["loss_at_opt"]], xerr=None, color=col, marker="*", ms=12,
                        mfc=col if rec["reliable"] else "white", zorder=4)
    ax.set_xscale("log")
    ax.set(xlabel=f"parameters N ({result['param_count']})", ylabel=result["loss_metric"],
           title="IsoFLOPs curves (stars: fitted minima; dotted/open: unreliable)")
    ax.legend(fontsize=7, title="budget (FLOPs)", title_fontsize=8)
    return fig


def _law_band(result: dict, which: str, cgrid):
    law = result["approach2"][f"{which}_opt_law"]
    if not law.get("fitted"):
        return None
    rows = [predict_power_law(law, c, result["ci_level"]) for c in cgrid]
    return np.array([[_est(r), r["ci_low"] or np.nan, r["ci_high"] or np.nan] for r in rows], float)


def optimal_scaling_figure(points: pd.DataFrame, result: dict):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    budgets = result["budgets"]
    cgrid = np.geomspace(min(budgets) / 2, max(budgets) * 2, 100)
    par = result["approach3"]
    boot = None
    if par:
        samples = np.asarray(par["bootstrap"]["samples"], float).reshape(-1, 5)
        point = [par["params"][k]["estimate"] for k in PARAM_NAMES]
        a3 = [allocate(point, c) for c in cgrid]
        if len(samples) >= 2:
            boot = [allocate(samples.T, c) for c in cgrid]
    level = result["ci_level"]
    for ax, which, label in ((axes[0], "n", "N_opt (parameters)"), (axes[1], "d", "D_opt (tokens)")):
        for rec in result["approach2"]["per_budget"]:
            r = rec.get(f"{which}_opt")
            if not r:
                continue
            ax.errorbar([rec["budget"]], [_est(r)], yerr=_err(r), fmt="o", color="C0",
                        mfc="C0" if rec["reliable"] else "white", capsize=3)
        band = _law_band(result, which, cgrid)
        if band is not None:
            exp = result["approach2"][f"{which}_opt_law"]["exponent"]
            ax.plot(cgrid, band[:, 0], color="C0", label=f"Approach 2: exponent {_est(exp):.3f}")
            ax.fill_between(cgrid, band[:, 1], band[:, 2], color="C0", alpha=0.2)
        if par:
            key = "a" if which == "n" else "b"
            ax.plot(cgrid, [r[f"{which}_opt"] for r in a3], color="C1", ls="--",
                    label=f"Approach 3: exponent {par['params'][key]['estimate']:.3f}")
            if boot is not None:
                lo = [np.nanquantile(r[f"{which}_opt"], (1 - level) / 2) for r in boot]
                hi = [np.nanquantile(r[f"{which}_opt"], (1 + level) / 2) for r in boot]
                ax.fill_between(cgrid, lo, hi, color="C1", alpha=0.2)
        paper = result["paper"]["a" if which == "n" else "b"]
        sampled = points["n" if which == "n" else "tokens"]
        # Keep the axes on the sampled range: wild intervals of a poor fit would flatten everything.
        ax.set_ylim(sampled.min() / 30, sampled.max() * 30)
        ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel=label,
               title=f"{label.split()[0]} against compute (paper: exponent {paper})")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap on short spans
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"Compute-optimal allocation ({int(100 * level)} % bands; open markers: unreliable budgets)", fontsize=10)
    return fig


def parametric_contours_figure(points: pd.DataFrame, result: dict):
    fig, ax = plt.subplots(figsize=(7, 5.5))
    par = result["approach3"]
    if not par:
        note(ax, "Approach 3 was not fitted (too few cells)")
        return fig
    p = [par["params"][k]["estimate"] for k in PARAM_NAMES]
    n_lim = np.log10([points["n"].min() / 3, points["n"].max() * 3])
    d_lim = np.log10([points["tokens"].min() / 3, points["tokens"].max() * 3])
    ln, ld = np.meshgrid(np.linspace(*n_lim, 200), np.linspace(*d_lim, 200))
    z = predict(p, 10**ln, 10**ld)
    cs = ax.contourf(ln, ld, np.log(z), levels=20, cmap="viridis_r", alpha=0.8)
    ax.contour(ln, ld, np.log(z), levels=cs.levels, colors="white", linewidths=0.3)
    fig.colorbar(cs, ax=ax, label=f"ln predicted {result['loss_metric']}")
    cg = np.geomspace(6 * 10 ** (n_lim[0] + d_lim[0]), 6 * 10 ** (n_lim[1] + d_lim[1]), 100)
    opt = [allocate(p, c) for c in cg]
    ax.plot(np.log10([o["n_opt"] for o in opt]), np.log10([o["d_opt"] for o in opt]), color="red", lw=2,
            label="efficient frontier (C = 6ND)")
    for b in result["budgets"]:
        nn = np.linspace(*n_lim, 50)
        ax.plot(nn, np.log10(b / 6) - nn, color="black", lw=0.6, ls=":")
    ax.scatter(np.log10(points["n"]), np.log10(points["tokens"]), c="black", s=12, label="cells", zorder=3)
    ax.set(xlim=n_lim, ylim=d_lim, xlabel=f"log10 N ({result['param_count']} parameters)", ylabel="log10 D (tokens)",
           title=f"Approach 3: a = {par['params']['a']['estimate']:.3f}, b = {par['params']['b']['estimate']:.3f}")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def _read_logs(points: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for cell, budget, n, path in zip(points["cell"], points["budget"], points["n"], points.get("log_path", [])):
        path = Path(path)
        if not path.is_file():
            continue
        try:
            df = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            log.warning("skipping unreadable %s: %s", path, err)
            continue
        if not {"tokens", "train_loss"} <= set(df.columns) or df.empty:
            log.warning("skipping %s: needs columns tokens and train_loss", path)
            continue
        frames.append(df[["tokens", "train_loss"]].assign(cell=cell, budget=budget, n=n))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def loss_curves_figure(points: pd.DataFrame, result: dict):
    logs = _read_logs(points)
    if logs.empty:
        fig, ax = plt.subplots(figsize=(6, 3))
        note(ax, "no training logs (log.csv) found for any cell")
        return fig
    budgets = sorted(logs["budget"].unique())
    ncols = min(len(budgets), 3)
    nrows = math.ceil(len(budgets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False, sharey=True, layout="constrained")
    norm = matplotlib.colors.LogNorm(logs["n"].min(), logs["n"].max() * 1.0001)
    cmap = plt.get_cmap("plasma")
    for ax, b in zip(axes.flat, budgets):
        for cell, g in logs[logs["budget"] == b].groupby("cell", sort=True):
            ax.plot(g["tokens"], g["train_loss"], color=cmap(norm(g["n"].iloc[0])), lw=1)
        ax.set(xscale="log", title=f"C = {b:.2g} FLOPs", xlabel="tokens seen")
    for ax in axes.flat[len(budgets):]:
        ax.set_axis_off()
    for ax in axes[:, 0]:
        ax.set_ylabel("training loss")
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, label=f"N ({result['param_count']})")
    return fig


def frontier_figure(points: pd.DataFrame, result: dict, metric: str):
    """Best ``metric`` per budget against compute with its fitted E +/- K C^-gamma (any metric)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    fr = result["frontiers"].get(metric)
    if metric in points:
        ax.scatter(points["budget"], points[metric], color="0.7", s=12, label="all cells")
    if not fr:
        note(ax, f"no frontier for {metric}")
        return fig
    ax.scatter([p["budget"] for p in fr["points"]], [p["value"] for p in fr["points"]], color="C3", s=30,
               label="best cell per budget", zorder=3)
    if fr.get("fitted"):
        cg = np.geomspace(min(result["budgets"]) / 2, max(result["budgets"]) * 2, 100)
        mean, lo, hi = frontier_band(fr, cg, result["ci_level"])
        sign = "+" if fr["direction"] == "min" else "-"
        ax.plot(cg, mean, color="C3", label=f"E {sign} K C^-γ: E = {fr['E']['estimate']:.3f}, γ = {fr['gamma']['estimate']:.3f}")
        if lo is not None:
            ax.fill_between(cg, lo, hi, color="C3", alpha=0.2)
        ax.axhline(fr["E"]["estimate"], color="C3", ls=":", lw=0.8)
    ax.set(xscale="log", xlabel="compute C (FLOPs)", ylabel=metric, title=f"{metric} frontier against compute")
    ax.legend(fontsize=8)
    return fig


def profile_landscape_figure(points: pd.DataFrame, result: dict):
    """n ln(RSS / RSS_min) over the (alpha, beta) grid: a long valley or a minimum on the edge means a poorly
    identified law. The profile-likelihood region, the estimate and lines of constant a = beta/(alpha+beta)."""
    from scipy import stats

    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    par = result["approach3"]
    if not par:
        note(ax, "Approach 3 was not fitted (too few cells)")
        return fig
    prof = par["profile"]
    al, be = np.asarray(prof["alphas"]), np.asarray(prof["betas"])
    rss = np.asarray(prof["rss"], float)
    with np.errstate(divide="ignore"):
        stat = par["n_cells"] * np.log(rss / rss.min())
    levels = np.concatenate([[0], np.geomspace(0.5, max(float(np.nanmax(stat)), 1.0), 14)])
    cs = ax.contourf(al, be, stat.T, levels=levels, cmap="magma_r", norm=matplotlib.colors.SymLogNorm(1.0))
    fig.colorbar(cs, ax=ax, label="n ln(RSS / RSS_min)")
    ax.contour(al, be, stat.T, levels=[stats.chi2.ppf(result["ci_level"], 1)], colors="cyan", linewidths=1.5)
    for a in (0.3, 0.4, 0.5, 0.6, 0.7):
        ax.plot(al, al * a / (1 - a), color="white", lw=0.5, ls="--")
        x = min(1.7, 1.7 * (1 - a) / a) * al[-1] / 2  # inside the axes whatever the slope
        ax.annotate(f"a={a}", (x, x * a / (1 - a)), color="white", fontsize=7)
    est = par["params"]
    ax.scatter([est["alpha"]["estimate"]], [est["beta"]["estimate"]], color="cyan", marker="x", s=60, zorder=3,
               label=f"fit: α = {est['alpha']['estimate']:.3f}, β = {est['beta']['estimate']:.3f}")
    ax.set(xlim=(al[0], al[-1]), ylim=(be[0], be[-1]), xlabel="α (parameters)", ylabel="β (tokens)",
           title=f"Variable projection profile ({int(100 * result['ci_level'])} % region in cyan)")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def loss_epochs_figure(points: pd.DataFrame, result: dict):
    """Loss against epochs of unique data at fixed compute: each budget's sizes on every data fraction,
    with the data-constrained law's curve for each (budget, size) over the unique tokens."""
    fig, ax = plt.subplots(figsize=(7, 4.8))
    dc = result.get("data_constrained")
    if not dc or not dc.get("fitted"):
        note(ax, "No cell repeats its data: nothing to show (grid.data_fractions)" if dc is None else f"Not fitted: {dc['reason']}")
        return fig
    p = [dc["params"][k]["estimate"] for k in ("E", "A", "B", "alpha", "beta", "r_star")]
    colors = budget_colors(sorted(points["budget"].unique()))
    markers = dict(zip(sorted(points["size"].unique(), key=lambda s: points.loc[points["size"] == s, "n"].iloc[0]), "osD^v<>ph*"))
    for (b, size), g in points.groupby(["budget", "size"]):
        g = g.sort_values("epochs")
        ax.plot(g["epochs"], g["loss"], markers.get(size, "o"), color=colors[b], ms=5, alpha=0.85)
        n, d = float(g["n"].iloc[0]), float(g["tokens"].iloc[0])
        r = np.geomspace(max(g["epochs"].min() / 1.5, 1e-3), g["epochs"].max() * 1.5, 60)
        ax.plot(r, predict_repeated(p, n, d, d / r), "-", color=colors[b], lw=0.8, alpha=0.7)
    for b, col in colors.items():
        ax.plot([], [], "-", color=col, label=f"C = {b:.2g}")
    for size, m in markers.items():
        ax.plot([], [], m, color="grey", label=size)
    ax.axvline(1 + p[5] * math.log(2), color="black", ls=":", lw=0.8)
    ax.set(xscale="log", xlabel="epochs of its unique data (R = D / U)", ylabel=result["loss_metric"],
           title=f"Loss at fixed compute as data repeats (R* = {p[5]:.3g}; dotted: a repeat worth half)")
    ax.legend(fontsize=7, ncol=2)
    return fig


def make_figures(points: pd.DataFrame, result: dict, fig_dir) -> list[Path]:
    """Write every figure as PNG and SVG into ``fig_dir``; return the paths. Cells on unique-data subsets
    appear only in the repetition figure (the others show the whole-split cells the laws were fitted to)."""
    fig_dir = figure_dir(fig_dir)
    out: list[Path] = []
    everything, points = points, fresh_cells(points)
    with sns.axes_style("whitegrid"):
        out += save(isoflops_figure(points, result), fig_dir, "isoflops")
        out += save(optimal_scaling_figure(points, result), fig_dir, "optimal_scaling")
        out += save(parametric_contours_figure(points, result), fig_dir, "parametric_contours")
        out += save(loss_curves_figure(points, result), fig_dir, "loss_curves")
        out += save(frontier_figure(points, result, result["loss_metric"]), fig_dir, "loss_frontier")
        out += save(profile_landscape_figure(points, result), fig_dir, "profile_landscape")
        out += save(loss_epochs_figure(everything, result), fig_dir, "loss_epochs")
    return out
