"""The task spec: YAML in, frozen typed dataclasses out.

A spec file describes one run: the shared encoder, the training settings and the tasks. It is turned
into dataclasses once, here; nothing past this module handles untyped dicts. Every problem found
(unknown keys, wrong types, bad choices, missing files) is collected and reported together in one
`SpecError` that names the file, the key, the value and the fix.

Example:
    >>> spec = load_spec("task_specs/demo.yaml", overrides=["train.learning_rate=3e-5"])
    >>> [t.name for t in spec.tasks]
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

TaskType = Literal["classification", "regression", "ranking"]
SPLITS = ("train", "dev", "test")
# A column name, or a 0-based position in headerless files. Union, not `str | int`: the converter
# reads this alias at run time, where `|` of two types only exists from Python 3.10.
Column = Union[str, int]  # noqa: UP007
# The names of mtdnn.weighting.WEIGHTINGS and mtdnn.gradsurgery.SURGERIES, kept here so that reading
# a spec does not import torch (tests/test_weighting.py pins them to the registries).
WeightingName = Literal["static", "uncertainty", "dwa", "gradnorm"]
JOINT_ONLY_WEIGHTINGS = ("gradnorm",)  # they compare the tasks within a step
SurgeryName = Literal["none", "pcgrad", "cagrad"]
MAX_CAGRAD_TASKS = 12  # cagrad's exact dual solver visits all 2^K - 1 task subsets


class SpecError(ValueError):
    """A spec (or its data) is wrong; `problems` lists every problem found, one line each."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")


# --------------------------------------------------------------------------------------------------
# The dataclasses. Field comments are the reference documentation of the spec format.


@dataclass(frozen=True)
class FileSource:
    """One split of a task read from a local file."""

    path: str  # relative to the spec's data_dir (or the spec file's folder), or absolute
    format: Literal["auto", "tsv", "csv", "jsonl"] = "auto"  # auto: from the file extension
    header: bool = True  # False: columns are addressed by 0-based position
    text: tuple[Column, ...] | None = None  # overrides the task's text columns for this file
    label: Column | None = None  # overrides the task's label column for this file
    id: Column | None = None  # overrides the task's id column for this file


@dataclass(frozen=True)
class HubSource:
    """A task read from a Hugging Face Hub dataset (or a local dataset script/folder)."""

    path: str  # e.g. nyu-mll/glue
    name: str | None = None  # the dataset config, e.g. rte
    revision: str | None = None
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "dev": "validation"})
    text: tuple[Column, ...] | None = None  # overrides the task's text columns for this dataset
    label: Column | None = None
    id: Column | None = None


@dataclass(frozen=True)
class TaskSpec:
    name: str
    type: TaskType
    text: tuple[Column, ...]  # one column: single sentence; two: a pair (ranking: query, candidate)
    label: Column | None = "label"
    id: Column | None = None  # a row id kept in predictions (e.g. GLUE's `index`)
    labels: tuple[str, ...] = ()  # classification: the label set; its order defines the ids
    positive_label: str = "1"  # ranking: the label value of a relevant candidate
    metrics: tuple[str, ...] = ()  # empty: the defaults of the task type; the first picks the best
    loss_weight: float = 1.0
    dropout: float = 0.1  # head dropout
    max_candidates: int = 8  # ranking, training only: candidates per listwise group
    # Training rows per batch; default train.batch_size, and for ranking
    # train.batch_size // max_candidates groups, so a batch holds about as many sequences as others
    batch_size: int | None = None
    max_train_examples: int | None = None  # keep the first N training rows (quick runs, demos)
    max_eval_examples: int | None = None  # keep the first N dev/test rows
    # Hierarchical heads: the head reads the first token of this encoder layer (1 = the lowest,
    # negative counts from the top, null = the last), e.g. a low-level task on a lower layer.
    layer: int | None = None
    # train.sharing=soft: tasks naming the same group share one encoder copy; null: the task's own.
    encoder_group: str | None = None
    files: dict[str, FileSource] = field(default_factory=dict)  # split -> file
    hub: HubSource | None = None  # used when `files` is empty or the run has no data_dir

    @property
    def num_labels(self) -> int:
        return len(self.labels) if self.type == "classification" else 1


