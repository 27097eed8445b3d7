"""Id scheme and time unit shared by the patient and admission simulators.

Every id is a function of the patient index ``i`` and the admission number ``k`` only (admission
slot ``g = MAX_ADM * i + k``), so a patient's rows never depend on the cohort size or the chunking:
subject_id = SUBJECT_BASE + i, hadm_id = HADM_BASE + g, transfer_id = STAY_BASE + 8 g + j.
"""

from __future__ import annotations

SUBJECT_BASE, HADM_BASE, STAY_BASE = 10_000_000, 20_000_000, 30_000_000
MAX_ADM = 50  # admissions per patient (ids reserve this many slots)
MAX_DRAWS = 60  # lab draws per admission
DAY = 86400.0  # seconds: times are integer seconds on numpy's datetime64 epoch
