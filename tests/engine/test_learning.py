"""Training learns: a few epochs on the synthetic set lower the training loss and lift validation
accuracy well above chance. The second test shows that the check fails for a gradient-sign bug, so
a pass means the weights moved the right way, not only that the loop ran."""

import pytest
import torch

from prismlab.engine.config import make_config
from prismlab.engine.rundir import RunDir
from prismlab.engine.train import TrainingDiverged, train

EPOCHS = 3
CHANCE = 1 / 4  # tiny_data: 4 classes with equally many validation images


def learning_curve(data, out) -> list[dict]:
    """The metrics of every finished epoch of a short run (one that diverges keeps the epochs it finished)."""
    cfg = make_config(
        overrides={
            "data": str(data),
            "out": str(out),
            "image_size": 24,
            "batch_size": 16,
            "epochs": EPOCHS,
            "lr": 0.05,
            "test_split": "",
        }
    )
    try:
        train(cfg)
    except TrainingDiverged:
        pass  # judged below by what it finished
    return RunDir(out).metrics()


def check_learns(rows: list[dict]) -> None:
    first, last = rows[0], rows[-1]
    assert last["train_loss"] < 0.75 * first["train_loss"], (
        f"training loss went from {first['train_loss']:.3f} to {last['train_loss']:.3f} in {len(rows)} epochs"
    )
    assert last["val_acc"] >= 2 * CHANCE, f"validation accuracy {last['val_acc']:.3f}, chance is {CHANCE}"
    assert len(rows) == EPOCHS


def test_a_few_epochs_lower_the_loss_and_lift_accuracy_well_above_chance(tiny_data, tmp_path):
    check_learns(learning_curve(tiny_data, tmp_path / "run"))


def test_an_optimizer_that_climbs_the_loss_fails_the_check(tiny_data, tmp_path, monkeypatch):
    step = torch.optim.SGD.step

    def ascend(self, closure=None):  # the bug: every gradient's sign flipped before the update
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.neg_()
        return step(self, closure)

    monkeypatch.setattr(torch.optim.SGD, "step", ascend)
    with pytest.raises(AssertionError, match="training loss went from"):
        check_learns(learning_curve(tiny_data, tmp_path / "run"))
