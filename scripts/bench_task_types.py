"""The four new task types measured: mtdnn against the HF Trainer, CoNLL's hierarchical heads,
and training throughput per real token.

    MTDNN_MORE_DIR=../shared/data/more python scripts/bench_task_types.py --quick
    MTDNN_MORE_DIR=../shared/data/more python scripts/bench_task_types.py --only ner,speed --dry-run

Three parts, each made of units (`--only` picks units, or a part by name):

  quality  ner, pos, squad, csqa, goemotions: mtdnn single-task training against
           transformers.Trainer with the type's own AutoModelFor* class (run_ner / run_qa /
           run_swag / run_classification's setup), per seed. Both arms train on the SAME
           tokenized features (the task type's `features(...)` of mtdnn's readers; the HF arm
           gets those rows, their columns renamed to what the HF model and collator expect),
           with the same optimizer, schedule, batch and step count, and both are scored by the
           SAME code: mtdnn.evaluation.outputs_of runs each final model over the same dev
           features (the HF model behind the type's `exported_logits`, the bridge from the
           plain transformers class to the type's logits), then `kind.predictions` and
           `kind.score`. No checkpoint is selected in either arm: the final model is scored.
  conll    chunk alone, and the three CoNLL-2003 tasks trained together with hierarchical heads
           (task_specs/conll2003.yaml: POS on layer 2, chunks on 4, NER on the last), mtdnn only;
           NER and POS alone are the quality part's mtdnn runs. Proportional sampler: each task's
           sentences once per epoch, the same budget per task as alone. `conll-flat` (opt-in):
           the three together, every head on the last layer (multi-task without the hierarchy).
  speed    tput-ner, tput-squad: training throughput, one epoch over a subset, mtdnn against the
           Trainer with dynamic padding and group_by_length, same features and batch size,
           timed from the end of the first optimizer step to the end of the last (bench_common's
           Meter: a torch.optim post-step hook for both, real tokens from the attention masks
           of the batches: mtdnn's through its Instrument hook, the Trainer's through its
           collator). Only meaningful on an otherwise idle machine.

Each (unit, arm, seed) runs in its own child process and its result is stored as JSON under
--out; a rerun skips what is stored (an interrupted benchmark goes on where it stopped). The
report (Markdown, printed, and --markdown FILE) gives per unit each arm's mean ± std over seeds,
the paired per-seed difference mtdnn − HF with its 95% t-interval (mtdnn.stats.t_interval, two
seeds or more), the task type's trivial baseline, training time and real tokens/s per arm.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import gc
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

ARMS = ("mtdnn", "hf")
ARM_TITLES = {"mtdnn": "mtdnn", "hf": "HF Trainer"}
LOG_EVERY = 10  # steps per logged loss, in both arms (the same small per-step cost)
CSQA_CHOICES = 5  # CommonsenseQA: a question is 5 sequences


@dataclasses.dataclass(frozen=True)
class Data:
    """A data set of ../shared/data/more: its spec, sequence length and full split sizes."""

    spec: str  # under task_specs/
    max_seq_length: int  # default of both arms (the shipped spec's, run_qa's for SQuAD)
    train: int  # rows of the full files, for the report
    dev: int
    rows: str  # what a row is
    title: str


DATA = {
    "conll": Data("conll2003.yaml", 128, 14041, 3250, "sentences", "CoNLL-2003 English"),
    "squad": Data("squad.yaml", 384, 11877, 10570, "questions",
                  "SQuAD v1.1 (train: the first 44 articles)"),
    "csqa": Data("commonsenseqa.yaml", 80, 9741, 1221, "questions", "CommonsenseQA"),
    "goemotions": Data("goemotions.yaml", 64, 43410, 5426, "comments", "GoEmotions"),
}


@dataclasses.dataclass(frozen=True)
class Unit:
    part: str  # quality | conll | speed
    data: str  # a key of DATA
    tasks: tuple[str, ...]  # tasks of the data set's spec, trained together
    arms: tuple[str, ...] = ARMS
    flat: bool = True  # every head on the last layer (the spec's `layer:` dropped)
    title: str = ""


UNITS = {
    "ner": Unit("quality", "conll", ("ner",), title="CoNLL-2003 NER"),
    "pos": Unit("quality", "conll", ("pos",), title="CoNLL-2003 POS"),
    "squad": Unit("quality", "squad", ("squad",), title="SQuAD v1.1"),
    "csqa": Unit("quality", "csqa", ("commonsenseqa",), title="CommonsenseQA"),
    "goemotions": Unit("quality", "goemotions", ("goemotions",), title="GoEmotions"),
    "chunk": Unit("conll", "conll", ("chunk",), ("mtdnn",), title="CoNLL-2003 chunking alone"),
    "conll-hier": Unit("conll", "conll", ("ner", "pos", "chunk"), ("mtdnn",), flat=False,
                       title="NER + POS + chunks, hierarchical heads"),
    "conll-flat": Unit("conll", "conll", ("ner", "pos", "chunk"), ("mtdnn",),
                       title="NER + POS + chunks, every head on the last layer"),
    "tput-ner": Unit("speed", "conll", ("ner",), title="NER training throughput"),
    "tput-squad": Unit("speed", "squad", ("squad",), title="SQuAD training throughput"),
}
PARTS = {part: tuple(n for n, u in UNITS.items() if u.part == part)
         for part in ("quality", "conll", "speed")}
OPT_IN = ("conll-flat",)
DEFAULT_UNITS = tuple(n for n in UNITS if n not in OPT_IN)
# The metrics each task is reported with (all of the spec's are computed and stored).
REPORTED = {"ner": ("entity_f1",), "pos": ("token_accuracy",),
            "chunk": ("entity_f1", "token_accuracy"), "squad": ("exact_match", "squad_f1"),
            "commonsenseqa": ("accuracy",), "goemotions": ("macro_f1", "micro_f1")}
SHORT = {"entity_f1": "entity F1", "token_accuracy": "token acc", "exact_match": "EM",
         "squad_f1": "F1", "accuracy": "acc", "macro_f1": "macro F1", "micro_f1": "micro F1"}
# The HF arm of each task type: its transformers class, the collator the example scripts train
# it with (dynamic padding: run_ner, run_swag and run_qa with pad_to_max_length off), and which.
HF_ARMS = {
    "token_classification": ("AutoModelForTokenClassification",
                             "DataCollatorForTokenClassification", "run_ner.py"),
    "extractive_qa": ("AutoModelForQuestionAnswering", "DataCollatorWithPadding",
                      "run_qa.py (pad_to_max_length off)"),
    "multiple_choice": ("AutoModelForMultipleChoice", "DataCollatorForMultipleChoice",
                        "run_swag.py"),
    "multilabel_classification": ("AutoModelForSequenceClassification", "DataCollatorWithPadding",
                                  "run_classification.py (multi-label)"),
}

# Train rows per data set (0: every row) of each preset; --quick fits ~35 minutes on the 2-core
# development machine, the full preset is the BENCHMARKS.md figures (see the printed estimate).
PRESETS: dict[str, dict[str, Any]] = {
    "full": {"seeds": [1, 2, 3], "epochs": 2.0, "repeats": 3,
             "train_rows": {"conll": 0, "squad": 4000, "csqa": 6000, "goemotions": 15000},
             "dev_rows": {"conll": 0, "squad": 2000, "csqa": 0, "goemotions": 0},
             "speed_rows": {"conll": 3200, "squad": 960}},
    "quick": {"seeds": [1], "epochs": 1.0, "repeats": 1,
              "train_rows": {"conll": 2000, "squad": 1000, "csqa": 1500, "goemotions": 4000},
              "dev_rows": {"conll": 1000, "squad": 500, "csqa": 0, "goemotions": 2000},
              "speed_rows": {"conll": 1280, "squad": 384}},
}


def default_more_dir() -> str:
    return os.environ.get("MTDNN_MORE_DIR") or str(bc.REPO.parent / "shared" / "data" / "more")


def unit_key(unit: str, arm: str, n: int) -> str:
    """Where a result is stored: unit/arm/seedN (speed units: repN, the repeats)."""
    return f"{unit}/{arm}/{'rep' if UNITS[unit].part == 'speed' else 'seed'}{n}"


# ---------------------------------------------------------------------------------------------
# What a run is: its spec (the shipped one with the benchmark's overrides)


def unit_config(args: argparse.Namespace, unit: str, arm: str, n: int, out: Path
                ) -> dict[str, Any]:
    """What a child needs to run one (unit, arm, seed or repeat); "settings" is stored with its
    result, and a stored result is reused only by a run with the same settings."""
    u = UNITS[unit]
    speed = u.part == "speed"
    # The repeats of a speed unit train the same batches: one seed for all.
    seed = args.seeds[0] if speed else n
    max_len = args.max_seq_length or DATA[u.data].max_seq_length
    overrides = bc.base_overrides(
        glue_dir=str(Path(args.more_dir).absolute()), encoder=args.encoder, seed=seed,
        lr=args.lr, batch_size=args.batch_size, max_seq_length=max_len,
        warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay, tasks=list(u.tasks),
        max_train=None, log_every=LOG_EVERY)
    # no resumable checkpoint inside the timed loop (its time cadence: every 10 minutes)
    overrides.append("train.save_every_minutes=null")
    overrides.append(f"train.epochs={1.0 if speed else args.epochs}")
    n_train = (args.speed_rows if speed else args.train_rows)[u.data]
    n_dev = 0 if speed else args.dev_rows[u.data]
    for task in u.tasks:
        overrides += [f"tasks.{task}.max_train_examples={n_train}"] if n_train else []
        overrides += [f"tasks.{task}.max_eval_examples={n_dev}"] if n_dev else []
        overrides += [f"tasks.{task}.layer=null"] if u.flat else []
    if u.data == "squad":
        overrides.append(f"tasks.squad.doc_stride={args.doc_stride}")
    if u.data == "csqa":  # questions per batch: both arms hold batch_size // 5 x 5 sequences
        questions = max(1, args.batch_size // CSQA_CHOICES)
        overrides.append(f"tasks.commonsenseqa.batch_size={questions}")
    if u.data == "goemotions":  # one fixed threshold: nothing is tuned on the scored rows
        overrides.append("tasks.goemotions.tune_threshold=false")
    if arm == "mtdnn" and not speed and args.mtdnn_random_batches:
        overrides.append("train.group_by_length=false")
    hf_sampling = "group_by_length" if speed or args.hf_group_by_length else "random"
    settings = {"unit": unit, "arm": arm, "n": n, "spec": DATA[u.data].spec,
                "tasks": list(u.tasks), "overrides": overrides, "hf_sampling": hf_sampling}
    return {**settings, "settings": settings, "run_dir": str(out / "runs" / unit_key(unit, arm, n)),
            "keep_checkpoints": args.keep_checkpoints}


def unit_spec(cfg: dict[str, Any]) -> Any:
    from mtdnn.spec import load_spec

    return load_spec(bc.REPO / "task_specs" / cfg["spec"], cfg["overrides"], tasks=cfg["tasks"])


def train_only(spec: Any, output_dir: str | Path) -> Any:
    """The spec mtdnn trains: only the train files, so that `train()` evaluates nothing and keeps
    its final model as best/ (the benchmark scores it, with the code it scores the HF arm with)."""
    return dataclasses.replace(spec, output_dir=str(output_dir), tasks=tuple(
        dataclasses.replace(t, files={"train": t.files["train"]}, hub=None) for t in spec.tasks))


def encoder_tokenizer(spec: Any) -> Any:
    """The encoder's tokenizer, loaded as mtdnn loads it (the same features cache key)."""
    from transformers import AutoTokenizer

    from mtdnn.model import resolve_encoder

    return AutoTokenizer.from_pretrained(resolve_encoder(spec.encoder))


