"""Clinical knowledge of the generative model: conditions, acute problems, labs, vitals.

Every code here is real (ICD-10-CM/ICD-9-CM, ICD-10-PCS/ICD-9 procedures, MIMIC itemids,
MIMIC drug names); ``tables.py`` holds their titles and dictionary rows. Lab effects are in
"z units": value = centre + scale * (chronic shifts + acute effect * A(t) + noise), on a log
scale for the labs marked ``log``.
"""

from __future__ import annotations

import math

import numpy as np

# Chronic conditions, in the order their liabilities are drawn (later ones depend on earlier).
CONDITIONS = ("hypertension", "diabetes", "cad", "ckd", "heart_failure", "afib", "copd", "cancer", "liver")
C = {name: i for i, name in enumerate(CONDITIONS)}
# Weight of each condition in the disease burden score.
BURDEN_WEIGHT = np.array([0.4, 0.8, 0.8, 1.2, 1.4, 0.7, 1.0, 1.4, 1.4])


def burden_z(active: np.ndarray, alcohol: bool) -> float:
    """Standardised chronic burden: weighted count of the active conditions, plus alcohol use."""
    return (float(BURDEN_WEIGHT[active].sum()) + 0.5 * alcohol - 1.6) / 1.3


def age_z(age: float) -> float:
    return (age - 62) / 17


def sigmoid(x: float) -> float:
    """Logistic link of the outcome models (ICU, death, readmission)."""
    return 1.0 / (1.0 + math.exp(-x))

# condition -> ((icd10, icd9) diagnosis codes recorded when present, maintenance drugs)
CHRONIC = {
    "hypertension": ([("I10", "4019")], ["Amlodipine", "Lisinopril"]),
    "diabetes": ([("E119", "25000"), ("E1122", "25040")], ["Insulin", "MetFORMIN (Glucophage)", "GlipiZIDE"]),
    "cad": ([("I2510", "41401"), ("E785", "2724")], ["Aspirin", "Atorvastatin", "Metoprolol Succinate XL"]),
    "ckd": ([("N184", "5854"), ("D649", "2859")], ["sevelamer CARBONATE", "Calcitriol", "Epoetin Alfa"]),
    "heart_failure": ([("I5022", "42822"), ("I509", "4280")], ["Furosemide", "Carvedilol", "Spironolactone"]),
    "afib": ([("I4891", "42731"), ("Z7901", "V5861")], ["Apixaban", "Warfarin", "Diltiazem"]),
    "copd": ([("J449", "496")], ["Tiotropium Bromide", "Albuterol Inhaler", "Fluticasone-Salmeterol Diskus (100/50)"]),
    "cancer": ([("C3490", "1629"), ("C189", "1539")], ["Ondansetron", "Tamoxifen Citrate"]),
    "liver": ([("K7460", "5715"), ("R188", "78959")], ["Lactulose", "Rifaximin", "Spironolactone"]),
}
# Latent traits that surface as codes/drugs (alcohol, smoking, family history of cancer).
TRAIT_CODES = {
    "alcohol": ([("F1020", "30390")], ["Thiamine", "FoLIC Acid"]),
    "smoker": ([("Z87891", "V1582")], ["Nicotine Patch"]),
    "famca": ([("Z803", "V163")], []),
}
NOISE_DX = [("F329", "311"), ("K219", "53081"), ("E039", "2449"), ("E669", "27800"), ("G4733", "32723")]
NOISE_DRUG = {"E039": "Levothyroxine Sodium", "K219": "Pantoprazole"}

# Drugs most inpatients get, with the probability of each.
ROUTINE_DRUGS = [("Sodium Chloride 0.9%  Flush", 0.9), ("Heparin", 0.6), ("Acetaminophen", 0.7),
                 ("Docusate Sodium", 0.45), ("Senna", 0.4), ("Potassium Chloride", 0.35), ("Magnesium Sulfate", 0.3),
                 ("Ondansetron", 0.3), ("Pantoprazole", 0.25)]
ICU_DRUGS = [("Propofol", 0.5), ("Fentanyl Citrate", 0.5), ("Chlorhexidine Gluconate 0.12% Oral Rinse", 0.5),
             ("HYDROmorphone (Dilaudid)", 0.3)]
# Ventilation (ICD-10-PCS, ICD-9) by duration, and central line / intubation.
VENT_LONG, VENT_SHORT, INTUBATION, CENTRAL_LINE = ("5A1955Z", "9672"), ("5A1945Z", "9671"), ("0BH17EZ", "9604"), ("02HV33Z", "3893")

