"""`mtdnn compare`: does multi-task training help my tasks, by how much, at what cost?

For each seed, four routes train every target task:

    single        each target alone (the spec's settings, plain single-task training)
    multi         the targets and the helpers in one run (the spec's settings and strategies)
    multi+ft      multi's best checkpoint, then each target fine-tuned alone for `ft_epochs`
    single+extra  single's best checkpoint, then the same `ft_epochs` on the target: the control
                  that gives single-task training the extra steps the fine-tuning stage adds

Under the proportional sampler an epoch runs every batch of every task once, so single and multi
train each target on the same examples (multi adds the helpers' on top), and multi+ft and
single+extra add the same fine-tuning examples: equal budgets per target, counted and stated in the
report. Each run is stored as it finishes (`records/`); an interrupted compare continues where it
stopped (a run cut short resumes from its newest checkpoint); a failed run is reported, not fatal.

The report (`report.md`, `report.json`, `report.png`; mtdnn/compare_report.py): per target and
metric, each route's mean ± std over seeds, the paired per-seed difference to single with a 95%
t-interval over seeds and a 95% bootstrap interval over dev examples, wall time and examples per
route, and a verdict per target.

Example:
    >>> result = compare(load_spec("task_specs/glue.yaml"), targets=["rte"], helpers=["mnli"])
    >>> result.verdicts["rte"]["multi+ft"]
    'helps: +8.3 [+4.0, +12.6]'
"""

from __future__ import annotations

import json
import shutil
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtdnn.errors import UserError
from mtdnn.spec import Spec, spec_from_dict, unknown_name_message

ROUTES = ("single", "multi", "multi+ft", "single+extra")
BASE = {"multi+ft": "multi", "single+extra": "single"}  # fine-tuning route -> its base run
# Settings a single-task run resets: with one task they would only rescale its loss or its steps.
_SINGLE_TASK_TRAIN = ("sampler", "temperature", "examples_cap", "main_task", "main_ratio",
                      "anneal_end", "step_mode", "loss_weighting", "weighting_lr",
                      "dwa_temperature", "dwa_period", "gradnorm_alpha", "gradient_surgery",
                      "cagrad_c", "sharing", "soft_sharing_weight")
_SINGLE_TASK_TASK = ("loss_weight", "encoder_group")
# Settings the fine-tuning runs keep from the spec (finetune starts from the defaults otherwise).
_FT_KEEP = ("batch_size", "eval_batch_size", "gradient_accumulation_steps", "warmup_ratio",
            "weight_decay", "scheduler", "max_grad_norm", "mixed_precision", "adam_epsilon",
            "adam_betas", "log_every", "report_to", "optimizer", "group_by_length")


@dataclass(frozen=True)
class Run:
    """One training run of the plan."""

    route: str
    seed: int
    targets: tuple[str, ...]  # the targets it records (multi: all; others: one)
    directory: Path

    @property
    def key(self) -> str:
        suffix = "" if self.route == "multi" else f"/{self.targets[0]}"
        return f"{self.route}{suffix}/seed-{self.seed}"


@dataclass
class CompareResult:
    output_dir: Path
    records: list[dict[str, Any]]  # one per (route, target, seed): status, metrics, cost
    report: dict[str, Any]  # what report.json holds
    verdicts: dict[str, dict[str, str]] = field(default_factory=dict)  # target -> route -> text
    markdown: str = ""


def _check(spec: Spec, targets: Sequence[str], helpers: Sequence[str], seeds: Sequence[int],
           routes: Sequence[str], ft_epochs: float) -> None:
    names = [t.name for t in spec.tasks]
    problems = [f"--targets: {unknown_name_message('task', t, names)}" for t in targets
                if t not in names]
    problems += [f"--helpers: {unknown_name_message('task', t, names)}" for t in helpers
                 if t not in names]
    if not targets:
        problems.append("--targets: name at least one task of the spec")
    both = sorted(set(targets) & set(helpers))
    if both:
        problems.append(f"--helpers: {both} are targets too: a task is one or the other")
    if not seeds or len(set(seeds)) != len(seeds):
        problems.append(f"--seeds: give one or more different seeds, got {list(seeds)}")
    problems += [f"--routes: {unknown_name_message('route', r, ROUTES)}" for r in routes
                 if r not in ROUTES]
    if not ft_epochs > 0:
        problems.append(f"--ft-epochs: must be > 0, got {ft_epochs}")
    if spec.stages:
        problems.append("stages: compare trains each route in one run; remove the stages (or "
                        "compare the stages' tasks without them)")
    for target in targets:
        if target in names and "dev" not in _splits(spec, spec.task(target)):
            problems.append(f"--targets: task '{target}' has no dev split to compare on")
    if problems:
        raise UserError(spec.source, problems)