@dataclass(frozen=True)
class TrainSpec:
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-8
    adam_betas: tuple[float, float] = (0.9, 0.999)
    scheduler: Literal["linear", "cosine", "constant"] = "linear"  # after warmup
    warmup_ratio: float = 0.1
    batch_size: int = 32  # per process, per micro-step
    eval_batch_size: int = 128
    epochs: float = 3.0
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0
    # README "Sampling tasks". main_ratio: every batch of main_task plus main_ratio times as many
    # auxiliary batches (MT-DNN's --ratio); annealed: p_i ~ n_i^a, a from 1 (proportional) at the
    # first step down to anneal_end at the last (Stickland and Murray 2019).
    sampler: Literal["proportional", "uniform", "temperature", "main_ratio", "annealed"] = \
        "proportional"
    temperature: float = 2.0  # sampler=temperature: p_i ~ min(n_i, examples_cap)^(1/T)
    examples_cap: int | None = None
    main_task: str | None = None  # sampler=main_ratio: the task whose batches all run
    main_ratio: float = 1.0  # sampler=main_ratio: auxiliary batches per main-task batch
    anneal_end: float = 0.2  # sampler=annealed: the exponent a at the last step (0: uniform)
    group_by_length: bool = True  # length-grouped batches inside each task; mixture unchanged
    # auto: fp32 on CPU, bf16 on GPUs that have it, else fp16
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    eval_every: int | None = None  # optimizer steps between dev evaluations; None: every epoch
    log_every: int = 10
    report_to: tuple[str, ...] = ("auto",)  # Accelerate trackers; auto: tensorboard if installed
    save_every: int | None = None  # optimizer steps between resumable checkpoints; None: at evals
    save_total_limit: int = 2  # resumable checkpoints kept (the newest); `best/` is kept apart
    # Multi-task strategies (README "Multi-task strategies"). alternating: one task per micro-batch,
    # picked by the sampler (MT-DNN); joint: each micro-step runs one batch of EVERY task, and an
    # epoch is as many joint steps as process the batches of an alternating epoch (total / K).
    step_mode: Literal["alternating", "joint"] = "alternating"
    loss_weighting: WeightingName = "static"  # see mtdnn/weighting.py; gradnorm: joint only
    weighting_lr: float | None = None  # lr of learned loss weights; null: learning_rate
    dwa_temperature: float = 2.0  # dwa: w ~ exp(r / T); larger T, more uniform weights
    dwa_period: int | None = None  # dwa: optimizer steps per loss-averaging period; null: an epoch
    gradnorm_alpha: float = 1.5  # gradnorm: how strongly slower tasks are pushed (0: equal norms)
    gradient_surgery: SurgeryName = "none"  # see mtdnn/gradsurgery.py; joint only
    cagrad_c: float = 0.5  # cagrad: radius around the mean gradient, 0 <= c < 1 (0: plain sum)
    # hard: one encoder for every task (MT-DNN). soft: one encoder copy per task (or per
    # tasks.<name>.encoder_group), pulled together by soft_sharing_weight * sum_g ||theta_g -
    # mean||^2 over the copies' parameters; memory grows with the number of copies.
    sharing: Literal["hard", "soft"] = "hard"
    soft_sharing_weight: float = 1e-3


@dataclass(frozen=True)
class StageSpec:
    """One stage of continual multi-task training (ERNIE 2.0): adds tasks, trains all so far."""

    tasks: tuple[str, ...]  # the tasks this stage adds
    epochs: float | None = None  # null: train.epochs
    max_steps: int | None = None  # null: train.max_steps
    learning_rate: float | None = None  # null: train.learning_rate


