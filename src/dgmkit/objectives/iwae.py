r"""The importance-weighted bound as a training objective (Burda et al. 2016, arXiv 1509.00519).

    L_k(x) = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x)

L_1 is the ELBO, L_k increases with k and tends to log p(x).
"""

from typing import NamedTuple

import torch

from dgmkit.errors import whole_at_least
from dgmkit.models import VariationalModel
from dgmkit.objectives.base import Objective, unit_weight
from dgmkit.objectives.importance import log_importance_weights, log_mean_exp

__all__ = ["IWAE", "IWAETerms"]


class IWAETerms(NamedTuple):
    """Per-example tensors (B,): ``iwae`` is the k-sample bound (what training monitors);
    ``elbo``, ``log_px_z`` and ``kl`` are the one-sample quantities averaged over the same k
    samples."""

    loss: torch.Tensor
    iwae: torch.Tensor
    elbo: torch.Tensor
    log_px_z: torch.Tensor
    kl: torch.Tensor


class IWAE(Objective[VariationalModel]):
    """The importance-weighted bound with k samples per datapoint.

    Its gradient weights each sample by its normalized importance weight. With beta < 1 (KL
    warm-up) the weights use p(x|z) (p(z)/q(z|x))^beta; ``iwae`` always reports beta = 1.
    """

    score = "iwae"
    score_label = "IWAE bound"

    def __init__(self, k: int = 5):
        self.k = whole_at_least("k", k, 1)

    @property
    def label(self) -> str:
        return f"IWAE-{self.k} bound"

    def __call__(self, model: VariationalModel, x: torch.Tensor, beta: float = 1.0) -> IWAETerms:
        w = log_importance_weights(model, x, self.k)  # (k, B)
        log_ratio = w.log_pz - w.log_qz
        bound = log_mean_exp(w.log_w)
        train = bound if unit_weight(beta) else log_mean_exp(w.log_px_z + beta * log_ratio)
        return IWAETerms(-train, bound, w.log_w.mean(0), w.log_px_z.mean(0), -log_ratio.mean(0))
