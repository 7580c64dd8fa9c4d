"""Likelihood heads: turn a decoder network's raw output into p(x|z) over a pixel event.

A head says how many numbers it needs per pixel (``params_per_pixel``) and builds the
distribution from a tensor of shape (*batch, C, P, H, W), P = params per pixel.
"""

import numbers
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, constraints

from dgmkit.devices import widened
from dgmkit.distributions import (
    BernoulliPixels,
    CategoricalPixels,
    DiscretizedLogisticMixture,
    bernoulli_pixels,
    gaussian_pixels,
)
from dgmkit.distributions.student_t import student_t
from dgmkit.distributions.table import MixedColumns, TableColumns
from dgmkit.errors import finite_at_least, whole_at_least
from dgmkit.nn.scale import inverse_softplus

__all__ = [
    "LikelihoodHead", "BernoulliHead", "GaussianHead", "StudentTHead", "CategoricalHead", "LogisticMixtureHead",
    "MixedTableHead",
]  # fmt: skip


class LikelihoodHead(nn.Module, ABC):
    """Maps raw decoder output (*batch, C, P, H, W) to a distribution with event shape (C, H, W).

    ``discrete`` says whether ``log_prob`` is a probability of integer data (True) or a
    density of dequantized data scaled to [0, 1] (False); evaluation converts to bits/dim
    accordingly. ``num_levels`` is the number of values a pixel takes (None for a density):
    the alphabet of sequential sampling and entropy coding.
    """

    params_per_pixel: int = 1
    discrete: bool = True
    num_levels: int | None = None  # how many values a pixel takes (None for a density)

    @abstractmethod
    def forward(self, params: torch.Tensor) -> Distribution: ...

    @property
    def support(self) -> constraints.Constraint:
        """The values an entry of x may take: the integers 0..L-1 for a discrete head of L
        levels, else the real line."""
        return constraints.real if self.num_levels is None else constraints.integer_interval(0, self.num_levels - 1)

    def pixel_log_pmf(self, params: torch.Tensor) -> torch.Tensor:
        """log p(x_d = v) of every value v for each pixel, (*batch, L) in float64, from one
        pixel's parameters (*batch, P): what sequential sampling and entropy coding need."""
        raise TypeError(f"a {type(self).__name__} defines a density, not the probabilities of discrete values")


class BernoulliHead(LikelihoodHead):
    """p(x|z) = prod Bernoulli(x_d; sigmoid(l_d)) for binary data."""

    params_per_pixel = 1
    discrete = True
    num_levels = 2

    def forward(self, params: torch.Tensor) -> BernoulliPixels:  # (*batch, C, 1, H, W)
        return bernoulli_pixels(widened(params.squeeze(-3)), event_dims=3)

    def pixel_log_pmf(self, params: torch.Tensor) -> torch.Tensor:
        logit = params[..., 0].double()
        return torch.stack([F.logsigmoid(-logit), F.logsigmoid(logit)], -1)


class GaussianHead(LikelihoodHead):
    """p(x|z) = prod N(x_d; mu_d, sigma_d^2) for data dequantized to [0, 1].

    ``variance``: ``"fixed"`` (sigma = ``scale``), ``"learned"`` (one global learned sigma)
    or ``"predicted"`` (per pixel, from the decoder). Learned and predicted scales are
    softplus(raw) + ``min_scale``: without a floor the likelihood is unbounded, since a decoder
    can put an arbitrarily narrow Gaussian on one training pixel. A learned sigma starts at
    ``scale``, or just above the floor where ``scale`` is not above it (a ``min_scale`` raised
    alone moves the start with it).
    """

    scale: torch.Tensor

    discrete = False

    def __init__(self, variance: str = "learned", scale: float = 0.1, min_scale: float = 1e-2):
        super().__init__()
        if variance not in ("fixed", "learned", "predicted"):
            raise ValueError(f"variance must be fixed, learned or predicted, got {variance!r}")
        finite_at_least("the Gaussian head's scale", scale, 0, strict=True)
        finite_at_least("the Gaussian head's min_scale", min_scale, 0, strict=True)
        self.variance = variance
        self.min_scale = min_scale
        self.params_per_pixel = 2 if variance == "predicted" else 1
        if variance == "fixed":
            self.register_buffer("scale", torch.tensor(float(scale)))
        elif variance == "learned":
            # inverse softplus so that the initial scale equals ``scale``
            raw = inverse_softplus(max(scale - min_scale, 1e-6))
            self.raw_scale = nn.Parameter(torch.tensor(raw))

    def forward(self, params: torch.Tensor) -> Independent:
        params = widened(params)
        loc = params.select(-3, 0)
        if self.variance == "fixed":
            scale = self.scale.expand_as(loc)
        elif self.variance == "learned":
            scale = (F.softplus(self.raw_scale) + self.min_scale).expand_as(loc)
        else:
            scale = F.softplus(params.select(-3, 1)) + self.min_scale
        return gaussian_pixels(loc, scale, event_dims=3)


