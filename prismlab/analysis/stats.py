"""Bootstrap intervals over test images.

A test split of 1,000 photos gives an accuracy whose standard error is about 1.5 points, so a
difference between two models is read with an interval. Paired: both models are scored on the
same resampled images in each round, which removes the images' shared difficulty from the spread.
"""

from __future__ import annotations

import numpy as np

ROUNDS = 2000


def to_bits(correct) -> str:
    """One 0/1 per image as a string of '0'/'1': how results files keep per-image scores."""
    return "".join("1" if c else "0" for c in np.asarray(correct, dtype=bool))


def from_bits(bits: str) -> np.ndarray:
    return np.frombuffer(bits.encode(), dtype=np.uint8) == ord("1")


def _indices(n: int, rounds: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(rounds, n))


def accuracy_interval(correct, rounds: int = ROUNDS, seed: int = 0, level: float = 0.95) -> dict:
    """correct: one 0/1 per test image -> {"value", "low", "high"} (percentile bootstrap)."""
    c = np.asarray(correct, dtype=np.float64)
    if c.ndim != 1 or len(c) == 0:
        raise ValueError("correct must be a non-empty 1-d sequence of 0/1 per image")
    boot = c[_indices(len(c), rounds, seed)].mean(axis=1)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return {"value": float(c.mean()), "low": float(low), "high": float(high)}


def _pair(correct_a, correct_b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired scores need one 0/1 per image for both models, got shapes {a.shape} and {b.shape}")
    return a, b


def paired_difference(correct_a, correct_b, rounds: int = ROUNDS, seed: int = 0, level: float = 0.95) -> dict:
    """accuracy(a) - accuracy(b) with a paired percentile bootstrap -> {"diff", "low", "high"}."""
    a, b = _pair(correct_a, correct_b)
    boot = (a - b)[_indices(len(a), rounds, seed)].mean(axis=1)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": float(a.mean() - b.mean()), "low": float(low), "high": float(high)}


def paired_ratio(correct_a, correct_b, rounds: int = ROUNDS, seed: int = 0, level: float = 0.95) -> dict:
    """accuracy(a) / accuracy(b) with a paired percentile bootstrap: each round resamples image
    indices once and scores both models on them. -> {"ratio", "low", "high"}; None where b scores 0."""
    a, b = _pair(correct_a, correct_b)
    if b.sum() == 0:
        return {"ratio": None, "low": None, "high": None}
    idx = _indices(len(a), rounds, seed)
    acc_a, acc_b = a[idx].mean(axis=1), b[idx].mean(axis=1)
    ok = acc_b > 0  # a round with no correct image of b's has no ratio
    low, high = np.quantile(acc_a[ok] / acc_b[ok], [(1 - level) / 2, (1 + level) / 2])
    return {"ratio": float(a.mean() / b.mean()), "low": float(low), "high": float(high)}


def _by_seed(correct_by_seed) -> np.ndarray:
    a = np.asarray([np.asarray(c, dtype=np.float64) for c in correct_by_seed])
    if a.ndim != 2 or 0 in a.shape:
        raise ValueError("scores by seed need one equal-length 0/1 sequence per training seed")
    return a


def _seed_rounds(a: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per round: the mean over seeds drawn with replacement of each drawn seed's accuracy on the
    round's images -> [rounds]."""
    per_seed = np.stack([row[idx].mean(axis=1) for row in a])  # [seeds, rounds]
    draws = rng.integers(0, len(a), size=(idx.shape[0], len(a)))  # [rounds, seeds]
    return per_seed[draws, np.arange(idx.shape[0])[:, None]].mean(axis=1)


def seed_interval(correct_by_seed, rounds: int = ROUNDS, seed: int = 0, level: float = 0.95) -> dict:
    """Mean accuracy over training seeds, with an interval that covers both the seeds and the test
    images: each round draws the seeds with replacement and the images with replacement (the same
    images for every seed). -> {"value", "low", "high", "seeds"}. With one seed it is the images' interval."""
    a = _by_seed(correct_by_seed)
    boot = _seed_rounds(a, _indices(a.shape[1], rounds, seed), np.random.default_rng(seed + 1))
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return {"value": float(a.mean()), "low": float(low), "high": float(high), "seeds": len(a)}


def seed_paired_ratio(a_by_seed, b_by_seed, rounds: int = ROUNDS, seed: int = 0, level: float = 0.95) -> dict:
    """mean over a's seeds of accuracy(a) / the same for b. Each round draws a's seeds and b's seeds
    independently (separate training runs) and one set of images for both (paired over images).
    -> {"ratio", "low", "high"}; None where b scores 0."""
    a, b = _by_seed(a_by_seed), _by_seed(b_by_seed)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired scores need the same images for both models, got {a.shape[1]} and {b.shape[1]}")
    if b.sum() == 0:
        return {"ratio": None, "low": None, "high": None}
    idx = _indices(a.shape[1], rounds, seed)
    rng = np.random.default_rng(seed + 1)
    acc_a, acc_b = _seed_rounds(a, idx, rng), _seed_rounds(b, idx, rng)
    ok = acc_b > 0
    low, high = np.quantile(acc_a[ok] / acc_b[ok], [(1 - level) / 2, (1 + level) / 2])
    return {"ratio": float(a.mean() / b.mean()), "low": float(low), "high": float(high)}
