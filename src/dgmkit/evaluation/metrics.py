"""Unit conversions and latent-space diagnostics, each in one place."""

import math

import torch

from dgmkit._modes import evaluates
from dgmkit.distributions import kl_per_dimension, location
from dgmkit.errors import finite_at_least, whole_at_least
from dgmkit.models import Autoencoder, CapabilityError, GenerativeModel, LatentVariableModel

__all__ = [
    "bits_per_dim",
    "discrete_nll",
    "standard_error",
    "observed_entries",
    "active_units",
    "posterior_statistics",
    "unit_variance",
]


def discrete_nll(nll_nats: float, num_dims: float, log_volume: float) -> float:
    """The NLL of the integer data in nats from the NLL of transformed continuous data.

    For uniform dequantization y = (k + u) / L, log P(k) >= E_u[log p(y)] - D log L, so
    ``log_volume`` = log L per dimension is added; it is 0 for discrete likelihoods."""
    return nll_nats + num_dims * log_volume


def observed_entries(x: torch.Tensor) -> torch.Tensor:
    """(N,) float64 on the CPU: the entries of each datapoint of ``x`` (N, ...) that are observed,
    all of them but those that are NaN (missing: the numbers are then of log p(x_o))."""
    flat = x.reshape(len(x), -1)
    seen = (~torch.isnan(flat)).sum(1) if flat.is_floating_point() else torch.full((len(x),), flat.shape[1])
    return seen.double().cpu()


def standard_error(values: torch.Tensor) -> float:
    """The standard error of the mean of ``values`` (N,), one number a datapoint: their sample
    standard deviation (N - 1 in its denominator) over sqrt(N), in float64."""
    if values.dim() != 1 or len(values) < 2:
        raise ValueError(f"a standard error needs at least two values in a vector, got shape {tuple(values.shape)}")
    return float(values.double().std() / math.sqrt(len(values)))


def bits_per_dim(nll_nats: float, num_dims: float) -> float:
    """nats per datapoint -> bits per dimension (of ``num_dims`` > 0 observed dimensions)."""
    if not 0 < num_dims < math.inf:  # (inf gave 0 bits/dim)
        raise ValueError(f"bits/dim need at least one observed dimension (a finite number), got {num_dims}")
    if not math.isfinite(nll_nats):  # (NaN was passed on as NaN bits/dim)
        raise ValueError(f"bits/dim of a NaN or infinite NLL: {nll_nats}")
    return nll_nats / (num_dims * math.log(2))


@evaluates
@torch.no_grad()
def posterior_statistics(
    model: LatentVariableModel | Autoencoder, x: torch.Tensor, batch_size: int = 1000, threshold: float = 0.01
) -> dict:
    """KL(q(z|x) || p(z)) per latent dimension averaged over x, and active units.

    A unit u is active when Cov_x(E_q[z_u | x]) > ``threshold`` (0.01, Burda et al. 2016): a collapsed
    dimension's posterior mean does not depend on x."""
    if isinstance(model, GenerativeModel) and not model.has_latents:  # (a flow: an AttributeError deep inside)
        raise CapabilityError(
            f"posterior_statistics() needs a model with a latent space q(z|x) (one vector per input); the model is a "
            f"{type(model).__name__}"
        )
    batch_size = whole_at_least("batch_size", batch_size, 1)
    finite_at_least("threshold (a variance)", threshold, 0)
    means, kls = [], []
    p = model.prior() if isinstance(model, LatentVariableModel) else None  # a plain autoencoder has no prior
    for i in range(0, len(x), batch_size):
        q = model.posterior(x[i : i + batch_size])
        means.append(location(q))
        kl = kl_per_dimension(q, p) if p is not None else None
        if kl is not None:
            kls.append(kl)
    variance = unit_variance(torch.cat(means))
    return {
        "active_units": int((variance > threshold).sum()),
        "latent_dim": int(variance.shape[0]),
        "posterior_mean_variance": variance.tolist(),
        "kl_per_dim": torch.cat(kls).mean(0).tolist() if kls else None,
    }


def unit_variance(loc: torch.Tensor) -> torch.Tensor:
    """Var_x of each latent unit's posterior location, unbiased, in float64: ``loc`` is (N, M), or
    (N, V, K) for V one-hot categorical variables, where a variable's is its most varying class's
    (it is active if any class probability moves)."""
    if len(loc) > 1:
        v = loc.double().var(0, unbiased=True)
    else:
        v = torch.zeros(loc.shape[1:], dtype=torch.float64, device=loc.device)
    return v.flatten(1).amax(1) if v.dim() > 1 else v


def active_units(model: LatentVariableModel | Autoencoder, x: torch.Tensor, threshold: float = 0.01) -> int:
    return posterior_statistics(model, x, threshold=threshold)["active_units"]
