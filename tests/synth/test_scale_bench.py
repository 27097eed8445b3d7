"""bench/scale.py end to end on a tiny cohort: every data stage runs through its command, its peak
memory is sampled, and the rules' declared mem_mb is read from the rule files themselves."""

from __future__ import annotations

import importlib.util
import json
import re

from support import ROOT


def _bench():
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "bench" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_declared_memory_is_the_rules_own():
    mem = _bench().declared_mem_mb()
    for rule in ("extract", "tokenize", "meds_import", "labels", "baseline"):
        text = next(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk")
                    if re.search(rf"^(rule|checkpoint) {rule}:", p.read_text(), re.M))
        body = text.split(f" {rule}:", 1)[1].split("\nrule ", 1)[0].split("\ncheckpoint ", 1)[0]
        assert mem[rule] == int(re.search(r"mem_mb=(\d+)", body).group(1)), rule


def test_every_data_stage_runs_and_is_measured(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert _bench().main(["--sizes", "60,120", "--work", str(tmp_path / "work"), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["patients"], r["stage"]) for r in rows] == [
        (n, s) for n in (60, 120)
        for s in ("synth", "extract", "meds_import", "tokenize", "labels", "probe inputs", "baseline")]
    assert all(r["seconds"] > 0 and r["peak_mb"] > 20 for r in rows)  # a Python process: tens of MB at least
    assert {r["stage"]: r["declared_mb"] for r in rows if r["patients"] == 60}["extract"] == 8000
    n_tasks = len(list((ROOT / "config" / "tasks").glob("*.yaml")))
    assert next(r for r in rows if r["stage"] == "labels")["jobs"] == n_tasks
    task_names = {t.stem for t in (ROOT / "config" / "tasks").glob("*.yaml")}
    assert next(r for r in rows if r["stage"] == "baseline")["task"] in task_names  # the task with most examples
    declared = {r["stage"]: r["declared_mb"] for r in rows if r["patients"] == 60}
    assert declared["labels"] == 2000 and declared["baseline"] == 4000 and declared["meds_import"] == 4000
    assert "growth from 60 to 120 patients" in capsys.readouterr().out
    assert not list((tmp_path / "work").iterdir())  # each size's files removed without --keep
