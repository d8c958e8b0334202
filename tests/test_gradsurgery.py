"""Tests of gradient surgery (mtdnn/gradsurgery.py) on crafted gradients."""

from __future__ import annotations

import itertools
import math
from typing import get_args

import numpy as np
import pytest
import torch
from conftest import write_spec

import mtdnn.methods
from mtdnn.gradsurgery import (
    SURGERIES,
    CAGrad,
    PCGrad,
    SharedGradients,
    cagrad,
    cagrad_weights,
    pcgrad,
)
from mtdnn.spec import SpecError, SurgeryName, load_spec

MAX_CAGRAD_TASKS = mtdnn.methods.method("gradient_surgery", "cagrad").max_tasks


def g(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pcgrad_reference(grads: torch.Tensor, orders: list[list[int]]) -> torch.Tensor:
    """Algorithm 1 of Yu et al. (2020), written out: orders[i] is the order of the j != i."""
    out = []
    for i, order in enumerate(orders):
        gi = grads[i].clone()
        for j in order:
            dot = float(gi @ grads[j])
            if dot < 0:
                gi = gi - dot / float(grads[j] @ grads[j]) * grads[j]
        out.append(gi)
    return torch.stack(out).sum(0)


def test_the_spec_names_the_registered_methods():
    assert get_args(SurgeryName) == mtdnn.methods.names("gradient_surgery") == ("none", *SURGERIES)
    assert mtdnn.methods.registry("gradient_surgery") == SURGERIES


# --- PCGrad ---------------------------------------------------------------------------------------


def test_pcgrad_on_the_textbook_conflict():
    # g1·g2 = -1 < 0: g1 -> g1 - (-1/2) g2 = (0.5, 0.5), g2 -> g2 - (-1/1) g1 = (0, 1).
    out = pcgrad(g([1, 0], [-1, 1]), gen())
    assert out.tolist() == [0.5, 1.5]


def test_pcgrad_projected_gradients_no_longer_conflict():
    g1, g2 = g([3, 1, -2], [-1, 2, 1])
    assert float(g1 @ g2) < 0
    p1 = g1 - float(g1 @ g2) / float(g2 @ g2) * g2
    p2 = g2 - float(g1 @ g2) / float(g1 @ g1) * g1
    assert float(p1 @ g2) == pytest.approx(0, abs=1e-12)  # on the normal plane of g2
    assert float(p2 @ g1) == pytest.approx(0, abs=1e-12)
    assert torch.allclose(pcgrad(torch.stack([g1, g2]), gen()), p1 + p2, atol=1e-12)


@pytest.mark.parametrize("grads", [g([1, 0], [0, 1]),  # orthogonal
                                   g([1, 2], [2, 4.5]),  # aligned
                                   g([1, 1, 0], [0.5, 0, 2], [0, 3, 1])])  # pairwise dot >= 0
def test_pcgrad_leaves_gradients_without_conflict_unchanged(grads):
    assert torch.equal(pcgrad(grads, gen()), grads.sum(0))


def test_pcgrad_order_comes_from_the_seeded_generator():
    # Three tasks where the order of projections matters.
    grads = g([1, 0, 0], [-1, 1, 0.2], [-0.5, -1, 1])
    every_order = {tuple(pcgrad_reference(grads, [list(o0), list(o1), list(o2)]).tolist())
                   for o0 in itertools.permutations([1, 2]) for o1 in itertools.permutations([0, 2])
                   for o2 in itertools.permutations([0, 1])}
    assert len(every_order) > 1
    results = {tuple(pcgrad(grads, gen(seed)).tolist()) for seed in range(40)}
    assert len(results) > 1  # the generator does pick the orders
    for result in results:
        assert any(np.allclose(result, ref, atol=1e-12) for ref in every_order)
    assert torch.equal(pcgrad(grads, gen(3)), pcgrad(grads, gen(3)))
    # The global RNG is neither used nor disturbed.
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    pcgrad(grads, gen(5))
    assert torch.equal(torch.rand(1), before)


def test_pcgrad_method_is_seeded_per_step():
    grads = g([1, 0, 0], [-1, 1, 0.2], [-0.5, -1, 1])
    a, b = PCGrad(seed=42), PCGrad(seed=42)
    assert all(torch.equal(a(grads, step), b(grads, step)) for step in range(1, 20))
    assert len({tuple(a(grads, step).tolist()) for step in range(1, 20)}) > 1


# --- CAGrad ---------------------------------------------------------------------------------------


def test_cagrad_with_c_zero_is_the_mean_gradient():
    grads = torch.randn(4, 10, generator=gen(1), dtype=torch.float64)
    assert torch.equal(cagrad(grads, 0.0), grads.mean(0))
    assert torch.equal(CAGrad(0.0)(grads, 1), 4 * grads.mean(0))  # the method: the sum's scale


def test_cagrad_hand_checked_two_tasks():
    # g1 = (1, 0), g2 = (0, 1): g0 = (0.5, 0.5), ||g0|| = 1/√2. By symmetry w = (1/2, 1/2), so
    # g_w = g0 and d = g0 + c·||g0||/||g_w||·g_w = (1 + c)·g0 = (0.75, 0.75) for c = 0.5;
    # rescaled by 1/(1 + c²) = 0.8: (0.6, 0.6).
    out = cagrad(g([1, 0], [0, 1]), 0.5)
    assert out.tolist() == pytest.approx([0.6, 0.6], abs=1e-12)
    # g1 = (2, 0), g2 = (0, 1), c = 0.5: g0 = (1, 0.5), b = (g1·g0, g2·g0) = (2, 0.5),
    # ρ = c·||g0|| = 0.5·√1.25. On w = (a, 1-a): F(a) = 1.5a + 0.5 + ρ·sqrt(5a² - 2a + 1), and
    # F'(a) = 1.5 + ρ(5a - 1)/sqrt(5a² - 2a + 1) > 0 on [0, 1] (F'(0) = 1.5 - ρ > 0, and squaring
    # F' = 0 gives 3.4375a² - 1.375a + 1.9375 = 0, which has no real root): w = (0, 1), g_w = g2,
    # d = g0 + ρ·g2 = (1, 0.5 + ρ), rescaled by 1/1.25. The worse task (g2) gains: 0.5 -> 1.06.
    rho = 0.5 * math.sqrt(1.25)
    assert cagrad_weights(np.array([[4.0, 0.0], [0.0, 1.0]]), 0.5).tolist() == [0.0, 1.0]
    assert cagrad(g([2, 0], [0, 1]), 0.5).tolist() == pytest.approx(
        [1 / 1.25, (0.5 + rho) / 1.25], abs=1e-12)
    # c = 0.9: still F'(0) = 1.5 - 0.9·√1.25 = 0.49 > 0, the same vertex; rescaled by 1/1.81.
    rho = 0.9 * math.sqrt(1.25)
    assert cagrad(g([2, 0], [0, 1]), 0.9).tolist() == pytest.approx(
        [1 / 1.81, (0.5 + rho) / 1.81], abs=1e-12)


def _best_in_the_ball(grads: np.ndarray, c: float, n: int = 200_000) -> tuple[float, float]:
    """max over ||d - g0|| <= c||g0|| of min_i g_i·d, by brute force on n points of the circle
    (2-D), and the grid's error bound: a half step moves d by r·π/n, each g_i·d by ||g_i||·r·π/n."""
    g0 = grads.mean(0)
    r = c * np.linalg.norm(g0)
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    d = g0 + r * np.stack([np.cos(theta), np.sin(theta)], 1)
    return float((d @ grads.T).min(1).max()), float(np.linalg.norm(grads, axis=1).max() * r *
                                                    np.pi / n)


@pytest.mark.parametrize("grads", [[[1, 0], [0, 1]], [[2, 0], [0, 1]], [[1, 0], [-0.6, 1]],
                                   [[3, 1], [-1, 0.5], [0.2, -0.4]]])
@pytest.mark.parametrize("c", [0.2, 0.5, 0.9])
def test_cagrad_solves_the_primal_problem_in_two_dimensions(grads, c: float):
    grads = np.array(grads, dtype=np.float64)
    d = cagrad(torch.tensor(grads), c).numpy() * (1 + c * c)  # undo the rescaling
    assert np.linalg.norm(d - grads.mean(0)) == pytest.approx(c * np.linalg.norm(grads.mean(0)))
    best, grid_error = _best_in_the_ball(grads, c)
    # No point of the grid does better, and d is no better than the grid allows.
    assert best - 1e-12 <= float((grads @ d).min()) <= best + grid_error


def test_cagrad_never_improves_the_worst_task_less_than_the_mean_gradient():
    rng = np.random.default_rng(0)
    for case in range(200):
        k = int(rng.integers(2, 7))
        grads = rng.normal(size=(k, 50)) * rng.uniform(0.01, 10, size=(k, 1))
        if case % 2:  # a strong conflict: one task nearly opposes another
            grads[1] = -0.5 * grads[0] + 0.01 * rng.normal(size=50)
        c = float(rng.uniform(0.05, 0.95))
        t = torch.tensor(grads)
        d = cagrad(t, c) * (1 + c * c)
        mean = t.mean(0)
        assert float((t @ d).min()) >= float((t @ mean).min()) - 1e-9 * float(
            (t @ mean).abs().max()), case


def test_cagrad_dual_matches_a_general_solver():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(1)
    for _ in range(30):
        k = int(rng.integers(2, 6))
        grads = rng.normal(size=(k, 30)) * rng.uniform(0.1, 5, size=(k, 1))
        gram, c = grads @ grads.T, float(rng.uniform(0.1, 0.9))
        b, rho = gram.mean(1), c * math.sqrt(gram.mean())

        def objective(w, gram=gram, b=b, rho=rho):
            return float(w @ b + rho * math.sqrt(max(w @ gram @ w, 0)))

        ref = scipy_optimize.minimize(
            objective, np.full(k, 1 / k), method="SLSQP", bounds=[(0, 1)] * k,
            constraints={"type": "eq", "fun": lambda w: 1 - w.sum()},
            options={"ftol": 1e-15, "maxiter": 1000})
        w = cagrad_weights(gram, c)
        assert w.min() >= 0 and w.sum() == pytest.approx(1)
        assert objective(w) <= ref.fun + 1e-9 * abs(ref.fun) + 1e-12


# --- collecting per-task gradients ----------------------------------------------------------------


def test_shared_gradients_are_collected_per_task_and_written_back():
    torch.manual_seed(0)
    shared, head_a, head_b = torch.nn.Linear(3, 4), torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)
    unused = torch.nn.Parameter(torch.zeros(2))
    x = torch.randn(5, 3)
    params = [*shared.parameters(), unused]
    collect = SharedGradients(params, num_tasks=2)
    loss = {"a": lambda: head_a(shared(x)).pow(2).mean(), "b": lambda: -head_b(shared(x)).mean()}
    expected = {k: torch.cat([gr.reshape(-1) for gr in torch.autograd.grad(f(), list(
        shared.parameters()))]) for k, f in loss.items()}
    for i, task in enumerate(["a", "b"]):
        for _ in range(2):  # two micro-batches: summed
            (loss[task]() / 2).backward()
            collect.collect(i)
            assert all(p.grad is None for p in shared.parameters())  # moved out of .grad
    assert torch.allclose(collect.grads[0, :16], expected["a"], atol=1e-6)
    assert torch.allclose(collect.grads[1, :16], expected["b"], atol=1e-6)
    assert head_a.weight.grad is not None  # heads keep their own gradients
    direction = torch.arange(18, dtype=torch.float32)
    collect.write(direction)
    assert torch.equal(shared.weight.grad, direction[:12].view(4, 3))
    assert torch.equal(shared.bias.grad, direction[12:16])
    assert unused.grad is None  # no task reached it: no optimizer update either
    collect.reset()
    assert collect.grads.abs().sum() == 0


