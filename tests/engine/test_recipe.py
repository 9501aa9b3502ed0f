"""The stronger recipe's parts: mixup and cutmix of a training batch, and the weights' moving
average that is validated and deployed (ema_decay). The maths is pinned on hand-made tensors; the
training loop's use of them (best.pt, resume) runs end to end on the tiny synthetic set."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prismlab.engine.config import make_config
from prismlab.engine.ema import WeightAverage
from prismlab.engine.rundir import BEST, LAST, RunDir, load_checkpoint
from prismlab.engine.step import hits, mix_batch, view_loss
from prismlab.engine.train import deployable
from prismlab.errors import ConfigError, DataError
from prismlab.models import create_model


def batch(n=6, size=8):
    x = torch.stack([torch.full((3, size, size), 10 * i, dtype=torch.uint8) for i in range(n)])  # image i is 10*i
    return x, torch.arange(n)


def test_mixup_mixes_each_image_with_its_partner_and_weights_their_labels_alike():
    x, y = batch()
    cfg = make_config(overrides={"mixup_alpha": 0.4})
    mixed, [(ya, lam), (yb, rest)] = mix_batch(x, y, cfg, np.random.default_rng(3))
    assert 0 < lam < 1 and rest == pytest.approx(1 - lam) and torch.equal(ya, y)
    expected = (lam * 10 * ya + (1 - lam) * 10 * yb).float() / 255  # partner = the image whose label is yb
    torch.testing.assert_close(mixed[:, 0, 0, 0], expected)
    assert not torch.equal(yb, y)  # a permutation of the batch, not the identity


def test_cutmix_pastes_one_box_and_weights_the_labels_by_its_area():
    x, y = batch(size=16)
    cfg = make_config(overrides={"cutmix_alpha": 1.0})
    mixed, [(ya, lam), (yb, rest)] = mix_batch(x, y, cfg, np.random.default_rng(0))
    mixed = (mixed * 255).round().long()
    for i in range(len(y)):
        from_partner = (mixed[i, 0] == 10 * yb[i]).float().mean()
        if yb[i] != y[i]:
            assert from_partner == pytest.approx(1 - lam)  # the box's share of the pixels is the partner's weight
    assert lam + rest == pytest.approx(1.0) and torch.equal(ya, y)


def test_with_both_alphas_each_batch_is_mixed_one_way_or_the_other():
    x, y = batch(size=16)
    cfg = make_config(overrides={"mixup_alpha": 0.4, "cutmix_alpha": 1.0})
    kinds = set()
    rng = np.random.default_rng(1)
    for _ in range(20):
        mixed, _ = mix_batch(x, y, cfg, rng)
        levels = set((mixed * 255).round().long().unique().tolist())
        kinds.add("cutmix" if levels <= {10 * i for i in range(len(y))} else "mixup")
    assert kinds == {"mixup", "cutmix"}


def test_no_alpha_leaves_the_batch_alone():
    x, y = batch()
    out, targets = mix_batch(x, y, make_config(), np.random.default_rng(0))
    assert out is x and targets == [(y, 1.0)]


def test_the_loss_of_weighted_targets_is_the_loss_of_the_mixed_soft_target():
    logits, ya, yb, lam = torch.randn(4, 5), torch.tensor([0, 1, 2, 3]), torch.tensor([4, 0, 1, 2]), 0.3
    cfg = make_config(overrides={"label_smoothing": 0.1})
    loss, _ = view_loss(logits, [(ya, lam), (yb, 1 - lam)], cfg)
    soft = lam * F.one_hot(ya, 5).float() + (1 - lam) * F.one_hot(yb, 5).float()
    torch.testing.assert_close(loss, F.cross_entropy(logits, soft, label_smoothing=0.1))


def test_a_mixed_batch_counts_each_label_with_its_weight():
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])  # predicts 0, 1, 2
    ya, yb = torch.tensor([0, 1, 0]), torch.tensor([1, 0, 2])
    assert hits(logits, [(ya, 0.7), (yb, 0.3)]) == pytest.approx(0.7 * 2 + 0.3 * 1)
    assert hits(logits, ya) == 2


@pytest.mark.parametrize(
    "key,value",
    [
        ("mixup_alpha", -1.0),
        ("cutmix_alpha", -0.5),
        ("mixup_alpha", float("nan")),
        ("cutmix_alpha", float("inf")),
        ("ema_decay", 1.0),
        ("ema_decay", -0.1),
    ],
)
def test_bad_recipe_values_are_refused(key, value):
    with pytest.raises(ConfigError, match=key):
        make_config(overrides={key: value})


def test_the_average_is_the_decay_weighted_mean_of_the_weights_seen_and_copies_schedule_state():
    """After updates with weights w_1..w_t the average is sum d^(t-s) w_s / sum d^(t-s): the random
    initialisation has no share. Parameters and BatchNorm statistics are averaged; the
    deep-training slope is copied, so a fully annealed live model has a fusable average."""
    torch.manual_seed(0)
    live = create_model("shallow", num_classes=5)
    net = next(m for m in live.modules() if hasattr(m, "set_act_lambda"))
    net.set_act_lambda(0.0)
    avg = WeightAverage(live, decay=0.9)
    name, _ = next(iter(live.named_parameters()))
    bn = next(m for m in live.modules() if isinstance(m, torch.nn.BatchNorm2d))
    key = next(k for k in live.state_dict() if k.endswith("running_mean"))
    seen = []
    for step in range(3):
        with torch.no_grad():
            for p in live.parameters():
                p.add_(1.0 + step)
            bn.running_mean.add_(2.0)
        net.set_act_lambda(0.5 * (step + 1) if step < 2 else 1.0)
        seen.append({k: v.clone() for k, v in live.state_dict().items()})
        avg.update(live)
        if step == 0:  # the first update: the live weights themselves
            assert all(torch.equal(avg.model.state_dict()[k], v) for k, v in seen[0].items())
    weights = [0.9 ** (2 - s) for s in range(3)]
    for k in (name, key):
        expected = sum(w * st[k] for w, st in zip(weights, seen)) / sum(weights)
        torch.testing.assert_close(avg.model.state_dict()[k], expected)
    assert all(float(m.lam) == 1.0 for m in avg.model.modules() if hasattr(m, "lam")) and deployable(avg.model)
    assert avg.step_weight() == pytest.approx(0.1 / (1 - 0.9**4))
    assert not any(p.requires_grad for p in avg.model.parameters())


def test_a_tied_weight_is_averaged_once():
    live = torch.nn.Sequential(torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 3, bias=False))
    live[1].weight = live[0].weight
    avg = WeightAverage(live, decay=0.5)
    first = live[0].weight.detach().clone()
    avg.update(live)
    with torch.no_grad():
        live[0].weight.add_(1.0)
    avg.update(live)
    expected = (0.5 * first + live[0].weight.detach()) / 1.5
    torch.testing.assert_close(avg.model[0].weight, expected)
    assert avg.model[1].weight is avg.model[0].weight


def test_ema_is_validated_kept_in_best_and_resumed_exactly(tiny_data, tmp_path, stopped_after, restore_torch_globals):
    from prismlab.engine.train import train

    def run(out, resume=None):
        cfg = make_config(
            overrides={
                "data": str(tiny_data),
                "out": str(out),
                "image_size": 24,
                "batch_size": 16,
                "lr": 0.05,
                "epochs": 2,
                "deterministic": True,
                "threads": 1,
                "ema_decay": 0.9,
                "mixup_alpha": 0.4,
                "cutmix_alpha": 1.0,
                "model": "shallow",
                "bn_recalibrate": 2,
            }
        )
        return train(cfg, resume=resume)

    snapshot = stopped_after(1)
    straight = run(tmp_path / "straight")
    resumed = run(snapshot, resume=snapshot / LAST)
    last, best = load_checkpoint(straight / LAST), load_checkpoint(straight / BEST)
    assert "ema" in last and "ema" not in best and last["ema"]["updates"] > 0 and best["weights"] == "average"
    with pytest.raises(DataError, match=r"best.pt: holds the weight average \(ema_decay\), .*resume from .*last.pt$"):
        run(tmp_path / "again", resume=straight / BEST)
    # The shallow net anneals over epoch 1, so only epoch 2 can be best.pt: it holds that epoch's average.
    assert best["epoch"] == last["epoch"] == 2
    for k, v in best["model"].items():
        assert torch.equal(v, last["ema"]["model"][k]), k
    assert any(not torch.equal(v, last["model"][k]) for k, v in best["model"].items())
    again = load_checkpoint(resumed / LAST)
    for part in ("model", "ema"):
        state_a = last[part] if part == "model" else last["ema"]["model"]
        state_b = again[part] if part == "model" else again["ema"]["model"]
        for k in state_a:
            assert torch.equal(state_a[k], state_b[k]), f"{part}: {k} differs after resume"
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("time_s", "img_s")} for r in rs]  # noqa: E731
    assert strip(RunDir(straight).metrics()) == strip(RunDir(resumed).metrics())
