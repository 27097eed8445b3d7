"""Simulate one patient's whole record from its own RNG (see the package docstring for the model).

``simulate_patient(seed, i, rows)`` appends the patient's rows to ``rows`` (a :class:`ChunkRows`).
Everything, ids included, is a function of ``(seed, i)`` only. Times are integer seconds on
numpy's datetime64 epoch; ``None`` is NULL.
"""

from __future__ import annotations

import math

import numpy as np

from ehrscale.synth import model as m
from ehrscale.synth import density
from ehrscale.synth.admission import baseline_lab_values, simulate_admission
from ehrscale.synth.ids import DAY, MAX_ADM, SUBJECT_BASE

_YEAR0 = {y: int(np.datetime64(f"{y}-01-01T00:00:00", "s").astype(np.int64)) for y in range(2100, 2300)}


class ChunkRows:
    """Rows of one chunk of patients: small tables as tuples, big ones as column arrays."""

    def __init__(self, density: str = "default") -> None:
        self.density = density  # "mimic": the extra rows of ehrscale.synth.density, in the *_dense stores
        self.rows: dict[str, list] = {}
        self.cols: dict[str, dict[str, list]] = {"labevents": {}, "chartevents": {}, "labevents_dense": {},
                                                 "chartevents_dense": {}}
        self.adm_stats: list[tuple] = []  # (subject_id, admit, disch, died, icu, n_labs)

    def add(self, table: str, row: tuple) -> None:
        self.rows.setdefault(table, []).append(row)

    def add_cols(self, table: str, **cols) -> None:
        store = self.cols[table]
        for name, arr in cols.items():
            store.setdefault(name, []).append(arr)


class Scalars:
    """Scalar draws served from blocks of the patient's generator: far cheaper than one call each."""

    __slots__ = ("_g", "_u", "_n")

    def __init__(self, g: np.random.Generator):
        self._g, self._u, self._n = g, iter(()), iter(())

    def random(self) -> float:
        try:
            return next(self._u)
        except StopIteration:
            self._u = iter(self._g.random(128).tolist())
            return next(self._u)

    def normal(self, mu: float = 0.0, sd: float = 1.0) -> float:
        try:
            return mu + sd * next(self._n)
        except StopIteration:
            self._n = iter(self._g.standard_normal(64).tolist())
            return mu + sd * next(self._n)

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()

    def integers(self, lo: int, hi: int | None = None) -> int:
        if hi is None:
            lo, hi = 0, lo
        return lo + min(hi - lo - 1, int(self.random() * (hi - lo)))

    def exponential(self, scale: float) -> float:
        return -scale * math.log1p(-self.random())

    def pick(self, weights: np.ndarray) -> int:
        cum = np.cumsum(weights)
        return min(len(cum) - 1, int(np.searchsorted(cum, self.random() * cum[-1], side="right")))


class _Patient:
    """Per-patient latent state."""

    def __init__(self, rng: np.random.Generator, i: int):
        self.rng, self.i, self.sid = rng, i, SUBJECT_BASE + i
        self.r = Scalars(rng)
        r = rng
        self.male = r.random() < 0.49
        self.age0 = float(np.clip(r.normal(62, 17), 18, 91))
        az = m.age_z(self.age0)
        self.M, self.z = r.normal(), r.normal()  # metabolic factor, frailty
        self.smoker = r.random() < 0.26 + 0.08 * self.male
        self.alcohol = r.random() < 0.05 + 0.05 * self.male
        self.famca = r.random() < 0.06
        e = r.normal(size=len(m.CONDITIONS))
        has = {}
        has["hypertension"] = -0.1 + 0.6 * az + 0.5 * self.M + e[0] > 0
        has["diabetes"] = -0.8 + 0.2 * az + 0.6 * self.M + 0.3 * has["hypertension"] + e[1] > 0
        has["cad"] = (-1.3 + 0.5 * az + 0.3 * self.male + 0.35 * self.M + 0.35 * self.smoker + 0.35 * has["diabetes"]
                      + 0.3 * has["hypertension"] + e[2] > 0)
        has["ckd"] = -1.4 + 0.45 * az + 0.55 * has["diabetes"] + 0.45 * has["hypertension"] + 0.2 * self.M + e[3] > 0
        has["heart_failure"] = -1.6 + 0.45 * az + 0.6 * has["cad"] + 0.3 * has["hypertension"] + 0.35 * has["ckd"] + e[4] > 0
        has["afib"] = -1.5 + 0.6 * az + 0.5 * has["heart_failure"] + e[5] > 0
        has["copd"] = -1.8 + 0.3 * az + 1.2 * self.smoker + e[6] > 0
        has["cancer"] = -1.7 + 0.3 * az + 0.4 * self.smoker + 1.6 * self.famca + e[7] > 0
        has["liver"] = -2.3 + 1.9 * self.alcohol + 0.3 * self.M + e[8] > 0
        self.has = np.array([bool(has[c]) for c in m.CONDITIONS])
        # Onset (days after the first admission): prevalent, or arising later. A family history
        # of cancer mostly surfaces as cancer years later: a long-range dependency.
        prevalent = r.random(len(m.CONDITIONS)) < 0.6
        if self.famca:
            prevalent[m.C["cancer"]] = r.random() < 0.15
        self.onset = np.where(prevalent, -1e9, r.uniform(0, 3650, len(m.CONDITIONS)))
        # Which maintenance drugs this patient takes for each condition (stable over years).
        self.regimen = {c: [d for k, d in enumerate(m.CHRONIC[c][1]) if k == 0 or r.random() < 0.45] for c in m.CONDITIONS}
        self.noise_dx = [code for code in m.NOISE_DX if r.random() < 0.15]
        self.lab_re = r.normal(0, 0.35, m.N_LABS)  # persistent individual lab offsets
        self.height = 64.0 + 5.5 * self.male + r.normal(0, 2.5)
        self.weight = 165 + 22 * self.M + 25 * self.male + r.normal(0, 20)
        self.marital = m.MARITAL[r.choice(5, p=[0.42, 0.3, 0.13, 0.1, 0.05])]
        self.race = m.RACE[r.choice(len(m.RACE), p=m.RACE_P)]
        self.language = "ENGLISH" if r.random() < 0.92 else "?"
        # Calendar: shifted anchor_year and the real years it stands for (ICD-9 before Oct 2015).
        self.group = m.ANCHOR_GROUPS[r.integers(len(m.ANCHOR_GROUPS))]
        self.anchor_year = 2110 + int(r.integers(0, 90))
        self.real_anchor = self.group + r.uniform(0, 3)
        self.end = (2020.0 - self.real_anchor) * 365.25  # end of data, days after anchor_year-01-01
        self.t0 = r.uniform(0, min(3 * 365.25, max(30.0, self.end - 30)))
        self.end = max(self.end, self.t0 + 30)
        self.anchor_age = int(min(91, max(18, math.floor(self.age0 - self.t0 / 365.25))))
        self.epoch = _YEAR0[self.anchor_year]
        self.poe_seq = 0  # per-patient order counter (poe_id = subject_id-poe_seq)

    def sec(self, days: float) -> int:
        return self.epoch + int(round(days * DAY))

    def active(self, t: float) -> np.ndarray:
        return self.has & (self.onset <= t - self.t0)

    def icd10(self, t: float) -> bool:
        return self.real_anchor + t / 365.25 >= 2015.75


