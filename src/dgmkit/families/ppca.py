"""The probabilistic PCA family: the linear Gaussian latent variable model, fitted by maximum
likelihood in closed form (Tipping & Bishop 1999), or by EM over missing entries; everything about it is exact."""

import dataclasses
import math

from dgmkit.errors import ConfigError
from dgmkit.families.base import DataSpec, FamilyConfig
from dgmkit.families.parts import FixedLikelihood
from dgmkit.models import PPCA
from dgmkit.settings import setting

__all__ = ["PPCAConfig"]


@dataclasses.dataclass
class PPCAConfig(FixedLikelihood, FamilyConfig):
    name = "ppca"
    summary = "probabilistic PCA, fitted in closed form, by EM on incomplete data (exact likelihood)"
    fit = "closed-form"
    fits_incomplete = True  # (PPCA.fit: EM on the observed entries)
    data_likelihood = "gaussian"

    latent_dim: int = setting(10, "latent dimensions M (< data dimensions)", min=1, max=4096)

    def describe(self) -> str:
        return f"PPCA (M = {self.latent_dim})"

    def model_for(self, data: DataSpec) -> PPCA:
        if not self.latent_dim < math.prod(data.event_shape):
            raise ConfigError(
                f"ppca's latent_dim must be below the {data.event_shape} data's dimensions, got {self.latent_dim}"
            )
        return PPCA.empty(tuple(data.event_shape), self.latent_dim)

    @classmethod
    def from_v1(cls, flat: dict) -> dict:
        return {"latent_dim": flat["latent_dim"]} if "latent_dim" in flat else {}