@dataclass(frozen=True)
class Spec:
    encoder: str  # a Hub model id or a local directory
    tasks: tuple[TaskSpec, ...]
    tokenizer: str | None = None  # default: the encoder's
    revision: str | None = None
    trust_remote_code: bool = False
    max_seq_length: int = 128
    task_embedding: bool = False  # a learned per-task vector added to the input embeddings (ERNIE)
    output_dir: str = "runs/mtdnn"
    data_dir: str | None = None  # local data root; tasks with `files` read from here
    seed: int = 42
    # Start from an mtdnn checkpoint: its encoder, and the heads of the tasks it holds (further
    # fine-tuning, staged training). fresh_heads: tasks whose head starts anew even so.
    init_checkpoint: str | None = None
    fresh_heads: tuple[str, ...] = ()
    train: TrainSpec = field(default_factory=TrainSpec)
    # Continual multi-task training: stage k trains the tasks of stages 1..k, starting from stage
    # k-1's model; dev metrics of every task so far are reported after each stage (forgetting).
    stages: tuple[StageSpec, ...] = ()
    # where the spec came from, for messages (not a YAML key, so not part of equality)
    source: str = field(default="<spec>", compare=False)

    def batch_size(self, task: TaskSpec) -> int:
        """Training rows per batch of one task (see TaskSpec.batch_size)."""
        if task.batch_size is not None:
            return task.batch_size
        if task.type == "ranking":
            return max(1, self.train.batch_size // task.max_candidates)
        return self.train.batch_size

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(unknown_name_message("task", name, [t.name for t in self.tasks]))

    def uses_files(self, task: TaskSpec) -> bool:
        """Local files are read when the task has them and either the run names a data_dir or the
        task has no Hub source; otherwise the Hub dataset is read."""
        return bool(task.files) and (self.data_dir is not None or task.hub is None)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain YAML-able data (the inverse of `spec_from_dict`)."""
        data = _to_plain(self)
        data.pop("source")
        data["tasks"] = {t.pop("name"): t for t in data["tasks"]}
        if self.data_dir:  # files under data_dir stay relative: a new data_dir re-roots them
            root = Path(self.data_dir)
            for task in data["tasks"].values():
                for f in task["files"].values():
                    if Path(f["path"]).is_relative_to(root):
                        f["path"] = str(Path(f["path"]).relative_to(root))
        return data


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def unknown_name_message(kind: str, name: str, known: typing.Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'{hint} (known: {', '.join(known) or 'none'})"


# --------------------------------------------------------------------------------------------------
# Converting plain data into the dataclasses, collecting every problem.

_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")


def _expand_env(value: Any) -> Any:
    """`${VAR}` and `${VAR:-default}` in strings; a value that expands to "" becomes None."""
    if isinstance(value, str) and "${" in value:
        # As in a shell, `:-` falls back to the default when VAR is unset *or* empty.
        expanded = _ENV.sub(lambda m: os.environ.get(m.group(1)) or m.group(3) or "", value)
        return expanded or None
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (tuple, list):
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, str(tp)
    )


class _Converter:
    def __init__(self, source: str):
        self.source = source
        self.problems: list[str] = []

    def fail(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}" if key else message)

    def convert(self, value: Any, tp: Any, key: str) -> Any:
        """Returns the converted value, or `_BAD` after recording a problem."""
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            args = get_args(tp)
            if value is None and type(None) in args:
                return None
            for arg in args:
                if arg is type(None):
                    continue
                sub = _Converter(self.source)
                out = sub.convert(value, arg, key)
                if not sub.problems:
                    return out
            non_null = [a for a in args if a is not type(None)]
            if len(non_null) == 1:  # Optional[X]: report X's own, more precise problem
                return self.convert(value, non_null[0], key)
            self.fail(key, f"expected {_type_name(tp)}, got {value!r}")
            return _BAD
        if origin is Literal:
            choices = get_args(tp)
            if value in choices:
                return value
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            self.fail(key, f"{value!r} is not valid{hint} (choose one of: "
                      f"{', '.join(map(str, choices))})")
            return _BAD
        if origin in (tuple, list):
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                value = [value]  # a lone value where a list is expected: `text: sentence`
            if not isinstance(value, list):
                self.fail(key, f"expected a list, got {value!r}")
                return _BAD
            args = get_args(tp)
            if origin is tuple and len(args) == 2 and args[1] is not Ellipsis:  # fixed length
                if len(value) != len(args):
                    self.fail(key, f"expected a list of {len(args)} values, got {value!r}")
                    return _BAD
                item_types = args
            else:
                item_types = [args[0]] * len(value)
            items = [self.convert(v, t, f"{key}[{i}]") for i, (v, t) in
                     enumerate(zip(value, item_types))]
            return _BAD if any(x is _BAD for x in items) else tuple(items)
        if origin is dict:
            if not isinstance(value, dict):
                self.fail(key, f"expected a mapping, got {value!r}")
                return _BAD
            _, vt = get_args(tp)
            return {str(k): self.convert(v, vt, f"{key}.{k}") for k, v in value.items()}
        if dataclasses.is_dataclass(tp):
            return self.dataclass(tp, value, key)
        if tp is bool:
            if isinstance(value, bool):
                return value
        elif tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            # YAML 1.1 (PyYAML) reads `3e-5` (no dot) as a string; it is meant as a number.
            if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
                return float(value)
        elif tp is str:
            if isinstance(value, str):
                return value
        elif tp is Any:
            return value
        hint = " (YAML reads yes/no/on/off as true/false: quote it, e.g. 'yes')" \
            if tp is str and isinstance(value, bool) else ""
        self.fail(key, f"expected {_type_name(tp)}, got {value!r}{hint}")
        return _BAD

    def dataclass(self, cls: type, value: Any, key: str, extra: dict | None = None) -> Any:
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {value!r}")
            return _BAD
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
        kwargs = dict(extra or {})
        prefix = f"{key}." if key else ""
        for k, v in value.items():
            if k in kwargs:  # given by the structure, e.g. a task's name is its key in `tasks`
                self.fail(f"{prefix}{k}", f"'{k}' is set by the spec's structure, not as a key")
                continue
            if k not in fields:
                self.fail(f"{prefix}{k}", unknown_name_message("key", k, fields))
                continue
            kwargs[k] = self.convert(v, hints[k], f"{prefix}{k}")
        for name, f in fields.items():
            if name not in kwargs and f.default is dataclasses.MISSING and \
                    f.default_factory is dataclasses.MISSING:
                self.fail(f"{prefix}{name}", "required key is missing")
        if any(v is _BAD for v in kwargs.values()) or any(
            name not in kwargs and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING for name, f in fields.items()
        ):
            return _BAD
        return cls(**kwargs)


_BAD = object()


def _check_task(task: TaskSpec, c: _Converter) -> None:
    from mtdnn.metrics import DEFAULT_METRICS, check_metric_names

    key = f"tasks.{task.name}"
    if not 1 <= len(task.text) <= 2:
        c.fail(f"{key}.text", f"expected 1 or 2 text columns, got {len(task.text)}")
    if task.type == "ranking" and len(task.text) != 2:
        c.fail(f"{key}.text", "a ranking task needs two columns: [query, candidate]")
    if task.type == "classification":
        if len(task.labels) < 2:
            c.fail(f"{key}.labels", "a classification task needs a list of at least 2 labels, "
                   "e.g. labels: [entailment, not_entailment]")
        if len(set(task.labels)) != len(task.labels):
            c.fail(f"{key}.labels", f"labels must be unique, got {list(task.labels)}")
    elif task.labels:
        c.fail(f"{key}.labels", f"only classification tasks take a label list ({task.type} "
               "tasks read numbers or relevance)")
    for p in check_metric_names(task.metrics or DEFAULT_METRICS[task.type]):
        c.fail(f"{key}.metrics", p)
    if task.loss_weight < 0:
        c.fail(f"{key}.loss_weight", f"must be >= 0, got {task.loss_weight}")
    if not 0 <= task.dropout < 1:
        c.fail(f"{key}.dropout", f"must be in [0, 1), got {task.dropout}")
    if task.batch_size is not None and task.batch_size < 1:
        c.fail(f"{key}.batch_size", f"must be >= 1 or null, got {task.batch_size}")
    if task.max_candidates < 2:
        c.fail(f"{key}.max_candidates", f"must be >= 2, got {task.max_candidates}")
    for split in task.files:
        if split not in SPLITS:
            c.fail(f"{key}.files.{split}", unknown_name_message("split", split, SPLITS))
    if task.hub is not None:
        for split in task.hub.splits:
            if split not in SPLITS:
                c.fail(f"{key}.hub.splits.{split}", unknown_name_message("split", split, SPLITS))
    if not task.files and task.hub is None:
        c.fail(key, "no data: give `files` (local tsv/csv/jsonl per split) or `hub` "
               "(a Hugging Face dataset)")
    elif "train" not in task.files and (task.hub is None or "train" not in task.hub.splits):
        c.fail(key, "no train split: add files.train or hub.splits.train")


def _check_run(spec: Spec, c: _Converter) -> None:
    t = spec.train
    positive = {"batch_size": t.batch_size, "eval_batch_size": t.eval_batch_size,
                "gradient_accumulation_steps": t.gradient_accumulation_steps,
                "log_every": t.log_every, "temperature": t.temperature}
    for name, value in positive.items():
        if value <= 0:
            c.fail(f"train.{name}", f"must be > 0, got {value}")
    if t.save_total_limit < 1:
        c.fail("train.save_total_limit", f"must be >= 1, got {t.save_total_limit}")
    for name in ("max_steps", "eval_every", "examples_cap", "save_every"):
        value = getattr(t, name)
        if value is not None and value <= 0:
            c.fail(f"train.{name}", f"must be > 0 or null, got {value}")
    if t.epochs <= 0 and t.max_steps is None:
        c.fail("train.epochs", f"must be > 0 (or set train.max_steps), got {t.epochs}")
    if not 0 <= t.warmup_ratio < 1:
        c.fail("train.warmup_ratio", f"must be in [0, 1), got {t.warmup_ratio}")
    if spec.max_seq_length < 8:
        c.fail("max_seq_length", f"must be >= 8, got {spec.max_seq_length}")
    for task in spec.tasks:
        if task.layer == 0:
            c.fail(f"tasks.{task.name}.layer", "0 is the embedding output, not an encoder layer: "
                   "give 1 (the lowest layer) up to the number of layers, a negative number to "
                   "count from the top (-1: the last), or null")
    _check_strategy(spec, c)
    _check_files(spec, c)


def _check_strategy(spec: Spec, c: _Converter) -> None:
    """Which combinations of step mode, loss weighting and gradient surgery are valid: alternating
    steps take static, uncertainty or dwa weighting and no surgery; joint steps take any weighting
    with any surgery."""
    t = spec.train
    if t.step_mode == "alternating" and t.loss_weighting in JOINT_ONLY_WEIGHTINGS:
        c.fail("train.loss_weighting", f"'{t.loss_weighting}' needs train.step_mode=joint (it "
               "compares the tasks within each step; an alternating step holds one task): set "
               "step_mode: joint, or use static, uncertainty or dwa")
    if t.loss_weighting != "static":
        for task in spec.tasks:
            if task.loss_weight != 1.0:
                c.fail(f"tasks.{task.name}.loss_weight", f"{task.loss_weight} is used by "
                       f"train.loss_weighting=static only ('{t.loss_weighting}' sets the weights "
                       "itself): remove it, or set loss_weighting: static")
    if t.step_mode == "alternating" and t.gradient_surgery != "none":
        c.fail("train.gradient_surgery", f"'{t.gradient_surgery}' needs train.step_mode=joint (it "
               "combines the gradients of every task of a step; an alternating step holds one "
               "task): set step_mode: joint, or gradient_surgery: none")
    if t.gradient_surgery == "cagrad" and len(spec.tasks) > MAX_CAGRAD_TASKS:
        c.fail("train.gradient_surgery", f"cagrad solves its dual exactly over 2^K task subsets, "
               f"for at most {MAX_CAGRAD_TASKS} tasks (this spec has {len(spec.tasks)}): use "
               "pcgrad")
    if t.weighting_lr is not None and not t.weighting_lr > 0:
        c.fail("train.weighting_lr", f"must be > 0 or null, got {t.weighting_lr}")
    if not t.dwa_temperature > 0:
        c.fail("train.dwa_temperature", f"must be > 0, got {t.dwa_temperature}")
    if t.dwa_period is not None and t.dwa_period < 1:
        c.fail("train.dwa_period", f"must be >= 1 or null, got {t.dwa_period}")
    if t.gradnorm_alpha < 0:
        c.fail("train.gradnorm_alpha", f"must be >= 0, got {t.gradnorm_alpha}")
    if not 0 <= t.cagrad_c < 1:
        c.fail("train.cagrad_c", f"must be in [0, 1), got {t.cagrad_c}")
    _check_sampling(spec, c)
    _check_sharing(spec, c)
    _check_stages(spec, c)


def _check_sampling(spec: Spec, c: _Converter) -> None:
    t = spec.train
    names = [task.name for task in spec.tasks]
    if t.sampler == "main_ratio":
        if t.main_task is None:
            c.fail("train.main_task", "sampler=main_ratio needs the main task: set "
                   f"train.main_task to one of {', '.join(names)}")
        elif t.main_task not in names:
            c.fail("train.main_task", unknown_name_message("task", t.main_task, names))
        if t.main_ratio < 0:
            c.fail("train.main_ratio", f"must be >= 0 (auxiliary batches per main-task batch), "
                   f"got {t.main_ratio}")
    elif t.main_task is not None:
        c.fail("train.main_task", f"is used by sampler=main_ratio only (the sampler is "
               f"'{t.sampler}'): remove it, or set train.sampler: main_ratio")
    if not 0 <= t.anneal_end <= 1:
        c.fail("train.anneal_end", f"must be in [0, 1] (1: proportional throughout, 0: uniform "
               f"at the end), got {t.anneal_end}")
    if t.step_mode == "joint" and t.sampler != "proportional":
        c.fail("train.sampler", f"'{t.sampler}' picks one task per step; joint steps run every "
               "task each step: leave sampler at proportional, or use step_mode: alternating")


def _check_sharing(spec: Spec, c: _Converter) -> None:
    t = spec.train
    if t.sharing == "hard":
        for task in spec.tasks:
            if task.encoder_group is not None:
                c.fail(f"tasks.{task.name}.encoder_group", "is used by train.sharing=soft only: "
                       "remove it, or set train.sharing: soft")
        return
    if spec.stages:
        c.fail("train.sharing", "soft sharing does not compose with stages (a stage's new task "
               "would start an encoder copy of its own from scratch while the earlier ones carry "
               "over): use sharing: hard with stages")
    groups = {task.encoder_group or task.name for task in spec.tasks}
    if len(groups) < 2:
        c.fail("train.sharing", f"soft sharing needs at least two encoder groups, got "
               f"{sorted(groups)}: give tasks different encoder_group values (or none)")
    if t.soft_sharing_weight < 0:
        c.fail("train.soft_sharing_weight", f"must be >= 0, got {t.soft_sharing_weight}")
    if t.gradient_surgery != "none":
        c.fail("train.gradient_surgery", f"'{t.gradient_surgery}' works on the parameters every "
               "task shares; with sharing=soft no parameter is shared: use one of them")
    if t.loss_weighting == "gradnorm":
        c.fail("train.loss_weighting", "gradnorm compares gradients at the last shared layer; "
               "with sharing=soft there is none: use uncertainty or dwa")


def _check_stages(spec: Spec, c: _Converter) -> None:
    if not spec.stages:
        return
    names = [task.name for task in spec.tasks]
    seen: dict[str, int] = {}
    for i, stage in enumerate(spec.stages, 1):
        key = f"stages[{i - 1}]"
        if not stage.tasks:
            c.fail(f"{key}.tasks", "a stage adds at least one task")
        for name in stage.tasks:
            if name not in names:
                c.fail(f"{key}.tasks", unknown_name_message("task", name, names))
            elif name in seen:
                c.fail(f"{key}.tasks", f"task '{name}' is already added by stage {seen[name]} "
                       "(later stages keep training it)")
            else:
                seen[name] = i
        if stage.epochs is not None and stage.epochs <= 0:
            c.fail(f"{key}.epochs", f"must be > 0 or null, got {stage.epochs}")
        if stage.max_steps is not None and stage.max_steps <= 0:
            c.fail(f"{key}.max_steps", f"must be > 0 or null, got {stage.max_steps}")
        if stage.learning_rate is not None and stage.learning_rate <= 0:
            c.fail(f"{key}.learning_rate", f"must be > 0 or null, got {stage.learning_rate}")
    missing = [n for n in names if n not in seen]
    if missing:
        c.fail("stages", f"tasks {missing} are in no stage: add them to a stage, or leave them "
               "out with use_tasks")


def _check_files(spec: Spec, c: _Converter) -> None:
    if spec.data_dir is not None and not Path(spec.data_dir).is_dir():
        c.fail("data_dir", f"directory not found: {spec.data_dir} (set it to the folder that holds "
               "the task files, or leave it empty to read from the Hub)")
        return
    for task in spec.tasks:
        if not spec.uses_files(task):
            continue
        for split, f in task.files.items():
            if not Path(f.path).is_file():
                c.fail(f"tasks.{task.name}.files.{split}", f"file not found: {f.path} (fix the "
                       "path, or set data_dir to the folder it is relative to)")


def _resolve_paths(spec: Spec, base_dir: Path) -> Spec:
    """Makes data paths absolute: data_dir against the working directory (as a shell would), task
    files against data_dir, or against the spec file's folder when the run has no data_dir."""
    data_dir = str(Path(spec.data_dir).absolute()) if spec.data_dir else None
    spec = dataclasses.replace(spec, data_dir=data_dir)
    tasks = []
    for task in spec.tasks:
        if spec.uses_files(task):
            root = Path(data_dir) if data_dir else base_dir.absolute()
            files = {s: dataclasses.replace(f, path=str(root / f.path)) for s, f in
                     task.files.items()}
            task = dataclasses.replace(task, files=files)
        tasks.append(task)
    return dataclasses.replace(spec, tasks=tuple(tasks))


def set_override(data: dict, assignment: str) -> None:
    """Applies `a.b.c=value` (value parsed as YAML) to nested dicts, creating levels as needed."""
    if "=" not in assignment:
        raise SpecError("command line", [f"override {assignment!r} is not key=value, e.g. "
                                         "train.learning_rate=3e-5"])
    key, raw = assignment.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            if part in node and node[part] is not None:
                raise SpecError("command line", [f"override {assignment!r}: '{part}' is not a "
                                                 "mapping"])
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def spec_from_dict(data: Any, source: str = "<spec>", base_dir: str | Path = ".") -> Spec:
    """Builds a `Spec` from plain data (parsed YAML); raises `SpecError` listing every problem."""
    c = _Converter(source)
    if not isinstance(data, dict):
        raise SpecError(source, [f"expected a mapping at the top level, got {type(data).__name__}"])
    data = _expand_env(dict(data))
    raw_tasks = data.pop("tasks", None)
    tasks: list[TaskSpec] = []
    if not isinstance(raw_tasks, dict):
        c.fail("tasks", "expected a mapping of task name -> task settings, e.g. "
               "tasks: {rte: {type: classification, ...}}")
    elif not raw_tasks:  # checked here: tasks that fail to convert are reported, not "no tasks"
        c.fail("tasks", "no tasks: add at least one under `tasks:`")
    else:
        for name, raw in raw_tasks.items():
            if not re.fullmatch(r"[A-Za-z0-9_\-]+", str(name)):
                c.fail(f"tasks.{name}", "task names use letters, digits, '_' and '-' only")
                continue
            if isinstance(raw, dict) and isinstance(raw.get("files"), dict):
                raw = dict(raw, files={s: {"path": f} if isinstance(f, str) else f
                                       for s, f in raw["files"].items()})
            task = c.dataclass(TaskSpec, raw, f"tasks.{name}", extra={"name": str(name)})
            if task is not _BAD:
                _check_task(task, c)
                tasks.append(task)
    spec = c.dataclass(Spec, data, "", extra={"tasks": tuple(tasks)})
    if spec is not _BAD:
        spec = _resolve_paths(dataclasses.replace(spec, source=source), Path(base_dir))
        _check_run(spec, c)
    elif tasks and isinstance(data.get("data_dir"), (str, type(None))):
        # Other keys are wrong, but the task files can be checked all the same: a typo elsewhere
        # must not hide a missing file until the next run.
        stand_in = Spec(encoder="", tasks=tuple(tasks), data_dir=data.get("data_dir"))
        _check_files(_resolve_paths(stand_in, Path(base_dir)), c)
    if c.problems:
        raise SpecError(source, c.problems)
    return spec


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _DuplicateKey(yaml.YAMLError):
    """A key given twice in one mapping: reported as a spec problem, not as invalid YAML."""


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, except that a key given twice in one mapping is an error: PyYAML
    keeps the last value without a word, so a second `train:` block would silently replace the
    first one whole. Keys merged in with `<<:` may still be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node,
                                                                           yaml.ScalarNode):
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise _DuplicateKey(f"'{key}' appears twice in one mapping (lines {lines[key]} "
                                    f"and {line}): merge the two into one")
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path, seen: tuple[Path, ...]) -> dict:
    """Reads a spec file; `include: [other.yaml, ...]` (relative to this file) are read first and
    this file's keys are merged over them, mapping by mapping."""
    if not path.is_file():
        where = f" (included from {seen[-1]})" if seen else ""
        raise SpecError(str(path), [f"spec file not found{where} (give the path of a YAML task "
                                    "spec, e.g. task_specs/demo.yaml)"])
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise SpecError(str(path), [f"include loop: {chain}"])
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506
    except _DuplicateKey as e:
        raise SpecError(str(path), [str(e)]) from None
    except yaml.YAMLError as e:
        raise SpecError(str(path), [f"not valid YAML: {e}"]) from None
    if not isinstance(data, dict):
        raise SpecError(str(path), ["expected a mapping at the top level"])
    includes = data.pop("include", None) or []
    merged: dict = {}
    for name in [includes] if isinstance(includes, str) else includes:
        merged = _merge(merged, _read_yaml(path.parent / str(name), (*seen, path.resolve())))
    return _merge(merged, data)


