"""One admission: acute problem, severity, outcomes, and every row it produces.

The steps below consume the patient's random streams in a fixed order (problem and severity,
arrival, hospital course, discharge location, then the rows: admission, transfers, services,
codes, drugs, labs, vitals): reordering any draw changes the cohort.
"""

from __future__ import annotations

import math

import numpy as np

from ehrscale.synth import density
from ehrscale.synth import model as m
from ehrscale.synth.ids import DAY, HADM_BASE, MAX_ADM, MAX_DRAWS, STAY_BASE
from ehrscale.synth.tables import DRUGS

_L = m.LAB_IDX  # itemid -> column of the lab vectors
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


class _Admission:
    """One admission's latent state, drawn on construction: acute problem, arrival, course, discharge.

    ``adm``, ``disch``, ``ed_reg`` and ``ed_out`` are days since the patient's epoch; ``los``,
    ``ward_start``, ``icu_in`` and ``icu_out`` are days after ``adm``; ``*_s`` are epoch seconds.
    """

    def __init__(self, pt, k: int, t: float, prev_loc: str | None):
        self.g = pt.i * MAX_ADM + k  # admission slot: every id of the admission derives from it
        self.hadm = HADM_BASE + self.g
        self.active = pt.active(t)
        self.bz = m.burden_z(self.active, pt.alcohol)
        self.age = pt.age0 + (t - pt.t0) / 365.25
        self.az = m.age_z(self.age)
        self._draw_problem(pt)
        self._draw_arrival(pt.r, t, prev_loc)
        self._draw_course(pt)
        self.loc = self._draw_discharge_location(pt)
        self.adm_s, self.disch_s = pt.sec(self.adm), pt.sec(self.disch)

    def _draw_problem(self, pt) -> None:
        """Acute problem, route in, latent severity ``s`` and the unresolved-problem latent."""
        r, bz, az = pt.r, self.bz, self.az
        # Acute problem: rates depend on which chronic conditions are active.
        w = m.PROBLEM_WEIGHT + np.append(self.active, pt.alcohol).astype(float) @ m.PROBLEM_COND_WEIGHT
        w[_PROB_IDX["elective"]] *= math.exp(-0.3 * bz)
        w[_PROB_IDX["hip_fracture"]] *= math.exp(0.7 * az)
        self.prob = m.PROBLEM_NAMES[r.pick(w)]
        self.P = P = m.PROBLEMS[self.prob]
        self.surgery = m.SURGERIES[r.pick(_SURG_W)] if P["elective"] else None
        self.ed = (not P["elective"]) and r.random() < P["ed"]
        self.transfer_in = (not self.ed) and (not P["elective"]) and r.random() < 0.6
        self.s = P["sev"] + 0.3 * bz + 0.25 * az + 0.2 * pt.z + 0.3 * self.transfer_in + r.normal(0, 0.9)
        self.A0 = math.log1p(math.exp(self.s))
        # Unresolved problem at discharge: residual acuity late in the stay, and early readmission.
        self.unresolved = r.normal()
        self.resid = 0.6 * math.log1p(math.exp(self.unresolved - 0.5))

    def _draw_arrival(self, r, t: float, prev_loc: str | None) -> None:
        """Where from, and how: admission type, location and time, and the ED stay before it."""
        if self.P["elective"]:
            self.adm_type = "ELECTIVE" if r.random() < 0.4 else "SURGICAL SAME DAY ADMISSION"
            self.adm_loc = "PHYSICIAN REFERRAL"
            adm = math.floor(t) + (6.5 + 2 * r.random()) / 24
        elif self.ed:
            obs = self.s < -0.6 and r.random() < 0.7
            self.adm_type = ("EU OBSERVATION" if r.random() < 0.5 else "OBSERVATION ADMIT") if obs else "EW EMER."
            self.adm_loc = "EMERGENCY ROOM"
            adm = t
        elif self.transfer_in:
            self.adm_type = "URGENT"
            self.adm_loc = ("TRANSFER FROM SKILLED NURSING FACILITY" if prev_loc == "SKILLED NURSING FACILITY"
                            else "TRANSFER FROM HOSPITAL")
            adm = t
        else:
            self.adm_type = "DIRECT EMER." if r.random() < 0.6 else "URGENT"
            self.adm_loc = "PHYSICIAN REFERRAL" if r.random() < 0.7 else "CLINIC REFERRAL"
            adm = t
        self.adm = adm = _rnd_minute(adm)
        self.ed_reg = _rnd_minute(adm - r.uniform(1.5, 7) / 24) if self.ed else None
        self.ed_out = _rnd_minute(adm + r.uniform(0.3, 2.0) / 24) if self.ed else None

    def _draw_course(self, pt) -> None:
        """Outcomes, driven by chronic burden and acute severity: ICU stay, death, length of stay."""
        r, P, s, bz, az, surgery = pt.r, self.P, self.s, self.bz, self.az, self.surgery
        icu_bias = P["icu"] + (surgery[4] if surgery else 0.0)
        self.icu = icu = r.random() < m.sigmoid(-2.3 + 1.3 * s + icu_bias + 0.15 * bz)
        self.died = died = r.random() < m.sigmoid(-4.5 + 1.25 * s + 0.3 * bz + 0.45 * az + 0.25 * pt.z + P["mort"]
                                                  + 0.4 * icu)
        los = min(90.0, max(0.25, math.exp(P["los"] + 0.35 * s + 0.12 * bz + 0.08 * az + 0.4 * icu
                                           + r.normal(0, 0.5))))
        if died:
            los = max(0.15, los * r.uniform(0.25, 1.3))
        self.ward_start = ward_start = (self.ed_out - self.adm) if self.ed else r.uniform(2, 30) / 1440
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
        self.disch = _rnd_minute(self.adm + los)
        self.los = los = self.disch - self.adm
        if icu_out is not None:
            icu_out = min(icu_out, los)
        self.icu_in, self.icu_out = icu_in, icu_out

    def _draw_discharge_location(self, pt) -> str:
        if self.died:
            return "DIED"
        r = pt.r
        score = 0.6 * self.az + 0.35 * self.bz + 0.35 * self.s + 0.3 * pt.z + 0.3 * self.icu + r.normal(0, 0.8)
        if r.random() < (0.1 if pt.alcohol else 0.01):
            return "AGAINST ADVICE"
        if self.active[m.C["cancer"]] and score > 1.4 and r.random() < 0.5:
            return "HOSPICE"
        if score < -0.3:
            return "" if self.adm_type in ("EU OBSERVATION", "OBSERVATION ADMIT") and r.random() < 0.6 else "HOME"
        if score < 0.6:
            return "HOME HEALTH CARE"
        if score < 1.6:
            rehab = self.prob in ("hip_fracture", "stroke") and r.random() < 0.5
            return "REHAB" if rehab else "SKILLED NURSING FACILITY"
        return "CHRONIC/LONG TERM ACUTE CARE" if self.icu else "SKILLED NURSING FACILITY"


