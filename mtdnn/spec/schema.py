"""The spec's frozen dataclasses. Field comments are the reference documentation of the format.

The names of the multi-task methods (step modes, samplers, loss weightings, gradient surgeries,
sharing schemes) come from the table in `mtdnn.methods`, so that a method added there is a valid
choice here; nothing in this module imports torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from mtdnn.methods import names
from mtdnn.spec.convert import unknown_name_message
from mtdnn.tasks import names as task_type_names
from mtdnn.tasks import task_type

# The task types, from their registry (mtdnn/tasks/__init__.py; torch-free).
TaskType = Literal[task_type_names()]  # type: ignore[valid-type]
SPLITS = ("train", "dev", "test")
# A column name, or a 0-based position in headerless files. Union, not `str | int`: the converter
# reads this alias at run time, where `|` of two types only exists from Python 3.10.
Column = Union[str, int]  # noqa: UP007

# The choices of the train: keys that pick a method, from the methods table.
StepMode = Literal[names("step_mode")]
SamplerName = Literal[names("sampler")]
WeightingName = Literal[names("loss_weighting")]
SurgeryName = Literal[names("gradient_surgery")]
SharingName = Literal[names("sharing")]

# The values of accelerate.utils.LoggerType, written out because importing accelerate imports
# torch (tests/test_spec.py pins them to Accelerate's).
TRACKERS = ("all", "aim", "tensorboard", "wandb", "trackio", "comet_ml", "mlflow", "clearml",
            "dvclive", "swanlab")
# auto: tensorboard if installed; none: no tracker. They (and `all`) stand alone in report_to.
STANDALONE_TRACKERS = ("auto", "none", "all")
Tracker = Literal[("auto", "none", *TRACKERS)]


@dataclass(frozen=True)
class FileSource:
    """One split of a task read from a local file."""

    path: str  # relative to the spec's data_dir (or the spec file's folder), or absolute
    # auto: from the file extension (.tsv, .csv, .jsonl/.json; a task type may read its own:
    # conll for token_classification, squad for extractive_qa's nested SQuAD JSON)
    format: Literal["auto", "tsv", "csv", "jsonl", "conll", "squad"] = "auto"
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
    loss_weight: float = 1.0  # train.loss_weighting=static: this task's loss is multiplied by it
    dropout: float = 0.1  # head dropout
    # How a fresh head's dense layer starts (heads that have one: not token_classification or
    # extractive_qa): random, N(0, 0.02); pooler: the encoder checkpoint's pretrained pooler (BERT's
    # dense + tanh), where AutoModelForSequenceClassification and the original MT-DNN start.
    head_init: Literal["random", "pooler"] = "random"
    max_candidates: int = 8  # ranking, training only: candidates per listwise group
    # Training rows per batch; default train.batch_size, and for ranking
    # train.batch_size // max_candidates groups, so a batch holds about as many sequences as others
    batch_size: int | None = None
    # Keep the first N >= 1 training rows (quick runs, demos); ranking: the first N queries with
    # all their candidates. null: every row.
    max_train_examples: int | None = None
    max_eval_examples: int | None = None  # likewise for the dev and test rows
    # Length-grouped training batches for this task (less padding, same examples); null: on when
    # train.group_by_length is and the task type groups by default (Spec.group_by_length).
    group_by_length: bool | None = None
    # Hierarchical heads: the head reads the first token of this encoder layer (1 = the lowest,
    # negative counts from the top, null = the last), e.g. a low-level task on a lower layer.
    layer: int | None = None
    # train.sharing=soft: tasks naming the same group share one encoder copy; null: the task's own.
    encoder_group: str | None = None
    # token_classification: how tags mark entities for the entity metrics. null: seqeval's default
    # (conlleval) chunking, which reads IOB1 and IOB2 alike; IOB1, IOB2, IOE1, IOE2, IOBES, BILOU:
    # seqeval's strict mode with that scheme.
    tag_scheme: Literal["IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU"] | None = None
    # extractive_qa: long contexts are cut into windows of max_seq_length tokens that overlap by
    # doc_stride tokens; answers are decoded from the n_best start/end logits, at most
    # max_answer_length tokens long. allow_no_answer (SQuAD v2.0): a question may have no answer,
    # predicted when the null score beats the best span by more than null_threshold.
    doc_stride: int = 128
    max_answer_length: int = 30
    n_best: int = 20
    allow_no_answer: bool = False
    null_threshold: float = 0.0
    # multilabel_classification: a row's labels are a JSON list or a string cut at label_separator;
    # a label is predicted when its sigmoid is >= threshold, or, with tune_threshold, >= the
    # threshold that maximises that label's F1 on dev (tuned at each evaluation).
    label_separator: str = ","
    threshold: float = 0.5
    tune_threshold: bool = False
    # SMART (mtdnn/smart.py; any task type): adv_weight > 0 adds adv_weight * D_s(f(e + delta),
    # f(e)), delta found by adv_steps projected gradient steps of size adv_step_size from noise of
    # scale adv_noise, within adv_epsilon in the adv_norm ("inf" or "l2") of the input embeddings.
    # bpp_weight > 0 adds the Bregman proximal point term against a slowly updated copy of the
    # model (momentum train.bpp_beta).
    adv_weight: float = 0.0
    adv_steps: int = 1
    adv_step_size: float = 1e-3
    adv_noise: float = 1e-5
    adv_epsilon: float = 1e-6
    adv_norm: Literal["inf", "l2"] = "inf"
    bpp_weight: float = 0.0
    # distill: (a task some teacher covers) this task's own weight of the gold labels and
    # temperature; null: the distill section's.
    distill_alpha: float | None = None
    distill_temperature: float | None = None
    files: dict[str, FileSource] = field(default_factory=dict)  # split -> file
    hub: HubSource | None = None  # used when `files` is empty or the run has no data_dir

    @property
    def num_labels(self) -> int:
        return task_type(self.type).num_outputs(self.labels)


@dataclass(frozen=True)
class TrainSpec:
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-8
    adam_betas: tuple[float, float] = (0.9, 0.999)
    # AdamW's fused kernel (one call updates every tensor; the default) or torch's per-tensor
    # loop; the names of the Hugging Face Trainer's `optim`.
    optimizer: Literal["adamw_torch_fused", "adamw_torch"] = "adamw_torch_fused"
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
    sampler: SamplerName = "proportional"
    temperature: float = 2.0  # sampler=temperature: p_i ~ min(n_i, examples_cap)^(1/T)
    examples_cap: int | None = None  # sampler=temperature: n_i counts at most this many rows
    main_task: str | None = None  # sampler=main_ratio: the task whose batches all run
    main_ratio: float = 1.0  # sampler=main_ratio: auxiliary batches per main-task batch
    anneal_end: float = 0.2  # sampler=annealed: the exponent a at the last step (0: uniform)
    group_by_length: bool = True  # length-grouped batches inside each task; mixture unchanged
    # Training batches compute only what their heads read (mtdnn/encoding.py): a sentence-level
    # head's layer for the first token only, no layer above any head's. Exact; false: full forward.
    compute_cut: bool = True
    # auto: fp32 on CPU, bf16 on GPUs that have it, else fp16
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    eval_every: int | None = None  # optimizer steps between dev evaluations; None: every epoch
    log_every: int = 10
    # Accelerate trackers (tensorboard, wandb, ...); auto: tensorboard if installed; none: no
    # tracker; all: every one installed. auto, none and all stand alone.
    report_to: tuple[Tracker, ...] = ("auto",)
    # Optimizer steps between resumable checkpoints (the Hugging Face Trainer's default); null:
    # only on the time cadence of save_every_minutes.
    save_every: int | None = 500
    # Also save a resumable checkpoint once this many minutes have passed since the last one, so
    # that a killed run loses at most that much work; null: on the step cadence only.
    save_every_minutes: float | None = 10.0
    save_total_limit: int = 2  # resumable checkpoints kept (the newest); `best/` is kept apart
    # Multi-task strategies (README "Multi-task strategies"; the methods: mtdnn/methods.py).
    # alternating: one task per micro-batch, picked by the sampler (MT-DNN); joint: each
    # micro-step runs one batch of EVERY task, and an epoch is as many joint steps as process the
    # batches of an alternating epoch (total / K).
    step_mode: StepMode = "alternating"
    loss_weighting: WeightingName = "static"  # see mtdnn/weighting.py; gradnorm: joint only
    # uncertainty, gradnorm: the learning rate of the learned weights; null: learning_rate
    weighting_lr: float | None = None
    dwa_temperature: float = 2.0  # dwa: w ~ exp(r / T); larger T, more uniform weights
    dwa_period: int | None = None  # dwa: optimizer steps per loss-averaging period; null: an epoch
    gradnorm_alpha: float = 1.5  # gradnorm: how strongly slower tasks are pushed (0: equal norms)
    gradient_surgery: SurgeryName = "none"  # see mtdnn/gradsurgery.py; joint, hard sharing only
    cagrad_c: float = 0.5  # cagrad: radius around the mean gradient, 0 <= c < 1 (0: plain sum)
    # hard: one encoder for every task (MT-DNN). soft: one encoder copy per task (or per
    # tasks.<name>.encoder_group), pulled together by soft_sharing_weight * sum_g ||theta_g -
    # mean||^2 over the copies' parameters; memory grows with the number of copies.
    sharing: SharingName = "hard"
    # SMART's Bregman proximal point (tasks.<name>.bpp_weight > 0): the slow copy's momentum,
    # theta_slow <- bpp_beta * theta_slow + (1 - bpp_beta) * theta after every step.
    bpp_beta: float = 0.99
    soft_sharing_weight: float = 1e-3  # sharing=soft: the weight of the L2 pull (0: independent)


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher of knowledge distillation (mtdnn/distill.py)."""

    path: str  # an mtdnn checkpoint, or a plain transformers model exported for one task
    task: str | None = None  # a plain model: the task it scores; null: an mtdnn checkpoint, which
    # teaches every task of the spec it holds (same name, type and labels)


