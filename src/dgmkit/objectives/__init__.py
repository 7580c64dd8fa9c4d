"""Estimators of training objectives. Each returns per-example values; the variational ones
are reductions of one primitive, the log importance weights (``objectives.importance``)."""

from dgmkit.objectives.base import Objective
from dgmkit.objectives.dequantization import BoundTerms, DequantizationBound
from dgmkit.objectives.diffusion import DiffusionBound, DiffusionTerms
from dgmkit.objectives.discrete import VIMCO, DiscreteTerms, GumbelSoftmaxELBO, ReinforceELBO
from dgmkit.objectives.elbo import ELBO, ELBOTerms, kl_term
from dgmkit.objectives.hierarchical import HierarchicalELBO
from dgmkit.objectives.importance import (
    ImportanceWeights,
    importance_sampled_log_likelihood,
    iwae_bound,
    log_importance_weights,
    log_mean_exp,
)
from dgmkit.objectives.iwae import IWAE, IWAETerms
from dgmkit.objectives.likelihood import LikelihoodTerms, MaximumLikelihood
from dgmkit.objectives.miwae import MIWAE, MIWAETerms
from dgmkit.objectives.reconstruction import Reconstruction, ReconstructionTerms
from dgmkit.objectives.semisupervised import HybridObjective, HybridObjectiveTerms, M2Objective, M2Terms
from dgmkit.objectives.tcvae import BetaTCVAE, TCVAETerms
from dgmkit.objectives.vq import VQObjective, VQTerms
from dgmkit.objectives.wae import WAEObjective, WAETerms
from dgmkit.objectives.wake_sleep import ReweightedWakeSleep, VIMCOBound, WakeSleep, WakeSleepTerms

__all__ = [
    "Objective",
    "ELBO",
    "ELBOTerms",
    "kl_term",
    "HierarchicalELBO",
    "IWAE",
    "IWAETerms",
    "MIWAE",
    "MIWAETerms",
    "M2Objective",
    "M2Terms",
    "HybridObjective",
    "HybridObjectiveTerms",
    "VQObjective",
    "VQTerms",
    "GumbelSoftmaxELBO",
    "ReinforceELBO",
    "VIMCO",
    "DiscreteTerms",
    "WakeSleep",
    "ReweightedWakeSleep",
    "VIMCOBound",
    "WakeSleepTerms",
    "MaximumLikelihood",
    "LikelihoodTerms",
    "Reconstruction",
    "ReconstructionTerms",
    "BetaTCVAE",
    "TCVAETerms",
    "WAEObjective",
    "WAETerms",
    "DequantizationBound",
    "BoundTerms",
    "DiffusionBound",
    "DiffusionTerms",
    "ImportanceWeights",
    "log_importance_weights",
    "log_mean_exp",
    "iwae_bound",
    "importance_sampled_log_likelihood",
]
