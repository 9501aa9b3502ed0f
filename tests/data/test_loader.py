"""BatchLoader: order is a pure function of (seed, epoch); DDP ranks split it; augmented batches are sane."""

import numpy as np
import pytest
import torch

from prismlab.data.cache import CachedSplit
from prismlab.data.loader import BatchLoader


@pytest.fixture
def data() -> CachedSplit:
    # 51 images: odd, so a 2-rank split has to drop one; pixel value = index, to see which image came.
    n, s = 51, 12
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    return CachedSplit(
        images=images,
        labels=np.arange(n) % 5,
        gray=np.zeros(n, bool),
        num_classes=5,
        size=s,
        source="memory",
        skipped=[],
    )


def epoch_indices(loader, epoch):
    loader.set_epoch(epoch)
    return torch.cat([idx for _, _, idx in loader])


def test_train_order_depends_on_seed_and_epoch_only(data):
    a, b = BatchLoader(data, 8, train=True, seed=3), BatchLoader(data, 8, train=True, seed=3)
    e0, e1 = epoch_indices(a, 0), epoch_indices(a, 1)
    assert torch.equal(e0, epoch_indices(b, 0))  # same (seed, epoch): same order, from a fresh loader
    assert torch.equal(e1, epoch_indices(b, 1))
    assert not torch.equal(e0, e1)
    assert not torch.equal(e0, epoch_indices(BatchLoader(data, 8, train=True, seed=4), 0))
    assert len(e0) == 48 and len(set(e0.tolist())) == 48  # 6 full batches, last partial one dropped


def test_batches_repeat_exactly_with_and_without_prefetch(data):
    def batches(prefetch):
        loader = BatchLoader(data, 8, train=True, seed=1, prefetch=prefetch)
        loader.set_epoch(2)
        return list(loader)

    plain, threaded = batches(0), batches(2)
    assert len(plain) == len(threaded) == 6
    for (x0, y0, i0), (x1, y1, i1) in zip(plain, threaded):
        assert torch.equal(x0, x1) and torch.equal(y0, y1) and torch.equal(i0, i1)


