"""Shared by the model tests: weights whose folding is not the identity."""

import pytest
import torch
from torch import nn

from prismlab.models.parallel import SelfAttention


def randomise_norms(model: nn.Module, seed: int = 1) -> nn.Module:
    """Every BatchNorm's running statistics and affine parameters drawn away from their init (at init
    BN folds into a scale of about 1 and a bias of 0, which hides a wrong fold), and every SAGAN gamma
    off its initial 0 (which hides the attention branch); returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                shape = m.running_mean.shape
                m.running_mean.copy_(0.5 * torch.randn(shape, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(shape, generator=gen))
                m.weight.copy_(0.5 + 1.5 * torch.rand(shape, generator=gen))
                m.bias.copy_(0.5 * torch.randn(shape, generator=gen))
            if isinstance(m, SelfAttention):
                m.gamma.fill_(0.5)
    return model.eval()


@pytest.fixture
def random_norms():
    """randomise_norms, for the tests of this folder."""
    return randomise_norms
