"""Maximum likelihood for models with an exact log p(x) (flows, autoregressive models)."""

from typing import NamedTuple

import torch

from dgmkit.objectives.base import Objective

__all__ = ["MaximumLikelihood", "LikelihoodTerms"]


class LikelihoodTerms(NamedTuple):
    """``elbo`` holds the exact log p(x) (the trainer's tracked quantity; no bound here)."""

    loss: torch.Tensor
    elbo: torch.Tensor


class MaximumLikelihood(Objective):
    def __call__(self, model, x: torch.Tensor, beta: float = 1.0) -> LikelihoodTerms:
        log_px = model.log_prob(x)
        return LikelihoodTerms(-log_px, log_px)
