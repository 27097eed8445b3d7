"""Each size's peak learning rate, from one rule fitted to the whole LR sweep: ``ehrscale tune``.

Porian et al. (2024) traced part of the Kaplan-Chinchilla disagreement to an LR that was
not tuned per size; a width formula that was never swept tilts the law the same way. So
the workflow trains each size's smallest cell of the grid (the cheapest run that size
has) once per multiplier in ``tune.lr_multipliers`` of the width rule's LR
(``ehrscale.plan.rules.learning_rate_for``), under the configured schedule. The sweep runs are
ordinary cells in ``tune/<size>/x<multiplier>/``, cached like any other.

A per-size argmin over a 2x-spaced sweep is noisy: one seed's runs decide, neighbouring sizes
took LRs 2.5x apart in both directions, and another seed moved the winner of 3 of 12 sizes.
So this step fits every size's sweep at once (as DeepSeek LLM, Bi et al. 2024, fits its LR
law): near its optimum a size's ln validation loss is a parabola in ln LR,

    ln L(s, lr) = c_s + q (ln lr - ln lr*(N_s))^2,     lr*(N) = lr0 (N / N_ref)^gamma,

with one curvature q, one power law for the optimum, and a level c_s per size (each size's sweep
cell has its own budget). Runs more than ``BASIN_LOG_LOSS`` above their size's best are outside
the basin (diverged, or far too slow) and left out. Every size then trains at lr*(N), kept
inside the LRs at which its own sweep stayed in the basin: loss rises far more steeply above the
optimum (divergence) than below it, so a symmetric parabola must not carry a size past an LR it
was seen to survive (on the default grid under seed 1 the rule put d4L2 at 0.038, between its best
run at 0.024 and a diverged one at 0.048, and two of its cells diverged). With fewer than 2 sizes or 3 LRs per size the rule cannot be
fitted, and each size takes its sweep's argmin (:func:`choose`), which the record says.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.files import atomic_path, write_json

SCHEMA = "ehrscale.lr_rule/1"
BASIN_LOG_LOSS = 0.25  # ln-loss above a size's best run beyond which a run is outside the parabola's basin
MIN_SIZES, MIN_LRS = 2, 3


def choose(runs: list[dict]) -> dict:
    """The run with the lowest ``val_loss``, with every candidate and whether it is an end of the sweep."""
    if not runs:
        raise EhrscaleError("no sweep runs to choose a learning rate from")
    runs = sorted(runs, key=lambda m: m["learning_rate"])
    best = min(range(len(runs)), key=lambda i: runs[i]["val_loss"])
    return {
        "size": runs[best]["size"], "learning_rate": runs[best]["learning_rate"], "val_loss": runs[best]["val_loss"],
        "cell": runs[best]["cell"], "tokens": runs[best]["tokens"],
        "at_edge": len(runs) > 1 and best in (0, len(runs) - 1),
        "candidates": [{"learning_rate": m["learning_rate"], "val_loss": m["val_loss"]} for m in runs],
    }


def _in_basin(runs: list[dict]) -> list[dict]:
    """A size's sweep runs within BASIN_LOG_LOSS of its best ln loss (the best run is always one)."""
    best = min(math.log(m["val_loss"]) for m in runs)
    return [m for m in runs if math.log(m["val_loss"]) - best <= BASIN_LOG_LOSS]


def _by_size(runs: list[dict]) -> dict[str, list[dict]]:
    sizes: dict[str, list[dict]] = {}
    for m in runs:
        for key in ("size", "n_params", "learning_rate", "val_loss"):
            if key not in m:
                raise EhrscaleError(f"sweep run {m.get('cell', '?')}: its metrics.json has no {key!r}")
        if not (m["learning_rate"] > 0 and math.isfinite(m["val_loss"]) and m["val_loss"] > 0):
            raise EhrscaleError(f"sweep run {m.get('cell', '?')}: learning_rate {m['learning_rate']} and val_loss "
                                f"{m['val_loss']} must be positive and finite")
        sizes.setdefault(m["size"], []).append(m)
    return dict(sorted(sizes.items(), key=lambda kv: kv[1][0]["n_params"]))


