"""Estimators of training objectives. Each returns per-example values."""

from dgmkit.objectives.elbo import ELBO, ELBOTerms, kl_term
from dgmkit.objectives.iwae import iwae_bound, log_importance_weights

__all__ = ["ELBO", "ELBOTerms", "kl_term", "iwae_bound", "log_importance_weights"]
