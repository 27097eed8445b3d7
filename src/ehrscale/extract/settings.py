"""The ``extract`` config section: which MIMIC-IV tables to read, the split, the tolerances.

``ehrscale extract`` and ``ehrscale meds-import`` (its split fractions and salt) both read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ehrscale.core.errors import EhrscaleError
from ehrscale.extract.mimic import ALWAYS_REQUIRED, DEFAULT_TABLES, TABLES
from ehrscale.extract.splits import DEFAULT_FRACTIONS, DEFAULT_SALT, check_fractions

TABLE_STATUSES = ("required", "optional", "skip")


@dataclass
class ExtractSettings:
    tables: dict[str, str] = field(default_factory=dict)  # overrides of DEFAULT_TABLES
    split_fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    split_salt: str = DEFAULT_SALT
    max_unparsable_fraction: float = 0.0  # per table; above it extraction fails
    # Per table (patients, admissions): rows that duplicate or contradict others, and dods before
    # an admission. Above it extraction fails; within it the documented rule drops them, counted.
    max_inconsistent_fraction: float = 0.0
    subjects_per_shard: int = 10_000
    memory_limit: str = "4GB"
    threads: int = 0  # 0: all cores

    def table_statuses(self) -> dict[str, str]:
        unknown = sorted(set(self.tables) - set(TABLES))
        if unknown:
            raise EhrscaleError(f"extract.tables: unknown table(s) {unknown}; known: {sorted(TABLES)}")
        statuses = {**DEFAULT_TABLES, **self.tables}
        for name, status in statuses.items():
            if status not in TABLE_STATUSES:
                raise EhrscaleError(f"extract.tables.{name}: '{status}' is not one of {list(TABLE_STATUSES)}")
            if name in ALWAYS_REQUIRED and status != "required":
                raise EhrscaleError(f"extract.tables.{name}: must be 'required' (every other table joins to it)")
        return statuses

    def validate(self) -> None:
        check_fractions(self.split_fractions)
        for name in ("max_unparsable_fraction", "max_inconsistent_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise EhrscaleError(f"extract.{name} must be in [0, 1)")
        if self.subjects_per_shard < 1:
            raise EhrscaleError("extract.subjects_per_shard must be >= 1")
        self.table_statuses()
