r"""Deep latent variable models on incomplete data: the MIWAE bound and imputation by importance
sampling (Mattei & Frellsen 2019).

Missing entries are NaN in x; the mask m marks the observed ones. The encoder sees the data
with missing entries set to 0 (zero imputation), and the likelihood is evaluated on the
observed entries only, which a decoder factorized over pixels allows:

    log p(x_o) >= E log (1/K) sum_k p(x_o | z_k) p(z_k) / q(z_k | x_o),   z_k ~ q(z | x_o),

the importance-weighted bound of the observed part (MIWAE), tight as K grows. Imputation by
self-normalized importance sampling with the same draws: w_k proportional to
p(x_o | z_k) p(z_k) / q(z_k | x_o), the single imputation E[x_m | x_o] ~ sum_k w_k E[x_m | z_k],
and multiple imputations by drawing k with probabilities w (sampling importance resampling) and
then x_m ~ p(x_m | z_k).
"""

import math
from typing import TYPE_CHECKING, NamedTuple

import torch

from dgmkit._rng import seeded_by
from dgmkit.distributions import element_log_probs
from dgmkit.distributions.sampling import rsample_and_log_prob
from dgmkit.objectives.base import Objective

if TYPE_CHECKING:
    from dgmkit.models import LatentVariableModel

__all__ = ["MIWAE", "MIWAETerms", "observed_mask", "miwae_log_weights", "impute"]


def observed_mask(x: torch.Tensor) -> torch.Tensor:
    """True where x is observed (not NaN)."""
    return ~torch.isnan(x) if x.is_floating_point() else torch.ones_like(x, dtype=torch.bool)


def miwae_log_weights(
    model: "LatentVariableModel", x: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.distributions.Distribution]:
    """k draws z ~ q(z | x_o): their log weights log p(x_o|z) + log p(z) - log q(z|x_o) (k, B),
    the draws, and p(x | z) at them (batch shape (k, B))."""
    mask = observed_mask(x)
    filled = torch.where(mask, x, torch.zeros_like(x))
    q = model.posterior(filled)
    z, log_q = rsample_and_log_prob(q, (k,), generator, device=x.device)
    px = model.likelihood(z)
    per = element_log_probs(px, filled)  # (k, B, *event)
    dims = tuple(range(2, per.dim()))
    log_px_o = torch.where(mask, per, torch.zeros_like(per)).sum(dims)
    return log_px_o + model.prior().log_prob(z) - log_q, z, px


class MIWAETerms(NamedTuple):
    loss: torch.Tensor
    bound: torch.Tensor


class MIWAE(Objective):
    """The MIWAE bound with ``k`` draws per datapoint (NaN entries of x are missing)."""

    score = "bound"
    score_label = "MIWAE bound"

    def __init__(self, k: int = 5):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k

    def __call__(self, model: "LatentVariableModel", x: torch.Tensor, beta: float = 1.0) -> MIWAETerms:
        log_w, _, _ = miwae_log_weights(model, x, self.k)
        bound = torch.logsumexp(log_w, 0) - math.log(self.k)
        return MIWAETerms(-bound, bound)


@torch.no_grad()
def impute(
    model: "LatentVariableModel",
    x: torch.Tensor,
    k: int = 10000,
    draws: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Single imputation (x with its missing entries replaced by sum_k w_k E[x_m | z_k]) and,
    with ``draws`` > 0, that many multiple imputations (draws, *x.shape) by sampling importance
    resampling. Observed entries are kept as they are."""
    if k < 1 or draws < 0:
        raise ValueError(f"need k >= 1 and draws >= 0, got {k} and {draws}")
    mask = observed_mask(x)
    log_w, z, px = miwae_log_weights(model, x, k, generator)
    w = torch.softmax(log_w, 0)  # (k, B)
    mean = (w.reshape(*w.shape, *[1] * (x.dim() - 1)) * px.mean).sum(0)
    single = torch.where(mask, x, mean.to(x.dtype))
    multiple = None
    if draws:
        pick = torch.multinomial(w.T, draws, replacement=True, generator=generator)  # (B, draws)
        zs = z[pick.T, torch.arange(x.shape[0])]  # (draws, B, M)
        with seeded_by(generator, x.device):
            sample = model.likelihood(zs).sample()
        multiple = torch.where(mask, x, sample.to(x.dtype))
    return single, multiple