def simulate_patient(seed: int, i: int, out: ChunkRows) -> None:
    rng = np.random.default_rng([seed, i])
    pt = _Patient(rng, i)
    # The extra rows of a dense cohort come from a second generator: the default draws stay as they are.
    pt.dense_rng = np.random.default_rng([seed, i, 1]) if out.density == "mimic" else None
    t, k, dod, prev_loc = pt.t0, 0, None, None
    last_disch = None
    while k < MAX_ADM and t < pt.end:
        res = simulate_admission(pt, k, t, prev_loc, out)
        k += 1
        last_disch = res["disch"]
        if res["died"]:
            dod = res["disch"]
            break
        bz = m.burden_z(pt.active(res["disch"]), pt.alcohol)
        az = m.age_z(pt.age0 + (res["disch"] - pt.t0) / 365.25)
        loc = res["loc"]
        loc_eff = {"SKILLED NURSING FACILITY": 0.4, "AGAINST ADVICE": 1.2, "CHRONIC/LONG TERM ACUTE CARE": 0.5,
                   "HOME HEALTH CARE": 0.2}.get(loc, 0.0)
        p_re = m.sigmoid(-2.5 + 0.9 * bz + 0.3 * res["s"] + 0.8 * res["unresolved"] + 0.4 * pt.z + loc_eff
                       + 0.5 * pt.alcohol)
        if pt.r.random() < p_re:
            gap = 1.0 + 28.0 * rng.beta(1.1, 2.0)
        else:
            rate = 0.34 * math.exp(0.45 * bz + 0.2 * pt.z)  # per year
            gap = 2.0 + pt.r.exponential(365.25 / rate)
        hz = 0.03 * math.exp(0.55 * bz + 0.6 * az + 0.3 * pt.z) / 365.25
        if loc == "HOSPICE":
            hz = 1 / 15.0
        td = pt.r.exponential(1 / hz)
        if td < gap:
            if td <= 365 and res["disch"] + td < pt.end:
                dod = res["disch"] + td
            break
        t = res["disch"] + gap
        prev_loc = loc
    last = min(last_disch if last_disch is not None else pt.t0, pt.end)
    _omr(pt, last, out)
    if pt.dense_rng is not None:
        density.outpatient_labs(pt, pt.t0, last, out, baseline_lab_values)
    dod_s = None if dod is None else pt.sec(dod)
    out.add("patients", (pt.sid, "M" if pt.male else "F", pt.anchor_age, pt.anchor_year,
                         f"{pt.group} - {pt.group + 2}", dod_s))


def _omr(pt: _Patient, last: float, out: ChunkRows) -> None:
    """Outpatient blood pressure, weight, BMI and height on visit dates."""
    rng = pt.rng
    start = max(0.0, pt.t0 - 365.0)
    n = min(30, int(rng.poisson(1.2 * (last - start) / 365.25)) + 1)
    days = np.sort(rng.uniform(start, last + 1e-3, n))
    htn = pt.has[m.C["hypertension"]]
    seen = set()
    for j, d in enumerate(days):
        date = pt.sec(math.floor(d))
        if date in seen:
            continue
        seen.add(date)
        if j == 0:
            out.add("omr", (pt.sid, date, 1, "Height (Inches)", f"{pt.height:.0f}"))
        sbp = 122 + 14 * htn * (d - pt.t0 >= pt.onset[m.C["hypertension"]]) + pt.r.normal(0, 11)
        dbp = 0.55 * sbp + 8 + pt.r.normal(0, 6)
        out.add("omr", (pt.sid, date, 1, "Blood Pressure", f"{sbp:.0f}/{dbp:.0f}"))
        if pt.r.random() < 0.8:
            w = pt.weight - 12 * pt.active(d)[m.C["cancer"]] + pt.r.normal(0, 4)
            out.add("omr", (pt.sid, date, 1, "Weight (Lbs)", f"{w:.1f}"))
            bmi = (w * 0.4536) / (pt.height * 0.0254) ** 2
            out.add("omr", (pt.sid, date, 1, "BMI (kg/m2)", f"{bmi:.1f}"))
