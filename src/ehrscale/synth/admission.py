"""One admission: acute problem, severity, outcomes, and every row it produces."""

from __future__ import annotations

import math

import numpy as np

from ehrscale.synth import model as m
from ehrscale.synth.patient import (_ACUTE_VEC, _BASE_W, _CENTRE, _CHRONIC_VEC, _COND_W, _CORE_MASK, _L, _LOG,
                                    _NL, _PANEL_MASK, _SCALE, DAY, HADM_BASE, MAX_ADM, MAX_DRAWS, STAY_BASE, sigmoid)
from ehrscale.synth.tables import DRUGS

_PROB_IDX = {p: j for j, p in enumerate(m.PROBLEM_NAMES)}
_HF, _LIVER, _AFIB, _HTN, _COPD = (m.C[c] for c in ("heart_failure", "liver", "afib", "hypertension", "copd"))
_BMP_MASK = np.isin(m.LAB_IDS, [50983, 50971, 50902, 50882, 50868, 51006, 50912, 50931])
_CLIP = {50971: (1.8, 9.0), 50983: (105, 175), 50820: (6.8, 7.7), 51222: (3.0, 21.0), 50882: (4, 50),
         50902: (70, 135), 50818: (15, 120), 50821: (30, 400), 50960: (0.6, 5), 50970: (0.5, 14), 50893: (5, 14),
         50862: (1.0, 5.5), 51250: (60, 125), 50813: (0.3, 22), 51003: (0.01, 25), 50963: (10, 70000),
         50912: (0.2, 15), 51006: (2, 200), 50931: (30, 1200), 51301: (0.2, 80), 50885: (0.1, 40),
         51237: (0.8, 10), 50861: (3, 5000), 50878: (5, 5000), 50863: (20, 2000), 51265: (5, 1200),
         51275: (18, 150)}
_CLIP_LO = np.array([_CLIP.get(int(x), (0.0, 1e9))[0] for x in m.LAB_IDS])
_CLIP_HI = np.array([_CLIP.get(int(x), (0.0, 1e9))[1] for x in m.LAB_IDS])
_VIT_IDS = np.array(list(m.VITALS), dtype=np.int64)
_SURG_W = np.array([0.45, 0.4, 0.15])
_VIT_LO = np.array([30, 50, 25, 35, 6, 70, 94.0])  # HR, SBP, DBP, MBP, RR, SpO2, Temp F
_VIT_HI = np.array([200, 230, 130, 160, 45, 100, 106.0])


def _rnd_minute(days: float) -> float:
    return round(days * 1440.0) / 1440.0


