"""The Wasserstein autoencoder (Tolstikhin et al. 2018): an encoder q(z|x), deterministic or
Gaussian, a decoder p(x|z) and a prior p(z) that the aggregate posterior q(z) = E_x q(z|x) is
pushed towards by a divergence penalty (``objectives.WAEObjective``: the MMD).

It is a generative model (samples are x ~ p(x|z), z ~ p(z)) without a tractable density: the
penalty is not a KL, so there is no ELBO. Evaluation reports the reconstruction log p(x|z) at
q(z|x)'s location and the MMD, never a log-likelihood.
"""

import torch
from torch import nn
from torch.distributions import Distribution

from dgmkit._rng import seeded_by
from dgmkit.conditional import Decoder
from dgmkit.distributions.delta import Delta
from dgmkit.models.base import GenerativeModel
from dgmkit.priors import Prior

__all__ = ["WassersteinAutoencoder"]


class WassersteinAutoencoder(GenerativeModel):
    """``encoder``: x -> q(z|x) (a ``conditional`` encoder returning a distribution), or a plain
    network x -> z for a deterministic encoder (``deterministic=True``)."""

    estimate_kind = "reconstruction"
    has_latents = True
    can_sample = True
    reconstructs = True
    codes_match_prior = True
    sample_means = True

    def __init__(
        self, encoder: nn.Module, decoder: Decoder, prior: Prior, deterministic: bool = True, input_scale: float = 1.0
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.top_prior = prior
        self.deterministic = deterministic
        self.input_scale = float(input_scale)

    @property
    def latent_dim(self) -> int:
        return self.top_prior.latent_dim

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.decoder.event_shape

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z|x): a point mass at f(x) (deterministic encoder) or the encoder's Gaussian."""
        x = x.float() * self.input_scale if self.input_scale != 1.0 else x.float()
        if self.deterministic:
            return Delta(self.encoder(x).float())
        return self.encoder(x)

    def prior(self) -> Distribution:
        return self.top_prior()

    def likelihood(self, z: torch.Tensor) -> Distribution:
        return self.decoder(z)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        from dgmkit.distributions import location

        return self.likelihood(location(self.posterior(x))).mean

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws z ~ p(z), x ~ p(x|z). Returns (x, mean of p(x|z))."""
        device = next(self.parameters()).device
        with seeded_by(generator, device):
            z = self.prior().sample((n,))
            px = self.likelihood(z)
            return px.sample(), px.mean
