"""scripts/bench_task_types.py and its task_types_*.py modules: its options and presets, the specs
of its units, the pure aggregation and tables (crafted numbers), and a smoke run of one unit per
task type in-process, both arms, on the tiny BERT and a few real rows of each data set: both arms
train on the same features and are scored through the same `kind.predictions` / `kind.score`
path, the HF arm's outputs shaped as the type's own. The scores of a 2-step tiny model are not
checked."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import build_tiny_bert, load_script

from mtdnn.stats import t_interval

bt = load_script("bench_task_types")
tp = load_script("task_types_plan")
trep = load_script("task_types_report")
trun = load_script("task_types_run")
tu = load_script("task_types_units")
bc = load_script("bench_common")
bqs = load_script("bench_quality_setup")
br = load_script("bench_results")


# ---- options and presets ----------------------------------------------------------------------


def test_defaults_are_the_full_preset_and_quick_is_smaller():
    full, quick = bt.parse_args([]), bt.parse_args(["--quick"])
    assert (full.lr, full.batch_size, full.encoder, full.max_seq_length) == (1e-4, 32, bc.MINILM,
                                                                            None)
    for args, preset in ((full, bt.PRESETS["full"]), (quick, bt.PRESETS["quick"])):
        assert (args.seeds, args.epochs, args.repeats) == (preset["seeds"], preset["epochs"],
                                                           preset["repeats"])
        assert (args.train_rows, args.dev_rows, args.speed_rows) == (
            preset["train_rows"], preset["dev_rows"], preset["speed_rows"])
        assert args.units == list(tu.DEFAULT_UNITS) and "conll-flat" not in args.units
    assert quick.epochs < full.epochs and len(quick.seeds) < len(full.seeds)
    assert all(0 < quick.train_rows[d] < (full.train_rows[d] or math.inf) for d in tu.DATA)


def test_explicit_options_win_over_the_preset():
    a = bt.parse_args(["--quick", "--seeds", "3", "4", "--epochs", "0.5", "--train-rows",
                       "squad=10", "conll=0", "--only", "squad,speed", "--max-seq-length", "96"])
    assert (a.seeds, a.epochs, a.max_seq_length) == ([3, 4], 0.5, 96)
    assert a.train_rows == {**bt.PRESETS["quick"]["train_rows"], "squad": 10, "conll": 0}
    assert a.units == ["squad", "tput-ner", "tput-squad"]  # run order, parts expanded
    assert bt.parse_args(["--only", "conll"]).units == ["chunk", "conll-hier"]
    assert bt.parse_args(["--only", "conll,conll-flat"]).units == ["chunk", "conll-hier",
                                                                   "conll-flat"]


@pytest.mark.parametrize("argv, message", [
    (["--only", "nerr"], "did you mean 'ner'"),
    (["--seeds", "1", "1"], "repeats a seed"),
    (["--train-rows", "squad=ten"], "DATA=N"),
    (["--dev-rows", "wiki=3"], "DATA=N"),
    (["--arms", "mtdnn,trainer"], "--arms: mtdnn,trainer; choose from mtdnn, hf"),
    (["--arms", ","], "--arms: none given"),
])
def test_bad_options_exit_with_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        bt.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_unit_overrides(tmp_path):
    args = bt.parse_args(["--more-dir", "/data", "--hf-group-by-length"])
    cfg = {u: tu.unit_config(args, u, "hf", 2, tmp_path) for u in tu.UNITS}
    assert "tasks.commonsenseqa.batch_size=6" in cfg["csqa"]["overrides"]  # 6 x 5 = 30 sequences
    assert "tasks.pos.layer=null" in cfg["pos"]["overrides"]
    assert not any("layer" in o for o in cfg["conll-hier"]["overrides"])
    assert "tasks.squad.max_train_examples=4000" in cfg["squad"]["overrides"]
    assert "max_seq_length=384" in cfg["squad"]["overrides"]
    assert "tasks.squad.max_train_examples=960" in cfg["tput-squad"]["overrides"]
    assert "train.epochs=1.0" in cfg["tput-squad"]["overrides"]
    assert "seed=1" in cfg["tput-ner"]["overrides"]  # repeats share the first seed
    assert {cfg[u]["hf_sampling"] for u in tu.UNITS} == {"group_by_length"}
    assert tu.unit_config(bt.parse_args([]), "ner", "hf", 1, tmp_path)["hf_sampling"] == "random"
    assert cfg["ner"]["run_dir"] == str(tmp_path / "runs" / "ner" / "hf" / "seed2")
    assert tu.unit_key("tput-ner", "mtdnn", 3) == "tput-ner/mtdnn/rep3"
    # --mtdnn-random-batches: mtdnn's quality and conll runs only, so the HF arm's stored runs
    # (same settings) stay valid and the speed units keep mtdnn's grouping
    random = bt.parse_args(["--more-dir", "/data", "--mtdnn-random-batches"])
    off = "train.group_by_length=false"
    assert off in tu.unit_config(random, "ner", "mtdnn", 1, tmp_path)["overrides"]
    assert off in tu.unit_config(random, "conll-hier", "mtdnn", 1, tmp_path)["overrides"]
    assert off not in tu.unit_config(random, "tput-ner", "mtdnn", 1, tmp_path)["overrides"]
    # the speed units time mtdnn's grouped batches against the Trainer's group_by_length,
    # whatever the task type's default
    on = "tasks.ner.group_by_length=true"
    assert on in tu.unit_config(random, "tput-ner", "mtdnn", 1, tmp_path)["overrides"]
    assert on not in tu.unit_config(random, "ner", "mtdnn", 1, tmp_path)["overrides"]
    assert tu.unit_config(random, "ner", "hf", 1, tmp_path)["settings"] == \
        tu.unit_config(bt.parse_args(["--more-dir", "/data"]), "ner", "hf", 1, tmp_path)["settings"]


def test_unit_specs_load_with_the_real_data(more, tmp_path):
    args = bt.parse_args(["--more-dir", str(more), "--only", "quality,conll,conll-flat"])
    layers = {}
    for unit in args.units:
        spec = tu.unit_spec(tu.unit_config(args, unit, "mtdnn", 1, tmp_path))
        layers[unit] = {t.name: t.layer for t in spec.tasks}
        assert spec.train.eval_every > 10**8 and spec.train.learning_rate == 1e-4
        trained = tu.train_only(spec, tmp_path / "run")
        assert all(set(t.files) == {"train"} for t in trained.tasks)
    assert layers["conll-hier"] == {"ner": None, "pos": 2, "chunk": 4}
    assert layers["conll-flat"] == layers["pos"] | layers["ner"] | layers["chunk"] == {
        "ner": None, "pos": None, "chunk": None}


# ---- estimate and aggregation (crafted numbers) --------------------------------------------------


def test_padded_tokens_by_hand():
    lengths = [[1], [3], [2], [4]]
    # grouped, one window: 4, 3 | 2, 1 -> 2 x 4 + 2 x 2
    assert tp.padded_tokens(lengths, 2, grouped=True) == 12
    assert tp.padded_tokens(lengths, 4, grouped=False) == 16
    assert tp.padded_tokens(lengths, 2, grouped=False) >= 12
    assert tp.padded_tokens([[2, 5], [1, 1]], 2, grouped=False) == 4 * 5  # choices pad together


def test_each_arm_is_estimated_with_its_padding():
    """mtdnn's grouping per task (a type's default or the spec's setting), the Trainer's random
    batches: SQuAD is grouped, NER is not unless asked."""
    args = bt.parse_args([])

    def estimates(unit: str, task: str, mtdnn_args=args) -> tuple[float, float]:
        sizes = {task: {"padded_grouped": 1000, "padded_random": 2500, "dev_tokens": 360}}
        return tuple(tp.estimate_run(tu.unit_config(a, unit, arm, 1, Path("/tmp")), sizes, 2.0)
                     for a, arm in ((mtdnn_args, "mtdnn"), (args, "hf")))

    mtdnn, hf = estimates("squad", "squad")
    assert hf - mtdnn == pytest.approx(2 * 1500 / bqs.RATE_TRAIN_TOKENS_S)
    mtdnn, hf = estimates("ner", "ner")
    assert hf == mtdnn
    mtdnn, hf = estimates("ner", "ner", bt.parse_args(["--mtdnn-random-batches"]))
    assert hf == mtdnn


def quality_result(metrics: dict, train_s: float = 10.0) -> dict:
    return {"metrics": metrics, "baselines": {t: dict.fromkeys(m, 0.25) for t, m in
                                              metrics.items()},
            "train": {"steps": 4, "train_rows": 64, "train_tokens": 2000, "train_s": train_s},
            "eval_s": 1.0, "child_wall_s": 20.0}


def test_grouped_tasks_read_the_code_defaults_the_overrides_do_not_show(tmp_path):
    args = bt.parse_args([])
    grouped = {(unit, arm): tu.grouped_tasks(tu.unit_config(args, unit, arm, 1, tmp_path))
               for unit in ("ner", "squad", "conll-hier", "tput-ner") for arm in tu.ARMS}
    assert grouped == {("ner", "mtdnn"): [], ("ner", "hf"): [],  # token classification: random
                       ("squad", "mtdnn"): ["squad"], ("squad", "hf"): [],
                       ("conll-hier", "mtdnn"): [], ("conll-hier", "hf"): [],
                       ("tput-ner", "mtdnn"): ["ner"], ("tput-ner", "hf"): ["ner"]}


@pytest.mark.parametrize("stored, refused", [(["ner"], True), ([], False), (None, False)])
def test_a_stored_result_of_another_grouping_is_refused(more, tmp_path, capsys, stored,
                                                        refused):
    """A result stored with the same overrides but another length grouping (a code default
    changed in between) stops the run; one stored before results recorded it is kept."""
    argv = ["--quick", "--only", "ner", "--seeds", "1", "--out", str(tmp_path), "--more-dir",
            str(more), "--dry-run"]
    cfg = tu.unit_config(bt.parse_args(argv), "ner", "mtdnn", 1, tmp_path)
    result = {"settings": cfg["settings"], **({} if stored is None else {"grouped": stored})}
    br.ResultStore(tmp_path / "results").put(tu.unit_key("ner", "mtdnn", 1), result)
    if refused:
        with pytest.raises(SystemExit, match="other settings or another length grouping "
                                             r"\(ner/mtdnn/seed1\)"):
            bt.main(argv)
    else:
        bt.main(argv)
        assert "ner/mtdnn/seed1" in capsys.readouterr().out


def test_arms_trains_only_the_arms_named_and_the_plan_says_what_waits(more, tmp_path, capsys):
    argv = ["--quick", "--only", "ner", "--seeds", "1", "2", "--out", str(tmp_path),
            "--more-dir", str(more), "--arms", "mtdnn", "--dry-run"]
    args = bt.parse_args(argv)
    assert args.arms == ["mtdnn"] and bt.parse_args([]).arms == list(tu.ARMS)
    cfg = tu.unit_config(args, "ner", "mtdnn", 1, tmp_path)
    br.ResultStore(tmp_path / "results").put(tu.unit_key("ner", "mtdnn", 1), {
        "settings": cfg["settings"], "grouped": tu.grouped_tasks(cfg)})
    bt.main(argv)
    out = capsys.readouterr().out
    assert "plan: 4 runs, 1 already stored, 2 left to another --arms:" in out
    state = dict(re.match(r"  (\S+) +(.+?)   ", line).groups()  # key, state, then the sizes
                 for line in out.splitlines() if line.startswith("  ner/"))
    assert re.fullmatch(r"~\d+\.\d min", state.pop("ner/mtdnn/seed2"))  # the only run to train
    assert state == {"ner/mtdnn/seed1": "stored", "ner/hf/seed1": "not now",
                     "ner/hf/seed2": "not now"}


def test_quality_table_means_paired_differences_and_interval():
    results = {}
    for seed, (a, b) in enumerate(((0.80, 0.78), (0.82, 0.80), (0.84, 0.79)), start=1):
        results[("ner", "mtdnn", seed)] = quality_result({"ner": {"entity_f1": a}})
        results[("ner", "hf", seed)] = quality_result({"ner": {"entity_f1": b}}, 20.0)
    results[("ner", "mtdnn", 4)] = quality_result({"ner": {"entity_f1": 0.5}})  # unpaired
    table = trep.quality_table(trep.collect(results), ["ner"])
    row = table.splitlines()[2].split(" | ")
    _, low, high = t_interval([2.0, 2.0, 5.0])
    assert row[1:] == ["entity F1", "3", br.fmt_mean_std([0.80, 0.82, 0.84, 0.5]),
                       "79.0 ± 1.0", "+3.0 ± 1.7", f"[{low:+.1f}, {high:+.1f}]", "25.0 |"]
    cost = trep.cost_table(trep.collect(results), ["ner"]).splitlines()
    assert cost[2].split(" | ")[1:7] == ["mtdnn", "4", "64", "2,000", "10 ± 0", "200 ± 0"]
    assert cost[3].split(" | ")[5:7] == ["20 ± 0", "100 ± 0"]


def test_interval_needs_two_seeds():
    assert trep.fmt_interval([0.01]) == "-"
    assert trep.fmt_interval([0.01, 0.03]) == "[-10.7, +14.7]"  # 2 ± 12.706 x 1.414 / 1.414


def test_conll_table_pairs_each_task_alone_with_the_run_together():
    results = {}
    for seed in (1, 2):
        results[("ner", "mtdnn", seed)] = quality_result({"ner": {"entity_f1": 0.80}}, 10.0)
        results[("pos", "mtdnn", seed)] = quality_result({"pos": {"token_accuracy": 0.90}}, 10.0)
        results[("chunk", "mtdnn", seed)] = quality_result(
            {"chunk": {"entity_f1": 0.85, "token_accuracy": 0.88}}, 10.0)
        results[("conll-hier", "mtdnn", seed)] = quality_result(
            {"ner": {"entity_f1": 0.81 + seed / 100}, "pos": {"token_accuracy": 0.90},
             "chunk": {"entity_f1": 0.85, "token_accuracy": 0.88}}, 25.0)
    lines = trep.conll_table(trep.collect(results)).splitlines()
    assert lines[0].startswith("| task | metric | alone | conll-hier | Δ conll-hier − alone")
    ner = lines[2].split(" | ")
    assert ner[2:6] == ["80.0 ± 0.0", "82.5 ± 0.7", "+2.5 ± 0.7", trep.fmt_interval([0.02, 0.03])]
    assert lines[-1].split(" | ")[2:4] == ["30 ± 0", "25 ± 0"]  # the three alone, together
    assert "conll-flat" not in lines[0]


def test_conll_table_pairs_hierarchical_with_flat_when_both_ran():
    results = {}
    for seed in (1, 2, 3):
        results[("ner", "mtdnn", seed)] = quality_result({"ner": {"entity_f1": 0.80}}, 10.0)
        for unit, ner in (("conll-hier", 0.70 + seed / 100), ("conll-flat", 0.75)):
            results[(unit, "mtdnn", seed)] = quality_result(
                {"ner": {"entity_f1": ner}, "pos": {"token_accuracy": 0.9}}, 25.0)
    results[("conll-flat", "mtdnn", 4)] = quality_result({"ner": {"entity_f1": 0.1}}, 25.0)
    lines = trep.conll_table(trep.collect(results)).splitlines()
    assert lines[0].split(" | ")[-3:] == ["Δ conll-hier − conll-flat", "95% CI of Δ",
                                          "baseline |"]
    ner = lines[2].split(" | ")
    # hier − flat per seed: -4, -3, -2 points (seed 4 has no hierarchical run: unpaired)
    assert ner[-3:-1] == ["-3.0 ± 1.0", trep.fmt_interval([-0.04, -0.03, -0.02])]
    assert ner[5] == trep.fmt_interval([-0.09, -0.08, -0.07])  # hier − alone
    assert len(lines[-1].split(" | ")) == len(lines[0].split(" | "))  # the time row


def speed_result(samples: float, tokens: float) -> dict:
    steady = {"seconds": 1.0, "steps": 9, "samples_per_s": samples, "real_tokens_per_s": tokens,
              "padded_tokens_per_s": tokens * 1.25, "pad_fraction": 0.2, "s_per_step": 0.5}
    return {"steady": steady, "totals": {}, "child_wall_s": 5.0}


def test_speed_tables_take_medians_over_repeats_and_per_repeat_ratios():
    results = {("tput-ner", "mtdnn", r): speed_result(s, t) for r, (s, t) in
               enumerate(((40.0, 900.0), (50.0, 1000.0), (60.0, 1100.0)), start=1)}
    results.update({("tput-ner", "hf", r): speed_result(s, t) for r, (s, t) in
                    enumerate(((20.0, 1000.0), (25.0, 1000.0), (50.0, 1000.0)), start=1)})
    table, ratios = trep.speed_rows(trep.collect(results), ["tput-ner"])
    assert table.splitlines()[2].split(" | ")[1:] == ["mtdnn", "3", "9", "0.5", "50", "1,000",
                                                      "1,250", "20 |"]
    assert ratios.splitlines()[2] == "| tput-ner | 3 | 2 | 1 |"  # medians of 2, 2, 1.2 / .9, 1, 1.1


def test_report_renders_every_part():
    results = {("ner", "mtdnn", 1): quality_result({"ner": {"entity_f1": 0.8}}),
               ("ner", "hf", 1): quality_result({"ner": {"entity_f1": 0.7}}),
               ("conll-hier", "mtdnn", 1): quality_result({"ner": {"entity_f1": 0.8}}),
               ("tput-ner", "mtdnn", 1): speed_result(50.0, 1000.0),
               ("tput-ner", "hf", 1): speed_result(40.0, 1000.0)}
    sizes = {"train_rows": 10, "train_features": 11, "dev_rows": 5, "dev_features": 5}
    args = bt.parse_args(["--only", "ner,conll-hier,tput-ner"])
    info = {"args": vars(args), "machine": {"cpu": "c", "logical_cores": 2, "usable_cores": 2,
                                            "torch_threads": 2, "torch": "t",
                                            "transformers": "x", "python": "p"},
            "command": "cmd", "units": args.units, "summary": "s.json",
            "sizes": {"ner": {"ner": sizes}, "conll-hier": {"ner": sizes}}}
    text = trep.report(results, info)
    for heading in ("#### Quality", "#### CoNLL-2003", "#### Training throughput"):
        assert heading in text
    assert "- `ner` (CoNLL-2003 NER): CoNLL-2003 English, train 10 of 14,041 sentences" in text
    assert "random batches, run_ner/run_qa/run_swag's default" in text
    # the speed part names the data of the units that ran, and only those
    assert "One epoch over the first 3,200 CoNLL sentences (NER), batch 32," in text
    assert "SQuAD questions" not in text


# ---- smoke: one unit per task type, both arms, in-process on the tiny BERT -----------------------

SMOKE_ROWS = ["--train-rows", "conll=16", "squad=2", "csqa=6", "goemotions=16",
              "--dev-rows", "conll=6", "squad=2", "csqa=6", "goemotions=8",
              "--speed-rows", "conll=24", "squad=2"]


def smoke_args(encoder: str, more: Path, *only: str):
    # 128 positions in the tiny BERT: SQuAD windows of 128 overlapping by 16
    return bt.parse_args(["--encoder", encoder, "--more-dir", str(more), "--batch-size", "16",
                          "--max-seq-length", "128", "--doc-stride", "16", "--seeds", "1",
                          "--epochs", "1", "--only", ",".join(only), *SMOKE_ROWS])


@pytest.fixture(scope="module")
def spied():
    """Every call of a task type's predictions and score, per arm."""
    from mtdnn.tasks import task_type

    calls: dict[str, list] = {"arm": [None]}
    patch = pytest.MonkeyPatch()
    for name in ("token_classification", "extractive_qa", "multiple_choice",
                 "multilabel_classification"):
        kind = task_type(name)

        def predictions(outputs, dataset, examples, _orig=kind.predictions, _name=name):
            calls.setdefault((calls["arm"][0], _name, "outputs"), []).append(
                (outputs, list(dataset["length"])))
            return _orig(outputs, dataset, examples)

        def score(metrics, preds, examples, _orig=kind.score, _name=name):
            values = _orig(metrics, preds, examples)
            calls.setdefault((calls["arm"][0], _name, "score"), []).append(values)
            return values

        patch.setattr(kind, "predictions", predictions)
        patch.setattr(kind, "score", score)
    yield calls
    patch.undo()


