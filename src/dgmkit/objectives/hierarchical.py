r"""The ELBO of a hierarchical VAE with one KL term per layer.

For one ancestral draw of the posterior (``HierarchicalVAE.path``),

    ELBO(x) = log p(x | z) - sum_l KL_l,

    KL_l = KL(q(z_l | .) || p(z_l | z_{l+1}))      in closed form, given the drawn layers above,

where that is its expectation: when the layers p conditions on are drawn before z_l (top-down
and ladder posteriors, and the top layer of any). For the lower layers of a bottom-up posterior
(z_{l+1} is drawn after z_l, from it) KL_l is the one-sample estimate log q(z_l | z_{l-1}) -
log p(z_l | z_{l+1}). A top prior without a closed-form KL (mixture, VampPrior, flow) is also
estimated with the draw. Either way the sum is an unbiased estimate of the ELBO.

Training minimizes -(log p(x|z) - beta * sum_l KL_l'), where KL_l' applies free bits per layer
(Kingma et al. 2016): a layer whose batch-mean KL is below the floor lambda is charged lambda,
without gradient, so that no layer is pushed into collapse. ``elbo`` keeps beta = 1 and no floor.
"""

import torch

from dgmkit.models.hvae import LayerStack
from dgmkit.objectives.base import Objective, at_least, unit_weight
from dgmkit.objectives.elbo import ELBOTerms

__all__ = ["HierarchicalELBO", "layer_kls"]


def layer_kls(model: LayerStack, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One posterior draw per datapoint: (log p(x | z) of shape (B,), the KL terms (L, B), layer
    0 next to x): ``LayerStack.layer_kls``."""
    return model.layer_kls(x)


class HierarchicalELBO(Objective[LayerStack]):
    """The ELBO of a stack of stochastic layers (``models.LayerStack``: a hierarchical VAE, the deep
    top-down VAE) with per-layer KL terms (see the module
    docstring); ``free_bits`` is the floor lambda (nats) on each layer's batch-mean KL."""

    score = "elbo"
    score_label = "ELBO"

    def __init__(self, free_bits: float = 0.0):
        self.free_bits = at_least("free_bits", free_bits, 0)

    def __call__(self, model: LayerStack, x: torch.Tensor, beta: float = 1.0) -> ELBOTerms:
        log_px_z, kls = layer_kls(model, x)
        kl = kls.sum(0)
        elbo = log_px_z - kl
        kl_train = kl
        if self.free_bits > 0:
            below = kls.detach().mean(1, keepdim=True) < self.free_bits  # (L, 1): layers under the floor
            kl_train = torch.where(below, torch.full_like(kls, self.free_bits), kls).sum(0)
        loss = -elbo if unit_weight(beta) and kl_train is kl else -(log_px_z - beta * kl_train)
        return ELBOTerms(loss, elbo, log_px_z, kl)