def fit_rule(sizes: dict[str, list[dict]], level: float = 0.95) -> dict:
    """The joint fit (module docstring) by Gauss-Newton least squares on the basin's runs.
    Returns gamma, lr0 at N_ref (the sizes' geometric mean), q, their Wald intervals from the
    residual variance, the residual RMS of ln loss, and the runs used; ``fitted`` False with a reason."""
    from scipy import stats
    from scipy.optimize import least_squares

    names = list(sizes)
    ln_n = np.array([math.log(sizes[s][0]["n_params"]) for s in names])
    n_ref = float(np.exp(ln_n.mean()))
    idx, x, y = [], [], []
    for i, s in enumerate(names):
        for m in _in_basin(sizes[s]):
            idx.append(i), x.append(math.log(m["learning_rate"])), y.append(math.log(m["val_loss"]))
    idx, x, y = np.array(idx), np.array(x), np.array(y)
    z = ln_n - math.log(n_ref)
    k = len(names)
    n_obs, n_par = len(y), k + 3
    if n_obs <= n_par:
        return {"fitted": False, "reason": f"{n_obs} runs in the basin for {n_par} parameters"}

    def residuals(p):
        mu = p[k + 1] + p[k + 2] * z[idx]
        return p[:k][idx] + np.exp(p[k]) * (x - mu) ** 2 - y

    best_x = np.array([x[idx == i][np.argmin(y[idx == i])] if (idx == i).any() else x.mean() for i in range(k)])
    slope0 = float(np.polyfit(z, best_x, 1)[0]) if k >= 2 else 0.0
    p0 = np.r_[[y[idx == i].min() for i in range(k)], math.log(0.05), best_x.mean(), slope0]
    fit = least_squares(residuals, p0, method="lm", x_scale="jac")
    r = residuals(fit.x)
    dof = n_obs - n_par
    s2 = float(r @ r) / dof
    try:
        cov = np.linalg.inv(fit.jac.T @ fit.jac) * s2
    except np.linalg.LinAlgError:
        return {"fitted": False, "reason": "the sweep does not identify the rule (singular Jacobian)"}
    t = float(stats.t.ppf(0.5 + level / 2, dof))
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    lq, mu0, gamma = fit.x[k], fit.x[k + 1], fit.x[k + 2]
    q = math.exp(lq)
    if not (fit.success and np.isfinite(fit.x).all()):
        return {"fitted": False, "reason": f"least squares did not converge ({fit.message})"}

    def interval(est, sd, transform=lambda v: v):
        est, sd = float(est), float(sd)
        return {"estimate": transform(est), "ci_low": transform(est - t * sd), "ci_high": transform(est + t * sd),
                "se": sd}

    return {
        "fitted": True, "n_ref": n_ref, "n_runs": int(sum(len(v) for v in sizes.values())), "n_in_basin": n_obs,
        "gamma": interval(gamma, se[k + 2]), "lr_at_n_ref": interval(mu0, se[k + 1], math.exp),
        "curvature_q": interval(lq, se[k], math.exp) | {"estimate": q},
        "residual_log_loss_rms": float(np.sqrt(np.mean(r ** 2))), "ci_level": level,
        "levels": {s: float(fit.x[i]) for i, s in enumerate(names)},
    }


