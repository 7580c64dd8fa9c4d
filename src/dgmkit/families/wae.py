"""The Wasserstein autoencoder family (WAE-MMD): a deterministic or Gaussian encoder, any
decoder likelihood and prior, and the MMD penalty between the codes and the prior."""

import dataclasses
from typing import Literal

from dgmkit.conditional import GaussianEncoder
from dgmkit.errors import ConfigError
from dgmkit.families.base import DataSpec, FamilyConfig
from dgmkit.families.parts import AutoencoderSettings, KLWeightSettings, encoder_net
from dgmkit.models.wae import WassersteinAutoencoder
from dgmkit.objectives import Objective
from dgmkit.objectives.wae import WAEObjective
from dgmkit.priors import StandardNormalPrior
from dgmkit.settings import setting

__all__ = ["WAEConfig"]


@dataclasses.dataclass
class WAEConfig(KLWeightSettings, AutoencoderSettings, FamilyConfig):
    name = "wae"
    summary = "Wasserstein autoencoder (WAE-MMD): codes pushed to the prior by an MMD penalty"

    beta: float = setting(  # (KLWeightSettings': a WAE has no KL term, and its warm-up scales the penalty)
        1.0, "factor of the MMD penalty: the loss weighs it beta * lambda (--mmd-weight)", min=0, max=1e6
    )
    warmup: float = setting(0.0, "epochs of linear warm-up of the MMD penalty's factor from 0 to beta", min=0, max=1e6)
    latent_dim: int = setting(8, "code dimensions", min=1, max=4096)
    wae_encoder: Literal["deterministic", "gaussian"] = setting("deterministic", "z = f(x), or a Gaussian q(z|x)")
    mmd_weight: float = setting(10.0, "lambda: weight of the MMD penalty", min=0, max=1e9)

    def inert_settings(self) -> dict[str, str]:
        """With lambda = 0 no penalty is weighed: beta and its warm-up (the penalty's factor) go unread."""
        inert = super().inert_settings()
        if self.mmd_weight == 0:
            inert.update(dict.fromkeys(("beta", "warmup"), "--mmd-weight above 0"))
        return inert

    def check_new_run(self, optim: object) -> None:
        if self.mmd_weight > 0 and getattr(optim, "batch_size", 2) < 2:
            raise ConfigError(
                "the WAE's MMD penalty is estimated within each batch and needs at least 2 codes: with --batch-size 1 "
                "it is 0 at every step and the model trains as a plain autoencoder (take --batch-size 2 or more)"
            )

    def describe(self) -> str:
        return (
            f"a Wasserstein autoencoder ({self.hidden} {self.encoder} networks, {self.latent_dim}-D "
            f"{self.wae_encoder} code, MMD weight {self.mmd_weight:g}, {self.likelihood.capitalize()} likelihood)"
        )

    def training_objective(self) -> Objective:
        return WAEObjective(self.mmd_weight)

    def model_for(self, data: DataSpec) -> WassersteinAutoencoder:
        self.check_networks(data.event_shape)
        m = self.latent_dim
        decoder = self.build_decoder(data.event_shape, m, self.head(data.num_levels))
        deterministic = self.wae_encoder == "deterministic"
        net = encoder_net(self, data.event_shape, m if deterministic else 2 * m)
        encoder = net if deterministic else GaussianEncoder(net, m)
        return WassersteinAutoencoder(
            encoder, decoder, StandardNormalPrior(m), deterministic, self.input_scale(data.num_levels)
        )
