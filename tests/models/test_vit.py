import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from prismlab.analysis.flops import count_flops
from prismlab.analysis.layers import count_layers
from prismlab.channels import SUBSETS
from prismlab.errors import ConfigError
from prismlab.models import create_model
from prismlab.models.cards import cards_markdown
from prismlab.models.vit import ChannelViT, PlainViT

NAMES = ("channelvit", "vit_hcs")
SMALL = dict(dim=24, depth=2, heads=3)  # the design's shape, small enough for CPU tests


def build(name: str, num_classes: int = 5, **kw):
    torch.manual_seed(0)
    return create_model(name, num_classes=num_classes, **{**SMALL, **kw}).eval()


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("subset", list(SUBSETS))
@pytest.mark.parametrize("size", [32, 48])
def test_every_subset_and_size_gives_logits(name, subset, size):
    model = build(name)
    ids = SUBSETS[subset]
    with torch.no_grad():
        assert model(torch.randn(2, len(ids), size, size), ids).shape == (2, 5)
        assert model(torch.randn(2, len(ids), size, size), subset).shape == (2, 5)  # by name too


@pytest.mark.parametrize("name", NAMES)
def test_non_square_input_and_rgb_default(name):
    model = build(name)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 48)).shape == (1, 5)


@pytest.mark.parametrize("name", NAMES)
def test_a_size_off_the_patch_grid_reads_the_whole_patches_as_the_papers_code(name):
    model = build(name)
    x = torch.randn(1, 3, 30, 33)
    with torch.no_grad():
        assert model(x, (0, 1, 2)).shape == (1, 5)
        # The conv floors: the last 30 % 4 rows and 33 % 4 columns are not read.
        torch.testing.assert_close(model(x, (0, 1, 2)), model(x[..., :28, :32], (0, 1, 2)))
        assert model(torch.randn(1, 1, 17, 17), (3,)).shape == (1, 5)
    with pytest.raises(ConfigError) as e:
        model(torch.randn(1, 3, 3, 30), (0, 1, 2))
    assert "3x30 is smaller than one patch (4x4)" in one_line(e)
    with pytest.raises(ConfigError) as e:
        create_model(name, img_size=30)
    one_line(e)


@pytest.mark.parametrize(
    "name,kw", [("channelvit", {}), ("channelvit", {"channel_names": ("R", "G", "B", "L", "NIR")}), ("vit_hcs", {})]
)
def test_a_permuted_channel_order_gives_the_same_logits(name, kw):
    model = build(name, **kw)
    base = (0, 1, 2, 4) if kw else (0, 1, 2)
    torch.manual_seed(1)
    x = torch.randn(3, len(base), 32, 32)
    with torch.no_grad():
        ref = model(x, base)
        for perm in itertools.permutations(range(len(base))):
            got = model(x[:, list(perm)], tuple(base[i] for i in perm))
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
        for pair in ((0, 2), (1, 0)):  # subsets too
            torch.testing.assert_close(
                model(x[:, list(pair)[::-1]], pair[::-1]), model(x[:, list(pair)], pair), atol=1e-5, rtol=0
            )


def test_channel_ids_matter():
    model = build("channelvit")
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model(x, (0,)), model(x, (1,)))


@pytest.mark.parametrize("size", [32, 48])
def test_channelvit_tokens_grow_with_the_channels_vit_hcs_tokens_do_not(size):
    cvit, plain = build("channelvit"), build("vit_hcs")
    g = size // 4
    for ids in ((0,), (0, 2), (0, 1, 2)):
        x = torch.randn(1, len(ids), size, size)
        assert cvit.embed(x, ids).shape == (1, len(ids) * g * g + 1, SMALL["dim"])
        assert plain.embed(x, ids).shape == (1, g * g + 1, SMALL["dim"])


def vit_flops(m_tokens_per_plane: int, planes: int, cin: int, d: int, depth: int, p: int, classes: int) -> int:
    """Products only, as FlopCounterMode counts: patch conv, then per block qkv (6Td^2), attention
    (QK^T and AV: 4T^2d), the output projection (2Td^2) and the MLP (16Td^2), then the head on CLS."""
    t = planes * m_tokens_per_plane + 1
    conv = 2 * planes * m_tokens_per_plane * d * cin * p * p
    return conv + depth * (24 * t * d * d + 4 * t * t * d) + 2 * d * classes


