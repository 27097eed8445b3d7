"""Synthetic MIMIC-IV cohort generator: ``ehrscale synth OUT_DIR --patients N --seed S``.

Writes ``OUT_DIR/hosp/*.csv.gz`` and ``OUT_DIR/icu/*.csv.gz`` in MIMIC-IV v2.2's layout (same
file names, columns, column order and value formats as the Clinical Database Demo; chartevents
with v2.2's header), plus d_icd_diagnoses, d_icd_procedures, d_labitems and d_items holding only
the codes used. All codes, itemids, units and drug rows are real MIMIC ones (``tables.py``).

Generative model
================
Each patient ``i`` is simulated from its own RNG ``default_rng([seed, i])``; ids derive from ``i``
and the admission number ``k`` (g = 50 i + k): subject_id = 10_000_000 + i, hadm_id = 20_000_000 + g,
transfer_id = 30_000_000 + 8 g + j (an ICU transfer's id is its stay_id), labevent_id =
1 + 2000 g + j, specimen_id = 1 + 100 g + draw, pharmacy_id = 1 + 200 g + j, poe_id =
subject_id-seq. So patient ``i``'s rows never depend on the cohort size or the chunking, and
rows are written in patient order (gzip mtime=0): the same seed gives byte-identical files.

*Latent patient traits* (drawn once): age, sex, a metabolic factor, frailty, smoking, alcohol use
and a family history of cancer. *Chronic conditions* (hypertension, diabetes, CAD, CKD, heart
failure, atrial fibrillation, COPD, cancer, liver disease) follow a probit liability model on
age, sex, those traits and each other (diabetes/hypertension -> CKD, CAD -> HF -> AF,
smoking -> COPD/cancer, alcohol -> liver disease). Each is prevalent at the first admission or
starts years later; a family history of cancer mostly surfaces as cancer years later.

*Admissions* arrive as a Poisson process whose rate grows with the chronic burden (a weighted
count of active conditions) and frailty, plus early readmissions (below), until death or the end
of data (real year 2020, shifted into the 2110-2210 calendar via ``anchor_year_group``;
admissions before October 2015 are coded in ICD-9, later ones in ICD-10, as in MIMIC-IV).
Each admission has one *acute problem* (sepsis, MI, HF exacerbation, stroke, pneumonia, COPD
exacerbation, GI bleed, hip fracture, elective surgery, DKA, chest pain, AKI, liver
decompensation) whose rate depends on the active conditions, and a latent *severity*
``s = problem mean + burden + age + frailty + noise``. The problem and ``s`` drive:
admission type/location (ED, observation, transfer, elective), the ED stay and its labs
*before* admittime, service and careunits, diagnoses (principal codes, severe-sepsis/resp-failure
codes when severe), procedures, DRG (HCFA variant and APR severity/mortality), the drugs
started in the first hours, and the lab/vital trajectories: acuity ``A(t) = softplus(s)`` decays
over the stay for survivors and rises towards death otherwise, and moves each lab by the
problem's effect (sepsis: WBC, lactate, creatinine up, platelets down; MI: troponin; GI bleed:
haemoglobin down, BUN up; DKA: glucose up, bicarbonate down; ...). Chronic conditions shift the
baselines (CKD -> creatinine/BUN/K up, Hb down; diabetes -> glucose; HF -> NT-proBNP; liver ->
bilirubin/INR up, albumin/platelets down; ...) and a persistent per-patient lab offset adds
individual identity across years.

*Outcomes* share the same two drivers (burden, severity) plus age: ICU transfer (logit
1.3 s + problem bias), length of stay (log-normal, 0.35 s + burden + ICU), in-hospital death
(logit 1.25 s + burden + age + frailty), discharge location (home / home health / SNF / rehab /
LTAC / hospice / against advice). Readmission within 30 days is a logit in burden, severity,
frailty, alcohol, discharge location and an "unresolved problem" latent that keeps the acuity
(hence the last labs/vitals before discharge) raised late in the stay; other admissions arrive
at the burden-driven rate. Out-of-hospital death (``patients.dod``, recorded within a year of
discharge as in MIMIC) is a hazard in burden, age and hospice discharge.

*What a model can see before each prediction time*: chronic burden through earlier admissions'
diagnoses, drugs and labs and omr; acute severity through the ED stay (transfer row and STAT
labs before admittime), admission type/location, early STAT labs, troponin/lactate panels,
ICU vitals and the drugs started in the first hours (antibiotics, pressors, insulin drips).

*Density*: ``--density mimic`` adds MIMIC-IV's extra lab draws, outpatient labs and ICU charting
(about 5x the rows) from a second per-patient generator, leaving every default row as it is
(``density.py`` gives the rates and their sources). ``--workers`` simulates chunks in parallel
processes; the files are byte-identical for any number of workers.

*Long-range structure*: chronic diagnosis codes and maintenance drugs (a per-patient regimen)
recur, noisily, at every admission; traits (alcohol, smoking, family history) show up as codes
and drugs long before the conditions they cause; outpatient omr rows (blood pressure, weight,
BMI) track hypertension and cancer between admissions.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.files import atomic_dir
from ehrscale.synth.density import DENSITIES
from ehrscale.synth.patient import ChunkRows, simulate_patient
from ehrscale.synth.writer import Streams, encode_chunk

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 1000
DENSE_CHUNK = 250  # a mimic-density patient has about 6x the rows: the same memory per chunk


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise EhrscaleError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _chunk_stats(stats: list[tuple]) -> dict[str, int]:
    """Counts for the realism summary from one chunk's admissions (patients never span chunks)."""
    if not stats:
        return {}
    a = np.array(stats, dtype=np.int64)
    sid, adm, dis, died, icu, labs = a.T
    order = np.lexsort((adm, sid))
    sid, adm, dis, died = sid[order], adm[order], dis[order], died[order]
    same = sid[1:] == sid[:-1]
    readmit = np.zeros(len(sid), dtype=bool)
    readmit[:-1] = same & ((adm[1:] - dis[:-1]) <= 30 * 86400)
    alive = died == 0
    return {"admissions": len(a), "patients_admitted": len(np.unique(sid)), "deaths": int(died.sum()),
            "icu": int(icu.sum()), "long_los": int(((dis - adm) > 7 * 86400).sum()),
            "alive_discharges": int(alive.sum()), "readmit30": int((readmit & alive).sum()), "labs": int(labs.sum())}


