"""Checked rows (`mtdnn.data.Rows`) -> tokenized `datasets.Dataset`s, cached on disk by content.

Every split becomes `input_ids`, `token_type_ids` (when the tokenizer makes them), `length`,
`labels` (when the split has labels) and `index` (the row's position in its `Rows`). A ranking
training split holds one listwise group per row instead: a relevant candidate followed by
irrelevant candidates of the same query (`ranking_groups`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from mtdnn.data import DataError, Rows


def ranking_groups(rows: Rows, max_candidates: int) -> list[list[int]]:
    """Training groups for listwise ranking: each group is one relevant row followed by up to
    `max_candidates - 1` irrelevant rows of the same query. A query's irrelevant rows are spread
    over as many groups as needed, so every candidate is seen each epoch, without random sampling.
    Queries with no relevant or no irrelevant row carry no listwise signal and are left out."""
    assert rows.labels is not None and rows.query_ids is not None
    by_query: dict[int, tuple[list[int], list[int]]] = {}
    for i, (q, rel) in enumerate(zip(rows.query_ids, rows.labels)):
        by_query.setdefault(q, ([], []))[0 if rel else 1].append(i)
    groups = []
    step = max_candidates - 1
    for positives, negatives in by_query.values():
        for p in positives:
            for start in range(0, len(negatives), step):
                groups.append([p, *negatives[start:start + step]])
    return groups


def _cache_key(rows: Rows, tokenizer: Any, max_len: int, extra: str) -> str:
    h = hashlib.sha256()
    meta = [rows.task, rows.split, rows.where, len(rows), max_len, extra,
            type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer),
            # settings such as lower-casing change the ids without changing the vocabulary
            json.dumps(getattr(tokenizer, "init_kwargs", {}), sort_keys=True, default=str)]
    h.update(json.dumps(meta).encode())
    for col in (rows.text_a, rows.text_b or [], [str(x) for x in rows.labels or []]):
        h.update("\x1f".join(col).encode())
    return h.hexdigest()[:24]


def cache_dir() -> Path:
    """Where tokenized splits are cached: $MTDNN_CACHE, else $HF_HOME/mtdnn, else ~/.cache/mtdnn."""
    if os.environ.get("MTDNN_CACHE"):
        return Path(os.environ["MTDNN_CACHE"])
    hf_home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    return Path(hf_home) / "mtdnn"


def tokenize(rows: Rows, tokenizer: Any, max_len: int, *, for_training: bool,
             max_candidates: int = 8, use_cache: bool = True):
    """Tokenizes one split into a `datasets.Dataset` (cached on disk by content).

    Columns: `input_ids`, `token_type_ids` (when the tokenizer makes them), `length` (tokens),
    `labels` (when the split has labels), `index` (the row's position in `rows`). Ranking training
    splits hold one listwise group per row: `input_ids` is then a list of candidates and `labels`
    the position of the relevant one (always 0).

    Raises:
        DataError: a ranking training split without labels, or without any query that has both a
            relevant and an irrelevant candidate (it would train nothing).
    """
    import datasets

    grouped = for_training and rows.query_ids is not None
    if grouped:
        if rows.labels is None:
            raise DataError(rows.where, [f"tasks.{rows.task}: ranking training rows need labels"])
        # Checked before tokenizing: without a group the task would silently train nothing.
        groups = ranking_groups(rows, max_candidates)
        if not groups:
            seen = dict(sorted(Counter(rows.labels).items()))
            raise DataError(rows.where, [
                f"tasks.{rows.task}: no query has both a relevant and an irrelevant candidate "
                f"(relevance seen, row counts: {seen}), so listwise training learns nothing "
                f"(check tasks.{rows.task}.positive_label, or the rows)"])
    table: dict[str, list[Any]] = {"text_a": rows.text_a, "index": list(range(len(rows)))}
    if rows.text_b is not None:
        table["text_b"] = rows.text_b
    if rows.labels is not None:
        table["labels"] = rows.labels
    ds = datasets.Dataset.from_dict(table)
    key = _cache_key(rows, tokenizer, max_len, f"grouped={grouped},{max_candidates}")
    path = cache_dir() / "tokenized" / f"{rows.task}-{rows.split}-{key}.arrow"
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        pair = (batch["text_a"], batch["text_b"]) if "text_b" in batch else (batch["text_a"],)
        enc = tokenizer(*pair, truncation=True, max_length=max_len)
        out = {"input_ids": enc["input_ids"], "length": [len(x) for x in enc["input_ids"]]}
        if "token_type_ids" in enc:
            out["token_type_ids"] = enc["token_type_ids"]
        return out

    ds = ds.map(encode, batched=True, batch_size=2000, remove_columns=[
        c for c in ("text_a", "text_b") if c in ds.column_names],
        cache_file_name=str(path) if use_cache else None, load_from_cache_file=use_cache,
        new_fingerprint=key, desc=f"tokenizing {rows.task}/{rows.split}")
    if not grouped:
        return ds
    columns = {c: ds[c] for c in ("input_ids", "token_type_ids") if c in ds.column_names}
    lengths = ds["length"]
    table = {c: [[col[i] for i in g] for g in groups] for c, col in columns.items()}
    table["length"] = [sum(lengths[i] for i in g) for g in groups]
    table["labels"] = [0] * len(groups)  # the relevant candidate is first in every group
    table["index"] = [g[0] for g in groups]
    table["members"] = groups  # the rows of each group (distillation gathers their targets)
    return datasets.Dataset.from_dict(table)


def content_key(task: str, split: str, where: str, tokenizer: Any, max_len: int, extra: str,
                columns: list[list[Any]]) -> str:
    """A cache key over everything that decides a split's features: the rows' content (any JSON-able
    values), the tokenizer and its settings, max_len, and `extra` (the task type's settings)."""
    h = hashlib.sha256()
    meta = [task, split, where, max_len, extra, type(tokenizer).__name__, tokenizer.name_or_path,
            len(tokenizer), json.dumps(getattr(tokenizer, "init_kwargs", {}), sort_keys=True,
                                       default=str)]
    h.update(json.dumps(meta).encode())
    for col in columns:
        h.update(json.dumps(col, default=str).encode())
    return h.hexdigest()[:24]


def words_as_in_text(tokenizer: Any) -> Any:
    """A function for words given to `tokenizer(..., is_split_into_words=True)`, so that each is
    tokenized as it is inside running text. A byte-level BPE tokenizer (RoBERTa, GPT-2, DeBERTa's
    BPE variants) marks a word's leading space in its sub-words ("Ġrejects"); without
    `add_prefix_space` it tokenizes a lone word as a text's first word ("rej"), sub-words the
    pretrained model rarely saw mid-sentence. The Hugging Face NER example loads such tokenizers
    with `add_prefix_space=True`; a space before each word gives the same ids without changing
    the tokenizer other tasks share. WordPiece and SentencePiece words are left as they are."""
    try:
        pre = json.loads(tokenizer.backend_tokenizer.pre_tokenizer.__getstate__())
    except (AttributeError, TypeError, ValueError):  # no Rust tokenizer, or no pre-tokenizer
        return lambda words: words
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    if any(step.get("type") == "ByteLevel" and not step.get("add_prefix_space")
           for step in steps):
        return lambda words: [" " + w for w in words]
    return lambda words: words


def map_cached(table: dict[str, list[Any]], encode: Any, key: str, name: str, *,
               use_cache: bool = True, remove_columns: list[str] | None = None) -> Any:
    """`datasets.Dataset.from_dict(table).map(encode, batched=True)`, cached on disk under `key`
    (see `content_key`); `name` ("task-split") names the cache file and the progress line."""
    import datasets

    ds = datasets.Dataset.from_dict(table)
    path = cache_dir() / "tokenized" / f"{name}-{key}.arrow"
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
    return ds.map(encode, batched=True, batch_size=1000, remove_columns=remove_columns or [],
                  cache_file_name=str(path) if use_cache else None,
                  load_from_cache_file=use_cache, new_fingerprint=key,
                  desc=f"tokenizing {name.replace('-', '/', 1)}")

