"""The multi-task methods by name: the registry of step modes, samplers, loss weightings,
gradient surgery and sharing schemes.

Each `Method` says which `train:` key selects it, which settings only it reads, which choices of
the other keys it needs, and which class implements it (a `module:Class` path, imported only when
training starts, so that loading a spec never imports torch). The spec reads the valid names from
here and checks every combination generically (`mtdnn.spec.checks`); the training code builds the
chosen method with `build`.

Adding a method is one class (in the module of its kind) plus one line here.

Example:
    >>> names("loss_weighting")
    ('static', 'uncertainty', 'dwa', 'gradnorm')
    >>> method("gradient_surgery", "pcgrad").requires
    {'step_mode': ('joint',), 'sharing': ('hard',)}
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The keys under `train:` that pick a method, in the order their problems are reported.
KINDS = ("step_mode", "sampler", "loss_weighting", "gradient_surgery", "sharing")


@dataclass(frozen=True)
class Method:
    kind: str  # the train: key that selects it
    name: str  # its value
    impl: str | None  # "module:Class" of the implementation; None: nothing to build (none)
    settings: tuple[str, ...] = ()  # train.<key>s only this method (and others naming them) reads
    task_settings: tuple[str, ...] = ()  # tasks.<name>.<key>s likewise
    # other kind -> the names it works with, and why (said in the error message)
    requires: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    why: str = ""
    max_tasks: int | None = None  # at most this many tasks (cagrad's exact solver)
    doc: str = ""


_JOINT = {"step_mode": ("joint",)}
_ALTERNATING_WHY = ("it picks one task per step; joint steps run every task each step")
_SURGERY_WHY = ("it combines the gradients of every task of a step on the parameters all tasks "
                "share; an alternating step holds one task, and with sharing=soft no parameter is "
                "shared")

METHODS: tuple[Method, ...] = (
    # ---- step modes (mtdnn.steps)
    Method("step_mode", "alternating", "mtdnn.steps:AlternatingStep",
           doc="each micro-batch holds one task, picked by the sampler (MT-DNN)"),
    Method("step_mode", "joint", "mtdnn.steps:JointStep",
           doc="each micro-step runs one batch of every task; the weighted sum is backpropagated"),
    # ---- samplers (mtdnn.schedules)
    Method("sampler", "proportional", "mtdnn.schedules:Proportional",
           doc="every batch of every task once per epoch, in a seeded random order (MT-DNN)"),
    Method("sampler", "uniform", "mtdnn.schedules:Uniform",
           requires={"step_mode": ("alternating",)}, why=_ALTERNATING_WHY, doc="tasks take turns"),
    Method("sampler", "temperature", "mtdnn.schedules:Temperature",
           settings=("temperature", "examples_cap"), requires={"step_mode": ("alternating",)},
           why=_ALTERNATING_WHY, doc="p_i ~ min(n_i, examples_cap)^(1/T) (T5, jiant)"),
    Method("sampler", "main_ratio", "mtdnn.schedules:MainRatio",
           settings=("main_task", "main_ratio"), requires={"step_mode": ("alternating",)},
           why=_ALTERNATING_WHY,
           doc="every batch of main_task plus main_ratio times as many of the others (MT-DNN)"),
    Method("sampler", "annealed", "mtdnn.schedules:Annealed", settings=("anneal_end",),
           requires={"step_mode": ("alternating",)}, why=_ALTERNATING_WHY,
           doc="p_i ~ n_i^a, a from 1 down to anneal_end over the run (Stickland and Murray)"),
    # ---- loss weighting (mtdnn.weighting)
    Method("loss_weighting", "static", "mtdnn.weighting:Static", task_settings=("loss_weight",),
           doc="fixed weights tasks.<name>.loss_weight"),
    Method("loss_weighting", "uncertainty", "mtdnn.weighting:Uncertainty",
           settings=("weighting_lr",), doc="learned exp(-s_i) L_i + s_i (Kendall et al.)"),
    Method("loss_weighting", "dwa", "mtdnn.weighting:DWA",
           settings=("dwa_temperature", "dwa_period"),
           doc="K softmax(r_i / T) of the loss ratios (Liu et al.)"),
    Method("loss_weighting", "gradnorm", "mtdnn.weighting:GradNorm",
           settings=("gradnorm_alpha", "weighting_lr"),
           requires={"step_mode": ("joint",), "sharing": ("hard",)},
           why="it compares the tasks' gradients at the last shared layer within each step: an "
               "alternating step holds one task, and with sharing=soft no layer is shared",
           doc="learned weights that balance gradient norms (Chen et al.)"),
    # ---- gradient surgery (mtdnn.gradsurgery)
    Method("gradient_surgery", "none", None, doc="the plain sum of the task gradients"),
    Method("gradient_surgery", "pcgrad", "mtdnn.gradsurgery:PCGrad",
           requires={**_JOINT, "sharing": ("hard",)}, why=_SURGERY_WHY,
           doc="project conflicting task gradients off each other (Yu et al.)"),
    Method("gradient_surgery", "cagrad", "mtdnn.gradsurgery:CAGrad", settings=("cagrad_c",),
           requires={**_JOINT, "sharing": ("hard",)}, why=_SURGERY_WHY, max_tasks=12,
           doc="the conflict-averse direction near the mean gradient (Liu et al.)"),
    # ---- sharing (mtdnn.sharing)
    Method("sharing", "hard", "mtdnn.sharing:HardSharing", doc="one encoder for every task"),
    Method("sharing", "soft", "mtdnn.sharing:SoftSharing", settings=("soft_sharing_weight",),
           task_settings=("encoder_group",),
           doc="an encoder copy per task or group, pulled together by an L2 penalty"),
)


def names(kind: str) -> tuple[str, ...]:
    """The method names of one kind, in the table's order."""
    if kind not in KINDS:
        raise KeyError(f"unknown method kind {kind!r} (known: {', '.join(KINDS)})")
    return tuple(m.name for m in METHODS if m.kind == kind)


def method(kind: str, name: str) -> Method:
    """The table entry of one method.

    Raises:
        KeyError: an unknown name, with the closest known one.
    """
    for m in METHODS:
        if m.kind == kind and m.name == name:
            return m
    from mtdnn.spec import unknown_name_message

    raise KeyError(unknown_name_message(kind.replace("_", " "), name, names(kind)))


def implementation(kind: str, name: str) -> Any:
    """The class implementing a method (imported now), or None for a method with nothing to
    build."""
    entry = method(kind, name)
    if entry.impl is None:
        return None
    module, _, cls = entry.impl.partition(":")
    return getattr(importlib.import_module(module), cls)


def registry(kind: str) -> dict[str, Any]:
    """name -> implementing class, for every method of a kind that has one (imports them)."""
    return {m.name: implementation(kind, m.name) for m in METHODS
            if m.kind == kind and m.impl is not None}