def simulate_admission(pt, k: int, t: float, prev_loc: str | None, out) -> dict:
    """Simulate admission ``k`` of ``pt`` starting on day ``t``; append its rows to ``out``."""
    a = _Admission(pt, k, t, prev_loc)
    _add_admission(pt, a, out)
    stay_id = _add_transfers(pt, a, out)
    out.add("services", (pt.sid, a.hadm, a.adm_s + pt.r.integers(0, 240), None,
                         a.surgery[2] if a.surgery else a.P["service"]))
    _coding(pt, a, out)
    _prescriptions(pt, a, out)
    n_labs = _labs(pt, a, out)
    if a.icu:
        _vitals(pt, a, stay_id, out)
    if pt.dense_rng is not None:  # a mimic-density cohort: after the default rows, from the second generator
        density.extra_labs(pt, a, out, _lab_values)
        if a.icu:
            density.icu_charting(pt, a, stay_id, out, _acuity)
    out.adm_stats.append((pt.sid, a.adm_s, a.disch_s, int(a.died), int(a.icu), n_labs))
    return {"disch": a.disch, "died": a.died, "loc": a.loc, "s": a.s, "unresolved": a.unresolved}


def _add_admission(pt, a: _Admission, out) -> None:
    """The admissions row (insurance and the admitting provider are drawn here)."""
    r = pt.r
    insurance = "Medicare" if a.age >= 65 and r.random() < 0.9 else ("Medicaid" if r.random() < 0.3 else "Other")
    out.add("admissions", (pt.sid, a.hadm, a.adm_s, a.disch_s, a.disch_s if a.died else None, a.adm_type,
                           m.PROVIDERS[r.integers(len(m.PROVIDERS))], a.adm_loc, a.loc, insurance, pt.language,
                           pt.marital, pt.race, pt.sec(a.ed_reg) if a.ed else None,
                           pt.sec(a.ed_out) if a.ed else None, int(a.died)))


