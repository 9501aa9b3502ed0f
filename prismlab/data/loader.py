"""Batches straight from the cache: one fancy-index per batch, augmentation batched on tensors.

Order is a pure function of (seed, epoch), so a resumed run sees the same batches as an
uninterrupted one, and under DDP every rank takes a disjoint stride of the same permutation.
"""

from __future__ import annotations

import threading
from queue import Queue

import numpy as np
import torch

from prismlab.data.augment import random_resized_crop_flip
from prismlab.data.cache import CachedSplit
from prismlab.seeds import epoch_seed


class BatchLoader:
    def __init__(
        self,
        data: CachedSplit,
        batch_size: int,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        augment: bool = True,
        scale_min: float = 0.35,
        prefetch: int = 2,
        device: torch.device | str = "cpu",
        tensors: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        """tensors: (images, labels) of `data` that another loader already holds (shared, not copied)."""
        self.data, self.batch_size, self.train = data, batch_size, train
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.augment, self.scale_min, self.prefetch = augment and train, scale_min, prefetch
        # The whole cache in RAM as one tensor: 25k images at 84px are 0.5 GB.
        # Stored NCHW-contiguous once, so batches come out in the layout the model's convs expect
        # (a permuted view would hand them channels-last tensors, slower on CPU).
        self.images, self.labels = tensors or (
            torch.from_numpy(np.ascontiguousarray(np.asarray(data.images).transpose(0, 3, 1, 2))),
            torch.from_numpy(np.asarray(data.labels)),
        )
        self.device = torch.device(device)
        self.epoch = 0

    def view(self, seed: int, augment: bool) -> "BatchLoader":
        """Another pass over the same images at the same epoch, in the order (and augmentation) of
        another seed: e.g. BatchNorm calibration over the training set."""
        other = BatchLoader(
            self.data,
            self.batch_size,
            self.train,
            seed,
            self.rank,
            self.world_size,
            augment,
            self.scale_min,
            self.prefetch,
            self.device,
            tensors=(self.images, self.labels),
        )
        other.set_epoch(self.epoch)
        return other

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch."""
        n = len(self.labels)
        if self.train:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, "order"))
            order = torch.randperm(n, generator=g)
            order = order[: n - n % self.world_size]  # equal shares keep DDP ranks in step
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        m = len(self.indices())
        return m // self.batch_size if self.train else -(-m // self.batch_size)

    def _batches(self):
        idx = self.indices()
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, "augment", self.rank))
        for b in range(len(self)):
            sel = idx[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.images[sel]
            if self.device.type == "cuda":  # uint8 crosses the bus (4x less than float); augment on the GPU
                x = x.pin_memory().to(self.device, non_blocking=True)
            if self.augment:
                x = random_resized_crop_flip(x, g, scale=(self.scale_min, 1.0))
            yield x, self.labels[sel], sel

    def __iter__(self):
        if self.prefetch <= 0:
            yield from self._batches()
            return
        # A background thread prepares the next batches while the model runs; torch ops release the GIL.
        q: Queue = Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def work():
            try:
                for item in self._batches():
                    if stop.is_set():
                        return
                    q.put(item)
                q.put(None)
            except BaseException as e:  # surface loader errors in the consumer
                q.put(e)

        t = threading.Thread(target=work, daemon=True)
        t.start()
        try:
            while (item := q.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while not q.empty():
                q.get_nowait()
