"""The metrics of extractive QA (`mtdnn.tasks.extractive_qa`), as the official evaluation scripts
of SQuAD v1.1 and v2.0 compute them: answer normalization, exact match and token F1 (best over the
gold answers), and v2.0's HasAns / NoAns subsets. Each is `fn(predictions, references,
groups=None)` on the predicted answer texts and each question's gold answers (none: unanswerable).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _f1(prediction: str, gold: str, v2: bool) -> float:
    pred, truth = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if v2 and (not pred or not truth):  # v2.0: an empty side scores 1 only against another
        return float(pred == truth)
    same = sum((Counter(pred) & Counter(truth)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(truth)
    return 2 * precision * recall / (precision + recall)


def _exact(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _scores(predictions: Sequence[str], references: Sequence[Sequence[str]], kind: str,
            which: str = "all") -> float:
    """Mean over questions of the best score against any gold answer. v1.1 scores answerable
    questions; an unanswerable one (no gold) is right when the prediction normalizes to "", as in
    v2.0. `which` = has/no: v2.0's HasAns / NoAns subsets, whose golds that normalize to "" are
    dropped (v2.0's rule); 0.0 when the subset is empty."""
    if len(predictions) != len(references):
        raise ValueError(f"predictions ({len(predictions)}) and references ({len(references)}) "
                         "differ in length")
    if not predictions:
        raise ValueError("cannot compute a metric on zero examples")
    values = []
    for prediction, golds in zip(predictions, references):
        if (which == "has" and not golds) or (which == "no" and golds):
            continue
        if which != "all":
            golds = [g for g in golds if normalize_answer(g)] or [""]
        v2 = which != "all" or not golds
        golds = golds or [""]
        values.append(max(_f1(prediction, g, v2) if kind == "f1" else _exact(prediction, g)
                          for g in golds))
    return float(np.mean(values)) if values else 0.0


def exact_match(predictions: Sequence[str], references: Sequence[Sequence[str]],
                groups: Any = None) -> float:
    """SQuAD v1.1 exact match: normalized prediction equals a normalized gold answer."""
    return _scores(predictions, references, "exact")


def squad_f1(predictions: Sequence[str], references: Sequence[Sequence[str]],
             groups: Any = None) -> float:
    """SQuAD v1.1 token F1 (bag-of-tokens overlap after normalization), best over the golds."""
    return _scores(predictions, references, "f1")


def has_answer_exact(predictions: Sequence[str], references: Sequence[Sequence[str]],
                     groups: Any = None) -> float:
    """SQuAD v2.0 HasAns_exact: exact match over the questions that have an answer."""
    return _scores(predictions, references, "exact", "has")


def has_answer_f1(predictions: Sequence[str], references: Sequence[Sequence[str]],
                  groups: Any = None) -> float:
    """SQuAD v2.0 HasAns_f1: token F1 over the questions that have an answer."""
    return _scores(predictions, references, "f1", "has")


def no_answer_exact(predictions: Sequence[str], references: Sequence[Sequence[str]],
                    groups: Any = None) -> float:
    """SQuAD v2.0 NoAns_exact: the share of unanswerable questions predicted as ""."""
    return _scores(predictions, references, "exact", "no")
