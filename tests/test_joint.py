"""Joint steps, loss weighting and gradient surgery in the training loop (mtdnn/trainer.py):
the joint step's gradients against autograd on the weighted sum, tiny end-to-end runs through the
CLI, exact resume, and 2 processes against one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import Recorder
from safetensors.torch import load_file
from test_distributed import WORLD, _launch, _train_rank
from test_distributed import tiny_bert_no_dropout as no_dropout_bert  # noqa: F401 (fixture)

from mtdnn.checkpoint import latest_checkpoint
from mtdnn.cli import main
from mtdnn.errors import CheckpointError
from mtdnn.gradsurgery import PCGrad, pcgrad
from mtdnn.model import MultiTaskModel, TaskInfo, load_encoder
from mtdnn.spec import load_spec
from mtdnn.steps import JointPasses, task_samplers
from mtdnn.trainer import train
from mtdnn.weighting import GradNorm, Static, Uncertainty, shared_layer_weight

TASKS = ["rte", "stsb", "cola"]
# rte 40 + stsb 40 + cola 16 rows in batches of 8: 5 + 5 + 2 = 12 batches, so an alternating
# epoch is 12 steps and a joint epoch ceil(12 / 3) = 4 joint steps.
SMALL = ["tasks.cola.max_train_examples=16", "train.log_every=1"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # One intra-op thread: the tiny model gains nothing from more on a busy 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def records(out: Path) -> list[dict]:
    """The loss records of a run's train_log.jsonl (evaluation records left out)."""
    lines = (out / "train_log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "score" not in r]


def weights(record: dict) -> list[float]:
    return [record[f"weight/{t}"] for t in TASKS]


def cli_train(spec: Path, *overrides: str) -> None:
    assert main(["train", str(spec), *overrides, "--no-progress"]) == 0


# --- the joint step against autograd --------------------------------------------------------------


@pytest.fixture
def model(tiny_bert: str) -> MultiTaskModel:
    torch.manual_seed(0)
    infos = [TaskInfo("a", "classification", ["0", "1"], ["x"], dropout=0.0),
             TaskInfo("b", "regression", [], ["x"], dropout=0.0)]
    model = MultiTaskModel(load_encoder(tiny_bert), infos)
    return model.eval()  # no dropout: the reference passes see the same function


def batches(task: str, n: int, seed: int) -> list[tuple[str, dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(100, 390, (4, 7), generator=g)  # ids of the tiny vocabulary
        labels = torch.randint(0, 2, (4,), generator=g) if task == "a" else \
            torch.rand(4, generator=g) * 5
        out.append((task, {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                           "token_type_ids": torch.zeros_like(ids), "labels": labels}))
    return out


def run_joint_step(model, weighting, surgery=None, accum=2, step=1, seeds=(1, 2)):
    from accelerate import Accelerator

    data = {"a": batches("a", accum, seeds[0]), "b": batches("b", accum, seeds[1])}
    joint = JointPasses({k: iter(v) for k, v in data.items()}, model, weighting, surgery,
                        Accelerator(cpu=True), accum)
    model.zero_grad(set_to_none=True)
    losses = joint.backward(step)
    return data, losses, joint


def reference_grads(model, data, term, params):
    """Gradients of (1/accum) Σ_micro Σ_task term(task, L) by one autograd call."""
    accum = len(data["a"])
    total = sum(term(task, model(task, **batch)["loss"]) for task in data
                for _, batch in data[task]) / accum
    return torch.autograd.grad(total, params, allow_unused=True)


def test_joint_step_backpropagates_the_weighted_sum_with_accumulation(model):
    weighting = Static({"a": 2.0, "b": 0.5})
    data, losses, _ = run_joint_step(model, weighting, accum=2)
    assert {k: len(v) for k, v in losses.items()} == {"a": 2, "b": 2}  # every task, every micro
    params = list(model.parameters())
    expected = reference_grads(model, data, weighting.task_loss, params)
    for (name, p), e in zip(model.named_parameters(), expected, strict=True):
        if e is None:
            assert p.grad is None, name
        else:
            assert torch.allclose(p.grad, e, atol=1e-6, rtol=1e-5), name


def test_joint_step_with_pcgrad_projects_the_shared_gradient_and_keeps_the_heads(model):
    weighting = Uncertainty(["a", "b"])
    with torch.no_grad():
        weighting.log_vars["a"].fill_(0.4)
    # Batches on which the tiny BERT's two task gradients conflict (cosine -0.02).
    data, _, _ = run_joint_step(model, weighting, PCGrad(seed=7), accum=2, step=3, seeds=(4, 2))
    shared = list(model.encoder.parameters())

    def flat(grads) -> torch.Tensor:
        return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                          for g, p in zip(grads, shared, strict=True)])

    per_task = []
    for task in ("a", "b"):
        total = sum(weighting.task_loss(task, model(task, **b)["loss"]) for _, b in data[task])
        per_task.append(flat(torch.autograd.grad(total / 2, shared, allow_unused=True)))
    stacked = torch.stack(per_task)
    expected = PCGrad(seed=7)(stacked, 3)
    got = flat([p.grad for p in shared])
    assert torch.allclose(got, expected, atol=1e-6, rtol=1e-5)
    # The surgery did change the plain sum.
    assert float(stacked[0] @ stacked[1]) < 0
    assert not torch.allclose(got, stacked.sum(0), atol=1e-6)
    assert torch.allclose(pcgrad(stacked, torch.Generator().manual_seed(0)), expected)  # 2 tasks
    # Heads and learned weights: their own task's gradient, unchanged.
    for task in ("a", "b"):
        head = list(model.heads[task].parameters())
        total = sum(weighting.task_loss(task, model(task, **b)["loss"]) for _, b in data[task])
        expected_head = torch.autograd.grad(total / 2, head + [weighting.log_vars[task]])
        for p, e in zip([*head, weighting.log_vars[task]], expected_head, strict=True):
            assert torch.allclose(p.grad, e, atol=1e-6, rtol=1e-5)


def test_joint_step_measures_gradnorms_at_the_last_shared_layer(model):
    weighting = GradNorm(["a", "b"])
    with torch.no_grad():
        weighting.w.copy_(torch.tensor([0.5, 1.5]))
    data, _, joint = run_joint_step(model, weighting, accum=2)
    norms = joint.grad_norms()
    w = shared_layer_weight(model.encoder)
    assert w is model.encoder.encoder.layer[1].output.dense.weight
    for task in ("a", "b"):
        total = sum(weighting.task_loss(task, model(task, **b)["loss"]) for _, b in data[task])
        (expected,) = torch.autograd.grad(total / 2, w)  # ∇_W (w_i L_i), over both micro-steps
        assert norms[task].item() == pytest.approx(expected.norm().item(), rel=1e-5)
    assert joint.grad_norms()["a"].item() == 0  # reset after reading


def test_task_samplers_shuffle_each_task_on_its_own_and_resume(tiny_glue_spec):
    spec = load_spec(tiny_glue_spec(tasks="[rte, stsb]"), ["train.batch_size=4"])
    sizes, lengths = {"rte": 10, "stsb": 10}, {"rte": [5] * 10, "stsb": [5] * 10}
    samplers = task_samplers(spec, sizes, lengths)
    orders = {}
    for name, s in samplers.items():
        assert len(s) == 3  # ceil(10 / 4)
        batches_ = [b for b in s]
        assert {b.task for b in batches_} == {name}
        orders[name] = [i for b in batches_ for i in b.indices]
        assert sorted(orders[name]) == list(range(10))  # one pass per epoch
    assert orders["rte"] != orders["stsb"]  # same size, own seed
    again = task_samplers(spec, sizes, lengths)["rte"]
    it = iter(again)
    next(it)
    state = again.state_dict()
    resumed = task_samplers(spec, sizes, lengths)["rte"]
    resumed.load_state_dict(state)
    assert [b.indices for b in resumed] == [b.indices for b in it]


def test_length_grouping_is_chosen_per_task(tiny_glue_spec, monkeypatch):
    """A task's own group_by_length wins; unset, train.group_by_length decides for the task types
    that group by default; both step modes build their samplers from that choice."""
    from mtdnn.steps import AlternatingStep
    from mtdnn.tasks import task_type

    sizes, lengths = {"rte": 10, "stsb": 10}, {"rte": list(range(10)), "stsb": [5] * 10}

    def grouped(*overrides: str) -> tuple[list[str], dict[str, bool]]:
        spec = load_spec(tiny_glue_spec(tasks="[rte, stsb]"), ["train.batch_size=4", *overrides])
        alternating = AlternatingStep(spec, sizes, lengths).sampler.state_dict()["grouped_tasks"]
        joint = {n: s.group_by_length for n, s in task_samplers(spec, sizes, lengths).items()}
        assert joint == {n: n in alternating for n in sizes}
        return alternating, joint

    assert grouped()[0] == ["rte", "stsb"]
    assert grouped("tasks.stsb.group_by_length=false")[0] == ["rte"]
    assert grouped("train.group_by_length=false")[0] == []
    assert grouped("train.group_by_length=false", "tasks.rte.group_by_length=true")[0] == ["rte"]
    regression = type(task_type("regression"))
    monkeypatch.setattr(regression, "groups_by_length", False)
    assert grouped()[0] == ["rte"]
    assert grouped("tasks.stsb.group_by_length=true")[0] == ["rte", "stsb"]


# --- end to end, through the command line ---------------------------------------------------------


def test_joint_dwa_run_logs_the_formula_weights(tiny_glue_spec, tmp_path: Path):
    spec = tiny_glue_spec(tasks="[rte, stsb, cola]", steps=6)
    cli_train(spec, *SMALL, "train.step_mode=joint", "train.loss_weighting=dwa",
              "train.dwa_period=2", "train.dwa_temperature=0.5", "train.eval_every=6")
    log = records(tmp_path / "run")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    # Every step trains every task; a joint epoch is 4 steps.
    assert all(sorted(k for k in r if k.startswith("loss/")) == sorted(f"loss/{t}" for t in TASKS)
               for r in log)
    assert [r["epoch"] for r in log] == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    # Periods of 2 steps: weights 1 in periods 1 and 2 (steps 1-4), then from the logged losses
    # (one batch per task and step: the logged loss is the step's loss).
    assert [weights(r) for r in log[:4]] == [[1.0, 1.0, 1.0]] * 4
    mean = {p: [(log[2 * p - 2][f"loss/{t}"] + log[2 * p - 1][f"loss/{t}"]) / 2 for t in TASKS]
            for p in (1, 2)}
    ratio = [a / b for a, b in zip(mean[2], mean[1], strict=True)]
    e = [math.exp(r / 0.5) for r in ratio]
    expected = [3 * x / sum(e) for x in e]
    assert weights(log[4]) == pytest.approx(expected, rel=1e-5)
    assert weights(log[5]) == weights(log[4])
    assert sum(weights(log[5])) == pytest.approx(3.0, rel=1e-6)
    assert weights(log[4]) != pytest.approx([1.0, 1.0, 1.0], abs=1e-4)


def test_a_run_says_which_tasks_it_groups_and_saves_it_with_the_sampler(
        tiny_glue_spec, tmp_path: Path, capsys: pytest.CaptureFixture):
    spec = load_spec(tiny_glue_spec(tasks="[rte, stsb]"), [
        "tasks.stsb.group_by_length=false", "train.max_steps=4", f"output_dir={tmp_path / 'g'}"])
    train(spec, progress=False, stop_after=2)
    assert "batches grouped by length: rte\n" in capsys.readouterr().out
    checkpoint = latest_checkpoint(tmp_path / "g")
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["step_state"]["sampler"]["grouped_tasks"] == ["rte"]
    # resuming with other tasks grouped is a user error that names the setting to change
    path = tiny_glue_spec(tasks="[rte, stsb]")
    assert main(["train", str(path), "train.max_steps=4", f"output_dir={tmp_path / 'g'}",
                 "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "grouped_tasks=['rte'] but this sampler has grouped_tasks=['rte', 'stsb']" in err
    assert "set tasks.<name>.group_by_length to match" in err


def test_joint_gradnorm_cagrad_run_keeps_the_weights_summing_to_k(tiny_glue_spec, tmp_path: Path):
    spec = tiny_glue_spec(tasks="[rte, stsb, cola]", steps=4)
    cli_train(spec, *SMALL, "train.step_mode=joint", "train.loss_weighting=gradnorm",
              "train.gradient_surgery=cagrad", "train.weighting_lr=0.05", "train.eval_every=4")
    log = records(tmp_path / "run")
    assert weights(log[0]) == [1.0, 1.0, 1.0]
    for r in log:
        assert sum(weights(r)) == pytest.approx(3.0, rel=1e-5)
    assert weights(log[-1]) != pytest.approx([1.0, 1.0, 1.0], abs=1e-3)  # they do move
    # stsb (a regression loss near 15, against ~0.7) has by far the largest gradient: GradNorm
    # weighs it down.
    assert min(weights(log[-1])) == log[-1]["weight/stsb"]
    # The learned weights of the best checkpoint are part of its run record, not of the model.
    best = json.loads((tmp_path / "run" / "best" / "metrics.json").read_text())
    assert sum(best["loss_weights"].values()) == pytest.approx(3.0, rel=1e-5)
    assert "loss_weights" not in MultiTaskModel.read_registry(tmp_path / "run" / "best")


def test_uncertainty_with_alternating_steps_moves_only_the_weight_of_the_task_run(
        tiny_glue_spec, tmp_path: Path):
    spec = tiny_glue_spec(tasks="[rte, stsb, cola]", steps=6)
    cli_train(spec, *SMALL, "train.loss_weighting=uncertainty", "train.weighting_lr=0.1",
              "train.eval_every=6")
    log = records(tmp_path / "run")
    assert weights(log[0]) == [1.0, 1.0, 1.0]  # s_i = 0
    for before, after in zip(log, log[1:], strict=False):
        (ran,) = [k[len("loss/"):] for k in before if k.startswith("loss/")]  # one task a step
        for task in TASKS:
            moved = after[f"weight/{task}"] != before[f"weight/{task}"]
            assert moved == (task == ran), (before["step"], task)


def test_gradient_accumulation_in_joint_mode(tiny_glue_spec, tmp_path: Path):
    recorder = Recorder()
    spec = load_spec(tiny_glue_spec(tasks="[rte, stsb, cola]", steps=3), [
        *SMALL, "train.step_mode=joint", "train.gradient_accumulation_steps=2",
        "train.gradient_surgery=pcgrad", "train.eval_every=3"])
    train(spec, progress=False, instrument=recorder)
    seen = recorder.tasks
    assert recorder.steps == [1, 2, 3]
    assert seen == TASKS * 6  # 3 steps x 2 micro-steps, each a batch of every task in order
    # A joint epoch: ceil(12 / 3) = 4 joint micro-steps = 2 optimizer steps.
    assert [r["epoch"] for r in records(tmp_path / "run")] == [0.5, 1.0, 1.5]


def test_invalid_combination_is_a_user_error(tiny_glue_spec, capsys: pytest.CaptureFixture):
    spec = tiny_glue_spec(tasks="[rte, stsb]")
    assert main(["train", str(spec), "train.loss_weighting=gradnorm",
                 "train.gradient_surgery=pcgrad"]) == 2
    err = capsys.readouterr().err
    assert "train.loss_weighting: 'gradnorm' needs train.step_mode=joint" in err
    assert "train.gradient_surgery: 'pcgrad' needs train.step_mode=joint" in err


# --- exact resume ---------------------------------------------------------------------------------

STEPS = 8
RESUME = [f"train.max_steps={STEPS}", f"train.eval_every={STEPS}", "train.save_every=2",
          "train.log_every=1", "train.step_mode=joint"]


def _tensors(directory: Path) -> dict:
    return {**load_file(str(directory / "model.safetensors")),
            **load_file(str(directory / "heads.safetensors"))}


@pytest.mark.parametrize("strategy", [
    ["train.loss_weighting=gradnorm", "train.weighting_lr=0.05", "train.gradient_surgery=pcgrad"],
    ["train.loss_weighting=dwa", "train.dwa_period=3", "train.gradient_surgery=cagrad",
     "train.gradient_accumulation_steps=2"],
], ids=["gradnorm-pcgrad", "dwa-cagrad-accum"])
def test_joint_stop_and_resume_is_bitwise_identical(tiny_glue_spec, tmp_path: Path,
                                                    strategy: list[str]):
    spec_path = tiny_glue_spec(tasks="[rte, stsb, wikiqa]")
    settings = [*RESUME, *strategy]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    train(load_spec(spec_path, [*settings, f"output_dir={ref}"]), progress=False)
    spec = load_spec(spec_path, [*settings, f"output_dir={cut}"])
    train(spec, progress=False, stop_after=5)  # mid-period, mid-epoch of every task sampler
    checkpoint = latest_checkpoint(cut)
    assert checkpoint.name == "step-0000005"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["step_mode"] == "joint" and state["step"] == 5
    assert set(state["step_state"]["task_samplers"]) == {"rte", "stsb", "wikiqa"}
    # The weighting's state (learned weights, loss history) is part of the checkpoint.
    assert (checkpoint / "accelerate" / "custom_checkpoint_0.pkl").is_file()
    train(spec, progress=False, resume=True)

    ta, tb = _tensors(ref / "best"), _tensors(cut / "best")
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].equal(tb[k]), f"{k} differs"
    assert (ref / "metrics.json").read_text() == (cut / "metrics.json").read_text()
    log_a, log_b = ([{k: v for k, v in r.items() if k != "elapsed_s"} for r in records(d)]
                    for d in (ref, cut))
    assert log_a == log_b and len(log_a) == STEPS
    assert any(r["weight/rte"] != 1.0 for r in log_a)  # the weights did move


def test_resuming_with_the_other_step_mode_is_refused(tiny_glue_spec, tmp_path: Path):
    spec_path = tiny_glue_spec(tasks="[rte, stsb]", steps=2)
    train(load_spec(spec_path, ["train.step_mode=joint"]), progress=False, stop_after=1)
    with pytest.raises(CheckpointError, match="saved with train.step_mode=joint: resume it with "
                                              "that step mode"):
        train(load_spec(spec_path), progress=False, resume=True)


# --- 2 processes against 1 ------------------------------------------------------------------------

# Each task 32 rows, 4 per rank: every global batch of 8 splits evenly (see test_distributed.py for
# why that makes the DDP average equal the single-process mean). No dropout anywhere.
DISTRIBUTED = ["train.step_mode=joint", "train.weighting_lr=0.05", "train.max_steps=6",
               "train.eval_every=6", "train.log_every=1", "train.learning_rate=1e-3",
               "train.eval_batch_size=4", "tasks.rte.max_train_examples=32",
               "tasks.stsb.max_train_examples=32", "tasks.rte.dropout=0", "tasks.stsb.dropout=0"]


@pytest.mark.parametrize("strategy", [
    # Surgery: every backward local, per-task gradients all-reduced before PCGrad, then the heads
    # and the learned weights (outside the DDP model) by hand.
    ["train.loss_weighting=uncertainty", "train.gradient_surgery=pcgrad"],
    # DDP's own all-reduce on the step's last backward; GradNorm's probe reduced by hand.
    ["train.loss_weighting=gradnorm"],
], ids=["uncertainty-pcgrad", "gradnorm"])
def test_two_processes_train_the_weights_of_one_in_joint_mode(tiny_glue_spec, tmp_path: Path,
                                                              no_dropout_bert: str,  # noqa: F811
                                                              strategy: list[str]):
    spec_path = tiny_glue_spec(tasks="[rte, stsb]")
    common = [*DISTRIBUTED, *strategy, f"encoder={no_dropout_bert}"]
    one, two = tmp_path / "one", tmp_path / "two"
    train(load_spec(spec_path, [*common, f"output_dir={one}", f"train.batch_size={WORLD * 4}"]),
          progress=False)
    _launch(_train_rank, load_spec(spec_path, [*common, f"output_dir={two}",
                                               "train.batch_size=4"]), out=tmp_path / "ranks")
    ta, tb = _tensors(one / "best"), _tensors(two / "best")
    assert ta.keys() == tb.keys()
    # float32 rounding only (all-reduce order, per-rank padding), as in test_distributed.py.
    assert max((ta[k] - tb[k]).abs().max().item() for k in ta) < 1e-5
    init = load_file(str(Path(no_dropout_bert) / "model.safetensors"))
    assert max((ta[k] - init[k]).abs().max().item() for k in init if k in ta) > 1e-3
    la, lb = records(one), records(two)
    assert [sorted(r) for r in la] == [sorted(r) for r in lb] and len(la) == 6
    for ra, rb in zip(la, lb, strict=True):
        ra.pop("elapsed_s"), rb.pop("elapsed_s")
        assert rb == pytest.approx(ra, rel=1e-5), ra["step"]
    assert la[-1]["weight/rte"] != pytest.approx(1.0, abs=1e-3)  # the weights did move
