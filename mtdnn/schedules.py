"""Sampling strategies: the order in which an epoch's steps visit the tasks.

Each strategy is a `Schedule` class, registered by name in `mtdnn.methods` (`train.sampler`);
`mtdnn.sampler.MultiTaskBatchSampler` builds the chosen one and deals each task's own batches in
the order it plans. A plan is drawn only from the generator it is given (seeded by the sampler
from seed and epoch): no global RNG.

Adding a strategy: subclass `Schedule` (its `settings`, `check`, `_shares` and `plan`), add the
settings to the spec's TrainSpec, and add one line to `mtdnn.methods.METHODS`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import numpy as np

from mtdnn.spec import unknown_name_message

# One message for both: temperature and seed were checked together before the strategy classes.
_TEMPERATURE_OR_SEED = "need temperature > 0 and seed >= 0, got {}, {}"


class Tasks(NamedTuple):
    """What a strategy knows of the tasks, in the sampler's order (task positions index these)."""

    names: list[str]
    sizes: list[int]  # examples
    batches: list[int]  # global batches in one pass over the task (0: never scheduled)
    global_batch: list[int]  # examples per global batch, all ranks together


class Schedule:
    """A sampling strategy: the task position of every step of an epoch.

    A subclass takes the sampler keywords named in `settings` as keyword arguments and keeps each
    in an attribute of the same name (the sampler's state records them). The sampler runs every
    strategy's `check`, not only the chosen one's, because its state records every setting.
    """

    settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, tasks: Tasks) -> None:
        self.tasks = tasks
        self.active = [t for t, nb in enumerate(tasks.batches) if nb > 0]

    @classmethod
    def check(cls, values: Mapping[str, Any]) -> None:
        """Raise ValueError if one of `settings` in `values` (sampler keyword -> value) is out of
        range, whatever the tasks."""

    def set_run_length(self, micro_steps: int) -> None:
        """Learn the run's length in sampler steps (micro-batches); ignored unless annealing."""

    def epoch_length(self) -> int:
        """Steps per epoch: every batch of every task once, unless a strategy says otherwise."""
        return sum(self.tasks.batches)

    def probabilities(self) -> np.ndarray:
        """Expected share of steps per task position, 0 for tasks with no batch."""
        return self._shares() if self.active else np.zeros(len(self.tasks.names))

    def _shares(self) -> np.ndarray:  # `probabilities` when some task has a batch
        raise NotImplementedError

    def plan(self, rng: np.random.Generator, epoch: int, total: int) -> np.ndarray:
        """The task positions of the `total` (> 0) steps of `epoch`, drawn from `rng` only."""
        raise NotImplementedError


class Proportional(Schedule):
    """Every batch of every task exactly once per epoch, in a seeded random order (MT-DNN)."""

    def _shares(self) -> np.ndarray:
        return np.asarray(self.tasks.batches) / self.epoch_length()

    def plan(self, rng: np.random.Generator, epoch: int, total: int) -> np.ndarray:
        return rng.permutation(np.repeat(np.arange(len(self.tasks.names)), self.tasks.batches))


class Uniform(Schedule):
    """Tasks take turns in a seeded per-epoch order; exhausted tasks start a new pass."""

    def _shares(self) -> np.ndarray:
        probs = np.zeros(len(self.tasks.names))
        probs[self.active] = 1.0 / len(self.active)
        return probs

    def plan(self, rng: np.random.Generator, epoch: int, total: int) -> np.ndarray:
        order = rng.permutation(self.active)
        return order[np.arange(total) % len(order)]


