"""Priors p(z): modules with no context whose ``forward()`` returns a Distribution."""

from dgmkit.priors.base import Prior
from dgmkit.priors.standard import StandardNormalPrior

__all__ = ["Prior", "StandardNormalPrior"]
