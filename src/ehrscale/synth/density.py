"""MIMIC-IV's event density (``ehrscale synth --density mimic``): the default cohort plus the extra
lab draws, outpatient labs and ICU charting that real patients have.

The default generator writes the events its clinical model needs: about 24 labs per ward day, 27
per ICU day, no outpatient labs and 61 chart rows (seven vitals) per ICU day. Real MIMIC-IV patients
are several times denser, and a benchmark of the data stages at full size must see that volume.

Rates (what ``mimic`` density aims at), and where they come from:

========================  =========  =============================================================
quantity                  target     source
========================  =========  =============================================================
labs per ward day         32.7       demo: 44,902 labs with a hadm_id outside ICU stays / 1,375 ward days
labs per ICU day          66.8       demo: 34,405 labs inside ICU stays / 515.1 ICU days
outpatient labs/patient   284.2      demo: 28,420 labs without a hadm_id / 100 patients
chart rows per ICU day    1,165      MIMIC-IV v2.2: 313,645,063 chartevents / (73,181 ICU stays x the
                                     demo's mean ICU stay, 3.68 days); the demo has no chartevents
========================  =========  =============================================================

(demo = the vendored MIMIC-IV Clinical Database Demo v2.2, ``tests/data/mimic-iv-demo``.)

The extras come from each patient's own second generator, ``default_rng([seed, i, 1])``, after the
patient's default rows are drawn: a ``mimic`` cohort is the default cohort of the same seed with rows
added to ``labevents``, ``chartevents`` and ``d_items`` and nothing else changed (same patients,
admissions, outcomes, labels). Extra lab draws are a Poisson process over the stay (a basic or a
full chemistry/haematology panel, values from the same lab model as the default draws); outpatient
draws fall between a year before the first admission and the last discharge (the chronic baseline,
no acute effect, ``hadm_id`` empty). ICU charting uses real MIMIC-IV chartevents items (alarm
limits, ventilator and haemodynamic readings, nursing assessments), each charted every 1, 2 or 4
hours, moved by the same acuity curve as the vitals.

Ids: extra labevent_id = 10**13 + 10**5 g + j and specimen_id = 10**12 + 10**4 g + draw for an
admission slot g; outpatient labevent_id = 2 * 10**13 + 10**5 i + j, specimen_id = 2 * 10**12 +
10**4 i + draw for patient i: disjoint from the default ids.
"""

from __future__ import annotations

import numpy as np

from ehrscale.synth import model as m

DENSITIES = ("default", "mimic")

WARD_LABS_PER_DAY = 32.7
ICU_LABS_PER_DAY = 66.8
OUTPATIENT_LABS_PER_PATIENT = 284.2
CHART_ROWS_PER_ICU_DAY = 1165.0
# What the default generator already writes (10k patients, seed 0): the extras make up the rest.
DEFAULT_WARD_LABS_PER_DAY = 23.4
DEFAULT_ICU_LABS_PER_DAY = 27.1

_BASIC = np.isin(m.LAB_IDS, [50983, 50971, 50902, 50882, 50868, 51006, 50912, 50931])
_DRAW_MASKS = (_BASIC, m.CORE_MASK)  # an extra draw is either, with equal probability
_LABS_PER_DRAW = (_BASIC.sum() + m.CORE_MASK.sum()) / 2
WARD_DRAWS_PER_DAY = (WARD_LABS_PER_DAY - DEFAULT_WARD_LABS_PER_DAY) / _LABS_PER_DRAW
ICU_DRAWS_PER_DAY = (ICU_LABS_PER_DAY - DEFAULT_ICU_LABS_PER_DAY) / _LABS_PER_DRAW
OUTPATIENT_DRAWS = OUTPATIENT_LABS_PER_PATIENT / _LABS_PER_DRAW

EXTRA_LAB_BASE, EXTRA_SPECIMEN_BASE = 10**13, 10**12
OUT_LAB_BASE, OUT_SPECIMEN_BASE = 2 * 10**13, 2 * 10**12

