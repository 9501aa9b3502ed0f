"""CHAMMI's first-layer strategies (slice_param, template_mixing, hypernet, target_param) and the bag of channels:
every subset in every order at odd sizes, order invariance, hand-computed values, FLOPs, one-line errors."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from prismlab.analysis.flops import count_flops
from prismlab.channels import ALL_SUBSETS, RGB_IDS, SUBSETS
from prismlab.errors import ConfigError
from prismlab.models import create_model, make_adapter
from prismlab.models.bag import BagOfChannels
from prismlab.models.base import NaiveAdapter
from prismlab.models.fuse import inference_form
from prismlab.models.trunks import BaselineCNN

ADAPTERS = ["slice_param", "template_mixing", "hypernet", "target_param"]
NAMES = ADAPTERS + ["bag_of_channels"]
SIZES = [8, 17, 32]


def _model(name: str, **kw):
    torch.manual_seed(0)
    if name == "bag_of_channels":
        model = create_model(name, num_classes=5, **kw)
        with torch.no_grad():  # the zero init makes every id alike; random rows make the id tests meaningful
            model.film.weight.normal_(0, 0.5)
        return model.eval()
    return create_model("baseline_cnn", num_classes=5, adapter=name, **kw).eval()


def _x(m: int, size: int = 17, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, m, size, size, generator=torch.Generator().manual_seed(seed))


def _orders(ids):
    return [tuple(p) for p in itertools.permutations(range(len(ids)))]


@pytest.fixture(scope="module")
def models():
    return {name: _model(name) for name in NAMES}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", NAMES)
def test_every_subset_in_every_order_at_any_size_gives_the_right_shape(models, name, size):
    model = models[name]
    for subset, ids in SUBSETS.items():
        x = _x(len(ids), size)
        for order in _orders(ids):
            xs, cids = x[:, list(order)], tuple(ids[o] for o in order)
            with torch.no_grad():
                logits = model(xs, cids)
                if name != "bag_of_channels":
                    mapped = model.adapter(xs, cids)
                    assert mapped.shape == (2, 3, size, size), (subset, order)
                    # each image on its own: nothing mixes across the batch
                    torch.testing.assert_close(mapped[1:], model.adapter(xs[1:], cids))
            assert logits.shape == (2, 5) and torch.isfinite(logits).all(), (subset, order)


@pytest.mark.parametrize("name", NAMES)
def test_a_permuted_channel_order_gives_the_same_output(models, name):
    model = models[name]
    for subset in ("RGB", "RG", "GB", "RB"):
        ids = SUBSETS[subset]
        x = _x(len(ids), 17, seed=1)
        with torch.no_grad():
            ref = model(x, ids)
            for order in _orders(ids)[1:]:
                out = model(x[:, list(order)], tuple(ids[o] for o in order))
                assert torch.allclose(out, ref, atol=1e-5), (subset, order)
            # Permuting the pixels but not the ids changes the result: the ids are really used.
            assert not torch.allclose(model(x.flip(1), ids), ref, atol=1e-4), subset


def _tap(col: int, value: float = 1.0) -> torch.Tensor:
    # A 3x3 kernel with `value` at [1, col]: col 1 scales the pixel; col 2 reads the right-hand
    # neighbour, out[i, j] = x[i, j + 1], 0 past the edge.
    return F.pad(torch.full((1, 1), value), (col, 2 - col, 1, 1))


def _shifted(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x[..., 1:], torch.zeros_like(x[..., :1])], -1)


X1 = torch.arange(16.0).view(1, 1, 4, 4) - 7.5  # one channel, known pixels


def test_slice_param_applies_the_slice_of_each_present_id_and_sums():
    for combine, scale in (("sum", 1.0), ("mean", 0.5)):
        ad = make_adapter("slice_param", out_channels=2, combine=combine)
        with torch.no_grad():
            ad.bank.zero_()
            ad.bank[1, 0, 0] = _tap(1, 2.0)  # G -> out 0: 2 x
            ad.bank[1, 1, 0] = _tap(2)  # G -> out 1: the right neighbour
            ad.bank[3, 0, 0] = _tap(1, -1.0)  # L -> out 0: -x
        x = X1
        torch.testing.assert_close(ad(x, (1,)), torch.cat([2 * x, _shifted(x)], 1))  # m = 1: sum and mean agree
        two = torch.cat([x, 10 * x], 1)  # G = x, L = 10 x
        want = torch.cat([2 * x - 10 * x, _shifted(x)], 1) * scale
        torch.testing.assert_close(ad(two, (1, 3)), want)
        torch.testing.assert_close(ad(two.flip(1), (3, 1)), want)
        # The same as F.conv2d with the present slices as one kernel
        kernel = ad.bank[[1, 3], :, 0].transpose(0, 1)
        torch.testing.assert_close(ad(two, (1, 3)), F.conv2d(two, kernel, padding=1) * scale)


def test_template_mixing_mixes_the_templates_by_the_ids_coefficients():
    ad = make_adapter("template_mixing", out_channels=2, templates=2)
    with torch.no_grad():
        ad.templates.zero_()
        ad.templates[0, 0] = _tap(1, 1.0)
        ad.templates[1, 1] = _tap(2)
        ad.coefs.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, -2.0], [0.0, 0.0]]))
    x = X1
    # B's kernel = 0.5 * template 0 - 2 * template 1: out 0 = 0.5 x, out 1 = -2 * right neighbour
    torch.testing.assert_close(ad(x, (2,)), torch.cat([0.5 * x, -2 * _shifted(x)], 1))
    # R (template 0) and B together: the sum of both channels' maps
    rb = torch.cat([x, -x], 1)
    torch.testing.assert_close(ad(rb, (0, 2)), torch.cat([x - 0.5 * x, 2 * _shifted(x)], 1))


def test_hypernet_computes_each_kernel_from_the_ids_embedding():
    ad = make_adapter("hypernet", out_channels=1, kernel_size=1, z_dim=2, hidden=2)
    with torch.no_grad():
        ad.embed.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0], [0.0, 0.0], [3.0, 0.0]]))
        ad.net[0].weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        ad.net[0].bias.copy_(torch.tensor([0.0, 1.0]))
        ad.net[1].weight.copy_(torch.tensor([[0.5, 0.25]]))
        ad.net[1].bias.copy_(torch.tensor([0.5]))
    x = X1
    # R: h = (1, 1 + 2 + 1) = (1, 4); kernel = 0.5 * 1 + 0.25 * 4 + 0.5 = 2
    torch.testing.assert_close(ad(x, (0,)), 2 * x)
    # G: h = (0, 0); kernel = 0.5. L: h = (3, 4); kernel = 1.5 + 1 + 0.5 = 3. Together: 0.5 G + 3 L.
    torch.testing.assert_close(ad(torch.cat([x, x.flip(-1)], 1), (1, 3)), 0.5 * x + 3 * x.flip(-1))
    # kernel_size 3: the MLP's output reshaped to [out, k, k], applied as F.conv2d
    ad = make_adapter("hypernet", out_channels=2).eval()
    kernel = ad.net(ad.embed.weight[2]).view(2, 1, 3, 3)
    torch.testing.assert_close(ad(x, (2,)), F.conv2d(x, kernel, padding=1))


def test_target_param_uses_the_subsets_own_layer_in_id_order():
    ad = make_adapter("target_param", out_channels=1)
    with torch.no_grad():
        ad.layers["RB"].weight.copy_(torch.stack([_tap(1, 1.0), _tap(1, 10.0)])[None])  # R + 10 B
        ad.layers["B"].weight.copy_(_tap(2)[None, None])
    r, b = X1, X1.flip(-1)
    torch.testing.assert_close(ad(torch.cat([r, b], 1), (0, 2)), r + 10 * b)
    torch.testing.assert_close(ad(torch.cat([b, r], 1), (2, 0)), r + 10 * b)  # ordered by id first
    torch.testing.assert_close(ad(b, (2,)), _shifted(b))
    assert sorted(ad.layers) == sorted(ALL_SUBSETS)


def test_target_param_refuses_a_subset_it_has_no_layer_for_in_one_line():
    ad = make_adapter("target_param", subsets="RGB,R")
    assert sorted(ad.layers) == ["R", "RGB"]
    for ids in ((1,), (0, 1), (0, 0)):
        with pytest.raises(ConfigError, match="target_param: no first layer for channel ids") as err:
            ad(_x(len(ids)), ids)
        assert "\n" not in str(err.value)


def _bag_by_hand(trunk: BaselineCNN, film: torch.Tensor, x: torch.Tensor, ids) -> torch.Tensor:
    feats = []
    for j, c in enumerate(ids):
        h = trunk.features[:2](NaiveAdapter()(x[:, j : j + 1], (c,)))
        gamma, beta = film[c].view(2, -1, 1, 1)
        feats.append(trunk.head[:2](trunk.features[2:](h * (1 + gamma) + beta)))
    return trunk.head[2:](torch.stack(feats).mean(0))


def test_bag_of_channels_averages_each_channels_trunk_features_before_the_head():
    torch.manual_seed(0)
    trunk = BaselineCNN(in_channels=3, num_classes=5).eval()
    bag = BagOfChannels(NaiveAdapter(), trunk, num_ids=4).eval()  # shares the trunk's modules
    x = _x(3, 16)
    with torch.no_grad():
        # FiLM at zero: one channel alone is exactly the plain trunk on the zero-filled image
        torch.testing.assert_close(bag(x[:, :1], (2,)), trunk(NaiveAdapter()(x[:, :1], (2,))))
        torch.testing.assert_close(bag(x[:, :1], (3,)), trunk(x[:, :1].expand(-1, 3, -1, -1)))  # L as gray
        bag.film.weight.normal_(0, 0.5)
        for ids in (RGB_IDS, (2, 0), (3,)):
            want = _bag_by_hand(trunk, bag.film.weight, x[:, : len(ids)], ids)
            torch.testing.assert_close(bag(x[:, : len(ids)], ids), want)


def test_bag_of_channels_mixed_batch_fused_form_and_subset_statistics():
    bag = _model("bag_of_channels")
    parts = [(_x(3, 16, n=2), RGB_IDS), (_x(1, 16, n=3, seed=2), (3,)), (_x(2, 16, n=1, seed=3), (2, 1))]
    with torch.no_grad():
        mixed = bag([p for p, _ in parts], [ids for _, ids in parts])
        torch.testing.assert_close(mixed, torch.cat([bag(p, ids) for p, ids in parts]))
        fused = inference_form(bag)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        torch.testing.assert_close(fused(*parts[0]), bag(*parts[0]), atol=1e-4, rtol=1e-4)
    per_subset = _model("bag_of_channels", subset_bn=True).train()
    per_subset([p for p, _ in parts], [ids for _, ids in parts]).sum().backward()
    per_subset.eval()
    with torch.no_grad():
        assert per_subset(parts[1][0], "L").shape == (3, 5)
        torch.testing.assert_close(
            inference_form(per_subset, (3,))(parts[1][0], (3,)), per_subset(parts[1][0], (3,)), atol=1e-4, rtol=1e-4
        )


@pytest.mark.parametrize("name", NAMES)
def test_the_channel_ids_parameters_learn(name):
    model = _model(name).train()
    model(_x(2, 16, n=4), (2, 0)).sum().backward()
    part = model if name == "bag_of_channels" else model.adapter
    own = {
        "bag_of_channels": "film",
        "slice_param": "bank",
        "template_mixing": "coefs",
        "hypernet": "embed",
        "target_param": "layers.RB",
    }[name]
    grads = [p.grad for n, p in part.named_parameters() if n.startswith(own)]
    assert grads and all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("name", ADAPTERS)
def test_the_flops_counter_sees_the_adapters_conv(name):
    trunk_only = _model("naive")  # naive adds no FLOPs: the trunk alone
    model = _model(name)
    for ids in (RGB_IDS, (0, 2), (3,)):
        extra = count_flops(model, 32, channels=ids) - count_flops(trunk_only, 32, channels=ids)
        conv = 2 * 3 * len(ids) * 9 * 32 * 32  # out * m * k * k multiply-adds per pixel
        assert extra >= conv, (name, ids)
        if name in ("slice_param", "target_param"):  # nothing else to count: the kernel is a lookup
            assert extra == conv, (name, ids)


@pytest.mark.parametrize("name", ADAPTERS)
def test_as_the_first_layer_it_replaces_the_trunks_first_conv(name):
    naive, model = _model("naive"), _model(name, first_layer=True)
    assert model.adapter.out_channels == 32 and isinstance(model.trunk.features[0], torch.nn.Identity)
    conv = naive.trunk.features[0]
    own = sum(p.numel() for p in model.adapter.parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in naive.parameters()) - 896 + own
    assert conv.weight.numel() + conv.bias.numel() == 896
    for ids in (RGB_IDS, (2, 0), (3,)):
        assert model(_x(len(ids)), ids).shape == (2, 5)
    if name in ("slice_param", "target_param"):  # the same conv as naive's at RGB: the same FLOPs
        assert count_flops(model, 32) == count_flops(naive, 32)


def test_slice_param_as_the_first_layer_at_rgb_is_the_plain_cnn_with_its_rgb_slices():
    model = _model("slice_param", first_layer=True)
    plain = _model("naive")
    plain.trunk.load_state_dict(model.trunk.state_dict(), strict=False)  # all but the first conv
    with torch.no_grad():
        plain.trunk.features[0].weight.copy_(model.adapter.bank[list(RGB_IDS), :, 0].transpose(0, 1))
        plain.trunk.features[0].bias.zero_()  # CHAMMI's conv has none: the BatchNorm after it shifts
        x = _x(3)
        torch.testing.assert_close(model(x, RGB_IDS), plain(x, RGB_IDS))
        assert not torch.allclose(model(x, (1, 0, 2)), plain(x, RGB_IDS), atol=1e-4)  # ids, not positions


@pytest.mark.parametrize(
    "model,kw,match",
    [
        ("resnet34", {"adapter": "slice_param"}, r"first conv \(conv1\) is not a plain stride-1 conv"),
        ("baseline_cnn", {"adapter": "slice_param", "adapter_kw": {"out_channels": 3}}, "out_channels=3, but"),
        ("baseline_cnn", {"adapter": "naive"}, "the adapter cannot be the trunk's first conv: adapter 'naive'"),
        ("seed_cool_model", {"adapter": "slice_param"}, "CoolCNN's input does not go to one conv alone"),
        ("shallow", {"adapter": "slice_param"}, "cannot trace ShallowNet"),
    ],
)
def test_a_first_layer_that_cannot_replace_the_conv_is_one_line(model, kw, match):
    with pytest.raises(ConfigError, match=match) as e:
        create_model(model, num_classes=5, first_layer=True, **kw)
    assert "\n" not in str(e.value)


def test_a_first_conv_whose_bias_no_batchnorm_absorbs_is_not_replaced():
    from torch import nn

    from prismlab.models.base import classifier

    def trunk(bias: bool, norm: bool):
        return lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=bias), nn.BatchNorm2d(8) if norm else nn.ReLU(), nn.Flatten()
        )

    with pytest.raises(ConfigError, match="Sequential's 0 has a bias and no BatchNorm after it"):
        classifier(trunk(True, False), "slice_param", first_layer=True)
    for bias, norm in ((False, False), (True, True)):  # nothing lost: no bias, or a BatchNorm shifts anyway
        model = classifier(trunk(bias, norm), "slice_param", first_layer=True)
        assert isinstance(model.trunk[0], nn.Identity) and model.adapter.out_channels == 8


def test_bag_of_channels_costs_m_times_the_trunk():
    trunk_only, bag = _model("naive"), _model("bag_of_channels")
    for ids in (RGB_IDS, (1, 2), (0,)):
        ratio = count_flops(bag, 32, channels=ids) / count_flops(trunk_only, 32, channels=ids)
        assert abs(ratio - len(ids)) < 0.02 * len(ids), (ids, ratio)  # the head runs once, not m times


@pytest.mark.parametrize(
    "name,kw,match",
    [
        ("slice_param", {"kernel_size": 2}, "kernel_size must be odd"),
        ("slice_param", {"out_channels": 0}, "out_channels must be at least 1"),
        ("slice_param", {"combine": "max"}, "unknown combine 'max'"),
        ("slice_param", {"num_channel_ids": 5, "channel_names": ("R",)}, "num_channel_ids=5 but 1 channel_names"),
        ("template_mixing", {"templates": 0}, "templates must be at least 1"),
        ("hypernet", {"z_dim": 0}, "z_dim must be at least 1"),
        ("hypernet", {"hidden": -1}, "hidden must be at least 1"),
        ("target_param", {"subsets": ("RGB", "XY")}, "target_param: unknown channel subset 'XY'"),
        ("target_param", {"subsets": ()}, "target_param: no channel subset given"),
        ("target_param", {"kernel_size": 0}, "kernel_size must be odd"),
        ("hypernet", {"widht": 3}, "adapter 'hypernet': .*widht"),
    ],
)
def test_bad_constructor_arguments_are_one_line_config_errors(name, kw, match):
    for build in (lambda: make_adapter(name, **kw), lambda: create_model("baseline_cnn", adapter=name, adapter_kw=kw)):
        with pytest.raises(ConfigError, match=match) as err:
            build()
        assert "\n" not in str(err.value)


def test_bag_of_channels_bad_arguments_are_one_line_config_errors():
    for kw, match in (
        ({"adapter": "nope"}, "unknown adapter 'nope'"),
        ({"widht": 3}, "model 'bag_of_channels'"),
        ({"adapter": "slice_param", "adapter_kw": {"kernel_size": 2}}, "kernel_size must be odd"),
    ):
        with pytest.raises(ConfigError, match=match) as err:
            create_model("bag_of_channels", **kw)
        assert "\n" not in str(err.value)


def test_declared_ids_beyond_rgbl():
    for name in ("slice_param", "template_mixing", "hypernet"):
        with pytest.raises(ConfigError, match=f"{name}: channel id 4 was not declared") as err:
            make_adapter(name)(_x(2), (0, 4))
        assert "\n" not in str(err.value)
        nir = make_adapter(name, channel_names=("R", "G", "B", "L", "NIR"))
        assert nir(_x(2), (4, 0)).shape == (2, 3, 17, 17)
    # The bag of channels knows the ids its adapter declares: NIR through slice_param's own slice.
    bag = create_model("bag_of_channels", num_classes=5, adapter="slice_param", adapter_kw={"num_channel_ids": 5})
    bag.eval()
    with torch.no_grad():
        assert bag(_x(2), (4, 1)).shape == (2, 5)
    with pytest.raises(ConfigError, match="bag_of_channels: channel id 5 was not declared"):
        bag(_x(1), (5,))


@pytest.mark.usefixtures("restore_torch_globals")
@pytest.mark.parametrize(
    "model,model_kw,train_kw",
    [
        ("baseline_cnn", {"adapter": "target_param"}, {}),
        ("baseline_cnn", {"adapter": "hypernet", "first_layer": True}, {}),  # as the task-1 rows train
        # ours' full recipe around the bag: the RGB view, distillation, per-subset statistics
        ("bag_of_channels", {"adapter": "naive", "subset_bn": True}, {"rgb_view": True, "view_distill": 1.0}),
    ],
    ids=["target_param", "hypernet_first_layer", "bag_of_channels"],
)
def test_trains_and_evaluates_with_hcs_end_to_end(tiny_data, tmp_path, model, model_kw, train_kw):
    from prismlab.engine.config import make_config
    from prismlab.engine.rundir import RunDir
    from prismlab.engine.train import train

    cfg = make_config(
        overrides={
            "data": str(tiny_data),
            "out": str(tmp_path / "run"),
            "image_size": 24,
            "batch_size": 16,
            "epochs": 1,
            "lr": 0.05,
            "model": model,
            "model_kw": model_kw,
            "channel_sampling": "hcs",
            **train_kw,
        }
    )
    report = RunDir(train(cfg)).test()
    assert list(report["results"]) == list(ALL_SUBSETS)
