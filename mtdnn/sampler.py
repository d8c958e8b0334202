"""The multi-task batch sampler: which task each training step runs, and on which examples.

One step = one batch of ONE task (MT-DNN style), so every step goes through a single task head.
A strategy fixes the sequence of tasks for an epoch; each task deals its own shuffled batches.
Everything is a pure function of (seed, epoch, position): no global RNG is used, the plan can
be regenerated to resume mid-epoch, and all distributed ranks agree on the task at every step.

Example:
    >>> s = MultiTaskBatchSampler({"mnli": 10, "rte": 3}, batch_size=4, seed=1)
    >>> len(s), sorted(b.task for b in s)
    (4, ['mnli', 'mnli', 'mnli', 'rte'])
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from mtdnn.spec import unknown_name_message

STRATEGIES = ("proportional", "uniform", "temperature", "main_ratio", "annealed")
# Tags that keep the per-task shuffle streams and the schedule stream independent even where
# their other seed components (epoch, task position, pass) happen to coincide.
_SHUFFLE, _SCHEDULE = 0, 1
_CONFIG_KEYS = ("seed", "strategy", "task_sizes", "batch_size", "num_replicas", "temperature",
                "examples_cap", "shuffle", "drop_last", "group_by_length", "megabatch_mult",
                "main_task", "main_ratio", "anneal_end", "anneal_steps")


class TaskBatch(NamedTuple):
    """One step: the task to run and this rank's local indices (0..n-1 within that task)."""

    task: str
    indices: list[int]


