"""The multi-task training loop, on Accelerate. It reads top to bottom:

    setup      spec -> tokenizer -> task data -> model -> sampler -> optimizer/schedule -> prepare
    train      each optimizer step: micro-batches (one task each) -> weighted loss -> backward
               -> step (joint mode: one batch of every task per micro-step, see `_JointStep`)
    evaluate   every `eval_every` steps (or epoch) and at the end; keep the best checkpoint
    finish     metrics.json, results.md, train_log.jsonl

Example:
    >>> from mtdnn import load_spec, train
    >>> result = train(load_spec("task_specs/demo.yaml"))
    >>> result.metrics["rte"]["dev"]["accuracy"]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtdnn.collate import Collator
from mtdnn.data import Rows, available_splits, read_split, tokenize
from mtdnn.evaluation import (
    evaluate_task,
    majority_baseline,
    mean_main_metric,
    results_table,
)
from mtdnn.gradsurgery import GradientSurgery, SharedGradients, make_surgery
from mtdnn.metrics import DEFAULT_METRICS
from mtdnn.model import MultiTaskModel, TaskInfo, encoder_groups, load_encoder, resolve_encoder
from mtdnn.sampler import MultiTaskBatchSampler
from mtdnn.spec import Spec, SpecError, TaskSpec, save_spec
from mtdnn.weighting import LossWeighting, SharedLayerProbe, make_weighting, shared_layer_weight


@dataclass
class TaskData:
    """One task, ready to train and evaluate."""

    spec: TaskSpec
    info: TaskInfo
    train: Any = None  # tokenized datasets.Dataset
    dev: Any = None
    dev_rows: Rows | None = None
    train_rows: Rows | None = None


@dataclass
class TrainResult:
    output_dir: Path
    best_dir: Path | None
    best_step: int | None
    metrics: dict[str, dict[str, dict[str, float]]]  # task -> split -> metric -> value
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)


def resolve_mixed_precision(setting: str) -> str:
    """auto: fp32 on CPU (bf16 there is emulated and ~100x slower), bf16 on GPUs that have it, else
    fp16."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def task_info(task: TaskSpec, activation: str = "tanh", sharing: str = "hard") -> TaskInfo:
    """What the model keeps of a task. Under soft sharing a task without an encoder_group has an
    encoder copy of its own, named after it."""
    group = (task.encoder_group or task.name) if sharing == "soft" else None
    return TaskInfo(name=task.name, type=task.type, labels=list(task.labels),
                    text_columns=list(task.text),
                    metrics=list(task.metrics or DEFAULT_METRICS[task.type]),
                    dropout=task.dropout, activation=activation, layer=task.layer,
                    encoder_group=group)


def head_activation(encoder_config: Any) -> str:
    """BERT's pooler and RoBERTa's head use tanh; ELECTRA's and DeBERTa's use GELU. Matching the
    architecture keeps the head exportable as that architecture's own classification head."""
    return "gelu" if encoder_config.model_type in ("electra", "deberta", "deberta-v2") else "tanh"


def load_tokenizer(spec: Spec):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_encoder(spec.tokenizer or spec.encoder),
                                         revision=spec.revision,
                                         trust_remote_code=spec.trust_remote_code)


def prepare_tasks(spec: Spec, tokenizer: Any, activation: str, splits=("train", "dev")
                  ) -> dict[str, TaskData]:
    """Reads, checks and tokenizes the train and dev splits of every task."""
    tasks: dict[str, TaskData] = {}
    for task in spec.tasks:
        data = TaskData(spec=task, info=task_info(task, activation, spec.train.sharing))
        have = available_splits(spec, task)
        if "train" in splits and "train" in have:
            data.train_rows = read_split(spec, task, "train")
            data.train = tokenize(data.train_rows, tokenizer, spec.max_seq_length,
                                  for_training=True, max_candidates=task.max_candidates)
        if "dev" in splits and "dev" in have:
            data.dev_rows = read_split(spec, task, "dev")
            data.dev = tokenize(data.dev_rows, tokenizer, spec.max_seq_length, for_training=False)
        tasks[task.name] = data
    return tasks


