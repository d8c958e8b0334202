"""Multi-label classification: a SET of labels per text or text pair (GoEmotions: one or more of 28
emotions per Reddit comment; MT-DNN issue #226). One sigmoid per label of `labels:`, trained with
binary cross-entropy (the mean over labels and rows); a label is predicted when its sigmoid is >=
`threshold`, or, with `tune_threshold`, >= the threshold that maximises that label's F1 on dev.
Metrics macro_f1 (the mean over labels of per-label F1, 0 for a label neither predicted nor
present, as sklearn's zero_division=0), micro_f1, subset_accuracy (the exact set); baseline: the
most frequent training label set for every row; export: `AutoModelForSequenceClassification` with
`problem_type="multi_label_classification"` and the thresholds in its config.

A row's labels are a JSON list, or a string cut at `label_separator` ("0,7"). Each value is read as
a name of `labels:` first; otherwise a whole number 0..L-1 is a position in that list (GoEmotions'
files hold ids, emotions.txt the names) - unless some label name is itself a number, when only names
are taken (a position could then silently mean another label). An empty set is written as a JSON
[] (an empty field is a missing label, an error). A file given `format: csv` whose name ends in .tsv
is read with CSV quoting, split at tabs (GoEmotions quotes every text that holds a `"`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mtdnn.data import Rows
from mtdnn.tasks.multilabel_rows import LabelSets, label_set, read_file, read_hub
from mtdnn.tasks.sequence import SequenceTask

if TYPE_CHECKING:
    from mtdnn.model import MultiTaskModel, TaskInfo
    from mtdnn.spec import Spec, TaskSpec


# --------------------------------------------------------------------------------------------------
# Metrics: `fn(predictions, references, groups=None)` on multi-hot rows (N, L)


def _indicators(predictions: Any, references: Any) -> tuple[np.ndarray, np.ndarray]:
    p, r = np.asarray(predictions, dtype=bool), np.asarray(references, dtype=bool)
    if p.ndim != 2 or p.shape != r.shape or not len(p):
        raise ValueError(f"multi-label metrics compare (rows, labels) arrays of 0/1 with rows; "
                         f"got predictions {p.shape} and references {r.shape}")
    return p, r


def label_f1(predictions: Any, references: Any) -> np.ndarray:
    """F1 of each label (column): 2tp / (2tp + fp + fn), 0 where no row has or gets it."""
    p, r = _indicators(predictions, references)
    tp = (p & r).sum(0)
    denom = p.sum(0) + r.sum(0)  # = 2tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros(p.shape[1]), where=denom > 0)


def macro_f1(predictions: Any, references: Any, groups: Any = None) -> float:
    """The mean over labels of per-label F1 (sklearn's average="macro", zero_division=0)."""
    return float(label_f1(predictions, references).mean())


def micro_f1(predictions: Any, references: Any, groups: Any = None) -> float:
    """F1 of all (row, label) decisions pooled: 2tp / (2tp + fp + fn); 0 when there are none."""
    p, r = _indicators(predictions, references)
    denom = int(p.sum() + r.sum())
    return float(2 * (p & r).sum() / denom) if denom else 0.0


def subset_accuracy(predictions: Any, references: Any, groups: Any = None) -> float:
    """The fraction of rows whose predicted set is exactly the gold set."""
    p, r = _indicators(predictions, references)
    return float((p == r).all(1).mean())


# --------------------------------------------------------------------------------------------------
# Scores and thresholds


def sigmoid(logits: np.ndarray) -> np.ndarray:
    # exp(-log(1 + e^-x)): no overflow warning for large |x|
    return np.exp(-np.logaddexp(0.0, -np.asarray(logits, dtype=np.float64)))


def tune_thresholds(scores: np.ndarray, labels: np.ndarray, default: float) -> np.ndarray:
    """Per label, the threshold t for which `score >= t` has the highest F1 on these rows.

    Every cut between two distinct scores is tried; the threshold is the midpoint of the cut (the
    same predictions here, less tied to these exact scores); of equal F1, the highest threshold. A
    label no row has keeps `default`: F1 is 0 whatever is predicted, there is nothing to tune.
    """
    n, width = scores.shape
    out = np.full(width, float(default))
    for j in range(width):
        gold = labels[:, j].astype(bool)
        if not gold.any():
            continue
        order = np.argsort(-scores[:, j], kind="stable")
        s, hits = scores[order, j], np.cumsum(gold[order])
        # cut after row k-1 (predict the k highest); only where the next score is lower
        ends = np.flatnonzero(np.r_[s[1:] < s[:-1], True])
        f1 = 2 * hits[ends] / (ends + 1 + gold.sum())
        best = int(ends[np.argmax(f1)])  # argmax: the first, i.e. the highest threshold
        high, low = s[best], s[best + 1] if best + 1 < n else -np.inf
        mid = (high + low) / 2
        out[j] = mid if low < mid <= high else high
    return out


def settings_of(info: TaskInfo) -> dict[str, Any]:
    """What a checkpoint keeps of the task's settings (threshold, tune_threshold, and the tuned
    `thresholds`): `TaskInfo.settings`, saved in mtdnn.json. A TaskInfo without that field keeps
    nothing: the spec's defaults."""
    return getattr(info, "settings", None) or {}


# --------------------------------------------------------------------------------------------------
# The task type


class MultilabelClassification(SequenceTask):
    name = "multilabel_classification"
    metric_functions = ("micro_f1", "macro_f1", "subset_accuracy")
    default_metrics = ("macro_f1", "micro_f1", "subset_accuracy")
    settings = ("label_separator", "threshold", "tune_threshold")
    problem_type = "multi_label_classification"

    def check(self, task: TaskSpec, report: Any) -> None:
        key = f"tasks.{task.name}"
        if len(task.text) not in self.text_columns:
            report.fail(f"{key}.text", f"expected 1 or 2 text columns, got {len(task.text)}")
        if len(task.labels) < 2:
            report.fail(f"{key}.labels", "a multilabel_classification task needs its list of at "
                                         "least 2 labels, e.g. labels: [joy, anger, neutral]")
        if len(set(task.labels)) != len(task.labels):
            report.fail(f"{key}.labels", f"labels must be unique, got {list(task.labels)}")
        if not task.label_separator:
            report.fail(f"{key}.label_separator", 'must not be empty (e.g. ","); it cuts a text '
                                                  "field into labels")
        if not 0 < task.threshold < 1:
            report.fail(f"{key}.threshold", f"must be in (0, 1), got {task.threshold} (a label is "
                                            "predicted when its sigmoid is >= threshold)")
        for split, source in task.files.items():
            if source.format not in ("auto", "tsv", "csv", "jsonl"):
                report.fail(f"{key}.files.{split}.format", f"{source.format!r} files hold no "
                            "label sets: use tsv, csv (a .tsv file with CSV quoting) or jsonl")
        for where, splits in (("files", task.files or None),
                              ("hub.splits", task.hub.splits if task.hub else None)):
            if task.tune_threshold and splits is not None and "dev" not in splits:
                report.fail(f"{key}.tune_threshold", f"thresholds are tuned on the dev split, and "
                            f"{key}.{where} has none: add one, or set tune_threshold: false")

    def num_outputs(self, labels: Sequence[str]) -> int:
        return len(labels)

    # ---- rows ----------------------------------------------------------------------------------

    def convert_label(self, task: TaskSpec, value: Any, index: dict[str, int]
                      ) -> tuple[Any, str | None]:
        return label_set(task, value, index)

    def read(self, spec: Spec, task: TaskSpec, split: str) -> LabelSets:
        """Files are read here (the shared reader takes one label value per row, and reads .tsv
        files without quoting); Hub datasets by the shared reader, then their label column."""
        from mtdnn.data import available_splits
        from mtdnn.errors import DataError
        from mtdnn.records import fail

        if split not in available_splits(spec, task):
            raise DataError(spec.source, [f"tasks.{task.name}: no {split!r} split (it has "
                                          f"{available_splits(spec, task)}): use one of those, "
                                          f"or add tasks.{task.name}.files.{split} to the spec"])
        where, cols, ids, raw, at, problems = read_file(task, split) \
            if spec.uses_files(task) else read_hub(spec, task, split)
        labels = None
        if raw is not None:
            index = {n: i for i, n in enumerate(task.labels)}
            labels = []
            for value, row in zip(raw, at):
                hot, problem = label_set(task, value, index)
                if problem:
                    problems.append(f"{row}: {problem}")
                labels.append(hot)
        fail(where, problems)
        limit = task.max_train_examples if split == "train" else task.max_eval_examples
        cols, labels, ids, _ = self.finish_rows(task, split, cols, labels, ids, limit)
        return LabelSets(task=task.name, split=split, where=where, text_a=cols[0],
                         text_b=cols[1] if len(cols) > 1 else None, labels=labels, ids=ids,
                         names=tuple(task.labels), threshold=task.threshold,
                         tune=task.tune_threshold)

    # ---- model ---------------------------------------------------------------------------------

    def loss(self, logits: Any, labels: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        # the mean over every (row, label): each label is its own binary decision
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())

    # ---- evaluation ----------------------------------------------------------------------------

    def thresholds(self, scores: np.ndarray, examples: LabelSets | None) -> np.ndarray:
        """The per-label thresholds that decide `examples` (see `LabelSets`)."""
        from mtdnn.errors import UserError

        width = scores.shape[1]
        if examples is None:  # bare logits (heads.predictions): the spec's default
            return np.full(width, 0.5)
        if examples.thresholds is not None:
            return np.asarray(examples.thresholds, dtype=np.float64)
        if examples.tune:
            if examples.split == "dev" and examples.labels is not None:
                return tune_thresholds(scores, np.asarray(examples.labels), examples.threshold)
            raise UserError(f"tasks.{examples.task}.tune_threshold", (
                f"thresholds are tuned on the dev rows, and this model keeps none to decide "
                f"{examples.split} rows with: score the dev split first (training does), or set "
                "tune_threshold: false"))
        return np.full(width, examples.threshold)

    def predictions(self, outputs: list[Any], dataset: Any, examples: LabelSets | None
                    ) -> np.ndarray:
        """Multi-hot (rows, labels) int64: a label when its sigmoid is >= its threshold."""
        if not outputs:
            return np.zeros((0, len(examples.names) if examples else 0), dtype=np.int64)
        scores = sigmoid(np.stack(outputs))
        return (scores >= self.thresholds(scores, examples)).astype(np.int64)

    def calibrate(self, info: TaskInfo, outputs: list[Any], examples: LabelSets) -> LabelSets:
        """After a labelled split is run: on dev with tune_threshold, tunes the thresholds and
        keeps them in `info.settings` (saved with the checkpoint: predict, export and a later
        evaluation of test use them); on other splits, decides with the kept ones."""
        settings = getattr(info, "settings", None)
        if settings is None:  # nowhere to keep them: the dev rows are tuned on when decoded
            return examples
        if examples.tune and examples.split == "dev" and examples.labels is not None and \
                outputs:
            tuned = tune_thresholds(sigmoid(np.stack(outputs)), np.asarray(examples.labels),
                                    examples.threshold)
            settings["thresholds"] = [float(t) for t in tuned]
        if settings.get("thresholds") is not None:
            return dataclasses.replace(examples, thresholds=tuple(settings["thresholds"]))
        return examples

    def baseline(self, metrics: Sequence[str], train: LabelSets, dev: LabelSets
                 ) -> dict[str, float]:
        from mtdnn.metrics import compute_metrics

        most_common = Counter(tuple(x) for x in train.labels).most_common(1)[0][0]
        return compute_metrics(metrics, np.tile(most_common, (len(dev), 1)), dev.labels)

    # ---- prediction ----------------------------------------------------------------------------

    def examples_from_inputs(self, info: TaskInfo, inputs: Sequence[Any]) -> LabelSets:
        rows = super().examples_from_inputs(info, inputs)
        settings = settings_of(info)
        kept = settings.get("thresholds")
        return LabelSets(**{f.name: getattr(rows, f.name) for f in dataclasses.fields(Rows)},
                         names=tuple(info.labels), threshold=settings.get("threshold", 0.5),
                         tune=bool(settings.get("tune_threshold")),
                         thresholds=tuple(kept) if kept is not None else None)

    def divergence(self, a: Any, b: Any, batch: dict[str, Any]) -> Any:
        from mtdnn.smart import bernoulli_sym_kl

        return bernoulli_sym_kl(a, b)  # one independent Bernoulli per label

    def card_outputs(self, info: Any) -> str:
        return "a set of " + ", ".join(f"`{x}`" for x in info.labels)

    def card_usage(self, info: Any, repo_id: str) -> tuple[list[str], str]:
        return (["from transformers import pipeline", "",
                 f'clf = pipeline("text-classification", model="{repo_id}", '
                 'function_to_apply="sigmoid", top_k=None)',
                 'scores = clf("Thanks, that made my day!", truncation=True)',
                 "limits = clf.model.config.label_thresholds",
                 'labels = [s["label"] for s in scores if s["score"] >= limits[s["label"]]]'],
                "Plain transformers: mtdnn is not needed (one sigmoid per label; a label is "
                "predicted at or above its threshold).")

    def decode(self, info: TaskInfo, predictions: Any, outputs: list[Any], dataset: Any,
               examples: Any) -> list[dict[str, Any]]:
        """{"labels": the predicted names (in `labels:` order), "scores": {name: sigmoid}}."""
        scores = sigmoid(np.stack(outputs)) if outputs else np.zeros((0, len(info.labels)))
        return [{"labels": [n for n, hot in zip(info.labels, row) if hot],
                 "scores": dict(zip(info.labels, map(float, s)))}
                for row, s in zip(predictions, scores)]

    # ---- export --------------------------------------------------------------------------------

    def export(self, model: MultiTaskModel, task: str) -> Any:
        """The architecture's XForSequenceClassification; its config also holds
        `label_thresholds` ({name: threshold}), which the pipeline does not apply itself."""
        exported = super().export(model, task)
        info = model.tasks[task]
        settings = settings_of(info)
        kept = settings.get("thresholds") or [settings.get("threshold", 0.5)] * len(info.labels)
        exported.config.label_thresholds = dict(zip(info.labels, map(float, kept)))
        return exported

    def export_labels(self, info: TaskInfo) -> list[str]:
        return list(info.labels)
