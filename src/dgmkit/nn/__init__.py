"""Networks only, no probability: MLPs and convolutional stacks."""

from dgmkit.nn.conv import ConvDecoderNet, ConvEncoderNet
from dgmkit.nn.mlp import MLP

__all__ = ["MLP", "ConvEncoderNet", "ConvDecoderNet"]
