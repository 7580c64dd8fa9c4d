"""Diagonal Gaussian, the usual q(z|x) and p(z), and its KL per latent dimension."""

import math

import torch
from torch.distributions import Distribution, Independent, Normal, kl_divergence, register_kl

from dgmkit._rng import randn
from dgmkit.distributions.sampling import JointSampler
from dgmkit.distributions.shapes import check_event_width

__all__ = ["PreciseNormal", "normal_log_density", "DiagonalNormal", "diagonal_normal", "kl_per_dimension", "closed_form_kl"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def normal_log_density(value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(value; loc, scale^2), elementwise, from the standardized residual squared: float32 holds
    sigma^2 as a subnormal below sigma ~ 1e-19 and as 0 below ~4e-23, where (x - mu)^2 / sigma^2 was
    1 nat off (sigma = 1e-22, x - mu = 10 sigma) or NaN (1e-30)."""
    return -0.5 * ((value - loc) / scale).square() - scale.log() - _HALF_LOG_2PI


class PreciseNormal(Normal):
    """torch's ``Normal`` whose ``log_prob`` squares the standardized residual (x - mu) / sigma
    rather than dividing (x - mu)^2 by sigma^2: float32 holds sigma^2 as a subnormal below
    sigma ~ 1e-19 and as 0 below ~4e-23, which any floor min_scale > 0 allows (1 nat off at
    sigma = 1e-22 with x - mu = 10 sigma, NaN at 1e-30). Arguments are not checked.

    >>> PreciseNormal(torch.zeros(()), torch.tensor(1e-30)).log_prob(torch.tensor(1e-30)).item()
    67.65861511230469
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return normal_log_density(value, self.loc, self.scale)


class DiagonalNormal(Independent, JointSampler):
    """N(loc, diag(scale^2)) over the last dimension; ``log_prob`` sums it. The closed-form
    KL between two of these is registered in torch's KL registry (``kl_divergence``).

    ``rsample_and_log_prob`` draws z = loc + scale * eps and returns log q(z) from eps alone,
    -|eps|^2 / 2 - sum log scale - (M/2) log 2 pi: exact and cheaper than ``log_prob(z)``; it
    takes a ``generator`` so that importance sampling repeats.

    >>> q = diagonal_normal(torch.zeros(3, 2), torch.ones(3, 2))
    >>> z, log_q = q.rsample_and_log_prob((5,))
    >>> torch.allclose(log_q, q.log_prob(z))
    True
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor):
        if isinstance(loc, torch.Tensor) and isinstance(scale, torch.Tensor) and loc.shape == scale.shape:
            # Normal(loc, scale) without its broadcast (views that cost a node in every
            # backward pass): the shapes already agree, the usual case in a training step.
            base = PreciseNormal.__new__(PreciseNormal)
            base.loc, base.scale = loc, scale
            Distribution.__init__(base, loc.shape, validate_args=False)
        else:
            base = PreciseNormal(loc, scale, validate_args=False)
        super().__init__(base, 1, validate_args=False)

    # The parameters themselves: Independent's stddev would be sqrt(variance) = sqrt(scale^2),
    # two more operations (and backward nodes) in every reparameterized draw.
    @property
    def loc(self) -> torch.Tensor:
        return self.base_dist.loc

    @property
    def scale(self) -> torch.Tensor:
        return self.base_dist.scale

    mean = loc
    stddev = scale

    def expand(
        self, batch_shape: torch.Size | list[int] | tuple[int, ...], _instance: "DiagonalNormal | None" = None
    ) -> "DiagonalNormal":
        """The same Gaussians over a larger batch shape (torch's ``Independent.expand`` refuses a
        subclass with an ``__init__`` of its own: it raised NotImplementedError)."""
        shape = torch.Size(batch_shape) + self.event_shape
        return DiagonalNormal(self.loc.expand(shape), self.scale.expand(shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log N(value; loc, diag(scale^2)) for ``value`` of shape (..., M), broadcast over the batch.
        A value of another width is refused: one of width 1 was broadcast over the M dimensions and
        scored silently (a standard normal prior over 3 dimensions gave z = (0,) the density of (0, 0, 0))."""
        check_event_width(value, self.event_shape[-1], "a diagonal Gaussian", "values")
        return super().log_prob(value)

    def rsample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        """z = loc + scale * eps: the draw of ``rsample_and_log_prob``, without its log-density."""
        return self._draw(sample_shape, None)[0]

    def rsample_and_log_prob(
        self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size(), generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z, eps = self._draw(sample_shape, generator)
        scale = self.base_dist.scale
        const = -scale.log().sum(-1) - 0.5 * scale.shape[-1] * math.log(2 * math.pi)  # (*batch,)
        return z, const - 0.5 * eps.pow(2).sum(-1)

    def _draw(
        self, sample_shape: torch.Size | list[int] | tuple[int, ...], generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z and the standard normal noise eps it was made from."""
        loc, scale = self.base_dist.loc, self.base_dist.scale
        eps = randn((*sample_shape, *loc.shape), generator, device=loc.device, dtype=loc.dtype)
        return loc + scale * eps, eps


@register_kl(DiagonalNormal, DiagonalNormal)
def _kl_diagonal_normal(q: DiagonalNormal, p: DiagonalNormal) -> torch.Tensor:
    """KL(q || p) = sum_i log(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2: the same
    number as the generic Independent-of-Normal rule, in fewer operations (it is in every
    training step of a hierarchical model)."""
    ratio = q.scale / p.scale
    diff = (q.loc - p.loc) / p.scale
    return (0.5 * (ratio.square() + diff.square() - 1) - ratio.log()).sum(-1)


def diagonal_normal(loc: torch.Tensor, scale: torch.Tensor) -> DiagonalNormal:
    """N(loc, diag(scale^2)) over the last dimension."""
    return DiagonalNormal(loc, scale)


def kl_per_dimension(q: Distribution, p: Distribution) -> torch.Tensor | None:
    """KL(q || p) for each latent dimension, shape (..., M), where both factorize over
    dimensions and a closed form is registered; otherwise None (no per-dimension split exists).
    """
    if not (isinstance(q, Independent) and isinstance(p, Independent)):
        return None
    return closed_form_kl(q.base_dist, p.base_dist)


def closed_form_kl(q: Distribution, p: Distribution) -> torch.Tensor | None:
    """KL(q || p) where torch's KL registry has a closed form for the pair, else None; None too
    for a pair over events of different shapes (the draws' path names the part that is off)."""
    if q.event_shape != p.event_shape:
        return None
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None
