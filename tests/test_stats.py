"""The intervals of mtdnn/stats.py, checked against scipy and against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtdnn.stats import paired_bootstrap, t_interval, t_quantile_975, verdict


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in [*range(1, 61), 80, 120, 500]:
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-4), df


def test_t_interval_by_hand():
    # diffs 0.02, 0.05, 0.03: mean 0.0333..., sd 0.015275, t(2) = 4.302653
    mean, lo, hi = t_interval([0.02, 0.05, 0.03])
    half = 4.302653 * 0.015275252316519465 / math.sqrt(3)
    assert mean == pytest.approx(0.1 / 3)
    assert (lo, hi) == pytest.approx((0.1 / 3 - half, 0.1 / 3 + half))
    one = t_interval([0.4])
    assert one[0] == 0.4 and math.isnan(one[1]) and math.isnan(one[2])


def test_paired_bootstrap_of_a_constant_shift_is_that_shift():
    scores = np.arange(100, dtype=float)

    def mean_of(offset):
        return lambda rows, s, q: float(scores[rows].mean() + offset + s)

    lo, hi = paired_bootstrap(mean_of(0.25), mean_of(0.0), 100, n_seeds=3, resamples=50)
    assert lo == pytest.approx(0.25) and hi == pytest.approx(0.25)


def test_paired_bootstrap_resamples_rows_with_replacement_pairing_both_sides():
    # A is right on rows 0..49, B on rows 50..99: accuracy difference 0 on the full set; a
    # resample's difference is (share of rows < 50) - (share of rows >= 50), whose spread is
    # known: sd = 2 * sqrt(0.25 / 100) = 0.1, so the 95% interval is about +-0.196.
    right_a = np.arange(100) < 50
    lo, hi = paired_bootstrap(lambda rows, s, q: right_a[rows].mean(),
                              lambda rows, s, q: (~right_a)[rows].mean(), 100, 1,
                              resamples=4000, seed=1)
    assert lo == pytest.approx(-0.196, abs=0.02) and hi == pytest.approx(0.196, abs=0.02)


def test_grouped_bootstrap_draws_whole_groups_and_renumbers_them():
    groups = np.repeat(np.arange(10), 3)  # 10 queries of 3 candidates
    seen = []

    def record(rows, s, q):
        seen.append((rows, q))
        return 0.0

    paired_bootstrap(record, record, 30, 1, groups=groups, resamples=5)
    for rows, qids in seen:
        assert len(rows) == 30 and len(qids) == 30
        for k in range(10):  # each drawn group: 3 rows of one query, numbered by its draw
            block = rows[3 * k:3 * k + 3]
            assert len(set(groups[block])) == 1 and set(qids[3 * k:3 * k + 3]) == {k}


def test_verdicts():
    assert verdict(0.041, [(0.019, 0.063), (0.02, 0.05)]) == "helps: +4.1 [+1.9, +6.3]"
    assert verdict(-0.03, [(-0.05, -0.01), (-0.04, -0.02)]).startswith("hurts: -3.0")
    assert verdict(0.03, [(0.01, 0.05), (-0.01, 0.06)]).startswith("no detectable effect: +3.0")
    # one seed: only the bootstrap interval exists, and it decides
    assert verdict(0.03, [(math.nan, math.nan), (0.01, 0.05)]) == "helps: +3.0 [+1.0, +5.0]"
    assert verdict(math.nan, [(math.nan, math.nan)]) == "not enough runs"
    # the interval that holds 0 is the one shown: not a t-interval of width 0 above it
    assert verdict(0.014, [(0.014, 0.014), (-0.023, 0.051)]) == \
        "no detectable effect: +1.4 [-2.3, +5.1]"


def test_a_verdict_on_intervals_at_both_sides_of_zero_is_no_effect():
    assert verdict(0.01, [(0.01, 0.02), (-0.03, -0.01)]) == \
        "no detectable effect: +1.0 [+1.0, +2.0]"
