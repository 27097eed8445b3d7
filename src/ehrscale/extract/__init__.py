"""Extract: raw MIMIC-IV CSVs, or any MEDS dataset, into ehrscale's MEDS layout, split by patient.

* :mod:`.raw`: ``ehrscale extract`` (DuckDB over ``hosp/`` and ``icu/``; table rules in :mod:`.mimic`);
* :mod:`.meds_import`: ``ehrscale meds-import`` (any MEDS dataset, validated);
* :mod:`.dataset`: the MEDS contract every later stage reads (schema, shards, subject splits);
* :mod:`.splits`: the keyed hash that puts each patient in one split; :mod:`.settings`: the config section.
"""