@pytest.mark.parametrize("epoch", [0, 5])
def test_two_ranks_take_disjoint_halves(data, epoch):
    ranks = [BatchLoader(data, 5, train=True, seed=7, rank=r, world_size=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(epoch)
    idx = [set(r.indices().tolist()) for r in ranks]
    assert len(idx[0]) == len(idx[1]) == 25  # equal shares keep the ranks' step counts equal
    assert not idx[0] & idx[1]
    whole = BatchLoader(data, 5, train=True, seed=7)
    whole.set_epoch(epoch)
    assert idx[0] | idx[1] == set(whole.indices()[:50].tolist())  # the same permutation, truncated
    assert len(ranks[0]) == len(ranks[1]) == 5


def test_augmented_batches_are_float_in_unit_range(data):
    loader = BatchLoader(data, 8, train=True, seed=0)
    x, y, idx = next(iter(loader))
    assert x.dtype == torch.float32 and x.shape == (8, 3, 12, 12)
    assert x.min() >= 0 and x.max() <= 1
    assert torch.equal(y, torch.from_numpy(data.labels[idx.numpy()]))
    plain = torch.from_numpy(data.images[idx.numpy()]).permute(0, 3, 1, 2).float() / 255
    assert not torch.allclose(x, plain)  # it did augment


def test_no_augment_gives_the_cached_pixels(data):
    x, _, idx = next(iter(BatchLoader(data, 8, train=True, seed=0, augment=False)))
    assert x.dtype == torch.uint8
    assert torch.equal(x, torch.from_numpy(data.images[idx.numpy()]).permute(0, 3, 1, 2))


def test_eval_order_is_stable_and_complete(data):
    loader = BatchLoader(data, 8, train=False, seed=9)
    batches = list(loader)
    assert len(loader) == len(batches) == 7 and len(batches[-1][1]) == 3  # the partial batch is kept
    loader.set_epoch(4)
    again = list(loader)
    assert len(again) == len(batches)
    for (x0, _, i0), (x1, _, i1) in zip(batches, again):
        assert torch.equal(i0, i1) and torch.equal(x0, x1) and x0.dtype == torch.uint8
    assert torch.cat([i for _, _, i in batches]).tolist() == list(range(51))
    assert batches[0][0][:, 0, 0, 0].tolist() == list(range(8))


def test_eval_under_two_ranks_covers_everything_once(data):
    got = [torch.cat([i for _, _, i in BatchLoader(data, 8, train=False, rank=r, world_size=2)]) for r in (0, 1)]
    assert sorted(torch.cat(got).tolist()) == list(range(51))


def test_crop_of_the_whole_image_without_flip_is_the_identity_and_flip_mirrors():
    from prismlab.data.augment import random_resized_crop_flip

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    same = random_resized_crop_flip(x, g, scale=(1, 1), ratio=(1, 1), flip=False)
    assert torch.allclose(same, x.float() / 255, atol=1e-5)
    flipped = random_resized_crop_flip(x, g, scale=(1, 1), ratio=(1, 1), flip=True)
    kinds = []
    for i in range(len(x)):
        as_is, mirrored = x[i].float() / 255, x[i].flip(-1).float() / 255
        kinds.append(
            "as is"
            if torch.allclose(flipped[i], as_is, atol=1e-5)
            else "mirrored"
            if torch.allclose(flipped[i], mirrored, atol=1e-5)
            else "other"
        )
    # Each image either way, and both ways among 32 (all one way: a chance of 2 in 4 billion).
    assert set(kinds) == {"as is", "mirrored"}


def test_the_crop_is_torchvision_style_affine_sampling():
    # The grid is built as an outer sum; it must sample exactly where affine_grid's 2x3 matrices do,
    # with the same random draws (area, log-ratio, centre, flip, in that order).
    import math

    import torch.nn.functional as F

    from prismlab.data.augment import random_resized_crop_flip

    x = torch.randint(0, 256, (16, 3, 20, 28), dtype=torch.uint8)
    got = random_resized_crop_flip(x, torch.Generator().manual_seed(5))
    g, n = torch.Generator().manual_seed(5), len(x)
    area = torch.empty(n).uniform_(0.35, 1.0, generator=g)
    r = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g).exp()
    w, h = (area * r).sqrt().clamp(max=1.0), (area / r).sqrt().clamp(max=1.0)
    cx, cy = (torch.rand(n, generator=g) * 2 - 1) * (1 - w), (torch.rand(n, generator=g) * 2 - 1) * (1 - h)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * sign, cx, h, cy
    grid = F.affine_grid(theta, [n, 3, 20, 28], align_corners=False)
    want = F.grid_sample(x.float() / 255, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, x.float() / 255, atol=0.1)


def test_a_view_shares_the_images_and_takes_the_order_of_its_seed(data):
    loader = BatchLoader(data, 8, train=True, seed=3)
    loader.set_epoch(4)
    view = loader.view(seed=4, augment=False)
    assert view.images is loader.images and view.labels is loader.labels  # shared, not copied
    assert view.epoch == 4 and not view.augment and loader.augment  # the original is left as it was
    other = BatchLoader(data, 8, train=True, seed=4)
    other.set_epoch(4)
    assert torch.equal(view.indices(), other.indices())
    assert not torch.equal(view.indices(), loader.indices())


def test_epoch_seeds_are_the_values_runs_were_trained_with():
    """Changing a formula would change every result: these are pinned."""
    from prismlab.seeds import epoch_seed

    assert epoch_seed(3, 5, "global") == 3_000_014
    assert epoch_seed(3, 5, "order") == 300_014
    assert epoch_seed(3, 5, "augment", rank=1) == 300_014 + 2 * 7_919
    split = CachedSplit(
        images=np.zeros((10, 2, 2, 3), np.uint8),
        labels=np.arange(10),
        gray=np.zeros(10, bool),
        num_classes=10,
        size=2,
        source="m",
        skipped=[],
    )
    loader = BatchLoader(split, 2, train=True, seed=3)
    loader.set_epoch(5)
    assert torch.equal(loader.indices(), torch.randperm(10, generator=torch.Generator().manual_seed(300_014)))
