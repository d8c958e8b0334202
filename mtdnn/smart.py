"""SMART (Jiang et al., ACL 2020): smoothness-inducing adversarial regularization, and its Bregman
proximal point term, per task.

For a training batch of a task with `adv_weight > 0`, the input embeddings e (word embeddings plus
the task vector) are perturbed:

    delta_0 ~ N(0, adv_noise^2)
    delta_{k+1} = Proj_eps(delta_k + adv_step_size * g_k / ||g_k||),
        g_k = grad_delta D(f(e + delta_k), sg(f(e)))          (adv_steps times; `adv_norm`: the
                                                               inf or L2 norm of g and of the ball)
    R = D_s(f(e + delta_K), f(e))                              (gradients reach the model)

D_s is the task type's symmetric divergence (`TaskType.divergence`: the symmetric KL of the
predicted distributions for classification, ranking (over a query's candidates), multiple choice,
token classification (per token) and QA (start and end); the squared difference for regression;
the Bernoulli KL per label for multi-label). The task's loss becomes L + adv_weight * R.

With `bpp_weight > 0`, a slowly updated copy of the model (an exponential moving average of its
weights, momentum `train.bpp_beta`) adds bpp_weight * D_s(f(x), f_ema(x)): the Bregman proximal
point step that keeps each update close to where the model was.

Cost: each adversarial step is one more forward and backward pass of the task's batch, the final
term one more; with adv_steps = 1 a batch of the task costs about 3x a plain one (measured in
BENCHMARKS.md). The regularizer is computed in training only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from mtdnn.steps import StepHook

if TYPE_CHECKING:
    from mtdnn.model import MultiTaskModel
    from mtdnn.spec import Spec, TaskSpec


@dataclass(frozen=True)
class SmartSettings:
    adv_weight: float = 0.0
    adv_steps: int = 1
    adv_step_size: float = 1e-3
    adv_noise: float = 1e-5
    adv_epsilon: float = 1e-6
    adv_norm: str = "inf"
    bpp_weight: float = 0.0

    @classmethod
    def of(cls, task: TaskSpec) -> SmartSettings:
        return cls(task.adv_weight, task.adv_steps, task.adv_step_size, task.adv_noise,
                   task.adv_epsilon, task.adv_norm, task.bpp_weight)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """fp32 for half-precision logits; float64 stays float64 (as in gradient checks)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def sym_kl(a: torch.Tensor, b: torch.Tensor, dim: int = -1,
           where: torch.Tensor | None = None) -> torch.Tensor:
    """KL(p_a || p_b) + KL(p_b || p_a) of the softmax distributions along `dim`, averaged over the
    other positions (`where`: the positions that count, shaped like the logits without `dim`).
    Outcomes with probability 0 in both (logits of -inf: padded choices) add nothing."""
    la, lb = torch.log_softmax(at_least_fp32(a), dim), torch.log_softmax(at_least_fp32(b), dim)
    pa, pb = la.exp(), lb.exp()
    terms = torch.where(pa > 0, pa * (la - lb), 0.0) + torch.where(pb > 0, pb * (lb - la), 0.0)
    per_position = terms.sum(dim)
    if where is None:
        return per_position.mean()
    where = where.to(per_position.dtype)
    return (per_position * where).sum() / where.sum().clamp_min(1)


def bernoulli_sym_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The symmetric KL of independent Bernoulli distributions (sigmoid(a), sigmoid(b)), averaged
    over every output."""
    a, b = at_least_fp32(a), at_least_fp32(b)
    stacked_a = torch.stack([torch.nn.functional.logsigmoid(-a),
                             torch.nn.functional.logsigmoid(a)], -1)
    stacked_b = torch.stack([torch.nn.functional.logsigmoid(-b),
                             torch.nn.functional.logsigmoid(b)], -1)
    pa, pb = stacked_a.exp(), stacked_b.exp()
    return ((pa * (stacked_a - stacked_b)) + (pb * (stacked_b - stacked_a))).sum(-1).mean()


class Perturbation:
    """Adds delta to the input embeddings (installed as `model.embedding_hook`). delta starts as
    Gaussian noise drawn from the model's own generator when it first sees the embeddings."""

    def __init__(self, noise: float, generator: torch.Generator | None = None):
        self.noise, self.generator = noise, generator
        self.delta: torch.Tensor | None = None

    def __call__(self, embeds: torch.Tensor) -> torch.Tensor:
        if self.delta is None:
            noise = torch.randn(embeds.shape, generator=self.generator, dtype=torch.float32)
            self.delta = (noise * self.noise).to(embeds.device, embeds.dtype).requires_grad_()
        return embeds + self.delta


