"""scripts/study_quality.py end to end on the tiny BERT and 16 rows a task (slow: ~50 tiny runs).
The study itself takes hours; this proves its phases, its resume and its report."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from conftest import load_script


@pytest.mark.slow
def test_the_study_script_runs_every_arm_and_reports(tiny_bert, glue, tmp_path):
    study = load_script("study_quality")
    args = ["--encoder", tiny_bert, "--max-train", "16", "--epochs", "1", "--grid", "0.001",
            "--glue-dir", str(glue), "--out", str(tmp_path)]
    study.main([*args, "--skip-sensitivity"])  # the main comparison and the Trainer arm only
    assert not any((tmp_path / d).exists()
                   for d in ("lr-0.001", "probe-no-mnli", "cola", "probe-pooler"))
    study.main(args)
    report = json.loads((tmp_path / "final" / "report.json").read_text())
    routes = ["single", "multi", "multi+ft", "single+extra", "hf-single", "multi-no-mnli",
              "single-pooler"]
    assert report["settings"]["routes"] == routes
    for target in ("rte", "mrpc", "stsb"):
        differences = report["targets"][target]["differences"]
        assert {r: len(next(iter(d.values()))["seeds"]) for r, d in differences.items()} == \
            {"multi": 3, "multi+ft": 3, "single+extra": 3, "hf-single": 3, "multi-no-mnli": 1,
             "single-pooler": 3}
    assert report["cost"]["multi"]["examples_of_target"] == {"rte": 16, "mrpc": 16, "stsb": 16}
    # the goal's pairs: every route against single and against the Trainer, per seed
    paired = report["paired"]
    assert {"multi − hf-single", "multi+ft − hf-single", "single − hf-single",
            "multi − single"} <= set(paired)
    rte = report["targets"]["rte"]["routes"]
    for seed in ("1", "2", "3"):
        assert paired["multi − hf-single"]["rte"]["per_seed"][seed] == pytest.approx(
            rte["multi"]["accuracy"][seed] - rte["hf-single"]["accuracy"][seed])
    assert len(paired["multi+ft − single"]["mean"]["per_seed"]) == 3
    assert len(paired["single-pooler − single"]["mean"]["per_seed"]) == 3
    # the probe's heads started from the tiny BERT's pooler
    run = next((tmp_path / "probe-pooler").rglob("spec.yaml"))
    assert "head_init: pooler" in run.read_text()
    grid = report["lr_grid"]  # seed 1 at the main rate and at the sensitivity rate
    assert set(grid) == {"single", "multi", "hf-single"}
    assert all(set(scores) == {"0.0001", "0.001"} for scores in grid.values())
    assert not any(math.isnan(v) for s in grid.values() for v in s.values())  # every run done
    text = (tmp_path / "final" / "report.md").read_text()
    assert "## Learning-rate sensitivity (seed 1)" in text
    best = study.best_rates(grid)
    assert set(best) == {"single", "multi", "hf-single"}
    for arm, (rate, score) in best.items():
        assert score == max(grid[arm].values()) and grid[arm][rate] == score
    assert f"multi's best − single's best: {100 * (best['multi'][1] - best['single'][1]):+.1f}" \
        in text
    # CoLA: its own comparison with MNLI as the helper, every route on the three seeds
    cola = json.loads((tmp_path / "cola" / "report.json").read_text())
    assert cola["settings"]["targets"] == ["cola"] and cola["settings"]["helpers"] == ["mnli"]
    assert {r: len(next(iter(d.values()))["seeds"])
            for r, d in cola["targets"]["cola"]["differences"].items()} == \
        {"multi": 3, "multi+ft": 3, "single+extra": 3}
    assert "## CoLA with MNLI as the helper (its own comparison, cola/report.md)" in text
    assert "### Dev results" in text and "Not run yet" not in text
    stamp = (tmp_path / "final" / "report.json").stat().st_mtime_ns
    study.main([*args, "--report"])  # from what is stored, without training
    assert json.loads((tmp_path / "final" / "report.json").read_text())["targets"] == \
        report["targets"]
    assert (tmp_path / "final" / "report.json").stat().st_mtime_ns != stamp


@pytest.mark.slow
def test_the_kd_smart_script_distils_from_its_teachers_and_pairs_both_with_them(tiny_bert, glue,
                                                                               tmp_path):
    kd = load_script("study_kd_smart")
    common = ["--encoder", tiny_bert, "--max-train", "16", "--epochs", "1", "--glue-dir", str(glue),
              "--out", str(tmp_path / "kd")]
    with pytest.raises(SystemExit, match="teacher checkpoints missing"):
        kd.main([*common, "--report"])  # nothing trained yet
    kd.main(common)
    report = json.loads((tmp_path / "kd" / "final" / "report.json").read_text())
    assert report["settings"]["routes"] == ["multi", "multi+kd", "multi+kd-soft", "multi+smart"]
    assert report["settings"]["baseline"] == "multi"
    for target in ("rte", "mrpc", "stsb"):  # the student and SMART paired with the teachers
        for route in ("multi+kd", "multi+kd-soft", "multi+smart"):
            per_metric = report["targets"][target]["differences"][route]
            assert all(d["seeds"] == [1, 2, 3] for d in per_metric.values())
    smart = yaml.safe_load((tmp_path / "kd" / "smart" / "multi" / "seed-1" /
                             "spec.yaml").read_text())["tasks"]
    assert [t for t in ("rte", "mrpc", "stsb") if smart[t].get("adv_weight")] == ["rte", "mrpc"]
    student = yaml.safe_load((tmp_path / "kd" / "kd" / "multi" / "seed-2" /
                               "spec.yaml").read_text())["distill"]
    assert [t["path"] for t in student["teachers"]] == [
        str(tmp_path / "kd" / "teachers" / "multi" / f"seed-{s}" / "best") for s in (1, 2, 3)]
    distillation = report["distillation"]
    assert set(distillation["students"]) == {"kd", "kd-soft"}
    for stage, (alpha, temperature) in (("kd", (0.5, 1.0)), ("kd-soft", (0.0, 2.0))):
        student = distillation["students"][stage]
        assert set(student["student"]) == set(distillation["multi"]) == {"1", "2", "3"}
        assert len(student["gap_closed"]) == 3
        assert (student["alpha"], student["temperature"]) == (alpha, temperature)
        run = yaml.safe_load((tmp_path / "kd" / stage / "multi" / "seed-1" /
                              "spec.yaml").read_text())["distill"]
        assert (run["alpha"], run["temperature"]) == (alpha, temperature)
    assert set(distillation["ensemble"]) == {"rte", "mrpc", "stsb"}
    text = (tmp_path / "kd" / "final" / "distillation.md").read_text()
    assert "| the ensemble of the three |" in text and "gap closed" in text
    assert "| student, alpha 0, T 2 (mean over seeds) |" in text
    assert "## Paired differences to multi (x100)" in \
        (tmp_path / "kd" / "final" / "report.md").read_text()
    stamp = (tmp_path / "kd" / "final" / "report.json").stat().st_mtime_ns
    kd.main([*common, "--report"])  # from what is stored, without training
    assert json.loads((tmp_path / "kd" / "final" / "report.json").read_text())["targets"] == \
        report["targets"]
    assert (tmp_path / "kd" / "final" / "report.json").stat().st_mtime_ns != stamp