# Numeric chart items: itemid -> (label, abbreviation, category, unit, every_h, mean, sd between
# stays, sd within a stay, per unit of acuity, decimals, low, high). Real MIMIC-IV d_items rows.
NUMERIC = {
    220046: ("Heart rate Alarm - High", "HR Alarm - High", "Alarms", "bpm", 1, 120, 8, 0, 0, 0, 90, 160),
    220047: ("Heart Rate Alarm - Low", "HR Alarm - Low", "Alarms", "bpm", 1, 50, 5, 0, 0, 0, 30, 70),
    223769: ("O2 Saturation Pulseoxymetry Alarm - High", "SpO2 Alarm - High", "Alarms", "%", 1, 100, 0.5, 0, 0, 0,
             95, 100),
    223770: ("O2 Saturation Pulseoxymetry Alarm - Low", "SpO2 Alarm - Low", "Alarms", "%", 1, 88, 2, 0, 0, 0, 80, 95),
    223751: ("Non-Invasive Blood Pressure Alarm - High", "NBP Alarm - High", "Alarms", "mmHg", 1, 160, 10, 0, 0, 0,
             120, 200),
    223752: ("Non-Invasive Blood Pressure Alarm - Low", "NBP Alarm - Low", "Alarms", "mmHg", 1, 90, 8, 0, 0, 0, 60,
             110),
    224161: ("Resp Alarm - High", "Resp Alarm - High", "Alarms", "insp/min", 1, 35, 3, 0, 0, 0, 20, 50),
    224162: ("Resp Alarm - Low", "Resp Alarm - Low", "Alarms", "insp/min", 1, 8, 1.5, 0, 0, 0, 4, 12),
    226253: ("SpO2 Desat Limit", "SpO2 Desat Limit", "Alarms", "%", 1, 88, 2, 0, 0, 0, 80, 95),
    224690: ("Respiratory Rate (Total)", "Respiratory Rate (Total)", "Respiratory", "insp/min", 1, 18, 3, 3, 2.5, 0,
             5, 50),
    223835: ("Inspired O2 Fraction", "FiO2", "Respiratory", "None", 1, 40, 5, 3, 10, 0, 21, 100),
    220339: ("PEEP set", "PEEP set", "Respiratory", "cmH2O", 1, 5, 1, 0.5, 1.5, 0, 0, 24),
    224685: ("Tidal Volume (observed)", "Tidal Volume (observed)", "Respiratory", "mL", 1, 450, 60, 40, 0, 0, 150,
             1000),
    224687: ("Minute Volume", "Minute Volume", "Respiratory", "L/min", 1, 8.5, 1.5, 1, 1.2, 1, 2, 25),
    224688: ("Respiratory Rate (Set)", "Respiratory Rate (Set)", "Respiratory", "insp/min", 1, 14, 2, 0.5, 1.5, 0, 6,
             35),
    224695: ("Peak Insp. Pressure", "Peak Insp. Pressure", "Respiratory", "cmH2O", 1, 20, 4, 2, 2.5, 0, 5, 50),
    224697: ("Mean Airway Pressure", "Mean Airway Pressure", "Respiratory", "cmH2O", 1, 9, 2, 1, 1.5, 0, 3, 30),
    223834: ("O2 Flow", "O2 Flow", "Respiratory", "L/min", 1, 3, 1, 0.8, 1.5, 0, 0, 15),
    224696: ("Plateau Pressure", "Plateau Pressure", "Respiratory", "cmH2O", 1, 17, 3, 1.5, 2, 0, 5, 40),
    224684: ("Tidal Volume (set)", "Tidal Volume (set)", "Respiratory", "mL", 1, 450, 50, 0, 0, 0, 250, 800),
    224689: ("Respiratory Rate (spontaneous)", "Respiratory Rate (spontaneous)", "Respiratory", "insp/min", 1, 6, 3, 3,
             1.5, 0, 0, 40),
    220074: ("Central Venous Pressure", "CVP", "Hemodynamics", "mmHg", 1, 9, 3, 2, 1.5, 0, 0, 30),
    220050: ("Arterial Blood Pressure systolic", "ABPs", "Routine Vital Signs", "mmHg", 1, 122, 12, 9, -9, 0, 50, 230),
    220051: ("Arterial Blood Pressure diastolic", "ABPd", "Routine Vital Signs", "mmHg", 1, 62, 8, 6, -5, 0, 25, 130),
    220052: ("Arterial Blood Pressure mean", "ABPm", "Routine Vital Signs", "mmHg", 1, 80, 9, 6, -6, 0, 35, 160),
    228640: ("EtCO2", "EtCO2", "Routine Vital Signs", "None", 1, 36, 4, 2, 1.5, 0, 10, 80),
    224417: ("Cuff Pressure", "Cuff Pressure", "Respiratory", "cmH2O", 2, 25, 3, 1.5, 0, 0, 10, 40),
}

