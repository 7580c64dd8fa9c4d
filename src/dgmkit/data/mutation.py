r"""Input mutation for the background model of a likelihood ratio (Ren et al. 2019, arXiv:1906.02845).

Each value of the integer data is kept with probability 1 - mu and otherwise replaced by a level
drawn uniformly from 0..L-1 (which may be the value it had: about mu (1 - 1/L) of the values
change). A model trained on such inputs learns the background statistics of the data (the
population-level pixel statistics) while losing its semantics, so that log p(x) - log p_bg(x)
cancels what both share. Ren et al. used mu in 0.1..0.3, together with L2 weight decay.

>>> x = torch.zeros(1000, 1, 8, 8, dtype=torch.uint8)
>>> y = mutate(x, 0.2, 256, torch.Generator().manual_seed(0))
>>> round((y != x).double().mean().item(), 2)
0.2
"""

import torch

from dgmkit._rng import checked_generator

__all__ = ["mutate"]


def mutate(x: torch.Tensor, rate: float, num_levels: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` (N, *event) of integers 0..``num_levels``-1 with each value replaced, with probability
    ``rate``, by a uniform draw from the levels; the same dtype and device. Seeded by ``generator``.
    A missing entry (NaN, in data with holes) stays missing: it holds no value to replace (a level
    drawn there made an observation of nothing, and raised the share of drawn values above ``rate``)."""
    checked_generator(generator)  # (a rate of 0 draws nothing)
    if not 0 <= rate <= 1:
        raise ValueError(f"the mutation rate must be in [0, 1], got {rate}")
    if num_levels is None or num_levels < 2:
        raise ValueError(f"mutation needs quantized data of at least 2 levels, got {num_levels}")
    if rate == 0:
        return x
    replace = torch.rand(x.shape, generator=generator, device=x.device) < rate
    if x.is_floating_point():
        replace &= ~torch.isnan(x)
    levels = torch.randint(num_levels, x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(replace, levels, x)