def split_features(spec: Any, task: Any, tokenizer: Any, split: str) -> tuple[Any, Any]:
    """(typed examples, tokenized features) of one split, as mtdnn.prepare makes them."""
    from mtdnn.data import read_split
    from mtdnn.tasks import task_type

    rows = read_split(spec, task, split)
    return rows, task_type(task.type).features(rows, tokenizer, spec.max_seq_length,
                                               for_training=split == "train", task=task)


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------
# Scoring: one path for both arms


def hf_as_task(model: Any, task: str, kind: Any) -> Any:
    """A trained HF model behind the interface mtdnn.evaluation.outputs_of runs a MultiTaskModel
    through (`model(task, **batch)["logits"]`), its logits made by the task type's own bridge from
    the plain transformers class (`exported_logits`: e.g. QA's start and end stacked, padding
    masked), a missing choice masked as mtdnn's multiple-choice head masks it."""
    import torch

    class HFTask(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hf, self.task_types = model, {task: kind}

        def forward(self, name: str, **batch: Any) -> dict[str, Any]:
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")
                      if k in batch}
            logits = self.task_types[name].exported_logits(self.hf, inputs)
            if "choice_mask" in batch:
                logits = logits.masked_fill(~batch["choice_mask"], float("-inf"))
            return {"logits": logits}

    return HFTask()


