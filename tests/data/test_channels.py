"""Channel subsets: to_subset's values and ids, subset names, and ChannelSampler's distribution."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from prismlab.channels import parse_subsets
from prismlab.data.channels import LUMA, MEAN, STD, ChannelSampler, to_subset
from prismlab.errors import ConfigError

DRAWS = 30_000
PAIRS = ("RG", "GB", "RB")
SINGLES = ("R", "G", "B")


def _images(n=2, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_normalised_values_keep_their_negatives():
    images = _images()
    images[:, :, 0, 0] = 0  # black pixel: below every channel's mean
    for subset in ("RGB", "R", "L"):
        x, _ = to_subset(images, subset)
        assert x.dtype == torch.float32
        assert (x[:, :, 0, 0] < 0).all(), subset


def test_gray_is_the_luma_of_rgb():
    images = _images()
    x, ids = to_subset(images, "L")
    rgb = images.float() / 255
    luma = sum(w * rgb[:, c] for c, w in enumerate(LUMA))
    assert ids == (3,)
    assert torch.allclose(x[:, 0], (luma - MEAN[3]) / STD[3], atol=1e-5)


def test_subset_channels_come_in_canonical_order_with_their_ids():
    images = _images()
    x, ids = to_subset(images, "RB")
    assert ids == (0, 2) and x.shape == (2, 2, 8, 8)
    for k, c in enumerate(ids):
        assert torch.allclose(x[:, k], (images[:, c].float() / 255 - MEAN[c]) / STD[c])
    # uint8 and [0, 1] float give the same result.
    assert torch.allclose(to_subset(images.float() / 255, "RB")[0], x)


def test_parse_subsets():
    assert parse_subsets("all") == ["RGB", "RG", "GB", "RB", "R", "G", "B", "L"]
    assert parse_subsets("RGB, L") == ["RGB", "L"]
    with pytest.raises(ConfigError, match="'RX'"):
        parse_subsets("RX")


def _assert_hcs_frequencies(counts: Counter, gray_prob: float) -> None:
    """hcs: P(L) = g, P(m=k) = (1-g)/3, uniform within each m. At 30k draws one standard error is
    below 0.003, so these tolerances (>= 4 SE) never flake with a fixed seed, while uniform over
    the 7 RGB subsets (P(m=1) = 3/7 of the rest instead of 1/3) misses by ~0.08."""
    freq = {k: v / DRAWS for k, v in counts.items()}
    per_m = (1 - gray_prob) / 3
    assert abs(freq.get("L", 0) - gray_prob) < 0.012
    assert abs(freq.get("RGB", 0) - per_m) < 0.015
    assert abs(sum(freq.get(s, 0) for s in PAIRS) - per_m) < 0.015
    assert abs(sum(freq.get(s, 0) for s in SINGLES) - per_m) < 0.015
    for group in (PAIRS, SINGLES):
        for s in group:
            assert abs(freq.get(s, 0) - per_m / 3) < 0.01, s


@pytest.mark.parametrize("gray_prob", [0.0, 0.125, 0.3])
def test_hcs_sampler_distribution(gray_prob):
    sampler = ChannelSampler("hcs", gray_prob=gray_prob, seed=123)
    counts = Counter(sampler.sample() for _ in range(DRAWS))
    assert set(counts) <= {"RGB", *PAIRS, *SINGLES, "L"}
    _assert_hcs_frequencies(counts, gray_prob)


def test_frequency_check_rejects_uniform_over_subsets():
    # The plausible bug: a uniform pick among the 7 non-empty RGB subsets.
    rng, gray_prob = random.Random(123), 0.125
    seven = ("RGB", *PAIRS, *SINGLES)
    counts = Counter("L" if rng.random() < gray_prob else rng.choice(seven) for _ in range(DRAWS))
    with pytest.raises(AssertionError):
        _assert_hcs_frequencies(counts, gray_prob)


def test_sampler_is_reproducible_and_other_modes():
    a, b = ChannelSampler("hcs", seed=7), ChannelSampler("hcs", seed=7)
    assert [a.sample() for _ in range(50)] == [b.sample() for _ in range(50)]
    assert {ChannelSampler("rgb").sample() for _ in range(20)} == {"RGB"}
    assert {ChannelSampler("fixed:GB").sample() for _ in range(20)} == {"GB"}
    with pytest.raises(ConfigError):
        ChannelSampler("fixed:RX")
