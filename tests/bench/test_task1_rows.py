"""Every task-1 row builds from its own config keys and takes every subset, in its training form."""

import pytest
import torch

from prismlab.bench.task1 import METHODS
from prismlab.channels import SUBSETS
from prismlab.engine.config import make_config
from prismlab.models import create_model


@pytest.mark.parametrize(
    "name",
    ["slice_param", "template_mixing", "hypernet", "target_param", "bag_of_channels", "channelvit", "vit_hcs", "ours"],
)
def test_a_row_builds_from_its_config_and_takes_every_subset(name, tmp_path):
    cfg = make_config(overrides={"data": str(tmp_path), "out": str(tmp_path / "run"), **METHODS[name].overrides()})
    assert cfg.channel_sampling == "hcs"
    model = create_model(cfg.model, num_classes=5, **cfg.model_kw).eval()
    with torch.no_grad():
        for ids in SUBSETS.values():
            assert model(torch.randn(2, len(ids), 32, 32), ids).shape == (2, 5)


def test_the_vit_rows_train_with_adamw_at_a_rate_scaled_to_the_tiers_batch():
    for name in ("channelvit", "vit_hcs"):
        for batch in (128, 256):
            over = METHODS[name].overrides(batch)
            assert over["optimizer"] == "adamw" and over["lr"] == pytest.approx(5e-4 * batch / 256)
    assert "lr" not in METHODS["slice_param"].overrides(128)  # the CNN rows keep the tier's SGD rate
