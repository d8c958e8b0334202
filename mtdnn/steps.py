"""Step modes: how one optimizer step's forward and backward passes are run.

A step mode is a class behind one small interface (`StepMode`), registered by name in
`mtdnn.methods` (`train.step_mode`):

| mode        | a micro-step runs                       | an epoch is                          |
|-------------|-----------------------------------------|--------------------------------------|
| alternating | one batch of the task the sampler picks | every sampler step once              |
| joint       | one batch of EVERY task                 | the steps that process the batches of |
|             |                                         | an alternating epoch (total / K)     |

The training loop calls, for each optimizer step: `backward(step)` (forward and backward passes,
gradients left in `.grad`; returns each task's unweighted losses), then the `StepHook`s (loss
weighting, sharing) and the optimizer. The step mode owns its samplers, so its `state_dict` is
where a resumed run continues from.

Adding a mode: subclass `StepMode`, implement the four abstract methods, and add one line to
`mtdnn.methods.METHODS`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from mtdnn.collate import fetch_batch
from mtdnn.gradsurgery import SharedGradients
from mtdnn.instrument import Instrument
from mtdnn.methods import implementation
from mtdnn.sampler import MultiTaskBatchSampler
from mtdnn.weighting import SharedLayerProbe, shared_layer_weight

if TYPE_CHECKING:
    from mtdnn.spec import Spec
    from mtdnn.weighting import LossWeighting

Losses = dict[str, list[torch.Tensor]]  # task -> its (unweighted) loss of each micro-step


class TaskStream:
    """Endless (task, batch) pairs: the sampler picks the task and the rows, the task's collator
    pads, the batch goes to the device; the instrument sees each batch."""

    def __init__(self, sampler: MultiTaskBatchSampler, datasets: Mapping[str, Any],
                 collators: Mapping[str, tuple[Any, tuple[str, ...]]], device: torch.device,
                 instrument: Instrument):
        # collators: task -> (its type's collator, the columns it takes)
        self.sampler, self.datasets, self.collators = sampler, datasets, collators
        self.device, self.instrument = device, instrument
        self.rows: dict[str, int] = {}  # this process's training rows (ranking: groups) per task
        self._it = iter(self.sampler)

    def __iter__(self) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
        return self

    def __next__(self) -> tuple[str, dict[str, torch.Tensor]]:
        started = time.perf_counter()
        try:
            task, indices = next(self._it)
        except StopIteration:  # the sampler has moved on to the next epoch by itself
            self._it = iter(self.sampler)
            task, indices = next(self._it)
        self.rows[task] = self.rows.get(task, 0) + len(indices)
        collator, columns = self.collators[task]
        batch = fetch_batch(self.datasets[task], indices, collator, self.device, columns,
                            instrument=self.instrument)
        self.instrument.on_train_batch(task, batch, started)
        return task, batch


class StepHook:
    """What runs around every optimizer step besides the passes (loss weighting, sharing). Every
    method is a no-op here; a strategy overrides what it needs."""

    def start_step(self, step: int, log: bool) -> None:
        """Before the step's passes; `log`: this step writes a log record."""

    def before_optimizer_step(self, step: int, losses: Losses,
                              grad_norms: dict[str, torch.Tensor] | None) -> None:
        """After the backward passes (gradients all-reduced), before clipping and the update."""

    def after_optimizer_step(self) -> None:
        """Right after `optimizer.step()`."""

    def log_values(self) -> dict[str, float]:
        """Values for this step's log record (a log step only)."""
        return {}


