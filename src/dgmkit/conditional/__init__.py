"""Modules whose ``forward(context)`` returns a Distribution: encoders q(z|x), decoders p(x|z)."""

from dgmkit.conditional import heads
from dgmkit.conditional.base import ConditionalDistribution
from dgmkit.conditional.categorical_encoder import CategoricalEncoder
from dgmkit.conditional.decoder import Decoder
from dgmkit.conditional.encoder import GaussianEncoder
from dgmkit.conditional.heads import *  # noqa: F403 - the names of heads.__all__, re-exported below
from dgmkit.conditional.iaf_encoder import IAFEncoder

__all__ = [
    "ConditionalDistribution",
    "GaussianEncoder",
    "CategoricalEncoder",
    "Decoder",
    "IAFEncoder",
    *heads.__all__,
]
