"""Estimators of training objectives. Each returns per-example values."""

from dgmkit.objectives.base import Objective
from dgmkit.objectives.dequantization import DequantizationBound
from dgmkit.objectives.discrete import DiscreteTerms, GumbelSoftmaxELBO, ReinforceELBO
from dgmkit.objectives.elbo import ELBO, ELBOTerms, kl_term
from dgmkit.objectives.iwae import IWAE, IWAETerms, iwae_bound, log_importance_weights
from dgmkit.objectives.likelihood import LikelihoodTerms, MaximumLikelihood
from dgmkit.objectives.reconstruction import Reconstruction, ReconstructionTerms
from dgmkit.objectives.wake_sleep import ReweightedWakeSleep, WakeSleep, WakeSleepTerms

__all__ = [
    "DequantizationBound",
    "MaximumLikelihood",
    "LikelihoodTerms",
    "Reconstruction",
    "ReconstructionTerms",
    "WakeSleep",
    "ReweightedWakeSleep",
    "WakeSleepTerms",
    "Objective",
    "GumbelSoftmaxELBO",
    "ReinforceELBO",
    "DiscreteTerms",
    "ELBO",
    "ELBOTerms",
    "kl_term",
    "IWAE",
    "IWAETerms",
    "iwae_bound",
    "log_importance_weights",
]
