"""The multi-task training loop, on Accelerate. `train()` is a recipe that reads top to bottom:

    setup      accelerator -> tokenizer, encoder, task data -> model (from init_checkpoint) ->
               step mode (its samplers fix the epoch) -> loss weighting, optimizer, schedule ->
               prepare -> step hooks (weighting, sharing) -> resume
    train      each optimizer step: step mode's passes -> hooks -> clip -> update; log, evaluate
               (keep the best checkpoint), save a resumable checkpoint on its cadence
    finish     metrics.json, results.md (skipped when stopped early with `stop_after`)

Strategies live behind their interfaces (mtdnn/steps.py, weighting.py, sharing.py,
gradsurgery.py, sampler.py; names in mtdnn/methods.py): the loop has no strategy branches.

Example:
    >>> from mtdnn import load_spec, train
    >>> result = train(load_spec("task_specs/demo.yaml"))
    >>> result.metrics["rte"]["dev"]["accuracy"]
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mtdnn.checkpoint import (
    STATE_FILE,
    TrainerState,
    init_from_checkpoint,
    load_training_state,
    resume_point,
    save_training_state,
    write_checkpoint,
)
from mtdnn.distill import attach_targets
from mtdnn.distill import settings as distill_settings
from mtdnn.encoding import encoder_run
from mtdnn.errors import CheckpointError, SpecError
from mtdnn.evaluation import evaluate_tasks, majority_baseline, mean_main_metric, results_table
from mtdnn.instrument import Instrument
from mtdnn.methods import implementation
from mtdnn.metrics import main_metric
from mtdnn.model import MultiTaskModel
from mtdnn.plots import plot_run
from mtdnn.prepare import (
    TaskData,
    detach_pooler,
    load_model_parts,
    prepare_tasks,
    start_heads_from_pooler,
)
from mtdnn.runlog import RunLog, trackers
from mtdnn.sharing import make_sharing
from mtdnn.smart import install as install_smart
from mtdnn.spec import Spec, save_spec
from mtdnn.steps import StepMode, WeightingHook
from mtdnn.weighting import make_weighting


@dataclass
class TrainResult:
    output_dir: Path
    best_dir: Path | None  # None when the run was stopped early (stop_after)
    best_step: int | None
    metrics: dict[str, dict[str, dict[str, float]]]  # task -> split -> metric -> value
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    # training rows (ranking: groups) run per task, all processes and resumed parts together
    examples: dict[str, int] = field(default_factory=dict)


def resolve_mixed_precision(setting: str) -> str:
    """auto: fp32 on CPU (bf16 there is emulated and ~100x slower), bf16 on GPUs that have it, else
    fp16."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def make_accelerator(spec: Spec, out: Path) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(spec.train.mixed_precision),
        log_with=trackers(spec) or None, project_dir=str(out),
        # Each step trains one task's head; the other heads get no gradient that step.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        # The schedule counts optimizer steps, whatever the number of processes (the sampler
        # deals global batches). Accelerate's default steps it num_processes times per step.
        step_scheduler_with_optimizer=False,
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:  # N unconnected single-process runs, one output_dir
        raise SpecError("accelerate launch", [
            f"{launched} processes were launched but Accelerate sees {accelerator.num_processes}: "
            "on a CPU-only machine set ACCELERATE_USE_CPU=1 (see the README, multi-process "
            "training)"])
    return accelerator


