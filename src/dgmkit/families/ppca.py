"""The probabilistic PCA family: the linear Gaussian latent variable model, fitted by maximum
likelihood in closed form (Tipping & Bishop 1999); everything about it is exact."""

import dataclasses
import math

import torch

from dgmkit.errors import ConfigError
from dgmkit.families.base import FamilyConfig
from dgmkit.families.parts import FixedLikelihood
from dgmkit.models import PPCA
from dgmkit.settings import setting

__all__ = ["PPCAConfig"]


@dataclasses.dataclass
class PPCAConfig(FixedLikelihood, FamilyConfig):
    name = "ppca"
    summary = "probabilistic PCA, fitted in closed form (exact likelihood)"
    fit = "closed-form"
    data_likelihood = "gaussian"

    latent_dim: int = setting(10, "latent dimensions M (< data dimensions)", min=1, max=4096)

    def describe(self) -> str:
        return f"PPCA (M = {self.latent_dim})"

    def build(
        self, event_shape: tuple[int, ...], num_levels: int | None, init_data: torch.Tensor | None = None, seed: int = 0
    ) -> PPCA:
        if not self.latent_dim < math.prod(event_shape):
            raise ConfigError(f"ppca's latent_dim must be below the {event_shape} data's dimensions, got {self.latent_dim}")
        return PPCA.empty(tuple(event_shape), self.latent_dim)

    @classmethod
    def from_v1(cls, flat: dict) -> dict:
        return {"latent_dim": flat["latent_dim"]} if "latent_dim" in flat else {}
