"""Token classification's metrics, seqeval's definitions: entity F1 / precision / recall (micro;
conlleval's chunking by default, strict mode with a `scheme`), token accuracy, and the entity spans
of a tag sequence. Looked up by name in `mtdnn.tasks.token_classification` (its
`metric_functions`), which imports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Metrics: fn(predictions, references, groups=None, scheme=None) on lists of tag sequences


def _seqeval(name: str, predictions: Any, references: Any, groups: Any = None,
             scheme: str | None = None) -> float:
    from seqeval import metrics

    refs, preds = [list(r) for r in references], [list(p) for p in predictions]
    if len(refs) != len(preds) or any(len(r) != len(p) for r, p in zip(refs, preds)):
        raise ValueError("predictions and references differ in sentences or words")
    if not refs:
        raise ValueError("cannot compute a metric on zero examples")
    if name == "accuracy_score":
        return float(metrics.accuracy_score(refs, preds))
    strict: dict[str, Any] = {}
    if scheme is not None:
        from seqeval import scheme as schemes

        strict = {"mode": "strict", "scheme": getattr(schemes, scheme)}
    # zero_division=0: seqeval's value when nothing is predicted, without its warning
    return float(getattr(metrics, name)(refs, preds, zero_division=0, **strict))


def entity_f1(predictions: Any, references: Any, groups: Any = None,
              scheme: str | None = None) -> float:
    """seqeval's micro entity F1: conlleval's chunking, or strict mode with `scheme` (IOB2, ...).

    Args:
        predictions, references: one list of tags per sentence, e.g. [["B-PER", "I-PER", "O"]].
        groups: unused (the registry's uniform signature).
        scheme: None, or a seqeval scheme name: IOB1, IOB2, IOE1, IOE2, IOBES, BILOU.
    """
    return _seqeval("f1_score", predictions, references, scheme=scheme)


def entity_precision(predictions: Any, references: Any, groups: Any = None,
                     scheme: str | None = None) -> float:
    """seqeval's micro entity precision (as `entity_f1`)."""
    return _seqeval("precision_score", predictions, references, scheme=scheme)


def entity_recall(predictions: Any, references: Any, groups: Any = None,
                  scheme: str | None = None) -> float:
    """seqeval's micro entity recall (as `entity_f1`)."""
    return _seqeval("recall_score", predictions, references, scheme=scheme)


def token_accuracy(predictions: Any, references: Any, groups: Any = None,
                   scheme: str | None = None) -> float:
    """The fraction of words tagged right (seqeval's accuracy_score; `scheme` does not apply)."""
    return _seqeval("accuracy_score", predictions, references)


METRICS = {"entity_f1": entity_f1, "entity_precision": entity_precision,
           "entity_recall": entity_recall, "token_accuracy": token_accuracy}


def entity_spans(tokens: Sequence[str], tags: Sequence[str]) -> list[dict[str, Any]]:
    """The entities of a tag sequence, as conlleval chunks them: {"type", "start", "end" (word
    indices, end exclusive), "text"}."""
    from seqeval.metrics.sequence_labeling import get_entities

    # BILOU's L- and U- are IOBES's E- and S-, which conlleval's chunking reads.
    iobes = [{"L-": "E-", "U-": "S-"}.get(t[:2], t[:2]) + t[2:] for t in tags]
    return [{"type": kind, "start": start, "end": end + 1,
             "text": " ".join(tokens[start:end + 1])} for kind, start, end in get_entities(iobes)]