class _TaskStream:
    """Endless (task, batch) stream: the sampler picks the task and indices, the collator pads."""

    def __init__(self, sampler: MultiTaskBatchSampler, data: dict[str, TaskData],
                 collator: Collator, device: torch.device):
        self.sampler, self.data, self.collator, self.device = sampler, data, collator, device
        self._it = iter(self.sampler)

    def __next__(self) -> tuple[str, dict[str, torch.Tensor]]:
        try:
            task, indices = next(self._it)
        except StopIteration:  # the sampler has moved on to the next epoch by itself
            self._it = iter(self.sampler)
            task, indices = next(self._it)
        ds = self.data[task].train
        columns = ds[indices]  # one Arrow read for the whole batch
        rows = [{k: columns[k][i] for k in ("input_ids", "token_type_ids", "labels")
                 if k in columns} for i in range(len(indices))]
        batch = self.collator(rows)
        return task, {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}


def task_samplers(trainable: dict[str, TaskData], spec: Spec, num_replicas: int = 1,
                  rank: int = 0) -> dict[str, MultiTaskBatchSampler]:
    """Joint mode: one endless batch sampler per task, a one-task `MultiTaskBatchSampler` (the
    same shuffling, length grouping, sharding over processes and exact resume as the mixing
    sampler); each task cycles through its own epochs. Each task's seed is drawn from (seed, task
    position), so two tasks of the same size are not shuffled alike."""
    t = spec.train
    return {name: MultiTaskBatchSampler(
        [(name, len(d.train))], spec.batch_size(d.spec),
        seed=int(np.random.SeedSequence([spec.seed, i]).generate_state(1)[0]),
        num_replicas=num_replicas, rank=rank, lengths={name: d.train["length"]},
        group_by_length=t.group_by_length) for i, (name, d) in enumerate(trainable.items())}


def _average_grads(accelerator: Any, params: list[torch.nn.Parameter]) -> None:
    """Averages `.grad` over processes in one all-reduce, for gradients DDP does not reduce (a
    surgery step's, learned loss weights outside the model). Every process runs the same tasks, so
    the same parameters hold a gradient everywhere. One process: nothing to do."""
    params = [p for p in params if p.grad is not None]
    if accelerator.num_processes == 1 or not params:
        return
    flat = accelerator.reduce(torch.cat([p.grad.reshape(-1) for p in params]), "mean")
    for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
        p.grad = g.view_as(p)