def load_spec(path: str | Path, overrides: typing.Sequence[str] = (),
              tasks: typing.Sequence[str] | None = None) -> Spec:
    """Reads a YAML spec file, applies `key=value` overrides, and checks it.

    Args:
        path: the YAML file.
        overrides: e.g. ["train.learning_rate=3e-5", "tasks.rte.loss_weight=2"].
        tasks: keep only these tasks (in this order); None keeps those named by the spec's
            `use_tasks` list, or all.

    Returns:
        The frozen `Spec`.

    Raises:
        SpecError: listing every problem (file, key, value, fix).
    """
    path = Path(path)
    data = _read_yaml(path, ())
    for assignment in overrides:
        set_override(data, assignment)
    use = data.pop("use_tasks", None)
    if tasks is None and use is not None:
        if not isinstance(use, list):
            raise SpecError(str(path), [f"use_tasks: expected a list of task names, got {use!r}"])
        tasks = [str(t) for t in use]
    if tasks is not None and isinstance(data.get("tasks"), dict):
        missing = [t for t in tasks if t not in data["tasks"]]
        if missing:
            raise SpecError(str(path), [unknown_name_message("task", t, data["tasks"])
                                        for t in missing])
        left_out = [t for t in data["tasks"] if t not in tasks]
        data["tasks"] = {t: data["tasks"][t] for t in tasks}
        staged = [(i, t) for i, stage in enumerate(data.get("stages") or [])
                  if isinstance(stage, dict) for t in stage.get("tasks") or [] if t in left_out]
        if staged:
            raise SpecError(str(path), [
                f"stages[{i}].tasks: task '{t}' is left out by use_tasks/--tasks ({tasks}): "
                "select it too, or remove it from the stage" for i, t in staged])
    return spec_from_dict(data, source=str(path), base_dir=path.parent)


def save_spec(spec: Spec, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False), encoding="utf-8")