def summarize(counts: dict[str, int], rows: dict[str, int], n_patients: int, seconds: float) -> dict:
    n_adm = max(1, counts.get("admissions", 0))
    return {
        "patients": n_patients,
        "admissions": counts.get("admissions", 0),
        "admissions_per_patient": counts.get("admissions", 0) / max(1, counts.get("patients_admitted", 0)),
        "in_hospital_mortality": counts.get("deaths", 0) / n_adm,
        "readmission_30d": counts.get("readmit30", 0) / max(1, counts.get("alive_discharges", 0)),
        "long_los_7d": counts.get("long_los", 0) / n_adm,
        "icu_admission": counts.get("icu", 0) / n_adm,
        "labs_per_admission": counts.get("labs", 0) / n_adm,
        "rows": dict(rows),
        "seconds": seconds,
    }


def _simulate_chunk(seed: int, lo: int, hi: int, density: str) -> dict:
    """Patients ``lo..hi-1``, their rows encoded as CSV bodies: the unit of work a worker process does."""
    chunk = ChunkRows(density)
    for i in range(lo, hi):
        simulate_patient(seed, i, chunk)
    encoded, rows = encode_chunk(chunk)
    return {"encoded": encoded, "rows": rows, "counts": _chunk_stats(chunk.adm_stats),
            "dx": {(r[3], r[4]) for r in chunk.rows.get("diagnoses_icd", [])},
            "px": {(r[4], r[5]) for r in chunk.rows.get("procedures_icd", [])}}


def _chunks_in_order(seed: int, n_patients: int, chunk_size: int, density: str, workers: int):
    """Each chunk's result, in patient order; with workers > 1, simulated in worker processes, a bounded
    number ahead of the writer (memory stays a few chunks whatever the cohort size)."""
    bounds = [(lo, min(n_patients, lo + chunk_size)) for lo in range(0, n_patients, chunk_size)]
    if workers == 1 or len(bounds) == 1:
        for lo, hi in bounds:
            yield hi, _simulate_chunk(seed, lo, hi, density)
        return
    ctx = multiprocessing.get_context("spawn")  # no inherited state: the same bytes as one process
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        todo = iter(bounds)
        pending = deque((hi, pool.submit(_simulate_chunk, seed, lo, hi, density))
                        for lo, hi in itertools.islice(todo, 2 * workers))
        while pending:
            hi, future = pending.popleft()
            result = future.result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt[1], pool.submit(_simulate_chunk, seed, *nxt, density)))
            yield hi, result


