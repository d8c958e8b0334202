"""Tests of tokenization (mtdnn/features.py): listwise ranking groups, the tokenized columns, the
check that a ranking training split has something to learn, and the on-disk cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mtdnn.data import DataError, Rows
from mtdnn.features import ranking_groups, tokenize

# --- ranking groups ------------------------------------------------------------------------------


def ranking_rows(query_ids: list[int], labels: list[int]) -> Rows:
    n = len(query_ids)
    return Rows(task="r", split="train", where="mem", text_a=[f"q{q}" for q in query_ids],
                text_b=[f"c{i}" for i in range(n)], labels=labels, ids=[str(i) for i in range(n)],
                query_ids=query_ids)


def test_ranking_groups_by_hand():
    #        row:  0  1  2  3  4  5  6  7  8  9 10 11
    query_ids = [0, 1, 0, 0, 2, 0, 1, 0, 1, 3, 0, 2]
    labels = [0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0]
    # query 0: positive 2, negatives 0 3 5 7 10; query 1: positives 1 6, negative 8;
    # query 2: no positive; query 3: no negative.
    rows = ranking_rows(query_ids, labels)
    assert ranking_groups(rows, max_candidates=3) == [
        [2, 0, 3], [2, 5, 7], [2, 10],
        [1, 8], [6, 8],
    ]
    assert ranking_groups(rows, max_candidates=8) == [[2, 0, 3, 5, 7, 10], [1, 8], [6, 8]]
    assert ranking_groups(rows, max_candidates=2) == [
        [2, 0], [2, 3], [2, 5], [2, 7], [2, 10], [1, 8], [6, 8]]


def test_ranking_groups_empty_without_signal():
    assert ranking_groups(ranking_rows([0, 0, 1], [1, 1, 0]), 4) == []


# --- tokenization --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(minilm_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


class CountingTokenizer:
    """Forwards to a tokenizer and counts the calls that tokenize."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tokenizer(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __getattr__(self, name: str):
        return getattr(self.tokenizer, name)


def pair_rows(labels: list | None = (1, 0, 1)) -> Rows:
    return Rows(task="p", split="dev", where="mem", text_a=["a cat sat", "short", "x " * 100],
                text_b=["on the mat", "yes", "y"], labels=None if labels is None else list(labels),
                ids=["0", "1", "2"])


def test_tokenize_columns_lengths_and_truncation(tokenizer):
    rows = pair_rows()
    ds = tokenize(rows, tokenizer, 16, for_training=False, use_cache=False)
    assert set(ds.column_names) == {"input_ids", "token_type_ids", "length", "labels", "index"}
    assert ds["index"] == [0, 1, 2]
    assert ds["labels"] == [1, 0, 1]
    for i, (a, b) in enumerate(zip(rows.text_a, rows.text_b, strict=True)):
        want = tokenizer(a, b, truncation=True, max_length=16)
        assert ds[i]["input_ids"] == want["input_ids"]
        assert ds[i]["token_type_ids"] == want["token_type_ids"]
        assert ds[i]["length"] == len(ds[i]["input_ids"])
    assert ds["length"][2] == 16  # truncated
    assert ds["length"][0] < 16 and ds[0]["input_ids"][-1] == tokenizer.sep_token_id
    single = Rows(task="s", split="test", where="mem", text_a=["one two"], text_b=None,
                  labels=None, ids=["0"])
    ds = tokenize(single, tokenizer, 16, for_training=False, use_cache=False)
    assert "labels" not in ds.column_names
    assert ds[0]["input_ids"] == tokenizer("one two")["input_ids"]


def test_tokenize_ranking_training_rows_are_groups(tokenizer):
    rows = ranking_rows([0, 0, 0, 1, 1], [0, 1, 0, 0, 1])
    flat = tokenize(rows, tokenizer, 16, for_training=False, use_cache=False)
    assert len(flat) == 5 and flat["labels"] == [0, 1, 0, 0, 1]
    ds = tokenize(rows, tokenizer, 16, for_training=True, max_candidates=2, use_cache=False)
    groups = ranking_groups(rows, 2)
    assert groups == [[1, 0], [1, 2], [4, 3]]
    assert len(ds) == 3
    assert ds["labels"] == [0, 0, 0]  # the relevant candidate comes first
    assert ds["index"] == [1, 1, 4]
    for row, group in zip(ds, groups, strict=True):
        assert row["input_ids"] == [flat[i]["input_ids"] for i in group]
        assert row["token_type_ids"] == [flat[i]["token_type_ids"] for i in group]
        assert row["length"] == sum(flat[i]["length"] for i in group)
    unlabelled = dataclasses.replace(rows, labels=None)
    with pytest.raises(DataError, match="tasks.r: ranking training rows need labels"):
        tokenize(unlabelled, tokenizer, 16, for_training=True, use_cache=False)


def test_tokenize_ranking_training_rows_without_groups_fail(tokenizer):
    # Rows made without read_split (which reports this first) still never train on nothing.
    rows = ranking_rows([0, 0, 1], [1, 1, 0])
    with pytest.raises(DataError) as e:
        tokenize(rows, tokenizer, 16, for_training=True, use_cache=False)
    assert (e.value.source, e.value.problems) == ("mem", [
        "tasks.r: no query has both a relevant and an irrelevant candidate (relevance seen, row "
        "counts: {0: 1, 1: 2}), so listwise training learns nothing (check "
        "tasks.r.positive_label, or the rows)"])
    assert len(tokenize(rows, tokenizer, 16, for_training=False, use_cache=False)) == 3


def test_tokenize_cache_is_reused(tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MTDNN_CACHE", str(tmp_path / "cache"))
    counting = CountingTokenizer(tokenizer)
    first = tokenize(pair_rows(), counting, 16, for_training=False)
    assert counting.calls == 1
    files = sorted((tmp_path / "cache" / "tokenized").glob("p-dev-*.arrow"))
    assert len(files) == 1
    second = tokenize(pair_rows(), counting, 16, for_training=False)
    assert counting.calls == 1  # loaded, not tokenized again
    assert [f["filename"] for f in second.cache_files] == [str(files[0])]
    assert second["input_ids"] == first["input_ids"]
    # Another max_len or other labels: another file.
    third = tokenize(pair_rows(), counting, 8, for_training=False)
    assert counting.calls == 2 and max(third["length"]) == 8
    tokenize(pair_rows((0, 0, 0)), counting, 16, for_training=False)
    assert counting.calls == 3
    assert len(list((tmp_path / "cache" / "tokenized").glob("p-dev-*.arrow"))) == 3


def test_tokenize_without_cache_writes_nothing(tokenizer, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MTDNN_CACHE", str(tmp_path / "cache"))
    counting = CountingTokenizer(tokenizer)
    tokenize(pair_rows(), counting, 16, for_training=False, use_cache=False)
    tokenize(pair_rows(), counting, 16, for_training=False, use_cache=False)
    assert counting.calls == 2
    assert not (tmp_path / "cache").exists()
