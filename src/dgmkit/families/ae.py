"""The deterministic autoencoder family: z = f(x), trained on log p(x | z = f(x)); no prior, no
density (evaluation reports the reconstruction only)."""

import dataclasses

from dgmkit.families.base import DataSpec, FamilyConfig
from dgmkit.families.parts import AutoencoderSettings, encoder_net
from dgmkit.models import Autoencoder
from dgmkit.objectives import Objective, Reconstruction
from dgmkit.settings import setting

__all__ = ["AutoencoderConfig"]


@dataclasses.dataclass
class AutoencoderConfig(AutoencoderSettings, FamilyConfig):
    name = "ae"
    summary = "deterministic autoencoder (a baseline: no prior, no density)"

    latent_dim: int = setting(32, "code dimensions", min=1, max=4096)

    def describe(self) -> str:
        return f"an autoencoder ({self.hidden} {self.encoder} networks, {self.latent_dim}-D code)"

    def training_objective(self) -> Objective:
        return Reconstruction()

    def model_for(self, data: DataSpec) -> Autoencoder:
        self.check_networks(data.event_shape)
        decoder = self.build_decoder(data.event_shape, self.latent_dim, self.head(data.num_levels))
        enc = encoder_net(self, data.event_shape, self.latent_dim)
        return Autoencoder(enc, decoder, self.latent_dim, self.input_scale(data.num_levels))
