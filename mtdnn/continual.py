"""Continual multi-task training (ERNIE 2.0): stages that add tasks, each run from the last's model.

Stage k trains every task of stages 1..k with one `mtdnn.trainer.train` run in
`<output_dir>/stage-<k>`, starting from stage k-1's best checkpoint (its encoder, and the heads of
the tasks it holds; a new task gets a fresh head). After each stage the dev metrics of every task
trained so far go into `stages.json` and `stages.md`, so forgetting of the early tasks is visible.

Example:
    >>> spec = load_spec("task_specs/strategies/continual.yaml")
    >>> result = train_stages(spec)     # runs/continual/stage-1, stage-2, stage-3
    >>> result.metrics["stage-3"]["stsb"]["pearson"]
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from mtdnn.instrument import Instrument
from mtdnn.spec import Spec, SpecError
from mtdnn.trainer import TrainResult, train

Table = dict[str, dict[str, dict[str, float]]]  # stage -> task -> metric -> dev value


@dataclass
class StagesResult:
    """What `train_stages` returns; `table` is the Markdown of stages.md."""

    output_dir: Path
    stages: list[TrainResult]  # one per stage, in order
    metrics: Table  # "stage-<k>" -> task -> metric -> dev value of that stage's best checkpoint

    @property
    def table(self) -> str:
        return stages_table(self.metrics)


def stage_specs(spec: Spec) -> list[Spec]:
    """The single-run spec of every stage of `spec.stages`.

    Stage k trains the tasks of stages 1..k (in the spec's task order) in `<output_dir>/stage-<k>`,
    with the stage's epochs / max_steps / learning_rate over `spec.train`. Stage 1 starts from
    the spec's encoder (and init_checkpoint); stage k > 1 from `stage-<k-1>/best`: its encoder and
    tokenizer, and the heads of the tasks it holds.

    Args:
        spec: a spec with stages.
    Returns:
        One `Spec` per stage, without stages.
    Raises:
        SpecError: the spec has no stages, or train.main_task is not trained from stage 1 on.
    """
    if not spec.stages:
        raise SpecError(spec.source, ["stages: the spec has none (train it with mtdnn.train)"])
    first = set(spec.stages[0].tasks)
    if spec.train.main_task is not None and spec.train.main_task not in first:
        raise SpecError(spec.source, [f"train.main_task: '{spec.train.main_task}' is not trained "
                                      f"by stage 1 ({', '.join(spec.stages[0].tasks)}): add it "
                                      "to the first stage"])
    out, added, specs = Path(spec.output_dir), set(), []
    for k, stage in enumerate(spec.stages, 1):
        added |= set(stage.tasks)
        settings = {} if stage.learning_rate is None else {"learning_rate": stage.learning_rate}
        if stage.epochs is not None:  # the stage's epochs win over a run-wide max_steps
            settings.update(epochs=stage.epochs, max_steps=stage.max_steps)
        elif stage.max_steps is not None:
            settings["max_steps"] = stage.max_steps
        start = {}
        if k > 1:  # the trainer loads the encoder from `encoder`; init_checkpoint adds the heads
            previous = str(out / f"stage-{k - 1}" / "best")
            start = dict(encoder=previous, tokenizer=previous, revision=None,
                         init_checkpoint=previous, fresh_heads=())
        specs.append(dataclasses.replace(
            spec, tasks=tuple(t for t in spec.tasks if t.name in added), stages=(),
            output_dir=str(out / f"stage-{k}"), train=dataclasses.replace(spec.train, **settings),
            source=f"{spec.source} (stage {k})", **start))
    return specs


def train_stages(spec: Spec, *, progress: bool = True, resume: bool = False,
                 instrument: Instrument | None = None) -> StagesResult:
    """Trains the stages of `spec` in order; records every task's dev metrics after each stage.

    Writes `<output_dir>/stage-<k>/` (a full run each: best/, metrics.json, ...), `stages.json`
    and `stages.md` (the table of `stages_table`), and prints the table after each stage.

    Args:
        spec: a spec with stages.
        progress: show progress bars.
        resume: skip the stages that finished (their `metrics.json` exists) and resume the first
            unfinished one from its newest checkpoint (afresh when it has none).
        instrument: observes every stage's training (mtdnn/instrument.py).
    Returns:
        A `StagesResult`: each stage's `TrainResult` and the stage -> task -> metric table.
    Raises:
        SpecError / DataError: bad spec or data.
    """
    out = Path(spec.output_dir)
    main = int(os.environ.get("RANK", "0")) == 0  # a launcher's process 0 writes and prints
    results: list[TrainResult] = []
    metrics: Table = {}
    resuming = resume
    for k, stage_spec in enumerate(stage_specs(spec), 1):
        done = Path(stage_spec.output_dir) / "metrics.json"
        if resume and done.is_file():
            saved = json.loads(done.read_text(encoding="utf-8"))
            result = TrainResult(output_dir=done.parent, best_dir=done.parent / "best",
                                 best_step=saved["best_step"], metrics=saved["tasks"])
            trained = False
        else:
            result = train(stage_spec, progress=progress, resume=resuming, instrument=instrument)
            resuming = False  # only the first unfinished stage can have checkpoints of this run
            _wait_for_everyone()  # the next stage reads best/, written by process 0
            trained = True
        results.append(result)
        metrics[f"stage-{k}"] = {task: dict(splits["dev"]) for task, splits in
                                 result.metrics.items() if "dev" in splits}
        if main:
            table = stages_table(metrics)
            out.mkdir(parents=True, exist_ok=True)
            (out / "stages.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
            (out / "stages.md").write_text(table + "\n", encoding="utf-8")
            head = f"mtdnn: stage {k}/{len(spec.stages)} (+{', '.join(spec.stages[k - 1].tasks)})"
            if trained or k == len(spec.stages):
                print(f"\n{head} {'done' if trained else 'complete, skipped'}; dev results after "
                      f"each stage ({out / 'stages.md'}):\n\n{table}\n", flush=True)
            else:
                print(f"{head} complete, skipped", flush=True)
    return StagesResult(output_dir=out, stages=results, metrics=metrics)


def stages_table(metrics: Table) -> str:
    """A Markdown table: one row per task and metric, one column per stage ("-" before the task
    is added), and the change from the task's first stage to the last (negative: forgetting).

    Args:
        metrics: "stage-<k>" -> task -> metric -> value, stages in order.
    Returns:
        The table, values x100, with a one-line legend.
    """
    stages = list(metrics)
    rows = list(dict.fromkeys((task, m) for tasks in metrics.values()
                              for task, ms in tasks.items() for m in ms))
    lines = ["| task | metric | " + " | ".join(s.replace("-", " ") for s in stages) +
             " | change |", "|---|---|" + "---:|" * (len(stages) + 1)]
    for task, m in rows:
        values = [metrics[s].get(task, {}).get(m) for s in stages]
        cells = ["-" if v is None else f"{100 * v:.2f}" for v in values]
        seen = [v for v in values if v is not None]
        change = f"{round(100 * (seen[-1] - seen[0]), 2) + 0.0:+.2f}" if len(seen) > 1 else "-"
        lines.append(f"| {task} | {m} | " + " | ".join(cells) + f" | {change} |")
    lines.append("")
    lines.append("Values x100: dev metrics of each stage's best checkpoint. change: last stage "
                 "minus the stage that added the task (negative: forgetting).")
    return "\n".join(lines)


def _wait_for_everyone() -> None:
    from accelerate import PartialState

    PartialState().wait_for_everyone()