_ACUITY_LEVELS = {  # levels ordered from the well patient's to the sickest's
    "gcs_eye": ("Spontaneously", "To Speech", "To Pain", "No Response"),
    "gcs_verbal": ("Oriented", "Confused", "Inappropriate Words", "Incomprehensible sounds", "No Response-ETT"),
    "gcs_motor": ("Obeys Commands", "Localizes Pain", "Flex-withdraws", "Abnormal Flexion", "No response"),
    "rass": ("0 Alert and calm", "-1 Drowsy", "-2 Light sedation", "-3 Moderate sedation", "-4 Deep sedation"),
    "yes_no": ("No", "Yes"),
    "pain": ("None", "Mild", "Mild to Moderate", "Moderate", "Severe"),
    "riker": ("4 Calm/Cooperative", "3 Sedated", "2 Very Sedated", "1 Unarousable"),
    "orientation": ("Oriented x 3", "Oriented x 2", "Oriented x 1", "Disoriented"),
    "loc": ("Alert", "Lethargic", "Obtunded", "Unresponsive"),
    "pupil_size": ("3 mm", "2 mm", "4 mm", "5 mm"),
    "pupil_resp": ("Brisk", "Sluggish", "Non-reactive"),
    "commands": ("Consistently", "Inconsistently", "None"),
    "temp_site": ("Oral", "Axillary", "Rectal", "Blood"),
    "airway": ("Native", "Endotracheal tube", "Tracheostomy tube"),
    "rhythm": ("SR (Sinus Rhythm)", "ST (Sinus Tachycardia)", "AF (Atrial Fibrillation)"),
    "ectopy": ("None", "PVC's", "PAC's"),
    "vent_mode": ("Standby", "CPAP/PSV", "CMV/ASSIST/AutoFlow"),
    "vent_type": ("Drager", "Hamilton", "PB 840"),
    "bowel": ("Active", "Hypoactive", "Absent"),
    "abdomen": ("Soft", "Distended", "Firm"),
    "urine_color": ("Yellow", "Amber", "Pink", "Red"),
    "urine_look": ("Clear", "Cloudy", "Sediment"),
    "heart_sounds": ("S1/S2", "Murmur", "S3"),
    "skin_color": ("Pink", "Pale", "Mottled", "Cyanotic"),
    "skin_temp": ("Warm", "Cool", "Cold"),
    "speech": ("Normal", "Slurred", "Aphasic", "Unable to assess"),
    "reflex": ("Yes", "Weak", "No"),
    "diet": ("Regular", "Cardiac", "NPO"),
    "falls": ("Low risk", "Moderate risk", "High risk"),
    "urine_source": ("Voiding", "Foley"),
    "stool": ("Formed", "Soft", "Liquid"),
    "sputum_color": ("White", "Yellow", "Green", "Blood Tinged"),
    "sputum_consistency": ("Thin", "Thick", "Tenacious"),
    "sputum_amount": ("None", "Scant", "Moderate", "Copious"),
    "oral": ("Pink/Moist", "Dry", "Lesions"),
    "nares": ("Clear", "Bloody"),
    "communication": ("Verbal", "Gestures", "Unable"),
    "stool_color": ("Brown", "Green", "Black"),
}

