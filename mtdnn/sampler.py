"""The multi-task batch sampler: which task each training step runs, and on which examples.

One step = one batch of ONE task (MT-DNN style), so every step goes through a single task head.
A strategy (a `Schedule` class of mtdnn/schedules.py, registered by name in `mtdnn.methods`)
fixes the sequence of tasks for an epoch; each task deals its own shuffled batches. Everything
is a pure function of (seed, epoch, position): no global RNG is used, the plan can be regenerated
to resume mid-epoch, and all distributed ranks agree on the task at every step.

Example:
    >>> s = MultiTaskBatchSampler({"mnli": 10, "rte": 3}, batch_size=4, seed=1)
    >>> len(s), sorted(b.task for b in s)
    (4, ['mnli', 'mnli', 'mnli', 'rte'])
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from mtdnn import methods
from mtdnn.schedules import _TEMPERATURE_OR_SEED, Annealed, Schedule, Tasks

STRATEGIES = methods.names("sampler")
# Tags that keep the per-task shuffle streams and the schedule stream independent even where
# their other seed components (epoch, task position, pass) happen to coincide.
_SHUFFLE, _SCHEDULE = 0, 1

class TaskBatch(NamedTuple):
    """One step: the task to run and this rank's local indices (0..n-1 within that task)."""

    task: str
    indices: list[int]


