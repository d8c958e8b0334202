"""Loss weighting: how the task losses of a step become the one loss that is backpropagated.

Every method is one `LossWeighting` class, registered by name in `WEIGHTINGS` (the spec key
`train.loss_weighting`). A method gives each task i a weight w_i and, optionally, a regulariser:

    Total = Σ_i term_i,    term_i = w_i · L_i + reg_i        (task_loss(task, L_i) returns term_i)

| method      | w_i                                          | changes               | steps |
|-------------|----------------------------------------------|-----------------------|-------|
| static      | λ_i = tasks.<i>.loss_weight                  | never                 | both  |
| uncertainty | exp(-s_i), reg_i = s_i (s_i learned)         | by the optimizer      | both  |
| dwa         | K·softmax(r_i/T), r_i = L̄_i(p-1) / L̄_i(p-2) | after each period     | both  |
| gradnorm    | learned, Σ_i w_i = K                         | by the GradNorm loss  | joint |

GradNorm compares the gradient norms of every task *in the same step*, so it needs
`train.step_mode: joint` (an alternating step holds one task). The other three apply to each task's
loss on its own and work in both modes. Learned weights (uncertainty, gradnorm) are parameters of
this module: the trainer puts them in the optimizer (own param group, no weight decay, learning rate
`train.weighting_lr`, default the model's) and saves this module's state with every resumable
checkpoint, so a resumed run is exact.

A new method is one subclass: set `name`, implement `weight_vector`, and override `task_loss`,
`update` or `after_step` if it needs to; then add it to `WEIGHTINGS`.

Example:
    >>> w = Uncertainty(["rte", "stsb"])
    >>> total = w.combine({"rte": torch.tensor(0.7), "stsb": torch.tensor(2.0)})
    >>> total.backward()   # d total / d s_i = 1 - exp(-s_i) L_i
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from mtdnn.spec import Spec


class LossWeighting(nn.Module):
    """Base class. Subclasses set `name` and implement `weight_vector`.

    Class attributes read by the trainer and the spec check:
        joint_only: needs every task's loss in each step (rejected with step_mode=alternating).
        needs_losses: `update` reads the step's mean task losses (all processes averaged).
        needs_grad_norms: `update` also reads ||∇_W term_i||, W the last shared layer's weight.
        constant: the weights never change (not logged: they are in spec.yaml).

    Args:
        tasks: the task names; their order is the order of `weight_vector`.
    """

    name: ClassVar[str]
    joint_only: ClassVar[bool] = False
    needs_losses: ClassVar[bool] = False
    needs_grad_norms: ClassVar[bool] = False
    constant: ClassVar[bool] = False

    def __init__(self, tasks: Sequence[str]):
        super().__init__()
        self.tasks = list(tasks)
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"need at least one task, each once; got {self.tasks}")
        self.index = {t: i for i, t in enumerate(self.tasks)}

    @classmethod
    def from_spec(cls, spec: Spec, tasks: Sequence[str], steps_per_epoch: int) -> LossWeighting:
        return cls(tasks)

    def weight_vector(self) -> Tensor:
        """(K,) the weight w_i of each task's loss, in `tasks` order."""
        raise NotImplementedError

    def weights(self) -> dict[str, Tensor]:
        """Task name -> its current weight (detached)."""
        return dict(zip(self.tasks, self.weight_vector().detach().clone().unbind(), strict=True))

    def task_loss(self, task: str, loss: Tensor) -> Tensor:
        """term_i: what task i's (unweighted, mean) loss adds to the total."""
        return self.weight_vector()[self.index[task]] * loss

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The total loss of the tasks given: Σ_i term_i."""
        return torch.stack([self.task_loss(task, loss) for task, loss in losses.items()]).sum()

    def update(self, step: int, losses: Mapping[str, Tensor],
               grad_norms: Mapping[str, Tensor] | None = None) -> None:
        """Called once per optimizer step, after the backward passes and before `optimizer.step()`,
        when `needs_losses`: the step's mean loss of each task it ran (averaged over processes),
        and with `needs_grad_norms` also ||∇_W term_i||. Default: nothing."""

    def after_step(self) -> None:
        """Called right after `optimizer.step()` (e.g. to renormalise learned weights)."""


class Static(LossWeighting):
    """Total = Σ_i λ_i L_i with the fixed λ_i = tasks.<i>.loss_weight (MT-DNN)."""

    name = "static"
    constant = True

    def __init__(self, weights: Mapping[str, float]):
        super().__init__(list(weights))
        self.floats = {t: float(w) for t, w in weights.items()}
        # Not persistent: fixed by the spec, so nothing to checkpoint.
        self.register_buffer("w", torch.tensor([float(weights[t]) for t in self.tasks]),
                             persistent=False)

    @classmethod
    def from_spec(cls, spec: Spec, tasks: Sequence[str], steps_per_epoch: int) -> Static:
        return cls({t: spec.task(t).loss_weight for t in tasks})

    def weight_vector(self) -> Tensor:
        return self.w

    def task_loss(self, task: str, loss: Tensor) -> Tensor:
        # A Python float: the cheapest product (this is the alternating default's hot path).
        return loss * self.floats[task]


class Uncertainty(LossWeighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018).

    Each task learns s_i = log σ_i² (initialised to 0, i.e. weight 1):

        term_i = exp(-s_i) · L_i + s_i        ∂term_i/∂s_i = 1 - exp(-s_i) · L_i

    so s_i settles where exp(-s_i) = 1 / L_i: a task with a large loss is weighted down, and the
    + s_i term keeps the weights from collapsing to 0. The paper writes 1/(2σ²)·L + log σ for
    regression and 1/σ²·L + log σ for classification; we use one form for every task type (the
    common simplification, e.g. in its reference re-implementations), which differs from the paper
    by a factor 1/2 on the regression term and on the regulariser, i.e. a rescaled σ.

    One scalar parameter per task: with alternating steps, s_i has no gradient in the steps of
    other tasks and the optimizer leaves it alone there (no momentum drift), like task i's head.
    """

    name = "uncertainty"

    def __init__(self, tasks: Sequence[str]):
        super().__init__(tasks)
        self.log_vars = nn.ParameterDict({t: nn.Parameter(torch.zeros(())) for t in self.tasks})

    def weight_vector(self) -> Tensor:
        return torch.exp(-torch.stack([self.log_vars[t] for t in self.tasks]))

    def task_loss(self, task: str, loss: Tensor) -> Tensor:
        s = self.log_vars[task]
        return torch.exp(-s) * loss + s