class StudentTHead(LikelihoodHead):
    """p(x|z) = prod StudentT(x_d; nu_d, mu_d, sigma_d) for continuous data, every parameter
    predicted per datapoint: sigma = softplus(raw) + ``min_scale``, nu = softplus(raw) +
    ``min_df``. The observation model of MIWAE (Mattei & Frellsen 2019) for tables: its heavy
    tails keep one badly fitted entry from dominating the bound, where a Gaussian with a
    predicted variance overfits. With nu > 2 the mean (mu) and variance exist; ``mean`` is mu,
    the single imputation."""

    discrete = False
    params_per_pixel = 3

    def __init__(self, min_scale: float = 1e-3, min_df: float = 3.0):
        super().__init__()
        finite_at_least("the Student-t head's min_scale", min_scale, 0, strict=True)
        finite_at_least("the Student-t head's min_df (above 1: a mean exists)", min_df, 1, strict=True)
        self.min_scale = min_scale
        self.min_df = min_df

    def forward(self, params: torch.Tensor) -> Independent:
        params = widened(params)
        loc = params.select(-3, 0)
        scale = F.softplus(params.select(-3, 1)) + self.min_scale
        df = F.softplus(params.select(-3, 2)) + self.min_df
        return Independent(student_t(df, loc, scale), 3, validate_args=False)


class CategoricalHead(LikelihoodHead):
    """p(x|z) = prod Categorical(x_d; softmax(l_d)) over the integers 0..L-1."""

    discrete = True

    def __init__(self, num_levels: int = 256):
        super().__init__()
        self.num_levels = whole_at_least("the categorical head's num_levels", num_levels, 2)
        self.params_per_pixel = num_levels

    def forward(self, params: torch.Tensor) -> CategoricalPixels:  # (*batch, C, L, H, W)
        return CategoricalPixels(widened(params).movedim(-3, -1), event_dims=3)

    def pixel_log_pmf(self, params: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(params.double(), -1)


class LogisticMixtureHead(LikelihoodHead):
    """p(x|z) = prod of K-component discretized logistic mixtures over 0..L-1."""

    discrete = True

    num_levels: int

    def __init__(self, num_levels: int = 256, components: int = 5):
        super().__init__()
        self.num_levels = whole_at_least("the logistic head's num_levels", num_levels, 2)
        self.components = whole_at_least("the logistic head's components", components, 1)
        self.params_per_pixel = 3 * components

    def forward(self, params: torch.Tensor) -> DiscretizedLogisticMixture:  # (*batch, C, 3K, H, W)
        p = widened(params).movedim(-3, -1)  # (*batch, C, H, W, 3K)
        logits, loc, log_scale = p.split(self.components, dim=-1)
        return DiscretizedLogisticMixture(logits, torch.tanh(loc), log_scale, self.num_levels, event_dims=3)

    def pixel_log_pmf(self, params: torch.Tensor) -> torch.Tensor:
        flat = params.double().reshape(-1, params.shape[-1])  # (N, 3K) = logits, locations, log-scales
        logits, loc, log_scale = (t[:, None] for t in flat.split(self.components, -1))
        dist = DiscretizedLogisticMixture(logits, torch.tanh(loc), log_scale, self.num_levels, event_dims=0)
        levels = torch.arange(self.num_levels, device=params.device, dtype=torch.float64).view(-1, 1, 1)
        return dist.log_prob(levels)[..., 0].T.reshape(*params.shape[:-1], self.num_levels)


class MixedTableHead(LikelihoodHead):
    """p(x|z) over a table's row (event (1, 1, D)): per column, a Gaussian (mean and
    softplus(raw) + ``min_scale`` scale, as ``GaussianHead``'s predicted variance) where
    ``levels[d]`` is 0, else a categorical over levels[d] values (``distributions.MixedColumns``)."""

    levels: torch.Tensor

    discrete = False

    def __init__(self, levels: list[int], min_scale: float = 1e-2):
        super().__init__()
        # a column of one category is a constant: probability 1; a count of 2.5 was read as 2 by the buffer but
        # as 2.5 parameters a pixel ("empty(): argument 'size' ... must be tuple of ints"), NaN in torch's words
        whole = all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in levels)
        if not levels or not whole or min(levels) < 0:
            raise ValueError(f"levels: one per column, 0 (numeric) or >= 1 (categorical), got {levels}")
        levels = [int(n) for n in levels]
        finite_at_least("the mixed head's min_scale", min_scale, 0, strict=True)
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.long), persistent=False)
        self.min_scale = min_scale
        self.params_per_pixel = max(2, *levels)

    @property
    def support(self) -> constraints.Constraint:
        """Real numbers in the numeric columns, each categorical column's indices in its own."""
        return TableColumns(self.levels)

    def forward(self, params: torch.Tensor) -> MixedColumns:  # (*batch, 1, P, 1, D)
        params = widened(params)
        loc = params.select(-3, 0)
        scale = F.softplus(params.select(-3, 1)) + self.min_scale
        logits = params.movedim(-3, -1)  # (*batch, 1, 1, D, P)
        return MixedColumns(loc, scale, logits, self.levels)