class Temperature(Schedule):
    """Each step draws task i with p_i ~ min(n_i, examples_cap)^(1/T) (T5, jiant); exhausted
    tasks start a new pass. T=1 is size-proportional, a large T uniform.

    Args:
        temperature: T, > 0.
        examples_cap: caps n_i in the formula, >= 1 (None: no cap).
    """

    settings = ("temperature", "examples_cap")

    def __init__(self, tasks: Tasks, *, temperature: float = 2.0,
                 examples_cap: int | None = None) -> None:
        super().__init__(tasks)
        self.temperature, self.examples_cap = temperature, examples_cap
        self._probs = self.probabilities()  # every step draws from them

    @classmethod
    def check(cls, values: Mapping[str, Any]) -> None:
        cap = values["examples_cap"]
        if cap is not None and operator.index(cap) < 1:
            raise ValueError(f"examples_cap must be >= 1, got {cap}")
        if not values["temperature"] > 0:
            raise ValueError(_TEMPERATURE_OR_SEED.format(values["temperature"], values["seed"]))

    def _shares(self) -> np.ndarray:
        probs = np.zeros(len(self.tasks.names))
        sizes = np.array([self.tasks.sizes[t] for t in self.active], dtype=np.float64)
        if self.examples_cap is not None:
            sizes = np.minimum(sizes, self.examples_cap)
        # Log space: n^(1/T) overflows float64 for small T.
        logw = np.log(sizes) / self.temperature
        w = np.exp(logw - logw.max())
        probs[self.active] = w / w.sum()
        return probs

    def plan(self, rng: np.random.Generator, epoch: int, total: int) -> np.ndarray:
        return rng.choice(len(self.tasks.names), size=total, p=self._probs)