@pytest.mark.parametrize("size", [32, 48])
def test_flops_count_the_attention_and_channelvit_grows_about_linearly(size):
    cvit, plain = build("channelvit"), build("vit_hcs")
    d, depth, g2 = SMALL["dim"], SMALL["depth"], (size // 4) ** 2
    cv = {m: count_flops(cvit, size, channels=tuple(range(m))) for m in (1, 2, 3)}
    pv = {m: count_flops(plain, size, channels=tuple(range(m))) for m in (1, 2, 3)}
    for m in (1, 2, 3):
        assert cv[m] == vit_flops(g2, m, 1, d, depth, 4, 5)
        assert pv[m] == vit_flops(g2, 1, 3, d, depth, 4, 5)
    assert count_flops(plain, size, channels=(3,)) == pv[1]


def test_default_size_flops_grow_about_linearly_in_m():
    cvit, plain = create_model("channelvit", num_classes=50), create_model("vit_hcs", num_classes=50)
    cv = [count_flops(cvit, 32, channels=tuple(range(m))) for m in (1, 2, 3)]
    assert cv[0] == vit_flops(64, 1, 1, 192, 6, 4, 50)
    # Linear layers grow as m, attention as m^2: at 64 tokens per channel attention is a small share.
    assert 2.0 <= cv[1] / cv[0] < 2.3 and 3.0 <= cv[2] / cv[0] < 3.6
    assert count_flops(plain, 32, channels=(0,)) == count_flops(plain, 32) == vit_flops(64, 1, 3, 192, 6, 4, 50)


def ln(x, mod):
    mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + mod.eps) * mod.weight + mod.bias


def test_channelvit_equals_a_hand_computation():
    torch.manual_seed(0)
    model = ChannelViT(3, patch_size=2, dim=4, depth=1, heads=2, mlp_ratio=2, img_size=4).eval()
    for prm in model.parameters():  # away from the init's zero biases and unit norms
        prm.data.normal_(0, 0.5)
    x, ids = torch.randn(2, 2, 4, 4), (3, 1)
    with torch.no_grad():
        got = model(x, ids)
    # Tokens: channel-major, then patches row-major; each a 2x2 patch dotted with the conv kernel.
    w, b = model.patch_embed.weight.reshape(4, 4), model.patch_embed.bias
    pos = model.pos_embed[0].permute(1, 2, 0).reshape(4, 4)  # [patch, dim]
    rows = []
    for n in range(2):
        toks = [model.cls_token[0, 0]]
        for ci, c in enumerate(ids):
            for py, px in itertools.product(range(2), range(2)):
                patch = x[n, ci, 2 * py : 2 * py + 2, 2 * px : 2 * px + 2].reshape(4)
                toks.append(w @ patch + b + model.channel_embed[c] + pos[2 * py + px])
        t = torch.stack(toks)  # [9, 4]
        blk = model.blocks[0]
        h = ln(t, blk.norm1)
        q, k, v = (h @ blk.attn.qkv.weight.t() + blk.attn.qkv.bias).split(4, dim=1)
        heads = []
        for s in (slice(0, 2), slice(2, 4)):
            a = torch.softmax(q[:, s] @ k[:, s].t() / math.sqrt(2), dim=1)
            heads.append(a @ v[:, s])
        t = t + torch.cat(heads, 1) @ blk.attn.proj.weight.t() + blk.attn.proj.bias
        h = ln(t, blk.norm2)
        h = F.gelu(h @ blk.mlp[0].weight.t() + blk.mlp[0].bias) @ blk.mlp[2].weight.t() + blk.mlp[2].bias
        t = t + h
        rows.append(ln(t[0], model.norm) @ model.head.weight.t() + model.head.bias)
    torch.testing.assert_close(got, torch.stack(rows).detach(), atol=1e-5, rtol=1e-5)


def test_vit_hcs_zero_fills_and_repeats_gray():
    model = build("vit_hcs")
    x = torch.randn(2, 1, 32, 32)
    zeros = torch.zeros_like(x)
    with torch.no_grad():
        torch.testing.assert_close(model(x, (1,)), model(torch.cat([zeros, x, zeros], 1), (0, 1, 2)))
        torch.testing.assert_close(model(x, (3,)), model(x.expand(-1, 3, -1, -1), (0, 1, 2)))


