"""Heads: the small networks on top of the shared encoder. Which one a task gets, and its loss,
is its task type's choice (mtdnn.tasks).

`TaskHead` reads the first token's hidden state ([CLS] / <s>) and is `dropout -> dense ->
activation -> dropout -> linear`: the shape of RoBERTa's classification head, and of BERT's pooler
followed by its classifier. Keeping that shape is what lets a sentence-level task be exported as
a plain `AutoModelForSequenceClassification` with identical outputs.
"""

from __future__ import annotations

import torch
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

    @torch.no_grad()
    def start_from(self, pooler_dense: nn.Linear) -> None:
        """The dense layer starts as a copy of a pretrained pooler's (head_init: pooler)."""
        self.dense.weight.copy_(pooler_dense.weight)
        self.dense.bias.copy_(pooler_dense.bias)

    def forward(self, first_token: torch.Tensor) -> torch.Tensor:
        # (B, H) -> (B, num_outputs)
        x = self.activation(self.dense(self.dropout(first_token)))
        return self.out_proj(self.dropout(x))


class TokenHead(nn.Module):
    """A head on every token's hidden state: `dropout -> linear`, the shape of
    `XForTokenClassification`'s classifier (and, with 2 outputs, of `XForQuestionAnswering`'s
    qa_outputs, whose dropout is left out at inference like every dropout)."""

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_outputs)
        nn.init.normal_(self.out_proj.weight, std=0.02)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # (B, T, H) -> (B, T, num_outputs)
        return self.out_proj(self.dropout(hidden))


def task_loss(task_type: str, logits: torch.Tensor, labels: torch.Tensor,
              group_sizes: torch.Tensor | None = None) -> torch.Tensor:
    """The mean loss of a batch of one task type, in fp32 whatever the autocast dtype (the loss
    is the type's: mtdnn.tasks)."""
    from mtdnn.tasks import task_type as get

    batch = {} if group_sizes is None else {"group_sizes": group_sizes}
    return get(task_type).loss(logits, labels, batch)


def predictions(task_type: str, logits: torch.Tensor) -> torch.Tensor:
    """Logits of sentence-level types -> what metrics compare: class ids, or the raw score."""
    from mtdnn.tasks import task_type as get

    out = torch.as_tensor(get(task_type).predictions(list(logits.detach().float().cpu().numpy()),
                                                     None, None))
    return out.float() if out.is_floating_point() else out


def __getattr__(name: str):
    if name == "group_scores":  # it lives with the ranking type now
        from mtdnn.tasks.ranking import group_scores

        return group_scores
    raise AttributeError(name)
