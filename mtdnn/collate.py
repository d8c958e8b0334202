"""Dynamic padding: each batch is padded to its own longest sequence, not to max_seq_length.

Ranking training rows are listwise groups (a list of candidates each); they are flattened into one
(N, T) batch of candidates with `group_sizes` telling the loss where each query's candidates are.
"""

from __future__ import annotations

import time
from typing import Any

import torch


class Collator:
    """Turns a list of tokenized rows into a padded batch of tensors.

    Args:
        pad_token_id: the tokenizer's pad id.
        pad_to_multiple_of: round the padded length up (tensor-core friendly on GPUs).
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        if "labels" in rows[0]:
            values = [r["labels"] for r in rows]
            # Scores (regression) stay float; class ids and ranking targets are indices.
            dtype = torch.float if isinstance(values[0], float) else torch.long
            batch["labels"] = torch.tensor(values, dtype=dtype)
        if "soft_labels" in rows[0]:  # a distilled task's teacher targets (mtdnn/distill.py)
            soft = [r["soft_labels"] for r in rows]
            if isinstance(soft[0], list):  # per class, or per candidate of a group: pad with 0
                width = max(len(s) for s in soft)
                soft = [s + [0.0] * (width - len(s)) for s in soft]
            batch["soft_labels"] = torch.tensor(soft, dtype=torch.float)
        if isinstance(rows[0]["input_ids"][0], list):  # listwise groups: flatten the candidates
            batch["group_sizes"] = torch.tensor([len(r["input_ids"]) for r in rows])
            rows = [{k: r[k][i] for k in ("input_ids", "token_type_ids") if k in r}
                    for r in rows for i in range(len(r["input_ids"]))]
        longest = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        n = len(rows)
        input_ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((n, longest), dtype=torch.long)
        token_type_ids = torch.zeros((n, longest), dtype=torch.long) \
            if "token_type_ids" in rows[0] else None
        for i, r in enumerate(rows):
            length = len(r["input_ids"])
            input_ids[i, :length] = torch.as_tensor(r["input_ids"])
            attention_mask[i, :length] = 1
            if token_type_ids is not None:
                token_type_ids[i, :length] = torch.as_tensor(r["token_type_ids"])
        batch.update(input_ids=input_ids, attention_mask=attention_mask)
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        return batch


def fetch_batch(dataset: Any, indices: list[int], collator: Any, device: Any,
                columns: tuple[str, ...], instrument: Any = None) -> dict[str, torch.Tensor]:
    """Rows `indices` of a tokenized split -> a padded batch on `device`: the one batch path of
    training, evaluation and prediction. `columns`: what the collator takes (the task type's
    `columns`: with labels for training)."""
    table = dataset[indices]  # one Arrow read for the whole batch
    rows = [{k: table[k][i] for k in columns if k in table} for i in range(len(indices))]
    started = time.perf_counter()
    batch = collator(rows)
    if instrument is not None:
        instrument.on_collate(time.perf_counter() - started)
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
