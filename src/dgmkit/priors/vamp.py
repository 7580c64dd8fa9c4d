r"""VampPrior (Tomczak & Welling 2018, arXiv 1705.07120):

    p(z) = (1/K) sum_k q(z | u_k)

a mixture of the variational posteriors at K learnable pseudo-inputs u_k. The encoder is
shared with the VAE, not owned: it is kept out of this module's parameters so that it is
saved and trained once, as part of the VAE.
"""

import torch
from torch import nn

from dgmkit.conditional.base import ConditionalDistribution
from dgmkit.distributions import DiagonalGaussianMixture
from dgmkit.priors.base import Prior

__all__ = ["VampPrior"]


class VampPrior(Prior):
    """``encoder`` maps inputs of shape ``event_shape`` to q(z|u). Pseudo-inputs live in the
    encoder's input space and are clipped to [0, 1] (hardtanh, as in the reference code).

    ``init``: a tensor of K inputs in [0, 1] to start from (for example random training
    images), or None for random values N(``mean``, ``std``^2). Given inputs are mapped affinely
    into [0.01, 0.99]: hardtanh has no gradient at 0 and 1, so pseudo-inputs copied from binary
    images would otherwise never move.
    """

    def __init__(
        self,
        encoder: ConditionalDistribution,
        latent_dim: int,
        event_shape: tuple[int, ...],
        components: int = 500,
        init: torch.Tensor | None = None,
        mean: float = 0.05,
        std: float = 0.01,
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.components = components
        self._encoder = [encoder]  # a reference, not a submodule
        if init is None:
            u = mean + std * torch.randn(components, *event_shape)
        else:
            if init.shape != (components, *event_shape):
                raise ValueError(f"init must have shape {(components, *event_shape)}, got {tuple(init.shape)}")
            u = 0.01 + 0.98 * init.float().clamp(0, 1)
        self.pseudo_inputs = nn.Parameter(u)

    @property
    def encoder(self) -> ConditionalDistribution:
        return self._encoder[0]

    def forward(self) -> DiagonalGaussianMixture:
        u = torch.nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0)
        q_u = self.encoder(u)  # a diagonal Gaussian with batch (K,), event (M,)
        weights = torch.zeros(self.components, device=u.device)
        return DiagonalGaussianMixture(weights, q_u.mean, q_u.stddev)
