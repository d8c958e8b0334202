"""Tests of the task heads and their losses (mtdnn/heads.py): values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtdnn.heads import TaskHead, group_scores, predictions, task_loss


def log_softmax(values: list[float], i: int) -> float:
    """log(exp(values[i]) / sum(exp(values))), by hand."""
    return values[i] - math.log(sum(math.exp(v) for v in values))


# --- task_loss -----------------------------------------------------------------------------------


def test_classification_loss_is_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    labels = torch.tensor([0, 2])
    expected = -(log_softmax([2.0, 0.0, -1.0], 0) + log_softmax([0.5, 1.5, 0.0], 2)) / 2
    assert task_loss("classification", logits, labels).item() == pytest.approx(expected, abs=1e-6)


def test_regression_loss_is_mean_squared_error_by_hand():
    logits = torch.tensor([[1.0], [2.5], [-1.0]])  # (B, 1), as the head outputs
    labels = torch.tensor([0.0, 3.0, 1.0])
    expected = ((1.0 - 0.0) ** 2 + (2.5 - 3.0) ** 2 + (-1.0 - 1.0) ** 2) / 3
    assert task_loss("regression", logits, labels).item() == pytest.approx(expected, abs=1e-6)
    # Integer labels (e.g. 0-5 scores read as ints) are compared as floats.
    assert task_loss("regression", logits, torch.tensor([0, 3, 1])).item() == pytest.approx(
        ((1.0 - 0.0) ** 2 + (2.5 - 3.0) ** 2 + (-1.0 - 1.0) ** 2) / 3, abs=1e-6)


def test_regression_loss_of_a_single_row():
    # (1, 1) must not be squeezed to a scalar that broadcasts wrongly.
    assert task_loss("regression", torch.tensor([[2.0]]), torch.tensor([0.5])).item() == \
        pytest.approx(2.25)


def test_ranking_loss_is_listwise_softmax_per_group_by_hand():
    # Two queries flattened: 3 candidates, then 2. The relevant one is at index 1, then 0.
    scores = [0.3, 1.2, -0.5, 2.0, 0.1]
    logits = torch.tensor(scores).unsqueeze(-1)  # (N, 1)
    group_sizes = torch.tensor([3, 2])
    labels = torch.tensor([1, 0])
    expected = -(log_softmax(scores[0:3], 1) + log_softmax(scores[3:5], 0)) / 2
    loss = task_loss("ranking", logits, labels, group_sizes)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_ranking_padded_slots_contribute_nothing():
    # The short group is padded with -inf: its loss equals that of the group scored alone, and the
    # gradient reaches only real candidates.
    logits = torch.tensor([[0.3], [1.2], [-0.5], [2.0], [0.1]], requires_grad=True)
    loss = task_loss("ranking", logits, torch.tensor([1, 0]), torch.tensor([3, 2]))
    alone = task_loss("ranking", logits[3:].detach(), torch.tensor([0]), torch.tensor([2]))
    first = task_loss("ranking", logits[:3].detach(), torch.tensor([1]), torch.tensor([3]))
    assert loss.item() == pytest.approx((alone.item() + first.item()) / 2, abs=1e-6)
    assert math.isfinite(loss.item())
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    # Softmax gradients of one group sum to zero: nothing leaks into (or out of) the padding.
    assert logits.grad[:3].sum().item() == pytest.approx(0.0, abs=1e-6)
    assert logits.grad[3:].sum().item() == pytest.approx(0.0, abs=1e-6)


def test_ranking_loss_needs_group_sizes():
    with pytest.raises(ValueError, match=r"^ranking loss needs group_sizes \(candidates per "
                                         r"query\)$"):
        task_loss("ranking", torch.zeros(3, 1), torch.tensor([0]))


def test_unknown_task_type():
    with pytest.raises(ValueError, match=r"^unknown task type 'tagging'$"):
        task_loss("tagging", torch.zeros(2, 2), torch.tensor([0, 1]))


def test_loss_is_fp32_for_half_logits():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.bfloat16)
    loss = task_loss("classification", logits, torch.tensor([0, 1]))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(-(log_softmax([2.0, 0.0], 0) + log_softmax([0.0, 1.0], 1))
                                        / 2, abs=1e-6)


# --- group_scores, predictions -------------------------------------------------------------------


def test_group_scores_layout():
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    padded = group_scores(scores, torch.tensor([3, 1, 2]))
    inf = float("-inf")
    assert padded.tolist() == [[1.0, 2.0, 3.0], [4.0, inf, inf], [5.0, 6.0, inf]]


def test_predictions_argmax_for_classification_and_scores_otherwise():
    logits = torch.tensor([[0.1, 0.9, 0.0], [2.0, -1.0, 1.9]])
    assert predictions("classification", logits).tolist() == [1, 0]
    scores = torch.tensor([[0.25], [-1.5]], dtype=torch.bfloat16)
    for task_type in ("regression", "ranking"):
        out = predictions(task_type, scores)
        assert out.dtype == torch.float32
        assert out.tolist() == [0.25, -1.5]


# --- TaskHead ------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_outputs", [1, 2, 3])
def test_head_output_shape(num_outputs: int):
    head = TaskHead(hidden_size=16, num_outputs=num_outputs)
    assert head(torch.randn(5, 16)).shape == (5, num_outputs)


def test_head_structure_and_init():
    head = TaskHead(hidden_size=8, num_outputs=3, dropout=0.25, activation="gelu")
    assert isinstance(head.activation, nn.GELU)
    assert head.dropout.p == 0.25
    assert head.dense.weight.shape == (8, 8) and head.out_proj.weight.shape == (3, 8)
    assert head.dense.bias.abs().sum().item() == 0.0
    assert head.out_proj.bias.abs().sum().item() == 0.0
    with pytest.raises(KeyError, match="swish"):
        TaskHead(hidden_size=8, num_outputs=2, activation="swish")


def test_head_computes_dense_tanh_linear():
    torch.manual_seed(0)
    head = TaskHead(hidden_size=4, num_outputs=2, dropout=0.5).eval()
    x = torch.randn(3, 4)
    expected = torch.tanh(x @ head.dense.weight.T + head.dense.bias) @ head.out_proj.weight.T \
        + head.out_proj.bias
    torch.testing.assert_close(head(x), expected)


def test_dropout_is_off_in_eval_mode_only():
    torch.manual_seed(0)
    head = TaskHead(hidden_size=64, num_outputs=2, dropout=0.5)
    x = torch.randn(4, 64)
    head.eval()
    assert torch.equal(head(x), head(x))
    head.train()
    assert not torch.equal(head(x), head(x))