def simulate_admission(pt, k: int, t: float, prev_loc: str | None, out) -> dict:
    r = pt.r
    g = pt.i * MAX_ADM + k
    sid, hadm = pt.sid, HADM_BASE + g
    active = pt.active(t)
    bz = (float(m.BURDEN_WEIGHT[active].sum()) + 0.5 * pt.alcohol - 1.6) / 1.3
    age = pt.age0 + (t - pt.t0) / 365.25
    az = (age - 62) / 17

    # Acute problem: rates depend on which chronic conditions are active.
    w = _BASE_W + np.append(active, pt.alcohol).astype(float) @ _COND_W
    w[_PROB_IDX["elective"]] *= math.exp(-0.3 * bz)
    w[_PROB_IDX["hip_fracture"]] *= math.exp(0.7 * az)
    prob = m.PROBLEM_NAMES[r.pick(w)]
    P = m.PROBLEMS[prob]
    surgery = m.SURGERIES[r.pick(_SURG_W)] if P["elective"] else None
    ed = (not P["elective"]) and r.random() < P["ed"]
    transfer_in = (not ed) and (not P["elective"]) and r.random() < 0.6
    s = P["sev"] + 0.3 * bz + 0.25 * az + 0.2 * pt.z + 0.3 * transfer_in + r.normal(0, 0.9)
    A0 = math.log1p(math.exp(s))
    # Unresolved problem at discharge: residual acuity late in the stay, and early readmission.
    unresolved = r.normal()
    resid = 0.6 * math.log1p(math.exp(unresolved - 0.5))

    # Where from, and how.
    if P["elective"]:
        adm_type = "ELECTIVE" if r.random() < 0.4 else "SURGICAL SAME DAY ADMISSION"
        adm_loc = "PHYSICIAN REFERRAL"
        adm = math.floor(t) + (6.5 + 2 * r.random()) / 24
    elif ed:
        obs = s < -0.6 and r.random() < 0.7
        adm_type = ("EU OBSERVATION" if r.random() < 0.5 else "OBSERVATION ADMIT") if obs else "EW EMER."
        adm_loc = "EMERGENCY ROOM"
        adm = t
    elif transfer_in:
        adm_type = "URGENT"
        adm_loc = ("TRANSFER FROM SKILLED NURSING FACILITY" if prev_loc == "SKILLED NURSING FACILITY"
                   else "TRANSFER FROM HOSPITAL")
        adm = t
    else:
        adm_type = "DIRECT EMER." if r.random() < 0.6 else "URGENT"
        adm_loc = "PHYSICIAN REFERRAL" if r.random() < 0.7 else "CLINIC REFERRAL"
        adm = t
    adm = _rnd_minute(adm)
    ed_reg = _rnd_minute(adm - r.uniform(1.5, 7) / 24) if ed else None
    ed_out = _rnd_minute(adm + r.uniform(0.3, 2.0) / 24) if ed else None

    # Outcomes, driven by chronic burden and acute severity.
    icu_bias = P["icu"] + (surgery[4] if surgery else 0.0)
    icu = r.random() < sigmoid(-2.3 + 1.3 * s + icu_bias + 0.15 * bz)
    died = r.random() < sigmoid(-4.5 + 1.25 * s + 0.3 * bz + 0.45 * az + 0.25 * pt.z + P["mort"] + 0.4 * icu)
    los = min(90.0, max(0.25, math.exp(P["los"] + 0.35 * s + 0.12 * bz + 0.08 * az + 0.4 * icu + r.normal(0, 0.5))))
    if died:
        los = max(0.15, los * r.uniform(0.25, 1.3))
    ward_start = (ed_out - adm) if ed else r.uniform(2, 30) / 1440
    icu_in = icu_out = None
    if icu:
        if P["elective"]:
            icu_in = ward_start + r.uniform(3, 8) / 24
        elif r.random() < 0.65:
            icu_in = ward_start
        else:
            icu_in = r.uniform(0.3, max(0.35, min(3.0, 0.6 * los)))
        icu_out = icu_in + min(40.0, max(0.1, math.exp(math.log(1.6) + 0.4 * s + r.normal(0, 0.5))))
        if died and r.random() < 0.75:
            los = icu_out = max(icu_out, icu_in + 0.1)
        else:
            los = max(los, icu_out + r.uniform(0.2, 3.0))
    los = max(los, ward_start + 0.05)
    disch_abs = _rnd_minute(adm + los)
    los = disch_abs - adm
    if icu_out is not None:
        icu_out = min(icu_out, los)

    # Discharge location.
    if died:
        loc = "DIED"
    else:
        score = 0.6 * az + 0.35 * bz + 0.35 * s + 0.3 * pt.z + 0.3 * icu + r.normal(0, 0.8)
        if r.random() < (0.1 if pt.alcohol else 0.01):
            loc = "AGAINST ADVICE"
        elif active[m.C["cancer"]] and score > 1.4 and r.random() < 0.5:
            loc = "HOSPICE"
        elif score < -0.3:
            loc = "" if adm_type in ("EU OBSERVATION", "OBSERVATION ADMIT") and r.random() < 0.6 else "HOME"
        elif score < 0.6:
            loc = "HOME HEALTH CARE"
        elif score < 1.6:
            loc = "REHAB" if prob in ("hip_fracture", "stroke") and r.random() < 0.5 else "SKILLED NURSING FACILITY"
        else:
            loc = "CHRONIC/LONG TERM ACUTE CARE" if icu else "SKILLED NURSING FACILITY"

    sec = pt.sec
    adm_s, disch_s = sec(adm), sec(disch_abs)
    insurance = "Medicare" if age >= 65 and r.random() < 0.9 else ("Medicaid" if r.random() < 0.3 else "Other")
    out.add("admissions", (sid, hadm, adm_s, disch_s, disch_s if died else None, adm_type,
                           m.PROVIDERS[r.integers(len(m.PROVIDERS))], adm_loc, loc, insurance, pt.language,
                           pt.marital, pt.race, sec(ed_reg) if ed else None, sec(ed_out) if ed else None, int(died)))

    # Transfers and the ICU stay.
    ward = surgery[3] if surgery else P["ward"]
    unit = m.ICU_UNITS["cvicu" if surgery and surgery[2] == "CSURG" else P["icu_unit"]]
    segs = []
    if ed:
        segs.append(("ED", "Emergency Department", ed_reg - adm, ed_out - adm))
    if icu:
        if icu_in > ward_start + 1e-9:
            segs.append((None, ward, ward_start, icu_in))
        segs.append((None, unit, icu_in, icu_out))
        if icu_out < los - 1e-9:
            segs.append((None, ward, icu_out, los))
    else:
        segs.append((None, ward, ward_start, los))
    stay_id = None
    first = True
    for j, (etype, cu, a, b) in enumerate(segs):
        tid = STAY_BASE + g * 8 + j
        if etype is None:
            etype = "admit" if first else "transfer"
            first = False
        a_s, b_s = adm_s + int(round(a * DAY)), adm_s + int(round(b * DAY))
        out.add("transfers", (sid, hadm, tid, etype, cu, a_s, b_s))
        if cu == unit and icu:
            stay_id, icu_in_s, icu_out_s = tid, a_s, b_s
    out.add("transfers", (sid, hadm, STAY_BASE + g * 8 + 7, "discharge", None, disch_s, None))
    if icu:
        out.add("icustays", (sid, hadm, stay_id, unit, unit, icu_in_s, icu_out_s, (icu_out_s - icu_in_s) / DAY))
    out.add("services", (sid, hadm, adm_s + r.integers(0, 240), None, surgery[2] if surgery else P["service"]))

    v10 = pt.icd10(adm)
    _coding(pt, P, prob, surgery, s, icu, died, active, hadm, v10, adm, los, out)
    _prescriptions(pt, P, g, hadm, adm_s, los, icu, icu_in, icu_out, s, active, out)
    n_labs = _labs(pt, P, prob, g, hadm, adm_s, los, ed_reg - adm if ed else None, icu_in, icu_out, A0, resid, died,
                   active, out)
    if icu:
        _vitals(pt, P, hadm, stay_id, adm_s, icu_in, icu_out, los, A0, resid, died, active, out)
    out.adm_stats.append((sid, adm_s, disch_s, int(died), int(icu), n_labs))
    return {"disch": disch_abs, "died": died, "loc": loc, "s": s, "unresolved": unresolved}


