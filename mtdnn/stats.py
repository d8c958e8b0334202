"""Intervals for paired comparisons of runs: a t-interval over seeds, and a paired bootstrap over
dev examples within each seed (numpy only; no scipy at run time).

Example:
    >>> t_interval([0.02, 0.05, 0.03])       # three seeds' paired differences
    (0.0333..., -0.0046..., 0.0713...)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

# Two-sided 95% quantiles of Student's t, t_{0.975, df}, df = 1..30 (to 6 decimals); larger df
# use the Cornish-Fisher expansion below, within 1e-4 of the exact value.
_T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
         2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816,
         2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529,
         2.051831, 2.048407, 2.045230, 2.042272)
_Z975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the half-width multiplier of a 95% t-interval."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t-interval of the mean of `values` (e.g. per-seed paired
    differences). With one value the interval is (nan, nan): one seed says nothing of the
    spread."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = t_quantile_975(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


# (row indices, seed position, query id of each row or None) -> the metric on those rows
Metric = Callable[[np.ndarray, int, "np.ndarray | None"], float]


def paired_bootstrap(score_a: Metric, score_b: Metric, n_rows: int, n_seeds: int,
                     groups: Sequence[int] | None = None, resamples: int = 1000,
                     seed: int = 0) -> tuple[float, float]:
    """The 95% percentile interval of mean_s [A_s - B_s] under resampling the dev examples.

    Each replicate draws, for every seed s, one resample of the dev rows (of whole groups, e.g. a
    ranking query's candidates, when `groups` is given) and scores both sides on the same rows:
    `score_x(rows, s, qids)`, where `qids` numbers the drawn groups (a query drawn twice counts
    as two queries) or is None without groups. The replicate is the mean over seeds of the paired
    differences, so the interval reflects the dev set's sampling noise within each seed, not the
    spread over seeds (that is the t-interval's).

    Returns:
        (low, high).
    """
    rng = np.random.default_rng(seed)
    if groups is not None:
        group_ids = np.asarray(groups)
        unique, inverse = np.unique(group_ids, return_inverse=True)
        members = [np.flatnonzero(inverse == g) for g in range(len(unique))]
    reps = np.empty(resamples)
    for b in range(resamples):
        diffs = []
        for s in range(n_seeds):
            qids = None
            if groups is None:
                rows = rng.integers(0, n_rows, n_rows)
            else:
                picked = rng.integers(0, len(members), len(members))
                rows = np.concatenate([members[g] for g in picked])
                qids = np.concatenate([np.full(len(members[g]), k)
                                       for k, g in enumerate(picked)])
            diffs.append(score_a(rows, s, qids) - score_b(rows, s, qids))
        reps[b] = np.mean(diffs)
    low, high = np.nanpercentile(reps, [2.5, 97.5])
    return float(low), float(high)


def verdict(mean: float, intervals: Sequence[tuple[float, float]], scale: float = 100.0,
            unit: str = "") -> str:
    """A plain-language reading of a paired difference: "helps: +4.1 [+1.9, +6.3]" when every
    available interval lies above 0, "hurts: ..." when every one lies below, else "no detectable
    effect". The bracket shows the first interval that exists, or for "no detectable effect" the
    first one that holds 0 (the one that decided: two seeds with equal differences give a t-interval
    of width 0 that says nothing)."""
    known = [(lo, hi) for lo, hi in intervals if not (math.isnan(lo) or math.isnan(hi))]
    if not known or math.isnan(mean):
        return "not enough runs"

    def text(lo: float, hi: float) -> str:
        return f"{scale * mean:+.1f}{unit} [{scale * lo:+.1f}, {scale * hi:+.1f}]"

    if all(low > 0 for low, _ in known):
        return f"helps: {text(*known[0])}"
    if all(high < 0 for _, high in known):
        return f"hurts: {text(*known[0])}"
    # (intervals on opposite sides of 0, none holding it: the first one)
    deciding = next(((lo, hi) for lo, hi in known if lo <= 0 <= hi), known[0])
    return f"no detectable effect: {text(*deciding)}"
