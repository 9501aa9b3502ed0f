"""prismlab: any-channel convolution and shallow networks for small-scale image classification."""

__version__ = "0.1.0"