def _coding(pt, P, prob, surgery, s, icu, died, active, hadm, v10, adm, los, out) -> None:
    r, sid, vi = pt.r, pt.sid, 0 if v10 else 1
    codes: list[str] = []

    def want(rule) -> bool:
        return rule == 1 or (rule == "sev" and s > 0.8) or (isinstance(rule, float) and r.random() < rule)

    for c10, c9, rule in P["dx"]:
        if want(rule):
            codes.append((c10, c9)[vi])
    if surgery:
        codes.insert(0, surgery[0][vi])
    if not codes:
        codes.append(P["dx"][0][vi])
    for c, name in enumerate(m.CONDITIONS):
        if active[c]:
            for j, pair in enumerate(m.CHRONIC[name][0]):
                if r.random() < (0.85 if j == 0 else 0.45):
                    codes.append(pair[vi])
    for trait in ("alcohol", "smoker", "famca"):
        if getattr(pt, trait) and r.random() < 0.55:
            codes.append(m.TRAIT_CODES[trait][0][0][vi])
    for pair in pt.noise_dx:
        if r.random() < 0.6:
            codes.append(pair[vi])
    if died and r.random() < 0.5:
        codes.append(("Z66", "V4986")[vi])
    seen = set()
    seq = 0
    for code in codes:
        if code not in seen:
            seen.add(code)
            seq += 1
            out.add("diagnoses_icd", (sid, hadm, seq, code, 10 if v10 else 9))

    procs: list[tuple[str, float]] = []
    for c10, c9, rule in P["px"]:
        if want(rule):
            procs.append(((c10, c9)[vi], r.uniform(0, min(2.0, los))))
    if surgery:
        procs.insert(0, (surgery[1][vi], 0.1))
    if icu and s > 0.4 and r.random() < 0.6:
        day = r.uniform(0, min(1.0, los))
        procs.append((m.INTUBATION[vi], day))
        procs.append(((m.VENT_LONG if s > 1.3 else m.VENT_SHORT)[vi], day))
    if icu and r.random() < 0.4:
        procs.append((m.CENTRAL_LINE[vi], r.uniform(0, min(1.0, los))))
    seen = set()
    seq = 0
    for code, day in procs:
        if code not in seen:
            seen.add(code)
            seq += 1
            out.add("procedures_icd", (sid, hadm, seq, pt.sec(math.floor(adm + day)), code, 10 if v10 else 9))

    if surgery:
        hcfa, apr = surgery[5], surgery[6]
    else:
        variants = P["hcfa"]
        hcfa = variants[min(len(variants) - 1, int(s > 0.3) + int(s > 1.3 and icu))]
        apr = P["apr"]
    sev = int(min(4, max(1, math.floor(s + 2.2))))
    mort = int(min(4, max(1, math.floor(s + 1.5 + 0.5 * died))))
    out.add("drgcodes", (sid, hadm, "HCFA", hcfa[0], hcfa[1], None, None))
    out.add("drgcodes", (sid, hadm, "APR", apr[0], apr[1], sev, mort))


