"""The PixelVAE family: a VAE whose decoder is autoregressive, a gated PixelCNN over x whose
every layer sees a map s(z) (Gulrajani et al. 2017); with two stochastic layers, Tomczak &
Welling's PixelHVAE (2018). The latent stack, its posteriors, priors (VampPrior included) and
networks are the hierarchical VAE's; the ELBO and the importance-sampled log p(x) are exact in
the decoder's one pass; samples are drawn pixel by pixel."""

import dataclasses
import math
from typing import ClassVar, Literal

from torch import nn

from dgmkit.conditional.pixelcnn import PixelCNNDecoder
from dgmkit.errors import ConfigError
from dgmkit.families.base import DataSpec, FamilyConfig
from dgmkit.families.hvae import StackSettings
from dgmkit.models.hvae import HierarchicalVAE
from dgmkit.models.pixelvae import PixelVAE
from dgmkit.nn.gated import GatedBranches
from dgmkit.settings import setting

__all__ = ["PixelVAEConfig"]


@dataclasses.dataclass
class PixelVAEConfig(StackSettings, FamilyConfig):
    name = "pixelvae"
    summary = "VAE with an autoregressive decoder: a gated PixelCNN over x sees z (PixelVAE; two layers: PixelHVAE)"

    stack_class: ClassVar[type[HierarchicalVAE]] = PixelVAE
    # the likelihood is a discrete one that a pixel can be drawn from: the continuous ones' settings go
    unused_settings: ClassVar[frozenset[str]] = frozenset(
        {
            "gaussian_variance",
            "gaussian_scale",
            "gaussian_min_scale",
            "student_min_df",
            "student_min_scale",
            "table_levels",
            "table_input",
        }
    )

    latent_sizes: list[int] = setting(
        [40], "dimensions of each stochastic layer, from z_1 (next to x) to the top (two: the PixelHVAE)", min=1, max=4096
    )
    posterior: Literal["top-down", "bottom-up", "ladder"] = setting(
        "top-down", "q(z|x): top-down given x (Tomczak & Welling), the bottom-up stack, or the Ladder VAE's merge"
    )
    likelihood: Literal["bernoulli", "categorical", "logistic"] = setting(
        "bernoulli", "p(x_d | x_<d, z) per pixel: a discrete likelihood that a pixel can be drawn from"
    )
    pixelcnn_layers: int = setting(8, "gated PixelCNN layers of the decoder", min=1, max=64)
    pixelcnn_channels: int = setting(64, "channels of each PixelCNN layer", min=1, max=1024)
    pixelcnn_kernel: int = setting(3, "the PixelCNN's kernel size (odd)", min=3, max=15)
    cond_channels: int = setting(
        4, "channels of the map s(z) at the image's size that every PixelCNN layer sees", min=1, max=256
    )

    def validate(self) -> None:
        super().validate()
        if self.pixelcnn_kernel % 2 == 0:
            raise ConfigError(f"pixelcnn_kernel must be odd, got {self.pixelcnn_kernel}")

    def describe(self) -> str:
        layers = len(self.latent_sizes)
        kind = "a PixelVAE" if layers == 1 else f"a PixelHVAE ({layers} layers {self.latent_sizes})"
        return (
            f"{kind}: {self.posterior} posterior, {self.hidden} {self.networks} networks, {self.prior} prior, a "
            f"{self.pixelcnn_layers}-layer gated PixelCNN decoder of {self.pixelcnn_channels} channels seeing "
            f"{self.cond_channels} channels of z, {self.likelihood.capitalize()} likelihood"
        )

    def _decoder_net(self, event_shape: tuple[int, ...], per_pixel: int) -> nn.Module:
        """The condition map's network. conv-hvae: gated dense layers from each latent layer to the
        image's size, as the reference PixelHVAE's (the convolutions are the PixelCNN's)."""
        if self.architecture == "conv-hvae":
            return GatedBranches(self.latent_sizes, self.hidden[-1], math.prod(event_shape) * per_pixel)
        return super()._decoder_net(event_shape, per_pixel)

    def _decoder(self, event_shape: tuple[int, ...], num_levels: int | None, scale: float) -> PixelCNNDecoder:
        if len(event_shape) != 3 or event_shape[0] != 1:
            raise ConfigError(f"the PixelCNN decoder models single-channel images (1, H, W), got shape {event_shape}")
        return PixelCNNDecoder(
            self._decoder_net(event_shape, self.cond_channels),
            self.head(num_levels),
            event_shape,
            self.cond_channels,
            channels=self.pixelcnn_channels,
            layers=self.pixelcnn_layers,
            kernel=self.pixelcnn_kernel,
            input_scale=scale,
        )

    def model_for(self, data: DataSpec) -> HierarchicalVAE:
        return self._build_stack(data)
