"""Running moments of a batch statistic: NVIL's centring and variance normalisation of the
score-function estimator's learning signal (Mnih & Gregor 2014, arXiv 1402.0030, section 3.3)."""

import torch
from torch import nn

from dgmkit import distributed
from dgmkit.errors import finite_at_least

__all__ = ["RunningMoments"]


class RunningMoments(nn.Module):
    """Exponential moving averages c of a signal's mean and v of its variance over batches:
    c <- a c + (1 - a) mean, v <- a v + (1 - a) var, a = ``decay`` (NVIL's alpha, 0.8). They start
    at c = 0, v = 1, are buffers (saved, resumed and moved with the model) and are updated only by
    ``update``, on a batch's values; under data parallelism on the whole batch (every rank's part,
    all-reduced), so that the moments are one process's."""

    mean: torch.Tensor
    var: torch.Tensor

    def __init__(self, decay: float = 0.8):
        super().__init__()
        self.decay = float(finite_at_least("the running moments' decay", decay, 0.0))
        if not self.decay < 1:
            raise ValueError(f"the running moments' decay must be in [0, 1), got {decay!r}")
        # (of shape (1,): torch.compile's CPU code lost every in-place update of a 0-d float64 input, so that a
        # compiled step kept c at 0 and shrank v by 0.8 a step, whatever the signal)
        self.register_buffer("mean", torch.zeros(1, dtype=torch.float64))
        self.register_buffer("var", torch.ones(1, dtype=torch.float64))

    def scale(self) -> torch.Tensor:
        """max(1, sqrt(v)): NVIL divides the centred signal by it (it shrinks large signals only)."""
        return self.var.sqrt().clamp(min=1.0)

    @torch.no_grad()
    def update(self, values: torch.Tensor) -> None:
        """Fold one batch of ``values`` (B,) into the averages: its mean and (population) variance;
        none of a batch holding a non-finite value."""
        v = values.detach().to(self.mean.dtype).flatten()
        # (the count by new_full, a fill on the device: new_tensor copied a host number there, which on a GPU waits
        # for it in every step and kept --graph-step from capturing the step)
        sums = distributed.all_reduce_sum(torch.stack([v.new_full((), float(len(v))), v.sum(), v.square().sum()]))
        count = sums[0].clamp(min=1.0)
        mean = sums[1] / count
        var = (sums[2] / count - mean.square()).clamp(min=0.0)
        a = self.decay
        # a batch with a non-finite value (one the step guard skips) leaves them as they were: NaN moments would
        # make every later signal NaN (decided on the device, where the values are: no wait for the host)
        finite = torch.isfinite(sums).all()
        self.mean.copy_(torch.where(finite, a * self.mean + (1 - a) * mean, self.mean))
        self.var.copy_(torch.where(finite, a * self.var + (1 - a) * var, self.var))
