"""Task 2's rows beyond ResNet34 and ours: torchvision's ResNets with the low-resolution stem, and
ours at other widths (each still 4 body layers at inference)."""

import pytest
import torch

from prismlab.analysis.flops import count_flops
from prismlab.analysis.layers import count_layers
from prismlab.models import create_model
from prismlab.models.fuse import inference_form

BLOCKS = {"resnet18_lowres": (2, 2, 2, 2), "resnet34_lowres": (3, 4, 6, 3)}


def hand_flops(blocks, size, classes=50):
    """Multiply-adds x 2 of a ResNet with basic blocks and a 3x3 stride-1 stem, counted by hand."""
    conv = lambda cin, cout, k, side: 2 * cin * cout * k * k * side * side  # noqa: E731
    total, cin, side = conv(3, 64, 3, size), 64, size
    for stage, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
        for b in range(n):
            stride = 2 if stage > 0 and b == 0 else 1
            side_out = -(-side // stride)
            total += conv(cin, width, 3, side_out) + conv(width, width, 3, side_out)
            if stride == 2 or cin != width:
                total += conv(cin, width, 1, side_out)  # the projection shortcut
            cin, side = width, side_out
    return total + 2 * 512 * classes


def watch(trunk, *names):
    """{name: output shape} of the named children, filled as the trunk runs."""
    seen = {}
    for n in names:
        getattr(trunk, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, tuple(o.shape)))
    return seen


@pytest.mark.parametrize("name", list(BLOCKS))
@pytest.mark.parametrize("size", [32, 64])
def test_lowres_resnets_keep_the_resolution_to_the_first_stage_and_cost_what_a_hand_count_says(name, size):
    model = create_model(name).eval()
    seen = watch(model.trunk, "layer1", "layer4")
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 50)
    assert seen["layer1"][-2:] == (size, size) and seen["layer4"][-2:] == (size // 8, size // 8)
    assert count_flops(inference_form(model), size) == hand_flops(BLOCKS[name], size)


def test_the_standard_stem_is_4x_smaller_than_the_low_resolution_one():
    model = create_model("resnet34").eval()
    seen = watch(model.trunk, "layer1")
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert seen["layer1"][-2:] == (16, 16)


@pytest.mark.parametrize("name, total", [("resnet18_lowres", 18), ("resnet34_lowres", 34), ("resnet34", 34)])
def test_resnet_layer_counts(name, total):
    lc = count_layers(create_model(name), 32)
    assert (lc.total, lc.body) == (total, total - 2)


@pytest.mark.parametrize("name", ["shallow_xs", "shallow_s", "shallow", "shallow_l"])
def test_every_width_of_ours_fuses_to_4_body_layers_with_the_same_outputs(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(2):  # weights and BatchNorm statistics away from their init
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.randint(0, 10, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    fused = inference_form(model)
    lc = count_layers(model, 32)
    assert (lc.body, lc.total) == (4, 6)
    for size in (32, 33, 17):  # odd sizes: ceil-mode pooling in both forms alike
        x = torch.randn(3, 3, size, size)
        with torch.no_grad():
            ref, out = model(x), fused(x)
        assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()
