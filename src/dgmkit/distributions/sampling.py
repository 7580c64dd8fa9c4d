"""One way to draw from any posterior together with its log-density; a discrete value from a
uniform by inverting its CDF."""

from abc import ABC, abstractmethod

import torch
from torch.distributions import Distribution

from dgmkit._rng import checked_generator, seeded_by

__all__ = ["JointSampler", "rsample_and_log_prob", "inverse_cdf"]


class JointSampler(ABC):
    """A distribution that returns a draw and its log-density in one pass (a diagonal Gaussian
    from its noise; a flow from the pass that made the draw, as zuko's flows do), with an
    optional generator."""

    @abstractmethod
    def rsample_and_log_prob(
        self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size(), generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def rsample_and_log_prob(
    q: Distribution,
    sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size(),
    generator: torch.Generator | None = None,
    reparameterized: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """z ~ q of shape (*sample_shape, *batch, *event) and log q(z) of shape (*sample_shape, *batch).

    Reparameterized where q allows it and ``reparameterized`` is set; otherwise z carries no
    gradient (discrete q). ``generator`` makes the draw repeatable; ``device`` is where q's
    draws are made, for distributions that draw from the global generator.
    """
    checked_generator(generator)
    if reparameterized and q.has_rsample and isinstance(q, JointSampler):
        return q.rsample_and_log_prob(sample_shape, generator=generator)
    with seeded_by(generator, device):
        z = q.rsample(sample_shape) if reparameterized and q.has_rsample else q.sample(sample_shape)
    return z, q.log_prob(z)


def inverse_cdf(log_pmf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The value v with CDF(v - 1) <= u < CDF(v), for a pmf (B, L) and uniforms u (B,)."""
    cdf = log_pmf.exp().cumsum(-1)  # (<=: at u = 0 a first value of no mass was chosen with <, CDF(v) = u)
    return (cdf <= u[:, None] * cdf[:, -1:]).sum(-1).clamp_max(log_pmf.shape[-1] - 1)
