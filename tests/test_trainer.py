"""Tests of the training loop (mtdnn/trainer.py): tiny runs of the tiny BERT on real GLUE rows."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest
import torch
from conftest import Recorder
from torch.optim.optimizer import register_optimizer_step_post_hook

from mtdnn.evaluation import evaluate
from mtdnn.model import MultiTaskModel
from mtdnn.sampler import MultiTaskBatchSampler
from mtdnn.spec import load_spec
from mtdnn.trainer import TrainResult, resolve_mixed_precision, train

METRICS = {"rte": ["accuracy"], "stsb": ["pearson", "spearmanr"],
           "cola": ["matthews_correlation"], "wikiqa": ["map", "mrr", "p@1"]}


pytestmark = pytest.mark.usefixtures("one_thread")


def run(spec: Path, *overrides: str) -> TrainResult:
    return train(load_spec(spec, overrides), progress=False)


def read_log(out: Path) -> tuple[list[dict], list[dict]]:
    """(loss records, eval records) of a run's train_log.jsonl."""
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert records and all("step" in r for r in records)
    return [r for r in records if "score" not in r], [r for r in records if "score" in r]


def losses(records: list[dict]) -> list[tuple[int, str, float]]:
    return [(r["step"], k[len("loss/"):], v) for r in records for k, v in r.items()
            if k.startswith("loss/")]


# --- one full run: what it writes ---------------------------------------------------------------


def test_train_writes_checkpoint_metrics_log_results_and_spec(tiny_glue_spec, tmp_path: Path):
    spec_path = tiny_glue_spec()
    result = run(spec_path, "train.eval_every=3")
    out = tmp_path / "run"
    assert result.output_dir == out and result.best_dir == out / "best"

    # metrics.json: the best evaluation, every task that has a dev split, its metrics.
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"best_step", "score", "tasks", "examples"}
    # 6 steps of 8 rows (wikiqa: 8 // max_candidates 8 = 1 group a batch), every row counted
    assert set(metrics["examples"]) == set(METRICS) and metrics["examples"] == result.examples
    assert sum(metrics["examples"].values()) <= 6 * 8
    assert metrics["best_step"] in (3, 6) and metrics["best_step"] == result.best_step
    assert {t: list(s["dev"]) for t, s in metrics["tasks"].items()} == METRICS
    assert all(isinstance(v, float) for s in metrics["tasks"].values() for v in s["dev"].values())
    assert metrics["tasks"] == result.metrics
    main = [metrics["tasks"][t]["dev"][ms[0]] for t, ms in METRICS.items()]
    assert metrics["score"] == pytest.approx(sum(main) / len(main), abs=1e-12)

    # train_log.jsonl: per-task losses every log_every=2 steps; an evaluation every 3 steps.
    loss_records, eval_records = read_log(out)
    assert [r["step"] for r in loss_records] == [2, 4, 6]
    assert all(any(k.startswith("loss/") for k in r) for r in loss_records)
    assert {task for _, task, _ in losses(loss_records)} <= set(METRICS)
    assert all(v > 0 for _, _, v in losses(loss_records))
    assert [r["step"] for r in eval_records] == [3, 6]
    best = next(r for r in eval_records if r["step"] == metrics["best_step"])
    assert best["score"] == metrics["score"]
    assert best["score"] == max(r["score"] for r in eval_records)
    for task, ms in metrics["tasks"].items():
        for m, v in ms["dev"].items():
            assert best[f"dev/{task}/{m}"] == v

    # results.md: one row per task and metric.
    table = (out / "results.md").read_text()
    for task, ms in metrics["tasks"].items():
        for m, v in ms["dev"].items():
            assert f"| {task} | {m} | {100 * v:.2f} |" in table

    # The spec of the run, with the override applied, next to the results and in the checkpoint.
    for copy in (out / "spec.yaml", out / "best" / "spec.yaml"):
        saved = load_spec(copy)
        assert saved.to_dict() == load_spec(spec_path, ["train.eval_every=3"]).to_dict()

    # best/ is a loadable checkpoint of the best step; re-scoring it gives the same metrics.
    model = MultiTaskModel.from_pretrained(result.best_dir)
    assert list(model.tasks) == ["rte", "stsb", "cola", "wikiqa"]
    assert model.max_seq_length == 64
    # The checkpoint's run record: its step, score and dev metrics (the model registry holds none).
    record = json.loads((result.best_dir / "metrics.json").read_text())
    assert record == {"step": metrics["best_step"], "score": metrics["score"],
                      "tasks": metrics["tasks"]}
    assert "step" not in MultiTaskModel.read_registry(result.best_dir)
    again = evaluate(result.best_dir)
    assert set(again) == set(metrics["tasks"])
    for task, splits in metrics["tasks"].items():
        assert again[task]["dev"] == pytest.approx(splits["dev"], abs=1e-6)