ICU_UNITS = {"micu": "Medical Intensive Care Unit (MICU)", "ccu": "Coronary Care Unit (CCU)",
             "cvicu": "Cardiac Vascular Intensive Care Unit (CVICU)", "sicu": "Surgical Intensive Care Unit (SICU)",
             "tsicu": "Trauma SICU (TSICU)", "neuro": "Neuro Surgical Intensive Care Unit (Neuro SICU)"}


def _p(**kw):
    base = dict(weight=0.0, cond={}, sev=0.0, icu=0.0, los=np.log(3.5), mort=0.0, ed=0.9, elective=False,
                service="MED", ward="Medicine", icu_unit="micu", dx=[], px=[], drugs=[], labs={}, panels=(),
                hcfa=("000", ""), apr=("000", ""), infection=False)
    base.update(kw)
    return base


# Acute problem of an admission. weight: base rate; cond: extra weight per chronic condition/trait.
# dx: (icd10, icd9, rule) with rule "1" always, "sev" if severe (s > 0.8), a float = probability.
# px: (icd10, icd9, rule). drugs: (name, probability, start delay hours). labs: itemid -> z per unit acuity.
PROBLEMS = {
    "sepsis": _p(weight=0.9, cond={"ckd": 0.6, "diabetes": 0.4, "cancer": 1.0, "liver": 0.6, "copd": 0.2},
                 sev=0.7, icu=0.6, los=np.log(5.5), mort=0.5, infection=True,
                 dx=[("A419", "0389", 1), ("R6520", "99592", 0.5), ("R6521", "78552", "sev"), ("N390", "5990", 0.4),
                     ("N179", "5849", 0.35), ("E871", "2761", 0.3)],
                 px=[("02HV33Z", "3893", "sev")],
                 drugs=[("Vancomycin", 0.85, 1), ("Piperacillin-Tazobactam", 0.75, 1), ("Meropenem", 0.15, 20),
                        ("0.9% Sodium Chloride", 0.7, 0), ("Lactated Ringers", 0.4, 0)],
                 labs={51301: 2.2, 50813: 1.8, 50912: 1.0, 51265: -0.9, 50882: -1.0, 51006: 0.8},
                 panels=("lft", "lactate", "coag"),
                 hcfa=[("872", "SEPTICEMIA OR SEVERE SEPSIS W/O MV >96 HOURS W/O MCC"),
                       ("871", "SEPTICEMIA OR SEVERE SEPSIS W/O MV >96 HOURS W MCC"),
                       ("870", "SEPTICEMIA OR SEVERE SEPSIS W MV 96+ HOURS")],
                 apr=("720", "SEPTICEMIA & DISSEMINATED INFECTIONS")),
    "mi": _p(weight=0.45, cond={"cad": 1.0, "diabetes": 0.3, "hypertension": 0.2}, sev=0.4, icu=0.8, los=np.log(3.5),
             mort=0.2, service="CMED", ward="Medicine/Cardiology", icu_unit="ccu",
             dx=[("I214", "41071", 1), ("I2510", "41401", 0.8), ("E785", "2724", 0.5)],
             px=[("02703DZ", "0066", 0.6), ("4A023N7", "3722", 0.8)],
             drugs=[("Aspirin", 0.95, 0), ("Clopidogrel", 0.7, 2), ("Heparin Sodium", 0.8, 1), ("Atorvastatin", 0.8, 4),
                    ("Metoprolol Tartrate", 0.8, 2), ("Nitroglycerin", 0.4, 0)],
             labs={51003: 4.0, 50931: 0.5, 51301: 0.6}, panels=("trop", "coag"),
             hcfa=[("251", "PERC CARDIOVASC PROC W/O CORONARY ARTERY STENT W/O MCC"),
                   ("250", "PERC CARDIOVASC PROC W/O CORONARY ARTERY STENT W MCC")],
             apr=("174", "PERCUTANEOUS CORONARY INTERVENTION W AMI")),
    "hf_exac": _p(weight=0.0, cond={"heart_failure": 2.6}, sev=0.2, icu=0.0, los=np.log(4.5), mort=0.1,
                  service="CMED", ward="Medicine/Cardiology", icu_unit="ccu",
                  dx=[("I5023", "42823", 1), ("N179", "5849", 0.25)],
                  drugs=[("Furosemide", 0.95, 1), ("Metoprolol Succinate XL", 0.6, 6), ("Potassium Chloride", 0.5, 8)],
                  labs={50963: 1.8, 50983: -0.8, 50912: 0.6, 51003: 0.8}, panels=("bnp", "trop"),
                  hcfa=[("292", "HEART FAILURE & SHOCK W CC"), ("291", "HEART FAILURE & SHOCK W MCC")],
                  apr=("194", "HEART FAILURE")),
    "stroke": _p(weight=0.4, cond={"afib": 0.8, "hypertension": 0.25, "diabetes": 0.15}, sev=0.5, icu=0.4,
                 los=np.log(4.5), mort=0.5, service="NMED", ward="Neurology", icu_unit="neuro",
                 dx=[("I639", "43491", 0.8), ("I619", "431", 0.2), ("R4701", "78451", 0.5)],
                 px=[("03CG3ZZ", "3974", 0.2), ("0DH63UZ", "4311", "sev")],
                 drugs=[("Aspirin", 0.7, 2), ("Atorvastatin", 0.7, 6), ("Labetalol", 0.4, 1), ("LeVETiracetam", 0.25, 3)],
                 labs={50931: 0.8, 51301: 0.4}, panels=("coag",),
                 hcfa=[("065", "INTRACRANIAL HEMORRHAGE OR CEREBRAL INFARCTION W CC"),
                       ("064", "INTRACRANIAL HEMORRHAGE OR CEREBRAL INFARCTION W MCC")],
                 apr=("045", "CVA & PRECEREBRAL OCCLUSION W INFARCT")),
    "pneumonia": _p(weight=0.8, cond={"copd": 0.6, "cancer": 0.4, "heart_failure": 0.2}, sev=0.2, icu=0.1,
                    los=np.log(4.0), mort=0.1, infection=True,
                    dx=[("J189", "486", 0.8), ("J690", "5070", 0.2), ("J9601", "51881", "sev")],
                    px=[],
                    drugs=[("CeftriaXONE", 0.8, 1), ("Azithromycin", 0.7, 1), ("Levofloxacin", 0.2, 2),
                           ("Albuterol 0.083% Neb Soln", 0.5, 2)],
                    labs={51301: 1.8, 50813: 0.5, 50821: -1.0}, panels=("lactate", "gas"),
                    hcfa=[("194", "SIMPLE PNEUMONIA & PLEURISY W CC"), ("193", "SIMPLE PNEUMONIA & PLEURISY W MCC")],
                    apr=("139", "OTHER PNEUMONIA")),
    "copd_exac": _p(weight=0.0, cond={"copd": 2.2}, sev=0.0, icu=0.2, los=np.log(3.5), mort=-0.2,
                    dx=[("J441", "49121", 1), ("J9601", "51881", "sev")],
                    drugs=[("PredniSONE", 0.7, 2), ("Methylprednisolone", 0.3, 1), ("Ipratropium-Albuterol Neb", 0.9, 0),
                           ("Azithromycin", 0.5, 3)],
                    labs={50818: 2.0, 50820: -1.5, 50882: 0.8, 51301: 0.6}, panels=("gas",),
                    hcfa=[("190", "CHRONIC OBSTRUCTIVE PULMONARY DISEASE W MCC")] * 2,
                    apr=("140", "CHRONIC OBSTRUCTIVE PULMONARY DISEASE")),
    "gi_bleed": _p(weight=0.35, cond={"liver": 1.5, "alcohol": 0.6, "afib": 0.3}, sev=0.3, icu=0.3, los=np.log(3.8),
                   mort=0.1, dx=[("K922", "5789", 0.7), ("K921", "5781", 0.3), ("D62", "2851", 0.7)],
                   px=[("0DJ08ZZ", "4513", 0.8), ("30233N1", "9904", 0.6)],
                   drugs=[("Pantoprazole", 0.95, 0), ("Octreotide Acetate", 0.3, 1)],
                   labs={51222: -2.5, 51006: 1.8, 51265: -0.4, 51237: 0.6}, panels=("coag", "lft"),
                   hcfa=[("378", "G.I. HEMORRHAGE W CC"), ("377", "G.I. HEMORRHAGE W MCC")],
                   apr=("253", "OTHER & UNSPECIFIED GASTROINTESTINAL HEMORRHAGE")),
    "hip_fracture": _p(weight=0.3, cond={"alcohol": 0.3}, sev=-0.2, icu=-0.3, los=np.log(5.0), mort=0.0,
                       service="ORTHO", ward="Med/Surg/Trauma", icu_unit="tsicu",
                       dx=[("S72001A", "82000", 1), ("W19XXXA", "E8889", 0.8)],
                       px=[("0QS604Z", "7935", 0.9)],
                       drugs=[("OxyCODONE (Immediate Release)", 0.8, 2), ("Enoxaparin Sodium", 0.7, 12),
                              ("CefazoLIN", 0.8, 10)],
                       labs={51222: -1.0, 51301: 0.5}, panels=("coag",),
                       hcfa=[("481", "HIP & FEMUR PROCEDURES EXCEPT MAJOR JOINT W CC"),
                             ("480", "HIP & FEMUR PROCEDURES EXCEPT MAJOR JOINT W MCC")],
                       apr=("308", "HIP & FEMUR FRACTURE REPAIR")),
    "elective": _p(weight=1.1, cond={}, sev=-1.0, icu=0.0, los=np.log(2.6), mort=-0.8, ed=0.0, elective=True,
                   service="SURG", ward="Med/Surg", icu_unit="sicu",
                   dx=[("M170", "71516", 0.5), ("K8020", "57420", 0.5)],
                   px=[],  # chosen per surgery below
                   drugs=[("CefazoLIN", 0.9, 0), ("OxyCODONE (Immediate Release)", 0.8, 3), ("Enoxaparin Sodium", 0.5, 14)],
                   labs={51222: -0.8, 51301: 0.6}, panels=(),
                   hcfa=[("470", "MAJOR JOINT REPLACEMENT OR REATTACHMENT OF LOWER EXTREMITY W/O MCC")] * 2,
                   apr=("302", "KNEE JOINT REPLACEMENT")),
    "dka": _p(weight=0.0, cond={"diabetes": 0.35}, sev=0.2, icu=0.6, los=np.log(2.8), mort=-0.6,
              dx=[("E1110", "25012", 1), ("E871", "2761", 0.4)],
              drugs=[("Insulin Human Regular", 0.95, 0), ("Potassium Chloride", 0.8, 2), ("0.9% Sodium Chloride", 0.9, 0)],
              labs={50931: 5.0, 50882: -4.0, 50971: 1.2, 50983: -1.0, 50912: 0.6}, panels=("gas",),
              hcfa=[("638", "DIABETES W CC"), ("637", "DIABETES W MCC")], apr=("420", "DIABETES")),
    "chest_pain": _p(weight=0.8, cond={"cad": 0.4}, sev=-1.4, icu=-0.8, los=np.log(1.4), mort=-1.0,
                     service="CMED", ward="Medicine/Cardiology",
                     dx=[("R079", "78650", 1)], drugs=[("Aspirin", 0.8, 0), ("Nitroglycerin SL", 0.4, 0)],
                     labs={51003: 0.2}, panels=("trop",),
                     hcfa=[("313", "CHEST PAIN")] * 2, apr=("203", "CHEST PAIN")),
    "aki": _p(weight=0.15, cond={"ckd": 1.0, "heart_failure": 0.2}, sev=0.1, icu=-0.1, los=np.log(4.0), mort=0.0,
              dx=[("N179", "5849", 1), ("E875", "2767", 0.5)], px=[("5A1D70Z", "3995", "sev")],
              drugs=[("Sodium Bicarbonate", 0.5, 2), ("Insulin (Regular) for Hyperkalemia", 0.3, 1),
                     ("0.9% Sodium Chloride", 0.6, 0)],
              labs={50912: 2.8, 51006: 1.8, 50971: 1.2, 50882: -1.3, 50970: 1.0}, panels=(),
              hcfa=[("683", "RENAL FAILURE W CC"), ("682", "RENAL FAILURE W MCC")], apr=("460", "RENAL FAILURE")),
    "liver_decomp": _p(weight=0.0, cond={"liver": 1.4}, sev=0.4, icu=0.1, los=np.log(5.0), mort=0.4,
                       dx=[("K7031", "5712", 0.7), ("I8511", "4560", 0.2), ("R188", "78959", 0.6)],
                       px=[("0W9G3ZZ", "5491", 0.6)],
                       drugs=[("Lactulose", 0.9, 1), ("Rifaximin", 0.6, 4), ("Albumin 25% (12.5g / 50mL)", 0.5, 4)],
                       labs={50885: 1.5, 51237: 1.0, 50983: -1.0, 50912: 0.8, 50862: -0.8}, panels=("lft", "coag"),
                       hcfa=[("433", "CIRRHOSIS & ALCOHOLIC HEPATITIS W CC"), ("432", "CIRRHOSIS & ALCOHOLIC HEPATITIS W MCC")],
                       apr=("280", "ALCOHOLIC LIVER DISEASE")),
}
PROBLEM_NAMES = tuple(PROBLEMS)
# Problem rates as arrays: base weight per problem, and the extra weight per active condition
# (rows CONDITIONS + alcohol, columns PROBLEM_NAMES).
PROBLEM_WEIGHT = np.array([PROBLEMS[p]["weight"] for p in PROBLEM_NAMES])
PROBLEM_COND_WEIGHT = np.array([[PROBLEMS[p]["cond"].get(c, 0.0) for p in PROBLEM_NAMES]
                                for c in CONDITIONS + ("alcohol",)])
