"""Networks only, no probability: MLPs, convolutional stacks, masked (MADE) networks, a table's
input layer."""

from dgmkit.nn.conv import ConvDecoderNet, ConvEncoderNet
from dgmkit.nn.gated import GatedDense, GatedMLP
from dgmkit.nn.made import MADE, MaskedLinear
from dgmkit.nn.mlp import MLP
from dgmkit.nn.moments import RunningMoments
from dgmkit.nn.resnet import ConvConditioner, zero_init
from dgmkit.nn.table import OneHotColumns

__all__ = [
    "MLP",
    "GatedDense",
    "GatedMLP",
    "ConvEncoderNet",
    "ConvDecoderNet",
    "MADE",
    "MaskedLinear",
    "ConvConditioner",
    "zero_init",
    "OneHotColumns",
    "RunningMoments",
]
