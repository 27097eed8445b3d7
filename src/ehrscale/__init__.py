"""ehrscale: scaling laws for EHR foundation models, from raw MIMIC-IV CSVs to IsoFLOPs fits."""

__version__ = "0.1.0"
