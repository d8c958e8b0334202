"""Pure-numpy evaluation metrics (classification, regression, ranking), checked against
sklearn/scipy by the tests, exposed via the :data:`METRICS` registry and as offline
``evaluate.Metric`` modules (:func:`load_metric`; ``evaluate`` is imported lazily: it is slow).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import evaluate

Groups = Sequence[Hashable] | None  # one query id per candidate (ranking metrics only)


def _pair(preds: ArrayLike, refs: ArrayLike, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Convert predictions/references to equal-length, non-empty 1-D arrays."""
    p, r = np.asarray(preds, dtype=dtype).ravel(), np.asarray(refs, dtype=dtype).ravel()
    if p.shape != r.shape:
        raise ValueError(f"predictions ({p.size}) and references ({r.size}) differ in length")
    if p.size == 0:
        raise ValueError("cannot compute a metric on zero examples")
    return p, r


def accuracy(preds: ArrayLike, refs: ArrayLike) -> float:
    """Fraction of exactly matching class ids.

    Args:
        preds, refs: Predicted / gold class ids.
    Returns:
        Accuracy in [0, 1].
    """
    p, r = _pair(preds, refs, np.int64)
    return float(np.mean(p == r))


def f1(preds: ArrayLike, refs: ArrayLike) -> float:
    """Binary F1 score of the positive class (id 1).

    Args:
        preds, refs: Predicted / gold class ids.
    Returns:
        F1 in [0, 1]; 0.0 when there is no predicted and no gold positive (as sklearn).
    """
    p, r = _pair(preds, refs, np.int64)
    tp = np.sum((p == 1) & (r == 1))
    denom = np.sum(p == 1) + np.sum(r == 1)  # = 2*tp + fp + fn
    return float(2 * tp / denom) if denom > 0 else 0.0


def matthews_corrcoef(preds: ArrayLike, refs: ArrayLike) -> float:
    """Multi-class Matthews correlation coefficient (Gorodkin's R_K, as sklearn).

    Args:
        preds, refs: Predicted / gold class ids.
    Returns:
        MCC in [-1, 1]; 0.0 when the denominator is 0 (e.g. constant predictions), as sklearn.
    """
    p, r = _pair(preds, refs, np.int64)
    _, codes = np.unique(np.concatenate([p, r]), return_inverse=True)
    k, n = int(codes.max()) + 1, p.size
    cm = np.bincount(codes[n:] * k + codes[:n], minlength=k * k).reshape(k, k)
    # float64: the products below overflow int64 on large evaluation sets.
    cm = cm.astype(np.float64)
    t_sum, p_sum, correct = cm.sum(axis=1), cm.sum(axis=0), np.trace(cm)
    denom = np.sqrt((n * n - p_sum @ p_sum) * (n * n - t_sum @ t_sum))
    return float((correct * n - t_sum @ p_sum) / denom) if denom > 0 else 0.0


def pearson(preds: ArrayLike, refs: ArrayLike) -> float:
    """Pearson correlation coefficient.

    Args:
        preds, refs: Predicted / gold scores.
    Returns:
        Correlation in [-1, 1]; 0.0 (scipy gives NaN) when either side is constant, so a
        collapsed early checkpoint cannot poison best-checkpoint selection with NaN.
    """
    p, r = _pair(preds, refs, np.float64)
    pc, rc = p - p.mean(), r - r.mean()
    denom = np.sqrt(np.dot(pc, pc) * np.dot(rc, rc))
    # Clip: rounding can push |r| a hair above 1 for (anti-)identical inputs.
    return float(np.clip(np.dot(pc, rc) / denom, -1.0, 1.0)) if denom > 0 else 0.0


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of their ranks (scipy's 'average')."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    is_start = np.r_[True, xs[1:] != xs[:-1]]
    starts = np.flatnonzero(is_start)
    ends = np.r_[starts[1:], x.size]  # exclusive end of each run of equal values
    ranks = np.empty(x.size, dtype=np.float64)
    # The run [s, e) holds ranks s+1..e, whose mean is (s + 1 + e) / 2.
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(is_start) - 1]
    return ranks


def spearman(preds: ArrayLike, refs: ArrayLike) -> float:
    """Spearman rank correlation: Pearson correlation of average ranks.

    Args:
        preds, refs: Predicted / gold scores.
    Returns:
        Correlation in [-1, 1]; 0.0 when either side is constant (see :func:`pearson`).
    """
    p, r = _pair(preds, refs, np.float64)
    return pearson(_average_ranks(p), _average_ranks(r))