def test_loss_goes_down_on_a_small_task(tiny_glue_spec, tmp_path: Path):
    # 16 rows = 2 batches, seen 15 times; short sequences and one evaluation keep it fast. The tiny
    # tokenizer spells most words out in characters: a high learning rate lets 30 steps memorise.
    spec = tiny_glue_spec(tasks="[rte]", steps=30)
    run(spec, "tasks.rte.max_train_examples=16", "tasks.rte.max_eval_examples=8",
        "tasks.rte.dropout=0", "max_seq_length=32", "train.learning_rate=1e-2",
        "train.warmup_ratio=0", "train.log_every=5", "train.eval_every=30")
    loss_records, eval_records = read_log(tmp_path / "run")
    values = [v for _, _, v in losses(loss_records)]
    assert [r["step"] for r in loss_records] == [5, 10, 15, 20, 25, 30]
    assert [r["step"] for r in eval_records] == [30]
    assert values[-1] < values[0] - 0.05, values


def test_same_seed_same_run_other_seed_other_run(tiny_glue_spec, tmp_path: Path):
    spec = tiny_glue_spec(tasks="[rte, stsb]", steps=4)
    text, log = {}, {}
    # The third run goes into the first one's directory: a fresh run starts a fresh log there
    # (the log is opened for appending, which only a resumed run may continue).
    for name, seed, out in (("a", 42, "a"), ("b", 42, "b"), ("c", 7, "a")):
        run(spec, f"output_dir={tmp_path / out}", f"seed={seed}", "train.log_every=1")
        text[name] = (tmp_path / out / "metrics.json").read_text()
        log[name] = losses(read_log(tmp_path / out)[0])
    assert text["a"] == text["b"]
    assert log["a"] == log["b"] and [step for step, _, _ in log["a"]] == [1, 2, 3, 4]
    assert text["a"] != text["c"]
    assert log["a"] != log["c"] and [step for step, _, _ in log["c"]] == [1, 2, 3, 4]


# --- settings ------------------------------------------------------------------------------------


def test_resolve_mixed_precision(monkeypatch: pytest.MonkeyPatch):
    for explicit in ("no", "fp16", "bf16"):
        assert resolve_mixed_precision(explicit) == explicit
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_mixed_precision("auto") == "no"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_mixed_precision("auto") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_mixed_precision("auto") == "fp16"


def test_gradient_accumulation_counts_optimizer_steps(tiny_glue_spec, tmp_path: Path):
    recorder = Recorder()
    optimizer_steps = []
    handle = register_optimizer_step_post_hook(
        lambda opt, args, kwargs: optimizer_steps.append(1))
    try:
        spec = load_spec(tiny_glue_spec(tasks="[rte]", steps=6), [
            "train.gradient_accumulation_steps=2", "train.batch_size=4", "train.log_every=1",
            "train.warmup_ratio=0", "train.learning_rate=1e-3"])
        result = train(spec, progress=False, instrument=recorder)
    finally:
        handle.remove()
    assert len(optimizer_steps) == 6 and recorder.steps == [1, 2, 3, 4, 5, 6]
    assert result.examples == {"rte": 48}  # 12 micro-batches of 4 rows
    micro_batches = recorder.rows
    assert micro_batches == [4] * 12  # 40 rows: 10 batches of 4, two per optimizer step
    loss_records, _ = read_log(tmp_path / "run")
    assert [r["step"] for r in loss_records] == [1, 2, 3, 4, 5, 6]
    # One scheduler step per optimizer step: linear decay from 1e-3 to 0 over 6 steps.
    assert [r["lr"] for r in loss_records] == pytest.approx([1e-3 * (6 - s) / 6
                                                             for s in range(1, 7)])
    # An epoch is 10 micro-batches = 5 optimizer steps.
    assert [r["epoch"] for r in loss_records] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.2]


@pytest.mark.parametrize("strategy", ["uniform", "temperature"])
def test_sampler_strategy_drives_the_task_of_each_step(tiny_glue_spec, tmp_path: Path,
                                                       strategy: str):
    # temperature 1 (size-proportional draws); a setting of a sampler that is off is an error.
    extra = ["train.temperature=1"] if strategy == "temperature" else []
    run(tiny_glue_spec(tasks="[rte, stsb, cola]", steps=6), f"train.sampler={strategy}",
        "tasks.cola.max_train_examples=16", "train.log_every=1", *extra)
    loss_records, _ = read_log(tmp_path / "run")
    assert [r["step"] for r in loss_records] == [1, 2, 3, 4, 5, 6]
    assert all(len([k for k in r if k.startswith("loss/")]) == 1 for r in loss_records)
    tasks = [task for _, task, _ in losses(loss_records)]
    sampler = MultiTaskBatchSampler({"rte": 40, "stsb": 40, "cola": 16}, 8, strategy=strategy,
                                    temperature=1.0, seed=42)
    assert tasks == [b.task for b in islice(iter(sampler), 6)]
    if strategy == "uniform":  # tasks take turns
        assert sorted(tasks[:3]) == ["cola", "rte", "stsb"] and tasks[3:] == tasks[:3]


