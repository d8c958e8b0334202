"""scripts/bench_grouping.py: each arm's config sets every task's grouping explicitly (whatever the
type's default or --mtdnn-random-batches says), the arms differ in nothing else, and the report's
figures are the paired per-seed differences (crafted numbers)."""

from __future__ import annotations

import pytest
from conftest import load_script

from mtdnn.stats import t_interval

bg = load_script("bench_grouping")
bt = load_script("bench_task_types")


def test_the_arms_set_every_tasks_grouping_and_differ_in_nothing_else(tmp_path):
    args = bt.parse_args(["--more-dir", "/data", "--mtdnn-random-batches"])
    grouped, random = (bg.grouping_config(args, "conll-hier", b, 2, tmp_path) for b in bg.BATCHES)
    flags = {b: [o for o in c["overrides"] if "group_by_length" in o]
             for b, c in (("grouped", grouped), ("random", random))}
    assert flags == {b: [f"tasks.{t}.group_by_length={v}" for t in ("ner", "pos", "chunk")]
                     for b, v in (("grouped", "true"), ("random", "false"))}
    rest = [[o for o in c["overrides"] if "group_by_length" not in o] for c in (grouped, random)]
    assert rest[0] == rest[1] and "tasks.ner.max_train_examples=2000" not in rest[0]
    assert grouped["settings"]["batches"] == "grouped" and grouped["run_dir"] != random["run_dir"]
    assert (grouped["arm"], grouped["n"]) == ("mtdnn", 2)


def test_report_pairs_the_seeds():
    def result(value: float, seconds: float) -> dict:
        return {"metrics": {"pos": {"token_accuracy": value}}, "train": {"train_s": seconds}}

    results = {("pos", "grouped", 1): result(0.60, 20), ("pos", "random", 1): result(0.64, 40),
               ("pos", "grouped", 2): result(0.70, 22), ("pos", "random", 2): result(0.71, 44),
               ("pos", "grouped", 3): result(0.65, 21), ("pos", "random", 3): result(0.67, 42)}
    row = bg.report(results, ["pos"]).splitlines()[2]
    _, low, high = t_interval([4.0, 1.0, 2.0])
    assert row == (f"| pos | token acc | 3 | 65.0 ± 5.0 | 67.3 ± 3.5 | +2.3 | "
                   f"[{low:+.1f}, {high:+.1f}] | 21 ± 1 | 42 ± 2 |")
    del results[("pos", "random", 3)]
    assert "| pos | token acc | 2 | 65.0 ± 5.0 | 67.5 ± 4.9 | +2.5 |" in bg.report(results, ["pos"])


def test_speed_units_are_refused(capsys):
    with pytest.raises(SystemExit, match="no quality or conll unit"):
        bg.main(["--only", "speed", "--dry-run"])