def _splits(spec: Spec, task: Any) -> list[str]:
    from mtdnn.data import available_splits

    return available_splits(spec, task)


def run_spec(spec: Spec, run: Run, helpers: Sequence[str]) -> Spec:
    """The spec of a single or multi run (the fine-tuning routes start from a checkpoint)."""
    data = spec.to_dict()
    data.update(seed=run.seed, output_dir=str(run.directory))
    if run.route == "single":
        (target,) = run.targets
        data["tasks"] = {target: data["tasks"][target]}
        for key in _SINGLE_TASK_TRAIN:
            data["train"].pop(key, None)
        for key in _SINGLE_TASK_TASK:
            data["tasks"][target].pop(key, None)
        data["stages"] = []
    else:
        keep = [*run.targets, *helpers]
        data["tasks"] = {name: data["tasks"][name] for name in keep}
        for name in helpers:  # helpers train but are not evaluated: best/ is picked on targets
            task = data["tasks"][name]
            task["files"].pop("dev", None)
            if task.get("hub"):
                task["hub"]["splits"].pop("dev", None)
    return spec_from_dict(data, source=f"{spec.source} ({run.key})")


def ft_spec(spec: Spec, run: Run, base_best: Path, ft_epochs: float,
            ft_learning_rate: float) -> Spec:
    """A fine-tuning run of one target from a base run's best checkpoint."""
    from mtdnn.finetune import finetune_spec

    (target,) = run.targets
    settings = {k: getattr(spec.train, k) for k in _FT_KEEP}
    overrides = [f"train.{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"
                 for k, v in settings.items()]
    overrides += [f"train.epochs={ft_epochs}", "train.max_steps=null",
                  f"train.learning_rate={ft_learning_rate}", f"seed={run.seed}"]
    return finetune_spec(base_best, target, overrides, output_dir=str(run.directory))


def plan(targets: Sequence[str], seeds: Sequence[int], routes: Sequence[str],
         root: Path) -> list[Run]:
    """Every run, in an order where each fine-tuning run follows its base."""
    runs = []
    for seed in seeds:
        for route in ("single", "multi", "multi+ft", "single+extra"):
            if route not in routes:
                continue
            if route == "multi":
                runs.append(Run(route, seed, tuple(targets), root / "multi" / f"seed-{seed}"))
            else:
                runs += [Run(route, seed, (t,), root / route.replace("+", "-") / t / f"seed-{seed}")
                         for t in targets]
    return runs


def _record_path(root: Path, route: str, target: str, seed: int) -> Path:
    return root / "records" / route.replace("+", "-") / target / f"seed-{seed}.json"


def _dev_predictions(best: Path, spec: Spec, target: str) -> list[Any]:
    """The best checkpoint's predictions on the target's dev examples (what its metrics score)."""
    from mtdnn.checkpoint import load_model
    from mtdnn.data import read_split
    from mtdnn.evaluation import outputs_of

    model = load_model(best)
    kind, task = model.task_types[target], spec.task(target)
    examples = read_split(spec, task, "dev")
    dataset = kind.features(examples, model.tokenizer, model.max_seq_length, for_training=False,
                            task=task)
    outputs = outputs_of(model, target, dataset, spec.train.eval_batch_size)
    predictions = kind.predictions(outputs, dataset, examples)
    return predictions.tolist() if hasattr(predictions, "tolist") else list(predictions)