def _add_transfers(pt, a: _Admission, out) -> int | None:
    """Transfers (ED, wards, ICU, discharge) and the ICU stay; returns the stay_id (None without ICU)."""
    sid, hadm, adm_s, surgery, icu = pt.sid, a.hadm, a.adm_s, a.surgery, a.icu
    ward = surgery[3] if surgery else a.P["ward"]
    unit = m.ICU_UNITS["cvicu" if surgery and surgery[2] == "CSURG" else a.P["icu_unit"]]
    segs = []
    if a.ed:
        segs.append(("ED", "Emergency Department", a.ed_reg - a.adm, a.ed_out - a.adm))
    if icu:
        if a.icu_in > a.ward_start + 1e-9:
            segs.append((None, ward, a.ward_start, a.icu_in))
        segs.append((None, unit, a.icu_in, a.icu_out))
        if a.icu_out < a.los - 1e-9:
            segs.append((None, ward, a.icu_out, a.los))
    else:
        segs.append((None, ward, a.ward_start, a.los))
    stay_id = None
    first = True
    for j, (etype, cu, start, end) in enumerate(segs):
        tid = STAY_BASE + a.g * 8 + j
        if etype is None:
            etype = "admit" if first else "transfer"
            first = False
        a_s, b_s = adm_s + int(round(start * DAY)), adm_s + int(round(end * DAY))
        out.add("transfers", (sid, hadm, tid, etype, cu, a_s, b_s))
        if cu == unit and icu:
            stay_id, icu_in_s, icu_out_s = tid, a_s, b_s
    out.add("transfers", (sid, hadm, STAY_BASE + a.g * 8 + 7, "discharge", None, a.disch_s, None))
    if icu:
        out.add("icustays", (sid, hadm, stay_id, unit, unit, icu_in_s, icu_out_s, (icu_out_s - icu_in_s) / DAY))
    return stay_id


def _wanted(rule, s: float, r) -> bool:
    """A diagnosis/procedure rule: 1 always, "sev" if severe, a float a probability (drawn only then)."""
    return rule == 1 or (rule == "sev" and s > 0.8) or (isinstance(rule, float) and r.random() < rule)


def _coding(pt, a: _Admission, out) -> None:
    """Diagnoses, procedures and DRGs, in ICD-10 or ICD-9 by the admission's real date."""
    v10 = pt.icd10(a.adm)
    _diagnoses(pt, a, v10, out)
    _procedures(pt, a, v10, out)
    _drgs(pt, a, out)


def _diagnoses(pt, a: _Admission, v10: bool, out) -> None:
    r, vi, P, surgery = pt.r, 0 if v10 else 1, a.P, a.surgery
    codes: list[str] = []
    for c10, c9, rule in P["dx"]:
        if _wanted(rule, a.s, r):
            codes.append((c10, c9)[vi])
    if surgery:
        codes.insert(0, surgery[0][vi])
    if not codes:
        codes.append(P["dx"][0][vi])
    for c, name in enumerate(m.CONDITIONS):
        if a.active[c]:
            for j, pair in enumerate(m.CHRONIC[name][0]):
                if r.random() < (0.85 if j == 0 else 0.45):
                    codes.append(pair[vi])
    for trait in ("alcohol", "smoker", "famca"):
        if getattr(pt, trait) and r.random() < 0.55:
            codes.append(m.TRAIT_CODES[trait][0][0][vi])
    for pair in pt.noise_dx:
        if r.random() < 0.6:
            codes.append(pair[vi])
    if a.died and r.random() < 0.5:
        codes.append(("Z66", "V4986")[vi])
    for seq, code in enumerate(dict.fromkeys(codes), start=1):  # first occurrence of each code
        out.add("diagnoses_icd", (pt.sid, a.hadm, seq, code, 10 if v10 else 9))