def _ranked_queries(scores: ArrayLike, refs: ArrayLike, groups: Groups) -> Iterator[np.ndarray]:
    """Yield each query's boolean relevance vector in rank order.

    Candidates are sorted by descending score with a *stable* sort, so tied scores keep their
    original input order (deterministic, no optimistic tie-breaking). Queries without any
    relevant candidate are skipped: AP/RR are undefined for them, and excluding them is the
    standard WikiQA evaluation practice.
    """
    s, r = _pair(scores, refs, np.float64)
    if groups is None or len(groups) != s.size:
        raise ValueError("ranking metrics need one query id in `groups` per candidate")
    # Dict encoding accepts any hashable ids, even mixed types that np.unique would reject.
    ids: dict[Hashable, int] = {}
    codes = np.fromiter((ids.setdefault(g, len(ids)) for g in groups), np.int64, s.size)
    by_query = np.argsort(codes, kind="stable")  # stable: input order kept inside a query
    for idx in np.split(by_query, np.flatnonzero(np.diff(codes[by_query])) + 1):
        rel = r[idx][np.argsort(-s[idx], kind="stable")] > 0
        if rel.any():
            yield rel


def _mean(values: list[float]) -> float:
    # 0.0 rather than NaN when no query has a positive: keeps comparisons well-defined.
    return float(np.mean(values)) if values else 0.0


def mean_average_precision(scores: ArrayLike, refs: ArrayLike, groups: Groups = None) -> float:
    """Mean over queries of AP = mean, over relevant items, of precision at their rank.

    Args:
        scores: Candidate scores (higher ranks first; ties keep input order).
        refs: 0/1 relevance labels.
        groups: Query id per candidate (any hashable; need not be contiguous). Required:
            the ``None`` default only gives the registry's uniform signature (raises).
    Returns:
        MAP over the queries that have at least one relevant candidate.
    """
    aps = []
    for rel in _ranked_queries(scores, refs, groups):
        precisions = np.cumsum(rel) / np.arange(1, rel.size + 1)
        aps.append(float(precisions[rel].mean()))
    return _mean(aps)


def mean_reciprocal_rank(scores: ArrayLike, refs: ArrayLike, groups: Groups = None) -> float:
    """Mean over queries of 1 / rank of the first relevant candidate.

    Args:
        scores, refs, groups: As in :func:`mean_average_precision`.
    Returns:
        MRR over the queries that have at least one relevant candidate.
    """
    return _mean([1.0 / (int(np.argmax(rel)) + 1) for rel in _ranked_queries(scores, refs, groups)])


def precision_at_1(scores: ArrayLike, refs: ArrayLike, groups: Groups = None) -> float:
    """Fraction of queries whose top-ranked candidate is relevant.

    Args:
        scores, refs, groups: As in :func:`mean_average_precision`.
    Returns:
        P@1 over the queries that have at least one relevant candidate.
    """
    return _mean([float(rel[0]) for rel in _ranked_queries(scores, refs, groups)])


def _ignore_groups(fn: Callable[[ArrayLike, ArrayLike], float]) -> Callable[..., float]:
    """Adapt a pointwise metric to the uniform ``fn(predictions, references, groups=None)``."""

    @functools.wraps(fn)
    def wrapper(predictions: ArrayLike, references: ArrayLike, groups: Any = None) -> float:
        return fn(predictions, references)

    return wrapper


METRICS: dict[str, Callable[..., float]] = {
    "accuracy": _ignore_groups(accuracy),
    "f1": _ignore_groups(f1),
    "matthews_correlation": _ignore_groups(matthews_corrcoef),
    "pearson": _ignore_groups(pearson),
    "spearmanr": _ignore_groups(spearman),
    "map": mean_average_precision,
    "mrr": mean_reciprocal_rank,
    "p@1": precision_at_1,
}


def _lazy(path: str) -> Callable[..., float]:
    """A metric defined in a task type's module (mtdnn/tasks/*), imported at its first use:
    `fn(predictions, references, groups=None)` like the others, on that type's predictions."""
    module, _, name = path.partition(":")

    def metric(predictions: Any, references: Any, groups: Any = None) -> float:
        import importlib

        return getattr(importlib.import_module(module), name)(predictions, references, groups)

    metric.__name__ = name
    return metric


def _type_metrics() -> dict[str, Callable[..., float]]:
    """The metrics task types define in their own modules (`TaskType.metric_functions`), for
    predictions that are not one number per example (tag sequences, answer texts, label sets)."""
    from mtdnn.tasks import TASK_TYPES, task_type

    return {name: _lazy(f"{TASK_TYPES[t].partition(':')[0]}:{name}")
            for t in TASK_TYPES for name in task_type(t).metric_functions}


METRICS.update(_type_metrics())
# What each metric compares, for its offline `evaluate` module: (prediction dtype, reference
# dtype, whether it takes query groups).
METRIC_INPUTS: dict[str, tuple[str, str, bool]] = {
    "accuracy": ("int64", "int64", False), "f1": ("int64", "int64", False),
    "matthews_correlation": ("int64", "int64", False),
    "pearson": ("float64", "float64", False), "spearmanr": ("float64", "float64", False),
    "map": ("float64", "int64", True), "mrr": ("float64", "int64", True),
    "p@1": ("float64", "int64", True),
}


