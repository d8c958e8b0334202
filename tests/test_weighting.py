"""Tests of the loss weighting methods (mtdnn/weighting.py) on crafted losses and gradients."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch
from conftest import write_spec

import mtdnn.methods
from mtdnn.spec import SpecError, WeightingName, load_spec
from mtdnn.weighting import (
    DWA,
    WEIGHTINGS,
    GradNorm,
    SharedLayerProbe,
    Static,
    Uncertainty,
    make_weighting,
    shared_layer_weight,
)

TASKS = ["rte", "stsb", "cola"]


def t(x: float) -> torch.Tensor:
    return torch.tensor(x)


# --- the registry ---------------------------------------------------------------------------------


def test_the_spec_names_the_registered_methods():
    # The names live in the torch-free methods table (the spec reads them there): pin them here.
    assert get_args(WeightingName) == mtdnn.methods.names("loss_weighting") == tuple(WEIGHTINGS)
    assert mtdnn.methods.registry("loss_weighting") == WEIGHTINGS  # name -> the same class
    assert {n for n in get_args(WeightingName) if mtdnn.methods.method(
        "loss_weighting", n).requires.get("step_mode") == ("joint",)} == \
        {n for n, cls in WEIGHTINGS.items() if cls.joint_only}
    assert [n for n, cls in WEIGHTINGS.items() if cls.constant] == ["static"]


def test_unknown_method_suggests_the_closest(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.yaml", SPEC))
    import dataclasses

    bad = dataclasses.replace(spec, train=dataclasses.replace(spec.train,
                                                              loss_weighting="uncertainity"))
    with pytest.raises(KeyError, match="unknown loss weighting 'uncertainity'; did you mean "
                                       "'uncertainty'"):
        make_weighting(bad, TASKS, 10)
    with pytest.raises(SpecError, match=r"train.loss_weighting: 'uncertainity' is not valid; did "
                                        r"you mean 'uncertainty'\? \(choose one of: static, "
                                        r"uncertainty, dwa, gradnorm\)"):
        load_spec(tmp_path / "s.yaml", ["train.loss_weighting=uncertainity"])


# --- static ---------------------------------------------------------------------------------------


def test_static_is_the_lambda_weighted_sum():
    w = Static({"rte": 2.0, "stsb": 0.5, "cola": 1.0})
    losses = {"rte": t(0.7), "stsb": t(3.0), "cola": t(0.25)}
    assert w.combine(losses).item() == pytest.approx(2.0 * 0.7 + 0.5 * 3.0 + 0.25)
    assert w.task_loss("stsb", t(3.0)).item() == 1.5
    assert {k: v.item() for k, v in w.weights().items()} == {"rte": 2.0, "stsb": 0.5, "cola": 1.0}
    assert list(w.parameters()) == [] and w.state_dict() == {}  # nothing to train or checkpoint


def test_static_weight_one_leaves_the_loss_bitwise_unchanged():
    # The alternating default path (all loss_weight 1) must train exactly as before.
    loss = torch.tensor(0.123456789, dtype=torch.float32)
    assert torch.equal(Static({"rte": 1.0}).task_loss("rte", loss) / 3, loss / 3)


# --- uncertainty ----------------------------------------------------------------------------------


def test_uncertainty_total_and_its_gradient_match_the_formula():
    w = Uncertainty(TASKS)
    s = {"rte": 0.3, "stsb": -1.2, "cola": 0.0}
    with torch.no_grad():
        for task, value in s.items():
            w.log_vars[task].fill_(value)
    losses = {"rte": 0.7, "stsb": 3.0, "cola": 0.25}
    total = w.combine({k: t(v) for k, v in losses.items()})
    assert total.item() == pytest.approx(sum(math.exp(-s[k]) * losses[k] + s[k] for k in TASKS))
    total.backward()
    for task in TASKS:  # d/ds_i [exp(-s_i) L_i + s_i] = -exp(-s_i) L_i + 1
        assert w.log_vars[task].grad.item() == pytest.approx(1 - math.exp(-s[task]) * losses[task])
    assert {k: v.item() for k, v in w.weights().items()} == pytest.approx(
        {k: math.exp(-v) for k, v in s.items()})


def test_uncertainty_settles_where_the_weight_is_one_over_the_loss():
    w = Uncertainty(["a", "b"])
    opt = torch.optim.SGD(w.parameters(), lr=0.2)
    for _ in range(300):
        opt.zero_grad()
        w.combine({"a": t(4.0), "b": t(0.5)}).backward()
        opt.step()
    assert {k: v.item() for k, v in w.weights().items()} == pytest.approx({"a": 0.25, "b": 2.0},
                                                                        rel=1e-4)


def test_uncertainty_in_one_task_step_gives_no_gradient_to_the_others():
    w = Uncertainty(TASKS)
    w.task_loss("stsb", t(2.0)).backward()
    assert w.log_vars["rte"].grad is None and w.log_vars["cola"].grad is None
    assert w.log_vars["stsb"].grad.item() == pytest.approx(1 - 2.0)


# --- DWA ------------------------------------------------------------------------------------------


def dwa_expected(prev: list[float], before: list[float], temperature: float) -> list[float]:
    r = [a / b for a, b in zip(prev, before, strict=True)]
    e = [math.exp(x / temperature) for x in r]
    return [len(r) * x / sum(e) for x in e]


def test_dwa_weights_follow_the_formula_on_a_crafted_loss_history():
    w = DWA(TASKS, temperature=2.0, period=2)
    history = {  # per step; periods are steps 1-2, 3-4, 5-6
        1: [1.0, 4.0, 0.8], 2: [0.8, 3.6, 0.6],
        3: [0.6, 3.5, 0.3], 4: [0.5, 3.3, 0.1],
        5: [0.4, 3.3, 0.1], 6: [0.3, 2.0, 0.1],
    }
    seen = []
    for step, losses in history.items():
        w.update(step, dict(zip(TASKS, map(t, losses), strict=True)))
        seen.append([v.item() for v in w.weights().values()])
    means = {p: [(history[2 * p - 1][i] + history[2 * p][i]) / 2 for i in range(3)]
             for p in (1, 2, 3)}
    # The weights of periods 1 and 2 (set after steps 0..3) are 1; after period 2 ends (step 4)
    # the weights for period 3 follow L̄(2) / L̄(1), after step 6 those for period 4.
    assert seen[:3] == [[1.0, 1.0, 1.0]] * 3
    assert seen[3] == pytest.approx(dwa_expected(means[2], means[1], 2.0), rel=1e-6)
    assert seen[4] == seen[3]
    assert seen[5] == pytest.approx(dwa_expected(means[3], means[2], 2.0), rel=1e-6)
    for weights in seen:
        assert sum(weights) == pytest.approx(3.0, rel=1e-6)
    # The task whose loss fell least (stsb in period 2: 3.4 / 3.8) gets the largest weight.
    assert max(range(3), key=seen[3].__getitem__) == 1


def test_dwa_with_alternating_steps_averages_each_task_over_its_own_steps():
    w = DWA(["a", "b"], temperature=1.0, period=3)
    # One task per step; b does not run in period 2: its mean is carried over (r_b = 1).
    for step, (task, loss) in enumerate([("a", 2.0), ("b", 1.0), ("a", 4.0),
                                         ("a", 1.5), ("a", 1.5), ("a", 1.5)], start=1):
        w.update(step, {task: t(loss)})
    expected = dwa_expected([1.5, 1.0], [3.0, 1.0], 1.0)
    assert [v.item() for v in w.weights().values()] == pytest.approx(expected, rel=1e-6)
    assert expected[1] > expected[0]  # a halved its loss, b did not move


def test_dwa_state_round_trip_continues_exactly():
    a, b = DWA(TASKS, period=2), DWA(TASKS, period=2)
    losses = [[1.0, 2.0, 3.0], [0.9, 1.9, 2.0], [0.5, 1.8, 1.0], [0.4, 1.7, 0.9], [0.3, 1.0, 0.5]]
    for step, row in enumerate(losses[:3], start=1):
        a.update(step, dict(zip(TASKS, map(t, row), strict=True)))
    b.load_state_dict(a.state_dict())
    for step, row in enumerate(losses[3:], start=4):
        for m in (a, b):
            m.update(step, dict(zip(TASKS, map(t, row), strict=True)))
    assert torch.equal(a.weight_vector(), b.weight_vector())
    assert not torch.equal(a.weight_vector(), torch.ones(3))


# --- GradNorm -------------------------------------------------------------------------------------


def test_gradnorm_gives_more_weight_to_the_task_whose_loss_falls_slower():
    w = GradNorm(["fast", "slow"], alpha=1.5)
    opt = torch.optim.SGD(w.parameters(), lr=0.1)
    norms = {"fast": t(1.0), "slow": t(1.0)}
    w.update(1, {"fast": t(2.0), "slow": t(2.0)}, norms)  # L(0); equal ratios, equal norms
    assert w.w.grad.tolist() == [0.0, 0.0]
    # Step 2: "fast" halved its loss, "slow" kept it: L̃ = (0.5, 1), r = (2/3, 4/3).
    w.update(2, {"fast": t(1.0), "slow": t(2.0)}, norms)
    r = [0.5 / 0.75, 1.0 / 0.75]
    targets = [1.0 * x ** 1.5 for x in r]  # Ḡ = 1
    # d/dw_i |w_i n_i - target_i| = sign(G_i - target_i) n_i, with G_i = w_i n_i = 1.
    assert w.w.grad.tolist() == pytest.approx([math.copysign(1, 1 - x) for x in targets])
    assert w.w.grad.tolist() == [1.0, -1.0]
    opt.step()
    w.after_step()
    weights = [v.item() for v in w.weights().values()]
    assert weights[1] > 1 > weights[0]
    assert sum(weights) == pytest.approx(2.0)  # renormalised: Σ w = K
    assert weights == pytest.approx([0.9, 1.1])


def test_gradnorm_loss_gradient_matches_the_formula():
    w = GradNorm(["a", "b", "c"], alpha=0.7)
    with torch.no_grad():
        w.w.copy_(torch.tensor([0.5, 1.5, 1.0]))
    w.update(1, {"a": t(1.0), "b": t(2.0), "c": t(4.0)}, {"a": t(1), "b": t(1), "c": t(1)})
    loss = {"a": 0.8, "b": 1.0, "c": 1.0}
    measured = {"a": 0.2, "b": 3.0, "c": 1.0}  # ||∇_W w_i L_i||
    w.update(2, {k: t(v) for k, v in loss.items()}, {k: t(v) for k, v in measured.items()})
    ratio = [0.8 / 1.0, 1.0 / 2.0, 1.0 / 4.0]
    r = [x / (sum(ratio) / 3) for x in ratio]
    g = list(measured.values())
    target = [sum(g) / 3 * x ** 0.7 for x in r]
    n = [gi / wi for gi, wi in zip(g, [0.5, 1.5, 1.0], strict=True)]  # ||∇_W L_i||
    expected = [math.copysign(ni, gi - ti) for ni, gi, ti in zip(n, g, target, strict=True)]
    assert w.w.grad.tolist() == pytest.approx(expected, rel=1e-6)
    # The model's loss does not train w: its term uses w as a constant.
    w.w.grad = None
    w.task_loss("a", torch.tensor(2.0, requires_grad=True)).backward()
    assert w.w.grad is None


def test_gradnorm_renormalises_and_keeps_weights_positive():
    w = GradNorm(["a", "b", "c"])
    with torch.no_grad():
        w.w.copy_(torch.tensor([-0.5, 2.0, 4.0]))
    w.after_step()
    assert w.w.min().item() > 0
    assert w.w.sum().item() == pytest.approx(3.0)


def test_gradnorm_needs_every_task_of_the_step():
    w = GradNorm(["a", "b"])
    with pytest.raises(ValueError, match="step_mode: joint"):
        w.update(1, {"a": t(1.0)}, {"a": t(1.0)})


# --- the last shared layer and its per-task gradients ---------------------------------------------


def test_shared_layer_is_the_last_encoder_layer_output_dense(tiny_bert: str):
    from mtdnn.model import load_encoder

    encoder = load_encoder(tiny_bert)
    assert shared_layer_weight(encoder) is encoder.encoder.layer[-1].output.dense.weight

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(5, 4)
            self.first, self.second = torch.nn.Linear(4, 4), torch.nn.Linear(4, 3)

    plain = Plain()
    assert shared_layer_weight(plain) is plain.second.weight  # fallback: last 2-D weight


def test_probe_sums_each_tasks_gradient_at_the_shared_layer():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    probe = SharedLayerProbe(layer.weight, ["a", "b"])
    terms = {"a": lambda: layer(x).sum(), "b": lambda: (layer(x) ** 2).mean()}
    expected = {k: torch.autograd.grad(f(), layer.weight)[0] for k, f in terms.items()}
    for i, task in enumerate(["a", "b", "a"]):  # a twice: summed, like micro-batches
        probe.task = i if task == "b" else 0
        terms[task]().backward()
    norms = probe.norms()
    assert norms["a"].item() == pytest.approx((2 * expected["a"]).norm().item(), rel=1e-6)
    assert norms["b"].item() == pytest.approx(expected["b"].norm().item(), rel=1e-6)
    # The hook only observes: W.grad is the plain sum of the three backward passes.
    assert torch.allclose(layer.weight.grad, 2 * expected["a"] + expected["b"], atol=1e-6)
    probe.reset()
    probe.remove()
    layer(x).sum().backward()
    assert probe.grads.abs().sum().item() == 0


# --- spec checks ----------------------------------------------------------------------------------

SPEC = """
encoder: tiny-encoder
tasks:
  rte: {type: classification, text: [a, b], labels: [x, y], hub: {path: glue, name: rte}}
  stsb: {type: regression, text: [a, b], hub: {path: glue, name: stsb}}
  cola: {type: classification, text: [a], labels: ["0", "1"], hub: {path: glue, name: cola}}