# Text chart items: itemid -> (label, category, every_h, levels).
TEXT = {
    220048: ("Heart Rhythm", "Routine Vital Signs", 1, "rhythm"),
    224650: ("Ectopy Type 1", "Routine Vital Signs", 1, "ectopy"),
    223849: ("Ventilator Mode", "Respiratory", 1, "vent_mode"),
    223848: ("Ventilator Type", "Respiratory", 1, "vent_type"),
    220739: ("GCS - Eye Opening", "Neurological", 2, "gcs_eye"),
    223900: ("GCS - Verbal Response", "Neurological", 2, "gcs_verbal"),
    223901: ("GCS - Motor Response", "Neurological", 2, "gcs_motor"),
    228096: ("Richmond-RAS Scale", "Pain/Sedation", 2, "rass"),
    223781: ("Pain Present", "Pain/Sedation", 2, "yes_no"),
    223791: ("Pain Level", "Pain/Sedation", 2, "pain"),
    223753: ("Riker-SAS Scale", "Pain/Sedation", 2, "riker"),
    223898: ("Orientation", "Neurological", 2, "orientation"),
    226104: ("Level of Consciousness", "Neurological", 2, "loc"),
    223907: ("Pupil Size Right", "Neurological", 2, "pupil_size"),
    224733: ("Pupil Size Left", "Neurological", 2, "pupil_size"),
    227121: ("Pupil Response Right", "Neurological", 2, "pupil_resp"),
    227288: ("Pupil Response Left", "Neurological", 2, "pupil_resp"),
    223910: ("Follows Commands", "Neurological", 2, "commands"),
    224642: ("Temperature Site", "Routine Vital Signs", 2, "temp_site"),
    223836: ("Airway Type", "Respiratory", 2, "airway"),
    224004: ("Bowel Sounds", "GI/GU", 4, "bowel"),
    224003: ("Abdominal Assessment", "GI/GU", 4, "abdomen"),
    224016: ("Urine Color", "GI/GU", 4, "urine_color"),
    224876: ("Urine Appearance", "GI/GU", 4, "urine_look"),
    224389: ("Heart Sounds", "Cardiovascular", 4, "heart_sounds"),
    223976: ("RUE Color", "Cardiovascular", 4, "skin_color"),
    223979: ("RLE Color", "Cardiovascular", 4, "skin_color"),
    223982: ("LUE Color", "Cardiovascular", 4, "skin_color"),
    223983: ("LLE Color", "Cardiovascular", 4, "skin_color"),
    224767: ("RUE Temp", "Cardiovascular", 4, "skin_temp"),
    224769: ("LUE Temp", "Cardiovascular", 4, "skin_temp"),
    224771: ("RLE Temp", "Cardiovascular", 4, "skin_temp"),
    224773: ("LLE Temp", "Cardiovascular", 4, "skin_temp"),
    223902: ("Speech", "Neurological", 4, "speech"),
    223904: ("Gag Reflex", "Neurological", 4, "reflex"),
    223905: ("Cough Reflex", "Neurological", 4, "reflex"),
    224001: ("Diet Type", "GI/GU", 4, "diet"),
    223754: ("Risk for Falls", "Neurological", 4, "falls"),
    224015: ("Urine Source", "GI/GU", 4, "urine_source"),
    224011: ("Stool Consistency", "GI/GU", 4, "stool"),
    224370: ("Sputum Color", "Respiratory", 4, "sputum_color"),
    224369: ("Sputum Consistency", "Respiratory", 4, "sputum_consistency"),
    224373: ("Sputum Amount", "Respiratory", 4, "sputum_amount"),
    223999: ("Oral Cavity", "GI/GU", 4, "oral"),
    224000: ("Nares R", "GI/GU", 4, "nares"),
    224879: ("Nares L", "GI/GU", 4, "nares"),
    223903: ("Communication", "Neurological", 4, "communication"),
    224005: ("Flatus", "GI/GU", 4, "yes_no"),
    224794: ("Stool Color", "GI/GU", 4, "stool_color"),
}

CHART_IDS = np.array(sorted(NUMERIC) + sorted(TEXT), dtype=np.int64)
_N_NUM = len(NUMERIC)
_SPEC = np.array([NUMERIC[i][5:12] for i in sorted(NUMERIC)], dtype=float)  # mean, sd_b, sd_w, acuity, dec, lo, hi
_EVERY = np.array([NUMERIC[i][4] for i in sorted(NUMERIC)] + [TEXT[i][2] for i in sorted(TEXT)], dtype=np.int64)
_N_LEVELS = np.array([len(_ACUITY_LEVELS[TEXT[i][3]]) for i in sorted(TEXT)], dtype=np.int64)
CHART_DECIMALS = _SPEC[:, 4].astype(np.int64)
CHART_UNITS = [NUMERIC[i][3] for i in sorted(NUMERIC)]
# Text values: one flat vocabulary; item k's level j is LEVEL_TEXT[_LEVEL_START[k] + j].
LEVEL_TEXT = [v for i in sorted(TEXT) for v in _ACUITY_LEVELS[TEXT[i][3]]]
_LEVEL_START = np.concatenate([[0], np.cumsum(_N_LEVELS)[:-1]])

D_ITEMS = [(str(i), *NUMERIC[i][:2], "chartevents", NUMERIC[i][2], NUMERIC[i][3], "Numeric", "", "")
           for i in sorted(NUMERIC)] + [(str(i), TEXT[i][0], TEXT[i][0], "chartevents", TEXT[i][1], "", "Text", "", "")
                                        for i in sorted(TEXT)]


