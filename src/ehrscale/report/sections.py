"""The loss laws' section of summary.md (from scaling.json): the headline numbers in plain words, beside the paper's."""

from __future__ import annotations

from ehrscale.fit.repetition import interval_text


def _ci(r: dict | None, prec: str = ".3f") -> str:
    if not r or r.get("estimate") is None:
        return "not estimable" if r and r.get("not_estimable") else "not fitted"
    s = f"{r['estimate']:{prec}}"
    if r.get("not_estimable"):
        s += " (interval not estimable)"
    elif r.get("ci_low") is not None and r.get("ci_high") is not None:
        s += f" ({r['ci_low']:{prec}} to {r['ci_high']:{prec}})"
    else:
        s += " (no interval)"
    return s


def _covers(r: dict | None, value: float) -> str:
    if not r or r.get("ci_low") is None or r.get("ci_high") is None:
        return ""
    return "; the paper's value is inside this interval" if r["ci_low"] <= value <= r["ci_high"] else \
        "; the paper's value is outside this interval"


BASES = {"6ND": "C = 6ND", "flops": "C = the grid's FLOPs (with attention)"}
ESTIMATORS = {"approach3_vp": "Approach 3, variable projection", "approach3_epoch": "Approach 3, Epoch-style",
              "approach2": "Approach 2, IsoFLOPs parabolas"}


def _f(x, prec: str = ".3f") -> str:
    return "-" if x is None else f"{x:{prec}}"


def _header(result: dict) -> list[str]:
    pct = f"{100 * result['ci_level']:.0f} %"
    return ["# Scaling-law fits", "",
            f"Fitted **{result['n_cells']} cells** over **{result['n_budgets']} compute budgets** "
            f"({min(result['budgets']):.3g} to {max(result['budgets']):.3g} FLOPs), loss = `{result['loss_metric']}`, "
            f"N = **{result['param_count']}** parameters (`{result['param_column']}`). Intervals are {pct}.", ""]


def _headline(result: dict) -> list[str]:
    h, paper = result["headline"], result["paper"]
    by = h["by_basis"]
    lines = ["## Headline", "",
             f"Paper ({paper['reference']}): N_opt grows as C^{paper['a']} and D_opt as C^{paper['b']}. "
             "a and b depend on how compute is counted; each is given on both bases, labelled. The comparison "
             "with the paper is on C = 6ND, the Chinchilla convention (an assumption about the paper's count).", "",
             "| exponent | basis | " + " | ".join(ESTIMATORS.values()) + " | paper |", "|---|---|---|---|---|---|"]
    for k, name in (("a", "a (N_opt ∝ C^a)"), ("b", "b (D_opt ∝ C^b)")):
        for basis, label in BASES.items():
            cells = " | ".join(_ci(by[basis][k][e]) for e in ESTIMATORS)
            lines.append(f"| {name} | {label} | {cells} | {paper[k] if basis == '6ND' else ''} |")
    lines.append("")
    for est, label in ESTIMATORS.items():
        ra, rb = by["6ND"]["a"][est], by["6ND"]["b"][est]
        if ra and ra.get("estimate") is not None and rb and rb.get("estimate") is not None:
            word = "faster than" if ra["estimate"] > rb["estimate"] else "no faster than"
            lines.append(f"- {label} (C = 6ND): each 10x more compute is best spent on {10 ** ra['estimate']:.2f}x more parameters "
                         f"and {10 ** rb['estimate']:.2f}x more tokens (a = {_ci(ra)}{_covers(ra, paper['a'])}; "
                         f"b = {_ci(rb)}{_covers(rb, paper['b'])}); model size grows {word} data.")
        else:
            lines.append(f"- {label}: not fitted (see warnings).")
    return lines + [""]


def _approach2(result: dict) -> list[str]:
    a2 = result["approach2"]
    n_rel = sum(r["reliable"] for r in a2["per_budget"])
    ex = a2.get("exponents") or {}
    lines = ["## Approach 2: IsoFLOPs parabolas", "",
             f"{n_rel} of {len(a2['per_budget'])} budgets had a reliable (bracketed, upward) minimum and entered the power laws "
             f"({'WLS' if a2['n_opt_law'].get('weighted') else 'OLS'} in log-log). D_opt = C / flops_per_token(N_opt), "
             f"with ln flops_per_token = {a2['flops_per_token_relation']['intercept']:.3f} + "
             f"{a2['flops_per_token_relation']['slope']:.3f} ln N fitted over the cells. "
             f"Intervals of a and b: {ex.get('method', 'none')}; with fewer than 4 usable budgets they are not estimable.", "",
             "| budget (FLOPs) | sizes | N_opt | D_opt | loss at minimum | reliable |", "|---|---|---|---|---|---|"]
    for r in a2["per_budget"]:
        lines.append(f"| {r['budget']:.3g} | {r['n_sizes']} | {_ci(r.get('n_opt'), '.3g')} | {_ci(r.get('d_opt'), '.3g')} | "
                     f"{r['loss_at_opt']:.4f} | {'yes' if r['reliable'] else 'no: ' + r['reason']} |"
                     if r.get("loss_at_opt") is not None else
                     f"| {r['budget']:.3g} | {r['n_sizes']} | - | - | - | no: {r['reason']} |")
    return lines + [""]


