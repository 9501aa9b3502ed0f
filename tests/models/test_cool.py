import pytest
import torch

from prismlab.analysis.layers import count_layers
from prismlab.models import create_model


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (48, 80)])
def test_forward_shapes(size):
    model = create_model("seed_cool_model", num_classes=50).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, *size)).shape == (2, 50)
        assert model(torch.randn(2, 1, *size), (3,)).shape == (2, 50)  # gray, through the adapter


def test_layer_count():
    # three block convs (the 1x1 shortcuts run beside them), the attention conv, the linear head
    r = count_layers(create_model("seed_cool_model"))
    assert (r.total, r.body) == (5, 3)
    assert r.path == ["trunk.features.0.block.0", "trunk.features.2.block.0", "trunk.features.4.block.0",
                      "trunk.attention.conv", "trunk.head.3"]
