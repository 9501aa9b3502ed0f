"""The inference form: BatchNorm folded into the conv before it, with the same outputs."""

import pytest
import torch
from torch import nn

from prismlab.models import create_model
from prismlab.models.fuse import ConvBN, conv_from, inference_form
from prismlab.models.shallow import DeepTrainConv, RepConv


def test_convbn_kernel_is_the_pair_folded():
    torch.manual_seed(0)
    block = ConvBN(3, 5, 3, stride=2)
    with torch.no_grad():  # statistics away from the identity, so the fold has something to do
        block.bn.running_mean.normal_()
        block.bn.running_var.uniform_(0.5, 2.0)
        block.bn.weight.normal_()
        block.bn.bias.normal_()
    block.eval()
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(conv_from(*block.kernel(), stride=2)(x), block(x))


def test_inference_form_folds_every_batchnorm_resnet34_included():
    """Speed and size are compared between deployable forms: ResNet34's BatchNorms are folded into
    its convs just as the shallow net's are, with the same outputs."""
    for name in ("resnet34", "shallow"):
        model = create_model(name, num_classes=10).eval()
        fused = inference_form(model)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules()), name
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            assert torch.allclose(model(x), fused(x), rtol=1e-4, atol=1e-4), name


# Every size from 1 to 12 and a few odd ones: the stride-2 convs and the ceil-mode max-pools (the
# shallow net's body, the parallel net's conv block) meet odd and 1-pixel maps here; at 64px every
# map they see is even.
SMALL_SIZES = [(s, s) for s in range(1, 13)] + [(17, 17), (33, 33), (5, 11), (33, 2)]
FUSED_MODELS = ["shallow", "shallow_xs", "shallow_s", "shallow_l", "seed_parallel"]


def forms(name: str, random_norms) -> tuple[nn.Module, nn.Module]:
    """The registered model (eval, BN statistics drawn at random) and its inference form."""
    torch.manual_seed(0)
    model = random_norms(create_model(name, num_classes=10))
    return model, inference_form(model)


def rel_error(model: nn.Module, fused: nn.Module, size: tuple[int, int]) -> float:
    """max |fused - model| / max |model| on a random batch; inf where the fused form fails to run."""
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(size[0] * 100 + size[1]))
    with torch.no_grad():
        ref = model(x)
        try:
            out = fused(x)
        except RuntimeError:  # e.g. a pool whose output would be 0 pixels
            return float("inf")
    return float((out - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("name", FUSED_MODELS)
def test_inference_form_has_the_same_logits_at_small_and_odd_sizes(name, random_norms):
    model, fused = forms(name, random_norms)
    assert not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, RepConv, DeepTrainConv)) for m in fused.modules())
    errors = {size: rel_error(model, fused, size) for size in SMALL_SIZES}
    assert max(errors.values()) < 1e-4, errors


@pytest.mark.parametrize("name", ["shallow", "seed_parallel"])
def test_the_size_check_catches_one_wrong_fused_weight(name, random_norms):
    """A check that can fail: one weight of the fused stem's centre tap (the only tap a 1-pixel input
    reaches) off by a tenth of the largest weight is caught at every size."""
    model, fused = forms(name, random_norms)
    stem = next(m for m in fused.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    with torch.no_grad():
        stem.weight[0, 0, 1, 1] += 0.1 * stem.weight.abs().max()
    errors = {size: rel_error(model, fused, size) for size in SMALL_SIZES}
    assert min(errors.values()) > 1e-4, errors


def pools_an_odd_map(size: tuple[int, int], halvings: int, pools: int) -> bool:
    """Whether a map of `size`, halved (rounding up) `halvings` times by strided convs, meets an odd
    side at one of `pools` 2x2 max-pools in a row (where floor and ceil mode differ)."""
    for side in size:
        side = -(-side // 2**halvings)
        for _ in range(pools):
            if side % 2:
                return True
            side = -(-side // 2)
    return False


@pytest.mark.parametrize("name,halvings,pools", [("shallow", 1, 3), ("seed_parallel", 2, 2)])
def test_the_small_sizes_catch_a_floor_mode_pool_that_64px_misses(name, halvings, pools, random_norms):
    """Why the sizes above: a fused form whose max-pools round down agrees at 64px, where every map
    they pool is even, and is caught at exactly the sizes where some pooled map is odd."""
    model, fused = forms(name, random_norms)
    for m in fused.modules():
        if isinstance(m, nn.MaxPool2d):
            m.ceil_mode = False
    assert rel_error(model, fused, (64, 64)) < 1e-4
    caught = {size for size in SMALL_SIZES if rel_error(model, fused, size) > 1e-4}
    expected = {size for size in SMALL_SIZES if pools_an_odd_map(size, halvings, pools)}
    assert caught == expected and len(expected) > len(SMALL_SIZES) // 2, (caught, expected)