class _JointStep:
    """The gradients of one joint optimizer step: each micro-step runs one batch of EVERY task.

    Each task's term of the weighted loss is backpropagated right after its forward pass, so one
    task's activations are held at a time; the gradient of the sum is the sum of the terms'. With
    no surgery, DDP all-reduces once, in the step's last backward (as in alternating mode). With
    surgery, every backward stays local and the gradients are averaged over processes here, the
    per-task ones before the surgery (which is not linear): the result is that of one process with
    the global batch. GradNorm's probe records each task's gradient at the last shared layer.
    """

    def __init__(self, streams: dict[str, _TaskStream], model: Any, weighting: LossWeighting,
                 surgery: GradientSurgery | None, accelerator: Any, accum: int):
        self.streams, self.model, self.weighting, self.surgery = streams, model, weighting, surgery
        self.accelerator, self.accum = accelerator, accum
        encoder = accelerator.unwrap_model(model).encoder
        self.shared = SharedGradients(encoder.parameters(), len(streams)) if surgery else None
        self.probe = SharedLayerProbe(shared_layer_weight(encoder), list(streams)) \
            if weighting.needs_grad_norms else None

    def backward(self, step: int) -> dict[str, list[torch.Tensor]]:
        """Runs the step's forward and backward passes and leaves its gradients in `.grad`.
        Returns each task's losses, one per micro-step."""
        tasks = list(self.streams)
        losses: dict[str, list[torch.Tensor]] = {task: [] for task in tasks}
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
            _average_grads(self.accelerator, [p for p in self.model.parameters()
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


def _update_loss_weights(accelerator: Any, weighting: LossWeighting, step: int,
                         losses: dict[str, list[torch.Tensor]],
                         grad_norms: dict[str, torch.Tensor] | None) -> None:
    """Before the optimizer step: learned loss weights (outside the DDP model) get the gradient of
    the global batch, and the methods that follow the losses (dwa, gradnorm) see the step's mean
    losses, averaged over processes."""
    _average_grads(accelerator, list(weighting.parameters()))
    if weighting.needs_losses:
        names = list(losses)
        means = torch.stack([torch.stack(losses[n]).mean() for n in names])
        if accelerator.num_processes > 1:
            means = accelerator.reduce(means, "mean")
        weighting.update(step, dict(zip(names, means.unbind(), strict=True)), grad_norms)


def _optimizer(model: torch.nn.Module, spec: Spec,
               loss_weights: list[torch.nn.Parameter] | None = None) -> torch.optim.Optimizer:
    t = spec.train
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        # Biases, LayerNorm and embedding-offset vectors are not decayed (BERT's recipe).
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if loss_weights:  # learned loss weights: their own learning rate, no decay (it pulls them to 0)
        groups.append({"params": loss_weights, "weight_decay": 0.0,
                       "lr": t.weighting_lr or t.learning_rate})
    # The fused kernel updates every tensor in one call: on CPU the default per-tensor loop took
    # ~1.1 s of a ~4 s MiniLM step, fused ~0.08 s (compare: bench_throughput.py, mtdnn-unfused).
    fused = all(p.device.type in ("cpu", "cuda") for p in model.parameters())
    return torch.optim.AdamW(groups, lr=t.learning_rate, betas=t.adam_betas, eps=t.adam_epsilon,
                             fused=fused or None)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for training on `device`, or None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not Linux
        return None


def check_memory(spec: Spec, encoder: torch.nn.Module, infos: list[TaskInfo],
                 device: torch.device) -> None:
    """Soft sharing holds one encoder copy per group: weights, gradients and two AdamW moments,
    16 bytes per fp32 parameter and copy. Refuses a run whose extra copies do not fit the memory
    free now, before they are made (activations come on top)."""
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
            f"train.sharing: soft sharing needs {copies} encoder copies, {need / gib:.2f} GiB for "
            f"weights, gradients and optimizer state, but {free / gib:.2f} GiB is free on "
            f"{device.type}: put tasks into fewer groups (tasks.<name>.encoder_group) or use "
            "sharing: hard"])


def _trackers(spec: Spec) -> list[str]:
    wanted = list(spec.train.report_to)
    if wanted == ["auto"]:
        import importlib.util

        return ["tensorboard"] if (importlib.util.find_spec("tensorboard") or
                                   importlib.util.find_spec("tensorboardX")) else []
    return [w for w in wanted if w != "none"]


def _replace_dir(tmp: Path, target: Path) -> None:
    """Renames a fully written directory into place. The previous one is moved aside first and
    deleted last, so at every instant one complete copy exists on disk."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(model: MultiTaskModel, tokenizer: Any, spec: Spec, target: Path,
                    extra: dict[str, Any]) -> None:
    """Writes a model checkpoint into a temporary sibling directory, then renames it into place: a
    crash mid-save leaves the previous checkpoint whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, tokenizer=tokenizer,
                          extra={"max_seq_length": spec.max_seq_length, **extra})
    save_spec(spec, tmp / "spec.yaml")
    _replace_dir(tmp, target)


