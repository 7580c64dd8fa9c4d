"""The autoregressive family: a causal dilated 1-D convolutional model, MADE (with order and
mask ensembles scored as proper mixtures) and a gated PixelCNN, trained by exact maximum
likelihood; their exact conditionals also drive sampling and lossless compression."""

import dataclasses
from typing import Literal, cast

from dgmkit.data import Dataset, DataTransform, make_transform
from dgmkit.errors import ConfigError
from dgmkit.families.base import DataSpec, FamilyConfig
from dgmkit.families.parts import LikelihoodSettings
from dgmkit.models import MADEARM, AutoregressiveModel, CausalConvARM, GatedPixelCNN
from dgmkit.objectives import MaximumLikelihood, Objective
from dgmkit.settings import setting

__all__ = ["ARMConfig"]


@dataclasses.dataclass
class ARMConfig(FamilyConfig):
    name = "arm"
    summary = "autoregressive model (causal conv, MADE, gated PixelCNN): exact likelihood"

    arm: Literal["causal-conv", "made", "pixelcnn"] = setting("pixelcnn", "the architecture")
    likelihood: Literal["bernoulli", "categorical", "logistic"] = setting("bernoulli", "p(x_d | x_<d) per pixel")
    logistic_components: int = setting(5, "logistic likelihood: mixture components per pixel", min=1, max=64)
    channels: int = setting(32, "pixelcnn, causal-conv: channels of every layer", min=1, max=1024)
    arm_layers: int = setting(6, "pixelcnn, causal-conv: gated layers", min=1, max=64)
    arm_kernel: int = setting(3, "pixelcnn, causal-conv: kernel width (odd for pixelcnn)", min=2, max=31)
    made_hidden: list[int] = setting([500], "made: hidden layer sizes", min=1, max=16384)
    made_masks: int = setting(1, "made: K connectivities, trained one per minibatch, scored as their mixture", min=1, max=64)
    made_random_order: bool = setting(False, "made: random input orders (else raster order, new hidden degrees)")
    made_direct: bool = setting(False, "made: masked direct input-output connections as well")

    def validate(self) -> None:
        if self.arm == "pixelcnn" and self.arm_kernel % 2 == 0:
            raise ConfigError(f"arm_kernel must be odd for pixelcnn, got {self.arm_kernel}")

    def transform(self, dataset: Dataset, binarize: str = "auto") -> DataTransform:
        return make_transform(self.likelihood, dataset, binarize)

    def scored_likelihood(self) -> str | None:
        return self.likelihood

    def inert_settings(self) -> dict[str, str]:
        made = ("made_hidden", "made_masks", "made_random_order", "made_direct")
        convolutional = ("channels", "arm_layers", "arm_kernel")
        inert = dict.fromkeys(convolutional, "--arm pixelcnn or causal-conv") if self.arm == "made" else {}
        if self.arm != "made":
            inert.update(dict.fromkeys(made, "--arm made"))
        if self.likelihood != "logistic":
            inert["logistic_components"] = "--likelihood logistic"
        return inert

    def describe(self) -> str:
        return f"a {self.arm} autoregressive model ({self.likelihood})"

    def training_objective(self) -> Objective:
        return MaximumLikelihood()

    def model_for(self, data: DataSpec) -> AutoregressiveModel:
        head = LikelihoodSettings(self.likelihood, logistic_components=self.logistic_components).head(data.num_levels)
        scale = 1.0
        if self.likelihood in ("categorical", "logistic"):
            assert data.num_levels is not None  # head() raised otherwise
            scale = 1.0 / (data.num_levels - 1)
        image = cast("tuple[int, int, int]", data.event_shape)  # (1, H, W): the models refuse another shape (ValueError)
        try:
            if self.arm == "made":
                return MADEARM(
                    head, image, self.made_hidden, self.made_masks, self.made_random_order, data.seed, scale,
                    self.made_direct,
                )  # fmt: skip
            kind = CausalConvARM if self.arm == "causal-conv" else GatedPixelCNN
            return kind(head, image, self.channels, self.arm_layers, self.arm_kernel, input_scale=scale)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    @classmethod
    def from_v1(cls, flat: dict) -> dict:
        values = super().from_v1(flat)
        hidden = flat.get("hidden", [512, 256])
        values.update(channels=hidden[0], made_hidden=list(hidden))
        return values