class WeightingHook(StepHook):
    """Drives a `LossWeighting` through the step: learned weights get the global batch's gradient,
    methods that follow the losses see the step's mean losses (over processes), and the weights
    the step trained with are logged (unless they are constant: they are in spec.yaml)."""

    def __init__(self, weighting: LossWeighting, accelerator: Any):
        self.weighting, self.accelerator = weighting, accelerator
        self._used: dict[str, torch.Tensor] = {}

    def start_step(self, step: int, log: bool) -> None:
        self._used = self.weighting.weights() if log and not self.weighting.constant else {}

    def before_optimizer_step(self, step: int, losses: Losses,
                              grad_norms: dict[str, torch.Tensor] | None) -> None:
        average_grads(self.accelerator, list(self.weighting.parameters()))
        if self.weighting.needs_losses:
            names = list(losses)
            means = torch.stack([torch.stack(losses[n]).mean() for n in names])
            if self.accelerator.num_processes > 1:
                means = self.accelerator.reduce(means, "mean")
            self.weighting.update(step, dict(zip(names, means.unbind(), strict=True)),
                                  grad_norms)

    def after_optimizer_step(self) -> None:
        self.weighting.after_step()

    def log_values(self) -> dict[str, float]:
        return {f"weight/{k}": v.item() for k, v in self._used.items()}


def average_grads(accelerator: Any, params: list[torch.nn.Parameter]) -> None:
    """Averages `.grad` over processes in one all-reduce, for gradients DDP does not reduce (a
    surgery step's, learned loss weights outside the model). Every process runs the same tasks, so
    the same parameters hold a gradient everywhere. One process: nothing to do."""
    params = [p for p in params if p.grad is not None]
    if accelerator.num_processes == 1 or not params:
        return
    flat = accelerator.reduce(torch.cat([p.grad.reshape(-1) for p in params]), "mean")
    for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
        p.grad = g.view_as(p)