def _procedures(pt, a: _Admission, v10: bool, out) -> None:
    r, vi, s, los, icu = pt.r, 0 if v10 else 1, a.s, a.los, a.icu
    procs: list[tuple[str, float]] = []
    for c10, c9, rule in a.P["px"]:
        if _wanted(rule, s, r):
            procs.append(((c10, c9)[vi], r.uniform(0, min(2.0, los))))
    if a.surgery:
        procs.insert(0, (a.surgery[1][vi], 0.1))
    if icu and s > 0.4 and r.random() < 0.6:
        day = r.uniform(0, min(1.0, los))
        procs.append((m.INTUBATION[vi], day))
        procs.append(((m.VENT_LONG if s > 1.3 else m.VENT_SHORT)[vi], day))
    if icu and r.random() < 0.4:
        procs.append((m.CENTRAL_LINE[vi], r.uniform(0, min(1.0, los))))
    first_day: dict[str, float] = {}
    for code, day in procs:
        first_day.setdefault(code, day)  # first occurrence of each code
    for seq, (code, day) in enumerate(first_day.items(), start=1):
        out.add("procedures_icd", (pt.sid, a.hadm, seq, pt.sec(math.floor(a.adm + day)), code, 10 if v10 else 9))


def _drgs(pt, a: _Admission, out) -> None:
    s = a.s
    if a.surgery:
        hcfa, apr = a.surgery[5], a.surgery[6]
    else:
        variants = a.P["hcfa"]
        hcfa = variants[min(len(variants) - 1, int(s > 0.3) + int(s > 1.3 and a.icu))]
        apr = a.P["apr"]
    sev = int(min(4, max(1, math.floor(s + 2.2))))
    mort = int(min(4, max(1, math.floor(s + 1.5 + 0.5 * a.died))))
    out.add("drgcodes", (pt.sid, a.hadm, "HCFA", hcfa[0], hcfa[1], None, None))
    out.add("drgcodes", (pt.sid, a.hadm, "APR", apr[0], apr[1], sev, mort))