@pytest.mark.parametrize("unit", ["ner", "squad", "csqa", "goemotions"])
def test_both_arms_train_the_same_features_and_score_through_the_same_path(
        unit, tiny_bert, more, tmp_path, one_thread, spied):
    from mtdnn.tasks import task_type

    args = smoke_args(tiny_bert, more, unit)
    task = tu.unit_spec(tu.unit_config(args, unit, "mtdnn", 1, tmp_path)).tasks[0]
    results = {}
    for arm in tu.ARMS:
        spied["arm"][0] = arm
        results[arm] = trun.run(tu.unit_config(args, unit, arm, 1, tmp_path))
    a, b = results["mtdnn"], results["hf"]
    # the same training features, batches and steps: one epoch over the same rows
    keys = ("train_rows", "train_tokens", "train_batches", "steps")
    assert [a["train"][k] for k in keys] == [b["train"][k] for k in keys]
    assert a["train"]["steps"] == b["planned_steps"] and 1 <= b["planned_steps"] <= 3
    assert a["train"]["train_rows"] == a["sizes"][task.name]["train_features"]
    assert a["sizes"] == b["sizes"] and a["baselines"] == b["baselines"]
    # both scored by the type's own score (first call; a baseline may score through it too), on
    # outputs of the type's shape
    for arm, r in results.items():
        values = spied[(arm, task.type, "score")][0]
        assert values == r["metrics"][task.name]
        assert set(values) == set(task.metrics or task_type(task.type).default_metrics)
        assert all(0 <= v <= 1 for v in values.values())
        (outputs, lengths), = spied[(arm, task.type, "outputs")]
        assert len(outputs) == r["sizes"][task.name]["dev_features"] == len(lengths)
        for out, length in zip(outputs, lengths):
            assert isinstance(out, np.ndarray) and out.dtype == np.float32
            assert out.shape == {
                "token_classification": (length, 9), "extractive_qa": (length, 2),
                "multiple_choice": (5,), "multilabel_classification": (28,)}[task.type]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("best"))


