"""The benchmark scripts' child processes, run in-process for 2-3 steps on the tiny BERT and a few
real GLUE rows: each observes `mtdnn.trainer.train` through its public hook
(`mtdnn.instrument.Instrument`), so a change of the training loop that the scripts can no longer
observe fails here, not in a 10-minute benchmark. The numbers are not checked (the tiny model's
times are noise), only that every quantity the reports are made of is there and adds up."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, load_script

SCRIPTS = REPO / "scripts"



bc = load_script("bench_common")
bm = load_script("bench_meter")
bqs = load_script("bench_quality_setup")
br = load_script("bench_results")
bt = load_script("bench_throughput")
bo = load_script("bench_overhead")
bq = load_script("bench_quality")
bs = load_script("bench_strategies")

STEPS = 3


def _run_child(module, cfg: dict, workdir: Path, tag: str) -> dict:
    """What bc.run_child does, in this process: the config file in, the result file out."""
    config, result = workdir / f"{tag}.config.json", workdir / f"{tag}.result.json"
    config.write_text(json.dumps(cfg), encoding="utf-8")
    module.child(str(config), str(result))
    return json.loads(result.read_text(encoding="utf-8"))


def _speed_args(module, tiny_bert: str, glue: Path, *extra: str):
    return module.parse_args(["--encoder", tiny_bert, "--glue-dir", str(glue), "--tasks",
                              "rte,stsb", "--max-rows-per-task", "24", "--batch-size", "8",
                              "--max-seq-length", "64", "--steps", str(STEPS), *extra])


@pytest.fixture
def speed_spec(tmp_path, tiny_bert, glue):
    args = _speed_args(bt, tiny_bert, glue)
    spec, path = bt.build_spec(args, tmp_path)
    return args, spec, path


# ---- bench_throughput --------------------------------------------------------------------------


def test_unfused_and_full_methods_are_their_overrides(speed_spec, tmp_path):
    args, _, path = speed_spec
    specs = {m: bt.mtdnn_spec(bt.child_config(m, path, {}, tmp_path, args, 0)).train
             for m in ("mtdnn", "mtdnn-unfused", "mtdnn-full")}
    assert {m: t.optimizer for m, t in specs.items()} == {
        "mtdnn": "adamw_torch_fused", "mtdnn-unfused": "adamw_torch",
        "mtdnn-full": "adamw_torch_fused"}
    assert {m: t.compute_cut for m, t in specs.items()} == {
        "mtdnn": True, "mtdnn-unfused": True, "mtdnn-full": False}
    assert set(bt.MTDNN_OVERRIDES) | {"mtdnn-smart"} == {
        m for m in bt.METHODS if m.startswith("mtdnn")}
    smart = bt.mtdnn_spec(bt.child_config("mtdnn-smart", path, {}, tmp_path, args, 0))
    plain = bt.mtdnn_spec(bt.child_config("mtdnn", path, {}, tmp_path, args, 0))
    assert [(t.name, t.adv_weight) for t in smart.tasks] == [("rte", 1.0), ("stsb", 1.0)]
    assert [t.adv_weight for t in plain.tasks] == [0.0, 0.0]
    assert smart.train == plain.train


def test_throughput_children_measure_alike(speed_spec, tmp_path, one_thread):
    args, spec, path = speed_spec
    sizes, plan = bt.task_plan(spec)
    assert sizes == {"rte": 24, "stsb": 24} and sum(plan.values()) == STEPS
    dims = {"layers": 2, "hidden": 32, "intermediate": 64}
    results = {}
    for m in ("mtdnn", "mtdnn-unfused", "hf-dynamic"):
        r = results[m] = _run_child(bt, bt.child_config(m, path, plan, tmp_path, args, 0),
                                    tmp_path, m)
        runs = r["runs"]
        assert sum(len(run["step_t"]) for run in runs) == STEPS
        # A DataLoader may collate one batch ahead of its step (window_totals matches by order).
        assert all(len(run["batches"]) >= len(run["step_t"]) for run in runs)
        rows, t, real, sumsq = runs[0]["batches"][0]
        assert rows == 8 and 0 < real <= rows * t and real <= sumsq
        steady = bm.rates(bm.window_totals(runs, dims, steady=True), 1.0)
        assert steady["steps"] == STEPS - len(runs) and steady["samples_per_s"] > 0
        assert r["peak_rss_train_mb"] is None or r["peak_rss_train_mb"] > 0
    for m in ("mtdnn", "mtdnn-unfused"):
        assert len(results[m]["runs"]) == 1
        # The tasks mtdnn trained are the plan that the HF Trainer runs follow.
        assert results[m]["tasks"] == {k: v for k, v in plan.items() if v}
    assert [run["name"] for run in results["hf-dynamic"]["runs"]] == [k for k, v in plan.items()
                                                                      if v]
    # The fused kernel by default; the unfused method is torch's default implementation.
    assert results["mtdnn"]["optimizer"] == "AdamW(fused=True, foreach=None)"
    assert results["mtdnn-unfused"]["optimizer"] == "AdamW(fused=None, foreach=None)"


# ---- bench_overhead ----------------------------------------------------------------------------


def test_overhead_child_gives_every_component(speed_spec, tmp_path, one_thread):
    _, _, path = speed_spec
    cfg = {"spec": str(path), "log_every": 1, "output_dir": str(tmp_path / "out")}
    r = _run_child(bo, cfg, tmp_path, "mix")
    assert len(r["fetch"]) == len(r["collate_s"]) == len(r["opt_start"]) == STEPS
    assert r["optimizer"] == "AdamW(fused=True, foreach=None)"
    m = bo.breakdown(r)
    assert set(bo.COMPONENTS) <= set(m)
    assert all(math.isfinite(v) for v in m.values())
    assert 0 < m["collate"] <= m["data"] and m["optimizer"] > 0 and m["bookkeeping"] > 0
    assert m["model"] > 0  # what is left of the step once the others are taken out
    assert m["step"] == pytest.approx(m["model"] + m["optimizer"] + m["data"] + m["bookkeeping"])
    # The log record of every step (log_every=1) is part of what is measured.
    records = br.read_train_log(tmp_path / "out" / "train_log.jsonl")
    assert [r["step"] for r in records if "elapsed_s" in r] == list(range(1, STEPS + 1))


# ---- bench_strategies --------------------------------------------------------------------------


def _quality_overrides(tiny_bert: str, glue: Path, tasks: list[str]) -> list[str]:
    return bqs.base_overrides(glue_dir=str(glue), encoder=tiny_bert, seed=1, lr=1e-4,
                              batch_size=8, max_seq_length=64, warmup_ratio=0.1,
                              weight_decay=0.01, tasks=tasks, max_train=16) + \
        [f"tasks.{t}.max_eval_examples=16" for t in tasks]


@pytest.mark.parametrize("name", ["alternating", "continual"])
def test_strategies_child_counts_what_the_loop_trained(name, tmp_path, tiny_bert, glue,
                                                       one_thread):
    tasks = ["rte", "stsb"]
    budget = bs.Budget(tuple(tasks), {"rte": 1, "stsb": 1}, 1.0)  # 2 steps; stages 1 + 1
    own = bs.strategy_overrides(name, budget)
    overrides = _quality_overrides(tiny_bert, glue, tasks) + bs.budget_overrides(own, budget) + \
        own + [f"output_dir={tmp_path / 'run'}"]
    cfg = {"strategy": name, "seed": 1, "tasks": tasks, "overrides": overrides,
           "output_dir": str(tmp_path / "run"), "keep_checkpoints": False,
           "settings": {"tasks": tasks, "overrides": overrides}}
    r = _run_child(bs, cfg, tmp_path, name)
    assert r["status"] == "ok", r.get("error")
    assert set(r["metrics"]) == set(tasks)
    assert r["steps"] == r["train_batches"] == 2 and r["train_rows"] == 16
    assert r["train_tokens"] > r["train_rows"] and r["train_s"] > 0
    if name == "continual":  # stage 1 trains stsb, stage 2 adds rte; both are scored after it
        assert list(r["stage_metrics"]) == ["stage-1", "stage-2"]
        assert set(r["stage_metrics"]["stage-1"]) == {"stsb"}
        assert set(r["stage_metrics"]["stage-2"]) == set(tasks)
    else:
        assert r["loop_s"] is not None
    assert not list((tmp_path / "run").rglob("best"))  # keep_checkpoints=False


# ---- bench_quality -----------------------------------------------------------------------------


def test_quality_sizes_and_multi_then_finetune_children(tmp_path, tiny_bert, glue, one_thread):
    tasks = ["rte", "stsb"]
    sizes = bqs.split_sizes(str(glue), tasks, 16, tiny_bert, 64)
    assert sizes.train_rows == {"rte": 16, "stsb": 16}
    assert sizes.dev_rows["rte"] > 16 and all(v > 0 for v in sizes.train_tokens.values())
    args = bq.parse_args(["--tasks", *tasks, "--seeds", "1", "--epochs", "1", "--ft-epochs",
                          "1", "--max-train", "16", "--encoder", tiny_bert, "--glue-dir",
                          str(glue), "--batch-size", "8", "--max-seq-length", "64"])
    base = dict(glue_dir=str(glue), encoder=tiny_bert, batch_size=8, max_seq_length=64,
                warmup_ratio=0.1, weight_decay=0.01, tasks=tasks, max_train=16)
    results = {}
    for method in ("mtdnn-multi", "mtdnn-multi+ft"):
        cfg = bq.unit_config(args, method, 1, tmp_path, base)
        cfg["overrides"] += [f"tasks.{t}.max_eval_examples=16" for t in tasks]
        results[method] = _run_child(bq, cfg, tmp_path, bq.slug(method))
    multi, ft = results["mtdnn-multi"], results["mtdnn-multi+ft"]
    assert set(multi["metrics"]) == set(ft["metrics"]) == set(tasks)
    assert multi["runs"][0]["steps"] == 4  # 1 epoch of 2 batches of each task
    assert multi["train_s"] > 0 and set(multi["runs"][0]["loss"]) <= set(tasks)
    assert [run["tasks"] for run in ft["runs"]] == [["rte"], ["stsb"]]


# ---- end to end --------------------------------------------------------------------------------


@pytest.mark.slow
def test_throughput_end_to_end_with_the_unfused_method(tmp_path, tiny_bert, glue):
    """The parent and its child processes, as `--methods ...,mtdnn-unfused` runs them."""
    out = tmp_path / "throughput.md"
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_throughput.py"), "--encoder", tiny_bert,
         "--glue-dir", str(glue), "--tasks", "rte,stsb", "--max-rows-per-task", "24",
         "--batch-size", "8", "--max-seq-length", "64", "--steps", str(STEPS), "--repeats", "1",
         "--methods", "hf-dynamic,mtdnn,mtdnn-unfused", "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert "- `mtdnn`: (c) mtdnn multi-task; optimizer AdamW(fused=True, foreach=None)" in text
    assert "; optimizer AdamW(fused=None, foreach=None)" in text
    assert "| mtdnn-unfused/hf-dynamic |" in text and "warning" not in proc.stdout
    assert "| mtdnn/mtdnn-unfused |" in text  # the lever alone, on the same batches
    # --report-from rebuilds the same report from the stored JSON, without running anything
    again = tmp_path / "again.md"
    bt.main(["--report-from", str(out.with_suffix(".json")), "--out", str(again)])
    assert again.read_text(encoding="utf-8") == text


# ---- bench_inference and probe_hf_gap ----------------------------------------------------------


def test_inference_bench_end_to_end_on_the_tiny_model(tmp_path, tiny_bert, glue):
    """Train, export, the three arms, the CLI and the evaluation orders: every figure is there,
    the pipeline and mtdnn agree on the labels, and sorting does not change the outputs."""
    bi = load_script("bench_inference")
    out = tmp_path / "inference"
    bi.main(["--glue-dir", str(glue), "--out", str(out), "--rows", "40", "--eval-rows", "70",
             "--repeats", "1", "--encoder", tiny_bert, "--markdown", str(tmp_path / "r.md")])
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["rows"] == 40 and report["eval_rows"] == 70
    assert set(report["seconds"]) == {"pipeline", "mtdnn-input-order", "mtdnn-predict"}
    assert all(len(v) == 1 and v[0] > 0 for v in report["seconds"].values())
    assert report["same_labels"] == 40
    assert report["eval_max_diff"] < 1e-4
    # sorting never computes more padded tokens than input order; both cover every real token
    assert report["real_tokens"] <= report["computed"]["mtdnn-predict"] \
        <= report["computed"]["mtdnn-input-order"] == report["computed"]["pipeline"]
    assert report["eval_computed"]["sorted (outputs_of)"] <= report["eval_computed"]["input order"]
    assert "| mtdnn predict (CLI, start-up included, 1 run) | 40 |" in \
        (tmp_path / "r.md").read_text(encoding="utf-8")
    assert bi.padded_tokens([3, 1, 2, 5], 2, [0, 1, 2, 3]) == 3 * 2 + 5 * 2
    assert bi.padded_tokens([3, 1, 2, 5], 2, [3, 0, 2, 1]) == 5 * 2 + 2 * 2


def test_hf_gap_probe_stores_each_run_and_pairs_the_differences(tmp_path, tiny_bert, glue,
                                                                one_thread):
    from mtdnn.metrics import DEFAULT_METRICS

    probe = load_script("probe_hf_gap")
    out = tmp_path / "probe"
    args = ["--glue-dir", str(glue), "--out", str(out), "--encoder", tiny_bert,
            "--max-train", "16", "--seeds", "1"]
    probe.main(args + ["--arms", "hf-random", "mtdnn-single"])
    stored = sorted(p.relative_to(out / "runs").as_posix() for p in (out / "runs").rglob("*.json"))
    assert stored == [f"{arm}/{t}-seed1.json" for arm in ("hf-random", "mtdnn-single")
                      for t in ("mrpc", "rte", "stsb")]
    runs = {p: json.loads((out / "runs" / p).read_text(encoding="utf-8")) for p in stored}
    assert all(r["steps"] == 2 for r in runs.values())  # 16 rows, batch 32, 2 epochs
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))["rows"]
    diff = report["Δ hf-random − mtdnn-single"]["per_task"]
    for task in ("rte", "mrpc", "stsb"):
        info = probe.bc.glue_spec([task], []).tasks[0]
        main = (info.metrics or DEFAULT_METRICS[info.type])[0]
        hf = runs[f"hf-random/{task}-seed1.json"]["metrics"][main]
        mt = runs[f"mtdnn-single/{task}-seed1.json"]["metrics"][main]
        assert diff[task] == [pytest.approx(100 * (hf - mt))]
    # a rerun trains nothing: the report is rebuilt from the stored runs
    before = {p: (out / "runs" / p).stat().st_mtime_ns for p in stored}
    probe.main(args + ["--arms", "hf-random", "mtdnn-single"])
    assert {p: (out / "runs" / p).stat().st_mtime_ns for p in stored} == before


def test_memory_probe_phases_from_the_meters_times():
    pm = load_script("probe_memory")
    samples = [(0.0, 100.0), (1.0, 300.0), (2.0, 250.0), (3.0, 400.0), (4.0, 380.0), (5.0, 390.0),
               (6.0, 500.0), (7.0, 450.0)]
    # a Trainer-like second run: the steps phase spans both
    runs = [{"name": "a", "first_batch_t": 2.0, "step_t": [3.0, 4.0],
             "batches": [[32, 128], [32, 40]]},
            {"name": "b", "first_batch_t": 4.5, "step_t": [5.5], "batches": [[8, 64]]}]
    got = pm.phases(samples, runs)
    assert got["setup"] == {"peak": 300.0, "end": 300.0}
    assert got["steps"] == {"peak": 400.0, "end": 390.0}
    assert got["after"] == {"peak": 500.0, "end": 450.0}
    assert got["peak_phase"] == "after"
    # the highest step window: run a's first step, [2, 3] (400 at t=3)
    assert got["peak_step"] == {"rss": 400.0, "run": "a", "index": 0, "rows": 32, "length": 128}


def test_memory_probe_children_run_under_each_allocator_setting(tmp_path, tiny_bert, glue):
    pm = load_script("probe_memory")
    out = tmp_path / "memory.md"
    pm.main(["--encoder", tiny_bert, "--glue-dir", str(glue), "--tasks", "rte,stsb",
             "--max-rows-per-task", "24", "--batch-size", "8", "--max-seq-length", "64",
             "--steps", str(STEPS), "--repeats", "1", "--methods", "hf-dynamic,mtdnn",
             "--out", str(out), "--json", str(tmp_path / "memory.json")])
    results = json.loads((tmp_path / "memory.json").read_text(encoding="utf-8"))
    assert [(r["variant"], r["method"]) for r in results] == [
        ("default", "hf-dynamic"), ("default", "mtdnn"), ("mmap-128k", "hf-dynamic"),
        ("mmap-128k", "mtdnn")]
    for r in results:
        assert r["allocator_env"] == pm.VARIANTS[r["variant"]]
        ph = r["phases"]
        assert 0 < ph["setup"]["peak"] and ph["steps"]["peak"] >= ph["steps"]["end"] > 0
        assert max(ph[p]["peak"] for p in pm.PHASES) <= r["peak_rss_mb"] + 1
        assert "safetensors" in r["packages"]
        assert 0 < ph["peak_step"]["rss"] <= r["peak_rss_mb"] + 1 and ph["peak_step"]["rows"] > 0
    text = out.read_text(encoding="utf-8")
    assert "| mmap-128k | mtdnn |" in text and "| default | hf-dynamic |" in text


# ---- probe_levers -------------------------------------------------------------------------------


def test_lever_probe_times_every_variant_on_the_same_batches(tmp_path, tiny_bert, glue, one_thread):
    pl = load_script("probe_levers")
    out = tmp_path / "levers"
    pl.main(["--glue-dir", str(glue), "--encoder", tiny_bert, "--rounds", "2", "--warmup", "1",
             "--variants", "sdpa,eager-attention,pad8", "--steps", "2", "--batch-size", "4",
             "--out", str(out)])
    stored = json.loads((out / "levers.json").read_text(encoding="utf-8"))
    results = stored["results"]
    assert set(results) == {"sdpa", "eager-attention", "pad8"}
    assert all(len(runs) == 2 for runs in results.values())
    # the same batches for every variant: the same real tokens in the timed steps
    assert len({r["real_tokens"] for runs in results.values() for r in runs}) == 1
    table = (out / "levers.md").read_text(encoding="utf-8")
    assert "| `sdpa` |" in table and "| 1.00x |" in table
    ids, mask = pl.pad([[5, 6, 7], [8]], 8)
    assert ids.tolist() == [[5, 6, 7, 0, 0, 0, 0, 0], [8, 0, 0, 0, 0, 0, 0, 0]]
    assert mask.sum(1).tolist() == [3, 1]
    with pytest.raises(SystemExit, match="sdpa missing"):
        pl.main(["--glue-dir", str(glue), "--variants", "pad8"])


def test_hf_predictions_come_back_in_the_dataset_order_under_group_by_length(tmp_path, tiny_bert):
    """The Trainer groups the evaluation set by length too when it trains with group_by_length,
    and predict() returns rows in that order; the benchmarks score in the dataset's order."""
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    words = "the man is playing a guitar while some people sing".split()
    texts = [" ".join(words[: 1 + (7 * i) % len(words)]) for i in range(12)]  # mixed lengths
    ds = Dataset.from_dict({"text": texts, "labels": [i % 2 for i in range(12)]}).map(
        lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=4, use_cpu=True,
                             report_to="none", train_sampling_strategy="group_by_length")
    trainer = Trainer(model=model, args=args, processing_class=tokenizer,
                      data_collator=DataCollatorWithPadding(tokenizer))
    logits = bc.hf_predict_in_order(trainer, ds).predictions
    assert trainer.args.train_sampling_strategy == "group_by_length"  # restored
    model.eval()
    with torch.no_grad():
        one_by_one = [model(**tokenizer(t, return_tensors="pt")).logits[0].numpy() for t in texts]
    assert logits == pytest.approx(np.stack(one_by_one), abs=1e-5)
