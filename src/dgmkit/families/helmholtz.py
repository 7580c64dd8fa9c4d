"""The Helmholtz machine family: a sigmoid belief network with a recognition network, trained
by wake-sleep, reweighted wake-sleep or VIMCO."""

import dataclasses
from typing import Literal

from dgmkit.errors import ConfigError
from dgmkit.families.base import DataSpec, FamilyConfig
from dgmkit.families.parts import FixedLikelihood, ImportanceSampledEval
from dgmkit.models import HelmholtzMachine
from dgmkit.objectives import Objective, ReweightedWakeSleep, VIMCOBound, WakeSleep
from dgmkit.settings import setting

__all__ = ["HelmholtzConfig"]


@dataclasses.dataclass
class HelmholtzConfig(FixedLikelihood, ImportanceSampledEval, FamilyConfig):
    name = "helmholtz"
    summary = "Helmholtz machine (sigmoid belief net): wake-sleep, reweighted wake-sleep or VIMCO"
    data_likelihood = "bernoulli"

    layers: list[int] = setting(
        [200, 50], "sizes of the stochastic binary layers, bottom (next to x) to top", min=1, max=16384
    )
    objective: Literal["wake-sleep", "rws", "vimco"] = setting("rws", "the learning algorithm")
    iw_k: int = setting(
        5,
        "rws, vimco: importance samples K per datapoint in training (vimco: 2 or more; dgm eval's k is --iw-samples)",
        min=1,
        max=5000,
    )

    def validate(self) -> None:
        if self.objective == "vimco" and self.iw_k < 2:
            raise ConfigError(
                f"--objective vimco needs --iw-k 2 or more (each draw's baseline is made of the others), got {self.iw_k}"
            )

    def inert_settings(self) -> dict[str, str]:
        return {"iw_k": "--objective rws or vimco"} if self.objective == "wake-sleep" else {}

    def describe(self) -> str:
        return f"a Helmholtz machine (layers {self.layers}, {self.objective})"

    def training_objective(self) -> Objective:
        if self.objective == "vimco":
            return VIMCOBound(k=self.iw_k)
        return ReweightedWakeSleep(k=self.iw_k) if self.objective == "rws" else WakeSleep()

    def model_for(self, data: DataSpec) -> HelmholtzMachine:
        return HelmholtzMachine(data.event_shape, self.layers)

    @classmethod
    def from_v1(cls, flat: dict) -> dict:
        return {
            "layers": [*flat.get("hidden", [512, 256]), flat.get("latent_dim", 32)],
            "objective": flat.get("objective", "rws"),
            "iw_k": flat.get("iw_k", 5),
        }
