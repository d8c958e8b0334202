"""Task-type heads and their losses.

Every head reads the first token's final hidden state ([CLS] / <s>) and is the same small network,
`dropout -> dense -> activation -> dropout -> linear`: the shape of RoBERTa's classification head,
and of BERT's pooler followed by its classifier. Keeping that shape is what lets a task be exported
as a plain `AutoModelForSequenceClassification` with identical outputs.

| task type      | outputs per sequence | loss                                                    |
|----------------|----------------------|---------------------------------------------------------|
| classification | one per label        | cross-entropy                                           |
| regression     | 1                    | mean squared error                                      |
| ranking        | 1 (a candidate score)| softmax cross-entropy over a query's candidates (MT-DNN)|
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "gelu": nn.GELU, "relu": nn.ReLU}


class TaskHead(nn.Module):
    def __init__(self, hidden_size: int, num_outputs: int, dropout: float = 0.1,
                 activation: str = "tanh"):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = ACTIVATIONS[activation]()
        self.out_proj = nn.Linear(hidden_size, num_outputs)
        # The encoder is pretrained, the head is not: a small init keeps the first steps from
        # sending large gradients into the encoder (as BERT's own heads are initialised).
        for linear in (self.dense, self.out_proj):
            nn.init.normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)

    def forward(self, first_token: torch.Tensor) -> torch.Tensor:
        # (B, H) -> (B, num_outputs)
        x = self.activation(self.dense(self.dropout(first_token)))
        return self.out_proj(self.dropout(x))


def group_scores(scores: torch.Tensor, group_sizes: torch.Tensor) -> torch.Tensor:
    """Flat candidate scores (N,) of consecutive groups -> (B, max group size), padded with -inf."""
    sizes = group_sizes.tolist()
    padded = scores.new_full((len(sizes), max(sizes)), float("-inf"))
    mask = torch.arange(max(sizes), device=scores.device)[None, :] < group_sizes[:, None]
    padded[mask] = scores
    return padded


def task_loss(task_type: str, logits: torch.Tensor, labels: torch.Tensor,
              group_sizes: torch.Tensor | None = None) -> torch.Tensor:
    """The mean loss of a batch of one task, in fp32 whatever the autocast dtype."""
    logits = logits.float()
    if task_type == "classification":
        return F.cross_entropy(logits, labels)
    if task_type == "regression":
        return F.mse_loss(logits.squeeze(-1), labels.float())
    if task_type == "ranking":
        if group_sizes is None:
            raise ValueError("ranking loss needs group_sizes (candidates per query)")
        # Listwise: softmax over each query's candidates, the relevant one is the target.
        return F.cross_entropy(group_scores(logits.squeeze(-1), group_sizes), labels)
    raise ValueError(f"unknown task type {task_type!r}")


def predictions(task_type: str, logits: torch.Tensor) -> torch.Tensor:
    """Logits -> what metrics compare: class ids, or the raw score (regression, ranking)."""
    if task_type == "classification":
        return logits.argmax(-1)
    return logits.squeeze(-1).float()