def lr_rule(runs: list[dict], level: float = 0.95) -> dict:
    """Every size's peak LR from the sweep runs (their metrics.json records): the fitted rule's, inside
    the LRs at which the size's sweep stayed in the basin, or each size's argmin when the rule cannot be fitted."""
    sizes = _by_size(runs)
    n_lrs = min(len({m["learning_rate"] for m in v}) for v in sizes.values()) if sizes else 0
    if not sizes:
        raise EhrscaleError("no sweep runs to choose a learning rate from")
    if len(sizes) < MIN_SIZES or n_lrs < MIN_LRS:
        rule = {"fitted": False, "reason": f"{len(sizes)} size(s) with at least {n_lrs} LR(s) each; the rule needs "
                                           f"{MIN_SIZES}+ sizes with {MIN_LRS}+ LRs"}
    else:
        rule = fit_rule(sizes, level)
    if rule["fitted"] and rule["curvature_q"]["estimate"] <= 0:
        rule = {"fitted": False, "reason": "the fitted loss does not curve up around its optimum (q <= 0)"}
    out = {}
    for size, v in sizes.items():
        argmin = choose(v)
        rec = {"n_params": v[0]["n_params"], "argmin_learning_rate": argmin["learning_rate"],
               "argmin_at_edge": argmin["at_edge"], "candidates": argmin["candidates"]}
        if rule["fitted"]:
            lrs = [m["learning_rate"] for m in _in_basin(argmin["candidates"])]
            ideal = rule["lr_at_n_ref"]["estimate"] * (v[0]["n_params"] / rule["n_ref"]) ** rule["gamma"]["estimate"]
            rec |= {"rule_learning_rate": ideal, "learning_rate": min(max(ideal, min(lrs)), max(lrs)),
                    "basin_learning_rates": [min(lrs), max(lrs)], "clamped": not (min(lrs) <= ideal <= max(lrs))}
        else:
            rec |= {"learning_rate": argmin["learning_rate"], "clamped": False}
        out[size] = rec
    return {"schema": SCHEMA, "method": "rule" if rule["fitted"] else "argmin", "basin_log_loss": BASIN_LOG_LOSS,
            "rule": rule, "sizes": out}


def read_tuned_lr(path: str | Path, size: str) -> float:
    """The peak LR the tune step gave a size (this module's JSON)."""
    try:
        record = json.loads(Path(path).read_text())
        sizes = record["sizes"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise EhrscaleError(f"{path}: not a tune result with per-size learning rates ({err})") from err
    if size not in sizes:
        raise EhrscaleError(f"{path}: no learning rate for size {size!r}; it has {', '.join(sizes)}")
    return float(sizes[size]["learning_rate"])


def add_arguments(parser) -> None:
    parser.add_argument("--runs", nargs="+", required=True, help="the sweep runs' metrics.json files, every size's")
    parser.add_argument("--out", required=True, help="JSON with the rule and each size's learning_rate")
    parser.add_argument("--summary", help="path of the rule's Markdown section of summary.md")


def run(args) -> int:
    runs = []
    for path in args.runs:
        try:
            runs.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise EhrscaleError(f"{path}: not a readable metrics.json ({err})") from err
    result = lr_rule(runs)
    write_json(args.out, result)
    if args.summary:
        from ehrscale.report.sections import lr_rule_section

        with atomic_path(args.summary) as tmp:
            tmp.write_text(lr_rule_section(result))
    rule = result["rule"]
    if rule["fitted"]:
        g = rule["gamma"]
        print(f"LR rule: lr*(N) = {rule['lr_at_n_ref']['estimate']:.3g} (N / {rule['n_ref']:.3g})^{g['estimate']:.3f} "
              f"({g['ci_low']:.3f} to {g['ci_high']:.3f}); residual RMS of ln loss {rule['residual_log_loss_rms']:.4f}",
              file=sys.stderr)
    else:
        print(f"LR rule not fitted ({rule['reason']}): each size takes its sweep's argmin", file=sys.stderr)
    for size, rec in result["sizes"].items():
        print(f"[{size}] LR {rec['learning_rate']:.3g} (argmin {rec['argmin_learning_rate']:.3g})"
              + (" kept inside the LRs its sweep survived" if rec["clamped"] else ""), file=sys.stderr)
    return 0
