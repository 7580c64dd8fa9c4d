r"""beta-TCVAE (Chen et al. 2018): the ELBO with its KL term split into index-code mutual
information, total correlation and dimension-wise KL (``objectives.total_correlation``), each
with its own weight:

    loss = -( log p(x|z) - lambda (alpha * mi + beta * tc + gamma * dim_kl) ),

for one reparameterized draw z ~ q(z|x) per datapoint, lambda the Trainer's KL weight (warm-up).
alpha = beta = gamma = 1 is the one-draw ELBO; beta > 1 penalizes dependence between the code
dimensions. ``objective`` is what training maximizes, at full weight (lambda = 1), and what the
Trainer monitors (early stopping, the best checkpoint); ``elbo`` is the true bound (its KL in
closed form where torch's registry has one, else the draw's estimate), shown beside it. The
three terms are reported per datapoint, so that the Trainer logs their validation means every
epoch.

The aggregate posterior q(z) is estimated from each batch with minibatch stratified sampling
(``mss``) or the batch mixture (``mws``); the datapoints stand for a training set of N, which
the Trainer sets (``setup``); without it the batch is the whole data.
A batch of one says nothing of q(z) beyond its own posterior (no MI, no TC): with unequal
weights the Trainer refuses it, and leaves out a last batch of one (``rows_per_step``).
"""

from typing import NamedTuple

import torch

from dgmkit.distributions import DiagonalNormal
from dgmkit.errors import whole_at_least
from dgmkit.models import VAE
from dgmkit.objectives.base import Objective, at_least
from dgmkit.objectives.elbo import kl_term
from dgmkit.objectives.total_correlation import ESTIMATORS, decompose_kl

__all__ = ["BetaTCVAE", "TCVAETerms"]


class TCVAETerms(NamedTuple):
    """Per-example (B,): the loss, the weighted objective at full weight, the ELBO and its terms,
    and the KL's three parts (nats)."""

    loss: torch.Tensor
    objective: torch.Tensor
    elbo: torch.Tensor
    log_px_z: torch.Tensor
    kl: torch.Tensor
    mi: torch.Tensor
    tc: torch.Tensor
    dim_kl: torch.Tensor


class BetaTCVAE(Objective[VAE]):
    """See the module docstring. Needs a diagonal Gaussian posterior and a prior that factorizes
    over dimensions (the standard normal)."""

    score = "objective"
    score_label = "beta-TCVAE objective"

    def __init__(
        self,
        mi_weight: float = 1.0,
        tc_weight: float = 6.0,
        dim_kl_weight: float = 1.0,
        estimator: str = "mss",
        dataset_size: int | None = None,
    ):
        self.weights = tuple(
            at_least(name, w, 0)
            for name, w in (("mi_weight", mi_weight), ("tc_weight", tc_weight), ("dim_kl_weight", dim_kl_weight))
        )
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if dataset_size is not None:
            whole_at_least("dataset_size", dataset_size, 1)
        self.estimator = estimator
        self.dataset_size = dataset_size
        # a lone datapoint's q(z) estimate is its own posterior: no MI, no TC, so a batch of one
        # trained the KL at gamma alone, whatever alpha and beta (equal weights split nothing)
        self.rows_per_step = 1 if len(set(self.weights)) == 1 else 2

    def setup(self, train_size: int) -> None:
        self.dataset_size = train_size

    def __call__(self, model: VAE, x: torch.Tensor, beta: float = 1.0) -> TCVAETerms:
        q, p = model.posterior(x), model.prior()
        if not isinstance(q, DiagonalNormal):
            raise ValueError("beta-TCVAE needs a diagonal Gaussian posterior q(z|x)")
        z, log_qz = q.rsample_and_log_prob()
        log_pz = p.log_prob(z)
        log_px_z = model.likelihood(z).log_prob(x)
        n = max(self.dataset_size or len(x), len(x))
        mi, tc, dim_kl = decompose_kl(z, q.loc, q.scale, log_pz, n, self.estimator)
        kl = kl_term(q, p, log_qz[None], log_pz[None])  # (a prior with no closed form: the draw's estimate)
        a, b, g = self.weights
        penalty = a * mi + b * tc + g * dim_kl
        loss = -(log_px_z - beta * penalty)
        return TCVAETerms(loss, log_px_z - penalty, log_px_z - kl, log_px_z, kl, mi, tc, dim_kl)