STATE_FILE = "trainer_state.json"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete resumable checkpoint under output_dir/checkpoints, or None."""
    root = Path(output_dir) / "checkpoints"
    done = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file()] if root.is_dir() else []
    return max(done, key=lambda p: json.loads((p / STATE_FILE).read_text())["step"], default=None)


def _save_training_state(accelerator: Any, out: Path, state: dict[str, Any], keep: int) -> None:
    """A resumable checkpoint: Accelerate's state (model, optimizer, scheduler, every RNG) plus
    ours (step, sampler position, best so far) in JSON. Written to a temporary directory and
    renamed; `trainer_state.json` is written last, so a directory without it is never resumed."""
    root = out / "checkpoints"
    target = root / f"step-{state['step']:07d}"
    tmp = root / f".tmp-step-{state['step']:07d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / "accelerate"), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
        _replace_dir(tmp, target)
        kept = sorted(p for p in root.glob("step-*") if p.is_dir())
        for stale in kept[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()


def _init_from_checkpoint(model: MultiTaskModel, spec: Spec) -> list[str]:
    """Copies heads (and task vectors) of the tasks that `spec.init_checkpoint` holds into the
    model; returns the names of the tasks initialised that way. A head whose shape differs (another
    label set) is an error that names the fix, never a silent partial load."""
    from safetensors.torch import load_file

    from mtdnn.data import DataError
    from mtdnn.model import HEADS_FILE

    ckpt = Path(spec.init_checkpoint)
    registry = MultiTaskModel.read_registry(ckpt)
    saved = {t["name"]: t for t in registry["tasks"]}
    tensors = load_file(str(ckpt / HEADS_FILE))
    loaded, problems = [], []
    for name, info in model.tasks.items():
        if name not in saved or name in spec.fresh_heads:
            continue
        if (saved[name]["type"], saved[name]["labels"]) != (info.type, info.labels):
            problems.append(f"task {name!r}: the checkpoint's head is a {saved[name]['type']} head "
                            f"with labels {saved[name]['labels']}, the spec asks for {info.type} "
                            f"with {info.labels} (start it fresh: fresh_heads=[{name}] or "
                            "--fresh-head)")
            continue
        prefix = f"heads.{name}."
        model.heads[name].load_state_dict({k[len(prefix):]: v for k, v in tensors.items()
                                           if k.startswith(prefix)})
        if model.task_embedding is not None and registry.get("task_embedding"):
            old_id = [t["name"] for t in registry["tasks"]].index(name)
            with torch.no_grad():
                model.task_embedding.weight[model.task_ids[name]] = \
                    tensors["task_embedding.weight"][old_id]
        loaded.append(name)
    if problems:
        raise DataError(str(ckpt), problems)
    return loaded


def train(spec: Spec, *, progress: bool = True, resume: bool | str | Path = False,
          stop_after: int | None = None) -> TrainResult:
    """Trains one shared encoder on every task of the spec; evaluates on dev; keeps the best.

    Args:
        spec: the run.
        progress: show a progress bar.
        resume: True resumes from the newest checkpoint in output_dir/checkpoints (or starts
            afresh when there is none); a path resumes from that checkpoint.
        stop_after: stop (as if killed) after this optimizer step, once its checkpoint is saved;
            for tests and time-sliced jobs.
    Returns:
        A `TrainResult` with the best checkpoint's directory and its dev metrics.
    Raises:
        SpecError / DataError: bad spec or data (before any training).
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    # ---- setup --------------------------------------------------------------------------------
    t = spec.train
    out = Path(spec.output_dir)
    resume_from = latest_checkpoint(out) if resume is True else Path(resume) if resume else None
    if resume_from is not None and not (resume_from / STATE_FILE).is_file():
        raise FileNotFoundError(f"{resume_from}: not a resumable checkpoint (no {STATE_FILE}); "
                                f"give a directory under {out / 'checkpoints'}")
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(t.mixed_precision),
        log_with=_trackers(spec) or None, project_dir=str(out),
        # Each step trains one task's head; the other heads get no gradient that step.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        # The schedule counts optimizer steps, whatever the number of processes (the sampler
        # deals global batches). Accelerate's default steps it num_processes times per step.
        step_scheduler_with_optimizer=False,
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:  # N unconnected single-process runs, one output_dir
        raise ValueError(f"{launched} processes were launched but Accelerate sees "
                         f"{accelerator.num_processes}: on a CPU-only machine set "
                         "ACCELERATE_USE_CPU=1 (see the README, multi-process training)")
    set_seed(spec.seed)  # head init and dropout; the sampler has its own seeded generators
    tokenizer = load_tokenizer(spec)
    encoder = load_encoder(spec.encoder, spec.revision, spec.trust_remote_code)
    activation = head_activation(encoder.config)
    with accelerator.main_process_first():  # rank 0 fills the tokenization cache first
        data = prepare_tasks(spec, tokenizer, activation)
    trainable = {name: d for name, d in data.items() if d.train is not None and len(d.train)}
    infos = [d.info for d in data.values()]
    check_memory(spec, encoder, infos, accelerator.device)
    try:
        model = MultiTaskModel(encoder, infos, spec.task_embedding)
    except ValueError as e:  # a task's layer the encoder does not have
        raise SpecError(spec.source, str(e).split("; ")) from None
    if spec.init_checkpoint:
        loaded = _init_from_checkpoint(model, spec)
        accelerator.print(f"mtdnn: from {spec.init_checkpoint}: encoder and heads of "
                          f"{loaded or 'no task'}")
    model.tokenizer = tokenizer
    model.max_seq_length = spec.max_seq_length
    model.train()  # from_pretrained returns eval mode: dropout would be off

    if t.main_task is not None and t.main_task not in trainable:
        raise SpecError(spec.source, [f"train.main_task: '{t.main_task}' has no training data"])
    sampler_args = ([(name, len(d.train)) for name, d in trainable.items()],
                    {name: spec.batch_size(d.spec) for name, d in trainable.items()})
    sampler_kwargs = dict(
        temperature=t.temperature, examples_cap=t.examples_cap, main_task=t.main_task,
        main_ratio=t.main_ratio, anneal_end=t.anneal_end,
        seed=spec.seed, num_replicas=accelerator.num_processes, rank=accelerator.process_index,
        lengths={name: d.train["length"] for name, d in trainable.items()},
        group_by_length=t.group_by_length)
    # The annealed schedule needs the run's length in sampler steps, which follows from its epoch
    # length: proportional's (every batch once). It is built below, once total_steps is known.
    annealed = t.sampler == "annealed"
    sampler = MultiTaskBatchSampler(*sampler_args, strategy="proportional" if annealed
                                    else t.sampler, **sampler_kwargs)
    steps_per_epoch = max(1, len(sampler) // t.gradient_accumulation_steps)
    joint = t.step_mode == "joint"
    samplers = task_samplers(trainable, spec, accelerator.num_processes,
                             accelerator.process_index) if joint else {}
    if joint:
        # An epoch is as many joint steps (K batches each) as process the batches of an
        # alternating epoch: `epochs` buys the same compute in both modes. Each task cycles through
        # its own sampler: small tasks repeat within an epoch, large ones are not finished.
        steps_per_epoch = max(1, math.ceil(len(sampler) / len(samplers))
                              // t.gradient_accumulation_steps)
    total_steps = t.max_steps or math.ceil(t.epochs * steps_per_epoch)
    if annealed:  # sampler steps are micro-batches
        sampler = MultiTaskBatchSampler(
            *sampler_args, strategy="annealed", **sampler_kwargs,
            anneal_steps=total_steps * t.gradient_accumulation_steps)
    if t.sampler in ("main_ratio", "annealed"):
        shares = ", ".join(f"{k} {p:.1%}" for k, p in sampler.task_probabilities().items())
        if annealed:
            last = sampler.annealed_probabilities(total_steps * t.gradient_accumulation_steps - 1)
            shares += " at the first step; " + ", ".join(f"{k} {p:.1%}" for k, p in last.items())
            shares += " at the last"
        accelerator.print(f"mtdnn: {t.sampler} sampling, shares of steps: {shares}")
    eval_every = t.eval_every or steps_per_epoch
    save_every = t.save_every or eval_every
    weighting = make_weighting(spec, list(trainable), steps_per_epoch).to(accelerator.device)
    optimizer = _optimizer(model, spec, list(weighting.parameters()))
    scheduler = get_scheduler(
        {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[t.scheduler],
        optimizer, num_warmup_steps=int(t.warmup_ratio * total_steps),
        num_training_steps=total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if weighting.state_dict():  # learned weights, loss history: saved with every checkpoint
        accelerator.register_for_checkpointing(weighting)
    collator = Collator(tokenizer.pad_token_id)

    first_step, best_score, best_step, best_results = 1, -math.inf, None, {}
    running: dict[str, list] = {}
    if resume_from is not None:
        state = json.loads((resume_from / STATE_FILE).read_text(encoding="utf-8"))
        if joint != ("task_samplers" in state):
            raise ValueError(f"{resume_from} was saved with train.step_mode="
                             f"{'joint' if 'task_samplers' in state else 'alternating'}: resume "
                             "it with that step mode")
        accelerator.load_state(str(resume_from / "accelerate"))  # weights, optimizer, RNGs
        sampler.load_state_dict(state["sampler"])
        for name, task_sampler in samplers.items():
            task_sampler.load_state_dict(state["task_samplers"][name])
        first_step = state["step"] + 1
        best_score = state["best_score"] if state["best_score"] is not None else -math.inf
        best_step, best_results = state["best_step"], state["best_results"]
        running = {k: [torch.tensor(v, device=accelerator.device) for v in vs]
                   for k, vs in state["running"].items()}
        accelerator.print(f"mtdnn: resumed from {resume_from} at step {state['step']}")
    if joint:
        joint_step = _JointStep({name: _TaskStream(s, trainable, collator, accelerator.device)
                                 for name, s in samplers.items()}, model, weighting,
                                make_surgery(spec), accelerator, t.gradient_accumulation_steps)
    else:
        stream = _TaskStream(sampler, trainable, collator, accelerator.device)

    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_spec(spec, out / "spec.yaml")
        if resume_from is not None:  # drop log records of steps that will be run again
            _truncate_log(out / "train_log.jsonl", first_step - 1)
        elif (out / "train_log.jsonl").exists():
            (out / "train_log.jsonl").unlink()
    log_file = open(out / "train_log.jsonl", "a", encoding="utf-8") \
        if accelerator.is_main_process else None
    accelerator.init_trackers("mtdnn", config={"encoder": spec.encoder, **{
        f"train.{k}": v for k, v in vars(t).items() if isinstance(v, (int, float, str, bool))}})

    def log(record: dict[str, Any]) -> None:
        if log_file is not None:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
        accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))},
                        step=record["step"])

    def evaluate_all(step: int) -> dict[str, dict[str, float]]:
        unwrapped = accelerator.unwrap_model(model)
        results = {name: evaluate_task(unwrapped, d.info, d.dev, d.dev_rows, accelerator,
                                       t.eval_batch_size, collator)
                   for name, d in data.items() if d.dev is not None}
        unwrapped.train()
        flat = {f"dev/{task}/{m}": v for task, ms in results.items() for m, v in ms.items()}
        log({"step": step, "score": mean_main_metric(results, data), **flat})
        return results

    # ---- train ----------------------------------------------------------------------------------
    accelerator.print(
        f"mtdnn: {len(trainable)} tasks, {sum(len(d.train) for d in trainable.values())} training "
        f"examples, {total_steps} steps ({steps_per_epoch}/epoch), {accelerator.num_processes} "
        f"process(es) on {accelerator.device}, mixed precision: {accelerator.mixed_precision}")
    if joint or not weighting.constant:
        accelerator.print(f"mtdnn: {t.step_mode} steps, loss weighting: {t.loss_weighting}, "
                          f"gradient surgery: {t.gradient_surgery}")
    bar = tqdm(total=total_steps, initial=first_step - 1, desc="training", dynamic_ncols=True,
               disable=not (progress and accelerator.is_local_main_process))
    start = time.perf_counter()
    accum = t.gradient_accumulation_steps
    for step in range(first_step, total_steps + 1):
        log_now = step % t.log_every == 0 or step == total_steps
        # The weights this step trains with (learned ones move in optimizer.step()).
        weights_used = weighting.weights() if log_now and not weighting.constant else {}
        if joint:  # one batch of every task per micro-step
            step_losses = joint_step.backward(step)
        else:
            step_losses = {}
            for micro in range(accum):
                task, batch = next(stream)
                # Gradients are all-reduced once per optimizer step, on the last micro-batch.
                sync = contextlib.nullcontext() if micro == accum - 1 \
                    else accelerator.no_sync(model)
                with sync:
                    loss = model(task, **batch)["loss"]
                    accelerator.backward(weighting.task_loss(task, loss) / accum)
                step_losses.setdefault(task, []).append(loss.detach())
        for task, values in step_losses.items():
            running.setdefault(task, []).extend(values)
        _update_loss_weights(accelerator, weighting, step, step_losses,
                             joint_step.grad_norms() if joint else None)
        if t.sharing == "soft":  # the copies' L2 pull, after the (all-reduced) task gradients
            accelerator.unwrap_model(model).add_soft_sharing_grad(t.soft_sharing_weight)
        if t.max_grad_norm is not None:
            accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
        optimizer.step()
        weighting.after_step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)

        if log_now:
            # The only host sync of the step loop: losses stay on device between logs.
            # Every rank ran the same tasks: the mean over ranks is the mean over global batches.
            losses = {task: accelerator.reduce(torch.stack(v).mean(), "mean").item()
                      for task, v in running.items()}
            running.clear()
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
            log({"step": step, "epoch": round(step / steps_per_epoch, 4),
                 "lr": scheduler.get_last_lr()[0],
                 "elapsed_s": round(time.perf_counter() - start, 2),
                 **{f"loss/{k}": v for k, v in losses.items()},
                 **({"soft_sharing_penalty": accelerator.unwrap_model(model)
                     .soft_sharing_penalty().item()} if t.sharing == "soft" else {}),
                 **{f"weight/{k}": v.item() for k, v in weights_used.items()}})

        if step % eval_every == 0 or step == total_steps:
            results = evaluate_all(step)
            score = mean_main_metric(results, data)
            if results and score > best_score:
                best_score, best_step, best_results = score, step, results
                if accelerator.is_main_process:
                    learned = {} if weighting.constant else {"loss_weights": {
                        k: v.item() for k, v in weighting.weights().items()}}
                    save_checkpoint(accelerator.unwrap_model(model), tokenizer, spec,
                                    out / "best", {"step": step, "score": score, **learned})
            accelerator.wait_for_everyone()
        if step % save_every == 0 and step < total_steps or step == stop_after:
            _save_training_state(accelerator, out, {
                "step": step, "sampler": sampler.state_dict(),
                **({"task_samplers": {k: s.state_dict() for k, s in samplers.items()}}
                   if joint else {}),
                "best_score": best_score if best_step is not None else None,
                "best_step": best_step, "best_results": best_results,
                # Means over ranks, so every rank resumes with the same (global) partial losses.
                "running": {k: accelerator.reduce(torch.stack(v), "mean").tolist()
                            for k, v in running.items()}},
                t.save_total_limit)
        if step == stop_after:
            bar.close()
            if log_file is not None:
                log_file.close()
            accelerator.end_training()
            return TrainResult(output_dir=out, best_dir=None, best_step=best_step,
                               metrics={k: {"dev": m} for k, m in best_results.items()})
    bar.close()

    # ---- finish --------------------------------------------------------------------------------
    if not best_results and accelerator.is_main_process:  # no dev split anywhere: keep the last
        save_checkpoint(accelerator.unwrap_model(model), tokenizer, spec, out / "best",
                        {"step": total_steps})
        best_step = total_steps
    metrics = {task: {"dev": m} for task, m in best_results.items()}
    baselines = {name: majority_baseline(d.info, d.train_rows, d.dev_rows)
                 for name, d in data.items() if d.dev_rows is not None and d.train_rows is not None}
    if accelerator.is_main_process:
        (out / "metrics.json").write_text(json.dumps(
            {"best_step": best_step, "score": best_score if best_results else None,
             "tasks": metrics}, indent=2), encoding="utf-8")
        table = results_table(metrics, baselines)
        (out / "results.md").write_text(table + "\n", encoding="utf-8")
        accelerator.print(f"\nbest dev results (step {best_step}), checkpoint {out / 'best'}:\n\n"
                          f"{table}\n")
    if log_file is not None:
        log_file.close()
    accelerator.end_training()
    return TrainResult(output_dir=out, best_dir=out / "best", best_step=best_step,
                       metrics=metrics, baselines=baselines)


def _truncate_log(path: Path, last_step: int) -> None:
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
