"""Token classification: one tag per word (named entities, part of speech, chunks, slots).

Rows (`mtdnn.tasks.token_classification_rows`) are sentences from CoNLL-style files, JSON lines or
a Hub dataset; `labels:` is the tag set, its order the tag ids.

Features follow transformers' run_ner.py: the first sub-word of a word carries the word's tag, the
other sub-words -100 (no loss; the word is predicted from its first sub-word). A sentence longer
than max_seq_length becomes several features, windows of whole words, never a cut sentence; the
`index` and `word_ids` columns map each feature back to its sentence and words. Collation:
DataCollatorForTokenClassification. Head: `TokenHead` on every token, cross-entropy ignoring -100.
Predictions: the word-level tag sequences, the windows of a sentence joined back.

Metrics are seqeval's: entity_f1 / precision / recall (micro), by default with conlleval's
chunking, which reads IOB1 and IOB2 alike; `tag_scheme:` switches to seqeval's strict mode with
that scheme. token_accuracy is the fraction of words tagged right (POS, chunking). Baseline: every
word tagged with the most frequent training tag. Predict: {"tags", "spans"} per sentence. Export:
`AutoModelForTokenClassification`, served by `pipeline("token-classification",
aggregation_strategy="first")`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from mtdnn.tasks.base import TaskType
from mtdnn.tasks.token_classification_metrics import METRICS as METRICS
from mtdnn.tasks.token_classification_metrics import entity_f1 as entity_f1
from mtdnn.tasks.token_classification_metrics import entity_precision as entity_precision
from mtdnn.tasks.token_classification_metrics import entity_recall as entity_recall
from mtdnn.tasks.token_classification_metrics import entity_spans as entity_spans
from mtdnn.tasks.token_classification_metrics import token_accuracy as token_accuracy
from mtdnn.tasks.token_classification_rows import (
    TaggedSentences,
    file_format,
    read_inputs,
    read_split,
)

if TYPE_CHECKING:
    from mtdnn.model import MultiTaskModel, TaskInfo
    from mtdnn.spec import Spec, TaskSpec

# The tag prefixes each scheme allows besides O; None: conlleval's chunking (seqeval's default).
_PREFIXES = {None: "BIES", "IOB1": "BI", "IOB2": "BI", "IOE1": "IE", "IOE2": "IE",
             "IOBES": "BIES", "BILOU": "BILU"}
_EXPORTABLE = ("bert", "roberta", "xlm-roberta", "electra", "deberta", "deberta-v2")


def _bad_tags(tags: Sequence[str], scheme: str | None) -> list[str]:
    """The tags that are neither O nor PREFIX-TYPE with a prefix the scheme allows."""
    allowed = _PREFIXES[scheme]
    return [t for t in tags if t != "O" and not (len(t) > 2 and t[1] == "-" and t[0] in allowed)]


class TokenClassification(TaskType):
    name = "token_classification"
    default_metrics = ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")
    settings = ("tag_scheme",)
    file_formats = ("conll",)
    metric_functions = ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")
    pipeline_tag, pipeline_name = "token-classification", "Token Classification"
    label_noun = "tag"
    dense_head = False
    # Random training batches unless a task asks for grouping: on CoNLL-2003 length-grouped
    # batches cost accuracy at every budget measured, for about 2x speed (BENCHMARKS.md "Task
    # types", "Length grouping and token classification").
    groups_by_length = False

    # ---- spec ----------------------------------------------------------------------------------

    def check(self, task: TaskSpec, report: Any) -> None:
        key = f"tasks.{task.name}"
        for where, text in ((f"{key}.text", task.text), (f"{key}.hub.text",
                                                        task.hub and task.hub.text), *(
                (f"{key}.files.{s}.text", f.text) for s, f in task.files.items())):
            if text and len(text) != 1:
                report.fail(where, f"a token_classification task reads one column, its words "
                            f"(text: [tokens], or text: [0] in CoNLL files), got {list(text)}")
        if task.label is None:
            report.fail(f"{key}.label", "give the column of the tags (label: ner_tags, or label: "
                                        "3 in CoNLL files)")
        if len(set(task.labels)) < 2 or len(set(task.labels)) != len(task.labels):
            report.fail(f"{key}.labels", f"the tag set: at least 2 unique tags, in id order, e.g. "
                                         f"[O, B-PER, I-PER], got {list(task.labels)}")
        metrics = task.metrics or self.default_metrics
        if other := [m for m in metrics if m not in METRICS]:
            report.fail(f"{key}.metrics", f"{other} do not score tag sequences: use "
                                          f"{', '.join(METRICS)}")
        entities = [m for m in metrics if m.startswith("entity_")]
        if (entities or task.tag_scheme) and (bad := _bad_tags(task.labels, task.tag_scheme)):
            needs = f"tag_scheme {task.tag_scheme}" if task.tag_scheme else \
                f"the entity metrics {entities}"
            fix = "set tag_scheme: BILOU" if task.tag_scheme is None and \
                not _bad_tags(task.labels, "BILOU") else \
                "score tags that mark no entities (POS) with metrics: [token_accuracy]"
            report.fail(f"{key}.labels", f"{needs} read(s) tags O and "
                        f"{'-, '.join(_PREFIXES[task.tag_scheme])}-TYPE; {bad[:5]} are not "
                        f"({fix})")
        for split, source in task.files.items():
            fmt, text = file_format(source), source.text or task.text
            label = source.label if source.label is not None else task.label
            if fmt not in ("conll", "jsonl"):
                report.fail(f"{key}.files.{split}.format", f"{source.path}: a "
                            "token_classification task reads CoNLL-style files (.conll, .txt, or "
                            "format: conll) or JSON lines of word and tag lists (.jsonl)")
            elif fmt == "conll" and not all(isinstance(c, int) for c in (*text, label or 0)):
                report.fail(f"{key}.files.{split}", f"CoNLL columns are 0-based positions, not "
                            f"names: e.g. text: [0], label: 3 (got text: {list(text)}, label: "
                            f"{label!r})")

    # ---- rows and features ---------------------------------------------------------------------

    def read(self, spec: Spec, task: TaskSpec, split: str) -> TaggedSentences:
        return read_split(spec, task, split)

    def features(self, examples: TaggedSentences, tokenizer: Any, max_len: int, *,
                 for_training: bool, task: TaskSpec | None = None, use_cache: bool = True) -> Any:
        """Columns: input_ids, token_type_ids (when the tokenizer makes them), labels (tag id on
        each word's first sub-word, else -100; when the split has tags), word_ids (the word a
        token is the first sub-word of, else -1), index (the sentence), length."""
        from mtdnn.errors import UserError
        from mtdnn.features import content_key, map_cached, words_as_in_text

        if for_training and examples.labels is None:
            from mtdnn.errors import DataError

            raise DataError(examples.where, [f"tasks.{examples.task}: the {examples.split} split "
                                             "has no tags to train on"])
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(f"task {examples.task!r}", "token classification needs a fast "
                            "(Rust) tokenizer, which knows the word of each sub-word")
        table: dict[str, list[Any]] = {"tokens": examples.tokens,
                                       "index": list(range(len(examples)))}
        if examples.labels is not None:
            table["tags"] = examples.labels
        key = content_key(examples.task, examples.split, examples.where, tokenizer, max_len,
                          "token_classification/2", [examples.tokens, examples.labels or []])
        as_in_text = words_as_in_text(tokenizer)
        encode = partial(_encode, tokenizer=tokenizer, max_len=max_len, as_in_text=as_in_text)
        return map_cached(table, encode, key, f"{examples.task}-{examples.split}",
                          use_cache=use_cache, remove_columns=list(table))

    def collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer)

    # ---- model ---------------------------------------------------------------------------------

    def num_outputs(self, labels: Sequence[str]) -> int:
        return len(labels)

    def head(self, hidden_size: int, info: TaskInfo) -> Any:
        from mtdnn.heads import TokenHead

        return TokenHead(hidden_size, len(info.labels), info.dropout)

    def logits(self, model: MultiTaskModel, task: str, batch: dict[str, Any]) -> Any:
        hidden = model.hidden_states(task, batch["input_ids"], batch["attention_mask"],
                                     batch.get("token_type_ids"))  # (B, T, H)
        return model.heads[task](hidden)  # (B, T, tags)

    def loss(self, logits: Any, labels: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)

    def divergence(self, a: Any, b: Any, batch: dict[str, Any]) -> Any:
        from mtdnn.smart import sym_kl

        return sym_kl(a, b, where=batch["attention_mask"].bool())  # per token, over the tags

    # ---- evaluation and prediction -------------------------------------------------------------

    def outputs(self, logits: Any, batch: dict[str, Any]) -> list[Any]:
        """Each feature's logits over its own tokens, (length, tags)."""
        mask = batch["attention_mask"].bool().cpu()
        logits = logits.float().cpu()
        return [logits[i][mask[i]].numpy() for i in range(len(logits))]

    def predictions(self, outputs: list[Any], dataset: Any, examples: TaggedSentences
                    ) -> list[list[str]]:
        """The tag of each word (the argmax at its first sub-word), windows joined back."""
        tags: list[list[Any]] = [[None] * len(words) for words in examples.tokens]
        for out, i, word_ids in zip(outputs, dataset["index"], dataset["word_ids"]):
            best = out.argmax(-1)
            for position, w in enumerate(word_ids):
                if w >= 0:
                    tags[i][w] = examples.tag_names[best[position]]
        assert all(t is not None for s in tags for t in s), "a word lost its first sub-word"
        return tags

    def score(self, metrics: Sequence[str], predictions: Any, examples: TaggedSentences
              ) -> dict[str, float]:
        assert examples.labels is not None
        names = examples.tag_names
        references = [[names[t] for t in sentence] for sentence in examples.labels]
        return {m: METRICS[m](predictions, references, scheme=examples.tag_scheme)
                for m in metrics}

    def subset(self, examples: TaggedSentences, indices: Sequence[int],
               groups: Sequence[int] | None = None) -> TaggedSentences:
        def pick(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[i] for i in indices]

        return dataclasses.replace(examples, tokens=pick(examples.tokens),
                                   labels=pick(examples.labels), ids=pick(examples.ids))

    def baseline(self, metrics: Sequence[str], train: TaggedSentences, dev: TaggedSentences
                 ) -> dict[str, float]:
        """Every dev word tagged with the most frequent training tag (on CoNLL-2003: O for
        entities, NNP for POS, I-NP for chunks)."""
        assert train.labels is not None
        counts = Counter(t for sentence in train.labels for t in sentence)
        tag = dev.tag_names[counts.most_common(1)[0][0]]
        return self.score(metrics, [[tag] * len(words) for words in dev.tokens], dev)

    def examples_from_inputs(self, info: TaskInfo, inputs: Sequence[Any]) -> TaggedSentences:
        """Each input: a list of words, or a text (split on whitespace)."""
        from mtdnn.errors import UserError
        from mtdnn.records import show

        words = []
        for i, x in enumerate(inputs):
            if not isinstance(x, str) and not (isinstance(x, list | tuple) and
                                               all(isinstance(w, str) for w in x)):
                raise UserError("predict", f"task {info.name!r} takes a list of words or a text "
                                           f"per input; input {i} is {show(x)}")
            words.append(x.split() if isinstance(x, str) else list(x))
        return TaggedSentences(info.name, "predict", "predict", words, None,
                               [str(i) for i in range(len(words))], tuple(info.labels))

    def input_columns(self, info: TaskInfo) -> list[str]:
        column = info.text_columns[0] if info.text_columns else 0
        return [column if isinstance(column, str) else "tokens"]  # CoNLL positions: JSON key

    def read_inputs(self, path: Any, columns: Sequence[str]) -> tuple[list[Any], list[str]]:
        """JSON lines with a list of words (or a text) under `columns[0]`, a TSV/CSV text column
        split on whitespace, or a CoNLL-style file (the words of column `columns[0]` when it is a
        number, else of column 0)."""
        return read_inputs(path, columns)

    def decode(self, info: TaskInfo, predictions: Any, outputs: list[Any], dataset: Any,
               examples: TaggedSentences) -> list[dict[str, Any]]:
        """{"tags": one per word, "spans": the entities (tag sets of chunk tags only)}."""
        chunked = not _bad_tags(info.labels, "BILOU") or not _bad_tags(info.labels, None)
        return [{"tags": tags, **({"spans": entity_spans(words, tags)} if chunked else {})}
                for words, tags in zip(examples.tokens, predictions)]

    def card_inputs(self, info: Any) -> str:
        return "a sentence (its words)"

    def card_outputs(self, info: Any) -> str:
        return "a tag per word: " + ", ".join(f"`{x}`" for x in info.labels)

    def card_usage(self, info: TaskInfo, repo_id: str) -> tuple[list[str], str]:
        return (["from transformers import pipeline", "",
                 f'tagger = pipeline("token-classification", model="{repo_id}",',
                 '                  aggregation_strategy="first")',
                 'tagger("EU rejects German call to boycott British lamb .")'],
                'Plain transformers: mtdnn is not needed. `aggregation_strategy="first"` tags '
                "each word with the tag of its first sub-word, as mtdnn does; separate the words "
                "with spaces.")

    # ---- export --------------------------------------------------------------------------------

    def export(self, model: MultiTaskModel, task: str) -> Any:
        import copy

        from mtdnn.export import build_with_head

        info = model.tasks[task]
        config = copy.deepcopy(model.encoder_for(task).config)
        config.num_labels = len(info.labels)
        config.id2label = dict(enumerate(info.labels))
        config.label2id = {tag: i for i, tag in enumerate(info.labels)}
        config.architectures = None  # set again by save_pretrained from the class written
        if config.model_type not in ("deberta", "deberta-v2"):
            # training-time only; DeBERTa's token head takes the encoder's hidden_dropout_prob
            config.classifier_dropout = info.dropout
        return build_with_head(model, task, "AutoModelForTokenClassification", config,
                               {"classifier": model.heads[task].out_proj})

    def export_problem(self, model_type: str) -> str | None:
        if model_type in _EXPORTABLE:
            return None
        return (f"cannot export a token classification head for model_type {model_type!r} (known: "
                f"{', '.join(_EXPORTABLE)}); export the encoder alone with --encoder-only")

    def export_inputs(self, model: MultiTaskModel, task: str) -> dict[str, Any]:
        from mtdnn.export import probe_batch

        return probe_batch(model.encoder_for(task).config)


