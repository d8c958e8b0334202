"""What bench_task_types.py measures, as data: the data sets of ../shared/data/more, the units
(a data set's tasks trained together, in one part of the benchmark, with its arms), the metrics
reported per task, the HF class and collator of each task type's HF arm; and what one run of a
unit is: its child's config, its spec, and the typed examples and tokenized features it reads.

Not a module of the package: imported by the scripts beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import bench_quality_setup as bqs  # noqa: E402

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
    overrides = bqs.base_overrides(
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
    if arm == "mtdnn" and speed:  # against the Trainer's group_by_length, whatever the default
        overrides += [f"tasks.{task}.group_by_length=true" for task in u.tasks]
    hf_sampling = "group_by_length" if speed or args.hf_group_by_length else "random"
    settings = {"unit": unit, "arm": arm, "n": n, "spec": DATA[u.data].spec,
                "tasks": list(u.tasks), "overrides": overrides, "hf_sampling": hf_sampling}
    return {**settings, "settings": settings, "run_dir": str(out / "runs" / unit_key(unit, arm, n)),
            "keep_checkpoints": args.keep_checkpoints}


def unit_spec(cfg: dict[str, Any]) -> Any:
    from mtdnn.spec import load_spec

    return load_spec(bc.REPO / "task_specs" / cfg["spec"], cfg["overrides"], tasks=cfg["tasks"])


def grouped_tasks(cfg: dict[str, Any]) -> list[str]:
    """The tasks whose training batches a run groups by length: mtdnn's from its spec (a task's
    own setting, else the type's default: a code default the overrides do not show), the
    Trainer's all or none. Stored with each result, so that a change of a default is noticed."""
    if cfg["arm"] == "mtdnn":
        spec = unit_spec(cfg)
        return [t.name for t in spec.tasks if spec.group_by_length(t)]
    return list(cfg["tasks"]) if cfg["hf_sampling"] == "group_by_length" else []


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
