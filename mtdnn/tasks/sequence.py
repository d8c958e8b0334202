"""What the sentence-level types share (classification, regression, ranking): rows of one text or
a text pair read by `mtdnn.data` (`Rows`), one tokenized sequence per row, a head on the first
token's hidden state, one output vector per sequence, and export as the architecture's own
`XForSequenceClassification`.

A subclass says how a raw label becomes a value (`convert_label`), its loss, how outputs become
predictions, and its trivial baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mtdnn.tasks.base import TaskType

if TYPE_CHECKING:
    from mtdnn.data import Rows
    from mtdnn.model import MultiTaskModel, TaskInfo
    from mtdnn.spec import Spec, TaskSpec


class SequenceTask(TaskType):
    text_columns: tuple[int, ...] = (1, 2)  # how many text columns a task may read

    # ---- spec ----------------------------------------------------------------------------------

    def check(self, task: TaskSpec, report: Any) -> None:
        key = f"tasks.{task.name}"
        if len(task.text) not in self.text_columns:
            allowed = " or ".join(map(str, self.text_columns))
            report.fail(f"{key}.text", f"expected {allowed} text columns, got {len(task.text)}")
        if task.labels:
            report.fail(f"{key}.labels", f"only classification tasks take a label list "
                                         f"({task.type} tasks read numbers or relevance)")

    # ---- rows ----------------------------------------------------------------------------------

    def convert_label(self, task: TaskSpec, value: Any, index: dict[str, int]
                      ) -> tuple[Any, str | None]:
        """A raw label that is neither empty nor a list -> (its value, None) or (None, the
        problem)."""
        raise NotImplementedError

    def finish_rows(self, task: TaskSpec, split: str, cols: list[list[str]],
                    labels: list[Any] | None, ids: list[str], limit: int | None
                    ) -> tuple[list[list[str]], list[Any] | None, list[str], list[int] | None]:
        """Applies max_train/eval_examples (`limit`); returns (columns, labels, ids, groups)."""
        if limit is not None:
            cols = [c[:limit] for c in cols]
            labels = labels[:limit] if labels is not None else None
            ids = ids[:limit]
        return cols, labels, ids, None

    def training_problem(self, task: TaskSpec, rows: Rows, raw: list[Any]) -> str | None:
        """Why a training split would teach nothing, or None."""
        return None

    def read(self, spec: Spec, task: TaskSpec, split: str) -> Rows:
        from mtdnn.data import read_rows

        return read_rows(spec, task, split)

    def features(self, examples: Rows, tokenizer: Any, max_len: int, *, for_training: bool,
                 task: TaskSpec | None = None, use_cache: bool = True) -> Any:
        from mtdnn.features import tokenize

        return tokenize(examples, tokenizer, max_len, for_training=for_training,
                        use_cache=use_cache)

    # ---- model ---------------------------------------------------------------------------------

    def num_outputs(self, labels: Sequence[str]) -> int:
        return 1

    def columns(self, training: bool) -> tuple[str, ...]:
        # soft_labels: a distilled task's teacher targets (mtdnn/distill.py)
        return ("input_ids", "token_type_ids", "labels", "soft_labels") if training else \
            ("input_ids", "token_type_ids")

    # ---- evaluation ----------------------------------------------------------------------------

    def predictions(self, outputs: list[Any], dataset: Any, examples: Rows) -> np.ndarray:
        """Scores (one per row; classification overrides with class ids)."""
        return np.stack(outputs)[:, 0].astype(np.float64) if outputs else np.zeros(0)

    def subset(self, examples: Rows, indices: Sequence[int], groups: Sequence[int] | None = None
               ) -> Rows:
        import dataclasses

        def pick(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[i] for i in indices]

        return dataclasses.replace(
            examples, text_a=pick(examples.text_a), text_b=pick(examples.text_b),
            labels=pick(examples.labels), ids=pick(examples.ids),
            query_ids=list(groups) if groups is not None else pick(examples.query_ids))

    def examples_from_inputs(self, info: TaskInfo, inputs: Sequence[Any]) -> Rows:
        from mtdnn.data import Rows
        from mtdnn.errors import UserError

        pairs = [(x,) if isinstance(x, str) else tuple(x) for x in inputs]
        bad = [i for i, p in enumerate(pairs) if len(p) != len(info.text_columns)]
        if bad:
            raise UserError("predict", f"task {info.name!r} takes {len(info.text_columns)} "
                                       f"text(s) per input; input {bad[0]} has "
                                       f"{len(pairs[bad[0]])}")
        columns = [[str(p[i]) for p in pairs] for i in range(len(info.text_columns))]
        return Rows(task=info.name, split="predict", where="predict", text_a=columns[0],
                    text_b=columns[1] if len(columns) > 1 else None, labels=None,
                    ids=[str(i) for i in range(len(pairs))])

    def decode(self, info: TaskInfo, predictions: Any, outputs: list[Any], dataset: Any,
               examples: Any) -> list[dict[str, Any]]:
        return [{"score": float(s)} for s in predictions]

    # ---- export --------------------------------------------------------------------------------

    def export(self, model: MultiTaskModel, task: str) -> Any:
        from mtdnn.export import build_classifier

        return build_classifier(model, task, self.export_labels(model.tasks[task]),
                                self.problem_type)

    problem_type = "regression"

    def export_labels(self, info: TaskInfo) -> list[str]:
        """The exported config's id2label."""
        return ["score"]

    def export_problem(self, model_type: str) -> str | None:
        from mtdnn.export import LAYOUTS

        if model_type in LAYOUTS:
            return None
        return (f"cannot export a task head for model_type {model_type!r}: an exact mapping onto "
                f"its own classification head is known for {', '.join(sorted(LAYOUTS))}; export "
                "the encoder alone with --encoder-only and put a head on it yourself")

    def export_inputs(self, model: MultiTaskModel, task: str) -> dict[str, Any]:
        from mtdnn.export import probe_batch

        return probe_batch(model.encoder_for(task).config)
