"""Evaluation: estimates of log p(x) by the kind each model declares, bits/dim, latent
diagnostics, reports and figures."""

from dgmkit.evaluation.diagnostics import Diagnosis, diagnose
from dgmkit.evaluation.estimates import ESTIMATORS, Estimate, estimate, log_likelihoods
from dgmkit.evaluation.metrics import active_units, bits_per_dim, discrete_nll, posterior_statistics
from dgmkit.evaluation.report import EvalReport, evaluate, record_terms
from dgmkit.objectives import importance_sampled_log_likelihood

__all__ = [
    "Estimate",
    "ESTIMATORS",
    "estimate",
    "log_likelihoods",
    "importance_sampled_log_likelihood",
    "bits_per_dim",
    "discrete_nll",
    "active_units",
    "posterior_statistics",
    "EvalReport",
    "record_terms",
    "evaluate",
    "Diagnosis",
    "diagnose",
]