def project(delta: torch.Tensor, epsilon: float, norm: str) -> torch.Tensor:
    """delta clipped into the epsilon ball of the norm, per sequence (over tokens and width)."""
    if norm == "inf":
        return delta.clamp(-epsilon, epsilon)
    flat = delta.flatten(1)
    scale = (epsilon / flat.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
    return delta * scale.view(-1, *([1] * (delta.dim() - 1)))


def _step(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The ascent direction of a step: grad over its norm, per sequence."""
    flat = grad.flatten(1)
    size = flat.abs().amax(dim=1) if norm == "inf" else flat.norm(dim=1)
    return grad / size.clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))


def adversarial_delta(model: MultiTaskModel, task: str, batch: dict[str, Any],
                      clean: torch.Tensor, s: SmartSettings,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """The perturbation of the embeddings that most changes the task's predictions (projected
    gradient ascent, from noise), detached."""
    kind = model.task_types[task]
    perturbation = Perturbation(s.adv_noise, generator)
    for _ in range(s.adv_steps):
        model.embedding_hook = perturbation
        try:
            adv = kind.logits(model, task, batch)
        finally:
            model.embedding_hook = None
        if perturbation.delta is None:  # the task's logits did not read the embeddings
            raise RuntimeError(f"task {task!r}: no input embeddings to perturb")
        (grad,) = torch.autograd.grad(kind.divergence(adv, clean.detach(), batch),
                                      perturbation.delta)
        moved = perturbation.delta.detach() + s.adv_step_size * _step(grad, s.adv_norm)
        perturbation.delta = project(moved, s.adv_epsilon, s.adv_norm).requires_grad_()
    assert perturbation.delta is not None
    return perturbation.delta.detach()


def regularizer_at(model: MultiTaskModel, task: str, batch: dict[str, Any],
                   clean: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """D_s(f(e + delta), f(e)) for a given delta; gradients reach the model through both sides."""
    kind = model.task_types[task]
    model.embedding_hook = lambda embeds: embeds + delta.to(embeds.dtype)
    try:
        adv = kind.logits(model, task, batch)
    finally:
        model.embedding_hook = None
    return kind.divergence(adv, clean, batch)


class Smart:
    """A task's SMART terms, added to its loss by the model in training (`model.regularizers`)."""

    def __init__(self, settings: SmartSettings, seed: int, ema: EMACopy | None):
        self.settings, self.ema = settings, ema
        self.generator = torch.Generator().manual_seed(seed)  # the noise: no global RNG

    def __call__(self, model: MultiTaskModel, task: str, batch: dict[str, Any],
                 clean: torch.Tensor) -> torch.Tensor:
        s = self.settings
        total = clean.new_zeros((), dtype=torch.float32)
        if s.adv_weight > 0:
            delta = adversarial_delta(model, task, batch, clean, s, self.generator)
            total = total + s.adv_weight * regularizer_at(model, task, batch, clean, delta)
        if s.bpp_weight > 0:
            assert self.ema is not None
            with torch.no_grad():
                slow = model.task_types[task].logits(self.ema.model, task, batch)
            total = total + s.bpp_weight * model.task_types[task].divergence(clean, slow, batch)
        return total

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class EMACopy(StepHook):
    """The slowly updated copy of the Bregman proximal point term: after each optimizer step,
    theta_ema <- beta * theta_ema + (1 - beta) * theta. Saved with every resumable checkpoint."""

    def __init__(self, model: MultiTaskModel, beta: float):
        self.beta, self.source = beta, model
        self.model = copy.deepcopy(model).eval()
        self.model.regularizers = {}
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        for slow, fast in zip(self.model.parameters(), self.source.parameters(), strict=True):
            slow.mul_(self.beta).add_(fast.detach(), alpha=1 - self.beta)

    def state_dict(self) -> dict[str, Any]:
        return {k: v.clone() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state)


def install(spec: Spec, model: MultiTaskModel) -> tuple[list[StepHook], list[Any]]:
    """Puts the spec's SMART terms on the (unwrapped) model. Returns (the step hooks: the slow
    copy, updated after each step; everything to checkpoint: the slow copy and the noise
    generators); both empty when no task uses SMART."""
    settings = {t.name: SmartSettings.of(t) for t in spec.tasks}
    used = {n: s for n, s in settings.items() if s.adv_weight > 0 or s.bpp_weight > 0}
    ema = EMACopy(model, spec.train.bpp_beta) if any(s.bpp_weight > 0 for s in used.values()) \
        else None
    model.regularizers = {n: Smart(s, spec.seed + i, ema) for i, (n, s) in
                          enumerate(used.items())}
    hooks: list[StepHook] = [ema] if ema is not None else []
    return hooks, [*hooks, *model.regularizers.values()]