def _approach3(result: dict) -> list[str]:
    par, ep = result["approach3"], result.get("approach3_epoch")
    lines = ["## Approach 3: L(N, D) = E + A/N^α + B/D^β", ""]
    if not par:
        return lines + ["Not fitted.", ""]
    p = par["params"]
    pi = par["profile_intervals"]
    lines += [f"Variable projection: (E, A, B) by non-negative least squares on a 100 x 100 (α, β) grid, then all five by "
              f"L-BFGS-B under Huber (δ = {par['huber_delta']:g}) on log loss. Intervals from {par['bootstrap']['succeeded']} "
              f"bootstrap refits resampling cells within each budget (seed {par['bootstrap']['seed']}); profile-likelihood "
              f"intervals under the same Huber objective, centred on the estimate, beside them"
              f"{' (cut by the searched box)' if pi['open'] else ''}. The Epoch-style fit "
              "(L-BFGS-B from a grid of starts, cell bootstrap) is a cross-check.", "",
              "| parameter | variable projection | profile likelihood | Epoch-style |", "|---|---|---|---|"]
    for k in ("E", "A", "B", "alpha", "beta", "a", "b", "G"):
        prof = _ci(pi[k], ".4g") if k in pi else ""
        lines.append(f"| {k} | {_ci(p[k], '.4g')} | {prof} | {_ci(ep['params'][k], '.4g') if ep else '-'} |")
    agree = par.get("agreement_with_epoch")
    grid_best = par["profile"]["grid_best"]
    noise = result.get("cell_noise")
    lines += ["", f"Residual RMS of log loss: {par['residual_log_loss_rms']:.4f}"
              + (f"; a cell's own noise, the SD of its log loss across seeds, is {noise['sigma_log_loss']:.4f} "
                 f"({noise['cells']} cells retrained, {noise['dof']} degrees of freedom)" if noise else
                 "; a cell's own noise is not measured (fit.replicates is off)")
              + ". Profile minimum on the grid at "
              f"α = {grid_best['alpha']:.2f}, β = {grid_best['beta']:.2f} (map: figures/profile_landscape)."
              + (f" |a(VP) - a(Epoch)| = {agree['abs_diff_a']:.2g}." if agree else ""), "",
              "Compute-optimal allocation at the fitted budgets (C = 6ND):", "",
              "| budget | N_opt | D_opt | tokens per parameter | predicted loss |", "|---|---|---|---|---|"]
    for r in par["at_budgets"]:
        lines.append(f"| {r['budget']:.3g} | {_ci(r['n_opt'], '.3g')} | {_ci(r['d_opt'], '.3g')} | "
                     f"{_ci(r['tokens_per_param'], '.3g')} | {_ci(r['loss'], '.4f')} |")
    return lines + [""]


def _calibration(result: dict) -> list[str]:
    cal = result.get("calibration")
    lines = ["## Calibration on this grid", ""]
    if not cal:
        return lines + ["Not run (fit.calibration_sims = 0, or no L(N, D) fit).", ""]
    noise = cal["noise"]
    pct = f"{100 * cal['level']:.0f} %"
    lines += [f"{cal['sims']} synthetic tables drawn from the fitted L(N, D) on this experiment's exact cells, with "
              f"log-loss noise σ = {noise['sigma_log_loss']:.4f} ({noise['source']}), each refitted "
              f"({cal['vp_bootstrap']} variable-projection resamples, {cal['approach2_bootstrap']} Approach 2 resamples per table). "
              f"Bias and RMSE against the law's true value; coverage of the {pct} intervals. It says whether this grid can "
              "answer the question before more compute is spent.", "",
              "| estimator | exponent | basis | truth | bias | RMSE | coverage | not estimable |", "|---|---|---|---|---|---|---|---|"]
    for est, label in (("vp", "Approach 3, variable projection"), ("approach2", "Approach 2")):
        for basis, blabel in BASES.items():
            for k in ("a", "b"):
                r = cal[est][basis][k]
                cov = "-" if r["coverage"] is None else f"{100 * r['coverage']:.0f} % of {r['with_interval']}"
                lines.append(f"| {label} | {k} | {blabel} | {_f(r['truth'])} | {_f(r['bias'], '+.3f')} | {_f(r['rmse'])} | "
                             f"{cov} | {r['not_estimable']} of {cal['sims']} |")
    return lines + [""]


