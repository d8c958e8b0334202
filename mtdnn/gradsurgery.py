"""Gradient surgery: combining the tasks' gradients of the shared encoder when they conflict.

In a joint step (`train.step_mode: joint`) every task i has its own gradient g_i of the shared
parameters (the encoder's; its term of the weighted loss, see `mtdnn.weighting`). Summing them, as
plain training does, lets a task with a large gradient undo another's progress when they point in
opposing directions. A surgery method turns the (K, D) matrix of task gradients into the one
direction written to the shared parameters; the heads (and the task embedding, one row per task)
keep the plain sum of their task gradients, which is their own task's gradient.

| `train.gradient_surgery` | shared gradient                                                    |
|--------------------------|--------------------------------------------------------------------|
| none                     | Σ_i g_i (plain training; no per-task gradients are kept)           |
| pcgrad                   | Σ_i g_i^PC: each g_i projected off every g_j it conflicts with     |
| cagrad                   | K · d / (1 + c²): d the conflict-averse direction around the mean  |

Both directions are on the scale of the sum, so `c = 0` (CAGrad) and gradients without conflicts
(PCGrad) give exactly the plain training step. Surgery needs joint steps; under several processes
the per-task gradients are averaged over processes before the surgery (it is not linear), so the
result is that of one process with the global batch.

Example:
    >>> pcgrad(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]), torch.Generator().manual_seed(0))
    tensor([0.5000, 1.5000])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from mtdnn.spec import Spec


def pcgrad(grads: Tensor, generator: torch.Generator) -> Tensor:
    """PCGrad (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020, Algorithm 1).

    For each task i, g_i^PC starts as g_i; for every other task j, in a random order drawn from
    `generator`: if g_i^PC · g_j < 0, g_i^PC -= (g_i^PC · g_j / ||g_j||²) g_j (projection onto the
    normal plane of the original g_j). Returns Σ_i g_i^PC.

    Args:
        grads: (K, D) one task gradient per row.
        generator: a seeded CPU generator (the random orders; no global RNG is used).
    Returns:
        (D,) the combined gradient.
    """
    k = grads.shape[0]
    sq_norms = (grads * grads).sum(dim=1).clamp_min(torch.finfo(grads.dtype).tiny)  # (K,)
    out = grads.clone()
    for i in range(k):
        for j in torch.randperm(k, generator=generator).tolist():
            if j == i:
                continue
            # No branch on the sign: no host sync per pair. Without a conflict, 0 is subtracted.
            dot = torch.dot(out[i], grads[j]).clamp(max=0)
            out[i] -= (dot / sq_norms[j]) * grads[j]
    return out.sum(dim=0)


def cagrad_weights(gram: np.ndarray, c: float) -> np.ndarray:
    """Solves CAGrad's dual exactly, from the Gram matrix A = (g_i · g_j) of the K task gradients:

        min_{w in simplex}  F(w) = w·b + ρ·sqrt(wᵀAw),    b = A·1/K (b_i = g_i·g0),  ρ = c·||g0||

    F is convex, so the minimum is a KKT point on some face S of the simplex (w_i = 0 off S). On
    the relative interior of S, with s = sqrt(wᵀAw) and y = ρ·w_S/s, stationarity reads
    A_S·y = λ·1 - b_S; with Σ w_S = 1 and yᵀA_S·y = ρ² this leaves a quadratic in λ:

        α·λ² - 2β·λ + γ - ρ² = 0,   α = 1ᵀA_S⁻¹1,  β = 1ᵀA_S⁻¹b_S,  γ = b_Sᵀ A_S⁻¹ b_S

    and w_S = y / Σy. Every support (and each root) gives a candidate point of the simplex; the
    one with the smallest F is the minimum. Exact whenever the task gradients are linearly
    independent (in practice always: D ≫ K); otherwise the best candidate found. Cost: 2^K - 1
    small solves (about 1 ms for 4 tasks, 0.1 s for 10; the spec allows at most
    `max_tasks` of cagrad in `mtdnn.methods`).

    Returns:
        w (K,), float64.
    """
    k = len(gram)
    b = gram.mean(axis=1)
    rho = c * math.sqrt(max(float(gram.mean()), 0.0))

    def objective(w: np.ndarray) -> float:
        return float(w @ b + rho * math.sqrt(max(float(w @ gram @ w), 0.0)))

    best = np.eye(k)[int(np.argmin(b + rho * np.sqrt(np.clip(np.diag(gram), 0, None))))]
    best_f = objective(best)
    for size in range(2, k + 1):
        for support in itertools.combinations(range(k), size):
            s = list(support)
            try:
                p, q = np.linalg.solve(gram[np.ix_(s, s)], np.stack([np.ones(size), b[s]], 1)).T
            except np.linalg.LinAlgError:  # linearly dependent gradients: no interior KKT point
                continue
            alpha, beta, gamma = p.sum(), q.sum(), float(b[s] @ q)
            disc = beta * beta - alpha * (gamma - rho * rho)
            if not (np.isfinite(disc) and disc >= 0 and alpha != 0):
                continue
            for lam in ((beta + math.sqrt(disc)) / alpha, (beta - math.sqrt(disc)) / alpha):
                y = lam * p - q
                if y.sum() <= 0 or y.min() < -1e-9 * np.abs(y).max():
                    continue
                w = np.zeros(k)
                w[s] = np.clip(y, 0, None) / np.clip(y, 0, None).sum()
                f = objective(w)  # every candidate is a point of the simplex: F is honest
                if f < best_f:
                    best, best_f = w, f
    return best


def cagrad(grads: Tensor, c: float) -> Tensor:
    """CAGrad (Liu, Liu, Jin, Stone and Liu, "Conflict-Averse Gradient Descent for Multi-task
    Learning", NeurIPS 2021).

    With g0 the mean gradient, CAGrad looks for the direction d in the ball ||d - g0|| <= c·||g0||
    that maximises the smallest task improvement min_i g_i·d. The paper's dual is
    min_{w in simplex} g_w·g0 + sqrt(φ)·||g_w|| with φ = c²·||g0||² (so sqrt(φ) = c·||g0||), and

        d = g0 + (c · ||g0|| / ||g_w||) · g_w,     returned as d / (1 + c²)

    the rescaling of the authors' reference implementation (Cranial-XIX/CAGrad, `rescale=1`, the
    setting of their experiments). c = 0 gives the mean gradient. The Gram matrix is built on the
    gradients' device; the K-dimensional dual is solved on the CPU in float64.

    Args:
        grads: (K, D) one task gradient per row.
        c: the radius c >= 0 (`train.cagrad_c`; the paper uses 0.2-0.8, the spec requires c < 1).
    Returns:
        (D,) d / (1 + c²), on the scale of the mean gradient.
    """
    g0 = grads.mean(dim=0)
    if c == 0:
        return g0
    gram = (grads @ grads.T).double().cpu().numpy()  # (K, K)
    w = cagrad_weights(gram, c)
    g_w = torch.as_tensor(w, dtype=grads.dtype, device=grads.device) @ grads  # (D,)
    g0_norm = math.sqrt(max(gram.mean(), 0.0))
    gw_norm = math.sqrt(max(float(w @ gram @ w), 0.0))
    scale = c * g0_norm / gw_norm if gw_norm > 0 else 0.0
    return (g0 + scale * g_w) / (1 + c * c)


# --------------------------------------------------------------------------------------------------
# The methods by name, as the trainer uses them.


class GradientSurgery:
    """Turns the (K, D) per-task shared gradients of one optimizer step into one (D,) gradient on
    the scale of their sum. Subclasses set `name` and implement `__call__`."""

    name: ClassVar[str]

    @classmethod
    def from_spec(cls, spec: Spec) -> GradientSurgery:
        return cls()

    def __call__(self, grads: Tensor, step: int) -> Tensor:
        raise NotImplementedError


class PCGrad(GradientSurgery):
    """`pcgrad` above; the random orders of step t come from a generator seeded with (seed, t),
    so they are the same on every process and after a resume, with no state to save."""

    name = "pcgrad"

    def __init__(self, seed: int = 0):
        self.seed = seed

    @classmethod
    def from_spec(cls, spec: Spec) -> PCGrad:
        return cls(spec.seed)

    def __call__(self, grads: Tensor, step: int) -> Tensor:
        seed = int(np.random.SeedSequence([self.seed, step]).generate_state(1)[0])
        return pcgrad(grads, torch.Generator().manual_seed(seed))


class CAGrad(GradientSurgery):
    """`cagrad` above, times K: the sum scale (c = 0 is then exactly the plain sum), as the
    reference implementation does ("to match the sum loss")."""

    name = "cagrad"

    def __init__(self, c: float = 0.5):
        if c < 0:
            raise ValueError(f"need c >= 0, got {c}")
        self.c = float(c)

    @classmethod
    def from_spec(cls, spec: Spec) -> CAGrad:
        return cls(spec.train.cagrad_c)

    def __call__(self, grads: Tensor, step: int) -> Tensor:
        return grads.shape[0] * cagrad(grads, self.c)


SURGERIES: dict[str, type[GradientSurgery]] = {cls.name: cls for cls in (PCGrad, CAGrad)}
NO_SURGERY = "none"


def make_surgery(spec: Spec) -> GradientSurgery | None:
    """The spec's `train.gradient_surgery`, or None for `none`.

    Raises:
        KeyError: an unknown name (with the closest known one).
    """
    name = spec.train.gradient_surgery
    if name == NO_SURGERY:
        return None
    if name not in SURGERIES:
        from mtdnn.spec import unknown_name_message

        raise KeyError(unknown_name_message("gradient surgery", name, [NO_SURGERY, *SURGERIES]))
    return SURGERIES[name].from_spec(spec)


class SharedGradients:
    """Per-task gradients of the shared parameters, collected one backward pass at a time.

    After each task's backward, `collect(i)` moves what it left in the shared parameters' `.grad`
    into row i of a (K, D) float32 matrix (summing over micro-batches) and clears `.grad`, so the
    next task's backward starts from zero there. `write(direction)` sets the `.grad` of every
    shared parameter that received a gradient from the flat (D,) direction.

    Args:
        params: the shared parameters (those without `requires_grad` are left out).
        num_tasks: K.
    """

    def __init__(self, params: Iterable[nn.Parameter], num_tasks: int):
        self.params = [p for p in params if p.requires_grad]
        self.sizes = [p.numel() for p in self.params]
        device = self.params[0].device if self.params else "cpu"
        self.grads = torch.zeros(num_tasks, sum(self.sizes), device=device)  # (K, D)
        self.touched = [False] * len(self.params)

    def collect(self, task: int) -> None:
        offset = 0
        for n, (p, size) in enumerate(zip(self.params, self.sizes, strict=True)):
            if p.grad is not None:
                self.grads[task, offset:offset + size] += p.grad.reshape(-1).float()
                p.grad = None
                self.touched[n] = True
            offset += size

    def write(self, direction: Tensor) -> None:
        offset = 0
        for n, (p, size) in enumerate(zip(self.params, self.sizes, strict=True)):
            if self.touched[n]:  # a parameter no task reached keeps grad None (no optimizer update)
                p.grad = direction[offset:offset + size].view_as(p).to(p.dtype).clone()
            offset += size

    def reset(self) -> None:
        self.grads.zero_()
        self.touched = [False] * len(self.params)