def score_outputs(kind: Any, metrics: list[str], outputs: list[Any], dataset: Any,
                  examples: Any) -> dict[str, float]:
    """Per-feature outputs (`kind.outputs`-shaped arrays, dataset order) -> the task's metrics:
    the scoring path of both arms."""
    return kind.score(metrics, kind.predictions(outputs, dataset, examples), examples)


def score_tasks(spec: Any, model: Any, tokenizer: Any) -> dict[str, Any]:
    """Every task of the spec scored on its dev features (read and tokenized as mtdnn does), the
    model run by mtdnn's own evaluation loop; the trivial baselines; the split sizes."""
    from mtdnn.evaluation import outputs_of
    from mtdnn.tasks import task_type

    metrics, baselines, sizes, eval_s = {}, {}, {}, 0.0
    for task in spec.tasks:
        kind = task_type(task.type)
        names = list(task.metrics or kind.default_metrics)
        train_rows, train_ds = split_features(spec, task, tokenizer, "train")
        dev_rows, dev_ds = split_features(spec, task, tokenizer, "dev")
        started = time.perf_counter()
        outputs = outputs_of(model, task.name, dev_ds, spec.train.eval_batch_size,
                             collator=kind.collator(tokenizer))
        metrics[task.name] = score_outputs(kind, names, outputs, dev_ds, dev_rows)
        eval_s += time.perf_counter() - started
        baselines[task.name] = kind.baseline(names, train_rows, dev_rows)
        sizes[task.name] = {"train_rows": len(train_rows), "train_features": len(train_ds),
                            "dev_rows": len(dev_rows), "dev_features": len(dev_ds)}
    return {"metrics": metrics, "baselines": baselines, "sizes": sizes, "eval_s": eval_s}


# ---------------------------------------------------------------------------------------------
# The HF arm


class HfCounter:
    """What the HF Trainer trained, counted as bench_common.TrainCounter counts mtdnn's loop:
    features (rows of the batch), real tokens (attention mask) and batches of the training
    batches, optimizer steps (a global torch.optim post-step hook), and the training time from
    the first batch's collation to the last step's end. Batches are matched to steps by order,
    so one the DataLoader collated ahead of a step that never came is not counted."""

    def __init__(self) -> None:
        self.step_t: list[float] = []
        self.batches: list[tuple[int, int]] = []
        self.first: float | None = None
        self._hook: Any = None

    def __enter__(self) -> HfCounter:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._hook = register_optimizer_step_post_hook(
            lambda *_: self.step_t.append(time.perf_counter()))
        return self

    def __exit__(self, *_: Any) -> None:
        self._hook.remove()

    def wrap(self, collate: Any) -> Any:
        """The collator, counting what it returns; the `length` column (kept for the Trainer's
        length grouping) is dropped before collation."""
        def counting(features: list[dict[str, Any]]) -> dict[str, Any]:
            started = time.perf_counter()
            if self.first is None:
                self.first = started
            batch = collate([{k: v for k, v in f.items() if k != "length"} for f in features])
            mask = batch["attention_mask"]
            self.batches.append((int(mask.shape[0]), int(mask.sum())))
            return batch
        return counting

    def totals(self) -> dict[str, float]:
        used = self.batches[:len(self.step_t)]
        return {"train_rows": sum(b[0] for b in used), "train_tokens": sum(b[1] for b in used),
                "train_batches": len(used), "steps": len(self.step_t),
                "train_s": self.step_t[-1] - self.first if self.step_t and self.first is not None
                else 0.0}


def hf_train_dataset(type_name: str, features: Any) -> Any:
    """The training features with the columns the HF model and collator expect: the same rows,
    renamed (QA's [start, end] labels -> start_positions, end_positions) or retyped (multi-hot
    labels as floats: BCEWithLogitsLoss takes float targets); `length` is kept for
    group_by_length and dropped by the collator (HfCounter.wrap)."""
    keep = [c for c in ("input_ids", "token_type_ids", "length") if c in features.column_names]
    if type_name == "extractive_qa":
        features = features.map(lambda b: {"start_positions": [x[0] for x in b["labels"]],
                                           "end_positions": [x[1] for x in b["labels"]]},
                                batched=True, keep_in_memory=True)
        return features.select_columns(keep + ["start_positions", "end_positions"])
    if type_name == "multilabel_classification":
        import datasets

        features = features.cast_column("labels", datasets.List(datasets.Value("float32")))
    return features.select_columns(keep + ["labels"])


def hf_model_and_collator(task: Any, tokenizer: Any, path: str) -> tuple[Any, Any]:
    import transformers

    cls_name, collator_name, _ = HF_ARMS[task.type]
    kwargs: dict[str, Any] = {}
    if task.type == "token_classification":
        kwargs = {"num_labels": len(task.labels)}
    elif task.type == "multilabel_classification":
        kwargs = {"num_labels": len(task.labels), "problem_type": "multi_label_classification"}
    model = getattr(transformers, cls_name).from_pretrained(path, **kwargs)
    return model, getattr(transformers, collator_name)(tokenizer)


