"""Distributions: torch.distributions objects and our own pixel likelihoods.

Every distribution here follows the torch.distributions contract (``log_prob``, ``sample``,
``rsample`` where reparameterizable, ``batch_shape``/``event_shape``) and its ``log_prob``
returns one value per example: the event dimensions are summed.
"""

from dgmkit.distributions import pixels
from dgmkit.distributions.bernoulli import BernoulliPixels
from dgmkit.distributions.categorical import CategoricalPixels, one_hot, one_hot_categorical
from dgmkit.distributions.delta import Delta
from dgmkit.distributions.flow import FlowDistribution, location
from dgmkit.distributions.levels import LevelPixels
from dgmkit.distributions.logistic import DiscretizedLogisticMixture
from dgmkit.distributions.logit_normal import LogitNormal
from dgmkit.distributions.mixture import DiagonalGaussianMixture
from dgmkit.distributions.normal import (
    DiagonalNormal,
    PreciseNormal,
    closed_form_kl,
    diagonal_normal,
    kl_per_dimension,
)
from dgmkit.distributions.pixels import *  # noqa: F403 - the names of pixels.__all__, re-exported below
from dgmkit.distributions.sampling import JointSampler, rsample_and_log_prob
from dgmkit.distributions.student_t import AccurateStudentT, student_t
from dgmkit.distributions.table import MixedColumns

__all__ = [
    "DiagonalNormal",
    "PreciseNormal",
    "diagonal_normal",
    "JointSampler",
    "rsample_and_log_prob",
    "kl_per_dimension",
    "closed_form_kl",
    *pixels.__all__,
    "BernoulliPixels",
    "CategoricalPixels",
    "one_hot_categorical",
    "one_hot",
    "student_t",
    "AccurateStudentT",
    "Delta",
    "DiscretizedLogisticMixture",
    "DiagonalGaussianMixture",
    "FlowDistribution",
    "location",
    "LevelPixels",
    "LogitNormal",
    "MixedColumns",
]
