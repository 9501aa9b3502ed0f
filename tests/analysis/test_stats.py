"""The bootstrap intervals on hand-made per-image scores with known answers."""

import numpy as np
import pytest

from prismlab.analysis import stats
from prismlab.analysis.stats import accuracy_interval, paired_difference, paired_ratio


def test_accuracy_interval_brackets_the_accuracy_with_the_binomial_width():
    correct = np.r_[np.ones(400), np.zeros(600)]
    r = accuracy_interval(correct)
    assert r["value"] == pytest.approx(0.4)
    se = (0.4 * 0.6 / 1000) ** 0.5  # the 95% interval is about +-1.96 standard errors
    assert r["low"] == pytest.approx(0.4 - 1.96 * se, abs=0.006)
    assert r["high"] == pytest.approx(0.4 + 1.96 * se, abs=0.006)


def test_a_certain_model_has_no_spread():
    assert accuracy_interval(np.ones(50)) == {"value": 1.0, "low": 1.0, "high": 1.0}


def test_identical_models_have_ratio_one_with_no_spread_only_when_paired():
    rng = np.random.default_rng(1)
    a = (rng.random(1000) < 0.3).astype(int)
    r = paired_ratio(a, a.copy())
    assert (r["ratio"], r["low"], r["high"]) == (1.0, 1.0, 1.0)


def test_pairing_narrows_the_interval_of_correlated_models():
    # b is a with 20 of its correct images flipped to wrong: a leads by 2 points on the same images.
    rng = np.random.default_rng(2)
    a = (rng.random(1000) < 0.4).astype(int)
    b = a.copy()
    b[np.flatnonzero(a)[:20]] = 0
    paired = paired_ratio(a, b)
    assert paired["ratio"] == pytest.approx(a.mean() / b.mean())
    assert paired["low"] > 1.0  # above 1 beyond noise, which unpaired resampling could not show:

    def unpaired(a, b, rounds=2000):
        ia, ib = stats._indices(len(a), rounds, 0), stats._indices(len(a), rounds, 1)
        return np.quantile(a[ia].mean(1) / b[ib].mean(1), [0.025, 0.975])

    lo, hi = unpaired(a, b)
    assert lo < 1.0 < hi
    assert paired["high"] - paired["low"] < (hi - lo) / 3


def test_the_same_indices_score_both_models(monkeypatch):
    # Meta-test: a bootstrap that drew fresh indices for the second model would not be paired.
    calls = []
    real = stats._indices
    monkeypatch.setattr(stats, "_indices", lambda *a: calls.append(a) or real(*a))
    paired_ratio(np.ones(10), np.ones(10))
    assert len(calls) == 1


def test_ratio_is_undefined_when_the_reference_scores_nothing_and_shapes_must_match():
    assert paired_ratio([1, 0, 1], [0, 0, 0]) == {"ratio": None, "low": None, "high": None}
    with pytest.raises(ValueError, match="one 0/1 per image"):
        paired_ratio([1, 0], [1, 0, 1])


def test_paired_difference_of_a_two_point_lead_excludes_zero():
    rng = np.random.default_rng(2)
    a = (rng.random(1000) < 0.4).astype(int)
    b = a.copy()
    b[np.flatnonzero(a)[:20]] = 0  # 20 of 1,000 images: a leads by exactly 2 points
    d = paired_difference(a, b)
    assert d["diff"] == pytest.approx(0.02) and 0 < d["low"] < 0.02 < d["high"]
    assert paired_difference(a, a.copy()) == {"diff": 0.0, "low": 0.0, "high": 0.0}
    flipped = paired_difference(b, a)
    assert flipped["diff"] == pytest.approx(-0.02) and flipped["high"] < 0
    with pytest.raises(ValueError, match="one 0/1 per image"):
        paired_difference([1, 0], [1, 0, 1])