def test_vit_hcs_tokens_equal_a_hand_computation():
    torch.manual_seed(0)
    model = PlainViT(3, patch_size=2, dim=4, depth=0, heads=2, img_size=4).eval()
    for prm in model.parameters():
        prm.data.normal_(0, 0.5)
    x, ids = torch.randn(1, 2, 4, 4), (2, 0)  # B then R: G is zero-filled
    w, b = model.patch_embed.weight, model.patch_embed.bias  # [4, 3, 2, 2]
    pos = model.pos_embed[0].permute(1, 2, 0).reshape(4, 4)
    toks = [model.cls_token[0, 0]]
    for py, px in itertools.product(range(2), range(2)):
        patch = x[0, :, 2 * py : 2 * py + 2, 2 * px : 2 * px + 2]  # [2 channels, 2, 2]
        # channel 0 of x is B (kernel slice 2), channel 1 is R (slice 0); G's slice meets zeros
        toks.append((w[:, 2] * patch[0]).sum((1, 2)) + (w[:, 0] * patch[1]).sum((1, 2)) + b + pos[2 * py + px])
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x, ids)[0], torch.stack(toks).detach(), atol=1e-5, rtol=1e-5)


def test_depth_zero_reads_the_cls_token_alone():
    model = PlainViT(4, dim=8, depth=0, heads=2).eval()
    with torch.no_grad():
        expected = model.head(F.layer_norm(model.cls_token[0], (8,), model.norm.weight, model.norm.bias, 1e-6))
        torch.testing.assert_close(model(torch.randn(3, 3, 32, 32)), expected.expand(3, -1))


@pytest.mark.parametrize("name", NAMES)
def test_training_form_equals_eval_form(name):
    # Training runs the fused attention kernel, eval the explicit products the FLOPs counter sees.
    model = build(name)
    x = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        ref = model(x, (0, 2))
        torch.testing.assert_close(model.train()(x, (0, 2)), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_a_mixed_batch_equals_its_chunks(name):
    model = build(name)
    xs = [torch.randn(2, 3, 32, 32), torch.randn(3, 1, 32, 32), torch.randn(1, 2, 32, 32), torch.randn(2, 1, 32, 32)]
    chs = [(0, 1, 2), (3,), (0, 2), (1,)]
    with torch.no_grad():
        got = model(xs, chs)
        torch.testing.assert_close(got, torch.cat([model(x, c) for x, c in zip(xs, chs)]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_a_gradient_step_runs(name):
    model = build(name).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    xs, chs = [torch.randn(4, 3, 32, 32), torch.randn(4, 1, 32, 32)], [(0, 1, 2), (3,)]
    y = torch.randint(0, 5, (8,))
    loss = F.cross_entropy(model(xs, chs), y)
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert model.patch_embed.weight.grad.abs().sum() > 0 and model.cls_token.grad.abs().sum() > 0
    opt.step()


@pytest.mark.parametrize("name", NAMES)
def test_layer_count_sees_every_linear_layer(name):
    # fx cannot trace the shape checks symbolically: count_layers falls back to a concrete trace.
    for m in (build(name), build(name, depth=0)):
        count = count_layers(m, 32)
        d = len(m.blocks)
        assert count.total == 2 + 4 * d and count.path[0] == "patch_embed" and count.path[-1] == "head"
        if d:
            assert count.path[1:5] == ["blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.0", "blocks.0.mlp.2"]


def test_declared_ids_and_undeclared_ones():
    model = build("channelvit", channel_names=("R", "G", "B", "L", "NIR"))
    with torch.no_grad():
        assert model(torch.randn(1, 2, 32, 32), (4, 0)).shape == (1, 5)
    assert build("channelvit", num_channel_ids=6).channel_names[-2:] == ("#4", "#5")
    with pytest.raises(ConfigError) as e:
        build("channelvit")(torch.randn(1, 1, 32, 32), (4,))
    assert "channel id 4 was not declared" in one_line(e)
    with pytest.raises(ConfigError) as e:
        build("vit_hcs")(torch.randn(1, 2, 32, 32), (0, 3))
    one_line(e)
    with pytest.raises(ConfigError) as e:
        build("channelvit")(torch.randn(1, 2, 32, 32), (0, 1, 2))
    assert "2 channels but 3 channel ids" in one_line(e)
    with pytest.raises(ConfigError) as e:
        create_model("channelvit", dim=10, heads=3)
    one_line(e)
    with pytest.raises(ConfigError):
        create_model("vit_hcs", channel_names=("R",))  # the plain twin declares no ids


def test_cards_state_the_cost():
    card = cards_markdown(list(NAMES), 32)
    assert "### `channelvit` (model)" in card and "### `vit_hcs` (model)" in card
    assert "grow with the channels" in card and "depth 6, patch 4" in card and "Bao et al. 2024" in card
