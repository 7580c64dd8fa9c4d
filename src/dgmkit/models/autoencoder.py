"""Deterministic autoencoder: z = f(x), trained to maximize log p(x | z = f(x)).

A baseline for representation learning next to the VAE and the beta-VAE (``--beta``): it has
no prior and defines no density over x, so it has no ELBO, likelihood or samples; evaluation
reports its reconstruction log-likelihood and latent diagnostics only.
"""

import torch
from torch import nn
from torch.distributions import Distribution

from dgmkit.conditional import Decoder
from dgmkit.devices import dtype_of, widened
from dgmkit.distributions.delta import Delta
from dgmkit.models.base import DecodedModel, check_decoder, data_batch

__all__ = ["Autoencoder"]


class Autoencoder(DecodedModel):
    """z = f(x) with a decoder p(x|z): latents and reconstructions, but no prior and no density."""

    estimate_kind = "reconstruction"
    has_latents = True
    can_sample = False
    reconstructs = True

    def __init__(self, encoder_net: nn.Module, decoder: Decoder, latent_dim: int, input_scale: float = 1.0):
        super().__init__()
        check_decoder(decoder)
        self.encoder_net = encoder_net
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.input_scale = float(input_scale)

    def posterior(self, x: torch.Tensor) -> Delta:
        """The code z = f(x) as a point mass."""
        x = data_batch(x, self.event_shape, "the encoder f(x)")
        x = x.to(dtype_of(self))  # (the model's precision: float64 once made so)
        x = x * self.input_scale if self.input_scale != 1.0 else x
        return Delta(widened(self.encoder_net(x)))

    def likelihood(self, z: torch.Tensor) -> Distribution:
        return self.decoder(z)

    def reconstruction_code(self, x: torch.Tensor) -> torch.Tensor:
        """The code z = f(x) that ``reconstruct`` decodes."""
        return self.posterior(x).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.likelihood(self.reconstruction_code(x)).mean
