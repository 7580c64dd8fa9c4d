"""Student's t, made without torch's checks at any level."""

import torch
from torch.distributions import Chi2, Distribution, StudentT
from torch.distributions.utils import broadcast_all

__all__ = ["student_t"]


def student_t(df: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> StudentT:
    """``StudentT(df, loc, scale)`` checked nowhere: torch's checks the chi-squared it holds
    whatever its own ``validate_args`` says, a read of ``df`` (a wait for a GPU in every training
    step, and a read that a step captured as a CUDA graph cannot hold). The caller keeps
    ``df``, ``scale`` > 0 (softplus plus a floor).

    >>> student_t(torch.tensor(3.0), torch.tensor(0.0), torch.tensor(1.0)).log_prob(torch.tensor(0.0))
    tensor(-1.0009)
    """
    d = StudentT.__new__(StudentT)
    d.df, d.loc, d.scale = broadcast_all(df, loc, scale)
    d._chi2 = Chi2(d.df, validate_args=False)
    Distribution.__init__(d, d.df.size(), validate_args=False)
    return d