def _encode(batch: dict[str, list[Any]], tokenizer: Any, max_len: int, as_in_text: Any
            ) -> dict[str, list[Any]]:
    """Sentences -> features: one per sentence, or windows of whole words when it is too long;
    `as_in_text`: mtdnn.features.words_as_in_text(tokenizer)."""
    out: dict[str, list[Any]] = {k: [] for k in ("input_ids", "word_ids", "index", "length")}
    tags = batch.get("tags")
    room = max_len - tokenizer.num_special_tokens_to_add(pair=False)
    enc = tokenizer([as_in_text(w) for w in batch["tokens"]], is_split_into_words=True,
                    truncation=False)
    for i, words in enumerate(batch["tokens"]):
        counts = Counter(w for w in enc.word_ids(i) if w is not None)
        windows = [(0, {k: v[i] for k, v in enc.items()}, enc.word_ids(i))]
        if len(enc["input_ids"][i]) > max_len or len(counts) < len(words):
            if len(counts) < len(words) and tokenizer.unk_token is None:
                from mtdnn.errors import DataError

                raise DataError("tokenizer", [f"sentence {batch['index'][i]}: a word has no "
                                              "sub-word and the tokenizer has no unknown token"])
            # A word the tokenizer drops (a zero-width space, a control character) would have no
            # sub-word to carry its tag: it is read as the unknown token.
            words = [w if counts[j] else tokenizer.unk_token for j, w in enumerate(words)]
            windows = []
            for start, end in _windows([counts[j] or 1 for j in range(len(words))], room):
                # truncation only cuts the tail of a single word longer than a window
                window = tokenizer(as_in_text(words[start:end]), is_split_into_words=True,
                                   truncation=True, max_length=max_len)
                windows.append((start, window, window.word_ids()))
        for start, e, wids in windows:
            # the first sub-word of each word, by its index in the sentence; -1 elsewhere
            word_ids = [start + w if w is not None and w != p else -1
                        for w, p in zip(wids, [None, *wids])]
            for k in ("input_ids", "token_type_ids"):
                if k in e:
                    out.setdefault(k, []).append(e[k])
            out["word_ids"].append(word_ids)
            out["index"].append(batch["index"][i])
            out["length"].append(len(e["input_ids"]))
            if tags is not None:
                out.setdefault("labels", []).append([tags[i][w] if w >= 0 else -100
                                                     for w in word_ids])
    return out


def _windows(sizes: list[int], room: int) -> list[tuple[int, int]]:
    """Consecutive (start, end) word ranges of at most `room` sub-words each (a longer word
    alone)."""
    windows, start, used = [], 0, 0
    for j, size in enumerate(sizes):
        if used and used + size > room:
            windows.append((start, j))
            start, used = j, 0
        used += size
    windows.append((start, len(sizes)))
    return windows
