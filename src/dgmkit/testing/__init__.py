"""Reusable property checks for distributions and models, used by the test suite and by
anyone adding a component: normalisation by enumeration, closed-form KL against Monte Carlo,
and agreement of samples with ``log_prob``."""

from dgmkit.testing.checks import (
    enumerate_total_probability,
    kl_monte_carlo,
    sample_frequencies,
)

__all__ = ["enumerate_total_probability", "kl_monte_carlo", "sample_frequencies"]