# Elective operations: (dx (icd10, icd9), px (icd10, icd9), service, ward, icu weight)
SURGERIES = [
    (("M170", "71516"), ("0SRD0J9", "8154"), "ORTHO", "Med/Surg", -0.8,
     ("470", "MAJOR JOINT REPLACEMENT OR REATTACHMENT OF LOWER EXTREMITY W/O MCC"), ("302", "KNEE JOINT REPLACEMENT")),
    (("K8020", "57420"), ("0FT44ZZ", "5123"), "SURG", "Med/Surg", -0.8,
     ("419", "LAPAROSCOPIC CHOLECYSTECTOMY W/O C.D.E. W/O CC/MCC"), ("263", "LAPAROSCOPIC CHOLECYSTECTOMY")),
    (("I2510", "41401"), ("021109W", "3612"), "CSURG", "Cardiac Surgery", 3.0,
     ("236", "CORONARY BYPASS W/O CARDIAC CATH W/O MCC"), ("166", "CORONARY BYPASS W/O AMI OR COMPLEX PDX")),
]

# Labs: itemid -> (uom, ref_lo, ref_hi, centre, scale, log, decimals). Centre/scale are on the log scale if log.
LABS = {
    50983: ("mEq/L", "133", "145", 139.0, 2.5, False, 0), 50971: ("mEq/L", "3.3", "5.1", 4.2, 0.4, False, 1),
    50902: ("mEq/L", "96", "108", 102.0, 3.0, False, 0), 50882: ("mEq/L", "22", "32", 25.0, 2.5, False, 0),
    50868: ("mEq/L", "8", "20", 0.0, 1.0, False, 0),  # anion gap: Na - Cl - HCO3
    51006: ("mg/dL", "6", "20", np.log(16), 0.35, True, 0), 50912: ("mg/dL", "0.5", "1.2", np.log(0.9), 0.25, True, 1),
    50931: ("mg/dL", "70", "100", np.log(105), 0.17, True, 0), 50960: ("mg/dL", "1.6", "2.6", 2.0, 0.2, False, 1),
    50970: ("mg/dL", "2.7", "4.5", 3.5, 0.5, False, 1), 50893: ("mg/dL", "8.4", "10.3", 9.1, 0.45, False, 1),
    51301: ("K/uL", "4", "10", np.log(7.5), 0.25, True, 1), 51222: ("g/dL", "13.7", "17.5", 12.4, 1.3, False, 1),
    51221: ("%", "40", "51", 0.0, 1.0, False, 1),  # 3 x hemoglobin
    51265: ("K/uL", "150", "400", np.log(240), 0.3, True, 0), 51250: ("fL", "82", "98", 90.0, 4.5, False, 0),
    51279: ("m/uL", "4.6", "6.1", 0.0, 1.0, False, 2),  # hemoglobin / 3
    50813: ("mmol/L", "0.5", "2", np.log(1.2), 0.35, True, 1), 50862: ("g/dL", "3.5", "5.2", 3.9, 0.4, False, 1),
    50885: ("mg/dL", "0", "1.5", np.log(0.6), 0.4, True, 1), 50861: ("IU/L", "0", "40", np.log(22), 0.45, True, 0),
    50878: ("IU/L", "0", "40", np.log(25), 0.45, True, 0), 50863: ("IU/L", "40", "130", np.log(80), 0.3, True, 0),
    51237: ("", "0.9", "1.1", np.log(1.05), 0.1, True, 1), 51274: ("sec", "9.4", "12.5", 0.0, 1.0, False, 1),
    51275: ("sec", "25", "36.5", np.log(30), 0.15, True, 1), 51003: ("ng/mL", "0", "0.01", np.log(0.01), 0.6, True, 2),
    50963: ("pg/mL", "0", "177", np.log(150), 0.8, True, 0), 50820: ("units", "7.35", "7.45", 7.40, 0.03, False, 2),
    50818: ("mm Hg", "35", "45", 40.0, 4.0, False, 0), 50821: ("mm Hg", "85", "105", 95.0, 15.0, False, 0),
}
LAB_IDS = np.array(list(LABS), dtype=np.int64)
LAB_IDX = {itemid: j for j, itemid in enumerate(LAB_IDS)}
CORE = [50983, 50971, 50902, 50882, 50868, 51006, 50912, 50931, 50960, 50970, 50893,
        51301, 51222, 51221, 51265, 51250, 51279]
