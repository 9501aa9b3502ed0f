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