def _prescriptions(pt, a: _Admission, out) -> None:
    r, los, icu_in, icu_out = pt.r, a.los, a.icu_in, a.icu_out
    orders: list[tuple[str, float, float]] = []  # drug, start (days), stop (days)

    def order(drug: str, start: float, dur: float) -> None:
        if start < los - 2 / 24:
            orders.append((drug, start, min(los, start + max(dur, 2 / 24))))

    for c, name in enumerate(m.CONDITIONS):
        if a.active[c]:
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
    for drug, p, delay in a.P["drugs"]:
        if r.random() < p:
            order(drug, (delay + r.uniform(0, 2)) / 24, r.uniform(1, 7))
    if a.icu:
        for drug, p in m.ICU_DRUGS:
            if r.random() < p:
                order(drug, icu_in + r.uniform(0, 3) / 24, icu_out - icu_in)
        if a.s > 0.8 and r.random() < 0.7:
            order("NORepinephrine", icu_in + r.uniform(0, 2) / 24, min(icu_out - icu_in, r.uniform(0.5, 3)))
        if a.s > 1.5 and r.random() < 0.5:
            order("Vasopressin", icu_in + r.uniform(1, 6) / 24, min(icu_out - icu_in, r.uniform(0.5, 2)))
    for drug, p in m.ROUTINE_DRUGS:
        if r.random() < p:
            order(drug, r.uniform(1, 24) / 24, r.uniform(1, los + 1))
    if a.active[m.C["diabetes"]] and r.random() < 0.2:
        order("Dextrose 50%", r.uniform(6, 48) / 24, 0.1)
    orders.sort(key=lambda o: o[1])
    for j, (drug, start_d, stop_d) in enumerate(orders):
        pt.poe_seq += 1
        start = (a.adm_s + int(start_d * DAY)) // 3600 * 3600 + 3600  # on the hour, as in MIMIC
        stop = max(start + 3600, (a.adm_s + int(stop_d * DAY)) // 3600 * 3600)
        out.add("prescriptions", (pt.sid, a.hadm, 1 + a.g * 200 + j, f"{pt.sid}-{pt.poe_seq}", pt.poe_seq,
                                  m.PROVIDERS[r.integers(len(m.PROVIDERS))], start, stop, *DRUGS[drug]))


def _acuity(T: np.ndarray, a: _Admission) -> np.ndarray:
    """Acuity over the stay: decays for survivors (towards a residual if unresolved), rises towards death."""
    A0, los = a.A0, a.los
    Tc = np.clip(T, 0.0, los)
    if a.died:
        acuity = A0 * (1.0 + 1.2 * Tc / max(los, 0.1))
    else:
        acuity = A0 * np.exp(-Tc / max(0.6, 0.3 * los)) + a.resid * Tc / max(los, 0.1)
    return 3.0 * np.tanh(acuity / 3.0)  # physiology saturates


def _labs(pt, a: _Admission, out) -> int:
    """Lab draws of the stay (ED, STAT panels, daily morning labs) as labevents; returns the row count."""
    T, prio, masks = _lab_schedule(pt.r, a)
    n = len(T)
    V = _lab_values(pt, a, T)
    ri, ci = np.nonzero(masks)
    nrow = len(ri)
    chart = a.adm_s + np.round(T * 1440.0).astype(np.int64) * 60
    store = chart + pt.rng.integers(20, 150, n) * 60
    out.add_cols("labevents", labevent_id=1 + a.g * 2000 + np.arange(nrow, dtype=np.int64),
                 subject_id=np.full(nrow, pt.sid, np.int64), hadm_id=np.full(nrow, a.hadm, np.int64),
                 specimen_id=1 + a.g * 100 + ri.astype(np.int64), itemid=m.LAB_IDS[ci], charttime=chart[ri],
                 storetime=store[ri], valuenum=V[ri, ci], priority=prio[ri])
    return nrow


def _lab_panels(a: _Admission) -> tuple[list[str], np.ndarray]:
    """Panels drawn on later days, and the lab mask of the first draw."""
    # A list, never a set: the daily draws consume random numbers panel by panel, and a
    # set of strings iterates in an order that changes with each process's hash seed.
    panels = list(dict.fromkeys(a.P["panels"]))
    for flag, extra in ((a.active[_HF], "bnp"), (a.active[_LIVER], "lft"), (a.active[_AFIB], "coag")):
        if flag and extra not in panels:
            panels.append(extra)
    first_mask = m.CORE_MASK.copy()
    for p in panels + (["lactate"] if a.A0 > 1.0 else []) + (["gas"] if a.A0 > 1.8 else []):
        first_mask |= m.PANEL_MASK[p]
    if a.icu_in is not None and "lactate" not in panels:
        panels.append("lactate")
    return panels, first_mask


def _lab_schedule(r, a: _Admission) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw times (days after admittime), STAT flags and lab masks, all before discharge."""
    los, icu_in, icu_out = a.los, a.icu_in, a.icu_out
    ed_rel = a.ed_reg - a.adm if a.ed else None
    panels, first_mask = _lab_panels(a)
    t_first = ed_rel + r.uniform(0.2, 0.8) * (-ed_rel) if ed_rel is not None else min(r.uniform(0.5, 3) / 24, 0.5 * los)
    times, prio, masks = [t_first], [1], [first_mask]
    if ed_rel is not None and a.A0 > 0.85:  # the sick get a repeat STAT draw before leaving the ED
        times.append(t_first + r.uniform(0.3, 0.9) * (-t_first))
        prio.append(1)
        masks.append(_BMP_MASK | m.PANEL_MASK["lactate"])
    if "trop" in panels:
        for h in (6, 12):
            if t_first + h / 24 < los:
                times.append(t_first + (h + r.uniform(-0.5, 0.5)) / 24)
                prio.append(1)
                masks.append(m.PANEL_MASK["trop"])
    adm_day = a.adm_s / DAY
    d0 = math.floor(adm_day) - adm_day
    day = 1
    while len(times) < MAX_DRAWS:
        tt = d0 + day + (5 + r.uniform(-1, 1)) / 24
        if tt >= los:
            break
        in_icu = icu_in is not None and icu_in <= tt < icu_out
        mask = m.CORE_MASK.copy()
        for p in panels:
            if r.random() < 0.4:
                mask |= m.PANEL_MASK[p]
        if in_icu:
            mask |= m.PANEL_MASK["lactate"]
        times.append(tt)
        prio.append(int(in_icu))
        masks.append(mask)
        t2 = tt + 12 / 24
        if in_icu and t2 < min(icu_out, los) and len(times) < MAX_DRAWS:
            times.append(t2)
            prio.append(1)
            masks.append(_BMP_MASK | m.PANEL_MASK["lactate"])
        day += 1
    T = np.array(times)
    keep = T <= los - 2 / 1440  # nothing after discharge (times are rounded to the minute later)
    return T[keep], np.array(prio, np.int8)[keep], np.array(masks)[keep]


def lab_shift(pt, active: np.ndarray) -> np.ndarray:
    """The patient's lab offsets (z units): personal identity plus the active chronic conditions."""
    shift = pt.lab_re.copy()
    for c, name in enumerate(m.CONDITIONS):
        if active[c] and name in m.CHRONIC_LAB_VEC:
            shift += m.CHRONIC_LAB_VEC[name]
    if pt.alcohol:
        shift += m.CHRONIC_LAB_VEC["alcohol"]
    shift[_L[50862]] -= 0.5 * pt.z
    shift[_L[51222]] += 0.7 * pt.male - 0.3 * pt.z
    return shift


def _lab_values(pt, a: _Admission, T: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Lab values at times ``T``: personal and chronic baselines plus the acute effect times acuity."""
    rng = pt.rng if rng is None else rng
    n = len(T)
    A = _acuity(T, a)
    Z = lab_shift(pt, a.active) + np.outer(A, m.ACUTE_LAB_VEC[a.prob]) + rng.normal(0, 0.45, (n, m.N_LABS))
    return _lab_scale(Z, rng)


def baseline_lab_values(pt, days: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Outpatient lab values on ``days``: the chronic baseline of each day, no acute effect."""
    shift = np.stack([lab_shift(pt, pt.active(d)) for d in days])
    return _lab_scale(shift + rng.normal(0, 0.45, (len(days), m.N_LABS)), rng)


def _lab_scale(Z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """z scores -> lab values in their units, clipped, with the derived labs recomputed."""
    n = len(Z)
    lin = m.LAB_CENTRE + m.LAB_SCALE * Z
    V = np.where(m.LAB_LOG, np.exp(np.minimum(lin, 12.0)), lin)
    V = np.clip(V, _CLIP_LO, _CLIP_HI)
    # Derived labs: anion gap, haematocrit, RBC count, PT from the labs they follow.
    V[:, _L[50868]] = V[:, _L[50983]] - V[:, _L[50902]] - V[:, _L[50882]] + rng.normal(0, 1.0, n)
    V[:, _L[51221]] = 3.0 * V[:, _L[51222]] + rng.normal(0, 0.8, n)
    V[:, _L[51279]] = V[:, _L[51222]] / 2.95 + rng.normal(0, 0.08, n)
    V[:, _L[51274]] = 11.0 * V[:, _L[51237]] + rng.normal(0, 0.3, n)
    V[:, _L[50868]] = np.maximum(V[:, _L[50868]], 3.0)
    return V


def _vitals(pt, a: _Admission, stay_id: int, out) -> None:
    """ICU vitals (chartevents): hourly for 12 hours, then every 4 hours; temperature less often."""
    rng, active, icu_in = pt.rng, a.active, a.icu_in
    dur_h = (a.icu_out - icu_in) * 24
    hours = np.concatenate([np.arange(0.25, min(12.0, dur_h)), np.arange(12.0, dur_h, 4.0)])[:200]
    if len(hours) == 0:
        hours = np.array([0.0])
    T = icu_in + hours / 24
    n = len(T)
    A = _acuity(T, a)
    inf = float(a.P["infection"])
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
    chart = a.adm_s + np.round(T * 1440.0).astype(np.int64) * 60
    store = chart + rng.integers(1, 40, n) * 60
    out.add_cols("chartevents", subject_id=np.full(nrow, pt.sid, np.int64), hadm_id=np.full(nrow, a.hadm, np.int64),
                 stay_id=np.full(nrow, stay_id, np.int64),
                 caregiver_id=rng.integers(10000, 100000, n)[ri], charttime=chart[ri], storetime=store[ri],
                 itemid=_VIT_IDS[ci], valuenum=V[ri, ci])
