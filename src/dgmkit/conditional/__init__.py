"""Modules whose ``forward(context)`` returns a Distribution: encoders q(z|x), decoders p(x|z)."""

from dgmkit.conditional.base import ConditionalDistribution
from dgmkit.conditional.categorical_encoder import CategoricalEncoder
from dgmkit.conditional.decoder import Decoder
from dgmkit.conditional.encoder import GaussianEncoder
from dgmkit.conditional.heads import (
    BernoulliHead,
    CategoricalHead,
    GaussianHead,
    LikelihoodHead,
    LogisticMixtureHead,
    MixedTableHead,
    StudentTHead,
)
from dgmkit.conditional.iaf_encoder import IAFEncoder

__all__ = [
    "ConditionalDistribution",
    "GaussianEncoder",
    "CategoricalEncoder",
    "Decoder",
    "IAFEncoder",
    "LikelihoodHead",
    "BernoulliHead",
    "GaussianHead",
    "StudentTHead",
    "CategoricalHead",
    "LogisticMixtureHead",
    "MixedTableHead",
]
