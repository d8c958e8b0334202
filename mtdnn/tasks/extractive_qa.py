"""Extractive question answering (SQuAD v1.1 and v2.0): the answer is a span of the context.

Rows (`mtdnn.tasks.extractive_qa_rows`): SQuAD JSON (v1.1 and v2.0), JSON lines or a Hub
dataset such as rajpurkar/squad; one example per question, its gold answers checked against the
context. A question without answers (v2.0's is_impossible) needs `allow_no_answer: true`.

Features follow transformers' run_qa.py: question + context, the context cut into windows of
max_seq_length tokens overlapping by doc_stride tokens. A training window's labels are the first
answer's start and end tokens, or the [CLS] index twice when the answer is not inside it; an
evaluation window keeps its example and the character offsets of its context tokens.

Head: a linear layer on every token (start and end logits); loss: the mean of the start and end
cross-entropies. Decoding follows utils_qa.postprocess_qa_predictions: the n_best start and end
tokens of every window, spans inside the context of at most max_answer_length tokens, the best sum
of logits over all windows; with allow_no_answer, "" when the null score ([CLS] start + end, the
minimum over windows) beats the best span by more than null_threshold. Metrics: the official
SQuAD scripts' exact match and token F1, and v2.0's HasAns / NoAns splits. Baseline: the first k
words of the context (k: the median length of the training answers), or "" for every question
when most training questions have no answer. Export: `AutoModelForQuestionAnswering`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mtdnn.errors import DataError, UserError
from mtdnn.records import fail, show
from mtdnn.tasks.base import TaskType
from mtdnn.tasks.extractive_qa_decode import Answer as Answer
from mtdnn.tasks.extractive_qa_decode import best_answers

# The metrics are looked up by name in this module (mtdnn.metrics: `metric_functions`).
from mtdnn.tasks.extractive_qa_metrics import exact_match as exact_match
from mtdnn.tasks.extractive_qa_metrics import has_answer_exact as has_answer_exact
from mtdnn.tasks.extractive_qa_metrics import has_answer_f1 as has_answer_f1
from mtdnn.tasks.extractive_qa_metrics import no_answer_exact as no_answer_exact
from mtdnn.tasks.extractive_qa_metrics import normalize_answer as normalize_answer
from mtdnn.tasks.extractive_qa_metrics import squad_f1 as squad_f1
from mtdnn.tasks.extractive_qa_rows import QAExamples, QASettings, read_examples

if TYPE_CHECKING:
    from mtdnn.model import MultiTaskModel, TaskInfo
    from mtdnn.spec import Spec, TaskSpec

V2_METRICS = ("has_answer_exact", "has_answer_f1", "no_answer_exact")
# Architectures whose XForQuestionAnswering is `qa_outputs` (Linear(H, 2)) on the last hidden
# state, as our head: checked against transformers' modeling code and by the export tests.
QA_EXPORTS = ("bert", "roberta", "xlm-roberta", "electra", "deberta", "deberta-v2")


# --------------------------------------------------------------------------------------------------
# Features


def _answer_tokens(sequence_ids: list[int | None], offsets: list[tuple[int, int]], start: int,
                   end: int, cls: int) -> list[int]:
    """[start token, end token] of the characters [start, end) in one window, or [cls, cls] when
    the window does not hold them all (run_qa.py; bounded by the context's last token)."""
    context = [i for i, s in enumerate(sequence_ids) if s == 1]
    if start < 0 or not context or offsets[context[0]][0] > start or \
            offsets[context[-1]][1] < end:
        return [cls, cls]
    first = max(i for i in context if offsets[i][0] <= start)
    last = min(i for i in context if offsets[i][1] >= end)
    return [first, last]


def _check_fit(examples: QAExamples, tokenizer: Any, max_len: int) -> None:
    """Each window holds the question and more than doc_stride context tokens (else the tokenizer
    cannot advance through the context: it panics)."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"task {examples.task!r}", "extractive_qa needs a fast tokenizer (its "
                        "offset mappings place answers in the context)")
    stride = examples.settings.doc_stride
    room = max_len - tokenizer.num_special_tokens_to_add(pair=True) - stride - 1
    if room < 1:
        fail(examples.where, [f"tasks.{examples.task}.doc_stride {stride} leaves no room for a "
                              f"question in windows of max_seq_length {max_len}: the windows "
                              f"overlap by doc_stride tokens, so set doc_stride well below "
                              f"{max_len} (run_qa.py: 128 of 384)"])
    lengths = [len(x) for x in tokenizer(examples.questions, add_special_tokens=False)["input_ids"]]
    fix = (f"raise max_seq_length ({max_len}), lower tasks.{examples.task}.doc_stride ({stride}) "
           "or shorten the question")
    fail(examples.where, [f"question {show(examples.ids[i])}: {n} tokens, but a window of "
                          f"max_seq_length {max_len} that overlaps the next by doc_stride {stride} "
                          f"holds at most {room} question tokens: {fix}"
                          for i, n in enumerate(lengths) if n > room])


def _mask_padding(logits: Any, attention_mask: Any) -> Any:
    """Start and end logits with padding at the dtype's lowest value: padding is never an answer,
    so neither the loss nor decoding depends on it. (With a task vector, RoBERTa-family encoders
    get `inputs_embeds` and number padding positions on, unlike the export given `input_ids`:
    only padding differs, and it is masked on both sides.)"""
    import torch

    return logits.masked_fill(attention_mask[..., None] == 0, torch.finfo(logits.dtype).min)


# --------------------------------------------------------------------------------------------------
# The task type


class ExtractiveQA(TaskType):
    name = "extractive_qa"
    default_metrics = ("squad_f1", "exact_match")
    settings = ("doc_stride", "max_answer_length", "n_best", "allow_no_answer", "null_threshold")
    file_formats = ("squad",)
    metric_functions = ("exact_match", "squad_f1", "has_answer_exact", "has_answer_f1",
                        "no_answer_exact")
    pipeline_tag, pipeline_name = "question-answering", "Question Answering"
    label_noun = "answer"
    dense_head = False

    # ---- spec ----------------------------------------------------------------------------------

    def check(self, task: TaskSpec, report: Any) -> None:
        key = f"tasks.{task.name}"
        if len(task.text) != 2:
            report.fail(f"{key}.text", f"an extractive_qa task reads two columns, [question, "
                                       f"context], got {len(task.text)}")
        if task.labels:
            report.fail(f"{key}.labels", "extractive_qa tasks take no label list (an answer is a "
                                         "span of the context): remove it")
        if task.label is None:
            report.fail(f"{key}.label", "name the answers column, e.g. label: answers")
        for setting, low in (("doc_stride", 0), ("max_answer_length", 1), ("n_best", 1)):
            if getattr(task, setting) < low:
                report.fail(f"{key}.{setting}", f"must be >= {low}, got {getattr(task, setting)}")
        if task.null_threshold != 0 and not task.allow_no_answer:
            report.fail(f"{key}.null_threshold", "is read only with allow_no_answer: true (SQuAD "
                        "v2.0): set allow_no_answer, or remove null_threshold")
        if (v2 := [m for m in task.metrics if m in V2_METRICS]) and not task.allow_no_answer:
            report.fail(f"{key}.metrics", f"{v2} split the questions by whether they have an "
                        "answer, and without allow_no_answer every question has one: set "
                        "allow_no_answer: true, or drop them")
        for split, source in task.files.items():
            if source.format in ("tsv", "csv", "conll"):
                report.fail(f"{key}.files.{split}.format", f"{source.format!r}: extractive_qa "
                            "reads SQuAD JSON (squad) or JSON lines (jsonl), or auto")

    def num_outputs(self, labels: Sequence[str]) -> int:
        return 2  # start and end logits

    # ---- rows and features ---------------------------------------------------------------------

    def read(self, spec: Spec, task: TaskSpec, split: str) -> QAExamples:
        return read_examples(spec, task, split)

    def features(self, examples: QAExamples, tokenizer: Any, max_len: int, *, for_training: bool,
                 task: TaskSpec | None = None, use_cache: bool = True) -> Any:
        """Windows of `examples` (their own settings: the task's, or a checkpoint's). Columns:
        input_ids, token_type_ids (when the tokenizer makes them), length, example, and for
        training labels ([start, end] token), else offset_mapping (context tokens; None
        elsewhere) and cls_index."""
        from mtdnn.features import content_key, map_cached

        if for_training and examples.answers is None:
            raise DataError(examples.where, [f"tasks.{examples.task}: the {examples.split} split "
                                             "has no answers to train on"])
        _check_fit(examples, tokenizer, max_len)
        stride = examples.settings.doc_stride
        table: dict[str, list[Any]] = {"question": examples.questions,
                                       "context": examples.contexts,
                                       "example": list(range(len(examples)))}
        if for_training:  # run_qa trains on the first gold answer
            assert examples.answers is not None
            first = [a[0] if a else ("", -1) for a in examples.answers]
            table["answer_start"] = [s for _, s in first]
            table["answer_end"] = [s + len(t) for t, s in first]
        key = content_key(examples.task, examples.split, examples.where, tokenizer, max_len,
                          f"extractive_qa,training={for_training},stride={stride}",
                          list(table.values()))
        cls_id = tokenizer.cls_token_id

        def encode(batch: dict[str, list]) -> dict[str, list]:
            enc = tokenizer(batch["question"], batch["context"], truncation="only_second",
                            max_length=max_len, stride=stride, return_overflowing_tokens=True,
                            return_offsets_mapping=True)
            rows = enc["overflow_to_sample_mapping"]
            out: dict[str, list] = {"input_ids": enc["input_ids"],
                                    "length": [len(x) for x in enc["input_ids"]],
                                    "example": [batch["example"][r] for r in rows]}
            if "token_type_ids" in enc:
                out["token_type_ids"] = enc["token_type_ids"]
            cls = [ids.index(cls_id) if cls_id in ids else 0 for ids in enc["input_ids"]]
            if for_training:
                out["labels"] = [_answer_tokens(enc.sequence_ids(i), offsets,
                                                batch["answer_start"][r], batch["answer_end"][r],
                                                cls[i])
                                 for i, (r, offsets) in enumerate(zip(rows,
                                                                      enc["offset_mapping"]))]
            else:
                out["offset_mapping"] = [
                    [list(o) if s == 1 else None for o, s in zip(offsets, enc.sequence_ids(i))]
                    for i, offsets in enumerate(enc["offset_mapping"])]
                out["cls_index"] = cls
            return out

        return map_cached(table, encode, key, f"{examples.task}-{examples.split}",
                          use_cache=use_cache, remove_columns=list(table))

    def collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    # ---- model ---------------------------------------------------------------------------------

    def head(self, hidden_size: int, info: TaskInfo) -> Any:
        from mtdnn.heads import TokenHead

        return TokenHead(hidden_size, 2, info.dropout)

    def logits(self, model: MultiTaskModel, task: str, batch: dict[str, Any]) -> Any:
        hidden = model.hidden_states(task, batch["input_ids"], batch["attention_mask"],
                                     batch.get("token_type_ids"))  # (B, T, H)
        return _mask_padding(model.heads[task](hidden), batch["attention_mask"])  # (B, T, 2)

    def loss(self, logits: Any, labels: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        logits = logits.float()  # padding is masked: the loss does not depend on it
        return (F.cross_entropy(logits[..., 0], labels[:, 0]) +
                F.cross_entropy(logits[..., 1], labels[:, 1])) / 2

    def divergence(self, a: Any, b: Any, batch: dict[str, Any]) -> Any:
        from mtdnn.smart import sym_kl

        # the start and the end distributions over the window's tokens (padding masked)
        return (sym_kl(a[..., 0], b[..., 0]) + sym_kl(a[..., 1], b[..., 1])) / 2

    # ---- evaluation and prediction -------------------------------------------------------------

    def outputs(self, logits: Any, batch: dict[str, Any]) -> list[Any]:
        # Each window's (T, 2) logits without its padding.
        mask = batch["attention_mask"].bool()
        return [row[keep].float().cpu().numpy() for row, keep in zip(logits, mask)]

    def predictions(self, outputs: list[Any], dataset: Any, examples: QAExamples) -> list[str]:
        return [a.text for a in best_answers(outputs, dataset, examples)]

    def subset(self, examples: QAExamples, indices: Sequence[int],
               groups: Sequence[int] | None = None) -> QAExamples:
        def pick(values: list[Any]) -> list[Any]:
            return [values[i] for i in indices]

        return dataclasses.replace(
            examples, questions=pick(examples.questions), contexts=pick(examples.contexts),
            ids=pick(examples.ids),
            answers=None if examples.answers is None else pick(examples.answers))

    def baseline(self, metrics: Sequence[str], train: QAExamples, dev: QAExamples
                 ) -> dict[str, float]:
        from mtdnn.metrics import compute_metrics

        assert train.answers is not None
        golds = [a[0][0] for a in train.answers if a]
        if dev.settings.allow_no_answer and 2 * len(golds) < len(train):
            predictions = [""] * len(dev)
        else:
            k = max(1, round(float(np.median([len(g.split()) for g in golds])))) if golds else 1
            predictions = [" ".join(c.split()[:k]) for c in dev.contexts]
        return compute_metrics(metrics, predictions, dev.labels)

    def examples_from_inputs(self, info: TaskInfo, inputs: Sequence[Any]) -> QAExamples:
        """(question, context) pairs or {"question", "context"} dicts -> examples with the task's
        settings as the checkpoint keeps them."""
        pairs, problems = [], []
        for i, x in enumerate(inputs):
            pair = (x.get("question"), x.get("context")) if isinstance(x, dict) else \
                tuple(x) if isinstance(x, list | tuple) else ()
            if len(pair) != 2 or not all(isinstance(v, str) for v in pair):
                problems.append(f"input {i}: {show(x)} is not a (question, context) pair of "
                                'texts, nor {"question": ..., "context": ...}')
            pairs.append(pair)
        if problems:
            raise UserError("predict", problems)
        return QAExamples(task=info.name, split="predict", where="predict",
                          questions=[q.strip() for q, _ in pairs], contexts=[c for _, c in pairs],
                          answers=None, ids=[str(i) for i in range(len(pairs))],
                          settings=QASettings.of(info.settings))

    def card_outputs(self, info: Any) -> str:
        return "an answer span of the context" + (" (or none)" if info.settings.get(
            "allow_no_answer") else "")

    def card_usage(self, info: Any, repo_id: str) -> tuple[list[str], str]:
        # transformers 5 has no question-answering pipeline: the model is called directly.
        return (["import torch",
                 "from transformers import AutoModelForQuestionAnswering, AutoTokenizer", "",
                 f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
                 f'model = AutoModelForQuestionAnswering.from_pretrained("{repo_id}").eval()',
                 'question, context = "Who wrote it?", "The book was written by Ann Lee."',
                 "batch = tokenizer(question, context, truncation=\"only_second\", "
                 "return_tensors=\"pt\")",
                 "with torch.no_grad():",
                 "    out = model(**batch)",
                 "start, end = int(out.start_logits.argmax()), int(out.end_logits.argmax())",
                 "print(tokenizer.decode(batch[\"input_ids\"][0, start:end + 1]))"],
                "Plain transformers: mtdnn is not needed. This greedy start/end is a sketch: "
                "mtdnn decodes the n best starts and ends of every window of a long context.")

    def decode(self, info: TaskInfo, predictions: Any, outputs: list[Any], dataset: Any,
               examples: QAExamples) -> list[dict[str, Any]]:
        return [{"answer": a.text, "score": a.score, "start": a.start, "end": a.end}
                for a in best_answers(outputs, dataset, examples)]

    # ---- export --------------------------------------------------------------------------------

    def export(self, model: MultiTaskModel, task: str) -> Any:
        import copy

        from mtdnn.export import build_with_head

        config = copy.deepcopy(model.encoder_for(task).config)
        config.num_labels, config.architectures = 2, None
        return build_with_head(model, task, "AutoModelForQuestionAnswering", config,
                               {"qa_outputs": model.heads[task].out_proj})

    def export_problem(self, model_type: str) -> str | None:
        if model_type in QA_EXPORTS:
            return None
        return (f"cannot export an extractive_qa head for model_type {model_type!r}: its "
                f"question-answering model is known to be qa_outputs on the last layer for "
                f"{', '.join(QA_EXPORTS)}; export the encoder alone with --encoder-only")

    def export_inputs(self, model: MultiTaskModel, task: str) -> dict[str, Any]:
        from mtdnn.export import probe_batch

        return probe_batch(model.encoder_for(task).config)

    def exported_logits(self, exported: Any, batch: dict[str, Any]) -> Any:
        import torch

        out = exported(**batch)
        return _mask_padding(torch.stack([out.start_logits, out.end_logits], dim=-1),
                             batch["attention_mask"])  # (B, T, 2)
