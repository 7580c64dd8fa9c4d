"""The autoencoder's objective: the reconstruction log-likelihood log p(x | z = f(x))."""

from typing import NamedTuple

import torch

from dgmkit.models import Autoencoder
from dgmkit.objectives.base import Objective

__all__ = ["Reconstruction", "ReconstructionTerms"]


class ReconstructionTerms(NamedTuple):
    """``recon``: log p(x | f(x)), a reconstruction score, not a bound on log p(x)."""

    loss: torch.Tensor
    recon: torch.Tensor


class Reconstruction(Objective[Autoencoder]):
    score = "recon"
    score_label = "log p(x|f(x))"

    def __call__(self, model: Autoencoder, x: torch.Tensor, beta: float = 1.0) -> ReconstructionTerms:
        log_px_z = model.likelihood(model.posterior(x).rsample()).log_prob(x)
        return ReconstructionTerms(-log_px_z, log_px_z)