@dataclass(frozen=True)
class DistillSpec:
    """Multi-task knowledge distillation (MT-DNN-KD): every task some teacher covers is trained on
    alpha * its gold loss + (1 - alpha) * its loss against the teachers' averaged soft targets
    (classification: T^2 * KL at temperature T; regression: MSE to the mean teacher score;
    ranking: T^2 * KL of the listwise softmaxes over a query's candidates)."""

    teachers: tuple[TeacherSpec, ...]
    alpha: float = 0.5  # the weight of the gold labels (1: no distillation)
    temperature: float = 1.0


@dataclass(frozen=True)
class StageSpec:
    """One stage of continual multi-task training (ERNIE 2.0): adds tasks, trains all so far."""

    tasks: tuple[str, ...]  # the tasks this stage adds
    epochs: float | None = None  # null: train.epochs (a stage's epochs win over train.max_steps)
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
    # k-1's best checkpoint; every task is added by exactly one stage; dev metrics of every task
    # so far are reported after each stage (forgetting). Not with train.sharing=soft.
    stages: tuple[StageSpec, ...] = ()
    # Knowledge distillation from teacher checkpoints (mtdnn/distill.py); null: none.
    distill: DistillSpec | None = None
    # where the spec came from, for messages (not a YAML key, so not part of equality)
    source: str = field(default="<spec>", compare=False)

    def batch_size(self, task: TaskSpec) -> int:
        """Training rows per batch of one task (see TaskSpec.batch_size)."""
        if task.batch_size is not None:
            return task.batch_size
        return task_type(task.type).batch_size(task, self.train.batch_size)

    def group_by_length(self, task: TaskSpec) -> bool:
        """Whether the task's training batches are grouped by length: the task's own setting, else
        train.group_by_length where the task type groups by default (TaskType.groups_by_length)."""
        if task.group_by_length is not None:
            return task.group_by_length
        return self.train.group_by_length and task_type(task.type).groups_by_length

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
