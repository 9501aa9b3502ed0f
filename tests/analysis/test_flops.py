import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prismlab.analysis.flops import count_flops, count_params
from prismlab.errors import ConfigError
from prismlab.models.base import Classifier, NaiveAdapter


class FunctionalConv(nn.Module):
    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().clone())

    def forward(self, x):
        return F.conv2d(x, self.weight, padding=1)


def test_known_conv_flops():
    cin, cout, k, h, w = 3, 8, 3, 16, 12
    conv = nn.Conv2d(cin, cout, k, padding=1, bias=False)
    assert count_flops(conv, input_size=(h, w)) == 2 * cin * cout * k * k * h * w


def test_functional_conv_counted_like_module():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_flops(FunctionalConv(conv), 16) == count_flops(conv, 16) > 0


def test_linear_flops_and_params():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
    assert count_flops(net, 4) == 2 * 48 * 10
    assert count_params(net) == 48 * 10 + 10


def test_channels_forwarded_to_prismlab_models():
    seen = []

    class Trunk(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1, bias=False)

        def forward(self, x):
            seen.append(x.shape[1])
            return self.conv(x)

    model = Classifier(NaiveAdapter(), Trunk())
    assert count_flops(model, 8, channels=(0, 2)) == 2 * 3 * 4 * 64  # the naive adapter fills in G
    assert count_flops(model, 8, channels=(3,)) == 2 * 3 * 4 * 64
    assert seen == [3, 3]


def test_mode_restored_and_channels_rejected_for_plain_modules():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train()
    count_flops(net, 8)
    assert net.training
    with pytest.raises(ConfigError, match="channels"):
        count_flops(net, 8, channels=(0,))
    with torch.no_grad():
        assert net(torch.randn(2, 3, 8, 8)).shape == (2, 4, 8, 8)
