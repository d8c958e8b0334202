"""Tests for mtdnn.metrics: numpy metrics vs sklearn/scipy, ranking metrics vs hand-computed
values, the offline evaluate modules, and metric-name validation."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from mtdnn import metrics as M

SEEDS = [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- classification / regression


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, 3, size=50 + 10 * seed)
    preds = np.where(rng.random(refs.size) < 0.6, refs, rng.integers(0, 3, size=refs.size))
    assert M.accuracy(preds, refs) == pytest.approx(skm.accuracy_score(refs, preds))


@pytest.mark.parametrize("seed", SEEDS)
def test_f1_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    refs, preds = rng.integers(0, 2, size=(2, 40 + 7 * seed))
    assert M.f1(preds, refs) == pytest.approx(skm.f1_score(refs, preds))


def test_f1_without_any_positive_is_zero() -> None:
    assert M.f1([0, 0, 0], [0, 0, 0]) == 0.0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_mcc_matches_sklearn(seed: int, n_classes: int) -> None:
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, n_classes, size=60 + seed)
    preds = np.where(rng.random(refs.size) < 0.5, refs, rng.integers(0, n_classes, refs.size))
    assert M.matthews_corrcoef(preds, refs) == pytest.approx(skm.matthews_corrcoef(refs, preds))


def test_mcc_non_contiguous_labels_and_degenerate_cases() -> None:
    refs, preds = [7, 3, 3, 9, 7, 9], [7, 9, 3, 9, 3, 9]
    assert M.matthews_corrcoef(preds, refs) == pytest.approx(skm.matthews_corrcoef(refs, preds))
    # Constant predictions: zero denominator -> 0.0, as sklearn.
    assert M.matthews_corrcoef([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0
    assert skm.matthews_corrcoef([0, 1, 0, 1], [1, 1, 1, 1]) == 0.0
    assert M.matthews_corrcoef([0, 1, 2, 1], [0, 1, 2, 1]) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_pearson_and_spearman_match_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    refs = rng.normal(size=80) * 2 + 2.5
    preds = refs + rng.normal(size=80)
    assert M.pearson(preds, refs) == pytest.approx(stats.pearsonr(preds, refs)[0])
    assert M.spearman(preds, refs) == pytest.approx(stats.spearmanr(preds, refs)[0])


@pytest.mark.parametrize("seed", SEEDS)
def test_spearman_with_ties_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Few distinct values on both sides -> many ties, exercising average ranks.
    refs = rng.integers(0, 6, size=70).astype(float)
    preds = np.round(refs + rng.normal(size=70), 0)
    assert M.spearman(preds, refs) == pytest.approx(stats.spearmanr(preds, refs)[0])


def test_correlations_of_constant_input_are_zero() -> None:
    # Documented deviation: scipy returns NaN here; we return 0.0 for checkpoint selection.
    assert M.pearson([1.0, 1.0, 1.0], [0.1, 0.5, 0.9]) == 0.0
    assert M.spearman([0.1, 0.5, 0.9], [2.0, 2.0, 2.0]) == 0.0


def test_length_mismatch_and_empty_input_raise() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        M.accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="zero examples"):
        M.pearson([], [])


# ---------------------------------------------------------------------------------- ranking

# Rows of (query id, score, relevance). Queries are interleaved and ids are of mixed types.
#  q1: sorted 0.9(1) 0.8(0) 0.7(1) 0.1(0): relevant at ranks 1, 3
#      -> AP = (1/1 + 2/3) / 2 = 5/6, RR = 1, P@1 = 1
#  q2: sorted 0.6(0) 0.4(1) 0.2(0): relevant at rank 2 -> AP = 1/2, RR = 1/2, P@1 = 0
#  q3: no relevant candidate -> excluded from every mean
#   7: all scores tied at 0.5 -> input order kept: 0, 1, 1; relevant at ranks 2, 3
#      -> AP = (1/2 + 2/3) / 2 = 7/12, RR = 1/2, P@1 = 0
#  MAP = (5/6 + 1/2 + 7/12) / 3 = 23/36, MRR = (1 + 1/2 + 1/2) / 3 = 2/3, P@1 = 1/3
ROWS = [
    ("q1", 0.8, 0),
    ("q2", 0.2, 0),
    (7, 0.5, 0),
    ("q3", 0.5, 0),
    ("q1", 0.1, 0),
    (7, 0.5, 1),
    ("q2", 0.6, 0),
    ("q1", 0.9, 1),
    ("q3", 0.3, 0),
    (7, 0.5, 1),
    ("q1", 0.7, 1),
    ("q2", 0.4, 1),
]
GROUPS = [g for g, _, _ in ROWS]
SCORES = [s for _, s, _ in ROWS]
RELS = [r for _, _, r in ROWS]


def test_ranking_metrics_hand_computed() -> None:
    assert M.mean_average_precision(SCORES, RELS, GROUPS) == pytest.approx(23 / 36)
    assert M.mean_reciprocal_rank(SCORES, RELS, GROUPS) == pytest.approx(2 / 3)
    assert M.precision_at_1(SCORES, RELS, GROUPS) == pytest.approx(1 / 3)


def test_ranking_ties_broken_by_original_order() -> None:
    # Same tied query, relevant candidates first in input order -> ranks 1, 2.
    scores, groups = [0.5, 0.5, 0.5], ["a", "a", "a"]
    assert M.mean_average_precision(scores, [1, 1, 0], groups) == pytest.approx(1.0)
    assert M.mean_average_precision(scores, [0, 1, 1], groups) == pytest.approx(7 / 12)
    assert M.mean_reciprocal_rank(scores, [0, 0, 1], groups) == pytest.approx(1 / 3)


def test_ranking_query_without_positive_is_excluded() -> None:
    # Only q3 (no positive) and a perfect query: the mean is over the perfect one only.
    assert M.mean_average_precision([0.1, 0.9, 0.3], [0, 1, 0], ["q3", "x", "q3"]) == 1.0
    assert M.precision_at_1([0.1, 0.2], [0, 0], ["q", "q"]) == 0.0  # nothing to average


def _reference_ranking(scores, rels, groups) -> tuple[float, float, float]:
    """Straightforward pure-Python MAP / MRR / P@1 (stable sort, positives-only queries)."""
    aps, rrs, p1s = [], [], []
    for q in dict.fromkeys(groups):
        ranked = sorted(
            (-s, i, r)
            for i, (s, r, g) in enumerate(zip(scores, rels, groups, strict=True))
            if g == q
        )
        hits = [r for _, _, r in ranked]
        if not any(hits):
            continue
        precisions = [sum(hits[: k + 1]) / (k + 1) for k, h in enumerate(hits) if h]
        aps.append(sum(precisions) / len(precisions))
        rrs.append(1 / (hits.index(1) + 1))
        p1s.append(float(hits[0]))
    return float(np.mean(aps)), float(np.mean(rrs)), float(np.mean(p1s))


@pytest.mark.parametrize("seed", SEEDS)
def test_ranking_metrics_match_reference_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 200
    groups = [int(g) for g in rng.integers(0, 25, size=n)]  # interleaved, non-contiguous
    scores = np.round(rng.random(n), 1).tolist()  # rounded -> ties inside queries
    rels = (rng.random(n) < 0.3).astype(int).tolist()
    expected = _reference_ranking(scores, rels, groups)
    got = (
        M.mean_average_precision(scores, rels, groups),
        M.mean_reciprocal_rank(scores, rels, groups),
        M.precision_at_1(scores, rels, groups),
    )
    assert got == pytest.approx(expected)


def test_ranking_requires_groups() -> None:
    with pytest.raises(ValueError, match="groups"):
        M.METRICS["map"]([0.1, 0.2], [0, 1])


# ------------------------------------------------------------------- registry / validation


def test_registry_and_compute_metrics() -> None:
    assert set(M.METRIC_INPUTS) == {
        "accuracy", "f1", "matthews_correlation", "pearson", "spearmanr", "map", "mrr", "p@1"
    }  # fmt: skip
    # the metrics of structured predictions live with their task types (tests/test_task_*.py)
    assert set(M.METRICS) - set(M.METRIC_INPUTS) == {
        "entity_f1", "entity_precision", "entity_recall", "token_accuracy", "exact_match",
        "squad_f1", "has_answer_exact", "has_answer_f1", "no_answer_exact", "micro_f1",
        "macro_f1", "subset_accuracy"}
    assert all(n in M.METRICS for names in M.DEFAULT_METRICS.values() for n in names)
    out = M.compute_metrics(["map", "mrr", "p@1"], SCORES, RELS, GROUPS)
    assert out == pytest.approx({"map": 23 / 36, "mrr": 2 / 3, "p@1": 1 / 3})
    out = M.compute_metrics(["accuracy", "f1"], [1, 0, 1, 1], [1, 0, 0, 1])
    assert out == pytest.approx({"accuracy": 0.75, "f1": 0.8})
    assert all(type(v) is float for v in out.values())
    assert M.main_metric(["pearson", "spearmanr"]) == "pearson"
    with pytest.raises(ValueError):
        M.main_metric([])


def test_unknown_metric_names_suggest_close_match() -> None:
    assert M.check_metric_names(["accuracy", "map"]) == []
    errors = M.check_metric_names(["acuracy", "spearman", "zzz"])
    assert len(errors) == 3
    pattern = r"unknown metric 'acuracy'; did you mean 'accuracy'\? valid metrics: accuracy, .*"
    assert re.fullmatch(pattern, errors[0])
    assert re.search(r"did you mean 'spearmanr'\?", errors[1])
    assert "did you mean" not in errors[2] and "matthews_correlation" in errors[2]
    with pytest.raises(ValueError, match=r"unknown metric 'pearsonr'; did you mean 'pearson'\?"):
        M.compute_metrics(["pearsonr"], [0.1, 0.2], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"did you mean 'mrr'\?"):
        M.load_metric("mr")


# --------------------------------------------------------------------------- evaluate modules


def _example(name: str, rng: np.random.Generator) -> tuple[list, list, list | None]:
    if name in M.DEFAULT_METRICS["ranking"]:
        return SCORES, RELS, GROUPS
    if name in M.DEFAULT_METRICS["regression"]:
        refs = rng.normal(size=30)
        return (refs + rng.normal(size=30)).tolist(), refs.tolist(), None
    refs = rng.integers(0, 2, size=30)
    return np.where(rng.random(30) < 0.7, refs, 1 - refs).tolist(), refs.tolist(), None


@pytest.mark.parametrize("name", list(M.METRIC_INPUTS))
def test_evaluate_module_matches_numpy(name: str, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preds, refs, groups = _example(name, np.random.default_rng(0))
    metric = M.load_metric(name, cache_dir=str(tmp_path))
    kwargs = {"groups": groups} if groups is not None else {}
    out = metric.compute(predictions=preds, references=refs, **kwargs)
    assert out == {name: pytest.approx(M.METRICS[name](preds, refs, groups))}
    assert type(out[name]) is float


def test_evaluate_module_batches_and_class_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = M.load_metric("accuracy", cache_dir=str(tmp_path))
    assert type(metric) is type(M.load_metric("accuracy", cache_dir=str(tmp_path)))
    metric.add_batch(predictions=[0, 1, 1], references=[0, 1, 0])
    metric.add_batch(predictions=[2, 2], references=[2, 1])
    assert metric.compute() == {"accuracy": pytest.approx(3 / 5)}
    assert "groups" in M.load_metric("p@1", cache_dir=str(tmp_path)).inputs_description


def test_module_import_does_not_import_evaluate() -> None:
    # Load the file directly (not via the package __init__) in a clean interpreter.
    path = Path(M.__file__)
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(path)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print('evaluate' in sys.modules, 'datasets' in sys.modules, 'sklearn' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]
