"""The strategies of bench_strategies.py: what each one is and its mtdnn spec overrides
(STRATEGIES; `alternating`, the baseline, first), a rough cost per batch of the slower ones for the
duration estimate, and the common training budget (Budget) whose step counts every strategy gets
(budget_overrides).

Not a module of the package: imported by the scripts beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BASELINE = "alternating"


@dataclass(frozen=True)
class Budget:
    """The training budget of every strategy, from the tasks' batches per pass."""

    tasks: tuple[str, ...]
    batches: dict[str, int]  # batches of one pass over each task's training rows
    epochs: float

    @property
    def alternating_steps(self) -> int:
        """B: alternating optimizer steps, one batch each."""
        return math.ceil(self.epochs * sum(self.batches.values()))

    @property
    def joint_steps(self) -> int:
        """Joint optimizer steps (K batches each) that process about B batches."""
        return math.ceil(self.epochs * math.ceil(sum(self.batches.values()) / len(self.tasks)))

    @property
    def main_task(self) -> str:
        return "rte" if "rte" in self.tasks else self.tasks[0]

    @property
    def low_task(self) -> str:
        """The hierarchical strategy's task on a lower layer: CoLA (syntax), else the last."""
        return "cola" if "cola" in self.tasks else self.tasks[-1]

    @property
    def dwa_period(self) -> int:
        """About ten loss-averaging periods over the run (DWA's default, one epoch, gives a
        one-epoch run no period to compare)."""
        return max(1, self.alternating_steps // 10)

    def groups(self) -> dict[str, str]:
        """Soft sharing in two groups: the sentence-pair inference tasks and the others."""
        return {t: "nli" if t in ("rte", "mrpc", "mnli", "qnli", "wnli") else "sim"
                for t in self.tasks}

    def stages(self) -> list[dict[str, Any]]:
        """Two stages (STS-B and MRPC first, then the rest), splitting the B steps in proportion
        to the batches of one pass over the tasks each stage trains (stage 2 trains all)."""
        first = [t for t in ("stsb", "mrpc") if t in self.tasks] or list(self.tasks[:1])
        rest = [t for t in self.tasks if t not in first]
        if not rest:
            return [{"tasks": first, "max_steps": self.alternating_steps}]
        one = sum(self.batches[t] for t in first)
        both = sum(self.batches.values())
        steps1 = max(1, round(self.alternating_steps * one / (one + both)))
        return [{"tasks": first, "max_steps": steps1},
                {"tasks": rest, "max_steps": max(1, self.alternating_steps - steps1)}]


def _flow(value: Any) -> str:
    """A value as one line of YAML flow style (overrides are parsed as YAML)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(value)


# name -> (what it is, its overrides given the budget). The order is the run and table order.
STRATEGIES: dict[str, tuple[str, Callable[[Budget], list[str]]]] = {
    "alternating": ("one task per step, proportional sampler (MT-DNN); the baseline",
                    lambda b: []),
    "joint": ("one batch of every task per step, losses summed",
              lambda b: ["train.step_mode=joint"]),
    "uncertainty": ("learned loss weights exp(-s_i) L_i + s_i (Kendall et al. 2018)",
                    lambda b: ["train.loss_weighting=uncertainty", "train.weighting_lr=1e-2"]),
    "dwa": ("dynamic weight average over loss ratios (Liu et al. 2019)",
            lambda b: ["train.loss_weighting=dwa", f"train.dwa_period={b.dwa_period}"]),
    "gradnorm": ("joint; weights that balance gradient norms (Chen et al. 2018)",
                 lambda b: ["train.step_mode=joint", "train.loss_weighting=gradnorm",
                            "train.weighting_lr=1e-2"]),
    "pcgrad": ("joint; conflicting gradients projected (Yu et al. 2020)",
               lambda b: ["train.step_mode=joint", "train.gradient_surgery=pcgrad"]),
    "cagrad": ("joint; conflict-averse gradient, c = 0.5 (Liu et al. 2021)",
               lambda b: ["train.step_mode=joint", "train.gradient_surgery=cagrad"]),
    "main_ratio": ("every main-task batch plus as many auxiliary ones (MT-DNN --ratio)",
                   lambda b: ["train.sampler=main_ratio", f"train.main_task={b.main_task}",
                              "train.main_ratio=1.0"]),
    "annealed": ("sampling p_i ~ n_i^a, a from 1 down to 0.2 (Stickland and Murray 2019)",
                 lambda b: ["train.sampler=annealed"]),
    "soft": ("soft sharing: one encoder copy per task, pulled together by an L2 penalty",
             lambda b: ["train.sharing=soft"]),
    "soft_groups": ("soft sharing in two groups: pair inference tasks / the others",
                    lambda b: ["train.sharing=soft"] + [f"tasks.{t}.encoder_group={g}"
                                                        for t, g in b.groups().items()]),
    "hierarchical": ("a low-level task's head on encoder layer 3 of 6, the others on the last",
                     lambda b: [f"tasks.{b.low_task}.layer=3"]),
    "task_embedding": ("a learned vector per task added to the input embeddings (ERNIE 2.0)",
                       lambda b: ["task_embedding=true"]),
    "continual": ("two stages: STS-B + MRPC, then all tasks (ERNIE 2.0 continual training)",
                  lambda b: [f"stages={_flow(b.stages())}"]),
}
# Rough cost per batch relative to alternating, for the duration estimate only.
COST = {"gradnorm": 1.2, "pcgrad": 1.2, "cagrad": 1.2, "soft": 1.15, "soft_groups": 1.1}


def is_joint(overrides: list[str]) -> bool:
    return "train.step_mode=joint" in overrides


def strategy_overrides(name: str, budget: Budget) -> list[str]:
    """The strategy's own overrides (as listed in the report)."""
    return STRATEGIES[name][1](budget)


def budget_overrides(own: list[str], budget: Budget) -> list[str]:
    """The step count that gives a strategy the common budget (see bench_strategies.py's
    docstring)."""
    if any(o.startswith("stages=") for o in own):
        return [f"train.epochs={budget.epochs}"]  # the stages carry their own max_steps
    steps = budget.joint_steps if is_joint(own) else budget.alternating_steps
    return [f"train.epochs={budget.epochs}", f"train.max_steps={steps}"]
