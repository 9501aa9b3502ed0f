import pytest
import torch
from torch import nn

from prismlab.analysis.flops import count_flops, count_params
from prismlab.analysis.layers import count_layers
from prismlab.models import create_model
from prismlab.models.fuse import inference_form
from prismlab.models.parallel import GCN, RRDB, SelfAttention, grid_adjacency


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("seed_parallel", num_classes=50).eval()


# The inference form's logits at these and more small sizes: tests/models/test_fuse.py.
@pytest.mark.parametrize("size", [(32, 32), (48, 80), (64, 64), (84, 84), (1, 1), (5, 5), (7, 7), (17, 17), (33, 33)])
def test_forward_on_several_sizes(model, size):
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
        assert out.shape == (2, 50) and torch.isfinite(out).all()
        assert model(torch.randn(2, 1, *size), (3,)).shape == (2, 50)  # gray, through the adapter


@pytest.mark.parametrize("branch", range(4))
def test_every_branch_reaches_the_logits(model, branch):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        hook = model.trunk.branches[branch].register_forward_hook(lambda m, i, o: torch.zeros_like(o))
        try:
            cut = model(x)
        finally:
            hook.remove()
    assert not torch.allclose(ref, cut, atol=1e-4)


def test_grid_adjacency_is_the_symmetrically_normalised_4_neighbour_graph():
    h, w = 3, 4
    a = torch.eye(h * w)  # A + I, built here from the neighbour lists
    for i in range(h):
        for j in range(w):
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                if 0 <= i + di < h and 0 <= j + dj < w:
                    a[i * w + j, (i + di) * w + j + dj] = 1
    d = a.sum(1)
    assert sorted(set(d.tolist())) == [3, 4, 5]  # corners, edges, interior (with the self-loop)
    a_hat = grid_adjacency(h, w)
    assert torch.allclose(a_hat, a / torch.sqrt(d[:, None] * d[None, :]), atol=1e-6)
    assert torch.allclose(a_hat, a_hat.T)
    # D^-1/2 (A+I) D^-1/2 keeps D^1/2 1 fixed, its top eigenvalue: 1 (no blow-up over layers)
    assert torch.allclose(a_hat @ d.sqrt(), d.sqrt(), atol=1e-6)
    assert torch.linalg.eigvalsh(a_hat).max() == pytest.approx(1.0, abs=1e-5)


def test_gcn_reaches_exactly_as_many_hops_as_it_has_layers():
    torch.manual_seed(0)
    gcn = GCN(8, widths=(8, 8)).eval()  # eval: BatchNorm's running statistics do not mix pixels
    x = torch.randn(1, 8, 9, 9)
    y = x.clone()
    y[..., 4, 4] += 5.0
    with torch.no_grad():
        changed = (gcn(x) - gcn(y)).abs().amax(1)[0] > 1e-6
    hops = (torch.arange(9)[:, None] - 4).abs() + (torch.arange(9)[None, :] - 4).abs()
    assert not changed[hops > 2].any()  # two layers: two hops of the grid, no further
    assert changed[hops == 2].any()


def test_self_attention_starts_as_identity_and_then_sees_the_whole_map():
    torch.manual_seed(0)
    att = SelfAttention(8).eval()
    x = torch.randn(1, 8, 6, 7)
    with torch.no_grad():
        assert torch.equal(att(x), x)  # gamma starts at 0, as in SAGAN
        att.gamma.fill_(1.0)
        y = x.clone()
        y[..., 0, 0] += 5.0
        assert ((att(x) - att(y)).abs().amax(1)[0] > 1e-6).all()  # one pixel moves every output pixel


def test_rrdb_starts_as_residual_in_residual_of_near_identity_blocks():
    # ESRGAN's 0.1-scaled initialisation makes each dense block start near the identity (its 5-conv
    # branch enters at 0.2), so the outer residual gives x + 0.2 * x: the 15 convs start tame
    torch.manual_seed(0)
    rrdb, x = RRDB(32), torch.randn(2, 32, 16, 16)
    with torch.no_grad():
        assert (rrdb.blocks[0](x) - x).norm() < 0.05 * x.norm()
        assert (rrdb(x) - 1.2 * x).norm() < 0.05 * x.norm()


def test_layer_count(model):
    # The longest path: 2 stem convs, the RRDB's 3 dense blocks x 5 chained convs (each conv reads
    # the concatenation of all preceding outputs, so the 5 are in series), then the MLP head's 2
    # linears: 19 in all, body 17. The other branches are shorter (conv block 3, GCN 2 one-by-one
    # convs, attention 1: q/k/v run side by side and its products multiply two input-dependent
    # tensors, which are no layers) and parallel branches count once. The report said 3.
    r = count_layers(model)
    assert (r.total, r.body) == (19, 17)
    assert r.path[:2] == ["trunk.stem.0.0", "trunk.stem.1.0"] and r.path[-2:] == ["trunk.head.0", "trunk.head.3"]
    assert r.path[2:-2] == [f"trunk.branches.2.blocks.{b}.convs.{c}" for b in range(3) for c in range(5)]
    assert count_layers(model, trace="concrete").path == r.path  # the symbolic trace is the real graph


def test_params_and_flops_at_64px(model):
    # about 0.52M params and 131 MFLOPs; ResNet34 is ~600 MFLOPs at 64px
    fused = inference_form(model)
    assert count_params(fused) < 600_000
    assert count_flops(fused, 64) < 150e6


def test_a_few_training_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    m = create_model("seed_parallel", num_classes=5, dropout=0.0).train()
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 5
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(6):
        loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