def hf_trainer(spec: Any, task: Any, tokenizer: Any, train_ds: Any, run_dir: Path,
               sampling: str, collate: Any) -> tuple[Any, Any, int]:
    """(Trainer, model, steps): the spec's optimizer settings and mtdnn's step count
    (ceil(epochs x batches per epoch), warmup int(warmup_ratio x steps)), the task's batch size
    (CommonsenseQA: questions)."""
    import torch
    from transformers import Trainer, TrainingArguments, set_seed

    from mtdnn.model import resolve_encoder

    t = spec.train
    per_step = spec.batch_size(task)
    steps = math.ceil(t.epochs * bc.batches(len(train_ds), per_step))
    set_seed(spec.seed)  # the new head's initialization
    model, collator = hf_model_and_collator(task, tokenizer, resolve_encoder(spec.encoder))
    args = TrainingArguments(
        output_dir=str(run_dir), seed=spec.seed, per_device_train_batch_size=per_step,
        learning_rate=t.learning_rate, weight_decay=t.weight_decay, adam_beta1=t.adam_betas[0],
        adam_beta2=t.adam_betas[1], adam_epsilon=t.adam_epsilon,
        max_grad_norm=t.max_grad_norm or 0.0, lr_scheduler_type=t.scheduler,
        warmup_steps=int(t.warmup_ratio * steps), max_steps=steps,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True, save_strategy="no",
        eval_strategy="no", logging_strategy="steps", logging_steps=LOG_EVERY, report_to="none",
        train_sampling_strategy=sampling, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=hf_train_dataset(task.type, train_ds),
                      processing_class=tokenizer, data_collator=collate(collator))
    return trainer, model, steps


def quality_hf(cfg: dict[str, Any], spec: Any) -> dict[str, Any]:
    from mtdnn.tasks import task_type

    task = spec.tasks[0]
    tokenizer = encoder_tokenizer(spec)
    _, train_ds = split_features(spec, task, tokenizer, "train")
    counter = HfCounter()
    trainer, model, steps = hf_trainer(spec, task, tokenizer, train_ds, Path(cfg["run_dir"]),
                                       cfg["hf_sampling"], counter.wrap)
    with counter:
        trainer.train()
    scored = score_tasks(spec, hf_as_task(model, task.name, task_type(task.type)), tokenizer)
    del trainer, model
    gc.collect()
    shutil.rmtree(cfg["run_dir"], ignore_errors=True)  # the Trainer's output: nothing kept
    return {**scored, "train": counter.totals(), "planned_steps": steps}


# ---------------------------------------------------------------------------------------------
# The mtdnn arm


def quality_mtdnn(cfg: dict[str, Any], spec: Any) -> dict[str, Any]:
    from mtdnn.checkpoint import load_model
    from mtdnn.trainer import train

    run_dir = Path(cfg["run_dir"])
    counter = bc.TrainCounter()
    train(train_only(spec, run_dir), progress=False, instrument=counter)
    model = load_model(run_dir / "best", device=device())
    scored = score_tasks(spec, model, encoder_tokenizer(spec))
    del model
    gc.collect()
    if not cfg["keep_checkpoints"]:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {**scored, "train": counter.totals()}


# ---------------------------------------------------------------------------------------------
# Throughput: bench_common's Meter for both arms


def speed_arm(cfg: dict[str, Any], spec: Any) -> dict[str, Any]:
    from transformers import AutoConfig

    from mtdnn.model import resolve_encoder

    task, run_dir = spec.tasks[0], Path(cfg["run_dir"])
    with bc.Meter() as meter:
        if cfg["arm"] == "mtdnn":
            from mtdnn.trainer import train

            meter.start_run(task.name)
            train(train_only(spec, run_dir), progress=False, instrument=bc.MtdnnProbe(meter))
        else:
            tokenizer = encoder_tokenizer(spec)
            _, train_ds = split_features(spec, task, tokenizer, "train")

            def counted(collator: Any) -> Any:
                inner = meter.wrap(collator)
                return lambda features: inner([{k: v for k, v in f.items() if k != "length"}
                                               for f in features])

            trainer, model, _ = hf_trainer(spec, task, tokenizer, train_ds, run_dir,
                                           cfg["hf_sampling"], counted)
            meter.start_run(task.name)
            trainer.train()
            del trainer, model
        meter.end_run()
    shutil.rmtree(run_dir, ignore_errors=True)
    gc.collect()
    dims = bc.model_dims(AutoConfig.from_pretrained(resolve_encoder(spec.encoder)))
    every = bc.window_totals(meter.runs, dims, steady=False)
    steady = bc.rates(bc.window_totals(meter.runs, dims, steady=True), math.nan)
    return {"steady": {k: v for k, v in steady.items() if not k.startswith("mfu")},
            "totals": {k: every[k] for k in ("steps", "samples", "real_tokens", "padded_tokens",
                                             "seconds")},
            "optimizer": meter.optimizer}


