"""The baselines' adapters against hand computations: the original report's sigmoid and
pool_channel_attention, and dynamic convolution."""

from __future__ import annotations

import pytest
import torch

from prismlab.data.channels import to_subset
from prismlab.errors import ConfigError
from prismlab.models import make_adapter


def _batch(subset: str, size=(32, 32), n: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return to_subset(torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=g), subset)


def test_sigmoid_starts_as_squashed_naive_input():
    ad = make_adapter("sigmoid")
    x, ids = _batch("RB")
    out = ad(x, ids)
    assert torch.allclose(out, torch.sigmoid(make_adapter("naive")(x, ids)))
    assert torch.allclose(out[:, 1], torch.full_like(out[:, 1], 0.5))  # the zero-filled G
    out.sum().backward()
    assert ad.scale.grad.abs().sum() > 0 and ad.shift.grad.abs().sum() > 0


def test_sigmoid_maps_known_pixels_to_known_values():
    # x' = sigmoid(a_c * x + b_c) on the zero-filled input, per channel c
    ad = make_adapter("sigmoid")
    with torch.no_grad():
        ad.scale.copy_(torch.tensor([2.0, 1.0, 0.5]).view(1, 3, 1, 1))
        ad.shift.copy_(torch.tensor([0.0, -1.0, 1.0]).view(1, 3, 1, 1))
    rb = torch.tensor([[[[0.5, -1.0]], [[2.0, 0.0]]]])  # R and B at two pixels
    out = ad(rb, (0, 2))
    # R: sigmoid(2 * 0.5) and sigmoid(2 * -1); G, zero-filled: sigmoid(-1); B: sigmoid(0.5 * 2 + 1) and sigmoid(1)
    want = torch.tensor([[0.731059, 0.119203], [0.268941, 0.268941], [0.880797, 0.731059]])
    torch.testing.assert_close(out[0, :, 0], want)
    gray = torch.tensor([[[[0.5, -1.0]]]])  # L is repeated into R, G and B before the per-channel map
    want = torch.tensor([[0.731059, 0.119203], [0.377541, 0.119203], [0.777300, 0.622459]])
    torch.testing.assert_close(ad(gray, (3,))[0, :, 0], want)


def test_pool_channel_attention_gates_the_channel_mean():
    ad = make_adapter("pool_channel_attention")
    with torch.no_grad():
        ad.conv.weight.zero_()
        ad.conv.bias.zero_()
    x, ids = _batch("RGB")
    # Zero conv -> gate 0.5 everywhere.
    assert torch.allclose(ad(x, ids), 0.5 * x.mean(1, keepdim=True))
    with torch.no_grad():
        ad.conv.weight[0, 1] = 1.0  # a gate driven by the max map alone
    gate = torch.sigmoid(torch.nn.functional.conv2d(x.amax(1, keepdim=True), torch.ones(1, 1, 7, 7), padding=3))
    assert torch.allclose(ad(x, ids), gate * x.mean(1, keepdim=True), atol=1e-6)


def test_dynamic_conv_applies_each_images_own_mixed_kernel():
    # The grouped conv must equal a plain conv per image with that image's attention-mixed kernel.
    torch.manual_seed(0)
    ad = make_adapter("dynamic_conv", kernels=3, temperature=1.0)
    with torch.no_grad():
        ad.weight.normal_()
    x, ids = _batch("RB", n=3)
    out = ad(x, ids)
    filled = make_adapter("naive")(x, ids)
    mask = torch.tensor([[1.0, 0.0, 1.0]]).expand(3, 3)
    pi = ad.attention(torch.cat([filled.mean((2, 3)), mask], 1)).softmax(1)
    assert not torch.allclose(pi[0], pi[1])  # the attention depends on the image
    for i in range(3):
        w = (pi[i, :, None, None, None, None] * ad.weight).sum(0)
        b = pi[i] @ ad.bias
        expected = filled[i : i + 1] + torch.nn.functional.conv2d(filled[i : i + 1], w, b, padding=1)
        torch.testing.assert_close(out[i : i + 1], expected)


def test_dynamic_conv_starts_close_to_naive_with_kernels_that_differ():
    ad = make_adapter("dynamic_conv")
    x, ids = _batch("G")
    naive = make_adapter("naive")(x, ids)
    assert (ad(x, ids) - naive).abs().max() < 0.5 * naive.abs().max()
    assert torch.pdist(ad.weight.flatten(1)).min() > 0  # 4 kernels, every pair apart
    with pytest.raises(ConfigError, match="odd kernel_size"):
        make_adapter("dynamic_conv", kernel_size=2)
