"""``ehrscale fit`` (the loss laws) and ``ehrscale fit-utility`` (the utility laws): two commands, two rules.

``fit`` reads the trained cells' metrics.json and writes ``scaling.json``, ``points.csv``, the loss-law
figures and their summary section. ``fit-utility`` reads the same cells, ``scaling.json`` (for the
two-stage law) and the probe and baseline records, and writes ``utility.json``, ``utility.csv``, the
utility figures and their section. A new probe record reruns only the second.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ehrscale.core.files import atomic_path, read_json, write_json
from ehrscale.core.settings import load_settings
from ehrscale.fit.loss import fit_paths
from ehrscale.fit.points import find_metrics, load_points
from ehrscale.fit.settings import FitSettings

log = logging.getLogger(__name__)


def _cells_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", help="directory of trained cells, each <cell>/metrics.json (+ log.csv)")
    src.add_argument("--metrics", nargs="+", metavar="FILE", help="the metrics.json files to fit (log.csv beside each)")
    parser.add_argument("--settings", help="fit settings as JSON or @file.json (keys of FitSettings)")
    parser.add_argument("--figures", help="directory for the figures (PNG and SVG)")
    parser.add_argument("--summary", help="path of this fit's Markdown section of summary.md")


def _metrics_paths(args) -> list[Path]:
    return find_metrics(args.runs) if args.runs else [Path(p) for p in args.metrics]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _cells_arguments(parser)
    parser.add_argument("--out", required=True, help="directory for scaling.json and points.csv")
    parser.add_argument("--replicates", nargs="*", default=[], metavar="FILE",
                        help="metrics.json of cells retrained with other seeds: the loss noise for the calibration")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(FitSettings, args.settings, "fit")
    result = fit_paths(_metrics_paths(args), args.out, settings, args.figures, args.summary, args.replicates)
    for w in result["warnings"]:
        log.warning(w)
    h = result["headline"]
    fmt = lambda r: "n/a" if not r or r.get("estimate") is None else f"{r['estimate']:.3f}"  # noqa: E731
    log.info("fitted %d cells: a = %s (Approach 2), %s (Approach 3); b = %s, %s",
             result["n_cells"], fmt(h["a_approach2"]), fmt(h["a_approach3"]), fmt(h["b_approach2"]), fmt(h["b_approach3"]))
    return 0


def add_utility_arguments(parser: argparse.ArgumentParser) -> None:
    _cells_arguments(parser)
    parser.add_argument("--out", required=True, help="directory for utility.json and utility.csv")
    parser.add_argument("--scaling", help="the loss fit's scaling.json (the two-stage law's L(N, D))")
    parser.add_argument("--probes", nargs="+", required=True, metavar="FILE", help="probe records probes/<cell>/metrics.json")
    parser.add_argument("--baselines", nargs="*", default=[], metavar="FILE", help="baseline records baseline/<task>.json")


def run_utility(args: argparse.Namespace) -> int:
    from ehrscale.fit.utility import fit_utility

    settings = load_settings(FitSettings, args.settings, "fit")
    points, _ = load_points(_metrics_paths(args), settings.loss_metric, settings.param_count)
    scaling = read_json(args.scaling, "the loss fit's scaling.json") if args.scaling else None
    utility, table = fit_utility(points, args.probes, args.baselines, scaling, settings.ci_level, settings.seed)
    out = Path(args.out)
    write_json(out / "utility.json", utility)
    with atomic_path(out / "utility.csv") as tmp:
        table.to_csv(tmp, index=False)
    if args.figures is not None or args.summary is not None:
        from ehrscale.report.utility import make_utility_figures, utility_section

        if args.figures is not None:
            make_utility_figures(utility, table, args.figures)
        if args.summary is not None:
            with atomic_path(args.summary) as tmp:
                tmp.write_text(utility_section(utility))
    log.info("utility laws of %d task(s): %d rise beyond their intervals", len(utility["tasks"]), utility["n_tasks_rising"])
    return 0