class StepMode:
    """One optimizer step's passes. Built from the spec and the training data (before the model is
    prepared, so that the run's length is known for the schedule), then `start`ed with the
    prepared model.

    Args:
        spec: the run.
        sizes: task -> training examples; lengths: task -> each example's tokens.
        num_replicas, rank: the processes (every rank runs the same task at each step).
    """

    name: ClassVar[str]

    def __init__(self, spec: Spec, sizes: Mapping[str, int], lengths: Mapping[str, Any],
                 num_replicas: int = 1, rank: int = 0):
        self.spec, self.accum = spec, spec.train.gradient_accumulation_steps

    def epoch_steps(self) -> int:
        """Optimizer steps per epoch."""
        raise NotImplementedError

    def set_run_length(self, total_steps: int) -> None:
        """The run's length in optimizer steps, once known (the annealed sampler needs it)."""

    def describe(self) -> str | None:
        """A line for the start of the run (e.g. the tasks' shares of steps), or None."""
        return None

    def start(self, model: Any, weighting: LossWeighting, accelerator: Any,
              datasets: Mapping[str, Any], collators: Mapping[str, Any],
              instrument: Instrument) -> None:
        """Binds the prepared model and the batch sources."""
        raise NotImplementedError

    def backward(self, step: int) -> Losses:
        """Runs the step's forward and backward passes and leaves its gradients in `.grad`."""
        raise NotImplementedError

    def grad_norms(self) -> dict[str, torch.Tensor] | None:
        """Per-task gradient norms at the last shared layer of the step just run (GradNorm), or
        None."""
        return None

    def examples(self) -> dict[str, int]:
        """The training rows (ranking: groups) this process has run per task since `start`."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError


class AlternatingStep(StepMode):
    """Each micro-batch holds one task, picked by the multi-task sampler (MT-DNN)."""

    name = "alternating"

    def __init__(self, spec: Spec, sizes: Mapping[str, int], lengths: Mapping[str, Any],
                 num_replicas: int = 1, rank: int = 0):
        super().__init__(spec, sizes, lengths, num_replicas, rank)
        t, grouped = spec.train, grouped_lengths(spec, lengths)
        self.sampler = MultiTaskBatchSampler(
            list(sizes.items()), {name: spec.batch_size(spec.task(name)) for name in sizes},
            strategy=t.sampler, temperature=t.temperature, examples_cap=t.examples_cap,
            main_task=t.main_task, main_ratio=t.main_ratio, anneal_end=t.anneal_end,
            seed=spec.seed, num_replicas=num_replicas, rank=rank,
            lengths=grouped, group_by_length=bool(grouped))

    def epoch_steps(self) -> int:
        return max(1, len(self.sampler) // self.accum)

    def set_run_length(self, total_steps: int) -> None:
        self.sampler.set_run_length(total_steps * self.accum)  # sampler steps are micro-batches

    def describe(self) -> str | None:
        return self.sampler.describe()

    def start(self, model: Any, weighting: LossWeighting, accelerator: Any,
              datasets: Mapping[str, Any], collators: Mapping[str, Any],
              instrument: Instrument) -> None:
        self.model, self.weighting, self.accelerator = model, weighting, accelerator
        self.stream = TaskStream(self.sampler, datasets, collators, accelerator.device,
                                 instrument)

    def examples(self) -> dict[str, int]:
        return dict(self.stream.rows)

    def backward(self, step: int) -> Losses:
        losses: Losses = {}
        for micro in range(self.accum):
            task, batch = next(self.stream)
            # Gradients are all-reduced once per optimizer step, on the last micro-batch.
            sync = contextlib.nullcontext() if micro == self.accum - 1 \
                else self.accelerator.no_sync(self.model)
            with sync:
                loss = self.model(task, **batch)["loss"]
                self.accelerator.backward(self.weighting.task_loss(task, loss) / self.accum)
            losses.setdefault(task, []).append(loss.detach())
        return losses

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])


def task_samplers(spec: Spec, sizes: Mapping[str, int], lengths: Mapping[str, Any],
                  num_replicas: int = 1, rank: int = 0) -> dict[str, MultiTaskBatchSampler]:
    """Joint mode: one endless batch sampler per task, a one-task `MultiTaskBatchSampler` (the
    same shuffling, length grouping, sharding over processes and exact resume as the mixing
    sampler); each task cycles through its own epochs. Each task's seed is drawn from (seed, task
    position), so two tasks of the same size are not shuffled alike."""
    return {name: MultiTaskBatchSampler(
        [(name, n)], spec.batch_size(spec.task(name)),
        seed=int(np.random.SeedSequence([spec.seed, i]).generate_state(1)[0]),
        num_replicas=num_replicas, rank=rank, lengths={name: lengths[name]},
        group_by_length=spec.group_by_length(spec.task(name)))
        for i, (name, n) in enumerate(sizes.items())}


def grouped_lengths(spec: Spec, lengths: Mapping[str, Any]) -> dict[str, Any]:
    """The lengths of the tasks whose batches are grouped by length (Spec.group_by_length)."""
    return {name: lens for name, lens in lengths.items() if spec.group_by_length(spec.task(name))}


class JointPasses:
    """The passes of one joint optimizer step: each micro-step runs one batch of EVERY task.

    Each task's term of the weighted loss is backpropagated right after its forward pass, so one
    task's activations are held at a time; the gradient of the sum is the sum of the terms'. With
    no surgery, DDP all-reduces once, in the step's last backward (as in alternating mode). With
    surgery, every backward stays local and the gradients are averaged over processes here, the
    per-task ones before the surgery (which is not linear): the result is that of one process with
    the global batch. GradNorm's probe records each task's gradient at the last shared layer.

    Args:
        streams: task -> an endless iterator of (task, batch).
        model: the (prepared) model; weighting: the loss weighting; surgery: a gradient surgery
            method or None; accelerator: the run's; accum: micro-steps per optimizer step.
    """

    def __init__(self, streams: Mapping[str, Iterator], model: Any, weighting: LossWeighting,
                 surgery: Any, accelerator: Any, accum: int):
        self.streams, self.model, self.weighting = dict(streams), model, weighting
        self.surgery, self.accelerator, self.accum = surgery, accelerator, accum
        encoder = accelerator.unwrap_model(model).encoder
        self.shared = SharedGradients(encoder.parameters(), len(self.streams)) if surgery else None
        self.probe = SharedLayerProbe(shared_layer_weight(encoder), list(self.streams)) \
            if weighting.needs_grad_norms else None

    def backward(self, step: int) -> Losses:
        tasks = list(self.streams)
        losses: Losses = {task: [] for task in tasks}
        for micro in range(self.accum):
            for i, task in enumerate(tasks):
                _, batch = next(self.streams[task])
                last = micro == self.accum - 1 and i == len(tasks) - 1
                sync = contextlib.nullcontext() if last and self.shared is None \
                    else self.accelerator.no_sync(self.model)
                if self.probe is not None:
                    self.probe.task = i
                with sync:
                    loss = self.model(task, **batch)["loss"]
                    self.accelerator.backward(self.weighting.task_loss(task, loss) / self.accum)
                if self.shared is not None:
                    self.shared.collect(i)  # moves the shared gradient out of `.grad`
                losses[task].append(loss.detach())
        if self.shared is not None:
            shared = {id(p) for p in self.shared.params}
            average_grads(self.accelerator, [p for p in self.model.parameters()
                                             if id(p) not in shared])
            grads = self.shared.grads  # (K, D)
            if self.accelerator.num_processes > 1:
                grads = self.accelerator.reduce(grads, "mean")
            self.shared.write(self.surgery(grads, step))
            self.shared.reset()
        return losses

    def grad_norms(self) -> dict[str, torch.Tensor] | None:
        """GradNorm's ||∇_W term_i|| of the step just run (global batch), or None."""
        if self.probe is None:
            return None
        reduce = self.accelerator.reduce if self.accelerator.num_processes > 1 else None
        norms = self.probe.norms(reduce)
        self.probe.reset()
        return norms