def make_optimizer(model: torch.nn.Module, spec: Spec,
                   loss_weights: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
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
    # The fused kernel updates every tensor in one call: on CPU the per-tensor loop took ~1.1 s of
    # a ~4 s MiniLM step, fused ~0.08 s (bench_throughput.py: mtdnn vs mtdnn-unfused).
    fused = t.optimizer == "adamw_torch_fused" and \
        all(p.device.type in ("cpu", "cuda") for p in model.parameters())
    return torch.optim.AdamW(groups, lr=t.learning_rate, betas=t.adam_betas, eps=t.adam_epsilon,
                             fused=fused or None)


def make_scheduler(spec: Spec, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    from transformers import get_scheduler

    t = spec.train
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}
    return get_scheduler(name[t.scheduler], optimizer,
                         num_warmup_steps=int(t.warmup_ratio * total_steps),
                         num_training_steps=total_steps)


class SaveCadence:
    """When a resumable checkpoint is due: every `save_every` steps, or when `save_every_minutes`
    have passed since the last one (checked at log steps under several processes, where the loop
    syncs anyway, so every rank decides alike)."""

    def __init__(self, spec: Spec, accelerator: Any):
        self.every, self.minutes = spec.train.save_every, spec.train.save_every_minutes
        self.accelerator, self.last = accelerator, time.monotonic()

    def due(self, step: int, log_step: bool) -> bool:
        due = self.every is not None and step % self.every == 0
        if not due and self.minutes is not None and (log_step or
                                                     self.accelerator.num_processes == 1):
            late = time.monotonic() - self.last >= 60 * self.minutes
            if self.accelerator.num_processes > 1:
                flag = torch.tensor(float(late), device=self.accelerator.device)
                late = bool(self.accelerator.reduce(flag, "sum").item() > 0)
            due = late
        return due

    def saved(self) -> None:
        self.last = time.monotonic()


def train(spec: Spec, *, progress: bool = True, resume: bool | str | Path = False,
          stop_after: int | None = None, instrument: Instrument | None = None) -> TrainResult:
    """Trains one shared encoder on every task of the spec; evaluates on dev; keeps the best.

    Args:
        spec: the run.
        progress: show a progress bar.
        resume: True resumes from the newest checkpoint in output_dir/checkpoints (or starts
            afresh when there is none); a path resumes from that checkpoint.
        stop_after: stop (as if killed) after this optimizer step, once its resumable checkpoint
            is saved; for tests and time-sliced jobs. The run's results are not written.
        instrument: observes the run (mtdnn/instrument.py); benchmarks measure through it.
    Returns:
        A `TrainResult` with the best checkpoint's directory and its dev metrics.
    Raises:
        SpecError / DataError / CheckpointError: bad spec, data or checkpoint, before anything is
            written to the output directory.
    """
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    # ---- setup --------------------------------------------------------------------------------
    t, out, instrument = spec.train, Path(spec.output_dir), instrument or Instrument()
    resume_from = resume_point(out, resume)
    accelerator = make_accelerator(spec, out)
    set_seed(spec.seed)  # head init and dropout; the samplers have their own seeded generators
    tokenizer, encoder = load_model_parts(spec)
    pooler = detach_pooler(encoder, spec)  # head_init: pooler
    with accelerator.main_process_first():  # rank 0 fills the tokenization cache first
        data = prepare_tasks(spec, tokenizer, encoder.config)
        scoring = time.perf_counter()
        teachers = attach_targets(spec, data)  # distillation: the teachers' soft targets
        scoring = time.perf_counter() - scoring
    trainable = {name: d for name, d in data.items() if d.train is not None}
    infos = [d.info for d in data.values()]
    sharing_cls = implementation("sharing", t.sharing)
    sharing_cls.check_memory(spec, encoder, infos, accelerator.device)
    try:
        model = MultiTaskModel(encoder, infos, spec.task_embedding)
    except ValueError as e:  # a task's layer the encoder does not have
        raise SpecError(spec.source, str(e).split("; ")) from None
    start_heads_from_pooler(model, spec, pooler)
    if spec.init_checkpoint:
        loaded = init_from_checkpoint(model, spec.init_checkpoint, spec.fresh_heads,
                                      spec.trust_remote_code)
        accelerator.print(f"mtdnn: from {spec.init_checkpoint}: the encoder, and the heads of "
                          f"{', '.join(loaded['heads']) or 'no task'}")
    model.tokenizer, model.max_seq_length = tokenizer, spec.max_seq_length
    model.encoder_run, cut_line = encoder_run(encoder, t.compute_cut)
    model.distill = distill_settings(spec)
    for name, paths in teachers.items():
        accelerator.print(f"mtdnn: distilling {name} from {len(paths)} teacher(s)")
    if teachers:  # the teachers score the training rows once; later runs read the cache
        accelerator.print(f"mtdnn: the teachers' targets took {scoring:.0f} s")
    model.train()

    mode_cls: type[StepMode] = implementation("step_mode", t.step_mode)
    mode = mode_cls(spec, {n: len(d.train) for n, d in trainable.items()},
                    {n: d.train["length"] for n, d in trainable.items()},
                    accelerator.num_processes, accelerator.process_index)
    steps_per_epoch = mode.epoch_steps()
    total_steps = t.max_steps or math.ceil(t.epochs * steps_per_epoch)
    mode.set_run_length(total_steps)
    eval_every = t.eval_every or steps_per_epoch
    weighting = make_weighting(spec, list(trainable), steps_per_epoch).to(accelerator.device)
    optimizer = make_optimizer(model, spec, list(weighting.parameters()))
    scheduler = make_scheduler(spec, optimizer, total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if weighting.state_dict():  # learned weights, loss history: saved with every checkpoint
        accelerator.register_for_checkpointing(weighting)
    unwrapped = accelerator.unwrap_model(model)
    collators = {n: (unwrapped.task_types[n].collator(tokenizer),
                     unwrapped.task_types[n].columns(training=True)) for n in trainable}
    mode.start(model, weighting, accelerator, {n: d.train for n, d in trainable.items()},
               collators, instrument)
    smart_hooks, smart_state = install_smart(spec, unwrapped)
    for stateful in smart_state:  # the slow copy, the noise generators: part of every checkpoint
        accelerator.register_for_checkpointing(stateful)
    hooks = [WeightingHook(weighting, accelerator), make_sharing(spec, unwrapped), *smart_hooks]

    state = TrainerState(step=0, step_mode=t.step_mode, step_state={})
    if resume_from is not None:
        state = load_training_state(accelerator, resume_from, t.step_mode)
        try:
            mode.load_state_dict(state.step_state)
        except (KeyError, TypeError, ValueError) as e:  # another run's samplers, or damaged
            raise CheckpointError(resume_from / STATE_FILE, [
                f"its step state does not fit this run ({type(e).__name__}: {e}): resume with "
                "the spec it was saved with (grouped_tasks: set tasks.<name>.group_by_length to "
                "match; token_classification tasks were grouped before 2026-12-02), or start "
                "afresh without --resume"]) from None
        accelerator.print(f"mtdnn: resumed from {resume_from} at step {state.step}")
    # The input is good: from here on the output directory is written.
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_spec(spec, out / "spec.yaml")
    log = RunLog(out, accelerator, state.step if resume_from is not None else None, instrument)
    accelerator.init_trackers("mtdnn", config={"encoder": spec.encoder, **{
        f"train.{k}": v for k, v in vars(t).items() if isinstance(v, (int, float, str, bool))}})
    running = {k: [torch.tensor(v, device=accelerator.device) for v in vs]
               for k, vs in state.running.items()}
    examples_before = dict(state.examples)  # of the steps before a resume

    def examples_so_far() -> dict[str, int]:
        local = mode.examples()
        names = list(trainable)  # every process runs the same tasks: the same keys everywhere
        counts = torch.tensor([local.get(n, 0) for n in names], device=accelerator.device)
        if accelerator.num_processes > 1:
            counts = accelerator.reduce(counts, "sum")
        return {n: examples_before.get(n, 0) + int(c) for n, c in zip(names, counts.tolist())}

    cadence = SaveCadence(spec, accelerator)

    # ---- train ----------------------------------------------------------------------------------
    accelerator.print(
        f"mtdnn: {len(trainable)} tasks, {sum(len(d.train) for d in trainable.values())} training "
        f"examples, {total_steps} steps ({steps_per_epoch}/epoch), {accelerator.num_processes} "
        f"process(es) on {accelerator.device}, mixed precision: {accelerator.mixed_precision}; "
        f"{t.step_mode} steps, sampler {t.sampler}, loss weighting {t.loss_weighting}, gradient "
        f"surgery {t.gradient_surgery}, {t.sharing} sharing; batches grouped by length: "
        f"{', '.join(n for n in trainable if spec.group_by_length(spec.task(n))) or 'none'}")
    if mode.describe():
        accelerator.print(f"mtdnn: {mode.describe()}")
    accelerator.print(f"mtdnn: {cut_line}")
    bar = tqdm(total=total_steps, initial=state.step, desc="training", dynamic_ncols=True,
               disable=not (progress and accelerator.is_local_main_process))
    start, step, stopped = time.perf_counter(), state.step, False
    for step in range(state.step + 1, total_steps + 1):
        log_now = step % t.log_every == 0 or step == total_steps
        for hook in hooks:
            hook.start_step(step, log_now)
        losses = mode.backward(step)
        for task, values in losses.items():
            running.setdefault(task, []).extend(values)
        grad_norms = mode.grad_norms()
        for hook in hooks:
            hook.before_optimizer_step(step, losses, grad_norms)
        if t.max_grad_norm is not None:
            accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
        optimizer.step()
        for hook in hooks:
            hook.after_optimizer_step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        instrument.on_step_end(step)

        if log_now:
            # The only host sync of the step loop: losses stay on device between logs. Every rank
            # ran the same tasks: the mean over ranks is the mean over global batches.
            means = {task: accelerator.reduce(torch.stack(v).mean(), "mean").item()
                     for task, v in running.items()}
            running.clear()
            bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()}, refresh=False)
            record = {"step": step, "epoch": round(step / steps_per_epoch, 4),
                      "lr": scheduler.get_last_lr()[0],
                      "elapsed_s": round(time.perf_counter() - start, 2),
                      **{f"loss/{k}": v for k, v in means.items()}}
            for hook in hooks:
                record.update(hook.log_values())
            log.write(record)

        if step % eval_every == 0 or step == total_steps:
            began = time.perf_counter()
            results = evaluate_tasks(unwrapped, data, accelerator, t.eval_batch_size, instrument)
            score = mean_main_metric(results, data)
            log.write({"step": step, "score": score, **{
                f"dev/{task}/{m}": v for task, ms in results.items() for m, v in ms.items()}})
            if results and score > state.selection():
                state.best_score, state.best_step, state.best_results = score, step, results
                if accelerator.is_main_process:
                    write_checkpoint(unwrapped, tokenizer, spec, out / "best",
                                     checkpoint_metrics(step, score, results, weighting))
            accelerator.wait_for_everyone()
            instrument.on_evaluation(step, began, time.perf_counter())
        stopped = step == stop_after
        if stopped or step < total_steps and cadence.due(step, log_now):
            state.step, state.step_state = step, mode.state_dict()
            # Means over ranks, so every rank resumes with the same (global) partial losses.
            state.running = {k: accelerator.reduce(torch.stack(v), "mean").tolist()
                             for k, v in running.items()}
            state.examples = examples_so_far()
            save_training_state(accelerator, out, state, t.save_total_limit)
            cadence.saved()
        if stopped:
            break
    bar.close()

    # ---- finish --------------------------------------------------------------------------------
    metrics = {task: {"dev": m} for task, m in state.best_results.items()}
    baselines: dict[str, dict[str, float]] = {}
    state.examples = examples_so_far()
    if not stopped:
        if state.best_step is None:  # no dev split anywhere: keep the last model
            state.best_step = step
            if accelerator.is_main_process:
                write_checkpoint(unwrapped, tokenizer, spec, out / "best",
                                 checkpoint_metrics(step, None, {}, weighting))
        baselines = {name: majority_baseline(d.info, d.train_rows, d.dev_rows)
                     for name, d in data.items()
                     if d.dev_rows is not None and d.train_rows is not None}
        if accelerator.is_main_process:
            table = results_table({name: metrics.get(name, {}) for name in data}, baselines)
            write_results(out, state, metrics, table)
            plot_run(out, {name: main_metric(d.info.metrics) for name, d in data.items()})
            accelerator.print(f"\nbest dev results (step {state.best_step}), checkpoint "
                              f"{out / 'best'}:\n\n{table}\n")
    log.close()
    accelerator.end_training()
    return TrainResult(output_dir=out, best_dir=None if stopped else out / "best",
                       best_step=state.best_step, metrics=metrics, baselines=baselines,
                       examples=state.examples)


def checkpoint_metrics(step: int, score: float | None, results: dict[str, dict[str, float]],
                       weighting: Any) -> dict[str, Any]:
    """best/metrics.json: the step, score and dev metrics of the checkpoint, and the learned loss
    weights it was trained with."""
    record: dict[str, Any] = {"step": step, "score": score,
                              "tasks": {task: {"dev": m} for task, m in results.items()}}
    if not weighting.constant:
        record["loss_weights"] = {k: v.item() for k, v in weighting.weights().items()}
    return record


def write_results(out: Path, state: TrainerState, metrics: dict[str, Any], table: str) -> None:
    (out / "metrics.json").write_text(json.dumps(
        {"best_step": state.best_step, "score": state.best_score, "tasks": metrics,
         "examples": state.examples}, indent=2), encoding="utf-8")
    (out / "results.md").write_text(table + "\n", encoding="utf-8")


__all__ = ["TaskData", "TrainResult", "train", "resolve_mixed_precision"]
