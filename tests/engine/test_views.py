"""Training on two views of each image: the RGB view and the sampled subsets, with distillation."""

import pytest
import torch
import torch.nn.functional as F

from prismlab.data.channels import to_subset
from prismlab.engine.config import make_config
from prismlab.engine.step import forward_subsets, view_loss
from prismlab.errors import ConfigError
from prismlab.models import create_model


def test_the_rgb_view_comes_first_then_each_chunk_in_its_subset():
    torch.manual_seed(0)
    model = create_model("baseline_cnn", num_classes=5, adapter="channelset").eval()
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        both = forward_subsets(model, x, ["R", "GB"], rgb_view=True)
        assert both.shape == (16, 5)
        torch.testing.assert_close(both[:8], model(*to_subset(x, "RGB")))
        torch.testing.assert_close(both[8:12], model(*to_subset(x[:4], "R")))
        torch.testing.assert_close(both[12:], model(*to_subset(x[4:], "GB")))


def test_both_views_learn_the_labels_and_only_the_subset_view_learns_from_the_rgb_view():
    y = torch.tensor([0, 1, 2, 0])
    logits = torch.randn(8, 3, requires_grad=True)
    cfg = make_config(overrides={"rgb_view": True, "view_distill": 0.5, "label_smoothing": 0.0})
    loss, views = view_loss(logits, y, cfg)
    kl = F.kl_div(logits[4:].log_softmax(1), logits[:4].log_softmax(1), log_target=True, reduction="batchmean")
    expected = F.cross_entropy(logits[:4], y) + F.cross_entropy(logits[4:], y) + 0.5 * kl
    torch.testing.assert_close(loss, expected)
    assert views.shape == (4, 3)
    # The distillation term's gradient reaches the subset view only: the teacher is detached.
    only_kl = loss - F.cross_entropy(logits[:4], y) - F.cross_entropy(logits[4:], y)
    (g,) = torch.autograd.grad(only_kl, logits)
    assert g[:4].abs().sum() == 0 and g[4:].abs().sum() > 0


def test_one_view_is_the_plain_loss():
    y = torch.tensor([0, 1])
    logits = torch.randn(2, 3)
    loss, views = view_loss(logits, y, make_config(overrides={"label_smoothing": 0.1}))
    torch.testing.assert_close(loss, F.cross_entropy(logits, y, label_smoothing=0.1))
    assert views is logits


def test_distillation_needs_the_rgb_view():
    with pytest.raises(ConfigError, match="view_distill needs rgb_view=true"):
        make_config(overrides={"view_distill": 1.0})
    with pytest.raises(ConfigError, match="view_distill"):
        make_config(overrides={"rgb_view": True, "view_distill": -1})