def test_task_embedding_is_trained_and_saved(tiny_glue_spec, tmp_path: Path):
    from safetensors.torch import load_file

    run(tiny_glue_spec(extra="task_embedding: true", tasks="[rte, stsb, cola]", steps=2),
        "train.log_every=1")
    trained = {task for _, task, _ in losses(read_log(tmp_path / "run")[0])}
    assert 1 <= len(trained) <= 2  # two steps of one task each: one task at least is untrained
    best = tmp_path / "run" / "best"
    tensors = load_file(str(best / "heads.safetensors"))
    weight = tensors["task_embedding.weight"]
    assert weight.shape == (3, 32)
    for i, task in enumerate(["rte", "stsb", "cola"]):
        # Zero at the start; only the steps of a task move its vector.
        assert (weight[i].abs().sum().item() > 0) == (task in trained), task
    model = MultiTaskModel.from_pretrained(best)
    assert MultiTaskModel.read_registry(best)["task_embedding"] is True
    assert torch.equal(model.task_embedding.weight, weight)


@pytest.mark.parametrize("ratio", [0.6, 0.0])
def test_main_ratio_epochs_hold_every_main_batch_and_ratio_aux_batches(tiny_glue_spec,
                                                                       tmp_path: Path, ratio):
    # rte: 40 rows = 5 batches of 8; an epoch adds round(ratio * 5) batches of stsb and cola.
    run(tiny_glue_spec(tasks="[rte, stsb, cola]"), "train.max_steps=null", "train.epochs=2",
        "train.sampler=main_ratio", "train.main_task=rte", f"train.main_ratio={ratio}",
        "train.log_every=1")
    epoch = 5 + round(ratio * 5)
    loss_records, eval_records = read_log(tmp_path / "run")
    assert [r["step"] for r in loss_records] == list(range(1, 2 * epoch + 1))
    assert [r["step"] for r in eval_records] == [epoch, 2 * epoch]  # eval_every: an epoch
    assert all(len([k for k in r if k.startswith("loss/")]) == 1 for r in loss_records)
    tasks = [task for _, task, _ in losses(loss_records)]
    for e in range(2):
        assert tasks[e * epoch:(e + 1) * epoch].count("rte") == 5
    if ratio == 0:
        assert set(tasks) == {"rte"}
    sampler = MultiTaskBatchSampler({"rte": 40, "stsb": 40, "cola": 40}, 8,
                                    strategy="main_ratio", main_task="rte", main_ratio=ratio,
                                    seed=42)
    assert tasks == [b.task for b in sampler] + [b.task for b in sampler]


def test_annealed_sampler_anneals_over_the_micro_batches_of_the_run(tiny_glue_spec,
                                                                   tmp_path: Path):
    recorder = Recorder()
    spec = load_spec(tiny_glue_spec(tasks="[rte, stsb, cola]", steps=5), [
        "train.sampler=annealed", "train.anneal_end=0", "train.gradient_accumulation_steps=2",
        "tasks.cola.max_train_examples=8"])
    train(spec, progress=False, instrument=recorder)
    tasks = recorder.tasks

    def schedule(anneal_steps: int) -> list[str]:
        sampler = MultiTaskBatchSampler({"rte": 40, "stsb": 40, "cola": 8}, 8, seed=42,
                                        strategy="annealed", anneal_end=0.0,
                                        anneal_steps=anneal_steps)
        return [b.task for b in islice(iter(sampler), 10)]

    # 5 optimizer steps of 2 micro-batches: the exponent reaches anneal_end at the 10th batch.
    assert tasks == schedule(10) != schedule(5)


def test_a_task_without_a_dev_split_is_named_in_the_results_table(tiny_glue_spec, tmp_path: Path):
    result = run(tiny_glue_spec(tasks="[rte, cola]", steps=2), "tasks.cola.files.dev=null")
    table = (result.output_dir / "results.md").read_text()
    assert "| cola | - | no dev split | - |" in table
    assert f"| rte | accuracy | {100 * result.metrics['rte']['dev']['accuracy']:.2f} |" in table
    assert "cola" not in result.metrics  # nothing made up for it
