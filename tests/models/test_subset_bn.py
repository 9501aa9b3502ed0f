"""Per-subset BatchNorm statistics: each subset normalised by its own statistics, in training and
at test time, with no learnable parameter added, and folded away when deployed for one subset."""

import pytest
import torch
from torch import nn

from prismlab.channels import ALL_SUBSETS, SUBSETS
from prismlab.errors import ConfigError
from prismlab.models import create_model
from prismlab.models.fuse import inference_form
from prismlab.models.subset_bn import SubsetBatchNorm2d, subset_index, use_subset


def model(name="baseline_cnn", **kw):
    torch.manual_seed(0)
    return create_model(name, num_classes=7, adapter="channelset", subset_bn=True, **kw)


def test_each_subset_updates_only_its_own_running_statistics():
    bn = SubsetBatchNorm2d(2, momentum=0.5)
    x = torch.cat([torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2), 4.0)], 1).repeat(2, 1, 1, 1)
    x[1] += 2.0  # per channel, four values each of {2, 4} and of {4, 6}: means 3 and 5, variance 1
    with use_subset(bn, SUBSETS["RB"]):
        bn(x)
    k = subset_index(SUBSETS["RB"])
    expect_mean = torch.zeros(len(ALL_SUBSETS), 2)
    expect_mean[k] = 0.5 * torch.tensor([3.0, 5.0])
    torch.testing.assert_close(bn.subset_mean, expect_mean)
    assert torch.allclose(bn.subset_var[k], torch.full((2,), 0.5 + 0.5 * 8 / 7))  # unbiased: 1 * 8/7
    others = [i for i in range(len(ALL_SUBSETS)) if i != k]
    assert (bn.subset_var[others] == 1).all() and bn.subset_batches.tolist() == [int(i == k) for i in range(8)]


def test_at_test_time_each_subset_is_normalised_by_its_own_statistics():
    bn = SubsetBatchNorm2d(1).eval()
    with torch.no_grad():
        bn.subset_mean[:, 0] = torch.arange(8.0)
        bn.subset_var[:, 0] = torch.arange(1.0, 9.0)
        bn.weight.fill_(2.0)
        bn.bias.fill_(1.0)
    x = torch.full((1, 1, 1, 1), 10.0)
    for name, ids in SUBSETS.items():
        k = ALL_SUBSETS.index(name)
        with use_subset(bn, ids):
            assert float(bn(x).detach()) == pytest.approx(2 * (10 - k) / (k + 1 + bn.eps) ** 0.5 + 1, rel=1e-6), name


def test_momentum_none_averages_each_subset_over_its_own_batches():
    bn = SubsetBatchNorm2d(1, momentum=None)
    for value, ids in [(1.0, (0,)), (10.0, (1, 2)), (3.0, (0,))]:
        with use_subset(bn, ids):
            bn(torch.full((2, 1, 2, 2), value))
    assert float(bn.subset_mean[subset_index((0,)), 0]) == pytest.approx(2.0)
    assert float(bn.subset_mean[subset_index((1, 2)), 0]) == pytest.approx(10.0)


def test_a_mixed_batch_gives_each_subset_its_own_batch_statistics():
    """In training, the chunks of one subset are normalised together and apart from the others':
    the mixed call equals one call per subset. With one shared set of statistics it does not (the
    check can fail)."""
    x = torch.randn(12, 3, 16, 16)
    chunks, ids = [x[:4], x[4:8, :1], x[8:, :2]], [(0, 1, 2), (0,), (0, 2)]
    for subset_bn in (True, False):
        torch.manual_seed(0)
        net = create_model("baseline_cnn", num_classes=7, adapter="channelset", subset_bn=subset_bn).train()
        with torch.no_grad():
            mixed = net(chunks, ids)
            alone = torch.cat([net(c, i) for c, i in zip(chunks, ids)])
        assert torch.allclose(mixed, alone, atol=1e-5) is subset_bn


def test_no_learnable_parameter_is_added_and_any_order_selects_the_same_statistics():
    plain = create_model("baseline_cnn", num_classes=7, adapter="channelset")
    net = model().eval()
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in plain.parameters())
    x = torch.randn(2, 2, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x, (0, 2)), net(x.flip(1), (2, 0)))


@pytest.mark.parametrize("name", ["baseline_cnn", "shallow"])
def test_deployed_for_a_subset_the_statistics_fold_into_the_convs(name):
    net = model(name)
    net.train()
    with torch.no_grad():  # statistics that differ by subset
        for ids in SUBSETS.values():
            net(torch.randn(8, len(ids), 32, 32) + ids[0], ids)
    net.eval()
    for subset, ids in SUBSETS.items():
        fused = inference_form(net, ids)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules()), subset
        x = torch.randn(2, len(ids), 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(fused(x, ids), net(x, ids), rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # deployed for RGB, an R input would get the wrong statistics: forms differ
        x = torch.randn(2, 1, 32, 32)
        assert not torch.allclose(inference_form(net)(x, (0,)), net(x, (0,)), atol=1e-4)


def test_a_checkpointed_model_rebuilds_with_its_statistics():
    net = model().train()
    with torch.no_grad():
        net(torch.randn(4, 1, 16, 16), (3,))
    again = create_model(**{k: v for k, v in net.spec.items() if k != "name"}, name=net.spec["name"])
    again.load_state_dict(net.state_dict())
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x, (3,)), net.eval()(x, (3,)))


def test_called_without_a_subset_it_says_how_to_call_it():
    with pytest.raises(RuntimeError, match="without a subset"):
        SubsetBatchNorm2d(2)(torch.randn(2, 2, 3, 3))


def test_a_channel_set_without_statistics_is_refused_in_one_line():
    net = create_model("baseline_cnn", num_classes=7, adapter="channelset", subset_bn=True).eval()
    with pytest.raises(ConfigError, match=r"channel ids \(0, 3\) are none of these \(4 ids declared\)"):
        net(torch.randn(1, 2, 8, 8), (0, 3))  # R with gray L: no statistics kept for it


def test_declared_extra_ids_get_statistics_for_every_set_that_holds_them():
    from prismlab.models.subset_bn import slots, subset_index

    assert slots()[:8] == tuple(SUBSETS[s] for s in ALL_SUBSETS) and len(slots()) == 8  # the named subsets only
    assert len(slots(5)) == 8 + 16 and slots(5)[:8] == slots()  # + every set holding NIR (id 4)
    assert subset_index((4, 0), 5) == subset_index((0, 4), 5) == slots(5).index((0, 4))
    torch.manual_seed(0)
    net = create_model(
        "baseline_cnn",
        num_classes=7,
        adapter="channelset",
        subset_bn=True,
        adapter_kw={"channel_names": ("R", "G", "B", "L", "NIR")},
    )
    x = torch.randn(8, 2, 8, 8)
    net.train()
    net([x[:4], x[4:, :1]], [(0, 4), (4,)])  # R+NIR and NIR alone, each with its own statistics
    bn = next(m for m in net.trunk.modules() if hasattr(m, "subset_batches"))
    assert bn.subset_batches[subset_index((0, 4), 5)] == 1 and bn.subset_batches[subset_index((4,), 5)] == 1
    net.eval()
    deployed = inference_form(net, (0, 4))
    assert torch.allclose(deployed(x, (0, 4)), net(x, (0, 4)), atol=1e-5)