def extra_labs(pt, a, out, lab_values) -> None:
    """Poisson lab draws over the stay, ward and ICU days at their own rates (admission slot ids)."""
    r, los = pt.dense_rng, a.los
    icu_in, icu_out = (a.icu_in, a.icu_out) if a.icu_in is not None else (0.0, 0.0)
    ward_days = los - (icu_out - icu_in)
    n_ward = r.poisson(WARD_DRAWS_PER_DAY * ward_days)
    n_icu = r.poisson(ICU_DRAWS_PER_DAY * (icu_out - icu_in))
    # ward draws: a uniform time on the stay with the ICU interval cut out
    u = r.uniform(0, ward_days, n_ward)
    T = np.sort(np.concatenate([np.where(u < icu_in, u, u + (icu_out - icu_in)), r.uniform(icu_in, icu_out, n_icu)]))
    T = T[T <= los - 2 / 1440]
    if len(T) == 0:
        return
    masks = np.array(_DRAW_MASKS)[r.integers(0, 2, len(T))]
    _add_labs(pt, out, a.adm_s, T, lab_values(pt, a, T, rng=r), masks, a.hadm,
              EXTRA_LAB_BASE + 10**5 * a.g, EXTRA_SPECIMEN_BASE + 10**4 * a.g, int(a.icu_in is not None))


def outpatient_labs(pt, first: float, last: float, out, values) -> None:
    """Outpatient draws (no hadm_id) from a year before ``first`` to ``last`` (days): chronic baseline only."""
    r = pt.dense_rng
    n = r.poisson(OUTPATIENT_DRAWS)
    if n == 0:
        return
    days = np.sort(r.uniform(max(0.0, first - 365.0), last, n))
    masks = np.array(_DRAW_MASKS)[r.integers(0, 2, n)]
    _add_labs(pt, out, pt.epoch, days, values(pt, days, r), masks, -1, OUT_LAB_BASE + 10**5 * pt.i,
              OUT_SPECIMEN_BASE + 10**4 * pt.i, 0)


def _add_labs(pt, out, t0_s: int, T: np.ndarray, V: np.ndarray, masks: np.ndarray, hadm: int, lab_base: int,
              specimen_base: int, stat: int) -> None:
    ri, ci = np.nonzero(masks)
    nrow = len(ri)
    chart = t0_s + np.round(T * 1440.0).astype(np.int64) * 60
    store = chart + pt.dense_rng.integers(20, 150, len(T)) * 60
    out.add_cols("labevents_dense", labevent_id=lab_base + np.arange(nrow, dtype=np.int64),
                 subject_id=np.full(nrow, pt.sid, np.int64), hadm_id=np.full(nrow, hadm, np.int64),
                 specimen_id=specimen_base + ri.astype(np.int64), itemid=m.LAB_IDS[ci], charttime=chart[ri],
                 storetime=store[ri], valuenum=V[ri, ci], priority=np.full(nrow, stat, np.int8))


def icu_charting(pt, a, stay_id: int, out, acuity) -> None:
    """Every item of ``CHART_IDS`` at its own interval over the ICU stay, moved by the acuity curve."""
    r = pt.dense_rng
    hours = np.arange(0.5, (a.icu_out - a.icu_in) * 24 - 1 / 60)  # on the half hour, inside the stay
    if len(hours) == 0:
        return
    T = a.icu_in + hours / 24
    A = acuity(T, a)
    n, k = len(T), len(CHART_IDS)
    phase = r.integers(0, _EVERY)
    mask = (np.arange(n)[:, None] - phase[None, :]) % _EVERY[None, :] == 0
    level = _SPEC[:, 0] + _SPEC[:, 1] * r.standard_normal(_N_NUM)
    num = level + np.outer(A, _SPEC[:, 3]) + _SPEC[:, 2] * r.standard_normal((n, _N_NUM))
    num = np.clip(num, _SPEC[:, 5], _SPEC[:, 6])
    latent = r.normal(0, 0.5, k - _N_NUM) + 0.6 * A[:, None] + 0.4 * r.standard_normal((n, k - _N_NUM))
    idx = np.clip(np.floor(latent + 0.5), 0, _N_LEVELS - 1).astype(np.int64)
    ri, ci = np.nonzero(mask)
    nrow = len(ri)
    chart = a.adm_s + np.round(T * 1440.0).astype(np.int64) * 60
    store = chart + r.integers(1, 40, n) * 60
    is_num = ci < _N_NUM
    valuenum = np.where(is_num, num[ri, np.minimum(ci, _N_NUM - 1)], np.nan)
    text = np.where(is_num, -1, _LEVEL_START[np.maximum(ci - _N_NUM, 0)] + idx[ri, np.maximum(ci - _N_NUM, 0)])
    out.add_cols("chartevents_dense", subject_id=np.full(nrow, pt.sid, np.int64),
                 hadm_id=np.full(nrow, a.hadm, np.int64), stay_id=np.full(nrow, stay_id, np.int64),
                 caregiver_id=r.integers(10000, 100000, n)[ri], charttime=chart[ri], storetime=store[ri],
                 item=ci, valuenum=valuenum, text=text)
