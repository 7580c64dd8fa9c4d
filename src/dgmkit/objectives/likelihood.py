"""Maximum likelihood for models with an exact log p(x) (flows, autoregressive models)."""

from typing import NamedTuple

import torch

from dgmkit.models import ExactLikelihoodModel
from dgmkit.objectives.base import Objective

__all__ = ["MaximumLikelihood", "LikelihoodTerms"]


class LikelihoodTerms(NamedTuple):
    """``log_px``: the exact log-likelihood, no bound."""

    loss: torch.Tensor
    log_px: torch.Tensor


class MaximumLikelihood(Objective[ExactLikelihoodModel]):
    score = "log_px"
    score_label = "log p(x)"

    def __call__(self, model: ExactLikelihoodModel, x: torch.Tensor, beta: float = 1.0) -> LikelihoodTerms:
        log_px = model.log_prob(x)
        return LikelihoodTerms(-log_px, log_px)
