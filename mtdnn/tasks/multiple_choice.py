"""Multiple choice: a context (question, premise) and k choices; each choice is encoded together
with the context, the head gives one score per choice, and a cross-entropy over the choices trains
it (CommonsenseQA, COPA, SWAG). Metric: accuracy; baseline: always the most frequent training
answer position; export: `AutoModelForMultipleChoice`.

Columns (`text:`): the context first, then the choices, either
  - one list column (JSON lines, Hub): a list of strings, a list of {"label", "text"} objects, or
    the Hub's {"label": [...], "text": [...]}; a JSON column may be a dotted path into nested
    objects (`question.stem`, `question.choices`), or
  - one column per choice (any format; TSV/CSV files can only do this): [premise, choice1, ...].
The answer (`label:`) names a choice:
  - labelled choices (objects, the Hub form): by its label, compared as text ("A", or ARC's "1");
    never by position or by its text (CommonsenseQA repeats choice texts within a question);
  - unlabelled choices (strings, columns): by its 0-based position (an integer, or digits);
  - a Hub ClassLabel answer is its id as a position, or its name as a label for labelled choices.
Rows may have different numbers of choices (at least 2): a batch pads the missing choices and
their scores are -inf. A batch holds `train.batch_size // k` questions (k sequences each): k is
the number of choice columns, or `ASSUMED_CHOICES` for a list column (set tasks.NAME.batch_size).
Reading and checking rows: `mtdnn.tasks.multiple_choice_rows`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mtdnn.tasks.base import TaskType

if TYPE_CHECKING:
    from mtdnn.model import MultiTaskModel, TaskInfo
    from mtdnn.spec import Spec, TaskSpec
    from mtdnn.tasks.multiple_choice_rows import Choices

# Choices per question assumed for the default batch size when they come in one list column (SWAG,
# ARC, RACE and MMLU have 4): the count is only known from the data.
ASSUMED_CHOICES = 4
# Where each architecture's XForMultipleChoice keeps our head's layers (dense -> activation, then
# one score), and the activations it applies, checked against the transformers 5 source: BERT
# and RoBERTa/XLM-R: pooler (dense + tanh) -> dropout -> classifier; DeBERTa-v2: ContextPooler
# (ACT2FN[pooler_hidden_act]) -> classifier; ELECTRA: its sequence summary on the first token
# (summary_proj_to_labels off: hidden -> hidden, GELU) -> classifier.
HEADS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "bert": ("bert.pooler.dense", "classifier", ("tanh",)),
    "roberta": ("roberta.pooler.dense", "classifier", ("tanh",)),
    "xlm-roberta": ("roberta.pooler.dense", "classifier", ("tanh",)),
    "electra": ("sequence_summary.summary", "classifier", ("gelu",)),
    "deberta-v2": ("pooler.dense", "classifier", ("tanh", "gelu", "relu")),
}


class MultipleChoice(TaskType):
    name = "multiple_choice"
    default_metrics = ("accuracy",)
    settings = ()
    pipeline_tag, pipeline_name = "multiple-choice", "Multiple Choice"

    def check(self, task: TaskSpec, report: Any) -> None:
        key = f"tasks.{task.name}"
        if len(task.text) < 2:
            report.fail(f"{key}.text", f"got {list(task.text)}: give the context, then the "
                                       "choices: [question, choices] (a list column) or "
                                       "[premise, choice_0, choice_1, ...]")
        if task.labels:
            report.fail(f"{key}.labels", "a multiple_choice task takes no label list (the answer "
                                         "names a choice by its label or 0-based position)")

    def batch_size(self, task: TaskSpec, train_batch_size: int) -> int:
        # k sequences per question: about as many sequences as other tasks' batches
        k = len(task.text) - 1 if len(task.text) > 2 else ASSUMED_CHOICES
        return max(1, train_batch_size // k)

    def eval_batch_size(self, batch_size: int, dataset: Any) -> int:
        # eval_batch_size counts sequences; a question holds k of them
        k = len(dataset[0]["input_ids"]) if len(dataset) else 1
        return max(1, batch_size // k)

    def read(self, spec: Spec, task: TaskSpec, split: str) -> Choices:
        from mtdnn.tasks.multiple_choice_rows import read_split

        return read_split(spec, task, split)

    # ---- features and batches ------------------------------------------------------------------

    def features(self, examples: Choices, tokenizer: Any, max_len: int, *, for_training: bool,
                 task: TaskSpec | None = None, use_cache: bool = True) -> Any:
        """One feature per question: `input_ids` (and `token_type_ids`) of shape (k, T), each row
        the pair (context, choice); only the context is cut when a pair is too long (the longest
        first, when the choice alone does not fit); `length`: the question's tokens; `labels`;
        `index`."""
        from mtdnn.features import content_key, map_cached

        table: dict[str, list[Any]] = {"context": examples.contexts, "choices": examples.choices,
                                       "index": list(range(len(examples)))}
        if examples.labels is not None:
            table["labels"] = examples.labels
        key = content_key(examples.task, examples.split, examples.where, tokenizer, max_len,
                          "multiple_choice", [examples.contexts, examples.choices,
                                              examples.labels or []])
        special = tokenizer.num_special_tokens_to_add(pair=True)

        def encode(batch: dict[str, list]) -> dict[str, list]:
            pairs = [(c, e) for c, es in zip(batch["context"], batch["choices"]) for e in es]
            sizes = [len(x) for x in tokenizer([e for _, e in pairs], add_special_tokens=False)[
                "input_ids"]]
            flat: list[dict[str, Any]] = [{}] * len(pairs)
            for strategy, fits in (("only_first", True), ("longest_first", False)):
                idx = [i for i, n in enumerate(sizes) if (n + special <= max_len) == fits]
                if idx:
                    enc = tokenizer([pairs[i][0] for i in idx], [pairs[i][1] for i in idx],
                                    truncation=strategy, max_length=max_len)
                    for j, i in enumerate(idx):
                        flat[i] = {k: enc[k][j] for k in ("input_ids", "token_type_ids")
                                   if k in enc}
            out: dict[str, list] = {k: [] for k in flat[0]}
            out["length"], start = [], 0
            for es in batch["choices"]:
                group = flat[start:start + len(es)]
                start += len(es)
                for k in flat[0]:
                    out[k].append([g[k] for g in group])
                out["length"].append(sum(len(g["input_ids"]) for g in group))
            return out

        return map_cached(table, encode, key, f"{examples.task}-{examples.split}",
                          use_cache=use_cache, remove_columns=["context", "choices"])

    def collator(self, tokenizer: Any) -> Any:
        return ChoiceCollator(tokenizer)

    # ---- model ---------------------------------------------------------------------------------

    def logits(self, model: MultiTaskModel, task: str, batch: dict[str, Any]) -> Any:
        ids = batch["input_ids"]  # (B, k, T)
        b, k, t = ids.shape
        types = batch.get("token_type_ids")
        first = model.encode(task, ids.reshape(b * k, t), batch["attention_mask"].reshape(b * k, t),
                             types.reshape(b * k, t) if types is not None else None)
        scores = model.heads[task](first).view(b, k)  # one score per choice
        mask = batch.get("choice_mask")  # (B, k): False where a row has fewer choices
        return scores if mask is None else scores.masked_fill(~mask, float("-inf"))

    def loss(self, logits: Any, labels: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        return F.cross_entropy(logits.float(), labels)  # padded choices: -inf, probability 0

    # ---- evaluation ----------------------------------------------------------------------------

    def outputs(self, logits: Any, batch: dict[str, Any]) -> list[Any]:
        scores = logits.float().cpu().numpy()
        mask = batch.get("choice_mask")
        counts = mask.sum(-1).tolist() if mask is not None else [scores.shape[1]] * len(scores)
        return [row[:n] for row, n in zip(scores, counts)]  # each question's real choices

    def predictions(self, outputs: list[Any], dataset: Any, examples: Any) -> np.ndarray:
        return np.array([int(np.argmax(o)) for o in outputs], dtype=np.int64)

    def subset(self, examples: Choices, indices: Sequence[int],
               groups: Sequence[int] | None = None) -> Choices:
        def pick(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[i] for i in indices]

        return dataclasses.replace(
            examples, contexts=pick(examples.contexts), choices=pick(examples.choices),
            choice_labels=pick(examples.choice_labels), labels=pick(examples.labels),
            ids=pick(examples.ids))

    def baseline(self, metrics: Sequence[str], train: Choices, dev: Choices) -> dict[str, float]:
        """Always the most frequent training answer position (the first, on a tie)."""
        from mtdnn.metrics import compute_metrics

        assert train.labels is not None
        majority = int(np.bincount(train.labels).argmax())
        return compute_metrics(metrics, np.full(len(dev), majority), dev.labels)

    # ---- prediction ----------------------------------------------------------------------------

    def examples_from_inputs(self, info: TaskInfo, inputs: Sequence[Any]) -> Choices:
        """Each input: (context, choices), the choices a list of strings, or of {"label",
        "text"} objects."""
        from mtdnn.errors import UserError
        from mtdnn.tasks.multiple_choice_rows import Choices, parse_choices

        problems, rows = [], []
        for i, x in enumerate(inputs):
            parsed = parse_choices([x[1]], ["choices"]) if isinstance(x, list | tuple) \
                and len(x) == 2 and isinstance(x[0], str) else \
                "expected (context, choices), e.g. ('Where is the sun?', ['sky', 'sea'])"
            if isinstance(parsed, str):
                problems.append(f"input {i}: {parsed}")
            else:
                rows.append((str(x[0]), *parsed))
        if problems:
            raise UserError("predict", problems)
        contexts, choices, labels = (list(c) for c in zip(*rows))
        return Choices(info.name, "predict", "predict", contexts, choices, labels, None,
                       [str(i) for i in range(len(rows))])

    def read_inputs(self, path: Any, columns: Sequence[str]) -> tuple[list[Any], list[str]]:
        from mtdnn.tasks.multiple_choice_rows import read_inputs

        return read_inputs(path, columns)

    def card_outputs(self, info: Any) -> str:
        return "the chosen choice (a score per choice)"

    def card_usage(self, info: Any, repo_id: str) -> tuple[list[str], str]:
        # transformers has no multiple-choice pipeline: the model is called directly.
        return (["import torch",
                 "from transformers import AutoModelForMultipleChoice, AutoTokenizer", "",
                 f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
                 f'model = AutoModelForMultipleChoice.from_pretrained("{repo_id}").eval()',
                 'question, choices = "Where do you keep milk?", ["fridge", "roof", "car"]',
                 "batch = tokenizer([question] * len(choices), choices, truncation=\"only_first\",",
                 '                  padding=True, return_tensors="pt")',
                 "with torch.no_grad():",
                 "    scores = model(**{k: v[None] for k, v in batch.items()}).logits[0]",
                 "print(choices[int(scores.argmax())])"],
                "Plain transformers: mtdnn is not needed (transformers has no multiple-choice "
                "pipeline; one score per choice).")

    def decode(self, info: TaskInfo, predictions: Any, outputs: list[Any], dataset: Any,
               examples: Choices) -> list[dict[str, Any]]:
        results = []
        for i, scores in enumerate(outputs):
            exp = np.exp(scores.astype(np.float64) - scores.max())
            best = int(predictions[i])
            names = examples.choice_labels[i]
            label = names[best] if names is not None else examples.choices[i][best]
            results.append({"choice": best, "label": label,
                            "scores": [float(s) for s in scores],
                            "probabilities": (exp / exp.sum()).tolist()})
        return results

    # ---- export --------------------------------------------------------------------------------

    def export_problem(self, model_type: str) -> str | None:
        if model_type in HEADS:
            return None
        return (f"cannot export a multiple_choice head for model_type {model_type!r}: an exact "
                f"mapping onto its own AutoModelForMultipleChoice head is known for "
                f"{', '.join(sorted(HEADS))}; export the encoder alone with --encoder-only and "
                "put a head on it yourself")

    def export(self, model: MultiTaskModel, task: str) -> Any:
        """`AutoModelForMultipleChoice` with the task's encoder and head; config.json names the one
        output per choice "score"."""
        from mtdnn.errors import UserError
        from mtdnn.export import build_with_head, task_config

        info, encoder = model.tasks[task], model.encoder_for(task)
        model_type = encoder.config.model_type
        dense, out_proj, activations = HEADS[model_type]
        if info.activation not in activations:
            raise UserError(f"task {task!r}", f"its head uses {info.activation!r}, but "
                            f"{model_type}'s multiple-choice head applies "
                            f"{' or '.join(activations)}; the export would not give the same "
                            "scores (export with --encoder-only)")
        config = task_config(encoder.config, info, ["score"], None)
        if model_type == "electra":  # the summary as our dense layer: hidden -> hidden, then GELU
            config.update(dict(summary_type="first", summary_use_proj=True,
                               summary_proj_to_labels=False, summary_activation=info.activation,
                               summary_first_dropout=info.dropout,
                               summary_last_dropout=info.dropout))
        head = model.heads[task]
        return build_with_head(model, task, "AutoModelForMultipleChoice", config,
                               {dense: head.dense, out_proj: head.out_proj})

    def export_inputs(self, model: MultiTaskModel, task: str) -> dict[str, Any]:
        from mtdnn.export import probe_batch

        # 2 questions of 3 choices; one choice right-padded
        return {k: v.view(2, 3, -1) for k, v in
                probe_batch(model.encoder_for(task).config, rows=6).items()}


class ChoiceCollator:
    """Questions -> a (B, k, T) batch through transformers' DataCollatorForMultipleChoice, which
    needs every question to have k choices and a label: a question with fewer choices is padded
    with copies of its first (no longer sequence, no empty attention), masked by `choice_mask`
    (B, k); questions without an answer get a placeholder label, dropped again."""

    def __init__(self, tokenizer: Any):
        from transformers import DataCollatorForMultipleChoice

        self.inner = DataCollatorForMultipleChoice(tokenizer)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        counts = [len(r["input_ids"]) for r in rows]
        k = max(counts)
        padded = [{**{c: [*r[c], *[r[c][0]] * (k - n)] for c in ("input_ids", "token_type_ids")
                      if c in r}, "labels": r.get("labels", 0)} for r, n in zip(rows, counts)]
        batch = dict(self.inner(padded))
        if "labels" not in rows[0]:
            del batch["labels"]
        batch["choice_mask"] = torch.arange(k)[None, :] < torch.tensor(counts)[:, None]
        return batch
