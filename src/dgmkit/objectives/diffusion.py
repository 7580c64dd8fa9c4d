"""The variational bound of a diffusion model as a training objective (``models.diffusion``).

Each datapoint of a batch gets its own time t, the times of the batch stratified
((u + i/B) mod 1, VDM's low-discrepancy sampler), and the bound's three terms at that time.

- ``vlb``: the loss is the one-sample estimate of -ELBO (prior + reconstruction + diffusion
  terms), which also trains a learned schedule (its endpoints by the bound, its shape by the
  bound's variance).
- ``simple``: DDPM's simple loss, the mean squared error of eps_hat (Ho et al. 2020, eq. 14),
  an unweighted objective that is not a bound; the bound is still computed and monitored.
"""

from typing import NamedTuple, cast

import torch

from dgmkit.models import TimeSampledBound
from dgmkit.models.diffusion import stratified_times
from dgmkit.objectives.base import Objective

__all__ = ["DiffusionBound", "DiffusionTerms", "DIFFUSION_LOSSES"]

DIFFUSION_LOSSES = ("vlb", "simple")


class DiffusionTerms(NamedTuple):
    """``bound``: a one-time-sample estimate of the ELBO in nats; ``prior``, ``recon`` and
    ``diffusion``: its three terms as losses (nats, positive)."""

    loss: torch.Tensor
    bound: torch.Tensor
    prior: torch.Tensor
    recon: torch.Tensor
    diffusion: torch.Tensor


class DiffusionBound(Objective[TimeSampledBound]):
    score = "bound"
    score_label = "ELBO"

    def __init__(self, loss: str = "vlb"):
        if loss not in DIFFUSION_LOSSES:
            raise ValueError(f"the diffusion loss must be one of {DIFFUSION_LOSSES}, got {loss!r}")
        self.loss = loss

    def check_model(self, model: object) -> None:
        super().check_model(model)
        inner = getattr(model, "_orig_mod", model)
        if self.loss == "simple" and not cast(TimeSampledBound, inner).eps_error:
            raise _no_eps_error(inner)

    def __call__(self, model: TimeSampledBound, x: torch.Tensor, beta: float = 1.0) -> DiffusionTerms:
        t = stratified_times(len(x), device=x.device)
        train = model.training and torch.is_grad_enabled() and self.loss == "vlb"
        terms = model.bound_terms(x, t, train=train)
        neg = terms["prior"] + terms["recon"] + terms["diffusion"]
        if self.loss == "simple" and "mse" not in terms:  # (called without the Trainer's check_model)
            raise _no_eps_error(model)
        loss = terms["mse"] if self.loss == "simple" else neg
        return DiffusionTerms(loss, -neg, terms["prior"], terms["recon"], terms["diffusion"])


def _no_eps_error(model: object) -> TypeError:
    return TypeError(
        f"the simple loss is the error of a predicted noise (Gaussian diffusion), which a {type(model).__name__} does "
        "not make: train it by the bound (loss 'vlb')"
    )