class _DefaultMetrics(Mapping[str, list[str]]):
    """task type -> its default metrics (`TaskType.default_metrics`, mtdnn/tasks)."""

    def __getitem__(self, name: str) -> list[str]:
        from mtdnn.tasks import task_type

        try:
            return list(task_type(name).default_metrics)
        except ValueError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        from mtdnn.tasks import names

        return iter(names())

    def __len__(self) -> int:
        from mtdnn.tasks import names

        return len(names())


DEFAULT_METRICS: Mapping[str, list[str]] = _DefaultMetrics()


def check_metric_names(names: Sequence[str]) -> list[str]:
    """Validate metric names (e.g. from a task spec) without raising.

    Args:
        names: Metric names to check.
    Returns:
        One error message per unknown name, with a "did you mean" hint; empty if all valid.
    """
    errors = []
    for name in names:
        if name not in METRICS:
            close = difflib.get_close_matches(name, list(METRICS), n=1)
            hint = f" did you mean {close[0]!r}?" if close else ""
            errors.append(f"unknown metric {name!r};{hint} valid metrics: {', '.join(METRICS)}")
    return errors


def main_metric(names: Sequence[str]) -> str:
    """Metric used to select the best checkpoint: by convention the first one listed.

    Args:
        names: A task's metric names, most important first.
    Returns:
        ``names[0]``.
    """
    if not names:
        raise ValueError("a task needs at least one metric")
    return names[0]


def compute_metrics(
    names: Sequence[str], predictions: ArrayLike, references: ArrayLike, groups: Groups = None
) -> dict[str, float]:
    """Compute several registry metrics on the same predictions.

    Args:
        names: Metric names (keys of :data:`METRICS`).
        predictions: Class ids (classification), floats (regression) or scores (ranking).
        references: Gold class ids, gold scores or 0/1 relevance.
        groups: Query id per candidate; required by ranking metrics only.
    Returns:
        ``{name: value}`` with plain Python floats.
    """
    errors = check_metric_names(names)
    if errors:
        raise ValueError("; ".join(errors))
    return {name: float(METRICS[name](predictions, references, groups)) for name in names}


# One evaluate.Metric subclass per metric name, built on first use (importing evaluate and
# datasets costs seconds) and cached so repeated load_metric() calls reuse it.
_EVALUATE_CLASSES: dict[str, type] = {}


def _evaluate_class(name: str) -> type:
    """Build (once) an offline ``evaluate.Metric`` subclass wrapping ``METRICS[name]``."""
    if name in _EVALUATE_CLASSES:
        return _EVALUATE_CLASSES[name]
    import datasets
    import evaluate

    if name not in METRIC_INPUTS:
        raise ValueError(f"metric {name!r} compares structured predictions (tags, answers, label "
                         "sets): use mtdnn.metrics.compute_metrics, it has no evaluate module")
    pred_t, ref_t, ranking = METRIC_INPUTS[name]
    fn = METRICS[name]
    usage = f"predictions: {pred_t} values; references: {ref_t} values"
    if ranking:  # evaluate features are per-example columns; groups go through compute()
        usage += "; groups: query id per candidate, passed as a compute() keyword"

    class _MtdnnMetric(evaluate.Metric):
        def _info(self) -> evaluate.MetricInfo:
            return evaluate.MetricInfo(
                description=f"mtdnn {name!r} metric (pure numpy, works offline).",
                citation="",
                inputs_description=usage,
                features=datasets.Features(
                    {"predictions": datasets.Value(pred_t), "references": datasets.Value(ref_t)}
                ),
                format="numpy",
            )

        def _compute(self, predictions=None, references=None, groups=None) -> dict[str, float]:
            # evaluate forwards extra compute() kwargs (here `groups`) to _compute; they are
            # not accumulated by add_batch(), so pass the full groups list to compute().
            return {name: float(fn(predictions, references, groups))}

    # evaluate derives module_name (and its cache sub-directory) from the class name.
    cls_name = "Mtdnn" + "".join(c for c in name.title() if c.isalnum())
    _MtdnnMetric.__name__ = _MtdnnMetric.__qualname__ = cls_name
    _EVALUATE_CLASSES[name] = _MtdnnMetric
    return _MtdnnMetric


def load_metric(name: str, **kwargs: Any) -> evaluate.Metric:
    """Instantiate an offline ``evaluate`` module for one registry metric (no Hub access).

    Args:
        name: Metric name (key of :data:`METRICS`).
        **kwargs: Forwarded to ``evaluate.Metric``; ``keep_in_memory`` defaults to True so
            no Arrow cache file is written.
    Returns:
        A metric whose ``compute(predictions=..., references=...[, groups=...])`` returns
        ``{name: value}``, identical to the numpy function.
    """
    errors = check_metric_names([name])
    if errors:
        raise ValueError(errors[0])
    kwargs.setdefault("keep_in_memory", True)
    return _evaluate_class(name)(**kwargs)
