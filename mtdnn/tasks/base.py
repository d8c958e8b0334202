"""The interface of a task type. Every stage a batch travels through asks the task's type:

    spec      check(task, report); settings (the TaskSpec fields only this type reads)
    rows      read(spec, task, split) -> typed examples (`Rows` for sentence-level types)
    features  features(examples, tokenizer, max_len, for_training) -> datasets.Dataset
    collate   collator(tokenizer) -> rows -> a padded batch; columns(training)
    model     head(hidden_size, info); logits(model, task, batch); loss(logits, labels, batch)
    evaluate  outputs(logits, batch) -> one array per feature; predictions(outputs, dataset,
              examples); score(metrics, predictions, examples); baseline(metrics, train, dev)
    predict   examples_from_inputs(info, inputs); decode(info, outputs, dataset, examples)
    export    export(model, task) -> a plain transformers model; pipeline_tag

The base class holds what most types share; a type overrides what differs. Methods that build or
run a model import torch themselves, so that a spec can be checked without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from mtdnn.model import MultiTaskModel, TaskInfo
    from mtdnn.spec import Spec, TaskSpec


class TaskType:
    name: ClassVar[str]
    default_metrics: ClassVar[tuple[str, ...]]
    # TaskSpec fields that only this type reads (with the types that also list them); setting one
    # for a task of another type is a spec error naming the types that would use it.
    settings: ClassVar[tuple[str, ...]] = ()
    pipeline_tag: ClassVar[str] = "text-classification"  # the Hub's task id (model cards)
    pipeline_name: ClassVar[str] = "Text Classification"
    label_noun: ClassVar[str] = "label"  # what `labels:` lists, for messages
    # metrics defined as functions of this type's module, `fn(predictions, references, groups)`
    metric_functions: ClassVar[tuple[str, ...]] = ()
    # file formats beyond tsv/csv/jsonl that only this type reads (FileSource.format)
    file_formats: ClassVar[tuple[str, ...]] = ()
    # the head has a dense layer that may start from the encoder's pooler (TaskSpec.head_init)
    dense_head: ClassVar[bool] = True
    # training batches are grouped by length unless the spec says otherwise (Spec.group_by_length)
    groups_by_length: ClassVar[bool] = True

    # ---- spec ----------------------------------------------------------------------------------

    def check(self, task: TaskSpec, report: Any) -> None:
        """Reports the type's own problems with a task's settings (`report.fail(key, message)`)."""

    def num_outputs(self, labels: Sequence[str]) -> int:
        """Head outputs per scored item (a sequence, a token, a choice)."""
        return 1

    def batch_size(self, task: TaskSpec, train_batch_size: int) -> int:
        """Training items per batch when the task does not set its own."""
        return train_batch_size

    def eval_batch_size(self, batch_size: int, dataset: Any) -> int:
        """Features per evaluation batch, from `train.eval_batch_size` (sequences)."""
        return batch_size

    # ---- rows and features ---------------------------------------------------------------------

    def read(self, spec: Spec, task: TaskSpec, split: str) -> Any:
        """Reads and checks one split: typed examples, with `.ids`, `.labels` (None when the split
        has none), `.where` and `len()`.

        Raises:
            DataError: naming the file, the row, the value and the fix.
        """
        raise NotImplementedError

    def features(self, examples: Any, tokenizer: Any, max_len: int, *, for_training: bool,
                 task: TaskSpec | None = None, use_cache: bool = True) -> Any:
        """Tokenized features (`datasets.Dataset` with a `length` column)."""
        raise NotImplementedError

    def columns(self, training: bool) -> tuple[str, ...]:
        """The dataset columns a batch is collated from."""
        return ("input_ids", "token_type_ids", "labels") if training else \
            ("input_ids", "token_type_ids")

    def collator(self, tokenizer: Any) -> Any:
        """rows (dicts of `columns`) -> a padded batch of tensors."""
        from mtdnn.collate import Collator

        return Collator(tokenizer.pad_token_id)

    # ---- model ---------------------------------------------------------------------------------

    def head(self, hidden_size: int, info: TaskInfo) -> Any:
        """The task's head (an nn.Module)."""
        from mtdnn.heads import TaskHead

        return TaskHead(hidden_size, self.num_outputs(info.labels), info.dropout,
                        info.activation)

    def logits(self, model: MultiTaskModel, task: str, batch: dict[str, Any]) -> Any:
        """The head's outputs for a batch (the default: the first token of the task's layer)."""
        first = model.encode(task, batch["input_ids"], batch["attention_mask"],
                             batch.get("token_type_ids"))  # (B, H)
        return model.heads[task](first)

    def loss(self, logits: Any, labels: Any, batch: dict[str, Any]) -> Any:
        """The mean loss of a batch, in fp32."""
        raise NotImplementedError

    # ---- distillation (mtdnn/distill.py) -------------------------------------------------------

    distillable: ClassVar[bool] = False  # its outputs do not depend on the teacher's tokenization

    def teacher_targets(self, outputs: list[Any], dataset: Any, temperature: float) -> list[Any]:
        """The teachers' outputs on the training rows (one (N, outputs) array each) -> one
        averaged target per training feature (`soft_labels`)."""
        raise NotImplementedError

    def distill_loss(self, logits: Any, labels: Any, batch: dict[str, Any], alpha: float,
                     temperature: float) -> Any:
        """alpha * the gold loss + (1 - alpha) * the loss against `batch["soft_labels"]`."""
        raise NotImplementedError

    def divergence(self, a: Any, b: Any, batch: dict[str, Any]) -> Any:
        """A symmetric divergence between two sets of logits of the same batch (SMART,
        mtdnn/smart.py): by default the symmetric KL of the softmax over the last dimension."""
        from mtdnn.smart import sym_kl

        return sym_kl(a, b)

    # ---- evaluation and prediction -------------------------------------------------------------

    def outputs(self, logits: Any, batch: dict[str, Any]) -> list[Any]:
        """One numpy array per feature of the batch (what `predictions` decodes)."""
        return list(logits.float().cpu().numpy())

    def calibrate(self, info: TaskInfo, outputs: list[Any], examples: Any) -> Any:
        """After a labelled split is run, before `predictions`: what the type tunes on it goes
        into `info.settings` (saved with the next checkpoint); returns the examples to decode
        (by default: unchanged)."""
        return examples

    def predictions(self, outputs: list[Any], dataset: Any, examples: Any) -> Any:
        """Per-feature outputs (in dataset order) -> one prediction per example, as the metrics
        take them."""
        raise NotImplementedError

    def score(self, metrics: Sequence[str], predictions: Any, examples: Any) -> dict[str, float]:
        from mtdnn.metrics import compute_metrics

        return compute_metrics(metrics, predictions, examples.labels,
                               getattr(examples, "query_ids", None))

    def subset(self, examples: Any, indices: Sequence[int], groups: Sequence[int] | None = None
               ) -> Any:
        """The examples at `indices` (a bootstrap resample may repeat one), for `score`; `groups`
        renumbers their query groups (ranking) so that a query drawn twice counts twice."""
        raise NotImplementedError

    def baseline(self, metrics: Sequence[str], train: Any, dev: Any) -> dict[str, float]:
        """What a model that ignores its input scores on dev."""
        return {}

    def examples_from_inputs(self, info: TaskInfo, inputs: Sequence[Any]) -> Any:
        """Raw inputs of `MultiTaskModel.predict` -> examples."""
        raise NotImplementedError

    def read_inputs(self, path: Any, columns: Sequence[str]) -> tuple[list[Any], list[str]]:
        """A file to predict -> (inputs as `examples_from_inputs` takes them, row ids)."""
        from mtdnn.data import read_texts

        return read_texts(path, columns)

    def input_columns(self, info: TaskInfo) -> list[str]:
        """The columns `mtdnn predict` reads by default."""
        return [str(c) for c in info.text_columns]

    def decode(self, info: TaskInfo, predictions: Any, outputs: list[Any], dataset: Any,
               examples: Any) -> list[dict[str, Any]]:
        """One JSON-able result per example (what `predict` returns and writes)."""
        raise NotImplementedError

    # ---- the model card (mtdnn/hub.py) ---------------------------------------------------------

    def card_inputs(self, info: TaskInfo) -> str:
        """What the task reads, for the card's table of tasks."""
        return " + ".join(f"`{c}`" for c in info.text_columns)

    def card_outputs(self, info: TaskInfo) -> str:
        """What the task outputs, for the card's table of tasks."""
        return ", ".join(f"`{x}`" for x in info.labels) if info.labels else "a real number"

    def card_usage(self, info: TaskInfo, repo_id: str) -> tuple[list[str], str]:
        """(Python lines, a note): how plain transformers runs the exported task."""
        example = '{"text": "A man is playing.", "text_pair": "Someone plays."}' if info.is_pair \
            else '"A fine film."'
        return (["from transformers import pipeline", "",
                 f'classifier = pipeline("{self.pipeline_tag}", model="{repo_id}")',
                 f"classifier({example})"], "Plain transformers: mtdnn is not needed.")

    # ---- export ---------------------------------------------------------------------------------

    def export(self, model: MultiTaskModel, task: str) -> Any:
        """The task as a plain transformers model with the same outputs."""
        raise NotImplementedError

    def export_problem(self, model_type: str) -> str | None:
        """Why a task of this type on this architecture cannot be exported exactly, or None."""
        return None

    def export_inputs(self, model: MultiTaskModel, task: str) -> dict[str, Any]:
        """A probe batch on which the export must reproduce the model's logits."""
        raise NotImplementedError

    def exported_logits(self, exported: Any, batch: dict[str, Any]) -> Any:
        """The exported model's outputs on a probe batch, shaped like `logits`."""
        return exported(**batch).logits
