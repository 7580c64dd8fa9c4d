"""The variational-dequantization bound as a training objective (see
``dgmkit.models.dequantization``)."""

from dgmkit.objectives.base import Objective
from dgmkit.objectives.likelihood import LikelihoodTerms

__all__ = ["DequantizationBound"]


class DequantizationBound(Objective):
    """E_q(u|k)[log p((k + u)/L) - D log L - log q(u|k)] with ``samples`` draws (importance
    weighted when > 1): a lower bound on log P(k) in nats, per example."""

    def __init__(self, samples: int = 1):
        self.samples = samples

    def __call__(self, model, x, beta: float = 1.0) -> LikelihoodTerms:
        bound = model.log_prob_bound(x, self.samples)
        return LikelihoodTerms(-bound, bound)
