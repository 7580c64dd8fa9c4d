"""Networks only, no probability: MLPs and convolutional stacks."""

from dgmkit.nn.conv import ConvDecoderNet, ConvEncoderNet
from dgmkit.nn.gated import GatedDense, GatedMLP
from dgmkit.nn.mlp import MLP

__all__ = ["MLP", "GatedDense", "GatedMLP", "ConvEncoderNet", "ConvDecoderNet"]