"""


@pytest.fixture
def spec_file(tmp_path):
    return write_spec(tmp_path / "spec.yaml", SPEC)


def test_gradnorm_with_alternating_steps_is_a_spec_error(spec_file):
    with pytest.raises(SpecError, match=r"train.loss_weighting: 'gradnorm' needs "
                                        r"train.step_mode=joint .*set step_mode: joint, or use "
                                        r"static, uncertainty or dwa"):
        load_spec(spec_file, ["train.loss_weighting=gradnorm"])
    spec = load_spec(spec_file, ["train.loss_weighting=gradnorm", "train.step_mode=joint"])
    assert (spec.train.loss_weighting, spec.train.gradnorm_alpha) == ("gradnorm", 1.5)


@pytest.mark.parametrize("method", ["uncertainty", "dwa"])
def test_per_task_methods_work_with_alternating_steps(spec_file, method: str):
    assert load_spec(spec_file, [f"train.loss_weighting={method}"]).train.step_mode == \
        "alternating"


def test_a_loss_weight_under_a_method_that_sets_the_weights_is_an_error(spec_file):
    with pytest.raises(SpecError, match=r"tasks.stsb.loss_weight: 2.0 is used by "
                                        r"train.loss_weighting=static only \('dwa' sets the "
                                        r"weights itself\): remove it, or set loss_weighting: "
                                        r"static"):
        load_spec(spec_file, ["train.loss_weighting=dwa", "tasks.stsb.loss_weight=2"])
    assert load_spec(spec_file, ["tasks.stsb.loss_weight=2"]).task("stsb").loss_weight == 2.0


def test_weighting_settings_are_checked_together(spec_file):
    with pytest.raises(SpecError) as e:
        load_spec(spec_file, ["train.dwa_temperature=0", "train.dwa_period=0",
                              "train.gradnorm_alpha=-1", "train.weighting_lr=0"])
    assert e.value.problems == [
        "train.weighting_lr: must be > 0 or null, got 0.0",
        "train.dwa_temperature: must be > 0, got 0.0",
        "train.dwa_period: must be >= 1 or null, got 0",
        "train.gradnorm_alpha: must be >= 0, got -1.0",
    ]


def test_from_spec_builds_each_method_with_its_settings(spec_file):
    def build(*overrides: str):
        spec = load_spec(spec_file, ["train.step_mode=joint", *overrides])
        return make_weighting(spec, TASKS, steps_per_epoch=7)

    static = build("tasks.rte.loss_weight=3")
    assert isinstance(static, Static) and static.w.tolist() == [3.0, 1.0, 1.0]
    dwa = build("train.loss_weighting=dwa", "train.dwa_temperature=4")
    assert (dwa.temperature, dwa.period) == (4.0, 7)  # default period: an epoch
    assert build("train.loss_weighting=dwa", "train.dwa_period=3").period == 3
    gradnorm = build("train.loss_weighting=gradnorm", "train.gradnorm_alpha=0.5")
    assert gradnorm.alpha == 0.5 and gradnorm.tasks == TASKS
    assert isinstance(build("train.loss_weighting=uncertainty"), Uncertainty)
