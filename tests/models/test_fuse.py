"""The inference form: BatchNorm folded into the conv before it, with the same outputs."""

import torch
from torch import nn

from prismlab.models import create_model
from prismlab.models.fuse import ConvBN, conv_from, inference_form


def test_convbn_kernel_is_the_pair_folded():
    torch.manual_seed(0)
    block = ConvBN(3, 5, 3, stride=2)
    with torch.no_grad():  # statistics away from the identity, so the fold has something to do
        block.bn.running_mean.normal_()
        block.bn.running_var.uniform_(0.5, 2.0)
        block.bn.weight.normal_()
        block.bn.bias.normal_()
    block.eval()
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(conv_from(*block.kernel(), stride=2)(x), block(x))


def test_inference_form_folds_every_batchnorm_resnet34_included():
    """Speed and size are compared between deployable forms: ResNet34's BatchNorms are folded into
    its convs just as the shallow net's are, with the same outputs."""
    for name in ("resnet34", "shallow"):
        model = create_model(name, num_classes=10).eval()
        fused = inference_form(model)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules()), name
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            assert torch.allclose(model(x), fused(x), rtol=1e-4, atol=1e-4), name
