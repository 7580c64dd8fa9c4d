"""Variational autoencoder (Kingma & Welling 2014, arXiv 1312.6114; Rezende et al. 2014).

A deep latent variable model p(x, z) = p(z) p(x|z) with an amortized posterior q(z|x).
The model is composition only; the objectives (ELBO, IWAE, ...) are arithmetic on the
distributions it returns.
"""

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from dgmkit._rng import seeded_by
from dgmkit.conditional import ConditionalDistribution, Decoder
from dgmkit.distributions import location
from dgmkit.priors import Prior

__all__ = ["VAE"]


class VAE(nn.Module):
    """p(z) p(x|z) with q(z|x).

    ``input_scale`` multiplies the data before the encoder sees it (for example 1/255 when the
    likelihood scores integer pixels), so that the decoder's targets and the encoder's inputs
    can differ in representation.
    """

    def __init__(self, encoder: ConditionalDistribution, decoder: Decoder, prior: Prior, input_scale: float = 1.0):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior
        self.input_scale = float(input_scale)

    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.decoder.event_shape

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z|x) for a batch of data of shape (B, *event)."""
        if not x.is_floating_point():
            x = x.float()
        if self.input_scale != 1.0:
            x = x * self.input_scale
        return self.encoder(x)

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for latents of shape (*batch, M)."""
        return self.decoder(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw n samples z ~ p(z), x ~ p(x|z). Returns (x, mean of p(x|z))."""
        z = _draw(self.prior(), n, generator)
        px = self.likelihood(z)
        return px.sample(), px.mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z) at the posterior mean z = E_q[z] (for a flow posterior, its
        ``location``): the usual reconstruction."""
        return self.likelihood(location(self.posterior(x))).mean


def _draw(p: Distribution, n: int, generator: torch.Generator | None) -> torch.Tensor:
    gaussian = isinstance(p, Independent) and isinstance(p.base_dist, Normal)
    if generator is None or not gaussian:
        with seeded_by(generator):
            return p.sample((n,))
    mean = p.mean
    eps = torch.randn((n, *mean.shape), generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + eps * p.stddev