PANELS = {"lft": [50862, 50885, 50861, 50878, 50863], "coag": [51237, 51274, 51275], "lactate": [50813],
          "trop": [51003], "bnp": [50963], "gas": [50820, 50818, 50821]}
# Derived labs (computed from others after drawing).
DERIVED = {50868, 51221, 51279, 51274}

# Chronic shifts (z units) per condition/trait, and per-unit-acuity effects common to all problems.
CHRONIC_LAB_SHIFT = {
    "ckd": {50912: 4.0, 51006: 2.5, 50971: 0.8, 50882: -1.0, 51222: -1.2, 50970: 1.5, 50893: -0.5},
    "diabetes": {50931: 3.5},
    "heart_failure": {50963: 3.0, 50983: -1.0, 50912: 0.8, 51006: 0.8},
    "liver": {50885: 2.5, 51237: 3.0, 50862: -2.5, 51265: -2.0, 50861: 1.0, 50878: 1.5, 50863: 1.0, 50983: -1.2,
              51222: -1.0},
    "copd": {50882: 1.2, 50818: 1.5},
    "cancer": {51222: -1.0, 50862: -1.0, 50863: 1.0},
    "afib": {51237: 2.0},
    "alcohol": {51250: 1.5, 50878: 1.0, 51265: -0.7},
}
GENERIC_ACUTE = {50813: 0.5, 50912: 0.3, 51301: 0.3, 50862: -0.4, 50820: -0.4, 51006: 0.3}

