"""The discrete VAE family: V categorical latent variables of K classes each, trained by the
Gumbel-softmax relaxation or a score-function estimator (REINFORCE with a learned baseline, NVIL's
centred and variance-normalised form of it, or VIMCO's multi-sample bound with baselines from the
other draws)."""

import dataclasses
from typing import Literal

from torch import nn

from dgmkit.conditional import CategoricalEncoder
from dgmkit.errors import ConfigError
from dgmkit.families.base import DataSpec, FamilyConfig, PartlyRead
from dgmkit.families.parts import AutoencoderSettings, ImportanceSampledEval, KLWeightSettings, encoder_net, flat_input
from dgmkit.models import CategoricalVAE
from dgmkit.nn import MLP, RunningMoments
from dgmkit.objectives import VIMCO, GumbelSoftmaxELBO, Objective, ReinforceELBO
from dgmkit.objectives.discrete import SMALLEST_TEMPERATURE
from dgmkit.priors import UniformCategoricalPrior
from dgmkit.settings import setting

TAU_MIN = 0.5  # gumbel_temperature_min's default
NVIL_DECAY = 0.8  # the running moments' alpha (Mnih & Gregor 2014)

__all__ = ["DiscreteVAEConfig"]


@dataclasses.dataclass
class DiscreteVAEConfig(KLWeightSettings, AutoencoderSettings, ImportanceSampledEval, FamilyConfig):
    name = "dvae"
    summary = "VAE with categorical latents: Gumbel-softmax, REINFORCE, NVIL or VIMCO"

    latent_dim: int = setting(30, "categorical latent variables V", min=1, max=4096)
    latent_classes: int = setting(10, "classes K of each latent variable", min=2, max=1024)
    objective: Literal["gumbel-softmax", "reinforce", "nvil", "vimco"] = setting(
        "gumbel-softmax", "the gradient estimator (nvil: reinforce with a centred, variance-normalised signal)"
    )
    iw_k: int = setting(
        5, "vimco: draws K per datapoint in its importance-weighted bound (dgm eval's k is --iw-samples)", min=2, max=5000
    )
    gumbel_temperature: float = setting(
        1.0, "gumbel-softmax: initial relaxation temperature tau_0 (not dgm sample's --temperature)", gt=0, max=100
    )
    gumbel_temperature_min: float = setting(
        TAU_MIN, "gumbel-softmax: the relaxation temperature's floor", min=SMALLEST_TEMPERATURE, max=100
    )
    anneal_rate: float = setting(3e-5, "gumbel-softmax: tau_t = max(tau_min, tau_0 exp(-rate * step))", min=0, max=1)
    straight_through: bool = setting(False, "gumbel-softmax: hard one-hot forward pass, relaxed gradient")

    renamed = {"temperature": "gumbel_temperature", "temperature_min": "gumbel_temperature_min"}  # run format 2

    @classmethod
    def claims_v1(cls, flat: dict) -> bool:  # 0.1 spelled it --model vae --latent categorical
        return flat.get("model", "vae") == "vae" and flat.get("latent") == "categorical"

    def validate(self) -> None:
        # (the floor is the relaxation's: under another estimator both are unread, which inert_settings says; a
        # --gumbel-temperature 0.3 of a reinforce run was refused for the default floor of 0.5 above it)
        if self.objective == "gumbel-softmax" and self.gumbel_temperature_min > self.gumbel_temperature:
            raise ConfigError(
                "need gumbel_temperature_min <= gumbel_temperature, got "
                f"{self.gumbel_temperature_min} > {self.gumbel_temperature}"
            )

    def inert_settings(self) -> dict[str, str]:
        gumbel = ("gumbel_temperature", "gumbel_temperature_min", "anneal_rate", "straight_through")
        inert = super().inert_settings()
        if self.objective != "vimco":
            inert["iw_k"] = "--objective vimco"
        if self.objective != "gumbel-softmax":
            return {**inert, **dict.fromkeys(gumbel, "--objective gumbel-softmax")}
        # (tau stays at gumbel_temperature, never reaching its floor; a floor that validate needs at or below a
        # temperature under the default floor is given, not unread: refused, a constant tau of 0.3 had no way)
        if self.anneal_rate == 0 and self.gumbel_temperature >= TAU_MIN:
            inert["gumbel_temperature_min"] = "--anneal-rate above 0"
        if self.gumbel_temperature == self.gumbel_temperature_min:  # (tau starts at its floor: nothing to anneal)
            inert["anneal_rate"] = "--gumbel-temperature above --gumbel-temperature-min"
        return inert

    def activation_needs(self) -> str | None:
        needs = super().activation_needs()  # (reinforce's and nvil's baseline b(x) is an MLP)
        return None if needs is None or self._baseline() else f"{needs}, or --objective reinforce or nvil"

    def hidden_read(self) -> PartlyRead | None:
        part = super().hidden_read()
        if part is not None and self._baseline():  # (its baseline b(x): one layer of hidden's last entry)
            return dataclasses.replace(part, entries="ends", what=f"{part.what} and the {self.objective} baseline's layer")
        return part

    def _baseline(self) -> bool:
        """Whether the estimator has a learned baseline b(x) (REINFORCE's, NVIL's)."""
        return self.objective in ("reinforce", "nvil")

    def describe(self) -> str:
        return f"a discrete VAE ({self.latent_dim} categorical latents of {self.latent_classes} classes, {self.objective})"

    def training_objective(self) -> Objective:
        if self._baseline():
            return ReinforceELBO(normalise=self.objective == "nvil")
        if self.objective == "vimco":
            return VIMCO(self.iw_k)
        return GumbelSoftmaxELBO(
            self.gumbel_temperature, self.gumbel_temperature_min, self.anneal_rate, self.straight_through
        )

    def model_for(self, data: DataSpec) -> CategoricalVAE:
        self.check_networks(data.event_shape)
        m = self.latent_dim * self.latent_classes  # the decoder reads the flattened one-hot vectors
        decoder = self.build_decoder(data.event_shape, m, self.head(data.num_levels))
        encoder = CategoricalEncoder(encoder_net(self, data.event_shape, m), self.latent_dim, self.latent_classes)
        prior = UniformCategoricalPrior(self.latent_dim, self.latent_classes)
        baseline = None
        if self._baseline():  # the score-function estimator's learned control variate b(x)
            flat, dims = flat_input(self, data.event_shape)
            baseline = nn.Sequential(flat, MLP(dims, [self.hidden[-1]], 1, self.activation))
        moments = RunningMoments(NVIL_DECAY) if self.objective == "nvil" else None
        scale, one_hot = self.input_scale(data.num_levels), self.one_hot_columns()
        return CategoricalVAE(
            encoder, decoder, prior, scale, fill_missing=not one_hot, baseline=baseline, signal_moments=moments
        )
