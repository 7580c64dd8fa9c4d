"""Evaluation: importance-sampled log-likelihood, bits/dim, latent diagnostics, reports."""

from dgmkit.evaluation.likelihood import importance_sampled_log_likelihood
from dgmkit.evaluation.metrics import active_units, bits_per_dim, discrete_nll, posterior_statistics
from dgmkit.evaluation.report import EvalReport, evaluate

__all__ = [
    "importance_sampled_log_likelihood",
    "bits_per_dim",
    "discrete_nll",
    "active_units",
    "posterior_statistics",
    "EvalReport",
    "evaluate",
]
