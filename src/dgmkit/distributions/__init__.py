"""Distributions: torch.distributions objects and our own pixel likelihoods.

Every distribution here follows the torch.distributions contract (``log_prob``, ``sample``,
``rsample`` where reparameterizable, ``batch_shape``/``event_shape``) and its ``log_prob``
returns one value per example: the event dimensions are summed.
"""

from dgmkit.distributions.bernoulli import BernoulliPixels
from dgmkit.distributions.categorical import CategoricalPixels
from dgmkit.distributions.delta import Delta
from dgmkit.distributions.flow import FlowDistribution, location
from dgmkit.distributions.logistic import DiscretizedLogisticMixture
from dgmkit.distributions.mixture import DiagonalGaussianMixture
from dgmkit.distributions.normal import DiagonalNormal, diagonal_normal, kl_per_dimension
from dgmkit.distributions.pixels import (
    bernoulli_pixels,
    complete_data,
    element_log_probs,
    gaussian_pixels,
    may_be_incomplete,
    observed_log_prob,
    pixel_mean,
)
from dgmkit.distributions.sampling import JointSampler, rsample_and_log_prob

__all__ = [
    "DiagonalNormal",
    "diagonal_normal",
    "JointSampler",
    "rsample_and_log_prob",
    "kl_per_dimension",
    "bernoulli_pixels",
    "gaussian_pixels",
    "pixel_mean",
    "element_log_probs",
    "observed_log_prob",
    "complete_data",
    "may_be_incomplete",
    "BernoulliPixels",
    "CategoricalPixels",
    "Delta",
    "DiscretizedLogisticMixture",
    "DiagonalGaussianMixture",
    "FlowDistribution",
    "location",
]