def _prescriptions(pt, P, g, hadm, adm_s, los, icu, icu_in, icu_out, s, active, out) -> None:
    r = pt.r
    orders: list[tuple[str, float, float]] = []  # drug, start (days), stop (days)

    def order(drug: str, start: float, dur: float) -> None:
        if start < los - 2 / 24:
            orders.append((drug, start, min(los, start + max(dur, 2 / 24))))

    for c, name in enumerate(m.CONDITIONS):
        if active[c]:
            for drug in pt.regimen[name]:
                if r.random() < 0.8:
                    order(drug, r.uniform(2, 10) / 24, los)
    for trait, p in (("alcohol", 0.7), ("smoker", 0.3)):
        if getattr(pt, trait) and r.random() < p:
            order(m.TRAIT_CODES[trait][1][0], r.uniform(2, 12) / 24, los)
    for pair in pt.noise_dx:
        drug = m.NOISE_DRUG.get(pair[0])
        if drug and r.random() < 0.7:
            order(drug, r.uniform(2, 12) / 24, los)
    for drug, p, delay in P["drugs"]:
        if r.random() < p:
            order(drug, (delay + r.uniform(0, 2)) / 24, r.uniform(1, 7))
    if icu:
        for drug, p in m.ICU_DRUGS:
            if r.random() < p:
                order(drug, icu_in + r.uniform(0, 3) / 24, icu_out - icu_in)
        if s > 0.8 and r.random() < 0.7:
            order("NORepinephrine", icu_in + r.uniform(0, 2) / 24, min(icu_out - icu_in, r.uniform(0.5, 3)))
        if s > 1.5 and r.random() < 0.5:
            order("Vasopressin", icu_in + r.uniform(1, 6) / 24, min(icu_out - icu_in, r.uniform(0.5, 2)))
    for drug, p in m.ROUTINE_DRUGS:
        if r.random() < p:
            order(drug, r.uniform(1, 24) / 24, r.uniform(1, los + 1))
    if active[m.C["diabetes"]] and r.random() < 0.2:
        order("Dextrose 50%", r.uniform(6, 48) / 24, 0.1)
    orders.sort(key=lambda o: o[1])
    for j, (drug, a, b) in enumerate(orders):
        pt.poe_seq += 1
        start = (adm_s + int(a * DAY)) // 3600 * 3600 + 3600  # on the hour, as in MIMIC
        stop = max(start + 3600, (adm_s + int(b * DAY)) // 3600 * 3600)
        out.add("prescriptions", (pt.sid, hadm, 1 + g * 200 + j, f"{pt.sid}-{pt.poe_seq}", pt.poe_seq,
                                  m.PROVIDERS[r.integers(len(m.PROVIDERS))], start, stop, *DRUGS[drug]))


def _acuity(T: np.ndarray, A0: float, los: float, died: bool, resid: float) -> np.ndarray:
    """Acuity over the stay: decays for survivors (towards a residual if unresolved), rises towards death."""
    Tc = np.clip(T, 0.0, los)
    if died:
        a = A0 * (1.0 + 1.2 * Tc / max(los, 0.1))
    else:
        a = A0 * np.exp(-Tc / max(0.6, 0.3 * los)) + resid * Tc / max(los, 0.1)
    return 3.0 * np.tanh(a / 3.0)  # physiology saturates


def _labs(pt, P, prob, g, hadm, adm_s, los, ed_rel, icu_in, icu_out, A0, resid, died, active, out) -> int:
    rng, r = pt.rng, pt.r
    # A list, never a set: the daily draws below consume random numbers panel by panel, and a
    # set of strings iterates in an order that changes with each process's hash seed.
    panels = list(dict.fromkeys(P["panels"]))
    for flag, extra in ((active[_HF], "bnp"), (active[_LIVER], "lft"), (active[_AFIB], "coag")):
        if flag and extra not in panels:
            panels.append(extra)
    first_mask = _CORE_MASK.copy()
    for p in panels + (["lactate"] if A0 > 1.0 else []) + (["gas"] if A0 > 1.8 else []):
        first_mask |= _PANEL_MASK[p]
    if icu_in is not None and "lactate" not in panels:
        panels.append("lactate")
    t_first = ed_rel + r.uniform(0.2, 0.8) * (-ed_rel) if ed_rel is not None else min(r.uniform(0.5, 3) / 24, 0.5 * los)
    times, prio, masks = [t_first], [1], [first_mask]
    if ed_rel is not None and A0 > 0.85:  # the sick get a repeat STAT draw before leaving the ED
        times.append(t_first + r.uniform(0.3, 0.9) * (-t_first))
        prio.append(1)
        masks.append(_BMP_MASK | _PANEL_MASK["lactate"])
    if "trop" in panels:
        for h in (6, 12):
            if t_first + h / 24 < los:
                times.append(t_first + (h + r.uniform(-0.5, 0.5)) / 24)
                prio.append(1)
                masks.append(_PANEL_MASK["trop"])
    adm_day = adm_s / DAY
    d0 = math.floor(adm_day) - adm_day
    day = 1
    while len(times) < MAX_DRAWS:
        tt = d0 + day + (5 + r.uniform(-1, 1)) / 24
        if tt >= los:
            break
        in_icu = icu_in is not None and icu_in <= tt < icu_out
        mask = _CORE_MASK.copy()
        for p in panels:
            if r.random() < 0.4:
                mask |= _PANEL_MASK[p]
        if in_icu:
            mask |= _PANEL_MASK["lactate"]
        times.append(tt)
        prio.append(int(in_icu))
        masks.append(mask)
        t2 = tt + 12 / 24
        if in_icu and t2 < min(icu_out, los) and len(times) < MAX_DRAWS:
            times.append(t2)
            prio.append(1)
            masks.append(_BMP_MASK | _PANEL_MASK["lactate"])
        day += 1
    T = np.array(times)
    keep = T <= los - 2 / 1440  # nothing after discharge (times are rounded to the minute below)
    T, masks = T[keep], np.array(masks)[keep]
    prio = np.array(prio, np.int8)[keep]
    n = len(T)
    A = _acuity(T, A0, los, died, resid)
    shift = pt.lab_re.copy()
    for c, name in enumerate(m.CONDITIONS):
        if active[c] and name in _CHRONIC_VEC:
            shift += _CHRONIC_VEC[name]
    if pt.alcohol:
        shift += _CHRONIC_VEC["alcohol"]
    shift[_L[50862]] -= 0.5 * pt.z
    shift[_L[51222]] += 0.7 * pt.male - 0.3 * pt.z
    Z = shift + np.outer(A, _ACUTE_VEC[prob]) + rng.normal(0, 0.45, (n, _NL))
    lin = _CENTRE + _SCALE * Z
    V = np.where(_LOG, np.exp(np.minimum(lin, 12.0)), lin)
    V = np.clip(V, _CLIP_LO, _CLIP_HI)
    V[:, _L[50868]] = V[:, _L[50983]] - V[:, _L[50902]] - V[:, _L[50882]] + rng.normal(0, 1.0, n)
    V[:, _L[51221]] = 3.0 * V[:, _L[51222]] + rng.normal(0, 0.8, n)
    V[:, _L[51279]] = V[:, _L[51222]] / 2.95 + rng.normal(0, 0.08, n)
    V[:, _L[51274]] = 11.0 * V[:, _L[51237]] + rng.normal(0, 0.3, n)
    V[:, _L[50868]] = np.maximum(V[:, _L[50868]], 3.0)
    ri, ci = np.nonzero(masks)
    nrow = len(ri)
    chart = adm_s + np.round(T * 1440.0).astype(np.int64) * 60
    store = chart + rng.integers(20, 150, n) * 60
    out.add_cols("labevents", labevent_id=1 + g * 2000 + np.arange(nrow, dtype=np.int64),
                 subject_id=np.full(nrow, pt.sid, np.int64), hadm_id=np.full(nrow, hadm, np.int64),
                 specimen_id=1 + g * 100 + ri.astype(np.int64), itemid=m.LAB_IDS[ci], charttime=chart[ri],
                 storetime=store[ri], valuenum=V[ri, ci], priority=prio[ri])
    return nrow


def _vitals(pt, P, hadm, stay_id, adm_s, icu_in, icu_out, los, A0, resid, died, active, out) -> None:
    rng = pt.rng
    dur_h = (icu_out - icu_in) * 24
    hours = np.concatenate([np.arange(0.25, min(12.0, dur_h)), np.arange(12.0, dur_h, 4.0)])[:200]
    if len(hours) == 0:
        hours = np.array([0.0])
    T = icu_in + hours / 24
    n = len(T)
    A = _acuity(T, A0, los, died, resid)
    inf = float(P["infection"])
    e = rng.normal(size=(n, 6))
    hr = 80 + 9 * A + 8 * active[_AFIB] + 6 * inf * A + 6 * e[:, 0]
    sbp = 124 + 10 * active[_HTN] - 8 * A - 8 * inf * A + 9 * e[:, 1]
    dbp = 0.55 * sbp + 3 + 5 * e[:, 2]
    mbp = (sbp + 2 * dbp) / 3
    rr = 16 + 3 * A + 2 * active[_COPD] + 2 * e[:, 3]
    spo2 = np.minimum(100, 97.5 - 1.2 * A - 1.5 * active[_COPD] + 1.2 * e[:, 4])
    temp = 98.2 + 1.3 * A * inf + 0.4 * e[:, 5]
    V = np.clip(np.column_stack([hr, sbp, dbp, mbp, rr, spo2, temp]), _VIT_LO, _VIT_HI)
    mask = np.ones_like(V, dtype=bool)
    mask[:, 6] = (hours >= 12) | (np.arange(n) % 4 == 0)
    ri, ci = np.nonzero(mask)
    nrow = len(ri)
    chart = adm_s + np.round(T * 1440.0).astype(np.int64) * 60
    store = chart + rng.integers(1, 40, n) * 60
    out.add_cols("chartevents", subject_id=np.full(nrow, pt.sid, np.int64), hadm_id=np.full(nrow, hadm, np.int64),
                 stay_id=np.full(nrow, stay_id, np.int64),
                 caregiver_id=rng.integers(10000, 100000, n)[ri], charttime=chart[ri], storetime=store[ri],
                 itemid=_VIT_IDS[ci], valuenum=V[ri, ci])
