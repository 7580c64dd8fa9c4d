"""The normalizing-flow family: NICE, RealNVP, Glow and MAF as models of data, trained by
exact maximum likelihood; 8-bit images are dequantized (uniformly, or variationally with a
learned q(u|x) whose bound is then both the objective and the evaluation)."""

import dataclasses
import math
from typing import Literal, cast

from dgmkit.data import Dataset, DataTransform, density_transform
from dgmkit.errors import ConfigError
from dgmkit.families.base import DataSpec, FamilyConfig, PartlyRead
from dgmkit.families.parts import Activation, vector_flow
from dgmkit.models import FlowModel, GenerativeModel, LogitNormalDequantizer, VariationallyDequantizedFlow
from dgmkit.objectives import DequantizationBound, MaximumLikelihood, Objective
from dgmkit.settings import setting
from dgmkit.transforms import IMAGE_FLOWS, Bijection, Compose, Logit

__all__ = ["FlowConfig"]

_VECTOR_FLOW = "a vector flow (--flow nice or maf)"  # what reads activation and every entry of hidden


@dataclasses.dataclass
class FlowConfig(FamilyConfig):
    name = "flow"
    summary = "normalizing flow (NICE, RealNVP, Glow, MAF): exact likelihood"

    flow: Literal["nice", "realnvp", "glow", "maf"] = setting("realnvp", "the flow architecture")
    hidden: list[int] = setting(
        [64, 64], "coupling/MADE network widths (image flows: channels = the first)", min=1, max=16384
    )
    activation: Activation = setting("relu", "the networks' activation (vector flows)")
    flow_layers: int = setting(4, "couplings (or MADE layers, or Glow steps) per level", min=1, max=256)
    flow_levels: int = setting(2, "image flows: scales of the multi-scale architecture", min=1, max=8)
    flow_blocks: int = setting(1, "image flows: residual blocks per coupling network", min=0, max=32)
    logit_alpha: float = setting(0.05, "dequantized data y -> logit(alpha + (1 - 2 alpha) y)", gt=0, lt=0.5)
    dequantization: Literal["uniform", "variational"] = setting("uniform", "integer data: uniform or learned q(u|x)")
    dequantization_samples: int = setting(1, "variational: importance samples of the training bound", min=1, max=1024)

    def transform(self, dataset: Dataset, binarize: str = "auto") -> DataTransform:
        return density_transform(dataset, variational=self.dequantization == "variational")

    @property
    def default_iw_samples(self) -> int:
        return 64 if self.dequantization == "variational" else 0  # each sample is a pass of the whole flow

    def inert_settings(self) -> dict[str, str]:
        needs = "--dequantization variational (of integer data)"  # (continuous data: that too is refused)
        inert = {} if self.dequantization == "variational" else {"dequantization_samples": needs}
        if self.flow not in IMAGE_FLOWS:  # NICE and MAF are vector flows only
            image_flows = " or ".join(f"--flow {name}" for name in IMAGE_FLOWS)
            inert.update(flow_levels=image_flows, flow_blocks=image_flows)
        return inert

    def data_inert_settings(self, event_shape: tuple[int, ...], num_levels: int | None) -> dict[str, str]:
        """The image flow (RealNVP or Glow of images whose sides its levels divide) has coupling
        networks of its own, which read no activation; data that no number of levels fits (vectors, images a
        pixel high, Glow's images of odd sides) get the vector flow, which reads no flow_levels or flow_blocks;
        continuous data (a table's standardized columns, another run's latents) are not dequantized, and reach
        the flow without the logit of logit_alpha, and with no dequantization."""
        inert = {"activation": _VECTOR_FLOW} if self._image_flow_fits(event_shape) else {}
        if self.flow in IMAGE_FLOWS and not self._image_flow_fits(event_shape, levels=1):  # no number of levels fits
            needs = "images (C, H, W) of even sides" if self.flow == "glow" else "images (C, H, W) of sides 2 or more"
            inert.update(flow_levels=needs, flow_blocks=needs)
        if num_levels is None:  # (dgm report listed "dequantization: uniform" for a flow of two-moons' points)
            inert.update(logit_alpha="quantized data (integer levels)", dequantization="quantized data (integer levels)")
        return inert

    def partly_read_settings(self, event_shape: tuple[int, ...] | None = None) -> dict[str, PartlyRead]:
        """The image flow's coupling networks (and a variational dequantizer's) have hidden's first
        entry as their channels; a vector flow's networks read every entry."""
        parts = super().partly_read_settings(event_shape)
        if event_shape is not None and self._image_flow_fits(event_shape):
            parts["hidden"] = PartlyRead("first", f"the channels of the {self.flow} image flow's networks", _VECTOR_FLOW)
        return parts

    def describe(self) -> str:
        return f"a {self.flow} flow ({self.flow_layers} layers per level)"

    def training_objective(self) -> Objective:
        if self.dequantization == "variational":
            return DequantizationBound(self.dequantization_samples)
        return MaximumLikelihood()

    def data_notes(self, dataset: Dataset) -> list[str]:
        """Images whose sides the levels do not divide get the vector flow (``model_for``): said,
        since flow_levels and flow_blocks then go unread."""
        shape = tuple(dataset.event_shape)
        if self.flow not in IMAGE_FLOWS or len(shape) != 3 or min(shape[1:]) < 2 or self._image_flow_fits(shape):
            return []
        factor = 2 ** (self.flow_levels - (self.flow == "realnvp"))
        fits = self._image_flow_fits(shape, levels=1)  # (Glow's single level halves the sides: odd ones never fit)
        fix = "fewer --flow-levels keep the image flow" if fits else "no number of levels fits odd sides"
        return [
            f"the multi-scale {self.flow} flow's {self.flow_levels} levels need image sides divisible by {factor}; the "
            f"images of {dataset.name} are {shape[1]}x{shape[2]}: the vector {self.flow} flow over the "
            f"{math.prod(shape)} values is trained (flow_levels and flow_blocks unread; {fix})"
        ]

    def _image_flow_fits(self, event_shape: tuple[int, ...], levels: int | None = None) -> bool:
        """Whether the multi-scale image flow of ``levels`` levels (None: flow_levels) fits the data."""
        if self.flow not in IMAGE_FLOWS or len(event_shape) != 3 or min(event_shape[1:]) < 2:
            return False
        factor = 2 ** ((levels or self.flow_levels) - (self.flow == "realnvp"))
        return event_shape[1] % factor == 0 and event_shape[2] % factor == 0

    def model_for(self, data: DataSpec) -> GenerativeModel:
        """The multi-scale convolutional RealNVP or Glow for images whose sides the levels
        divide, else the vector version over the flattened data. Quantized data (data.num_levels
        set) arrive dequantized in [0, 1] and get the logit pre-processing."""
        bij: Bijection
        if self._image_flow_fits(data.event_shape):
            image = cast("tuple[int, int, int]", tuple(data.event_shape))  # (C, H, W): _image_flow_fits checked
            bij = IMAGE_FLOWS[self.flow](
                image, hidden=self.hidden[0], layers=self.flow_layers, levels=self.flow_levels,
                blocks=self.flow_blocks,
            )  # fmt: skip
            flatten = False
        else:
            dims = math.prod(data.event_shape)
            bij = vector_flow(self.flow, dims, self.hidden, self.flow_layers, self.activation, "flow", "these data have")
            flatten = True
        if data.num_levels is not None:
            bij = Compose([Logit(self.logit_alpha), bij])
        flow = FlowModel(bij, tuple(data.event_shape), flatten=flatten)
        if self.dequantization == "variational":
            if data.num_levels is None:
                raise ConfigError("variational dequantization needs integer data")
            return VariationallyDequantizedFlow(
                flow, LogitNormalDequantizer(data.event_shape[0], data.num_levels, self.hidden[0])
            )
        return flow

    @classmethod
    def from_v1(cls, flat: dict) -> dict:
        values = super().from_v1(flat)
        if "samples" in flat:
            values["dequantization_samples"] = flat["samples"]
        return values
