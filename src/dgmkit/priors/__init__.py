"""Priors p(z): modules with no context whose ``forward()`` returns a Distribution."""

from dgmkit.priors.base import Prior
from dgmkit.priors.categorical import UniformCategoricalPrior
from dgmkit.priors.flow import FlowPrior
from dgmkit.priors.mixture import MixtureOfGaussiansPrior
from dgmkit.priors.standard import StandardNormalPrior
from dgmkit.priors.vamp import VampPrior

__all__ = ["Prior", "StandardNormalPrior", "MixtureOfGaussiansPrior", "VampPrior", "UniformCategoricalPrior", "FlowPrior"]