class DWA(LossWeighting):
    """Dynamic Weight Average (Liu, Johns and Davison, CVPR 2019).

    Training is cut into periods of `period` optimizer steps (`train.dwa_period`, default one
    epoch: the paper's choice). L̄_i(p) is task i's mean loss over the steps of period p that ran
    it. During period p:

        w_i(p) = K · exp(r_i / T) / Σ_j exp(r_j / T),    r_i = L̄_i(p-1) / L̄_i(p-2)

    and w_i = 1 in the first two periods. A task whose loss falls more slowly gets more weight;
    Σ_i w_i = K. A task that did not run in a period (possible with alternating steps and short
    periods) keeps its previous mean, i.e. r_i = 1.

    Args:
        tasks: task names.
        temperature: T (> 0); large T makes the weights uniform.
        period: optimizer steps per period (> 0).
    """

    name = "dwa"
    needs_losses = True

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0, period: int = 1):
        super().__init__(tasks)
        if not temperature > 0 or period < 1:
            raise ValueError(f"need temperature > 0 and period >= 1, got {temperature}, {period}")
        self.temperature, self.period = float(temperature), int(period)
        k = len(self.tasks)
        self.register_buffer("w", torch.ones(k))
        self.register_buffer("sums", torch.zeros(k))  # this period's loss sums and step counts
        self.register_buffer("counts", torch.zeros(k))
        self.register_buffer("last", torch.full((k,), float("nan")))  # L̄(p-1)
        self.register_buffer("before", torch.full((k,), float("nan")))  # L̄(p-2)

    @classmethod
    def from_spec(cls, spec: Spec, tasks: Sequence[str], steps_per_epoch: int) -> DWA:
        return cls(tasks, spec.train.dwa_temperature, spec.train.dwa_period or steps_per_epoch)

    def weight_vector(self) -> Tensor:
        return self.w

    @torch.no_grad()
    def update(self, step: int, losses: Mapping[str, Tensor],
               grad_norms: Mapping[str, Tensor] | None = None) -> None:
        index = torch.tensor([self.index[t] for t in losses], device=self.sums.device)
        self.sums.index_add_(0, index, torch.stack(list(losses.values())).float())
        self.counts.index_add_(0, index, torch.ones_like(index, dtype=self.counts.dtype))
        if step % self.period:
            return
        # All on device: no host sync. NaN marks "no mean yet" (fewer than two periods).
        mean = torch.where(self.counts > 0, self.sums / self.counts.clamp_min(1), self.last)
        self.before.copy_(self.last)
        self.last.copy_(mean)
        self.sums.zero_()
        self.counts.zero_()
        self.w.copy_(self.dwa_weights(self.last, self.before, self.temperature))

    @staticmethod
    def dwa_weights(last: Tensor, before: Tensor, temperature: float) -> Tensor:
        """K·softmax(r/T) with r = last/before; all ones while any mean is still unknown (NaN)."""
        ratio = last / before
        ready = ~torch.isnan(ratio).any()
        ratio = torch.nan_to_num(ratio, nan=1.0, posinf=1.0)  # a task whose old mean was 0
        w = len(ratio) * torch.softmax(ratio / temperature, dim=0)
        return torch.where(ready, w, torch.ones_like(w))