def _robustness(result: dict) -> list[str]:
    rob = result.get("robustness")
    lines = ["## Backtest", ""]
    if not rob:
        return lines + ["Not run (fit.backtest = false, or no L(N, D) fit).", ""]
    bt = rob["backtest"]
    if bt["done"]:
        obs = bt["observed"][bt["compared_with"]]
        obs_n = obs.get("n_opt", obs.get("n"))
        what = "its IsoFLOPs parabola's vertex" if bt["compared_with"] == "parabola" else "its best cell"
        inside = bt["inside_interval"]
        lines += [f"L(N, D) fitted by variable projection on budgets {', '.join(f'{b:.3g}' for b in bt['fitted_budgets'])} "
                  f"predicts the held-out largest budget {bt['held_out_budget']:.3g} (grid FLOPs), compared with {what}:", "",
                  "| quantity | predicted | observed | error | observed inside interval |", "|---|---|---|---|---|",
                  f"| optimal loss | {_ci(bt['predicted']['loss'], '.4f')} | {obs['loss']:.4f} | "
                  f"{bt['error']['loss']:+.4f} ({100 * bt['error']['loss_relative']:+.2f} %) | {'yes' if inside['loss'] else 'no'} |",
                  f"| N_opt | {_ci(bt['predicted']['n_opt'], '.3g')} | {obs_n:.3g} | "
                  f"{bt['error']['log_n_opt']:+.3f} in ln N | {'yes' if inside['n_opt'] else 'no'} |", ""]
    else:
        lines += [f"Not done: {bt['reason']}.", ""]
    lines += ["## Sensitivity of a", "",
              "Each row is a full refit (point estimates). Variable projection's a on both bases; Approach 2's on the grid's FLOPs.", "",
              "| variant | cells | a, VP (C = 6ND) | a, VP (grid FLOPs) | a, Approach 2 (grid FLOPs) |", "|---|---|---|---|---|"]
    rows = [(r["variant"], r) for r in rob["sensitivity"]]
    rows += [(f"budget {r['left_out']:.3g} left out", r) for r in rob["leave_one_budget_out"]]
    for label, r in rows:
        lines.append(f"| {label} | {r['cells']} | {_f(r['a_vp']['6ND'])} | {_f(r['a_vp']['flops'])} | {_f(r['a_approach2'])} |")
    return lines + [""]


def _frontiers(result: dict) -> list[str]:
    lines = ["## Frontiers (best metric per budget against compute)", ""]
    for metric, fr in result["frontiers"].items():
        if fr.get("fitted"):
            lines.append(f"- `{metric}`: {fr['model']} with E = {_ci(fr['E'], '.4f')}, K = {_ci(fr['K'], '.4g')}, "
                         f"γ = {_ci(fr['gamma'], '.4f')}.")
        else:
            lines.append(f"- `{metric}`: not fitted ({fr.get('reason', '')}).")
    return lines + [""]


def _training(result: dict) -> list[str]:
    t = result.get("training")
    if not t:
        return []
    lines = ["## Training", "",
             f"Schedule: {', '.join(t['schedules']) or 'not recorded'}. Tokens trained: {t['tokens_trained']:,.0f}, "
             f"against {t['tokens_independent']:,.0f} if every cell were trained alone"
             + (f" ({100 * t['saved_fraction']:.0f} % saved: each size's WSD stable phase serves all its cells)."
                if t.get("saved_fraction") else "."), "",
             "| size | peak LR | rows per step |", "|---|---|---|"]
    for size, rec in t["sizes"].items():
        lines.append(f"| {size} | {_f(rec.get('learning_rate'), '.3g')} | {_f(rec.get('batch_size'), '.0f')} |")
    return lines + [""]


