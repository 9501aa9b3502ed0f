"""One graph for every subset (prismlab.models.any_subset) against the per-subset model."""

import itertools

import pytest
import torch

from prismlab.channels import SUBSETS
from prismlab.errors import ConfigError
from prismlab.models import create_model
from prismlab.models.any_subset import AnySubset, Stacked, full_input
from prismlab.models.subset_bn import slots


def trained_like(net):
    """Per-subset statistics that differ, and the shallow net's activation annealed (fusable)."""
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if hasattr(m, "subset_mean"):
            m.subset_mean.copy_(torch.randn(m.subset_mean.shape, generator=gen))
            m.subset_var.copy_(torch.rand(m.subset_var.shape, generator=gen) + 0.5)
        if hasattr(m, "lam"):
            m.lam.fill_(1.0)
    return net.eval()


@pytest.mark.parametrize(
    "kw",
    [
        {"subset_bn": True},
        {"subset_bn": True, "adapter_kw": {"pool": "attention"}},
        {"adapter_kw": {"set_path": False}},
    ],
    ids=["subset_bn", "attention", "linear"],
)
def test_one_graph_equals_the_model_on_every_subset(kw):
    torch.manual_seed(0)
    net = trained_like(create_model("shallow", num_classes=5, adapter="channelset", **kw))
    one = AnySubset(net).eval()
    x = torch.randn(2, 4, 20, 20)
    with torch.no_grad():
        for ids in SUBSETS.values():
            want = net(x[:, list(ids)], ids)
            assert torch.allclose(one(*full_input(x[:, list(ids)], ids, 4)), want, atol=1e-5)
            # the channels' order does not matter: the same set given backwards
            back = tuple(reversed(ids))
            assert torch.allclose(one(*full_input(x[:, list(back)], back, 4)), want, atol=1e-5)
    # only what per-subset statistics change is stacked: the folded convs, 8 copies each
    stacked = [m for m in one.modules() if isinstance(m, Stacked)]
    assert bool(stacked) == kw.get("subset_bn", False)
    assert all(m.weight.shape[0] == 8 for m in stacked if hasattr(m, "weight"))


def test_the_slot_is_what_makes_subsets_differ():
    """A check that can fail: R's input read with RGB's slot gives other logits."""
    torch.manual_seed(0)
    net = trained_like(create_model("shallow", num_classes=5, adapter="channelset", subset_bn=True))
    one = AnySubset(net).eval()
    image, present = full_input(torch.randn(2, 1, 16, 16), (0,), 4)
    with torch.no_grad():
        right = one(image, present)
        one.slot_of[1] = one.subsets.index((0, 1, 2))  # the mask of R alone (binary 0001) -> RGB's slot
        wrong = one(image, present)
    assert not torch.allclose(right, wrong, atol=1e-3)


def test_a_mask_that_is_none_of_the_subsets_gives_nan():
    net = trained_like(create_model("baseline_cnn", num_classes=5, adapter="channelset", subset_bn=True))
    one = AnySubset(net).eval()
    image = torch.randn(2, 4, 12, 12)
    with torch.no_grad():
        assert torch.isnan(one(image, torch.ones(4))).all()  # R+G+B+L: no statistics kept for it
        assert not torch.isnan(one(image, torch.tensor([1.0, 1.0, 1.0, 0.0]))).any()


def test_declared_extra_ids_get_a_slot_each():
    torch.manual_seed(0)
    net = trained_like(
        create_model(
            "baseline_cnn",
            num_classes=5,
            adapter="channelset",
            subset_bn=True,
            adapter_kw={"channel_names": ("R", "G", "B", "L", "NIR")},
        )
    )
    one = AnySubset(net).eval()
    assert one.subsets == list(slots(5))
    x = torch.randn(2, 5, 12, 12)
    with torch.no_grad():
        for ids in [(4,), (0, 4), (0, 1, 2, 4), (1,)]:
            assert torch.allclose(one(*full_input(x[:, list(ids)], ids, 5)), net(x[:, list(ids)], ids), atol=1e-5)


def test_without_per_subset_statistics_every_declared_set_is_served():
    net = create_model(
        "baseline_cnn", num_classes=5, adapter="channelset", adapter_kw={"channel_names": ("R", "G", "B", "L", "NIR")}
    ).eval()
    one = AnySubset(net).eval()
    assert one.subsets == list(slots(5)) and not any(isinstance(m, Stacked) for m in one.modules())
    two = AnySubset(
        create_model("baseline_cnn", num_classes=5, adapter="channelset", adapter_kw={"channel_names": ("R", "G")})
    )
    assert two.subsets == [(0, 1), (0,), (1,)]  # the named subsets within R and G
    x = torch.randn(2, 2, 12, 12)
    with torch.no_grad():
        assert torch.allclose(one(*full_input(x, (0, 4), 5)), net(x, (0, 4)), atol=1e-5)


def test_models_without_a_masked_adapter_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="needs an adapter that reads a presence mask .* NaiveAdapter"):
        AnySubset(create_model("baseline_cnn", num_classes=5))
    with pytest.raises(ConfigError, match="in front of one trunk; this model is a BagOfChannels"):
        AnySubset(create_model("bag_of_channels", num_classes=5, adapter="channelset"))
    net = create_model("baseline_cnn", num_classes=5, adapter="channelset")
    with pytest.raises(ConfigError, match=r"channel ids \(0, 5\) are not a subset of the 4 declared"):
        AnySubset(net, [(0, 5)])


def test_absent_planes_are_never_read():
    torch.manual_seed(0)
    net = trained_like(create_model("shallow", num_classes=5, adapter="channelset", subset_bn=True))
    one = AnySubset(net).eval()
    for ids in itertools.islice(SUBSETS.values(), 1, None):
        image, present = full_input(torch.randn(1, len(ids), 16, 16), ids, 4)
        noisy = image.clone()
        for c in set(range(4)) - set(ids):
            noisy[:, c] = torch.randn(16, 16) * 100
        with torch.no_grad():
            assert torch.allclose(one(image, present), one(noisy, present), atol=1e-4)