def test_the_mtdnn_arm_scores_what_train_itself_reports(tiny_bert, more, tmp_path, one_thread):
    """The benchmark scores mtdnn's final checkpoint with the HF arm's code; `train()` with the dev
    split and one evaluation at its last step reports the same metrics (same seed, same model)."""
    import dataclasses

    from mtdnn.trainer import train

    cfg = tu.unit_config(smoke_args(tiny_bert, more, "ner"), "ner", "mtdnn", 1, tmp_path)
    spec = dataclasses.replace(tu.unit_spec(cfg), output_dir=str(tmp_path / "own"))
    own = train(spec, progress=False).metrics["ner"]["dev"]
    assert trun.run(cfg)["metrics"]["ner"] == pytest.approx(own, abs=1e-9)


@pytest.fixture(scope="module")
def tiny_bert6(tmp_path_factory, tiny_tokenizer) -> str:
    """The tiny BERT with 6 layers: conll2003.yaml's heads read layers 2 and 4."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert6"), tiny_tokenizer,
                           num_hidden_layers=6)


def test_hierarchical_conll_run_scores_the_three_tasks(tiny_bert6, more, tmp_path, one_thread):
    args = smoke_args(tiny_bert6, more, "conll-hier")
    r = trun.run(tu.unit_config(args, "conll-hier", "mtdnn", 1, tmp_path))
    assert set(r["metrics"]) == {"ner", "pos", "chunk"} and r["grouped"] == []
    assert set(r["metrics"]["pos"]) == {"token_accuracy"}
    sizes = r["sizes"]["ner"]
    assert r["sizes"]["pos"] == r["sizes"]["chunk"] == sizes
    # proportional sampler: each task's features once per epoch
    assert r["train"]["train_rows"] == 3 * sizes["train_features"]
    assert r["train"]["steps"] == 3 * bqs.batches(sizes["train_features"], 16)


def test_speed_unit_measures_both_arms_over_the_same_epoch(tiny_bert, more, tmp_path,
                                                           one_thread):
    args = smoke_args(tiny_bert, more, "tput-ner")
    results = {arm: trun.run(tu.unit_config(args, "tput-ner", arm, 1, tmp_path))
               for arm in tu.ARMS}
    a, b = (results[arm]["totals"] for arm in tu.ARMS)
    assert a["steps"] == b["steps"] == 2 and a["samples"] == b["samples"] == 32
    assert a["real_tokens"] == b["real_tokens"] > 0
    for r in results.values():
        assert r["steady"]["steps"] == 1 and r["steady"]["real_tokens_per_s"] > 0
        assert r["optimizer"].startswith("AdamW")
    assert "steady" in results["hf"] and trep.summary_line(results["hf"]).endswith("real tok/s")
