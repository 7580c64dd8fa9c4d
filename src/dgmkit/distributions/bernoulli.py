r"""Independent Bernoulli pixels parameterized by logits.

    log p(x | l) = sum_d [x_d l_d - softplus(l_d)]

summed term by term over the flattened event: the same value as torch's
``Bernoulli(logits).log_prob`` but without materializing the broadcast targets, which makes
importance sampling with thousands of samples per image several times faster. Every term is
<= 0 for x_d in [0, 1], so the sum does not cancel; as x . l - sum_d softplus(l_d), a difference
of two sums of size sum |l_d|, float32 lost 0.05 nats at logits of size 1e3 over 784 pixels and
0.26 at 1e4 (torch's: 1e-6).
"""

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

from dgmkit.distributions.shapes import event_split

__all__ = ["BernoulliPixels"]


class BernoulliPixels(Distribution):
    """``logits`` of shape (*batch, *event); ``log_prob`` sums over the event dimensions.

    >>> d = BernoulliPixels(torch.zeros(2, 1, 2, 2), event_dims=3)
    >>> d.log_prob(torch.ones(1, 2, 2))  # 4 fair coins: 4 log(1/2)
    tensor([-2.7726, -2.7726])
    """

    arg_constraints = {}
    support = constraints.boolean
    has_rsample = False

    def __init__(self, logits: torch.Tensor, event_dims: int):
        self.logits = logits
        split = event_split(logits.dim(), event_dims)
        super().__init__(logits.shape[:split], logits.shape[split:], validate_args=False)

    def _flat(self, t: torch.Tensor) -> torch.Tensor:
        n = len(self.event_shape)
        return t.flatten(-n) if n else t.unsqueeze(-1)

    def _finite_logits(self) -> torch.Tensor:
        """The logits with +-inf (a sure pixel, as ``entropy`` takes it) at the dtype's largest
        finite value: x l - softplus(l) was 0 * inf or inf - inf there, NaN, where a pixel that
        agrees with a sure logit has log p = 0 (and one that does not, -max: no probability)."""
        big = torch.finfo(self.logits.dtype).max
        return self.logits.clamp(-big, big)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = self._flat(self._finite_logits())
        value = self._flat(value.to(logits.dtype))
        return (value * logits - F.softplus(logits)).sum(-1)

    def log_prob_elements(self, value: torch.Tensor) -> torch.Tensor:
        """log p(x_d) of every element (not summed over the event): (*batch, *event)."""
        logits = self._finite_logits()
        return value.to(logits.dtype) * logits - F.softplus(logits)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            probs = torch.sigmoid(self.logits).expand(torch.Size(sample_shape) + self.logits.shape)
            return torch.bernoulli(probs)

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    @property
    def mode(self) -> torch.Tensor:
        return (self.logits > 0).to(self.logits.dtype)

    def entropy(self) -> torch.Tensor:
        """H = softplus(-|l|) + |l| sigmoid(-|l|) per pixel (symmetric in l; no difference of two
        large numbers), summed over the event; a logit of +-inf (a sure pixel) adds 0, with a
        gradient of 0 (softplus(l) - sigmoid(l) l was inf - inf or 0 * inf there: NaN)."""
        a = self.logits.abs().clamp(max=torch.finfo(self.logits.dtype).max)
        h = F.softplus(-a) + a * torch.sigmoid(-a)
        return self._flat(h).sum(-1)
