"""`mtdnn compare` (mtdnn/compare.py, compare_report.py): the routes on a tiny model and a few real
rows, equal budgets, resuming an interrupted compare, failed runs, and the report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import mtdnn.compare
from mtdnn.cli import main
from mtdnn.compare import compare
from mtdnn.errors import UserError
from mtdnn.metrics import compute_metrics
from mtdnn.spec import load_spec

pytestmark = pytest.mark.usefixtures("one_thread")
# 16 rows a task, batches of 8: an epoch is 2 batches of each task.
ROWS = ["train.max_steps=null", "train.epochs=1", "tasks.rte.max_train_examples=16",
        "tasks.stsb.max_train_examples=16", "tasks.cola.max_train_examples=16",
        "train.learning_rate=1e-3"]


@pytest.fixture
def spec(tiny_glue_spec):
    return load_spec(tiny_glue_spec(tasks="[rte, stsb, cola]"), ROWS)


def _records(root: Path) -> dict[tuple[str, str, int], dict]:
    return {(r["route"], r["target"], r["seed"]): r for r in
            (json.loads(p.read_text()) for p in (root / "records").rglob("seed-*.json"))}


def test_every_route_runs_with_equal_budgets_and_a_report(spec, tmp_path):
    result = compare(spec, ["rte", "stsb"], helpers=["cola"], seeds=[1, 2],
                     output_dir=tmp_path / "cmp", resamples=200)
    records = _records(tmp_path / "cmp")
    routes = ("single", "multi", "multi+ft", "single+extra")
    assert set(records) == {(r, t, s) for r in routes for t in ("rte", "stsb") for s in (1, 2)}
    assert all(r["status"] == "ok" for r in records.values())
    for target in ("rte", "stsb"):
        for seed in (1, 2):
            single = records[("single", target, seed)]["examples"]
            multi = records[("multi", target, seed)]["examples"]
            # one epoch: each target's 16 rows in single and in multi; multi adds the helper's
            assert single == {target: 16} and multi == {"rte": 16, "stsb": 16, "cola": 16}
            # the fine-tuning stage and its control add the same 16 rows of the target
            assert records[("multi+ft", target, seed)]["examples"] == {target: 16}
            assert records[("single+extra", target, seed)]["examples"] == {target: 16}
    # The report: one row per target and metric, the paired differences, verdicts, cost.
    report = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert set(report["targets"]) == {"rte", "stsb"}
    assert set(result.verdicts["rte"]) == {"multi", "multi+ft", "single+extra"}
    rte = report["targets"]["rte"]
    d = rte["differences"]["multi"]["accuracy"]
    expected = [records[("multi", "rte", s)]["metrics"]["accuracy"] -
                records[("single", "rte", s)]["metrics"]["accuracy"] for s in (1, 2)]
    assert d["seeds"] == [1, 2] and d["per_seed"] == pytest.approx(expected)
    assert d["mean"] == pytest.approx(np.mean(expected))
    lo, hi = d["bootstrap"]
    assert lo <= hi
    assert report["cost"]["multi"]["runs"] == 2 and report["cost"]["single"]["runs"] == 4
    assert report["cost"]["multi"]["examples_of_target"] == {"rte": 16, "stsb": 16}
    text = (tmp_path / "cmp" / "report.md").read_text()
    assert text == result.markdown
    assert "| rte | accuracy | multi | 2 |" in text and "## Verdicts (main metric)" in text
    assert "- **rte** (accuracy): multi: " in text
    assert (tmp_path / "cmp" / "report.png").stat().st_size > 1000
    # The stored predictions are the best checkpoint's: they give its recorded metrics back.
    from mtdnn.data import read_split

    rows = read_split(spec, spec.task("stsb"), "dev")
    rec = records[("multi+ft", "stsb", 2)]
    again = compute_metrics(["pearson", "spearmanr"], rec["predictions"], rows.labels)
    assert again == pytest.approx(rec["metrics"], abs=1e-6)
    # Only the checkpoints the fine-tuning routes start from are kept.
    assert (tmp_path / "cmp" / "multi" / "seed-1" / "best").is_dir()
    assert not (tmp_path / "cmp" / "multi-ft" / "rte" / "seed-1" / "best").exists()
    assert not list((tmp_path / "cmp").rglob("checkpoints"))
    # Another route as the baseline (the distillation study pairs with multi): the differences
    # turn around, and the text and plot say what they are paired with.
    from mtdnn.compare_report import build_report, markdown

    settings = dict(report["settings"], routes=["multi", "single"], baseline="multi")
    flipped = build_report(spec, settings, list(records.values()), resamples=50)
    back = flipped["targets"]["rte"]["differences"]["single"]["accuracy"]
    assert back["per_seed"] == pytest.approx([-v for v in expected])
    assert set(flipped["targets"]["rte"]["differences"]) == {"single"}
    text = markdown(flipped)
    assert "## Paired differences to multi (x100)" in text and "(route - multi)" in text
    assert "fine-tuning stage" not in text  # neither fine-tuning route is in this report


def test_an_interrupted_compare_continues_where_it_stopped(spec, tmp_path, capsys):
    from mtdnn.trainer import train

    root = tmp_path / "cmp"
    compare(spec, ["rte"], helpers=["stsb"], seeds=[1], routes=["single"], output_dir=root,
            resamples=20)
    single = root / "records" / "single" / "rte" / "seed-1.json"
    stamp = single.stat().st_mtime_ns
    # The multi run was killed after its first step: its checkpoint is there, no record.
    run = mtdnn.compare.Run("multi", 1, ("rte",), root / "multi" / "seed-1")
    multi_spec = mtdnn.compare.run_spec(spec, run, ["stsb"])
    train(dataclasses.replace(multi_spec, train=dataclasses.replace(multi_spec.train,
                                                                    save_every=1)),
          progress=False, stop_after=1)
    capsys.readouterr()
    compare(spec, ["rte"], helpers=["stsb"], seeds=[1], output_dir=root, resamples=20)
    out = capsys.readouterr().out
    assert single.stat().st_mtime_ns == stamp  # the stored single run was not trained again
    assert "mtdnn: resumed from" in out and "step-0000001" in out
    records = _records(root)
    assert {k[0] for k in records} == {"single", "multi", "multi+ft", "single+extra"}
    assert records[("multi", "rte", 1)]["examples"] == {"rte": 16, "stsb": 16}  # resumed: exact


def test_a_failed_run_is_reported_and_its_dependents_skipped(spec, tmp_path, monkeypatch):
    import mtdnn.trainer

    real = mtdnn.trainer.train

    def flaky(run_spec, **kwargs):
        if "multi/seed-1" in run_spec.source:
            raise RuntimeError("out of memory (simulated)")
        return real(run_spec, **kwargs)

    monkeypatch.setattr(mtdnn.trainer, "train", flaky)
    result = compare(spec, ["rte"], helpers=["stsb"], seeds=[1], output_dir=tmp_path / "cmp",
                     resamples=20)
    failed = {(f["route"], f["target"]): f["error"] for f in result.report["failed"]}
    assert failed == {("multi", "rte"): "RuntimeError: out of memory (simulated)",
                      ("multi+ft", "rte"): "UserError: multi+ft/rte/seed-1: its base run (multi, "
                                           "seed 1) did not finish"}
    assert result.verdicts["rte"]["single+extra"] != "not enough runs"
    assert result.verdicts["rte"]["multi"] == "not enough runs"
    assert "## Failed runs" in result.markdown
    # Running again retries what failed.
    monkeypatch.setattr(mtdnn.trainer, "train", real)
    again = compare(spec, ["rte"], helpers=["stsb"], seeds=[1], output_dir=tmp_path / "cmp",
                    resamples=20)
    assert again.report["failed"] == []


def test_bad_requests_are_user_errors(spec, tmp_path):
    with pytest.raises(UserError) as e:
        compare(spec, ["rtee", "stsb"], helpers=["stsb"], seeds=[1, 1],
                routes=["multi", "single++"], output_dir=tmp_path)
    assert e.value.problems == [
        "--targets: unknown task 'rtee'; did you mean 'rte'? (known: cola, rte, stsb)",
        "--helpers: ['stsb'] are targets too: a task is one or the other",
        "--seeds: give one or more different seeds, got [1, 1]",
        "--routes: unknown route 'single++'; did you mean 'single'? (known: multi, multi+ft, "
        "single, single+extra)"]
    assert not tmp_path.joinpath("records").exists()


def test_cli_compare(spec, tiny_glue_spec, tmp_path, capsys):
    spec_path = tiny_glue_spec(tasks="[rte, stsb]")
    assert main(["compare", str(spec_path), *ROWS[:4], "--targets", "rte", "--helpers", "stsb",
                 "--seeds", "3", "--routes", "single,multi", "--output-dir",
                 str(tmp_path / "c"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'c' / 'report.md'}" in out
    assert {k[0] for k in _records(tmp_path / "c")} == {"single", "multi"}
    assert main(["compare", str(spec_path), "--targets", "nope"]) == 2
