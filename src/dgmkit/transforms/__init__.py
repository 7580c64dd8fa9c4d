"""Bijections with forward (data -> base), inverse and log|det J|, and the flows built from them."""

from dgmkit.transforms.architectures import (
    IMAGE_FLOWS,
    VECTOR_FLOWS,
    glow,
    glow_multiscale,
    iaf,
    maf,
    nice,
    realnvp,
    realnvp_multiscale,
)
from dgmkit.transforms.autoregressive import MaskedAffineAutoregressive, iaf_layer
from dgmkit.transforms.base import Bijection, Compose, Inverse, sum_except_batch
from dgmkit.transforms.coupling import AdditiveCoupling, AffineCoupling, alternating_mask, channel_mask, checkerboard_mask
from dgmkit.transforms.elementwise import DiagonalScaling, Logit
from dgmkit.transforms.linear import InvertibleLinear
from dgmkit.transforms.normalization import ActNorm
from dgmkit.transforms.permutation import Permutation
from dgmkit.transforms.reshape import MultiScale, Squeeze

__all__ = [
    "Bijection",
    "Compose",
    "Inverse",
    "sum_except_batch",
    "AdditiveCoupling",
    "AffineCoupling",
    "alternating_mask",
    "checkerboard_mask",
    "channel_mask",
    "DiagonalScaling",
    "Logit",
    "InvertibleLinear",
    "ActNorm",
    "Permutation",
    "Squeeze",
    "MultiScale",
    "MaskedAffineAutoregressive",
    "iaf_layer",
    "nice",
    "realnvp",
    "glow",
    "maf",
    "iaf",
    "realnvp_multiscale",
    "glow_multiscale",
    "VECTOR_FLOWS",
    "IMAGE_FLOWS",
]
