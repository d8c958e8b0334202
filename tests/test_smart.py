"""SMART (mtdnn/smart.py): the perturbation stays within epsilon, the regularizer vanishes for a
model constant in its input, its gradient matches finite differences, and training with it (and
the Bregman proximal point term) resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtdnn.model import MultiTaskModel, TaskInfo, load_encoder
from mtdnn.smart import (
    Perturbation,
    SmartSettings,
    adversarial_delta,
    project,
    regularizer_at,
    sym_kl,
)
from mtdnn.spec import SpecError, load_spec
from mtdnn.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")
TASKS = [TaskInfo("nli", "classification", ["a", "b", "c"], ["x", "y"], dropout=0.0),
         TaskInfo("sts", "regression", [], ["x", "y"], dropout=0.0)]


@pytest.fixture
def model(tiny_bert: str) -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel(load_encoder(tiny_bert), TASKS).eval()  # no dropout: a function


def batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, 390, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


@pytest.mark.parametrize("norm", ["inf", "l2"])
def test_the_perturbation_stays_within_epsilon(model, norm: str):
    b = batch()
    clean = model.task_types["nli"].logits(model, "nli", b)
    s = SmartSettings(adv_weight=1.0, adv_steps=3, adv_step_size=0.5, adv_noise=0.1,
                      adv_epsilon=0.05, adv_norm=norm)
    delta = adversarial_delta(model, "nli", b, clean, s, torch.Generator().manual_seed(0))
    assert delta.shape == (3, 9, 32) and not delta.requires_grad
    if norm == "inf":
        assert delta.abs().max().item() <= 0.05 + 1e-7
        assert delta.abs().max().item() == pytest.approx(0.05)  # step size >> epsilon: on the rim
    else:
        norms = delta.flatten(1).norm(dim=1)
        assert (norms <= 0.05 + 1e-6).all() and norms.min().item() == pytest.approx(0.05, rel=1e-4)
    # projection itself
    big = torch.full((2, 3, 4), 2.0)
    assert project(big, 0.5, "inf").max().item() == 0.5
    assert project(big, 0.5, "l2").flatten(1).norm(dim=1).tolist() == pytest.approx([0.5, 0.5])


def test_the_regularizer_vanishes_when_the_model_ignores_its_input(model):
    with torch.no_grad():  # the head's hidden layer reads nothing: the logits are its biases
        model.heads["nli"].dense.weight.zero_()
        model.heads["nli"].out_proj.bias.copy_(torch.tensor([0.3, -1.0, 2.0]))
    b = batch()
    clean = model.task_types["nli"].logits(model, "nli", b)
    delta = torch.randn(3, 9, 32) * 10
    assert regularizer_at(model, "nli", b, clean, delta).item() == 0.0
    # ...and does not for the untouched regression head
    clean = model.task_types["sts"].logits(model, "sts", b)
    assert regularizer_at(model, "sts", b, clean, delta).item() > 0


@pytest.mark.parametrize("task", ["nli", "sts"])
def test_the_gradient_of_the_regularizer_matches_finite_differences(model, task: str):
    model = model.double()
    b = batch(3)
    delta = torch.randn(3, 9, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    weight = model.heads[task].dense.weight  # a shared path: both the clean and perturbed passes

    def value() -> torch.Tensor:
        clean = model.task_types[task].logits(model, task, b).double()
        return regularizer_at(model, task, b, clean, delta * 0.05)

    (grad,) = torch.autograd.grad(value(), weight)
    h = 1e-6
    for i, j in [(0, 0), (3, 7), (17, 30)]:
        with torch.no_grad():
            weight[i, j] += h
            up = value().item()
            weight[i, j] -= 2 * h
            down = value().item()
            weight[i, j] += h
        assert grad[i, j].item() == pytest.approx((up - down) / (2 * h), rel=1e-4, abs=1e-10)


def test_symmetric_kl_by_hand_and_with_padded_outcomes():
    a, b = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    pa, pb = torch.softmax(a, -1), torch.softmax(b, -1)
    expected = ((pa * (pa / pb).log()).sum() + (pb * (pb / pa).log()).sum()).item()
    assert sym_kl(a, b).item() == pytest.approx(expected)
    inf = float("-inf")  # a padded choice in both: no contribution, no NaN
    assert sym_kl(torch.tensor([[0.0, 1.0, inf]]), torch.tensor([[1.0, 0.0, inf]])).item() == \
        pytest.approx(expected)
    assert Perturbation(0.0)(torch.ones(1, 2, 3)).eq(1).all()


SMART = ["tasks.rte.adv_weight=1.0", "tasks.rte.adv_epsilon=0.01", "tasks.rte.adv_step_size=0.1",
         "tasks.rte.bpp_weight=0.5", "train.bpp_beta=0.9"]


def _tensors(directory: Path) -> dict:
    return {**load_file(str(directory / "model.safetensors")),
            **load_file(str(directory / "heads.safetensors"))}


def test_training_with_smart_changes_the_run_and_resumes_exactly(tiny_glue_spec, tmp_path: Path):
    spec_path = tiny_glue_spec(tasks="[rte, stsb]", steps=6)
    common = ["train.save_every=2", "train.eval_every=6", "train.log_every=1"]
    plain = train(load_spec(spec_path, [*common, f"output_dir={tmp_path / 'plain'}"]),
                  progress=False)
    ref = train(load_spec(spec_path, [*common, *SMART, f"output_dir={tmp_path / 'ref'}"]),
                progress=False)
    a, b = _tensors(plain.best_dir), _tensors(ref.best_dir)
    assert any(not a[k].equal(b[k]) for k in a)  # the regularizer changed the training
    spec = load_spec(spec_path, [*common, *SMART, f"output_dir={tmp_path / 'cut'}"])
    train(spec, progress=False, stop_after=3)
    checkpoint = tmp_path / "cut" / "checkpoints" / "step-0000003" / "accelerate"
    assert len(list(checkpoint.glob("custom_checkpoint_*.pkl"))) == 2  # slow copy, noise RNG
    resumed = train(spec, progress=False, resume=True)
    c = _tensors(resumed.best_dir)
    assert all(b[k].equal(c[k]) for k in b)
    log = [json.loads(x) for x in (tmp_path / "ref" / "train_log.jsonl").read_text().splitlines()]
    assert len([r for r in log if "loss/rte" in r]) >= 1


def test_smart_settings_are_checked(tiny_glue_spec):
    spec_path = tiny_glue_spec(tasks="[rte, stsb]")
    with pytest.raises(SpecError) as e:
        load_spec(spec_path, ["tasks.rte.adv_steps=2", "tasks.stsb.adv_weight=-1",
                              "train.bpp_beta=0.5"])
    assert e.value.problems == [
        "tasks.rte.adv_steps: 2 is used by SMART's adversarial term only (tasks.rte.adv_weight "
        "is 0): set adv_weight > 0, or remove it",
        "tasks.stsb.adv_weight: must be >= 0 (0: off), got -1.0",
        "train.bpp_beta: 0.5 is used by SMART's Bregman proximal point term only (no task sets "
        "bpp_weight > 0): set tasks.<name>.bpp_weight, or remove it"]
