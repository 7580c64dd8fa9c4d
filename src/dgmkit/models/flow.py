r"""A normalizing flow as a model of data: x -> z = T(x), z ~ N(0, I) (exact log-likelihood).

    log p(x) = log N(T(x); 0, I) + log|det dT/dx|

For 8-bit images the data are dequantized, y = (k + u) / 256, and T usually starts with the
logit pre-processing, whose log|det J| is part of log p(y); the evaluation then adds D log 256
to bound the NLL of the integers (``evaluation.discrete_nll``), so bits/dim are those of the
original 8-bit images.
"""

import math

import torch
from torch.distributions import constraints

from dgmkit._rng import seeded_by
from dgmkit.distributions.flow import FlowDistribution, standard_normal
from dgmkit.distributions.normal import DiagonalNormal
from dgmkit.models.base import ExactLikelihoodModel, data_batch
from dgmkit.transforms import Bijection

__all__ = ["FlowModel"]


class FlowModel(ExactLikelihoodModel):
    """``bijection`` maps data of ``event_shape`` to (B, D) base variables. With
    ``flatten=True`` the data are flattened to (B, D) first (vector flows on images or points);
    ``event_shape`` is still the data's (dgmkit's 2-D points are (1, 1, 2), as images of one pixel).

    >>> from dgmkit.transforms import realnvp
    >>> flow = FlowModel(realnvp(2, [16]), (2,), flatten=True)
    >>> flow.log_prob(torch.zeros(3, 2)).shape
    torch.Size([3])
    """

    _zero: torch.Tensor

    sample_temperature = True

    def __init__(self, bijection: Bijection, event_shape: tuple[int, ...], flatten: bool = False):
        super().__init__()
        self.bijection = bijection
        self.event_shape = tuple(event_shape)
        self.flatten = flatten
        self.num_dims = math.prod(self.event_shape)
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    @property
    def data_support(self) -> constraints.Constraint | None:
        """Where its first transform is defined (a Logit's [0, 1]: integers not dequantized are
        refused by name, not scored as NaN); None: the real line."""
        return self.bijection.domain

    def base(self) -> DiagonalNormal:
        return standard_normal(self.num_dims, device=self._zero.device, dtype=self._zero.dtype)

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        hint = " (flatten=True flattens data of the event shape, not data of another)" if self.flatten else ""
        x = data_batch(x, self.event_shape, "the flow", hint=hint)
        x = x.to(self._zero.dtype)  # (the model's precision: float64 once made so; integers as their values)
        return x.flatten(1) if self.flatten else x

    def transform(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = T(x), shape (B, D), and log|det dT/dx|, shape (B,)."""
        z, ladj = self.bijection(self._in(x))
        if ladj.shape != x.shape[:1]:  # (a (B, 1) one broadcast into a (B, B) "log p(x)")
            raise ValueError(
                f"the flow's {type(self.bijection).__name__} gave log|det J| of shape {tuple(ladj.shape)} for {len(x)} "
                f"datapoints; a bijection's forward returns (z, ladj) with one ladj a datapoint, shape ({len(x)},) "
                "(transforms.sum_except_batch sums a per-entry one)"
            )
        if z.shape != (len(x), self.num_dims):  # (an image's (B, C, H, W): log N(z; 0, I) summed over W alone)
            raise ValueError(
                f"the flow's {type(self.bijection).__name__} gave z of shape {tuple(z.shape)} for {len(x)} datapoints; "
                f"the base N(0, I) is over vectors, ({len(x)}, {self.num_dims}): end an image flow in a step that "
                "flattens (transforms.MultiScale([flow], event_shape), of one level, does), or give flatten=True to "
                "flatten the data before a vector flow"
            )
        return z, ladj

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z, ladj = self.transform(x)
        # log N(z; 0, I), written out: the same number as self.base().log_prob(z), fewer operations
        return ladj - 0.5 * z.pow(2).sum(-1) - 0.5 * self.num_dims * math.log(2 * math.pi)

    def distribution(self, temperature: float = 1.0) -> FlowDistribution:
        """p(x) over flattened data as a torch Distribution (for vector flows)."""
        return FlowDistribution(self.base(), self.bijection, temperature=temperature)

    sample_kind = "float"

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples x = f^{-1}(z), z ~ N(0, tau^2 I), f the flow (temperature tau < 1 trades
        diversity for samples of higher density, nearer the mode). Returns (x, x): a flow has no
        separate mean to display."""
        with seeded_by(generator, self._zero.device):
            z = torch.randn(n, self.num_dims, device=self._zero.device, dtype=self._zero.dtype) * temperature
        x, _ = self.bijection.inverse(z)
        x = x.reshape(n, *self.event_shape)
        return x, x
