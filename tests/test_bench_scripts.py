"""The pure parts of the benchmark scripts (scripts/bench_*.py): argument parsing (one shared
builder, bench_common.common_parser), aggregation over seeds, the Markdown tables, and the
strategy overrides, which must load as valid specs. Nothing here trains (tests/test_bench_smoke.py
runs the scripts' children); the scripts are imported from their files (they are not a
package)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import REPO, SPECS, load_script

SCRIPTS = REPO / "scripts"



bq = load_script("bench_quality")
bs = load_script("bench_strategies")
bc = load_script("bench_common")
bqs = load_script("bench_quality_setup")
br = load_script("bench_results")
bt = load_script("bench_throughput")
bo = load_script("bench_overhead")
TASKS = ["rte", "mrpc"]


# ---- the options every script shares -----------------------------------------------------------


@pytest.mark.parametrize("module, lr, out", [
    (bt, 5e-5, "/tmp/BENCHMARKS-throughput.md"), (bo, 5e-5, "/tmp/BENCHMARKS-overhead.md"),
    (bq, 1e-4, "runs/bench_quality"), (bs, 1e-4, "runs/bench_strategies")])
def test_every_script_has_the_common_options(module, lr, out):
    a = module.parse_args([])
    assert (a.glue_dir, a.encoder, a.batch_size, a.lr, a.max_seq_length, a.out, a.child) == (
        bc.default_glue_dir(), bc.MINILM, 32, lr, 128, out, None)
    a = module.parse_args(["--encoder", "enc", "--batch-size", "8", "--lr", "1e-3",
                           "--glue-dir", "g", "--child", "c.json", "r.json"])
    assert (a.encoder, a.batch_size, a.lr, a.glue_dir, a.child) == (
        "enc", 8, 1e-3, "g", ["c.json", "r.json"])


def test_speed_script_options():
    for module, steps, repeats in ((bt, 60, 3), (bo, 20, 1)):
        a = module.parse_args([])
        assert (a.tasks, a.max_rows_per_task, a.seed, a.json, a.steps, a.repeats) == (
            "rte,mrpc,stsb,cola,sst2", 4000, 42, None, steps, repeats)
    assert bt.parse_args([]).methods == "hf-padded,hf-dynamic,mtdnn"
    assert bo.parse_args([]).log_every == 1


# ---- bench_results: aggregation and formatting --------------------------------------------------


def test_mean_std_is_the_sample_std():
    assert br.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert br.mean_std([0.5]) == (0.5, None)
    mean, std = br.mean_std([])
    assert mean != mean and std is None  # NaN


def test_fmt_mean_std():
    assert br.fmt_mean_std([0.60, 0.62]) == "61.0 ± 1.4"
    assert br.fmt_mean_std([0.612]) == "61.2"
    assert br.fmt_mean_std([]) == "-"
    assert br.fmt_mean_std([0.01, 0.03], signed=True) == "+2.0 ± 1.4"
    assert br.fmt_mean_std([-0.0004], signed=True) == "+0.0"  # no "-0.0"
    assert br.fmt_mean_std([-0.0004]) == "0.0"
    assert br.fmt_mean_std([100.0, 110.0], scale=1.0, digits=0) == "105 ± 7"


def _result(rte, acc, f1, train_s=100.0, wall=150.0):
    return {"metrics": {"rte": {"accuracy": rte}, "mrpc": {"accuracy": acc, "f1": f1}},
            "train_s": train_s, "child_wall_s": wall, "peak_rss_mb": 2000.0}


RESULTS = {("mtdnn-single", 1): _result(0.60, 0.70, 0.80, 100.0, 150.0),
           ("mtdnn-single", 2): _result(0.62, 0.74, 0.82, 110.0, 160.0),
           ("mtdnn-multi", 1): _result(0.65, 0.71, 0.81, 90.0, 120.0),
           ("mtdnn-multi", 2): _result(0.63, 0.73, 0.83, 94.0, 124.0)}


def test_seed_values_and_paired_differences():
    values = br.seed_values(RESULTS, TASKS)
    assert values["mtdnn-single"][1] == pytest.approx(
        {"rte/accuracy": 0.60, "mrpc/accuracy": 0.70, "mrpc/f1": 0.80, "mean": 0.65})
    diff = br.paired_differences(values, "mtdnn-multi", "mtdnn-single")
    assert sorted(diff) == [1, 2]
    assert diff[1] == pytest.approx(
        {"rte/accuracy": 0.05, "mrpc/accuracy": 0.01, "mrpc/f1": 0.01, "mean": 0.03})
    assert diff[2]["mean"] == pytest.approx(0.0)
    # A unit that lacks a task (failed, partial) is left out; differences use common seeds only.
    partial = {**RESULTS, ("mtdnn-multi", 3): {"metrics": {"rte": {"accuracy": 0.5}}}}
    assert sorted(br.seed_values(partial, TASKS)["mtdnn-multi"]) == [1, 2]
    assert br.paired_differences(values, "mtdnn-multi", "hf-single") == {}


def test_metric_columns_and_main_score():
    assert br.metric_columns(["rte", "mrpc", "stsb", "cola"]) == [
        ("rte", "accuracy"), ("mrpc", "accuracy"), ("mrpc", "f1"), ("stsb", "pearson"),
        ("cola", "matthews_correlation")]
    # MRPC's main metric is glue.yaml's first: accuracy, not F1.
    assert br.main_score({"rte": {"accuracy": 0.6}, "mrpc": {"accuracy": 0.7, "f1": 0.9}},
                         TASKS) == pytest.approx(0.65)


def test_loss_curves_and_loop_seconds_from_a_train_log():
    records = [{"step": 5, "epoch": 0.5, "elapsed_s": 3.0, "loss/rte": 0.7, "loss/mrpc": 0.6},
               {"step": 10, "epoch": 1.0, "elapsed_s": 6.5, "loss/rte": 0.5},
               {"step": 10, "score": 0.6, "dev/rte/accuracy": 0.6}]
    assert br.loss_curves(records) == {"rte": [[0.5, 0.7], [1.0, 0.5]], "mrpc": [[0.5, 0.6]]}
    assert br.loss_curves(records, epoch_offset=2.0)["mrpc"] == [[2.5, 0.6]]
    assert br.loop_seconds(records) == 6.5
    assert br.loop_seconds([]) is None


def test_result_store_round_trip(tmp_path):
    store = br.ResultStore(tmp_path)
    assert store.get("m/seed1") is None
    store.put("m/seed1", {"a": 1})
    assert store.get("m/seed1") == {"a": 1}
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["seed1.json"]  # no temporary left
    store.delete("m/seed1")
    assert store.get("m/seed1") is None


def test_base_overrides_evaluate_at_the_end_only():
    over = bqs.base_overrides(glue_dir=None, encoder="enc", seed=3, lr=1e-4, batch_size=16,
                              max_seq_length=64, warmup_ratio=0.1, weight_decay=0.01,
                              tasks=TASKS, max_train=100)
    assert f"train.eval_every={bqs.HUGE}" in over and "seed=3" in over
    assert over[-2:] == ["tasks.rte.max_train_examples=100", "tasks.mrpc.max_train_examples=100"]
    assert not any("max_train_examples" in o for o in bqs.base_overrides(
        glue_dir=None, encoder="enc", seed=3, lr=1e-4, batch_size=16, max_seq_length=64,
        warmup_ratio=0.1, weight_decay=0.01, tasks=TASKS, max_train=0))


# ---- bench_quality -----------------------------------------------------------------------------


def test_quality_args_full_and_quick_presets():
    full = bq.parse_args([])
    assert (full.seeds, full.max_train, full.epochs, full.ft_epochs) == ([1, 2, 3], 0, 3.0, 1.0)
    assert full.methods == list(bq.METHODS) and full.tasks == ["rte", "mrpc", "stsb", "cola"]
    assert full.ft_lr == full.lr == 1e-4
    quick = bq.parse_args(["--quick"])
    assert (quick.seeds, quick.max_train, quick.epochs) == ([1, 2], 600, 2.0)
    # Explicit options win over the preset.
    mixed = bq.parse_args(["--quick", "--seeds", "7", "--epochs", "1", "--ft-lr", "2e-5"])
    assert (mixed.seeds, mixed.epochs, mixed.max_train, mixed.ft_lr) == ([7], 1.0, 600, 2e-5)


def test_quality_args_order_methods_and_reject_mistakes(capsys):
    args = bq.parse_args(["--methods", "mtdnn-multi+ft", "hf-single", "mtdnn-multi"])
    assert args.methods == ["hf-single", "mtdnn-multi", "mtdnn-multi+ft"]  # ft after multi
    for bad, message in ((["--tasks", "rte", "nope"], "unknown task(s) ['nope']"),
                         (["--seeds", "1", "1"], "--seeds repeats a seed: [1, 1]"),
                         (["--methods", "hf"], "invalid choice: 'hf'")):
        with pytest.raises(SystemExit):
            bq.parse_args(bad)
        assert message in capsys.readouterr().err


def test_quality_table_exact():
    values = br.seed_values(RESULTS, TASKS)
    table = bq.quality_table(values, ["mtdnn-single", "mtdnn-multi"], TASKS,
                             bq.method_times(RESULTS))
    assert table == (
        "| method | seeds | rte acc | mrpc acc | mrpc F1 | mean | train s | wall s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|\n"
        "| mtdnn-single | 2 | 61.0 ± 1.4 | 72.0 ± 2.8 | 81.0 ± 1.4 | 66.5 ± 2.1 | 105 ± 7 "
        "| 155 ± 7 |\n"
        "| mtdnn-multi | 2 | 64.0 ± 1.4 | 72.0 ± 1.4 | 82.0 ± 1.4 | 68.0 ± 0.0 | 92 ± 3 "
        "| 122 ± 3 |\n"
        "| Δ mtdnn-multi − mtdnn-single | 2 | +3.0 ± 2.8 | +0.0 ± 1.4 | +1.0 ± 0.0 "
        "| +1.5 ± 2.1 |  |  |")


def test_quality_report_starts_with_command_and_machine():
    values = br.seed_values(RESULTS, TASKS)
    args = bq.parse_args(["--tasks", "rte", "mrpc", "--seeds", "1", "2", "--methods",
                          "mtdnn-single", "mtdnn-multi"])
    machine = {"cpu": "Test CPU", "logical_cores": 2, "usable_cores": 2, "torch_threads": 2,
               "torch": "2.x", "transformers": "5.x", "python": "3.11"}
    text = bq.report(values, bq.method_times(RESULTS), {
        "args": vars(args), "machine": machine, "command": "python scripts/bench_quality.py",
        "train_rows": {"rte": 1000, "mrpc": 1000}, "dev_rows": {"rte": 277, "mrpc": 408},
        "summary": "runs/bench_quality/summary.json", "plot": "docs/quality_loss.png",
        "plot_seed": 1})
    lines = text.splitlines()
    assert lines[2] == "Command: `python scripts/bench_quality.py`"
    assert lines[4].startswith("Machine: Test CPU, 2 logical cores (2 usable), torch 2.x")
    assert "trains 6,000 examples per seed" in text  # 2 tasks x 1000 rows x 3 epochs
    assert "adds 1 epoch(s) per task" in text and "(2,000 examples more)" in text
    assert "![training loss per task, seed 1](docs/quality_loss.png)" in text


def test_quality_estimate_counts_tokens_and_runs():
    sizes = bqs.Sizes(train_rows={"rte": 10, "mrpc": 10},
                     train_tokens={"rte": 2 * bqs.RATE_TRAIN_TOKENS_S, "mrpc": 0},
                     dev_rows={"rte": 1, "mrpc": 1},
                     dev_tokens={"rte": bqs.RATE_EVAL_TOKENS_S, "mrpc": 0})
    fixed = bqs.OVERHEAD_CHILD_S + 1.0  # the child, and 1 s of evaluation
    assert bq.estimate_unit("mtdnn-multi", sizes, 3.0, 1.0) == pytest.approx(
        fixed + bqs.OVERHEAD_RUN_S + 6.0)
    assert bq.estimate_unit("mtdnn-single", sizes, 3.0, 1.0) == pytest.approx(
        fixed + 2 * bqs.OVERHEAD_RUN_S + 6.0)
    assert bq.estimate_unit("mtdnn-multi+ft", sizes, 3.0, 1.0) == pytest.approx(
        fixed + 2 * bqs.OVERHEAD_RUN_S + 2.0)
    assert bq.estimate_unit("hf-single", sizes, 3.0, 1.0) == pytest.approx(
        fixed + 2 * bqs.OVERHEAD_RUN_S + 6.0 * bqs.HF_TRAINER_SLOWDOWN)


# ---- bench_strategies --------------------------------------------------------------------------


def test_strategy_args():
    args = bs.parse_args([])
    assert (args.seeds, args.max_train, args.epochs) == ([1], 0, 3.0)
    assert args.strategies == list(bs.STRATEGIES)
    quick = bs.parse_args(["--quick", "--strategies", "pcgrad", "joint"])
    assert (quick.max_train, quick.epochs) == (1000, 2.0)
    assert quick.strategies == ["alternating", "joint", "pcgrad"]  # baseline first, table order
    for bad in (["--tasks", "rte"], ["--strategies", "nope"], ["--seeds", "2", "2"]):
        with pytest.raises(SystemExit):
            bs.parse_args(bad)


GLUE4 = ("rte", "mrpc", "stsb", "cola")


def test_budget_is_the_same_for_every_step_mode():
    # Full GLUE rows at batch 32: 78, 115, 180, 268 batches per pass.
    b = bs.Budget(GLUE4, {"rte": 78, "mrpc": 115, "stsb": 180, "cola": 268}, 3.0)
    assert b.alternating_steps == 1923  # ceil(3 x 641)
    assert b.joint_steps == 483  # ceil(3 x ceil(641 / 4)): trainer.py's joint epoch
    assert b.dwa_period == 192
    # Stage 1 (stsb + mrpc: 295 batches a pass), stage 2 (all: 641): the B steps split 295:641.
    assert b.stages() == [{"tasks": ["stsb", "mrpc"], "max_steps": 606},
                          {"tasks": ["rte", "cola"], "max_steps": 1317}]
    assert bs._flow(b.stages()) == ("[{tasks: [stsb, mrpc], max_steps: 606}, "
                                    "{tasks: [rte, cola], max_steps: 1317}]")
    assert bs.budget_overrides(["train.step_mode=joint"], b) == [
        "train.epochs=3.0", "train.max_steps=483"]
    assert bs.budget_overrides([], b) == ["train.epochs=3.0", "train.max_steps=1923"]
    assert bs.budget_overrides([f"stages={bs._flow(b.stages())}"], b) == ["train.epochs=3.0"]


def _strategy_spec(name: str, budget):
    from mtdnn.spec import load_spec

    own = bs.strategy_overrides(name, budget)
    overrides = bqs.base_overrides(glue_dir=None, encoder=bc.MINILM, seed=1, lr=1e-4,
                                   batch_size=32, max_seq_length=128, warmup_ratio=0.1,
                                   weight_decay=0.01, tasks=list(GLUE4), max_train=1000)
    # data_dir empty: the Hub sources, so that no data file is needed to check the spec.
    return load_spec(SPECS / "glue.yaml", overrides + bs.budget_overrides(own, budget) + own,
                     tasks=list(GLUE4))


BUDGET = bs.Budget(GLUE4, dict.fromkeys(GLUE4, 32), 1.0)


@pytest.mark.parametrize("name", list(bs.STRATEGIES))
def test_every_strategy_loads_as_a_valid_spec(name):
    spec = _strategy_spec(name, BUDGET)
    t = spec.train
    joint = name in ("joint", "gradnorm", "pcgrad", "cagrad")
    assert t.step_mode == ("joint" if joint else "alternating")
    if name == "continual":
        assert [s.tasks for s in spec.stages] == [("stsb", "mrpc"), ("rte", "cola")]
        assert sum(s.max_steps for s in spec.stages) == BUDGET.alternating_steps == 128
    else:
        assert t.max_steps == (BUDGET.joint_steps if joint else BUDGET.alternating_steps)
    expected = {
        "uncertainty": lambda: t.loss_weighting == "uncertainty" and t.weighting_lr == 1e-2,
        "dwa": lambda: t.loss_weighting == "dwa" and t.dwa_period == 12,
        "gradnorm": lambda: t.loss_weighting == "gradnorm",
        "pcgrad": lambda: t.gradient_surgery == "pcgrad",
        "cagrad": lambda: t.gradient_surgery == "cagrad",
        "main_ratio": lambda: (t.sampler, t.main_task, t.main_ratio) == ("main_ratio", "rte", 1),
        "annealed": lambda: t.sampler == "annealed",
        "soft": lambda: t.sharing == "soft" and all(x.encoder_group is None for x in spec.tasks),
        "soft_groups": lambda: [x.encoder_group for x in spec.tasks] == ["nli", "nli", "sim",
                                                                         "sim"],
        "hierarchical": lambda: [x.layer for x in spec.tasks] == [None, None, None, 3],
        "task_embedding": lambda: spec.task_embedding,
    }
    assert expected.get(name, lambda: True)()


def test_strategy_tables_exact_with_a_failure_and_a_missing_run():
    def ok(rte, acc, f1, steps, secs, rss):
        return {"status": "ok", "metrics": {"rte": {"accuracy": rte},
                                            "mrpc": {"accuracy": acc, "f1": f1}},
                "steps": steps, "train_batches": 100, "train_rows": 3000, "train_s": secs,
                "peak_rss_mb": rss}

    results = {("alternating", 1): ok(0.60, 0.70, 0.80, 100, 60.0, 2400.0),
               ("joint", 1): ok(0.64, 0.69, 0.79, 50, 66.0, 2500.0),
               ("cagrad", 1): {"status": "failed",
                               "error": "ValueError: unknown | strategy\n  'x'"}}
    text = bs.strategy_tables(results, ["alternating", "joint", "pcgrad", "cagrad"], TASKS)
    assert text == (
        "| strategy | seeds | rte acc | mrpc acc | mrpc F1 | mean | Δ mean vs alternating "
        "| s/step | batches/step | s/1k examples | examples trained | peak RSS MiB | status |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        "| alternating | 1 | 60.0 | 70.0 | 80.0 | 65.0 |  | 0.600 | 1.00 | 20.0 | 3,000 "
        "| 2,400 | ok |\n"
        "| joint | 1 | 64.0 | 69.0 | 79.0 | 66.5 | +1.5 | 1.320 | 2.00 | 22.0 | 3,000 "
        "| 2,500 | ok |\n"
        "| pcgrad | 0 | - | - | - | - | - | - | - | - | - | - | not run |\n"
        "| cagrad | 0 | - | - | - | - | - | - | - | - | - | - "
        "| failed: ValueError: unknown / strategy 'x' |\n"
        "\n"
        "Paired per-seed differences to `alternating`:\n"
        "\n"
        "| Δ vs alternating | seeds | rte acc | mrpc acc | mrpc F1 | mean |\n"
        "|---|---:|---:|---:|---:|---:|\n"
        "| joint | 1 | +4.0 | -1.0 | -1.0 | +1.5 |")


def test_short_error_fits_a_table_cell():
    assert bs.short_error("a | b\n  c") == "a / b c"
    assert bs.short_error("x" * 200, limit=10) == "xxxxxxx..."


def test_final_metrics_of_a_run_and_of_a_staged_run():
    run = SimpleNamespace(metrics={"rte": {"dev": {"accuracy": 0.6}}})
    assert bs.final_metrics(run) == {"rte": {"accuracy": 0.6}}
    last = SimpleNamespace(metrics={"rte": {"dev": {"accuracy": 0.7}},
                                    "mrpc": {"dev": {"accuracy": 0.8}}})
    staged = SimpleNamespace(stages=[run, last], metrics={"stage-1": {}, "stage-2": {}})
    assert bs.final_metrics(staged) == {"rte": {"accuracy": 0.7}, "mrpc": {"accuracy": 0.8}}
