"""summary.md: the headline scaling numbers in plain words, beside the paper's."""

from __future__ import annotations

from pathlib import Path

from ehrscale.io import atomic_path


def _ci(r: dict | None, prec: str = ".3f") -> str:
    if not r or r.get("estimate") is None:
        return "not fitted"
    s = f"{r['estimate']:{prec}}"
    if r.get("ci_low") is not None and r.get("ci_high") is not None:
        s += f" ({r['ci_low']:{prec}} to {r['ci_high']:{prec}})"
    else:
        s += " (no interval)"
    return s


def _covers(r: dict | None, value: float) -> str:
    if not r or r.get("ci_low") is None or r.get("ci_high") is None:
        return ""
    return "; the paper's value is inside this interval" if r["ci_low"] <= value <= r["ci_high"] else \
        "; the paper's value is outside this interval"


def summary_text(result: dict) -> str:
    pct = f"{100 * result['ci_level']:.0f} %"
    h, paper = result["headline"], result["paper"]
    par, a2 = result["approach3"], result["approach2"]
    n_rel = sum(r["reliable"] for r in a2["per_budget"])
    lines = [
        "# Scaling-law fits",
        "",
        f"Fitted **{result['n_cells']} cells** over **{result['n_budgets']} compute budgets** "
        f"({min(result['budgets']):.3g} to {max(result['budgets']):.3g} FLOPs), loss = `{result['loss_metric']}`, "
        f"N = **{result['param_count']}** parameters (`{result['param_column']}`). Intervals are {pct}.",
        "",
        "## Headline",
        "",
        f"Paper ({paper['reference']}): N_opt grows as C^{paper['a']} and D_opt as C^{paper['b']}.",
        "",
        "| exponent | Approach 2 (IsoFLOPs parabolas) | Approach 3 (parametric L(N, D)) | paper |",
        "|---|---|---|---|",
        f"| a (N_opt ∝ C^a) | {_ci(h['a_approach2'])} | {_ci(h['a_approach3'])} | {paper['a']} |",
        f"| b (D_opt ∝ C^b) | {_ci(h['b_approach2'])} | {_ci(h['b_approach3'])} | {paper['b']} |",
        "",
    ]
    for n_key, d_key, label in (("a_approach2", "b_approach2", "Approach 2"), ("a_approach3", "b_approach3", "Approach 3")):
        ra, rb = h[n_key], h[d_key]
        if ra and ra.get("estimate") is not None and rb and rb.get("estimate") is not None:
            word = "faster than" if ra["estimate"] > rb["estimate"] else "no faster than"
            lines.append(f"- {label}: each 10x more compute is best spent on {10 ** ra['estimate']:.2f}x more parameters "
                         f"and {10 ** rb['estimate']:.2f}x more tokens (a = {_ci(ra)}{_covers(ra, paper['a'])}; "
                         f"b = {_ci(rb)}{_covers(rb, paper['b'])}); model size grows {word} data.")
        elif not ra or ra.get("estimate") is None:
            lines.append(f"- {label}: not fitted (see warnings).")
    lines += ["", "## Approach 2: IsoFLOPs parabolas", "",
              f"{n_rel} of {len(a2['per_budget'])} budgets had a reliable (bracketed, upward) minimum and entered the power laws "
              f"({'WLS' if a2['n_opt_law'].get('weighted') else 'OLS'} in log-log). D_opt = C / flops_per_token(N_opt), "
              f"with ln flops_per_token = {a2['flops_per_token_relation']['intercept']:.3f} + "
              f"{a2['flops_per_token_relation']['slope']:.3f} ln N fitted over the cells.", "",
              "| budget (FLOPs) | sizes | N_opt | D_opt | loss at minimum | reliable |", "|---|---|---|---|---|---|"]
    for r in a2["per_budget"]:
        lines.append(f"| {r['budget']:.3g} | {r['n_sizes']} | {_ci(r.get('n_opt'), '.3g')} | {_ci(r.get('d_opt'), '.3g')} | "
                     f"{r['loss_at_opt']:.4f} | {'yes' if r['reliable'] else 'no: ' + r['reason']} |"
                     if r.get("loss_at_opt") is not None else
                     f"| {r['budget']:.3g} | {r['n_sizes']} | - | - | - | no: {r['reason']} |")
    lines += ["", "## Approach 3: L(N, D) = E + A/N^α + B/D^β", ""]
    if par:
        p = par["params"]
        lines += [f"Huber (δ = {par['huber_delta']:g}) on log loss, summed, L-BFGS-B from a grid of starts; "
                  f"intervals from {par['bootstrap']['succeeded']} cell-bootstrap refits (seed {par['bootstrap']['seed']}).", "",
                  "| parameter | estimate (interval) |", "|---|---|"]
        lines += [f"| {k} | {_ci(p[k], '.4g')} |" for k in ("E", "A", "B", "alpha", "beta", "a", "b", "G")]
        lines += ["", f"Residual RMS of log loss: {par['residual_log_loss_rms']:.4f}.", "",
                  "Compute-optimal allocation at the fitted budgets (C = 6ND):", "",
                  "| budget | N_opt | D_opt | tokens per parameter | predicted loss |", "|---|---|---|---|---|"]
        for r in par["at_budgets"]:
            lines.append(f"| {r['budget']:.3g} | {_ci(r['n_opt'], '.3g')} | {_ci(r['d_opt'], '.3g')} | "
                         f"{_ci(r['tokens_per_param'], '.3g')} | {_ci(r['loss'], '.4f')} |")
    else:
        lines.append("Not fitted.")
    lines += ["", "## Frontiers (best metric per budget against compute)", ""]
    for metric, fr in result["frontiers"].items():
        if fr.get("fitted"):
            lines.append(f"- `{metric}`: {fr['model']} with E = {_ci(fr['E'], '.4f')}, K = {_ci(fr['K'], '.4g')}, "
                         f"γ = {_ci(fr['gamma'], '.4f')}.")
        else:
            lines.append(f"- `{metric}`: not fitted ({fr.get('reason', '')}).")
    lines += ["", "## Warnings", ""]
    lines += [f"- {w}" for w in result["warnings"]] or ["- none"]
    return "\n".join(lines) + "\n"


def write_summary(result: dict, path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(summary_text(result))
    return path
