"""Tests of dynamic padding (mtdnn/collate.py): plain rows and listwise ranking groups."""

from __future__ import annotations

import datasets
import pytest
import torch

from mtdnn.collate import Collator

PAD = 99  # not 0, so that padding is told apart from token type 0 and from the attention mask


def test_pads_to_the_longest_in_the_batch():
    rows = [{"input_ids": [1, 2, 3], "token_type_ids": [0, 0, 1], "labels": 1, "length": 3},
            {"input_ids": [4, 5], "token_type_ids": [0, 1], "labels": 0, "length": 2},
            {"input_ids": [6], "token_type_ids": [1], "labels": 2, "length": 1}]
    batch = Collator(PAD)(rows)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 5, PAD], [6, PAD, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1], [0, 1, 0], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0, 2]
    for key in ("input_ids", "attention_mask", "token_type_ids", "labels"):
        assert batch[key].dtype == torch.long, key


def test_float_labels_stay_float_and_rows_without_token_types():
    rows = [{"input_ids": [1, 2], "labels": 4.5}, {"input_ids": [3, 4, 5, 6], "labels": 0.0}]
    batch = Collator(0)(rows)
    assert "token_type_ids" not in batch
    assert batch["labels"].dtype == torch.float
    assert batch["labels"].tolist() == [4.5, 0.0]
    assert batch["input_ids"].tolist() == [[1, 2, 0, 0], [3, 4, 5, 6]]
    assert batch["attention_mask"].sum(1).tolist() == [2, 4]


def test_rows_without_labels():
    batch = Collator(PAD)([{"input_ids": [7, 8]}])
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["input_ids"].tolist() == [[7, 8]]


@pytest.mark.parametrize("longest,multiple,width", [(3, 4, 4), (4, 4, 4), (5, 4, 8), (5, 1, 5),
                                                    (5, None, 5), (9, 8, 16)])
def test_pad_to_multiple_of_rounds_up(longest: int, multiple: int | None, width: int):
    rows = [{"input_ids": list(range(1, longest + 1)), "token_type_ids": [1] * longest},
            {"input_ids": [1], "token_type_ids": [1]}]
    batch = Collator(PAD, pad_to_multiple_of=multiple)(rows)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, width)
    assert batch["input_ids"][0].tolist() == list(range(1, longest + 1)) + [PAD] * (width - longest)
    assert batch["attention_mask"].sum(1).tolist() == [longest, 1]
    assert batch["token_type_ids"].sum(1).tolist() == [longest, 1]  # padding is type 0


def test_listwise_groups_are_flattened_in_order():
    rows = [{"input_ids": [[1, 2], [3, 4, 5]], "token_type_ids": [[0, 1], [0, 1, 1]],
             "labels": 0, "length": 5, "index": 3},
            {"input_ids": [[6], [7, 8], [9, 10, 11, 12]],
             "token_type_ids": [[0], [0, 1], [0, 0, 1, 1]], "labels": 0, "length": 7, "index": 8}]
    batch = Collator(PAD)(rows)
    assert batch["group_sizes"].tolist() == [2, 3]
    assert batch["labels"].tolist() == [0, 0] and batch["labels"].dtype == torch.long
    assert batch["input_ids"].tolist() == [[1, 2, PAD, PAD], [3, 4, 5, PAD], [6, PAD, PAD, PAD],
                                           [7, 8, PAD, PAD], [9, 10, 11, 12]]
    assert batch["token_type_ids"].tolist() == [[0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0],
                                                [0, 1, 0, 0], [0, 0, 1, 1]]
    assert batch["attention_mask"].sum(1).tolist() == [2, 3, 1, 2, 4]
    assert batch["input_ids"].shape[0] == batch["group_sizes"].sum()


def test_rows_of_a_datasets_table():
    # Rows as the DataLoader gets them from a tokenized `datasets.Dataset` (Arrow types).
    ds = datasets.Dataset.from_dict({"input_ids": [[101, 7, 102], [101, 102]],
                                     "labels": [2.5, 3.0], "length": [3, 2], "index": [0, 1]})
    batch = Collator(0)([ds[0], ds[1]])
    assert batch["labels"].dtype == torch.float and batch["labels"].tolist() == [2.5, 3.0]
    assert batch["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    ids = datasets.Dataset.from_dict({"input_ids": [[5]], "labels": [1]})
    assert Collator(0)([ids[0]])["labels"].dtype == torch.long
