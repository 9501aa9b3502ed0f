"""The seed of each random stream of a run, for one epoch.

Every random choice of epoch E (batch order, augmentation, channel subsets, dropout, mixing) comes from a
generator seeded here from (run seed, E) alone, never from state carried over from epoch E-1: a run
resumed at epoch E draws exactly what an uninterrupted run drew there. Within a stream,
seed * P + epoch names one (seed, epoch) while epoch < P. Across streams a seed value can repeat
(global and order at seed 0 are both E; order and augment differ only by the rank offset; augment and
mix at seed 0 are equal): they seed different generators drawing different things (dropout masks and
subsets; a permutation; crops and flips in torch's generator; mixing partners, weights and boxes in
numpy's PCG64), so nothing is shared but the number. The values below are part of every run's
results: changing one changes what every run draws, and a run resumed across the change would differ.
"""

from __future__ import annotations

MULTIPLIER = {
    "global": 1_000_003,  # torch's global generator (dropout) and the channel sampler
    "order": 100_003,  # the loader's shuffle
    "augment": 100_003,  # the loader's crops and flips, offset per DDP rank below
    "mix": 100_019,  # mixup/cutmix: partners, mixing weights and boxes, offset per DDP rank below
}
RANK_OFFSET = 7_919  # each DDP rank augments (and mixes) its own share differently


def epoch_seed(seed: int, epoch: int, stream: str, rank: int = 0) -> int:
    base = seed * MULTIPLIER[stream] + epoch
    return base + RANK_OFFSET * (rank + 1) if stream in ("augment", "mix") else base