def generate(out_dir: str | os.PathLike, n_patients: int, seed: int = 0, chunk_size: int | None = None,
             density: str = "default", workers: int = 1) -> dict:
    """Write a synthetic cohort of ``n_patients`` to ``out_dir`` (replaced atomically); return a summary.

    ``density``: "default", or "mimic" for MIMIC-IV's event density (``ehrscale.synth.density``).
    ``workers``: processes simulating chunks in parallel; the files are byte-identical for any value.
    """
    n_patients = _check_int("n_patients (--patients)", n_patients, 1)
    seed = _check_int("seed (--seed)", seed, 0)
    if chunk_size is None:
        chunk_size = DENSE_CHUNK if density == "mimic" else DEFAULT_CHUNK
    chunk_size = _check_int("chunk_size (--chunk-size)", chunk_size, 1)
    workers = _check_int("workers (--workers)", workers, 1)
    if density not in DENSITIES:
        raise EhrscaleError(f"density (--density) must be one of {', '.join(DENSITIES)}, got {density!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EhrscaleError(f"out_dir '{out}' exists and is not a directory")
    t_start = time.perf_counter()
    counts: dict[str, int] = {}
    dx: set = set()
    px: set = set()
    try:
        with atomic_dir(out) as tmp:
            streams = Streams(tmp)
            try:
                for done, result in _chunks_in_order(seed, n_patients, chunk_size, density, workers):
                    for key, v in result["counts"].items():
                        counts[key] = counts.get(key, 0) + v
                    dx |= result["dx"]
                    px |= result["px"]
                    streams.write_encoded(result["encoded"], result["rows"])
                    log.debug("synth: %d/%d patients", done, n_patients)
                streams.write_dictionaries(dx, px, dense=density == "mimic")
            finally:
                streams.close()
    except OSError as err:
        raise EhrscaleError(f"cannot write out_dir '{out}': {err}") from err
    summary = summarize(counts, streams.rows, n_patients, time.perf_counter() - t_start)
    summary["density"] = density
    log.info("synth: %d patients, %d admissions in %.1fs -> %s", n_patients, summary["admissions"],
             summary["seconds"], out)
    log.info("synth: admissions/patient %.2f, in-hospital mortality %.1f%%, 30-day readmission %.1f%%, "
             "LOS>7d %.1f%%, ICU %.1f%%, labs/admission %.0f", summary["admissions_per_patient"],
             100 * summary["in_hospital_mortality"], 100 * summary["readmission_30d"], 100 * summary["long_los_7d"],
             100 * summary["icu_admission"], summary["labs_per_admission"])
    return summary


def add_arguments(parser) -> None:
    parser.add_argument("out_dir", help="output directory (replaced atomically); gets hosp/ and icu/")
    parser.add_argument("--patients", type=int, default=1000, help="number of patients (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help=f"patients simulated per chunk; bounds memory (default {DEFAULT_CHUNK}, "
                             f"{DENSE_CHUNK} at mimic density)")
    parser.add_argument("--density", choices=DENSITIES, default="default",
                        help="default, or mimic: MIMIC-IV's labs and ICU charting per day (ehrscale.synth.density)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes simulating chunks in parallel; the files do not depend on it (default 1)")


def run(args) -> int:
    s = generate(args.out_dir, args.patients, args.seed, chunk_size=args.chunk_size, density=args.density,
                 workers=args.workers)
    print(f"wrote {s['patients']} patients, {s['admissions']} admissions to {args.out_dir} in {s['seconds']:.1f}s")
    for key in ("admissions_per_patient", "in_hospital_mortality", "readmission_30d", "long_los_7d", "icu_admission",
                "labs_per_admission"):
        print(f"  {key:<24} {s[key]:.3f}")
    for table, n in s["rows"].items():
        print(f"  rows {table:<19} {n}")
    return 0
