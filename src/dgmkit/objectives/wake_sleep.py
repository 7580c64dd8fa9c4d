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
"""

import math
from typing import NamedTuple

import torch

from dgmkit.objectives.base import Objective

__all__ = ["WakeSleep", "ReweightedWakeSleep", "WakeSleepTerms"]


class WakeSleepTerms(NamedTuple):
    loss: torch.Tensor
    elbo: torch.Tensor  # log p(x, h) - log q(h|x) at h ~ q: a one-sample ELBO
    log_px_z: torch.Tensor
    kl: torch.Tensor  # log q(h|x) - log p(h) at the same sample
    iwae: torch.Tensor


def _sleep_term(model, n: int) -> torch.Tensor:
    with torch.no_grad():
        h = model.prior().sample((n,))
        x = model.likelihood(h).sample()
    return model.posterior(x).log_prob(h)  # (n,)


class WakeSleep(Objective):
    def __call__(self, model, x: torch.Tensor, beta: float = 1.0) -> WakeSleepTerms:
        q = model.posterior(x)
        h = q.sample()
        log_px_h = model.likelihood(h).log_prob(x)
        log_ph = model.prior().log_prob(h)
        with torch.no_grad():
            log_q = q.log_prob(h)
        wake = log_px_h + log_ph  # gradient: generative parameters only
        loss = -wake
        if model.training:
            loss = loss - _sleep_term(model, len(x))  # gradient: recognition parameters only
        elbo = (wake - log_q).detach()
        return WakeSleepTerms(loss, elbo, log_px_h.detach(), (log_q - log_ph).detach(), elbo)


class ReweightedWakeSleep(Objective):
    def __init__(self, k: int = 5, sleep: bool = True):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.sleep = k, sleep

    def __call__(self, model, x: torch.Tensor, beta: float = 1.0) -> WakeSleepTerms:
        q = model.posterior(x)
        h = q.sample((self.k,))  # (k, B, H)
        log_px_h = model.likelihood(h).log_prob(x)
        log_ph = model.prior().log_prob(h)
        log_q = q.log_prob(h)
        log_w = log_px_h + log_ph - log_q
        w = torch.softmax(log_w.detach(), dim=0)  # self-normalized importance weights
        loss = -(w * (log_px_h + log_ph + log_q)).sum(0)  # p-wake and q-wake updates
        if model.training and self.sleep:
            loss = loss - _sleep_term(model, len(x))
        bound = (torch.logsumexp(log_w, 0) - math.log(self.k)).detach()
        return WakeSleepTerms(
            loss, log_w.mean(0).detach(), log_px_h.mean(0).detach(), (log_q - log_ph).mean(0).detach(), bound
        )
