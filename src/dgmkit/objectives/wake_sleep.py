r"""Wake-sleep (Hinton et al. 1995) and reweighted wake-sleep (Bornschein & Bengio 2015,
arXiv 1406.2751) for models with discrete latents, such as :class:`HelmholtzMachine`.

Wake-sleep: the wake phase raises log p(x, h) of the generative model at h ~ q(h|x); the sleep
phase raises log q(h|x) of the recognition model on dreamed pairs (x, h) ~ p(x, h). The two
phases are two terms of one loss whose gradients touch disjoint parameters: samples carry no
gradient, log p(x, h) does not involve q, and log q(h|x) on dreams does not involve p's
parameters (the dream is sampled without gradient).

Reweighted wake-sleep: k samples h_i ~ q(h|x) with self-normalized importance weights
w~_i = softmax_i(log p(x, h_i) - log q(h_i|x)); the generative update sum_i w~_i grad log p(x, h_i)
is exactly the gradient of the k-sample IWAE bound with respect to p; the wake update of q is
sum_i w~_i grad log q(h_i|x), optionally with the sleep update added.

VIMCO (Mnih & Rezende 2016, arXiv 1602.06725; their sigmoid belief networks are this model):
both networks follow the gradient of the one k-sample bound, the generative one as RWS's p-wake
update, the recognition one by the score-function estimator with a baseline for each draw from
the other draws (``discrete.vimco_surrogate``); no sleep phase.
"""

from typing import NamedTuple

import torch

from dgmkit.errors import true_or_false, whole_at_least
from dgmkit.models import LatentVariableModel
from dgmkit.objectives.base import Objective
from dgmkit.objectives.discrete import vimco_surrogate
from dgmkit.objectives.importance import log_importance_weights, log_mean_exp

__all__ = ["WakeSleep", "ReweightedWakeSleep", "VIMCOBound", "WakeSleepTerms"]


class WakeSleepTerms(NamedTuple):
    loss: torch.Tensor
    elbo: torch.Tensor  # log p(x, h) - log q(h|x) at h ~ q, averaged over the draws: a one-sample ELBO
    log_px_z: torch.Tensor
    kl: torch.Tensor  # log q(h|x) - log p(h) at the same draws
    iwae: torch.Tensor  # the k-sample bound (k = 1 for wake-sleep)


def _sleep_term(model: LatentVariableModel, n: int) -> torch.Tensor:
    with torch.no_grad():
        h = model.prior().sample((n,))
        x = model.likelihood(h).sample()
    return model.posterior(x).log_prob(h)  # (n,)


class WakeSleep(Objective[LatentVariableModel]):
    score = "elbo"

    def __call__(self, model: LatentVariableModel, x: torch.Tensor, beta: float = 1.0) -> WakeSleepTerms:
        w = log_importance_weights(model, x, 1, reparameterized=False)  # (1, B); h carries no gradient
        wake = (w.log_px_z + w.log_pz)[0]  # gradient: generative parameters only
        loss = -wake
        if model.training:
            loss = loss - _sleep_term(model, len(x))  # gradient: recognition parameters only
        elbo = w.log_w[0].detach()
        return WakeSleepTerms(loss, elbo, w.log_px_z[0].detach(), (w.log_qz - w.log_pz)[0].detach(), elbo)


class ReweightedWakeSleep(Objective[LatentVariableModel]):
    score = "iwae"
    score_label = "IWAE bound"

    def __init__(self, k: int = 5, sleep: bool = True):
        self.k, self.sleep = whole_at_least("k", k, 1), true_or_false("sleep", sleep)  # (sleep="no" is true)

    @property
    def label(self) -> str:
        return f"IWAE-{self.k} bound"

    def __call__(self, model: LatentVariableModel, x: torch.Tensor, beta: float = 1.0) -> WakeSleepTerms:
        w = log_importance_weights(model, x, self.k, reparameterized=False)  # (k, B)
        log_w = w.log_w
        weights = torch.softmax(log_w.detach(), dim=0)  # self-normalized importance weights
        loss = -(weights * (w.log_px_z + w.log_pz + w.log_qz)).sum(0)  # p-wake and q-wake updates
        if model.training and self.sleep:
            loss = loss - _sleep_term(model, len(x))
        return WakeSleepTerms(
            loss,
            log_w.mean(0).detach(),
            w.log_px_z.mean(0).detach(),
            (w.log_qz - w.log_pz).mean(0).detach(),
            log_mean_exp(log_w).detach(),
        )


class VIMCOBound(Objective[LatentVariableModel]):
    """VIMCO (module docstring) with ``k`` >= 2 draws a datapoint, for a model with discrete latents
    whose KL has no closed form (a Helmholtz machine): it trains and is scored by the k-sample
    bound, as reweighted wake-sleep is (the discrete VAE's ``discrete.VIMCO`` reports the ELBO).
    KL warm-up does not apply (the Helmholtz machine's objectives weigh no KL term)."""

    score = "iwae"
    score_label = "IWAE bound"

    def __init__(self, k: int = 5):
        self.k = whole_at_least("k, VIMCO's draws a datapoint", k, 2)  # (one draw has no others to be its baseline)

    @property
    def label(self) -> str:
        return f"IWAE-{self.k} bound"

    def __call__(self, model: LatentVariableModel, x: torch.Tensor, beta: float = 1.0) -> WakeSleepTerms:
        w = log_importance_weights(model, x, self.k, reparameterized=False)  # (k, B); h carries no gradient
        log_w = w.log_w
        return WakeSleepTerms(
            -vimco_surrogate(log_w, w.log_qz),
            log_w.mean(0).detach(),
            w.log_px_z.mean(0).detach(),
            (w.log_qz - w.log_pz).mean(0).detach(),
            log_mean_exp(log_w).detach(),
        )
