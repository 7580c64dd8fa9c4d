r"""The evidence lower bound with the reparameterization trick.

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x)

The expectation is estimated with L reparameterized samples (the mean of L importance weights'
reconstruction terms); the KL is taken in closed form where torch's KL registry has one and
otherwise estimated by Monte Carlo with the same samples. Training minimizes
-(E[log p(x|z)] - beta * KL) (beta-VAE, Higgins et al. 2017; beta < 1 during KL warm-up,
Sonderby et al. 2016), while ``elbo`` is always the true bound (beta = 1).
"""

from typing import NamedTuple

import torch
from torch.distributions import Distribution, Independent

from dgmkit.distributions import closed_form_kl, kl_per_dimension
from dgmkit.errors import whole_at_least
from dgmkit.models import LatentVariableModel
from dgmkit.objectives.base import Objective, at_least, unit_weight
from dgmkit.objectives.importance import check_per_datapoint, log_importance_weights, log_px_at_draws

__all__ = ["ELBO", "ELBOTerms", "kl_term", "closed_form_kl"]


class ELBOTerms(NamedTuple):
    """Per-example tensors of shape (B,): ``loss`` is what training minimizes."""

    loss: torch.Tensor
    elbo: torch.Tensor
    log_px_z: torch.Tensor
    kl: torch.Tensor


def kl_term(q: Distribution, p: Distribution, log_qz: torch.Tensor, log_pz: torch.Tensor) -> torch.Tensor:
    """KL(q || p) per example: closed form if registered, else the Monte Carlo mean of
    log q(z) - log p(z) over the draws (L, B) that the reconstruction term uses."""
    kl = closed_form_kl(q, p)
    return (log_qz - log_pz).mean(0) if kl is None else kl


class ELBO(Objective[LatentVariableModel]):
    """ELBO estimator with ``num_samples`` (L) reparameterized samples per datapoint, for any
    ``models.LatentVariableModel`` with a continuous posterior.

    ``free_bits`` (lambda, nats) puts a floor on the KL of each latent dimension, averaged over
    the mini-batch (Kingma et al. 2016, arXiv 1606.04934): the training loss uses
    sum_j max(lambda, KL_j), so dimensions below the floor are not pushed further towards the
    prior. It needs the KL of each dimension in closed form (``distributions.kl_per_dimension``:
    a diagonal Gaussian posterior and the standard normal prior, say). ``elbo`` stays the true bound.
    """

    score = "elbo"
    score_label = "ELBO"

    def __init__(self, num_samples: int = 1, free_bits: float = 0.0):
        self.num_samples = whole_at_least("num_samples", num_samples, 1)
        self.free_bits = at_least("free_bits", free_bits, 0)

    def __call__(self, model: LatentVariableModel, x: torch.Tensor, beta: float = 1.0) -> ELBOTerms:
        q = model.posterior(x)
        p = model.prior()
        if not q.has_rsample and torch.is_grad_enabled():
            raise ValueError(
                "the ELBO's reparameterized gradient needs a continuous posterior; for discrete "
                "latents train with gumbel-softmax or reinforce"
            )
        kl = closed_form_kl(q, p)
        if kl is None:  # estimated from the draws of the reconstruction term
            w = log_importance_weights(model, x, self.num_samples, q=q, prior=p)  # (L, B)
            log_px_z = w.log_px_z.mean(0)
            kl = (w.log_qz - w.log_pz).mean(0)
        else:  # no log q(z) or log p(z) to form: some 20 fewer operations a step
            check_per_datapoint(kl, "KL(q(z|x) || p(z)), in closed form,", (len(x),))
            log_px_z = log_px_at_draws(model, x, self.num_samples, q).mean(0)
        elbo = log_px_z - kl
        kl_train = _free_bits_kl(q, p, self.free_bits) if self.free_bits > 0 else kl
        loss = -elbo if unit_weight(beta) and kl_train is kl else -(log_px_z - beta * kl_train)
        return ELBOTerms(loss, elbo, log_px_z, kl)


def _free_bits_kl(q: Distribution, p: Distribution, floor: float) -> torch.Tensor:
    """Per-example KL whose batch mean is sum_j max(floor, mean_batch KL_j)."""
    per_dim = kl_per_dimension(q, p)  # (B, M)
    if per_dim is None:
        raise ValueError(
            f"free bits need each latent dimension's KL in closed form: a posterior and prior that are both "
            f"Independent over the dimensions with a KL between their bases in torch's registry; got "
            f"{_named(q)} and {_named(p)}"
        )
    active = per_dim.detach().mean(0) >= floor  # (M,)
    return torch.where(active, per_dim, torch.full_like(per_dim, floor)).sum(-1)


def _named(d: Distribution) -> str:
    """``Independent(Normal)``, or the class's name."""
    return f"Independent({type(d.base_dist).__name__})" if isinstance(d, Independent) else type(d).__name__