class GradNorm(LossWeighting):
    """GradNorm (Chen, Badrinarayanan, Lee and Rabinovich, ICML 2018). Joint steps only.

    Learned weights w_i (initialised to 1). W is the last shared layer's weight (here the last
    encoder layer's output dense weight, `shared_layer_weight`); in each step:

        G_i = ||∇_W (w_i L_i)||,   Ḡ = mean_i G_i,
        L̃_i = L_i(t) / L_i(0),     r_i = L̃_i / mean_j L̃_j
        L_grad = Σ_i | G_i - Ḡ · r_i^α |        (Ḡ · r_i^α held constant, as in the paper)

    The model is trained on Σ_i w_i L_i with w held constant; w is trained by the optimizer on
    L_grad only, and after each optimizer step clipped at 1e-6 and renormalised to Σ_i w_i = K.
    L_i(0) is the loss of the first step. A task whose loss falls more slowly (larger r_i) gets a
    larger target and thus more weight; α (`train.gradnorm_alpha`) sets how strongly.

    Since G_i = w_i · ||∇_W L_i||, L_grad is computed without second-order gradients. Under fp16
    loss scaling, G arrives scaled like every other gradient; L_grad is linear in G, so w's
    gradient carries the same scale and the GradScaler unscales it with the rest.
    """

    name = "gradnorm"
    joint_only = True
    needs_losses = True
    needs_grad_norms = True

    def __init__(self, tasks: Sequence[str], alpha: float = 1.5):
        super().__init__(tasks)
        if alpha < 0:
            raise ValueError(f"need alpha >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.w = nn.Parameter(torch.ones(len(self.tasks)))
        self.register_buffer("initial", torch.full((len(self.tasks),), float("nan")))  # L_i(0)

    @classmethod
    def from_spec(cls, spec: Spec, tasks: Sequence[str], steps_per_epoch: int) -> GradNorm:
        return cls(tasks, spec.train.gradnorm_alpha)

    def weight_vector(self) -> Tensor:
        return self.w.detach()  # the model's loss must not train w (it would drive w to 0)

    def update(self, step: int, losses: Mapping[str, Tensor],
               grad_norms: Mapping[str, Tensor] | None = None) -> None:
        if grad_norms is None or not set(losses) == set(grad_norms) == set(self.tasks):
            raise ValueError("GradNorm needs the loss and gradient norm of every task in each step "
                             "(train.step_mode: joint)")
        loss = torch.stack([losses[t] for t in self.tasks]).detach().float()
        with torch.no_grad():
            self.initial.copy_(torch.where(torch.isnan(self.initial), loss, self.initial))
        ratio = loss / self.initial.clamp_min(1e-12)
        r = ratio / ratio.mean()
        norms = torch.stack([grad_norms[t] for t in self.tasks]).detach().float()
        # G_i as a function of w_i: the measured norm is that of w_i·∇L_i.
        g = self.w * (norms / self.w.detach())
        target = (g.mean() * r ** self.alpha).detach()
        gradnorm_loss = (g - target).abs().sum()
        (self.w.grad,) = torch.autograd.grad(gradnorm_loss, self.w)

    @torch.no_grad()
    def after_step(self) -> None:
        self.w.clamp_(min=1e-6)
        self.w.mul_(len(self.tasks) / self.w.sum())


WEIGHTINGS: dict[str, type[LossWeighting]] = {
    cls.name: cls for cls in (Static, Uncertainty, DWA, GradNorm)
}


def make_weighting(spec: Spec, tasks: Sequence[str], steps_per_epoch: int) -> LossWeighting:
    """The `train.loss_weighting` method of the spec for these tasks.

    Raises:
        KeyError: an unknown method name (with the closest known one).
    """
    name = spec.train.loss_weighting
    if name not in WEIGHTINGS:
        from mtdnn.spec import unknown_name_message

        raise KeyError(unknown_name_message("loss weighting", name, WEIGHTINGS))
    return WEIGHTINGS[name].from_spec(spec, tasks, steps_per_epoch)


# --------------------------------------------------------------------------------------------------
# The last shared layer (GradNorm's W), and the per-task gradients there.

_OUTPUT_DENSE = re.compile(r"(?:^|\.)layers?\.(\d+)\.output\.dense\.weight$")


def shared_layer_weight(encoder: nn.Module) -> nn.Parameter:
    """GradNorm's W: the output dense weight of the encoder's last layer
    (`encoder.layer[-1].output.dense.weight` in BERT, RoBERTa, ELECTRA, DeBERTa, MiniLM): the
    last weight matrix every task's gradient passes through, and a small one (hidden x
    intermediate). Encoders without that name fall back to their last 2-D trainable weight outside
    the embeddings."""
    numbered = [(int(m.group(1)), p) for name, p in encoder.named_parameters()
                if p.requires_grad and (m := _OUTPUT_DENSE.search(name))]
    if numbered:
        return max(numbered, key=lambda x: x[0])[1]
    matrices = [p for name, p in encoder.named_parameters()
                if p.requires_grad and p.ndim == 2 and "embed" not in name]
    if not matrices:
        raise ValueError("the encoder has no trainable weight matrix for GradNorm to watch")
    return matrices[-1]


class SharedLayerProbe:
    """Sums ∇_W of each backward pass per task, with a tensor hook on W (it sees the gradient of
    each backward on its own, before it is added to W.grad and before any all-reduce).

    Set `task` (an index) before each backward; `norms()` gives ||Σ ∇_W|| per task, averaged over
    processes first (the gradient of the global batch), then `reset()`.
    """

    def __init__(self, weight: nn.Parameter, tasks: Sequence[str]):
        self.tasks = list(tasks)
        self.task: int | None = None
        self.grads = torch.zeros(len(self.tasks), weight.numel(), device=weight.device)
        self._handle = weight.register_hook(self._capture)

    def _capture(self, grad: Tensor) -> None:
        if self.task is not None:
            self.grads[self.task] += grad.reshape(-1).float()

    def norms(self, reduce=None) -> dict[str, Tensor]:
        """Task -> ||∇_W term||; `reduce` (e.g. `accelerator.reduce`) averages over processes."""
        grads = reduce(self.grads, "mean") if reduce is not None else self.grads
        return dict(zip(self.tasks, grads.norm(dim=1).unbind(), strict=True))

    def reset(self) -> None:
        self.grads.zero_()
        self.task = None

    def remove(self) -> None:
        self._handle.remove()