class MainRatio(Schedule):
    """Every batch of `main_task` once plus A = round(main_ratio * main batches) auxiliary
    batches (MT-DNN's --ratio), shuffled together; an epoch is main batches + A steps.

    The auxiliary batches are the first A of a seeded permutation of all the other tasks' batches
    (further permutations when A is larger: those tasks start new passes). Python's round: a half
    goes to the even number; A is 0 when no other task has a batch.

    Args:
        main_task: the task whose batches all run each epoch.
        main_ratio: auxiliary batches per main-task batch, >= 0 (0: the main task alone).

    Raises:
        ValueError: no main task, an unknown one, or one with no batch.
    """

    settings = ("main_task", "main_ratio")

    def __init__(self, tasks: Tasks, *, main_task: str | None = None,
                 main_ratio: float = 1.0) -> None:
        super().__init__(tasks)
        if main_task is None:
            raise ValueError(f"strategy 'main_ratio' needs main_task, one of {tasks.names}")
        if main_task not in tasks.names:
            raise ValueError(unknown_name_message("main task", main_task, tasks.names))
        self.main_task, self.main_ratio = main_task, main_ratio
        self.main = tasks.names.index(main_task)
        self.main_batches = tasks.batches[self.main]
        if self.main_batches == 0:
            raise ValueError(f"main task {main_task!r} has no batch: {tasks.sizes[self.main]} "
                             f"examples, drop_last with a global batch of "
                             f"{tasks.global_batch[self.main]}")
        has_aux = sum(tasks.batches) > self.main_batches
        self.num_aux = round(main_ratio * self.main_batches) if has_aux else 0

    @classmethod
    def check(cls, values: Mapping[str, Any]) -> None:
        if not 0 <= values["main_ratio"] < math.inf:
            raise ValueError(f"main_ratio must be >= 0 (auxiliary batches per main-task batch), "
                             f"got {values['main_ratio']}")

    def epoch_length(self) -> int:
        return self.main_batches + self.num_aux

    def _shares(self) -> np.ndarray:
        # Each auxiliary batch slot is equally likely to be among the A drawn: task i expects
        # A * b_i / (auxiliary batches) steps.
        probs = np.zeros(len(self.tasks.names))
        aux = np.asarray(self.tasks.batches, dtype=np.float64)
        aux[self.main] = 0
        if self.num_aux:
            probs[:] = self.num_aux * aux / aux.sum()
        probs[self.main] = self.main_batches
        return probs / self.epoch_length()

    def plan(self, rng: np.random.Generator, epoch: int, total: int) -> np.ndarray:
        slots = np.repeat(np.arange(len(self.tasks.names)), self.tasks.batches)
        slots = slots[slots != self.main]
        passes = -(-self.num_aux // len(slots)) if self.num_aux else 0
        aux = np.concatenate([rng.permutation(slots) for _ in range(passes)] or [slots[:0]])
        main = np.full(self.main_batches, self.main)
        return rng.permutation(np.concatenate([main, aux[:self.num_aux]]))


class Annealed(Schedule):
    """Step g = epoch * epoch length + position draws task i with p_i ~ n_i^a(g),
    a(g) = 1 - (1 - anneal_end) * min(1, g / (anneal_steps - 1)): size-proportional at the first
    step, `anneal_end` (0: uniform) at step anneal_steps - 1 and after (Stickland and Murray
    2019). Exhausted tasks start a new pass; an epoch is as long as under proportional.

    Args:
        anneal_end: the exponent at the last step, in [0, 1].
        anneal_steps: the run's sampler steps (micro-batches), >= 1; planning needs it, and
            `set_run_length` gives it once known.
    """

    settings = ("anneal_end", "anneal_steps")

    def __init__(self, tasks: Tasks, *, anneal_end: float = 0.2,
                 anneal_steps: int | None = None) -> None:
        super().__init__(tasks)
        self.anneal_end, self.anneal_steps = anneal_end, anneal_steps

    @classmethod
    def check(cls, values: Mapping[str, Any]) -> None:
        if not 0 <= values["anneal_end"] <= 1:
            raise ValueError(f"anneal_end must be in [0, 1], got {values['anneal_end']}")
        steps = values["anneal_steps"]
        if steps is not None and operator.index(steps) < 1:
            raise ValueError(f"anneal_steps must be >= 1, got {steps}")

    def set_run_length(self, micro_steps: int) -> None:
        self.check({"anneal_end": self.anneal_end, "anneal_steps": micro_steps})
        self.anneal_steps = operator.index(micro_steps)

    def exponents(self, steps: np.ndarray) -> np.ndarray:
        """The exponent a at each global sampler step of `steps`."""
        if self.anneal_steps is None:
            raise ValueError("strategy 'annealed' needs anneal_steps, the number of sampler "
                             "steps (micro-batches) the training takes: pass anneal_steps or "
                             "call set_run_length first")
        progress = np.minimum(1.0, steps / max(1, self.anneal_steps - 1))
        return 1.0 - (1.0 - self.anneal_end) * progress

    def probabilities_at(self, steps: np.ndarray) -> np.ndarray:
        """(len(steps), tasks) probabilities p_i ~ n_i^a(step), 0 for tasks with no batch."""
        return self._weights(self.exponents(steps))

    def _shares(self) -> np.ndarray:
        return self._weights(np.ones(1))[0]  # a = 1 at the first step, whatever the run length

    def _weights(self, exponents: np.ndarray) -> np.ndarray:
        probs = np.zeros((len(exponents), len(self.tasks.names)))
        if not self.active:
            return probs
        # Log space, as for temperature: n^a for a large n stays finite.
        logn = np.log(np.array([self.tasks.sizes[t] for t in self.active], dtype=np.float64))
        logw = exponents[:, None] * logn[None, :]
        w = np.exp(logw - logw.max(axis=1, keepdims=True))
        probs[:, self.active] = w / w.sum(axis=1, keepdims=True)
        return probs

    def plan(self, rng: np.random.Generator, epoch: int, total: int) -> np.ndarray:
        # One draw per step against that step's probabilities (inverse CDF over the tasks that
        # have batches; the last cumulative value is exactly 1, so every u < 1 lands).
        active = np.asarray(self.active)
        probs = self.probabilities_at(epoch * total + np.arange(total))[:, active]
        cdf = np.cumsum(probs, axis=1)
        cdf /= cdf[:, -1:]
        u = rng.random(total)
        return active[(cdf < u[:, None]).sum(axis=1)]
