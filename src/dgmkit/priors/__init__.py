"""Priors p(z): modules whose ``forward(context=None)`` returns a Distribution over the latent
vector (``Prior``: the VampPrior takes the encoder as its context, a layer's prior the layer above)."""

from dgmkit.priors.base import Prior
from dgmkit.priors.categorical import UniformCategoricalPrior
from dgmkit.priors.conditional import GaussianLayerPrior
from dgmkit.priors.flow import FlowPrior
from dgmkit.priors.mixture import MixtureOfGaussiansPrior
from dgmkit.priors.standard import StandardNormalPrior
from dgmkit.priors.vamp import VampPrior

__all__ = [
    "Prior",
    "StandardNormalPrior",
    "MixtureOfGaussiansPrior",
    "VampPrior",
    "UniformCategoricalPrior",
    "FlowPrior",
    "GaussianLayerPrior",
]