def compare(spec: Spec, targets: Sequence[str], helpers: Sequence[str] | None = None,
            seeds: Sequence[int] = (1, 2, 3), routes: Sequence[str] = ROUTES,
            ft_epochs: float = 1.0, ft_learning_rate: float | None = None,
            output_dir: str | Path | None = None, progress: bool = False,
            keep_checkpoints: bool = False, resamples: int = 1000) -> CompareResult:
    """Trains every route for every seed (skipping what is stored) and writes the report.

    Args:
        spec: the tasks and the settings of every run (the multi run's strategies included).
        targets: the tasks to compare on (each needs a dev split).
        helpers: tasks trained in the multi run only; default: every other task of the spec.
        seeds: one set of runs per seed.
        routes: a subset of ROUTES; differences are taken to single when it is among them (or
            stored from an earlier compare into the same output_dir).
        ft_epochs: the fine-tuning stage's epochs (multi+ft, and single+extra's extra epochs).
        ft_learning_rate: its learning rate; default half the spec's (MT-DNN fine-tunes with a
            smaller step than it trains with).
        output_dir: default `<spec output_dir>/compare`.
        keep_checkpoints: keep every run's resumable checkpoints and best/ (default: only the
            best/ of single and multi, which the fine-tuning routes start from).
        resamples: bootstrap resamples per interval.
    Returns:
        A `CompareResult`; the report is also in output_dir (report.md, report.json, report.png).
    Raises:
        UserError: unknown tasks, repeated seeds, a target without a dev split, a bad spec.
    """
    from mtdnn.compare_report import build_report, write_report

    helpers = [t.name for t in spec.tasks if t.name not in targets] if helpers is None \
        else list(helpers)
    targets = list(targets)
    _check(spec, targets, helpers, seeds, routes, ft_epochs)
    routes = [r for r in ROUTES if r in routes]
    root = Path(output_dir) if output_dir is not None else Path(spec.output_dir) / "compare"
    lr = ft_learning_rate if ft_learning_rate is not None else spec.train.learning_rate / 2
    runs = plan(targets, seeds, routes, root)
    # Every run's spec is checked before the first one trains (fine-tuning specs need their base).
    for run in runs:
        if run.route in ("single", "multi"):
            run_spec(spec, run, helpers)
    for i, run in enumerate(runs, 1):
        print(f"mtdnn compare: run {i}/{len(runs)}: {run.key}", flush=True)
        _execute(spec, run, helpers, root, ft_epochs, lr, progress)
        if not keep_checkpoints:
            _tidy(run, root, runs)
    settings = {"targets": targets, "helpers": helpers, "seeds": list(seeds), "routes": routes,
                "ft_epochs": ft_epochs, "ft_learning_rate": lr, "spec": spec.source,
                "epochs": spec.train.epochs, "max_steps": spec.train.max_steps,
                "learning_rate": spec.train.learning_rate, "sampler": spec.train.sampler}
    records = [json.loads(p.read_text(encoding="utf-8")) for p in
               sorted((root / "records").rglob("seed-*.json"))]
    records = [r for r in records if r["route"] in routes and r["target"] in targets and
               r["seed"] in seeds]
    report = build_report(spec, settings, records, resamples)
    markdown = write_report(root, report)
    return CompareResult(output_dir=root, records=records, report=report,
                         verdicts=report["verdicts"], markdown=markdown)


def _execute(spec: Spec, run: Run, helpers: Sequence[str], root: Path, ft_epochs: float,
             lr: float, progress: bool) -> None:
    from mtdnn.trainer import train

    paths = {t: _record_path(root, run.route, t, run.seed) for t in run.targets}
    if all(p.is_file() and json.loads(p.read_text())["status"] == "ok" for p in paths.values()):
        return
    started = time.perf_counter()
    try:
        if run.route in BASE:
            base = Run(BASE[run.route], run.seed, run.targets, _base_dir(root, run))
            base_record = _record_path(root, base.route, run.targets[0], run.seed)
            if not (base_record.is_file() and
                    json.loads(base_record.read_text())["status"] == "ok"):
                raise UserError(run.key, f"its base run ({base.route}, seed {run.seed}) did not "
                                         "finish")
            run_spec_ = ft_spec(spec, run, base.directory / "best", ft_epochs, lr)
        else:
            run_spec_ = run_spec(spec, run, helpers)
        result = train(run_spec_, progress=progress, resume=True)
        wall = time.perf_counter() - started
        for target, path in paths.items():
            record = {"route": run.route, "target": target, "seed": run.seed, "status": "ok",
                      "metrics": result.metrics[target]["dev"], "best_step": result.best_step,
                      "predictions": _dev_predictions(result.best_dir, run_spec_, target),
                      "examples": result.examples, "wall_s": wall, "run": run.key}
            _write(path, record)
    except Exception as e:  # one failed run is reported, not fatal
        print(f"mtdnn compare: {run.key} failed: {type(e).__name__}: {e}", flush=True)
        detail = "" if isinstance(e, UserError) else traceback.format_exc()
        for target, path in paths.items():
            _write(path, {"route": run.route, "target": target, "seed": run.seed,
                          "status": "failed", "error": f"{type(e).__name__}: {e}",
                          "traceback": detail, "run": run.key})


def _base_dir(root: Path, run: Run) -> Path:
    if BASE[run.route] == "multi":
        return root / "multi" / f"seed-{run.seed}"
    return root / "single" / run.targets[0] / f"seed-{run.seed}"


def _write(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    tmp.replace(path)


def _tidy(run: Run, root: Path, runs: list[Run]) -> None:
    """Frees disk: resumable checkpoints of a finished run, and best/ of a fine-tuning run. The
    best/ of single and multi stays: fine-tuning routes start from it, and it is a model to use
    (or a teacher to distil from)."""
    shutil.rmtree(run.directory / "checkpoints", ignore_errors=True)
    if run.route in BASE:
        shutil.rmtree(run.directory / "best", ignore_errors=True)
