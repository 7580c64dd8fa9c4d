r"""Importance weights and the importance-weighted bound (Burda et al. 2016, arXiv 1509.00519).

    L_k(x) = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x)

L_1 is the ELBO, L_k increases with k and tends to log p(x).
"""

import math

import torch

__all__ = ["log_importance_weights", "iwae_bound"]


def log_importance_weights(model, x: torch.Tensor, k: int, q=None) -> torch.Tensor:
    """log p(x, z_i) - log q(z_i|x) for k samples per datapoint: shape (k, B)."""
    q = model.posterior(x) if q is None else q
    z = q.rsample((k,))  # (k, B, M)
    return model.likelihood(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)


def iwae_bound(model, x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-sample importance-weighted bound per datapoint, shape (B,)."""
    return torch.logsumexp(log_importance_weights(model, x, k), dim=0) - math.log(k)
