"""Models: composition of encoders, decoders and priors."""

from dgmkit.models.vae import VAE

__all__ = ["VAE"]
