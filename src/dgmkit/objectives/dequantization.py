"""The variational-dequantization bound as a training objective (see
``dgmkit.models.dequantization``): the importance weights with the dequantization noise u as the
latent, reduced by log-mean-exp."""

import torch

from dgmkit.errors import whole_at_least
from dgmkit.models import VariationalModel
from dgmkit.objectives.base import BoundTerms, Objective
from dgmkit.objectives.importance import log_importance_weights, log_mean_exp

__all__ = ["DequantizationBound", "BoundTerms"]


class DequantizationBound(Objective[VariationalModel]):
    """E_q(u|k)[log p((k + u)/L) - D log L - log q(u|k)] with ``samples`` draws (importance
    weighted when > 1): a lower bound on log P(k) of the integer data in nats, per example."""

    score = "bound"
    score_label = "dequantization bound"

    def __init__(self, samples: int = 1):
        self.samples = whole_at_least("samples", samples, 1)

    def __call__(self, model: VariationalModel, x: torch.Tensor, beta: float = 1.0) -> BoundTerms:
        bound = log_mean_exp(log_importance_weights(model, x, self.samples).log_w)
        return BoundTerms(-bound, bound)
