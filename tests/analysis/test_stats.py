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


def test_seed_interval_covers_the_seeds_as_well_as_the_images():
    from prismlab.analysis.stats import accuracy_interval, seed_interval

    rng = np.random.default_rng(0)
    base = rng.random(1000) < 0.6
    agree = seed_interval([base, base, base])
    # Three identical seeds: the images' interval alone, and the mean is the one accuracy.
    one = accuracy_interval(base)
    assert agree["value"] == one["value"] and agree["seeds"] == 3
    assert abs((agree["high"] - agree["low"]) - (one["high"] - one["low"])) < 0.01
    # A seed that always fails pulls the mean down by a third and must widen the interval a lot.
    failing = seed_interval([base, base, np.zeros(1000, dtype=bool)])
    assert failing["value"] == pytest.approx(2 / 3 * base.mean())
    assert failing["high"] - failing["low"] > 5 * (agree["high"] - agree["low"])
    assert failing["low"] <= 0.25 and failing["high"] >= base.mean() - 0.05  # the draws of 0, 1 and 2 bad seeds
    with pytest.raises(ValueError):
        seed_interval([base, base[:10]])


def test_seed_paired_ratio_is_the_ratio_of_seed_means():
    from prismlab.analysis.stats import paired_ratio, seed_paired_ratio

    rng = np.random.default_rng(1)
    a = [rng.random(800) < p for p in (0.50, 0.52, 0.54)]
    b = [rng.random(800) < p for p in (0.49, 0.50, 0.51)]
    r = seed_paired_ratio(a, b)
    assert r["ratio"] == pytest.approx(np.mean(a) / np.mean(b))
    assert r["low"] < r["ratio"] < r["high"]
    # One seed each: the same as the paired image bootstrap's width, about
    single, paired = seed_paired_ratio(a[:1], b[:1]), paired_ratio(a[0], b[0])
    assert single["ratio"] == pytest.approx(paired["ratio"])
    assert abs((single["high"] - single["low"]) - (paired["high"] - paired["low"])) < 0.02
    assert seed_paired_ratio(a, [np.zeros(800, bool)])["ratio"] is None


def test_seed_paired_ratio_pairs_the_images_and_draws_the_second_rows_seeds():
    from prismlab.analysis.stats import accuracy_interval, seed_paired_ratio

    r = np.random.default_rng(2).random(1000) < 0.5
    f = r.copy()
    f[:20] = ~f[:20]  # b: a with 20 answers flipped, nearly the same images right
    width = lambda x: x["high"] - x["low"]  # noqa: E731
    paired = seed_paired_ratio([r] * 3, [f] * 3)
    # Drawn apart, the two accuracies' noise would add: about sqrt(2) x one row's width, over 0.5.
    unpaired = np.sqrt(2) * width(accuracy_interval(r)) / 0.5
    assert width(paired) < 0.4 * unpaired
    # A seed of b that always fails must widen the interval: b's seeds are drawn too.
    assert width(seed_paired_ratio([r] * 3, [f, f, np.zeros(1000, bool)])) > 5 * width(paired)
