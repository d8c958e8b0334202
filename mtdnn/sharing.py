"""Sharing schemes (`train.sharing`): which encoder each task runs through, as step hooks.

| scheme | encoders                                            | each step                        |
|--------|-----------------------------------------------------|----------------------------------|
| hard   | one, shared by every task (MT-DNN)                  | nothing                          |
| soft   | one copy per task, or per `tasks.<name>.encoder_group` | + the gradient of the L2 pull |

The copies themselves are made by the model (`MultiTaskModel`, from each task's `encoder_group`);
the scheme checks that they fit in memory before they are made, and adds the pull that keeps them
close after the task gradients, before clipping.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from mtdnn.errors import SpecError
from mtdnn.model import TaskInfo, encoder_groups
from mtdnn.steps import Losses, StepHook

if TYPE_CHECKING:
    from mtdnn.model import MultiTaskModel
    from mtdnn.spec import Spec


class HardSharing(StepHook):
    """One encoder for every task: nothing to add to a step."""

    @classmethod
    def check_memory(cls, spec: Spec, encoder: torch.nn.Module, infos: list[TaskInfo],
                     device: torch.device) -> None:
        """Before the model is built: refuse a run that cannot fit (no-op: one encoder)."""

    def __init__(self, spec: Spec, model: MultiTaskModel):
        self.spec, self.model = spec, model


class SoftSharing(HardSharing):
    """Encoder copies pulled together by `soft_sharing_weight * sum_g ||theta_g - mean||^2`."""

    @classmethod
    def check_memory(cls, spec: Spec, encoder: torch.nn.Module, infos: list[TaskInfo],
                     device: torch.device) -> None:
        """Each copy holds weights, gradients and two AdamW moments, 16 bytes per fp32 parameter.
        Refuses a run whose extra copies do not fit the memory free now, before they are made
        (activations come on top)."""
        copies = len(encoder_groups(infos))
        if copies < 2:
            return
        per_copy = 16 * sum(p.numel() for p in encoder.parameters())
        need, free = per_copy * copies, available_memory(device)
        gib = 2 ** 30
        print(f"mtdnn: soft sharing: {copies} encoder copies, {need / gib:.2f} GiB of weights, "
              f"gradients and optimizer state ({per_copy / gib:.2f} GiB each)")
        if free is not None and per_copy * (copies - 1) > free:
            raise SpecError(spec.source, [
                f"train.sharing: soft sharing needs {copies} encoder copies, {need / gib:.2f} GiB "
                f"for weights, gradients and optimizer state, but {free / gib:.2f} GiB is free on "
                f"{device.type}: put tasks into fewer groups (tasks.<name>.encoder_group) or use "
                "sharing: hard"])

    def before_optimizer_step(self, step: int, losses: Losses,
                              grad_norms: dict[str, torch.Tensor] | None) -> None:
        # After the (all-reduced) task gradients: every process adds the same pull.
        self.model.add_soft_sharing_grad(self.spec.train.soft_sharing_weight)

    def log_values(self) -> dict[str, float]:
        return {"soft_sharing_penalty": self.model.soft_sharing_penalty().item()}


def available_memory(device: torch.device) -> int | None:
    """Bytes free for training on `device`, or None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not Linux
        return None


def make_sharing(spec: Spec, model: Any) -> HardSharing:
    """The `train.sharing` scheme of the spec, as a step hook on the (unwrapped) model."""
    from mtdnn.methods import implementation

    return implementation("sharing", spec.train.sharing)(spec, model)
