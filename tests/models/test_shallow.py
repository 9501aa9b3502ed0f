import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prismlab.analysis.layers import count_layers
from prismlab.models import create_model
from prismlab.models.shallow import AnnealedReLU, DeepTrainConv, RepConv, ShallowNet

SMALL = dict(widths=(8, 16, 16, 32), stem_width=8)  # the real design's shape, narrow enough for CPU tests


def train_a_little(model: nn.Module, steps: int = 3, size: int = 32) -> None:
    """A few SGD steps on random data, so weights and BN running statistics are away from their init."""
    torch.manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(torch.randn(8, 3, size, size)), torch.randint(0, 10, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_fused_equals_training_form(lam):
    torch.manual_seed(0)
    net = ShallowNet(10, **SMALL)
    net.set_act_lambda(lam)
    train_a_little(net)
    assert net.net.stem.kxk.bn.running_var.sub(1).abs().max() > 1e-3  # BN statistics moved
    fused = net.fuse()
    x = torch.randn(4, 3, 40, 36)
    with torch.no_grad():
        ref, out = net(x), fused(x)
    assert rel_err(out, ref) < 1e-4
    assert not any(isinstance(m, (nn.BatchNorm2d, RepConv, DeepTrainConv)) for m in fused.modules())


@pytest.mark.parametrize("cin,cout,stride", [(8, 8, 1), (8, 16, 1), (8, 8, 2)])
def test_repconv_fuses_exactly(cin, cout, stride):
    torch.manual_seed(0)
    block = RepConv(cin, cout, 3, stride)
    assert (block.identity is not None) == (cin == cout and stride == 1)
    for bn in [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]:  # non-trivial BN folding
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 2), bn.bias.data.uniform_(-1, 1)
    block.eval()
    x = torch.randn(2, cin, 9, 9)
    with torch.no_grad():
        assert rel_err(block.fuse()(x), block(x)) < 1e-4


def test_layer_count_at_inference():
    net = ShallowNet(10, **SMALL)
    train_a_little(net)
    r = count_layers(net.fuse())
    assert (r.total, r.body) == (6, 4)
    assert r.path == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    # Mid-anneal the activation is still a ReLU: both convs of each body layer stay and are counted.
    net.set_act_lambda(0.5)
    assert count_layers(net).body == 8


def test_registered_model_is_six_layers_with_any_adapter_in_front():
    model = create_model("shallow", num_classes=50)
    r = count_layers(model)
    assert (r.total, r.body) == (6, 4)
    assert r.path[0] == "trunk.stem" and r.path[-1] == "trunk.head"
    assert count_layers(create_model("shallow_s")).body == 4
    assert isinstance(model.trunk.net.layer1, DeepTrainConv)  # counting fused a copy


@pytest.mark.parametrize("lam", [0.5, 1.0])
@pytest.mark.parametrize(
    "size",
    [(32, 32), (64, 64), (84, 84), (48, 80), (8, 8), (1, 1), (3, 3), (5, 5), (7, 7), (17, 17), (33, 33), (5, 11)],
)
def test_any_input_size_and_the_same_logits_fused(size, lam, random_norms):
    """Small and odd sizes are where the ceil-mode pools meet odd and 1-pixel maps; mid-anneal the
    fused form keeps both convs of each body layer. (tests/models/test_fuse.py shows the comparison
    failing on a wrong fused weight or pool.)"""
    torch.manual_seed(0)
    net = random_norms(ShallowNet(50, **SMALL))
    net.set_act_lambda(lam)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ref, out = net(x), net.fuse()(x)
    assert ref.shape == (2, 50)
    assert out.shape == (2, 50)
    assert rel_err(out, ref) < 1e-4


def test_annealing_schedule():
    net = ShallowNet(10, **SMALL)
    assert net.act_lambda == 1.0  # a fresh model is already in its mergeable form
    lams = []
    for epoch in range(5):
        net.on_epoch(epoch, 5)
        lams.append(net.act_lambda)
    assert lams[0] == 0.0 and lams[-2:] == [1.0, 1.0]
    assert lams == sorted(lams) and 0 < lams[1] < 1
    net.on_epoch(0, 1)  # a one-epoch run trains the mergeable form throughout
    assert net.act_lambda == 1.0
    with pytest.raises(ValueError):
        net.set_act_lambda(1.5)
    plain = ShallowNet(10, deep_train=False, **SMALL)
    plain.on_epoch(0, 5)
    assert not any(isinstance(m, AnnealedReLU) for m in plain.modules())
    assert count_layers(plain).body == 4


def test_lambda_travels_in_the_state_dict():
    a, b = ShallowNet(10, **SMALL), ShallowNet(10, **SMALL)
    a.set_act_lambda(0.25)
    b.load_state_dict(a.state_dict())
    assert b.act_lambda == 0.25


def test_only_fully_annealed_weights_are_deployable():
    """The trainer keeps best.pt to deployable weights: half-annealed ones fuse to twice the depth."""
    from prismlab.engine.train import deployable
    from prismlab.models import create_model

    model = create_model("shallow", num_classes=10)
    model.trunk.on_epoch(0, 4)
    assert not deployable(model)
    model.trunk.on_epoch(3, 4)
    assert deployable(model) and count_layers(model, 32).body == 4
