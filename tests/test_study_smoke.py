"""scripts/study_quality.py end to end on the tiny BERT and 16 rows a task (slow: ~50 tiny runs).
The study itself takes hours; this proves its phases, its resume and its report."""

from __future__ import annotations

import json
import math

import pytest
from conftest import load_script


@pytest.mark.slow
def test_the_study_script_runs_every_arm_and_reports(tiny_bert, glue, tmp_path):
    study = load_script("study_quality")
    args = ["--encoder", tiny_bert, "--max-train", "16", "--epochs", "1", "--grid", "0.001",
            "--glue-dir", str(glue), "--out", str(tmp_path)]
    study.main([*args, "--skip-sensitivity"])  # the main comparison and the Trainer arm only
    assert not (tmp_path / "lr-0.001").exists() and not (tmp_path / "probe-no-mnli").exists()
    study.main(args)
    report = json.loads((tmp_path / "final" / "report.json").read_text())
    routes = ["single", "multi", "multi+ft", "single+extra", "hf-single", "multi-no-mnli"]
    assert report["settings"]["routes"] == routes
    for target in ("rte", "mrpc", "stsb"):
        differences = report["targets"][target]["differences"]
        assert {r: len(next(iter(d.values()))["seeds"]) for r, d in differences.items()} == \
            {"multi": 3, "multi+ft": 3, "single+extra": 3, "hf-single": 3, "multi-no-mnli": 1}
    assert report["cost"]["multi"]["examples_of_target"] == {"rte": 16, "mrpc": 16, "stsb": 16}
    grid = report["lr_grid"]  # seed 1 at the main rate and at the sensitivity rate
    assert set(grid) == {"single", "multi", "hf-single"}
    assert all(set(scores) == {"0.0001", "0.001"} for scores in grid.values())
    assert not any(math.isnan(v) for s in grid.values() for v in s.values())  # every run done
    assert "## Learning-rate sensitivity (seed 1)" in (tmp_path / "final" / "report.md").read_text()
    stamp = (tmp_path / "final" / "report.json").stat().st_mtime_ns
    study.main([*args, "--report"])  # from what is stored, without training
    assert json.loads((tmp_path / "final" / "report.json").read_text())["targets"] == \
        report["targets"]
    assert (tmp_path / "final" / "report.json").stat().st_mtime_ns != stamp
