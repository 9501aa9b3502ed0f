"""Channel adapters: every subset at every size, each image mapped on its own, and ChannelSet's set
properties (order invariance, m-scale independence, extra ids, cost budget). The baselines' adapters:
test_baseline_adapters.py."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from prismlab.channels import ALL_SUBSETS, RGB_IDS
from prismlab.data.channels import to_subset
from prismlab.errors import ConfigError
from prismlab.models import create_model, make_adapter
from prismlab.models.channelset import ChannelSetAdapter
from prismlab.models.registry import ADAPTERS

SIZES = [(32, 32), (64, 64), (84, 84), (224, 224), (48, 80)]


def _batch(subset: str, size=(32, 32), n: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return to_subset(torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=g), subset)


def _randomise_embeddings(adapter: ChannelSetAdapter, seed: int = 0) -> None:
    # The zero init makes every id look alike; random rows make the id tests meaningful.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        adapter.channel_embed.weight.copy_(torch.randn(adapter.channel_embed.weight.shape, generator=g))


@pytest.fixture(scope="module")
def models():
    return {name: create_model("baseline_cnn", adapter=name, num_classes=50).eval() for name in ADAPTERS.names()}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", ADAPTERS.names())
def test_every_adapter_takes_every_subset_at_every_size(models, name, size):
    model = models[name]
    for subset in ALL_SUBSETS:
        x, ids = _batch(subset, size, n=2)
        with torch.no_grad():
            mapped = model.adapter(x, ids)
            logits = model(x[:1], ids)  # one image: the trunk at 224px is the slow part
            # each image is mapped on its own: nothing mixes across the batch
            torch.testing.assert_close(mapped[1:], model.adapter(x[1:], ids))
            torch.testing.assert_close(logits, model.trunk(mapped[:1]))
        assert mapped.shape == (2, model.adapter.out_channels, *size), subset
        assert logits.shape == (1, 50), subset
        assert torch.isfinite(logits).all(), subset


def test_channelset_in_front_of_resnet34():
    model = create_model("resnet34", adapter="channelset", num_classes=50).eval()
    assert model.trunk.conv1.in_channels == model.adapter.out_channels
    for subset in ALL_SUBSETS:
        x, ids = _batch(subset, (64, 64))
        with torch.no_grad():
            assert model(x, ids).shape == (2, 50), subset


def test_channelset_in_front_of_the_shallow_net_survives_fusion():
    from prismlab.analysis.layers import count_layers
    from prismlab.models.fuse import inference_form

    model = create_model("shallow", adapter="channelset", num_classes=50).eval()
    fused = inference_form(model)
    for subset in ALL_SUBSETS:
        x, ids = _batch(subset, (48, 80))
        with torch.no_grad():
            assert torch.allclose(fused(x, ids), model(x, ids), atol=1e-4), subset
    # The adapter's stem and projection are layers too: they are counted, not hidden.
    count = count_layers(model, 64)
    assert count.path[:2] == ["adapter.stem", "adapter.proj"] and count.total == 8


@pytest.mark.parametrize("pool", ["mean", "attention"])
def test_channelset_is_invariant_to_channel_order(pool):
    ad = ChannelSetAdapter(pool=pool).eval()
    _randomise_embeddings(ad)
    for subset in ("RGB", "RG", "GB", "RB"):
        x, ids = _batch(subset, (32, 48))
        ref = ad(x, ids)
        for perm in itertools.permutations(range(len(ids))):
            out = ad(x[:, list(perm)], tuple(ids[p] for p in perm))
            assert torch.allclose(out, ref, atol=1e-5), (subset, perm)
    # Permuting the pixels but not the ids must change the result: the ids are really used.
    x, ids = _batch("RGB")
    assert not torch.allclose(ad(x[:, [1, 0, 2]], ids), ad(x, ids), atol=1e-3)


@pytest.mark.parametrize("pool", ["mean", "attention"])
def test_channelset_output_scale_does_not_grow_with_m(pool):
    # Identical channels with identical embeddings (FiLM starts at zero; the linear path is set
    # equal here): pooling must give exactly the one-channel result, not m times it.
    ad = ChannelSetAdapter(pool=pool).eval()
    with torch.no_grad():
        ad.chroma.weight.fill_(0.5)
    x, _ = _batch("R")
    single = ad(x, (0,))
    assert torch.allclose(ad(x.expand(-1, 3, -1, -1), RGB_IDS), single, atol=1e-6)


def test_channelset_starts_as_the_identity_on_rgb_through_its_linear_path():
    """Colour passes straight through at the start (a naive net's view of RGB), so the adapter is
    no bottleneck for RGB; the nonlinear stem adds to it."""
    ad = ChannelSetAdapter().eval()
    with torch.no_grad():
        ad.proj.weight.zero_()
        ad.proj.bias.zero_()
    x, ids = _batch("RGB")
    assert torch.allclose(ad(x, ids), x, atol=1e-6)


def _linear_only(pool="mean", **kw) -> ChannelSetAdapter:
    ad = ChannelSetAdapter(pool=pool, **kw).eval()
    with torch.no_grad():  # silence the nonlinear stem: what remains is the linear path
        ad.proj.weight.zero_()
        ad.proj.bias.zero_()
    return ad


@pytest.mark.parametrize("pool", ["mean", "attention"])
def test_channelset_linear_path_starts_as_mean_imputation(pool):
    """A present channel passes unchanged and a missing one is the mean of the present ones:
    R alone -> (R, R, R), like a gray photo, not a zero-filled image; RB -> (R, (R + B) / 2, B)."""
    ad = _linear_only(pool)
    x, ids = _batch("RGB")
    r, g, b = x.unbind(1)
    assert torch.allclose(ad(x, ids), x, atol=1e-6)
    cases = {
        (0,): (r, r, r),
        (1,): (g, g, g),
        (0, 1): (r, g, (r + g) / 2),
        (2, 0): (r, (r + b) / 2, b),
        (1, 2): ((g + b) / 2, g, b),
    }
    for cids, want in cases.items():
        out = ad(x[:, list(cids)], cids)
        assert torch.allclose(out, torch.stack(want, 1), atol=1e-6), cids
    gray = x[:, :1]
    assert torch.allclose(ad(gray, (3,)), gray.expand(-1, 3, -1, -1), atol=1e-6)  # L -> (L, L, L)


def test_channelset_declared_ids_join_the_mean():
    # NIR has no output of its own at init: it enters through the mean that fills missing outputs.
    ad = _linear_only(channel_names=("R", "G", "B", "L", "NIR"))
    x, _ = _batch("RGB")
    r, nir = x[:, 0], x[:, 1]
    out = ad(torch.stack([r, nir], 1), (0, 4))
    assert torch.allclose(out, torch.stack([r, (r + nir) / 2, (r + nir) / 2], 1), atol=1e-6)


def test_weights_with_a_zero_filling_linear_table_do_not_load(tmp_path):
    """Weights holding a zero-filling linear table as `adapter.linear` do not fit the channelset
    adapter: they are refused, not loaded into the imputing maths."""
    from prismlab.engine.checkpoint import load_weights
    from prismlab.errors import DataError

    model = create_model("baseline_cnn", adapter="channelset")
    state = model.state_dict()
    state["adapter.linear.weight"] = state.pop("adapter.chroma.weight")
    with pytest.raises(DataError, match="do not fit"):
        load_weights(model, state, "zero_fill.pt")


def test_channelset_accepts_a_declared_extra_channel():
    names = ("R", "G", "B", "L", "NIR")
    model = create_model("baseline_cnn", adapter="channelset", adapter_kw={"channel_names": names}).eval()
    assert model.adapter.channel_embed.num_embeddings == 5
    x = torch.randn(2, 4, 32, 32)
    assert model(x, (0, 1, 2, 4)).shape == (2, 50)
    assert model(x[:, :1], (4,)).shape == (2, 50)
    ad = ChannelSetAdapter(num_channel_ids=5)
    assert ad(x, (4, 2, 1, 0)).shape == (2, 3, 32, 32)


def test_channelset_rejects_an_undeclared_channel():
    ad = ChannelSetAdapter()
    with pytest.raises(ConfigError, match="channel id 4 was not declared"):
        ad(torch.randn(1, 2, 8, 8), (0, 4))
    with pytest.raises(ConfigError, match="num_channel_ids=3 but 4 channel_names"):
        ChannelSetAdapter(num_channel_ids=3, channel_names=("R", "G", "B", "L"))
    with pytest.raises(ValueError, match="3 channels but 2 channel ids"):
        ad(torch.randn(1, 3, 8, 8), (0, 1))


def test_gradients_reach_the_embeddings_of_present_channels_only():
    model = create_model("baseline_cnn", adapter="channelset")
    x, ids = _batch("RB", n=4)
    torch.nn.functional.cross_entropy(model(x, ids), torch.tensor([0, 1, 2, 3])).backward()
    grad = model.adapter.channel_embed.weight.grad
    assert grad[0].abs().sum() > 0 and grad[2].abs().sum() > 0
    assert grad[1].abs().sum() == 0 and grad[3].abs().sum() == 0


def _params_and_flops(model) -> tuple[int, int]:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 32, 32), RGB_IDS)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops()


@pytest.mark.parametrize("pool", ["mean", "attention"])
def test_channelset_costs_at_most_5pct_params_and_10pct_flops_over_naive(pool):
    naive_p, naive_f = _params_and_flops(create_model("baseline_cnn", adapter="naive", num_classes=50))
    ours_p, ours_f = _params_and_flops(
        create_model("baseline_cnn", adapter="channelset", adapter_kw={"pool": pool}, num_classes=50)
    )
    assert ours_f > naive_f  # the counter did see the stem
    assert ours_p <= 1.05 * naive_p, (ours_p, naive_p)
    assert ours_f <= 1.10 * naive_f, (ours_f, naive_f)


def test_make_adapter_reports_bad_names_and_options():
    with pytest.raises(ConfigError, match="unknown adapter 'nope'"):
        make_adapter("nope")
    with pytest.raises(ConfigError, match="adapter 'channelset'"):
        make_adapter("channelset", widht=8)
    with pytest.raises(ConfigError, match="unknown pool"):
        make_adapter("channelset", pool="max")
    with pytest.raises(ConfigError, match="odd"):
        make_adapter("channelset", kernel_size=4)


def test_a_mixed_batch_equals_its_chunks_run_one_by_one():
    """model([x1, x2], [ids1, ids2]) is how hcs training shows the trunk several subsets per batch;
    in eval mode it must equal running each chunk alone."""
    model = create_model("baseline_cnn", num_classes=5, adapter="channelset").eval()
    x1, ids1 = _batch("R")
    x2, ids2 = _batch("GB")
    mixed = model([x1, x2], [ids1, ids2])
    assert torch.allclose(mixed, torch.cat([model(x1, ids1), model(x2, ids2)]), atol=1e-5)


def test_ours_shallow_counts_four_body_layers_and_keeps_mean_imputation():
    # Both tasks in one net: the linear path adds no layer in front of the 4-layer shallow net.
    from prismlab.analysis.layers import count_layers
    from prismlab.bench.task1 import METHODS

    kw = METHODS["ours_shallow"].overrides()["model_kw"]
    model = create_model("shallow", num_classes=50, **kw).eval()
    count = count_layers(model, 32)
    assert (count.body, count.total) == (4, 6) and count.path[0] == "trunk.stem"
    x, ids = _batch("R")
    mapped = model.adapter(x, ids)
    assert torch.equal(mapped[:, 0], x[:, 0]) and torch.equal(mapped[:, 1], x[:, 0])  # R alone -> (R, R, R)
    assert sum(p.numel() for p in model.adapter.parameters()) == 12  # one RGB vector per id (R, G, B, L)
