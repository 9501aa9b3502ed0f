"""The cool model: its spatial gate against numbers computed by hand, the gate's role in the
logits, the residual block, the gray policy through the adapter, and the layer count."""

import math

import pytest
import torch

from prismlab.analysis.layers import count_layers
from prismlab.models import create_model
from prismlab.models.cool import ResBlock, SpatialAttention


def _sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_spatial_gate_equals_a_hand_computation():
    att = SpatialAttention(7)
    with torch.no_grad():  # a centre-only kernel: gate = sigmoid(mean - max + 0.5) per pixel
        att.conv.weight.zero_()
        att.conv.weight[0, :, 3, 3] = torch.tensor([1.0, -1.0])
        att.conv.bias.fill_(0.5)
    # two pixels with channels (1, 3) and (-2, 4): mean - max = 2 - 3 and 1 - 4
    x = torch.tensor([[[[1.0, -2.0]], [[3.0, 4.0]]]])
    gate = torch.tensor([_sigmoid(-0.5), _sigmoid(-2.5)])
    torch.testing.assert_close(att(x), x * gate.view(1, 1, 1, 2))
    torch.testing.assert_close(att(x)[0, :, 0, 0], torch.tensor([0.377541, 1.132622]))


def test_the_gate_scales_the_logits_around_the_head_bias():
    """A constant gate g (zero kernel, bias b) gives logits = bias + g * W @ GAP(features): the
    logits' distance from the head's bias is proportional to sigmoid(b)."""
    torch.manual_seed(0)
    model = create_model("seed_cool_model", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    head_bias = model.trunk.head[3].bias
    moved = {}
    for b in (-1.0, 2.0):
        with torch.no_grad():
            model.trunk.attention.conv.weight.zero_()
            model.trunk.attention.conv.bias.fill_(b)
            moved[b] = model(x) - head_bias
    torch.testing.assert_close(moved[2.0] * _sigmoid(-1.0), moved[-1.0] * _sigmoid(2.0), rtol=1e-4, atol=1e-6)


def test_resblock_adds_the_shortcut_to_the_conv_block():
    torch.manual_seed(0)
    block = ResBlock(3, 4).eval()
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        full = block(x)
        block.block[1].weight.zero_()  # BN scale 0 and shift -1: the conv branch is ReLU(-1) = 0
        block.block[1].bias.fill_(-1.0)
        torch.testing.assert_close(block(x), block.shortcut(x))
        assert not torch.allclose(full, block(x))  # the conv branch did contribute before


@pytest.mark.parametrize("size", [(32, 32), (48, 80)])
def test_gray_through_the_naive_adapter_is_the_gray_image_as_rgb(size):
    # and each image's logits are its own: eval mode mixes nothing across the batch
    torch.manual_seed(0)
    model = create_model("seed_cool_model", num_classes=50).eval()
    gray = torch.randn(2, 1, *size)
    with torch.no_grad():
        logits = model(gray, (3,))
        torch.testing.assert_close(logits, model(gray.expand(-1, 3, -1, -1)))
        torch.testing.assert_close(logits[1:], model(gray[1:], (3,)))


def test_layer_count():
    # three block convs (the 1x1 shortcuts run beside them), the attention conv, the linear head
    r = count_layers(create_model("seed_cool_model"))
    assert (r.total, r.body) == (5, 3)
    assert r.path == [
        "trunk.features.0.block.0",
        "trunk.features.2.block.0",
        "trunk.features.4.block.0",
        "trunk.attention.conv",
        "trunk.head.3",
    ]
