r"""The WAE-MMD objective (Tolstikhin et al. 2018):

    loss = E_x E_q(z|x)[-log p(x|z)] + lambda MMD^2(q(z), p(z)),

with the reconstruction cost c(x, G(z)) = -log p(x|z) (the decoder's likelihood: cross-entropy
for Bernoulli pixels), one draw of q(z|x) per datapoint, and the unbiased MMD estimate between
the batch's codes and as many draws from the prior, under the model's kernel (by default the
inverse multiquadric kernel summed over several scales, ``distributions.mmd``), the one its
evaluation uses too. The MMD is a property of the batch: each datapoint's ``mmd`` term is that
batch value, so batch means are the batch's MMD. ``recon`` is the score (a reconstruction score,
not a bound on log p(x)).
"""

from typing import NamedTuple

import torch

from dgmkit.distributions.mmd import mmd2_unbiased
from dgmkit.models.wae import WassersteinAutoencoder
from dgmkit.objectives.base import Objective, at_least

__all__ = ["WAEObjective", "WAETerms"]


class WAETerms(NamedTuple):
    loss: torch.Tensor
    recon: torch.Tensor
    mmd: torch.Tensor


class WAEObjective(Objective[WassersteinAutoencoder]):
    """See the module docstring; ``mmd_weight`` is lambda. The Trainer's KL weight (a warm-up)
    scales the penalty too."""

    score = "recon"
    score_label = "log p(x|z)"

    def __init__(self, mmd_weight: float = 10.0):
        self.mmd_weight = at_least("mmd_weight", mmd_weight, 0)
        self.rows_per_step = 2 if self.mmd_weight > 0 else 1  # (the unbiased MMD of a batch's codes needs two)

    def __call__(self, model: WassersteinAutoencoder, x: torch.Tensor, beta: float = 1.0) -> WAETerms:
        z = model.posterior(x).rsample()
        recon = model.likelihood(z).log_prob(x)
        if len(x) < 2:  # the unbiased MMD needs two codes; a lone datapoint carries no penalty
            mmd = torch.zeros((), device=x.device, dtype=recon.dtype)
        else:
            p = model.prior()
            zp = p.rsample((len(x),)) if p.has_rsample else p.sample((len(x),))
            mmd = mmd2_unbiased(z.reshape(len(x), -1), zp.reshape(len(x), -1).to(z.dtype), model.kernel)
        mmd = mmd.expand(len(x))
        return WAETerms(-recon + beta * self.mmd_weight * mmd, recon, mmd)