# The lab tables as vectors over LAB_IDS, the form the simulator draws with.
N_LABS = len(LAB_IDS)
LAB_CENTRE = np.array([v[3] for v in LABS.values()])
LAB_SCALE = np.array([v[4] for v in LABS.values()])
LAB_LOG = np.array([v[5] for v in LABS.values()])


def _lab_vec(effects: dict[int, float]) -> np.ndarray:
    out = np.zeros(N_LABS)
    for itemid, v in effects.items():
        out[LAB_IDX[itemid]] += v
    return out


CHRONIC_LAB_VEC = {name: _lab_vec(eff) for name, eff in CHRONIC_LAB_SHIFT.items()}
ACUTE_LAB_VEC = {name: _lab_vec(p["labs"]) + _lab_vec(GENERIC_ACUTE) for name, p in PROBLEMS.items()}
PANEL_MASK = {name: np.isin(LAB_IDS, ids) for name, ids in PANELS.items()}
CORE_MASK = np.isin(LAB_IDS, CORE)

# ICU vitals (chartevents): itemid -> (uom, decimals)
VITALS = {220045: ("bpm", 0), 220179: ("mmHg", 0), 220180: ("mmHg", 0), 220181: ("mmHg", 0),
          220210: ("insp/min", 0), 220277: ("%", 0), 223761: ("°F", 1)}

INSURANCE = ("Medicare", "Medicaid", "Other")
MARITAL = ("MARRIED", "SINGLE", "WIDOWED", "DIVORCED", "")
RACE = ("WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC/LATINO - PUERTO RICAN", "ASIAN", "OTHER", "UNKNOWN")
RACE_P = (0.64, 0.15, 0.05, 0.05, 0.05, 0.06)
ANCHOR_GROUPS = (2008, 2011, 2014, 2017)
_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
PROVIDERS = tuple("P" + "".join(_ALNUM[int(x)] for x in row)
                  for row in np.random.default_rng(20250528).integers(0, 36, (400, 5)))
