"""Discretized logistic mixture per pixel (Salimans et al. 2017, arXiv 1701.05517).

Integer pixel values k in 0..L-1 are placed at the centres x_k = 2k/(L-1) - 1 of L bins of
width 2/(L-1) on [-1, 1]. The probability of k is the mass of a mixture of logistics on its
bin, with the two outermost bins extended to -inf and +inf so that the L masses sum to one.
"""

import math

import torch
import torch.nn.functional as F

from dgmkit.distributions.levels import LevelPixels

__all__ = ["DiscretizedLogisticMixture"]

_MIN_LOG_SCALE = -7.0


def _log_sigmoid_difference(a: torch.Tensor, b: torch.Tensor, log_gap: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(a) - sigmoid(b)) for a > b whose gap a - b is e^``log_gap``, exactly and without
    cancellation: sigmoid(a) - sigmoid(b) = e^a (1 - e^(b-a)) / ((1 + e^a)(1 + e^b)). The gap is
    given, not taken as a - b: a and b far from 0 round to the same float32 (at 256 levels, a bin
    1e5 from the location), and a gap below 1e-45 is 0 (log-scale above ~100); both made
    log 0 = -inf. log(1 - e^-g) is log g - g/2 below g = 1e-4 (error < g^2/24)."""
    gap = log_gap.exp()
    exact = torch.log(-torch.expm1(-gap.clamp(min=1e-4)))  # (clamped: no -inf, nor its NaN gradient, where unused)
    return F.logsigmoid(a) - F.softplus(b) + torch.where(gap < 1e-4, log_gap - gap / 2, exact)


class DiscretizedLogisticMixture(LevelPixels):
    """Independent pixels, each a K-component discretized logistic mixture over 0..L-1.

    Parameters have shape (*batch, *event, K): ``logit_weights`` (mixture logits), ``loc``
    (centres in [-1, 1] units) and ``log_scale`` (clamped below at -7 for stability).

    >>> K = 5; p = torch.zeros(2, 1, 3, 3, K)
    >>> d = DiscretizedLogisticMixture(p, p, p, num_levels=256, event_dims=3)
    >>> d.log_prob(torch.zeros(2, 1, 3, 3, dtype=torch.long)).shape
    torch.Size([2])
    """

    def __init__(
        self,
        logit_weights: torch.Tensor,
        loc: torch.Tensor,
        log_scale: torch.Tensor,
        num_levels: int,
        event_dims: int,
    ):
        if num_levels < 2:
            raise ValueError(f"num_levels must be >= 2, got {num_levels}")
        self.logit_weights = logit_weights
        self.loc = loc
        self.log_scale = log_scale.clamp(min=_MIN_LOG_SCALE)
        super().__init__(loc, num_levels, event_dims)

    def _to_unit(self, k: torch.Tensor) -> torch.Tensor:
        return 2.0 * k / (self.num_levels - 1) - 1.0

    def log_prob_elements(self, value: torch.Tensor) -> torch.Tensor:
        """log P(x_d) of every element (not summed over the event): (*batch, *event)."""
        level, outside = self.in_support(value)
        k = level.unsqueeze(-1).to(self.loc.dtype)  # (..., 1)
        n = self.num_levels - 1
        half_bin = 1.0 / n
        inv_s = torch.exp(-self.log_scale)
        # the edges (2k +- 1)/n - 1 as (2k +- 1 - n)/n, integers over n: 2k/n - 1 rounded in float32 lost 6e-8
        # near 0, a logit error of 6e-8 / s (3e-5 nats at the floor s = e^-7)
        twice = 2.0 * k - n
        upper = ((twice + 1) / n - self.loc) * inv_s  # logit of cdf at the bin's upper edge
        lower = ((twice - 1) / n - self.loc) * inv_s
        # Interior bins: log(cdf(upper) - cdf(lower)); the first bin: log cdf(upper);
        # the last bin: log(1 - cdf(lower)). The interior's value is finite at the ends too: no NaN leaks.
        first = k <= 0
        last = k >= self.num_levels - 1
        interior = _log_sigmoid_difference(upper, lower, math.log(2 * half_bin) - self.log_scale)
        log_mass = torch.where(first, F.logsigmoid(upper), torch.where(last, -F.softplus(lower), interior))
        return self.outside_support(
            torch.logsumexp(F.log_softmax(self.logit_weights, dim=-1) + log_mass, dim=-1), value, outside
        )

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.loc.shape
        with torch.no_grad():
            g = -torch.log(-torch.log(torch.rand(shape, device=self.loc.device).clamp(1e-12, 1 - 1e-7)))
            comp = (self.logit_weights.expand(shape) + g).argmax(-1, keepdim=True)
            loc = self.loc.expand(shape).gather(-1, comp).squeeze(-1)
            log_s = self.log_scale.expand(shape).gather(-1, comp).squeeze(-1)
            u = torch.rand(loc.shape, device=loc.device).clamp(1e-5, 1 - 1e-5)
            x = loc + torch.exp(log_s) * (torch.log(u) - torch.log1p(-u))
            k = torch.round((x.clamp(-1, 1) + 1) / 2 * (self.num_levels - 1))
        return k.long()

    @property
    def mean(self) -> torch.Tensor:
        """E[k], exactly, in integer units: E[k] = sum_{j=1}^{L-1} P(k >= j), and P(k >= j) is the
        mixture's mass above the lower edge of bin j (the mean of the continuous centres differs
        from it wherever the mass is cut at the ends). The levels are taken in blocks, so memory
        stays at 64 times the parameters'."""
        w = F.softmax(self.logit_weights, dim=-1)
        edges = self._to_unit(torch.arange(1, self.num_levels, device=self.loc.device, dtype=self.loc.dtype))
        edges = edges - 1.0 / (self.num_levels - 1)
        loc, inv_s = self.loc.unsqueeze(-1), torch.exp(-self.log_scale).unsqueeze(-1)
        above = torch.zeros_like(self.loc)
        for block in edges.split(64):
            above = above + torch.sigmoid((loc - block) * inv_s).sum(-1)
        return (w * above).sum(-1)
