r"""Importance weights and the importance-weighted bound (Burda et al. 2016, arXiv 1509.00519).

    L_k(x) = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x)

L_1 is the ELBO, L_k increases with k and tends to log p(x).
"""

import math
from typing import NamedTuple

import torch

from dgmkit.objectives.base import Objective

__all__ = ["log_importance_weights", "iwae_bound", "IWAE", "IWAETerms"]


def log_importance_weights(model, x: torch.Tensor, k: int, q=None, beta: float = 1.0) -> torch.Tensor:
    """log p(x|z_i) + beta (log p(z_i) - log q(z_i|x)) for k samples per datapoint: (k, B).
    With beta = 1 these are the log importance weights log p(x, z_i) / q(z_i|x)."""
    q = model.posterior(x) if q is None else q
    z = q.rsample((k,))  # (k, B, M)
    log_ratio = model.prior().log_prob(z) - q.log_prob(z)
    return model.likelihood(z).log_prob(x) + (log_ratio if beta == 1.0 else beta * log_ratio)


def iwae_bound(model, x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-sample importance-weighted bound per datapoint, shape (B,)."""
    return torch.logsumexp(log_importance_weights(model, x, k), dim=0) - math.log(k)


class IWAETerms(NamedTuple):
    """Per-example tensors (B,): ``iwae`` is the k-sample bound; ``elbo``, ``log_px_z`` and
    ``kl`` are the one-sample quantities averaged over the same k samples."""

    loss: torch.Tensor
    elbo: torch.Tensor
    log_px_z: torch.Tensor
    kl: torch.Tensor
    iwae: torch.Tensor


class IWAE(Objective):
    """The importance-weighted bound as a training objective, with k samples per datapoint.

    Its gradient weights each sample by its normalized importance weight. With beta < 1 (KL
    warm-up) the weights use p(x|z) (p(z)/q(z|x))^beta; ``iwae`` always reports beta = 1.
    """

    def __init__(self, k: int = 5):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k

    def __call__(self, model, x: torch.Tensor, beta: float = 1.0) -> IWAETerms:
        q = model.posterior(x)
        z = q.rsample((self.k,))  # (k, B, M)
        log_px_z = model.likelihood(z).log_prob(x)  # (k, B)
        log_ratio = model.prior().log_prob(z) - q.log_prob(z)
        log_k = math.log(self.k)
        bound = torch.logsumexp(log_px_z + log_ratio, 0) - log_k
        train = bound if beta == 1.0 else torch.logsumexp(log_px_z + beta * log_ratio, 0) - log_k
        return IWAETerms(-train, (log_px_z + log_ratio).mean(0), log_px_z.mean(0), -log_ratio.mean(0), bound)
