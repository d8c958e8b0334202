"""Decoding of extractive QA (`mtdnn.tasks.extractive_qa`): each question's answer from its
windows' start and end logits, as utils_qa.postprocess_qa_predictions: the n_best start and end
tokens of every window, spans inside the context of at most max_answer_length tokens, the best sum
of logits over all windows; with allow_no_answer, "" when the null score ([CLS] start + end, the
minimum over windows) beats the best span by more than null_threshold.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from mtdnn.tasks.extractive_qa_rows import QAExamples, QASettings


@dataclass(frozen=True)
class Answer:
    text: str
    score: float  # its probability among the n best candidates (softmax of their logit sums)
    start: int  # character offsets in the context (0, 0 for "")
    end: int


def _candidates(logits: np.ndarray, offsets: list[Any], settings: QASettings
                ) -> list[tuple[float, int, int, bool]]:
    """(start + end logit, char start, char end, False) of one window's candidate spans, in the
    order of utils_qa: each of the n_best starts, with each of the n_best ends."""
    start, end = logits[:, 0], logits[:, 1]
    starts = np.argsort(start)[-1:-settings.n_best - 1:-1]
    ends = np.argsort(end)[-1:-settings.n_best - 1:-1]
    inside = np.array([o is not None for o in offsets])
    a, b = np.meshgrid(starts, ends, indexing="ij")  # (n, n): a row per start
    keep = inside[a] & inside[b] & (b >= a) & (b - a + 1 <= settings.max_answer_length)
    return [(start[i] + end[j], offsets[i][0], offsets[j][1], False)
            for i, j in zip(a[keep].tolist(), b[keep].tolist())]


def best_answers(outputs: list[np.ndarray], dataset: Any, examples: QAExamples) -> list[Answer]:
    """The answer of each example from its windows' (T, 2) logits (see the module docstring)."""
    settings = examples.settings
    windows: dict[int, list[int]] = defaultdict(list)
    # [:] reads a whole column at once (datasets >= 4 returns a lazy column, slow per item).
    for f, e in enumerate(dataset["example"][:]):
        windows[e].append(f)
    offsets, cls = dataset["offset_mapping"][:], dataset["cls_index"][:]
    answers = []
    for e, context in enumerate(examples.contexts):
        pool: list[tuple[float, int, int, bool]] = []  # (score, char start, char end, is null)
        null = None  # the smallest [CLS] start + end over the windows
        for f in windows[e]:
            logits = outputs[f]
            score = logits[cls[f], 0] + logits[cls[f], 1]
            null = score if null is None else min(null, score)
            pool += _candidates(logits, offsets[f], settings)
        if settings.allow_no_answer and null is not None:
            pool.append((null, 0, 0, True))
        # A stable sort, best first, as utils_qa's; it keeps the null answer among the n best.
        best = [pool[i] for i in sorted(range(len(pool)), key=lambda i: -pool[i][0])]
        best = best[:settings.n_best]
        if settings.allow_no_answer and null is not None and not any(p[3] for p in best):
            best.append((null, 0, 0, True))
        spans = [i for i, p in enumerate(best) if not p[3]]
        if not spans and not settings.allow_no_answer:  # no span inside the context
            answers.append(Answer("", 0.0, 0, 0))
            continue
        scores = np.array([p[0] for p in best], dtype=np.float64)
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        pick = spans[0] if spans else None
        if settings.allow_no_answer and (pick is None or
                                         null - best[pick][0] > settings.null_threshold):
            pick = next(i for i, p in enumerate(best) if p[3])
        _, start, end, _ = best[pick]
        answers.append(Answer(context[start:end], float(probs[pick]), int(start), int(end)))
    return answers