class MultiTaskBatchSampler:
    """Yields `TaskBatch(task, indices)` steps mixing several tasks under a sampling strategy.

    Within a task, each epoch (and each extra pass of a cycled task) shuffles the task's indices
    with a numpy Generator seeded from (seed, epoch, task position, pass) and cuts them into
    global batches of `batch_size * num_replicas`; the strategy (a `Schedule`) orders the tasks.
    Tasks left with no batch (drop_last with n < global batch size) are never scheduled.

    Distributed: every rank builds the same plan; rank r takes `chunk[r::num_replicas]` of each
    global chunk, so a short chunk is split as evenly as possible. A chunk with fewer examples
    than ranks is padded by repeating its first examples so every rank gets one; this is the
    only case where an example is seen twice in a pass.

    The sampler tracks (epoch, position) as batches are handed out: iterating one epoch to the
    end moves to the next epoch, and `load_state_dict` resumes at the exact step. Keep one live
    iterator at a time; a DataLoader that prefetches batches makes `position` run ahead of training.

    Args:
        task_sizes: task name -> number of examples, as a dict or (name, n) pairs. The order
            matters: it is part of the seeds.
        batch_size: examples per rank per step; a mapping gives each task its own (e.g. fewer
            listwise ranking groups, which hold several sequences each).
        strategy: one of `STRATEGIES`.
        temperature, examples_cap: the temperature strategy's (`Temperature`).
        main_task, main_ratio: the main_ratio strategy's (`MainRatio`).
        anneal_end, anneal_steps: the annealed strategy's (`Annealed`); anneal_steps may come
            later, from `set_run_length`.
        seed: non-negative base seed.
        shuffle: False keeps each task's examples in order (and its batches, under grouping);
            the task schedule is still the seeded one.
        drop_last: drop each task's short final global batch.
        num_replicas: number of distributed ranks; rank: this rank, 0 <= rank < num_replicas.
        lengths: task name -> per-example lengths, used by `group_by_length`; tasks left out
            are not grouped (a per-task choice: `Spec.group_by_length`). The grouped tasks are
            part of the plan-defining config that a resumed state must match.
        group_by_length: within a task, sort windows of `batch_size * num_replicas *
            megabatch_mult` shuffled examples by length (less padding), then shuffle the batch
            order. The task schedule is unchanged.
        megabatch_mult: window size in global batches for `group_by_length`.

    Raises:
        ValueError: on an unknown strategy or any inconsistent or out-of-range argument (every
            strategy's settings are checked: the state records them all).
    """

    def __init__(self, task_sizes: Mapping[str, int] | Sequence[tuple[str, int]],
                 batch_size: int | Mapping[str, int],
                 *, strategy: str = "proportional", temperature: float = 2.0,
                 examples_cap: int | None = None, main_task: str | None = None,
                 main_ratio: float = 1.0, anneal_end: float = 0.2,
                 anneal_steps: int | None = None, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = False, num_replicas: int = 1, rank: int = 0,
                 lengths: Mapping[str, Sequence[int]] | None = None,
                 group_by_length: bool = False, megabatch_mult: int = 50):
        pairs = list(task_sizes.items() if isinstance(task_sizes, Mapping) else task_sizes)
        self.task_sizes = [(str(name), operator.index(n)) for name, n in pairs]
        self.tasks = [name for name, _ in self.task_sizes]
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"task_sizes must name at least one task, each once; got {self.tasks}")
        if any(n < 0 for _, n in self.task_sizes):
            raise ValueError(f"task sizes must be >= 0, got {dict(self.task_sizes)}")
        if strategy not in STRATEGIES:
            valid = ", ".join(STRATEGIES)
            raise ValueError(f"unknown strategy {strategy!r}; valid options: {valid}")
        names = [name for name, _ in pairs]
        per_task = dict(batch_size) if isinstance(batch_size, Mapping) else \
            {str(name): batch_size for name in names}
        if set(per_task) != {str(n) for n in names}:
            raise ValueError(f"batch_size must name every task once: {sorted(per_task)} vs "
                             f"{sorted(map(str, names))}")
        for name, value in (*((f"batch_size[{k}]", v) for k, v in per_task.items()),
                            ("num_replicas", num_replicas), ("megabatch_mult", megabatch_mult)):
            if operator.index(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        if seed < 0:
            raise ValueError(_TEMPERATURE_OR_SEED.format(temperature, seed))
        schedules = methods.registry("sampler")
        for cls in schedules.values():
            cls.check({"seed": seed, "temperature": temperature, "examples_cap": examples_cap,
                       "main_task": main_task, "main_ratio": main_ratio,
                       "anneal_end": anneal_end, "anneal_steps": anneal_steps})
        self.batch_size = dict(batch_size) if isinstance(batch_size, Mapping) else batch_size
        self.strategy, self.temperature = strategy, float(temperature)
        self.examples_cap, self.seed, self.shuffle = examples_cap, seed, shuffle
        self.drop_last, self.num_replicas, self.rank = drop_last, num_replicas, rank
        self.group_by_length, self.megabatch_mult = group_by_length, megabatch_mult
        self.main_task, self.main_ratio = main_task, float(main_ratio)
        self.anneal_end = float(anneal_end)
        self.anneal_steps = None if anneal_steps is None else operator.index(anneal_steps)
        self._lengths: dict[str, np.ndarray] = {}
        if group_by_length:
            if lengths is None:
                raise ValueError("group_by_length=True needs `lengths`")
            sizes = dict(self.task_sizes)
            for name, lens in lengths.items():
                if name not in sizes or len(lens) != sizes[name]:
                    raise ValueError(f"lengths[{name!r}]: unknown task or not one length per "
                                     f"example (task sizes: {sizes})")
                self._lengths[name] = np.asarray(lens, dtype=np.int64)
        # Global batch per task (in task order): every rank takes its share of it.
        self._global = [per_task[name] * num_replicas for name, _ in self.task_sizes]
        self.num_batches = [n // g if drop_last else -(-n // g)
                            for (_, n), g in zip(self.task_sizes, self._global)]
        self._tasks = Tasks(self.tasks, [n for _, n in self.task_sizes], self.num_batches,
                            self._global)
        cls = schedules[strategy]
        self._schedule: Schedule = cls(self._tasks, **{k: getattr(self, k) for k in cls.settings})
        self.epoch = self.position = 0

    def __len__(self) -> int:
        """Steps (global batches) per epoch, the same on every rank: every batch of every task
        once, except under main_ratio (see `MainRatio`)."""
        return self._schedule.epoch_length()

    def task_probabilities(self) -> dict[str, float]:
        """Expected share of steps per task under the strategy: exact for proportional and
        main_ratio; for annealed, the shares at the first step (see `annealed_probabilities`)."""
        probs = self._schedule.probabilities()
        return {name: float(p) for name, p in zip(self.tasks, probs, strict=True)}

    def set_run_length(self, micro_steps: int) -> None:
        """Give the run's length in sampler steps (micro-batches): annealed anneals over them
        (its `anneal_steps`), the others ignore them. `len(self)` does not depend on it: read the
        epoch length, then call this before iterating or loading a state.

        Raises:
            ValueError: under annealed, if `micro_steps` < 1.
        """
        self._schedule.set_run_length(micro_steps)
        # Record the settings the plan now uses: the state, and a resume check, see them.
        for key in self._schedule.settings:
            setattr(self, key, getattr(self._schedule, key))

    def describe(self) -> str | None:
        """The tasks' shares of steps, for the start of a run, where the strategy makes them
        uneven on purpose (main_ratio, annealed); None otherwise."""
        if self.strategy not in ("main_ratio", "annealed"):
            return None
        shares = ", ".join(f"{k} {p:.1%}" for k, p in self.task_probabilities().items())
        if self.anneal_steps is not None and self.strategy == "annealed":
            last = self.annealed_probabilities(self.anneal_steps - 1)
            shares += " at the first step; " + ", ".join(f"{k} {p:.1%}" for k, p in last.items())
            shares += " at the last"
        return f"{self.strategy} sampling, shares of steps: {shares}"

    def anneal_exponent(self, step: int) -> float:
        """The exponent a of `Annealed` at global sampler step `step` (epoch * len(self) +
        position)."""
        return float(self._annealing("anneal_exponent").exponents(np.array([step]))[0])

    def annealed_probabilities(self, step: int) -> dict[str, float]:
        """The annealed strategy's task probabilities p_i ~ n_i^a at global sampler step `step`
        (epoch * len(self) + position), 0 for tasks with no batch.

        Example:
            >>> s = MultiTaskBatchSampler({"a": 100, "b": 900}, 10, strategy="annealed",
            ...                           anneal_end=0.0, anneal_steps=11)
            >>> [round(p, 3) for p in s.annealed_probabilities(0).values()]  # a = 1
            [0.1, 0.9]
            >>> [round(p, 3) for p in s.annealed_probabilities(10).values()]  # a = anneal_end
            [0.5, 0.5]
        """
        probs = self._annealing("annealed_probabilities").probabilities_at(np.array([step]))[0]
        return {name: float(p) for name, p in zip(self.tasks, probs, strict=True)}

    def _annealing(self, caller: str) -> Annealed:
        if self.anneal_steps is None:
            raise ValueError(f"{caller} needs anneal_steps (the annealed strategy)")
        # From the recorded settings, so that any strategy given anneal_steps answers (as ever).
        return Annealed(self._tasks, anneal_end=self.anneal_end, anneal_steps=self.anneal_steps)

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration at the beginning of `epoch`."""
        self.epoch, self.position = epoch, 0

    def _plan(self, epoch: int) -> np.ndarray:
        """The task position of every step of `epoch` (identical on all ranks)."""
        rng = np.random.default_rng([_SCHEDULE, self.seed, epoch])
        total = len(self)
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        return self._schedule.plan(rng, epoch, total)

    def _task_chunks(self, t: int, epoch: int, pass_: int) -> list[np.ndarray]:
        """Global batches of task position `t` for one pass through its examples."""
        name, n = self.task_sizes[t]
        g = self._global[t]
        window = g * self.megabatch_mult
        rng = np.random.default_rng([_SHUFFLE, self.seed, epoch, t, pass_])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        lens = self._lengths.get(name)
        if lens is not None:
            # Sort only inside windows ("megabatches") so batches stay random-ish across the
            # task while neighbours inside a batch have similar lengths (less padding).
            windows = np.split(order, np.arange(window, n, window))
            order = np.concatenate([w[np.argsort(-lens[w], kind="stable")] for w in windows])
        chunks = [order[i:i + g] for i in range(0, n, g)]
        if self.drop_last and chunks and len(chunks[-1]) < g:
            chunks.pop()
        if lens is not None and self.shuffle:
            # Otherwise the longest batch of each window would always come first.
            chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        return chunks

    def _rank_share(self, chunk: np.ndarray) -> list[int]:
        if len(chunk) < self.num_replicas:  # pad by repeating: every rank must get a batch
            chunk = chunk[np.arange(self.num_replicas) % len(chunk)]
        return chunk[self.rank::self.num_replicas].tolist()

    def __iter__(self) -> Iterator[TaskBatch]:
        """Yield the rest of the current epoch from `position`, then move to the next epoch."""
        epoch, start = self.epoch, self.position
        schedule = self._plan(epoch)
        # Chunks each task used before `start`: resuming replays the plan without materialising it.
        used = np.bincount(schedule[:start], minlength=len(self.tasks))
        current: dict[int, tuple[int, list[np.ndarray]]] = {}  # task -> (pass, its chunks)
        for step in range(start, len(schedule)):
            t = int(schedule[step])
            pass_, j = divmod(int(used[t]), self.num_batches[t])
            used[t] += 1
            if t not in current or current[t][0] != pass_:
                current[t] = (pass_, self._task_chunks(t, epoch, pass_))
            batch = TaskBatch(self.tasks[t], self._rank_share(current[t][1][j]))
            # Advance before yielding, so a state saved while holding k batches says k, and the
            # last batch of an epoch already points the state at the next one.
            done = step + 1 == len(schedule)
            self.epoch, self.position = (epoch + 1, 0) if done else (epoch, step + 1)
            yield batch
        if start >= len(schedule):  # an empty epoch still counts as one
            self.epoch, self.position = epoch + 1, 0

    def global_indices(self, batch: TaskBatch) -> list[int]:
        """Map a batch's local indices to offsets in the concatenation of tasks in order."""
        offset = sum(n for _, n in self.task_sizes[: self.tasks.index(batch.task)])
        return [offset + i for i in batch.indices]

    def _config(self) -> dict[str, Any]:
        return {"seed": self.seed, "strategy": self.strategy,
                "task_sizes": [[name, n] for name, n in self.task_sizes],
                "batch_size": self.batch_size, "num_replicas": self.num_replicas,
                "temperature": self.temperature, "examples_cap": self.examples_cap,
                "shuffle": self.shuffle, "drop_last": self.drop_last,
                "group_by_length": self.group_by_length, "megabatch_mult": self.megabatch_mult,
                "grouped_tasks": sorted(self._lengths),
                "main_task": self.main_task, "main_ratio": self.main_ratio,
                "anneal_end": self.anneal_end, "anneal_steps": self.anneal_steps}

    def state_dict(self) -> dict[str, Any]:
        """Return `{"epoch", "position"}` plus the plan-defining config (plain, JSON-safe)."""
        return {"epoch": self.epoch, "position": self.position, **self._config()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Make the next iteration resume at `state`'s epoch and position.

        Raises:
            ValueError: if the state is incomplete, out of range, or saved by a sampler with a
                different plan-defining config (per-example `lengths` are not checked).
        """
        # States saved before the main_ratio and annealed strategies existed hold none of their
        # keys: their values were these defaults.
        # States saved before grouping was chosen per task grouped every task or none.
        grouped = sorted(self.tasks) if state.get("group_by_length") else []
        state = {"main_task": None, "main_ratio": 1.0, "anneal_end": 0.2, "anneal_steps": None,
                 "grouped_tasks": grouped, **state}
        missing = [k for k in ("epoch", "position", *self._config()) if k not in state]
        if missing:
            raise ValueError(f"sampler state is missing keys {missing}")
        for key, mine in self._config().items():
            theirs = state[key]
            if key == "task_sizes":
                theirs = [[str(name), int(n)] for name, n in theirs]
            if theirs != mine:
                raise ValueError(f"cannot resume: the saved sampler state has {key}={theirs!r} "
                                 f"but this sampler has {key}={mine!r}")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= len(self):
            raise ValueError(f"bad sampler state: epoch={epoch}, position={position} "
                             f"(epoch length {len(self)})")
        # A state taken right at the end of an epoch continues with the next one.
        if position == len(self) > 0:
            epoch, position = epoch + 1, 0
        self.epoch, self.position = epoch, position