# --- spec checks ----------------------------------------------------------------------------------

SPEC = """
encoder: tiny-encoder
tasks:
  rte: {type: classification, text: [a, b], labels: [x, y], hub: {path: glue, name: rte}}
  stsb: {type: regression, text: [a, b], hub: {path: glue, name: stsb}}
"""


def test_surgery_needs_joint_steps(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", SPEC)
    with pytest.raises(SpecError, match=r"train.gradient_surgery: 'pcgrad' needs "
                                        r"train.step_mode=joint .*set step_mode: joint, or "
                                        r"gradient_surgery: none"):
        load_spec(spec, ["train.gradient_surgery=pcgrad"])
    ok = load_spec(spec, ["train.gradient_surgery=cagrad", "train.step_mode=joint",
                          "train.loss_weighting=gradnorm"])
    assert (ok.train.gradient_surgery, ok.train.cagrad_c) == ("cagrad", 0.5)


def test_surgery_names_and_settings_are_checked(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", SPEC)
    with pytest.raises(SpecError) as e:
        load_spec(spec, ["train.gradient_surgery=pcgard", "train.step_mode=joint"])
    assert e.value.problems == ["train.gradient_surgery: 'pcgard' is not valid; did you mean "
                                "'pcgrad'? (choose one of: none, pcgrad, cagrad)"]
    with pytest.raises(SpecError, match=r"train.cagrad_c: must be in \[0, 1\), got 1.0"):
        load_spec(spec, ["train.gradient_surgery=cagrad", "train.step_mode=joint",
                         "train.cagrad_c=1"])


def test_cagrad_task_limit(tmp_path):
    tasks = "\n".join(f"  t{i}: {{type: regression, text: [a], hub: {{path: x}}}}"
                      for i in range(MAX_CAGRAD_TASKS + 1))
    spec = write_spec(tmp_path / "spec.yaml", f"encoder: e\ntasks:\n{tasks}\n")
    with pytest.raises(SpecError, match=rf"at most {MAX_CAGRAD_TASKS} tasks \(this spec has "
                                        rf"{MAX_CAGRAD_TASKS + 1}\): use pcgrad"):
        load_spec(spec, ["train.gradient_surgery=cagrad", "train.step_mode=joint"])
    load_spec(spec, ["train.gradient_surgery=pcgrad", "train.step_mode=joint"])