def _repetition(result: dict) -> list[str]:
    dc = result.get("data_constrained")
    if dc is None:
        return []  # no cell repeats its data: nothing to estimate
    lines = ["## Repeated data (data-constrained law)", ""]
    if not dc.get("fitted"):
        return lines + [f"Not fitted: {dc.get('reason')}.", ""]
    p = dc["params"]
    lines += [f"{dc['model']} (Muennighoff et al. 2023) on {dc['n_cells']} cells, up to {dc['max_epochs']:.1f} epochs "
              f"of their unique data. R* = **{interval_text(p['r_star'])}**: after "
              f"**{interval_text(dc['half_value_epochs'])}** epochs a repeated token is worth less than half a fresh one "
              "(1 + R* ln 2).", "",
              "| parameter | estimate (interval) |", "|---|---|"]
    lines += [f"| {k} | {interval_text(p[k])} |" for k in ("E", "A", "B", "alpha", "beta", "r_star")]
    comp = dc.get("comparison")
    if comp:
        loo = comp["leave_one_cell_out"]
        lines += ["", "Prediction error of log loss (RMSE), this law against plain L(N, D) fitted to the same cells:", "",
                  "| check | data-constrained | plain L(N, D) |", "|---|---|---|",
                  f"| leave one cell out ({loo['n_cells']} cells) | {loo['rmse_data_constrained']:.4f} | {loo['rmse_plain']:.4f} |"]
        bt = comp.get("backtest_largest_budget")
        if bt:
            lines.append(f"| largest budget {bt['budget']:.3g} held out ({bt['n_cells']} cells) | "
                         f"{bt['rmse_data_constrained']:.4f} | {bt['rmse_plain']:.4f} |")
    cal = dc.get("calibration")
    if cal and cal.get("coverage") is not None:
        lines += ["", f"Calibration: {cal['sims']} tables drawn from this law on these cells (log-loss noise "
                  f"σ = {cal['sigma_log_loss']:.4f}, {cal['noise']['source']}): R* median {cal['median_r_star']:.3g} "
                  f"(truth {cal['truth_r_star']:.3g}); its {100 * cal['level']:.0f} % interval covered in "
                  f"{100 * cal['coverage']:.0f} % of {cal['with_interval']}."]
    return lines + [""]


def _warnings(result: dict) -> list[str]:
    return ["## Warnings", ""] + ([f"- {w}" for w in result["warnings"]] or ["- none"])


# The summary's sections in order; each takes the scaling.json record and returns Markdown lines.
SECTIONS = [_header, _headline, _approach2, _approach3, _calibration, _robustness, _frontiers, _repetition, _training,
            _warnings]


def loss_section(result: dict) -> str:
    """The loss laws' section of summary.md."""
    return "\n".join(line for section in SECTIONS for line in section(result)) + "\n"


def lr_rule_section(record: dict) -> str:
    """summary.md's section on the peak learning rates (from the tune step's lr_rule.json)."""
    rule = record["rule"]
    lines = ["## Learning rate", ""]
    if rule["fitted"]:
        g, lr0, q = rule["gamma"], rule["lr_at_n_ref"], rule["curvature_q"]
        pct = f"{100 * rule['ci_level']:.0f} %"
        lines += [f"One rule fitted to the whole LR sweep ({rule['n_in_basin']} of {rule['n_runs']} runs in the basin, within "
                  f"{record['basin_log_loss']} of their size's best ln loss): ln loss is a parabola in ln LR, curvature "
                  f"q = {_ci(q, '.3g')}, whose optimum is **lr\\*(N) = {lr0['estimate']:.3g} · (N / {rule['n_ref']:.3g})"
                  f"^{g['estimate']:.3f}**; the exponent's {pct} interval is {g['ci_low']:.3f} to {g['ci_high']:.3f}, "
                  f"lr\\* at N = {rule['n_ref']:.3g} is {lr0['ci_low']:.3g} to {lr0['ci_high']:.3g}. "
                  f"Residual RMS of ln loss around the rule: {rule['residual_log_loss_rms']:.4f}. Every size trains at "
                  "the rule's LR, kept inside the LRs at which its own sweep stayed in the basin (loss rises far more steeply "
                  "above the optimum than below it), not at its own sweep's argmin.", ""]
    else:
        lines += [f"The LR rule was not fitted ({rule['reason']}): each size trains at its own sweep's lowest-loss LR.", ""]
    lines += ["| size | N | LRs swept | sweep argmin | peak LR used |", "|---|---|---|---|---|"]
    for size, rec in record["sizes"].items():
        lrs = [c["learning_rate"] for c in rec["candidates"]]
        note = " (the rule's {:.3g}, clamped)".format(rec["rule_learning_rate"]) if rec.get("clamped") else ""
        edge = " (edge)" if rec["argmin_at_edge"] else ""
        lines.append(f"| {size} | {rec['n_params']:,} | {min(lrs):.3g} to {max(lrs):.3g} | "
                     f"{rec['argmin_learning_rate']:.3g}{edge} | {rec['learning_rate']:.3g}{note} |")
    return "\n".join(lines + [""])
