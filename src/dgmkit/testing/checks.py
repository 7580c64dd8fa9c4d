"""Property checks. Each returns numbers for the caller to assert on, with the tolerance the
caller states, rather than asserting itself."""

import itertools
import math

import torch
from torch.distributions import Distribution

__all__ = ["enumerate_total_probability", "kl_monte_carlo", "sample_frequencies"]


def enumerate_total_probability(dist: Distribution, values_per_dim: list[int]) -> torch.Tensor:
    """Sum of exp(log_prob) over every value of a small discrete event.

    ``values_per_dim`` lists the support size of each event element (in the order of the
    flattened event). Returns the total per batch element: 1 for a normalised distribution.
    """
    event = dist.event_shape
    grid = torch.tensor(list(itertools.product(*[range(v) for v in values_per_dim])))  # (V, E)
    values = grid.reshape(len(grid), *([1] * len(dist.batch_shape)), *event)
    values = values.expand(len(grid), *dist.batch_shape, *event)
    return torch.logsumexp(dist.log_prob(values.to(torch.float64)), dim=0).exp()


def kl_monte_carlo(q: Distribution, p: Distribution, n: int = 100_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo estimate of KL(q || p) = E_q[log q - log p] and its standard error."""
    z = q.sample((n,))
    diff = q.log_prob(z) - p.log_prob(z)
    return diff.mean(0), diff.std(0) / math.sqrt(n)


def sample_frequencies(dist: Distribution, num_levels: int, n: int = 100_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Empirical frequencies of the values 0..L-1 of a one-element discrete event, against the
    probabilities from ``log_prob``. Returns (frequencies, probabilities), each (L,)."""
    draws = dist.sample((n,)).reshape(n).long()
    freq = torch.bincount(draws, minlength=num_levels).double() / n
    values = torch.arange(num_levels).reshape(num_levels, *([1] * len(dist.event_shape)))
    probs = dist.log_prob(values.expand(num_levels, *dist.event_shape)).double().exp()
    return freq, probs