# ---------------------------------------------------------------------------------------------
# The child: one (unit, arm, seed)


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Runs one (unit, arm, seed or repeat) in this process and returns its result."""
    spec = unit_spec(cfg)
    if UNITS[cfg["unit"]].part == "speed":
        result = speed_arm(cfg, spec)
    elif cfg["arm"] == "hf":
        result = quality_hf(cfg, spec)
    else:
        result = quality_mtdnn(cfg, spec)
    return {"unit": cfg["unit"], "arm": cfg["arm"], "n": cfg["n"], "settings": cfg["settings"],
            **result, "peak_rss_mb": bc.peak_rss_mb()}


def child(config_path: str, result_path: str) -> None:
    bc.child_env()
    cfg = json.loads(Path(config_path).read_text(encoding="utf-8"))
    Path(result_path).write_text(json.dumps(run(cfg)), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Plan and time estimate


def padded_tokens(lengths: list[list[int]], batch: int, grouped: bool, seed: int = 0,
                  megabatch: int = 50) -> int:
    """Tokens computed (pads included) over one epoch of batches of `batch` items, each item a
    list of sequence lengths (a multiple-choice question: one per choice), in a seeded random
    order; grouped: each window of `megabatch` batches sorted longest first (mtdnn's and the
    Trainer's length grouping)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(lengths))
    if grouped:
        window = batch * megabatch
        order = np.concatenate([
            w[np.argsort([-max(lengths[i]) for i in w], kind="stable")]
            for w in (order[s:s + window] for s in range(0, len(order), window))] or [order])
    total = 0
    for s in range(0, len(order), batch):
        items = [lengths[i] for i in order[s:s + batch]]
        total += sum(len(x) for x in items) * max(max(x) for x in items)
    return total


def plan_sizes(cfg: dict[str, Any]) -> dict[str, Any]:
    """Rows, features and tokens of a unit's splits (tokenized into $MTDNN_CACHE, where its runs
    find them again), with the tokens each arm computes per epoch, pads included."""
    spec = unit_spec(cfg)
    tokenizer = encoder_tokenizer(spec)
    speed = UNITS[cfg["unit"]].part == "speed"
    out = {}
    for task in spec.tasks:
        train_rows, train_ds = split_features(spec, task, tokenizer, "train")
        if task.type == "multiple_choice":
            lengths = [[len(s) for s in row] for row in train_ds["input_ids"]]
        else:
            lengths = [[n] for n in train_ds["length"]]
        per_step = spec.batch_size(task)
        sizes = {"train_rows": len(train_rows), "train_features": len(train_ds),
                 "train_tokens": int(sum(train_ds["length"])),
                 "steps_per_epoch": bc.batches(len(train_ds), per_step),
                 "padded_grouped": padded_tokens(lengths, per_step, True),
                 "padded_random": padded_tokens(lengths, per_step, False)}
        if not speed:
            dev_rows, dev_ds = split_features(spec, task, tokenizer, "dev")
            sizes.update(dev_rows=len(dev_rows), dev_features=len(dev_ds),
                         dev_tokens=int(sum(dev_ds["length"])))
        out[task.name] = sizes
    return out


def estimate_run(cfg: dict[str, Any], sizes: dict[str, Any], epochs: float) -> float:
    """Seconds one (unit, arm, seed) takes, from the development machine's rates (bench_common):
    the tokens computed per epoch (pads included: the HF arm's random batches pad more), the dev
    tokens, the child's start and the run's setup."""
    speed = UNITS[cfg["unit"]].part == "speed"
    grouped = cfg["arm"] == "mtdnn" or cfg["hf_sampling"] == "group_by_length"
    train = sum(s["padded_grouped" if grouped else "padded_random"] for s in sizes.values())
    dev = sum(s.get("dev_tokens", 0) for s in sizes.values())
    return (bc.OVERHEAD_CHILD_S + bc.OVERHEAD_RUN_S
            + (1.0 if speed else epochs) * train / bc.RATE_TRAIN_TOKENS_S
            + dev / bc.RATE_EVAL_TOKENS_S)


# ---------------------------------------------------------------------------------------------
# Aggregation and report (pure: tests/test_bench_task_types.py checks them on crafted numbers)


def collect(results: dict[tuple[str, str, int], dict[str, Any]]
            ) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """{unit: {arm: {seed: result}}} of the stored results."""
    out: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    for (unit, arm, n), r in sorted(results.items()):
        out.setdefault(unit, {}).setdefault(arm, {})[n] = r
    return out


def metric_values(runs: dict[int, dict[str, Any]], task: str, metric: str) -> dict[int, float]:
    """{seed: value} of one task's metric over the runs that have it."""
    return {n: r["metrics"][task][metric] for n, r in runs.items()
            if metric in r.get("metrics", {}).get(task, {})}


def paired(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """a − b per seed, over the seeds both have, in seed order."""
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def fmt_interval(diffs: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """'[-0.4, +2.2]': the 95% t-interval of the mean paired difference (x scale); '-' with fewer
    than two seeds."""
    from mtdnn.stats import t_interval

    if len(diffs) < 2:
        return "-"
    _, low, high = t_interval([scale * d for d in diffs])
    return f"[{round(low, digits) + 0.0:+.{digits}f}, {round(high, digits) + 0.0:+.{digits}f}]"


def fmt_baseline(value: float | None) -> str:
    return "-" if value is None else f"{round(100 * value, 1) + 0.0:.1f}"


def first_baseline(runs: dict[str, dict[int, dict[str, Any]]], task: str, metric: str
                   ) -> float | None:
    for per_seed in runs.values():
        for r in per_seed.values():
            value = r.get("baselines", {}).get(task, {}).get(metric)
            if value is not None:
                return value
    return None


def quality_table(by_unit: dict[str, dict[str, dict[int, dict[str, Any]]]],
                  units: list[str]) -> str:
    """One row per (unit, reported metric): each arm's mean ± std over seeds (x100), the paired
    difference mtdnn − HF per seed (mean ± std) and its 95% t-interval, the trivial baseline."""
    header = ["unit", "metric", "seeds", "mtdnn", "HF Trainer", "Δ mtdnn − HF", "95% CI of Δ",
              "baseline"]
    rows = []
    for unit in units:
        runs = by_unit.get(unit, {})
        for task in UNITS[unit].tasks:
            for metric in REPORTED[task]:
                a = metric_values(runs.get("mtdnn", {}), task, metric)
                b = metric_values(runs.get("hf", {}), task, metric)
                diff = paired(a, b)
                rows.append([unit, SHORT.get(metric, metric), len(diff) or max(len(a), len(b)),
                             bc.fmt_mean_std(list(a.values())), bc.fmt_mean_std(list(b.values())),
                             bc.fmt_mean_std(diff, signed=True), fmt_interval(diff),
                             fmt_baseline(first_baseline(runs, task, metric))])
    return bc.markdown_table(header, rows)


def cost_table(by_unit: dict[str, dict[str, dict[int, dict[str, Any]]]], units: list[str]) -> str:
    """Per unit and arm: optimizer steps, features and real tokens trained, training seconds and
    real tokens/s (mean ± std over seeds), evaluation and child wall seconds."""
    header = ["unit", "arm", "steps", "features", "real tokens", "train s", "real tok/s",
              "eval s", "wall s"]
    rows = []
    for unit in units:
        for arm in UNITS[unit].arms:
            runs = list(by_unit.get(unit, {}).get(arm, {}).values())
            if not runs:
                continue
            train = [r["train"] for r in runs]
            rate = [t["train_tokens"] / t["train_s"] for t in train if t["train_s"]]
            rows.append([unit, ARM_TITLES[arm], f"{train[0]['steps']:,}",
                         f"{train[0]['train_rows']:,}", f"{train[0]['train_tokens']:,}",
                         bc.fmt_mean_std([t["train_s"] for t in train], 1.0, 0),
                         bc.fmt_mean_std(rate, 1.0, 0),
                         bc.fmt_mean_std([r["eval_s"] for r in runs], 1.0, 0),
                         bc.fmt_mean_std([r.get("child_wall_s", 0.0) for r in runs], 1.0, 0)])
    return bc.markdown_table(header, rows)


def conll_table(by_unit: dict[str, dict[str, dict[int, dict[str, Any]]]]) -> str:
    """Each CoNLL task alone (mtdnn single-task, last layer) next to the three together
    (hierarchical heads; with conll-flat, also every head on the last layer): mean ± std over
    seeds, the paired difference together − alone and its t-interval; the training time of the
    three alone summed against one run together."""
    alone = {"ner": by_unit.get("ner", {}).get("mtdnn", {}),
             "pos": by_unit.get("pos", {}).get("mtdnn", {}),
             "chunk": by_unit.get("chunk", {}).get("mtdnn", {})}
    together = [(u, by_unit[u]["mtdnn"]) for u in ("conll-hier", "conll-flat")
                if by_unit.get(u, {}).get("mtdnn")]
    header = ["task", "metric", "alone"]
    for unit, _ in together:
        header += [f"{unit}", f"Δ {unit} − alone", "95% CI of Δ"]
    header.append("baseline")
    rows: list[list[Any]] = []
    for task in ("ner", "pos", "chunk"):
        for metric in REPORTED[task]:
            single = metric_values(alone[task], task, metric)
            row = [task, SHORT.get(metric, metric), bc.fmt_mean_std(list(single.values()))]
            for _, runs in together:
                multi = metric_values(runs, task, metric)
                diff = paired(multi, single)
                row += [bc.fmt_mean_std(list(multi.values())),
                        bc.fmt_mean_std(diff, signed=True), fmt_interval(diff)]
            sources = {"alone": alone[task], **dict(together)}
            row.append(fmt_baseline(first_baseline(sources, task, metric)))
            rows.append(row)
    seeds = sorted(set.intersection(*(set(r) for r in alone.values()))) if all(
        alone.values()) else []
    time_row: list[Any] = ["(all three)", "train s",
                           bc.fmt_mean_std([sum(alone[t][s]["train"]["train_s"] for t in alone)
                                            for s in seeds], 1.0, 0)]
    for _, runs in together:
        time_row += [bc.fmt_mean_std([r["train"]["train_s"] for r in runs.values()], 1.0, 0),
                     "", ""]
    rows.append(time_row + [""])
    return bc.markdown_table(header, rows)


def speed_rows(by_unit: dict[str, dict[str, dict[int, dict[str, Any]]]], units: list[str]
               ) -> tuple[str, str]:
    """(per arm: medians over repeats of the steady-window rates; the ratios mtdnn / HF, medians
    of the per-repeat ratios)."""
    header = ["unit", "arm", "repeats", "steps timed", "s/step", "samples/s", "real tok/s",
              "padded tok/s", "pad %"]
    rows, ratios = [], []
    for unit in units:
        arms = by_unit.get(unit, {})
        for arm in UNITS[unit].arms:
            runs = list(arms.get(arm, {}).values())
            if not runs:
                continue
            med = {k: bc.median([r["steady"][k] for r in runs]) for k in runs[0]["steady"]}
            rows.append([unit, ARM_TITLES[arm], len(runs), int(med["steps"]), med["s_per_step"],
                         med["samples_per_s"], med["real_tokens_per_s"],
                         med["padded_tokens_per_s"], 100 * med["pad_fraction"]])
        reps = sorted(set(arms.get("mtdnn", {})) & set(arms.get("hf", {})))
        if reps:
            a, b = arms["mtdnn"], arms["hf"]
            ratios.append([unit, len(reps)] + [
                bc.median([a[n]["steady"][k] / b[n]["steady"][k] for n in reps])
                for k in ("samples_per_s", "real_tokens_per_s")])
    return (bc.markdown_table(header, rows),
            bc.markdown_table(["mtdnn / HF Trainer (median of per-repeat ratios)", "repeats",
                               "samples/s", "real tok/s"], ratios))


def data_lines(info: dict[str, Any]) -> str:
    """The data of each unit that ran: rows (features) trained on and scored, sequence length."""
    a, lines = info["args"], []
    for unit in info["units"]:
        u, sizes = UNITS[unit], info["sizes"].get(unit)
        if not sizes:
            continue
        s, d = next(iter(sizes.values())), DATA[u.data]  # the tasks of a unit share their rows
        parts = [f"train {s['train_rows']:,} of {d.train:,} {d.rows} ({s['train_features']:,} "
                 "features)"]
        if "dev_rows" in s:
            parts.append(f"dev {s['dev_rows']:,} of {d.dev:,} ({s['dev_features']:,})")
        lines.append(f"- `{unit}` ({u.title}): {d.title}, {'; '.join(parts)}; "
                     f"max_seq_length {a['max_seq_length'] or d.max_seq_length}")
    return "\n".join(lines)


def report(results: dict[tuple[str, str, int], dict[str, Any]], info: dict[str, Any]) -> str:
    a = info["args"]
    by_unit = collect(results)
    units = info["units"]
    quality = [u for u in units if UNITS[u].part == "quality"]
    conll = [u for u in units if UNITS[u].part == "conll"]
    speed = [u for u in units if UNITS[u].part == "speed"]
    questions = max(1, a["batch_size"] // CSQA_CHOICES)
    sampling = ("group_by_length (--hf-group-by-length)" if a["hf_group_by_length"] else
                "random batches, run_ner/run_qa/run_swag's default (no group_by_length; mtdnn "
                "groups by length, so the HF arm computes more padding)")
    if a.get("mtdnn_random_batches"):
        sampling += "; mtdnn with random batches too (--mtdnn-random-batches)"
    arms = "\n".join(f"  - {t}: `{m}` + `{c}` ({s})" for t, (m, c, s) in HF_ARMS.items())
    text = [
        "### The new task types: mtdnn vs the HF Trainer, hierarchical CoNLL heads, throughput\n",
        f"Command: `{info['command']}`\n",
        f"Machine: {bc.machine_line(info['machine'])}.\n",
        f"Encoder {a['encoder']}; both arms: learning rate {a['lr']:g}, batch {a['batch_size']} "
        f"sequences (CommonsenseQA: {questions} questions x {CSQA_CHOICES} choices), "
        f"{a['epochs']:g} epoch(s), linear schedule with warmup ratio {a['warmup_ratio']:g} "
        f"(int(ratio x steps) steps), weight decay {a['weight_decay']:g}, max grad norm 1, fp32 "
        f"AdamW, the same optimizer step count (ceil(epochs x batches per epoch)); SQuAD "
        f"doc_stride {a['doc_stride']}; seeds {', '.join(map(str, a['seeds']))}.\n",
        data_lines(info) + "\n",
    ]
    if quality:
        text += [
            "#### Quality: mtdnn single-task vs the HF Trainer\n",
            "- mtdnn: `mtdnn.trainer.train` on the shipped spec (one task, its head on the last "
            "layer), evaluated once at the end: the final model is scored.",
            "- HF Trainer: `transformers.Trainer`, the type's class and the collator of its "
            f"example script; sampling: {sampling}; no evaluation during training, the final "
            "model is scored. The same tokenized features (mtdnn's `features(...)`), columns "
            "renamed for the HF model:\n" + arms,
            "- Scoring, both arms: `mtdnn.evaluation.outputs_of` over the same dev features (the "
            "HF model through the type's `exported_logits`), then `kind.predictions` and "
            "`kind.score`. mtdnn's own evaluation (`train()` at its last step) takes the same "
            "path; the benchmark calls it on the final checkpoint instead, so that the two "
            "arms share every line of it. The heads are each library's own: for multiple "
            "choice and multi-label mtdnn puts a fresh dense + tanh on the first token where "
            "the HF classes start from MiniLM's pretrained pooler; mtdnn's QA head applies "
            "dropout before its linear layer in training and its loss masks the padding, "
            "BertForQuestionAnswering does neither; the token-classification heads are the "
            "same (dropout, linear).\n",
            quality_table(by_unit, quality) + "\n",
            "Dev metrics x100, mean ± sample std over seeds; Δ: mean ± std of the per-seed "
            "paired differences, with the 95% t-interval of their mean over seeds "
            "(mtdnn.stats.t_interval; '-' with one seed). Baseline: the task type's trivial "
            "baseline (`kind.baseline`: the most frequent training tag, answer position or "
            "label set; the first k context words for SQuAD).\n",
            cost_table(by_unit, quality) + "\n",
            "`features`, `real tokens`: what the run trained over all its epochs (a feature: a "
            "sentence or window of one, a SQuAD window, a CommonsenseQA question of 5 "
            "sequences, a comment); `train s`: from the first training batch to "
            "the last optimizer step (evaluation and setup excluded); `real tok/s`: real "
            "(unpadded) tokens / train s; `eval s`: dev outputs, decoding and scoring; `wall "
            "s`: the whole child (model loads, tokenization cache, evaluation).\n"]
    if conll:
        text += [
            "#### CoNLL-2003: the three tasks together with hierarchical heads vs each alone "
            "(mtdnn)\n",
            "`alone`: single-task runs, head on the last layer (NER, POS: the quality part's "
            "mtdnn runs; chunk: its own). `conll-hier`: one run of the three, "
            "task_specs/conll2003.yaml's layers (POS 2, chunks 4, NER 6 of 6), proportional "
            "sampler: each task's sentences once per epoch, the same budget per task as "
            "alone." + (" `conll-flat`: the same run with every head on the last layer." if
                        "conll-flat" in units else "") + "\n",
            conll_table(by_unit) + "\n"]
    if speed:
        table, ratios = speed_rows(by_unit, speed)
        optimizers = "; ".join(
            f"{ARM_TITLES[arm]} {', '.join(sorted(names))}" for arm in ARMS
            if (names := {r.get("optimizer") or "?" for u in speed
                          for r in by_unit.get(u, {}).get(arm, {}).values()}))
        text += [
            "#### Training throughput per real token\n",
            f"One epoch over the first {a['speed_rows']['conll']:,} CoNLL sentences (NER) and "
            f"the first {a['speed_rows']['squad']:,} SQuAD questions, batch {a['batch_size']}, "
            "the same features in both arms; the HF Trainer with dynamic padding and "
            "group_by_length (its best case), mtdnn with its length grouping; medians over "
            f"{a['repeats']} repeat(s), alternating the arms. Rates over steps 2..n (from the "
            "end of the first optimizer step to the end of the last), real tokens from the "
            "attention masks of the batches (bench_common.Meter). Optimizers: "
            f"{optimizers or '-'}. Only meaningful on an otherwise idle machine.\n",
            table + "\n", ratios + "\n"]
    text.append(f"Per-seed values: {info['summary']}.\n")
    return "\n".join(text)


# ---------------------------------------------------------------------------------------------
# Command line


def rows_option(text: str) -> tuple[str, int]:
    name, _, count = text.partition("=")
    if name not in DATA or not count.isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r}: give DATA=N with DATA one of {', '.join(DATA)} and N >= 0 (0: every row)")
    return name, int(count)


def expand_units(text: str) -> tuple[list[str], list[str]]:
    """'ner,speed' -> (units in run order, unknown names with a suggestion)."""
    wanted, unknown = set(), []
    for name in filter(None, (n.strip() for n in text.split(","))):
        if name in PARTS:
            wanted.update(n for n in PARTS[name] if n not in OPT_IN)
        elif name in UNITS:
            wanted.add(name)
        else:
            close = difflib.get_close_matches(name, [*UNITS, *PARTS], n=1)
            unknown.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return [n for n in UNITS if n in wanted], unknown


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bc.common_parser(__doc__.split("\n\n")[0], lr=1e-4, out="runs/bench_task_types",
                         out_help="results (one JSON per unit, arm and seed), logs, run "
                                  "directories, the tokenization cache",
                         lr_help="a small encoder takes a larger step than BERT-base")
    for action in p._actions:
        if action.dest == "glue_dir":  # the common option is for the GLUE scripts
            action.help = argparse.SUPPRESS
        if action.dest == "max_seq_length":
            action.default = None
            action.help = ("both arms, every task; None: per data set (" + ", ".join(
                f"{k} {d.max_seq_length}" for k, d in DATA.items()) + ")")
    full, quick = PRESETS["full"], PRESETS["quick"]
    p.add_argument("--more-dir", default=default_more_dir(),
                   help="../shared/data/more's layout ($MTDNN_MORE_DIR if set)")
    p.add_argument("--quick", action="store_true",
                   help=f"the reduced preset (~35 min on 2 cores): {quick}; explicit options win")
    p.add_argument("--only", default=",".join(DEFAULT_UNITS),
                   help=f"units, comma-separated: {', '.join(UNITS)}, or a part: "
                        f"{', '.join(PARTS)} ({', '.join(OPT_IN)} only when named)")
    p.add_argument("--seeds", nargs="+", type=int, help=f"default {full['seeds']}")
    p.add_argument("--epochs", type=float, help=f"default {full['epochs']}")
    for key, what in (("train", "training rows"), ("dev", "dev rows"),
                      ("speed", "training rows of the speed units")):
        p.add_argument(f"--{key}-rows", nargs="+", type=rows_option, metavar="DATA=N",
                       help=f"first N {what} per data set, 0: all (default "
                            f"{full[f'{key}_rows']})")
    p.add_argument("--repeats", type=int, help=f"speed units' repeats (default {full['repeats']})")
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--doc-stride", type=int, default=128, help="SQuAD windows' overlap")
    p.add_argument("--hf-group-by-length", action="store_true",
                   help="quality units: the HF Trainer groups batches by length (run_ner, run_qa "
                        "and run_swag do not by default)")
    p.add_argument("--mtdnn-random-batches", action="store_true",
                   help="quality and conll units: mtdnn without length-grouped batches "
                        "(train.group_by_length=false), as the HF arm's random batches")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep each mtdnn run's final model (by default deleted once scored)")
    p.add_argument("--markdown", help="write the report here (it is printed in any case)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    args = p.parse_args(argv)
    preset = PRESETS["quick" if args.quick else "full"]
    for key in ("seeds", "epochs", "repeats"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    for key in ("train_rows", "dev_rows", "speed_rows"):
        setattr(args, key, {**preset[key], **dict(getattr(args, key) or [])})
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds repeats a seed: {args.seeds}")
    if args.repeats < 1 or args.epochs <= 0:
        p.error("--repeats must be >= 1 and --epochs > 0")
    units, unknown = expand_units(args.only)
    if unknown or not units:
        p.error(f"--only: unknown unit(s) {', '.join(unknown)}; choose from {', '.join(UNITS)} "
                f"or {', '.join(PARTS)}" if unknown else "--only names no unit")
    args.units = units
    return args


def plan(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(unit, arm, seed or repeat) in run order: whole seeds first, each unit's arms in turn;
    then the speed units, repeat by repeat, alternating the arms."""
    todo = [(u, arm, s) for s in args.seeds for u in args.units if UNITS[u].part != "speed"
            for arm in UNITS[u].arms]
    return todo + [(u, arm, r) for r in range(1, args.repeats + 1) for u in args.units
                   if UNITS[u].part == "speed" for arm in UNITS[u].arms]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        return child(*args.child)
    if not (Path(args.more_dir) / "conll2003" / "train.txt").is_file():
        sys.exit(f"no data in {args.more_dir} (give --more-dir or set MTDNN_MORE_DIR)")
    bc.child_env()
    out = Path(args.out).absolute()
    os.environ.setdefault("MTDNN_CACHE", str(out / "cache"))
    store, logs = bc.ResultStore(out / "results"), out / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    runs = plan(args)
    configs = {r: unit_config(args, *r, out) for r in runs}
    stale = [unit_key(*r) for r in runs if (s := store.get(unit_key(*r))) is not None
             and s.get("settings") != configs[r]["settings"]]
    if stale:
        sys.exit(f"{out} holds results made with other settings ({', '.join(stale)}): give "
                 "another --out, or delete them to run them again")
    print(f"machine: {bc.machine_line(bc.machine_info())}\nout: {out}\nreading and tokenizing "
          "the splits ...", flush=True)
    sizes = {u: plan_sizes(next(c for r, c in configs.items() if r[0] == u))
             for u in args.units}
    todo = [r for r in runs if store.get(unit_key(*r)) is None]
    estimate = {r: estimate_run(configs[r], sizes[r[0]], args.epochs) for r in runs}
    print(f"settings: {'quick' if args.quick else 'full'} preset with the options given; seeds "
          f"{args.seeds}, {args.epochs:g} epoch(s), speed repeats {args.repeats}; first rows "
          f"(0: all): train {args.train_rows}, dev {args.dev_rows}, speed {args.speed_rows}")
    print(f"plan: {len(runs)} runs, {len(runs) - len(todo)} already stored:")
    for r in runs:
        unit_sizes = sizes[r[0]]
        trained = ", ".join(f"{t} {s['train_features']:,} features/{s['train_tokens']:,} tokens"
                            for t, s in unit_sizes.items())
        state = "stored" if r not in todo else f"~{estimate[r] / 60:.1f} min"
        print(f"  {unit_key(*r):<28} {state:>10}   {trained}")
    print(f"estimated duration: {bc.fmt_duration(sum(estimate[r] for r in todo))} (rates of the "
          "2-core development machine; tokens computed, pads included)", flush=True)
    if args.dry_run:
        return

    failed = []
    for r in todo:
        key, tag = unit_key(*r), unit_key(*r).replace("/", "-")
        print(f"{key}: running (log: {logs / tag}.log)", flush=True)
        try:
            result = bc.run_child(Path(__file__), configs[r], logs, tag)
        except RuntimeError as e:
            print(f"{key}: FAILED\n{e}", flush=True)
            failed.append(key)
            continue
        store.put(key, result)
        print(f"{key}: {summary_line(result)}; wall {result['child_wall_s']:.0f} s", flush=True)

    results = {r: s for r in runs if (s := store.get(unit_key(*r))) is not None}
    summary_path = out / "summary.json"
    info = {"args": vars(args), "machine": bc.machine_info(), "command": bc.command_line(),
            "units": args.units, "sizes": sizes, "summary": summary_path}
    text = report(results, info)
    summary_path.write_text(json.dumps(
        {"machine": info["machine"], "command": info["command"], "args": vars(args),
         "sizes": sizes, "results": {unit_key(*r): v for r, v in results.items()}},
        indent=1, default=str), encoding="utf-8")
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    print(f"wrote {summary_path}" + (f", {args.markdown}" if args.markdown else ""))
    if failed:
        sys.exit(f"failed runs (see {logs}): {', '.join(failed)}; rerun the same command to "
                 "retry them")


def summary_line(result: dict[str, Any]) -> str:
    """One line of progress: the reported metrics (x100), or the steady rates."""
    if "steady" in result:
        s = result["steady"]
        return f"{s['samples_per_s']:.1f} samples/s, {s['real_tokens_per_s']:,.0f} real tok/s"
    scores = ", ".join(f"{task} {SHORT.get(m, m)} {100 * values[m]:.1f}"
                       for task, values in result["metrics"].items()
                       for m in REPORTED.get(task, ()) if m in values)
    return f"{scores}; train {result['train']['train_s']:.0f} s"


if __name__ == "__main__":
    main()
