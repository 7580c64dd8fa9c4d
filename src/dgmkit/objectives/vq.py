r"""The VQ-VAE's training objective and its bound (van den Oord et al. 2017):

    loss = -log p(x | z_q) + beta |z_e - sg(e)|^2 + |sg(z_e) - e|^2

(the codebook term is 0 where the codebook follows an EMA of its assigned vectors), with the
straight-through gradient. The score is the bound log p(x|z_q(x)) + log p(z_q(x)) under the
model's stage-one prior, uniform over the codes (``models.VQVAE``). Each batch's codebook
perplexity and usage (the share of the K codes that it uses) are reported per datapoint as the
batch's value, so that the Trainer logs their validation means every epoch. With two levels
(VQ-VAE-2), each of their two codebooks of K: the mean of the levels' perplexities and of their
usages, so that both stay at most K and 1 (the perplexity of the 2K codes taken together reached
about 1.65 K, the top grid holding a fifth of the positions).
"""

from typing import NamedTuple

import torch

from dgmkit.models.vqvae import VQVAE
from dgmkit.nn.quantize import perplexity
from dgmkit.objectives.base import Objective

__all__ = ["VQObjective", "VQTerms"]


class VQTerms(NamedTuple):
    loss: torch.Tensor
    bound: torch.Tensor
    recon: torch.Tensor
    commitment: torch.Tensor
    codebook_loss: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor


class VQObjective(Objective[VQVAE]):
    score = "bound"
    score_label = "bound (uniform code prior)"

    def __call__(self, model: VQVAE, x: torch.Tensor, beta: float = 1.0) -> VQTerms:
        px, q = model.train_pass(x)
        recon = px.log_prob(x)
        n = len(x)
        levels = q.counts.view(-1, model.num_codes)  # a row of counts for each level's codebook
        ppl = torch.stack([perplexity(c) for c in levels]).mean().to(recon.dtype).expand(n)
        usage = (levels > 0).to(recon.dtype).mean().expand(n)
        loss = -recon + q.commitment + q.codebook
        return VQTerms(loss, recon + model.log_prior_uniform(), recon, q.commitment, q.codebook, ppl, usage)