class MultiTaskBatchSampler:
    """Yields `TaskBatch(task, indices)` steps mixing several tasks under a sampling strategy.

    Within a task, each epoch (and each extra pass of a task that is cycled) shuffles the task's
    indices with a numpy Generator seeded from (seed, epoch, task position, pass) and cuts them
    into global batches of `batch_size * num_replicas`. Strategies (an epoch is `len(self)` steps:
    the total number of global batches over tasks, except under main_ratio):

    - proportional (MT-DNN): every batch of every task exactly once, in a seeded random order.
    - uniform: tasks take turns in a seeded per-epoch order; exhausted tasks start a new pass.
    - temperature (T5/jiant): each step draws task i with p_i ~ min(n_i, examples_cap)^(1/T);
      exhausted tasks start a new pass. T=1 is size-proportional, large T is uniform.
    - main_ratio (MT-DNN's --ratio): every batch of `main_task` once plus
      A = round(main_ratio * main batches) auxiliary batches (Python's round: a half goes to the
      even number; 0 when no other task has a batch),
      the first A of a seeded permutation of all auxiliary batches (further permutations when A
      is larger: those tasks start new passes), shuffled together. An epoch is main batches + A.
    - annealed (Stickland and Murray 2019): step g = epoch * len(self) + position draws task i
      with p_i ~ n_i^a(g), a(g) = 1 - (1 - anneal_end) * min(1, g / (anneal_steps - 1)): from
      size-proportional at the first step to `anneal_end` (0: uniform) at step anneal_steps - 1
      and after; exhausted tasks start a new pass.

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
        temperature: T of the temperature strategy (> 0).
        examples_cap: caps n_i in the temperature formula (None = no cap).
        main_task: main_ratio: the task whose batches all run each epoch.
        main_ratio: main_ratio: auxiliary batches per main-task batch (>= 0; 0: main task only).
        anneal_end: annealed: the exponent at the last step, in [0, 1].
        anneal_steps: annealed: the sampler steps (micro-batches) the training takes, >= 1;
            required by that strategy.
        seed: non-negative base seed.
        shuffle: False keeps each task's examples in order (and its batches, under grouping);
            the task schedule is still the seeded one.
        drop_last: drop each task's short final global batch.
        num_replicas: number of distributed ranks; rank: this rank, 0 <= rank < num_replicas.
        lengths: task name -> per-example lengths, used by `group_by_length`; tasks left out
            are not grouped.
        group_by_length: within a task, sort windows of `batch_size * num_replicas *
            megabatch_mult` shuffled examples by length (less padding), then shuffle the batch
            order. The task schedule is unchanged.
        megabatch_mult: window size in global batches for `group_by_length`.

    Raises:
        ValueError: on an unknown strategy or any inconsistent or out-of-range argument.
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
                            ("num_replicas", num_replicas),
                            ("megabatch_mult", megabatch_mult), ("examples_cap", examples_cap)):
            if value is not None and operator.index(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        if not temperature > 0 or seed < 0:
            raise ValueError(f"need temperature > 0 and seed >= 0, got {temperature}, {seed}")
        if not 0 <= main_ratio < math.inf:
            raise ValueError(f"main_ratio must be >= 0 (auxiliary batches per main-task batch), "
                             f"got {main_ratio}")
        if not 0 <= anneal_end <= 1:
            raise ValueError(f"anneal_end must be in [0, 1], got {anneal_end}")
        if anneal_steps is not None and operator.index(anneal_steps) < 1:
            raise ValueError(f"anneal_steps must be >= 1, got {anneal_steps}")
        if strategy == "main_ratio" and main_task is None:
            raise ValueError(f"strategy 'main_ratio' needs main_task, one of {self.tasks}")
        if strategy == "main_ratio" and main_task not in self.tasks:
            raise ValueError(unknown_name_message("main task", main_task, self.tasks))
        if strategy == "annealed" and anneal_steps is None:
            raise ValueError("strategy 'annealed' needs anneal_steps, the number of sampler "
                             "steps (micro-batches) the training takes")
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
        self._active = [t for t, nb in enumerate(self.num_batches) if nb > 0]
        self._length = sum(self.num_batches)
        self._main, self._num_aux = -1, 0  # main_ratio: the main task's position, A
        if strategy == "main_ratio":
            self._main = self.tasks.index(main_task)
            if self.num_batches[self._main] == 0:
                raise ValueError(f"main task {main_task!r} has no batch: "
                                 f"{self.task_sizes[self._main][1]} examples, drop_last with a "
                                 f"global batch of {self._global[self._main]}")
            aux_batches = self._length - self.num_batches[self._main]
            self._num_aux = round(self.main_ratio * self.num_batches[self._main]) \
                if aux_batches else 0
            self._length = self.num_batches[self._main] + self._num_aux
        self._probs = self._compute_probs()
        self.epoch = self.position = 0

    def __len__(self) -> int:
        """Steps (global batches) per epoch, the same on every rank: the total number of batches
        over tasks, or under main_ratio the main task's batches plus the auxiliary ones."""
        return self._length

    def _compute_probs(self) -> np.ndarray:
        probs = np.zeros(len(self.tasks))
        if not self._active:
            return probs
        if self.strategy == "proportional":
            probs[:] = np.asarray(self.num_batches) / len(self)
        elif self.strategy == "uniform":
            probs[self._active] = 1.0 / len(self._active)
        elif self.strategy == "main_ratio":
            # Each auxiliary batch slot is equally likely to be among the A drawn: task i expects
            # A * b_i / (auxiliary batches) steps.
            aux = np.asarray(self.num_batches, dtype=np.float64)
            aux[self._main] = 0
            if self._num_aux:
                probs[:] = self._num_aux * aux / aux.sum()
            probs[self._main] = self.num_batches[self._main]
            probs /= len(self)
        elif self.strategy == "annealed":
            probs = self._annealed_probs(np.zeros(1))[0]
        else:
            # Log space: n^(1/T) overflows float64 for small T.
            sizes = np.array([self.task_sizes[t][1] for t in self._active], dtype=np.float64)
            if self.examples_cap is not None:
                sizes = np.minimum(sizes, self.examples_cap)
            logw = np.log(sizes) / self.temperature
            w = np.exp(logw - logw.max())
            probs[self._active] = w / w.sum()
        return probs

    def task_probabilities(self) -> dict[str, float]:
        """Expected share of steps per task under the strategy: exact for proportional and
        main_ratio; for annealed, the shares at the first step (see `annealed_probabilities`)."""
        return {name: float(p) for name, p in zip(self.tasks, self._probs, strict=True)}

    def anneal_exponent(self, step: int) -> float:
        """The annealed strategy's exponent a at global sampler step `step` (epoch * len(self) +
        position): 1 at step 0, falling linearly to `anneal_end` at step anneal_steps - 1."""
        if self.anneal_steps is None:
            raise ValueError("anneal_exponent needs anneal_steps (the annealed strategy)")
        return float(self._anneal_exponents(np.array([step]))[0])

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
        if self.anneal_steps is None:
            raise ValueError("annealed_probabilities needs anneal_steps (the annealed strategy)")
        probs = self._annealed_probs(np.array([step]))[0]
        return {name: float(p) for name, p in zip(self.tasks, probs, strict=True)}

    def _anneal_exponents(self, steps: np.ndarray) -> np.ndarray:
        assert self.anneal_steps is not None
        progress = np.minimum(1.0, steps / max(1, self.anneal_steps - 1))
        return 1.0 - (1.0 - self.anneal_end) * progress

    def _annealed_probs(self, steps: np.ndarray) -> np.ndarray:
        """(len(steps), tasks) probabilities p_i ~ n_i^a(step), 0 for tasks with no batch."""
        probs = np.zeros((len(steps), len(self.tasks)))
        if not self._active:
            return probs
        # Log space, as for temperature: n^a for a large n stays finite.
        logn = np.log(np.array([self.task_sizes[t][1] for t in self._active], dtype=np.float64))
        logw = self._anneal_exponents(steps)[:, None] * logn[None, :]
        w = np.exp(logw - logw.max(axis=1, keepdims=True))
        probs[:, self._active] = w / w.sum(axis=1, keepdims=True)
        return probs

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration at the beginning of `epoch`."""
        self.epoch, self.position = epoch, 0

    def _schedule(self, epoch: int) -> np.ndarray:
        """The task position of every step of `epoch` (identical on all ranks)."""
        rng = np.random.default_rng([_SCHEDULE, self.seed, epoch])
        total = len(self)
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        if self.strategy == "proportional":
            return rng.permutation(np.repeat(np.arange(len(self.tasks)), self.num_batches))
        if self.strategy == "uniform":
            order = rng.permutation(self._active)
            return order[np.arange(total) % len(order)]
        if self.strategy == "main_ratio":
            slots = np.repeat(np.arange(len(self.tasks)), self.num_batches)
            slots = slots[slots != self._main]
            passes = -(-self._num_aux // len(slots)) if self._num_aux else 0
            aux = np.concatenate([rng.permutation(slots) for _ in range(passes)] or [slots[:0]])
            main = np.full(self.num_batches[self._main], self._main)
            return rng.permutation(np.concatenate([main, aux[:self._num_aux]]))
        if self.strategy == "annealed":
            # One draw per step against that step's probabilities (inverse CDF over the tasks
            # that have batches; the last cumulative value is exactly 1, so every u < 1 lands).
            active = np.asarray(self._active)
            probs = self._annealed_probs(epoch * total + np.arange(total))[:, active]
            cdf = np.cumsum(probs, axis=1)
            cdf /= cdf[:, -1:]
            u = rng.random(total)
            return active[(cdf < u[:, None]).sum(axis=1)]
        return rng.choice(len(self.tasks), size=total, p=self._probs)

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
        schedule = self._schedule(epoch)
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
        state = {"main_task": None, "main_ratio": 1.0, "anneal_end": 0.2, "anneal_steps": None,
                 **state}
        missing = [k for k in ("epoch", "position", *_CONFIG_KEYS) if k not in state]
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
