"""Estimators of training objectives. Each returns per-example values."""

from dgmkit.objectives.elbo import ELBO, ELBOTerms, kl_term
from dgmkit.objectives.iwae import IWAE, IWAETerms, iwae_bound, log_importance_weights

__all__ = ["ELBO", "ELBOTerms", "kl_term", "IWAE", "IWAETerms", "iwae_bound", "log_importance_weights"]