class JointStep(StepMode):
    """Each micro-step runs one batch of EVERY task (`JointPasses`); each task cycles through its
    own sampler."""

    name = "joint"

    def __init__(self, spec: Spec, sizes: Mapping[str, int], lengths: Mapping[str, Any],
                 num_replicas: int = 1, rank: int = 0):
        super().__init__(spec, sizes, lengths, num_replicas, rank)
        self.samplers = task_samplers(spec, sizes, lengths, num_replicas, rank)
        surgery = implementation("gradient_surgery", spec.train.gradient_surgery)
        self.surgery = surgery.from_spec(spec) if surgery is not None else None

    def epoch_steps(self) -> int:
        # As many joint steps (K batches each) as process the batches of an alternating epoch:
        # `epochs` buys the same compute in both modes. Small tasks repeat within an epoch, large
        # ones are not finished.
        batches = sum(len(s) for s in self.samplers.values())
        return max(1, math.ceil(batches / len(self.samplers)) // self.accum)

    def start(self, model: Any, weighting: LossWeighting, accelerator: Any,
              datasets: Mapping[str, Any], collators: Mapping[str, Any],
              instrument: Instrument) -> None:
        self.streams = {name: TaskStream(s, datasets, collators, accelerator.device,
                                         instrument) for name, s in self.samplers.items()}
        self.passes = JointPasses(self.streams, model, weighting, self.surgery, accelerator,
                                  self.accum)

    def examples(self) -> dict[str, int]:
        return {name: stream.rows.get(name, 0) for name, stream in self.streams.items()}

    def backward(self, step: int) -> Losses:
        return self.passes.backward(step)

    def grad_norms(self) -> dict[str, torch.Tensor] | None:
        return self.passes.grad_norms()

    def state_dict(self) -> dict[str, Any]:
        return {"task_samplers": {k: s.state_dict() for k, s in self.samplers.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, sampler in self.samplers.items():
            sampler.load_state_dict(state["task_samplers"][name])
