"""The log-linear latent variable family: a discrete mixture of pairwise log-linear models over
small binary images, with exact inference by enumeration, fitted by EM."""

import dataclasses

from dgmkit.data import Dataset, DataTransform
from dgmkit.errors import ConfigError, DataError
from dgmkit.families.base import DataSpec, FamilyConfig
from dgmkit.families.parts import FixedLikelihood
from dgmkit.models import LogLinearLVM
from dgmkit.settings import setting

__all__ = ["LogLinearConfig"]


@dataclasses.dataclass
class LogLinearConfig(FixedLikelihood, FamilyConfig):
    name = "loglinear"
    summary = "log-linear latent variable model on <= 20 binary pixels, fitted by EM (exact)"
    fit = "em"
    data_likelihood = "bernoulli"

    states: int = setting(4, "states K of the discrete latent variable", min=1, max=10000)
    em_iterations: int = setting(50, "EM iterations", min=1, max=10**6)

    @property
    def iterations(self) -> int:
        return self.em_iterations

    def transform(self, dataset: Dataset, binarize: str = "auto") -> DataTransform:
        t = super().transform(dataset, binarize)
        if t.kind != "binary":
            raise DataError(f"the loglinear model needs binary data; {dataset.name} is {t.kind} (try digits-4x4)")
        return t

    def describe(self) -> str:
        return f"a log-linear LVM ({self.states} states)"

    def model_for(self, data: DataSpec) -> LogLinearLVM:
        try:
            return LogLinearLVM(data.event_shape, self.states)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    @classmethod
    def from_v1(cls, flat: dict) -> dict:
        return {"states": flat.get("latent_dim", 4), "em_iterations": flat.get("epochs", 50)}
