import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from prismlab.analysis.layers import count_layers
from prismlab.errors import ConfigError
from prismlab.models import create_model
from prismlab.models.fuse import inference_form
from prismlab.models.shallow import RepConv


def conv_bn_relu(cin, cout, **kw):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, **kw), nn.BatchNorm2d(cout), nn.ReLU())


def plain_net(act=None):
    """4 convs + linear; `act` (a module factory) replaces the ReLU after the second conv."""
    layers = [
        conv_bn_relu(3, 8),
        nn.Conv2d(8, 8, 3, padding=1),
        act() if act else nn.ReLU(),
        nn.MaxPool2d(2),
        conv_bn_relu(8, 16),
        conv_bn_relu(16, 16),
    ]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))


class DWAct(nn.Module):
    """A custom activation with a depthwise conv inside (VanillaNet's series activation)."""

    def __init__(self, c=8):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return self.bn(self.dw(F.relu(x)))


class Branches(nn.Module):
    """Two parallel branches, 3 convs and 1 conv, summed."""

    def __init__(self):
        super().__init__()
        self.long = nn.Sequential(*(nn.Conv2d(c, 8, 3, padding=1) for c in (3, 8, 8)))
        self.short = nn.Conv2d(3, 8, 1)

    def forward(self, x):
        return self.long(x) + self.short(x)


class FunctionalConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 3, 3, 3))

    def forward(self, x):
        return F.conv2d(x, self.weight, padding=1)


class Attention(nn.Module):
    def __init__(self, shape_check=False):
        super().__init__()
        self.shape_check = shape_check
        self.embed = nn.Linear(3, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.proj = nn.Parameter(torch.randn(8, 4))

    def forward(self, x):
        if self.shape_check and x.shape[1] != 3:  # shape-dependent Python control flow
            raise ValueError("want 3 channels")
        t = self.embed(x.flatten(2).transpose(1, 2))
        t = self.attn(t, t, t)[0]
        scores = t @ t.transpose(1, 2)  # input times input: no weight, not a layer
        return (scores @ t).mean(1) @ self.proj  # times a weight: a layer


def test_resnet34_counts_34_with_parallel_downsample():
    r = count_layers(torchvision.models.resnet34())
    assert (r.total, r.body) == (34, 32)
    assert r.path[0] == "conv1" and r.path[-1] == "fc"
    assert not any("downsample" in p for p in r.path)


def test_plain_net():
    r = count_layers(plain_net())
    assert (r.total, r.body) == (5, 3)
    assert r.path == ["0.0", "1", "4.0", "5.0", "8"]


def test_conv_inside_activation_is_counted():
    assert count_layers(plain_net(DWAct)).total == count_layers(plain_net()).total + 1
    assert "2.dw" in count_layers(plain_net(DWAct)).path


def test_parallel_branches_count_once():
    r = count_layers(Branches())
    assert r.total == 3
    assert r.path == ["long.0", "long.1", "long.2"]


def test_fused_repvgg_block_is_one_layer():
    block = RepConv(8, 8)  # 3x3, 1x1 and identity branches
    assert isinstance(inference_form(block), nn.Conv2d)
    assert count_layers(block).total == 1
    # The original keeps its training form: three branches, each with its BatchNorm.
    assert sum(isinstance(m, nn.BatchNorm2d) for m in block.modules()) == 3


def test_functional_conv_counts():
    assert count_layers(FunctionalConv()).total == 1
    net = nn.Sequential(FunctionalConv(), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    assert count_layers(net).total == 2


def test_attention_projections_and_weight_matmul_count():
    # embed (1) + attention in/out projections (2) + @ proj (1); the x @ x.T products are free
    r = count_layers(Attention(), input_size=4)
    assert r.total == 4
    assert r.path[:3] == ["embed", "attn.in_proj", "attn.out_proj"]
    assert r.path[3].startswith("matmul")  # a top-level function call is named after its graph node


@pytest.mark.parametrize("make", [plain_net, Branches, FunctionalConv, Attention, lambda: plain_net(DWAct)])
def test_symbolic_and_concrete_traces_agree(make):
    m = make()
    symbolic, concrete = (count_layers(m, input_size=8, trace=t).total for t in ("symbolic", "concrete"))
    assert symbolic == concrete


def test_auto_falls_back_to_concrete_trace_for_control_flow():
    m = Attention(shape_check=True)
    with pytest.raises(Exception):
        count_layers(m, trace="symbolic")
    r = count_layers(m, input_size=4)
    assert r.total == 4
    assert r.path == ["embed", "attn", "attn.out_proj", "proj"]  # named after the parameters used


def test_prismlab_model_traced_with_channels_argument():
    r = count_layers(create_model("baseline_cnn"))
    assert (r.total, r.body) == (5, 3)
    assert r.path[0] == "trunk.features.0"


def test_outermost_fuse_replaces_the_module_and_original_is_untouched():
    class Fusable(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.b(self.a(x))

        def fuse(self):
            return nn.Conv2d(3, 3, 1)

    net = nn.Sequential(Fusable(), nn.Conv2d(3, 3, 1))
    assert count_layers(net).total == 2
    assert isinstance(inference_form(net)[0], nn.Conv2d)
    assert isinstance(net[0], Fusable) and count_layers(net, trace="concrete").total == 2
    assert net.training  # count_layers worked on a copy


def test_unknown_trace_mode():
    with pytest.raises(ConfigError, match="trace mode"):
        count_layers(plain_net(), trace="magic")
