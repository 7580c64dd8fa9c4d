"""The diffusion family: variational diffusion (VDM) on quantized images, with DDPM as a special
case, and absorbing-state (masked) diffusion; both are scored by their variational bound on the
integers, estimated over sampled times (``models.diffusion``)."""

import dataclasses
import math
from typing import Literal

import torch

from dgmkit.data import Dataset, DataTransform
from dgmkit.errors import ConfigError
from dgmkit.families.base import DataSpec, FamilyConfig
from dgmkit.models import SCHEDULES, GaussianDiffusion, GenerativeModel, MaskedDiffusion
from dgmkit.nn.unet import UNet
from dgmkit.objectives import DiffusionBound, Objective
from dgmkit.settings import setting

__all__ = ["DiffusionConfig"]

_FLOAT32_EPS = float(torch.finfo(torch.float32).eps)  # float32 holds two ends this far apart, relatively, as two values
_FLOAT32_TINY = float(torch.finfo(torch.float32).tiny)  # below it, float32's spacing is fixed (subnormals), then none


def _fourier_exponents(levels: int) -> list[int]:
    """VDM's exponents n (their code: Base2FourierFeatures(start=6, stop=8) for 256 levels),
    whose features sin(2^n 2 pi z) have periods of two bins and of one bin of L levels in
    [-1, 1] (bins of width 2 / L: periods 4 / L and 2 / L, so n = log2(L) - 2 and - 1, the
    nearest integers where L is not a power of two: 2 and 3 for 17 levels)."""
    top = round(math.log2(levels))
    return [top - 2, top - 1]


def _fourier_exponents_before_format_4(levels: int) -> list[int]:
    """The exponents of runs written before run format 4, one octave above VDM's (periods of
    one bin and half a bin): what those runs were trained with."""
    top = math.ceil(math.log2(levels))
    return [top - 1, top]


@dataclasses.dataclass
class DiffusionConfig(FamilyConfig):
    name = "diffusion"
    time_sampled = True
    summary = "diffusion model (VDM, DDPM, masked): a variational bound over sampled times"

    process: Literal["gaussian", "masked"] = setting(
        "gaussian", "gaussian: VDM/DDPM on the levels scaled to [-1, 1]; masked: absorbing-state diffusion"
    )
    schedule: Literal["learned", "linear", "ddpm"] = setting(
        "learned",
        "gaussian: learned (VDM's monotone network), linear (log-SNR linear in t), ddpm (Ho et al.'s linear betas)",
    )
    gamma_min: float = setting(
        -13.3, "learned, linear: log(sigma^2 / alpha^2) at t = 0 (learned: its start)", min=-30, max=30
    )
    gamma_max: float = setting(5.0, "learned, linear: log(sigma^2 / alpha^2) at t = 1 (learned: its start)", min=-30, max=30)
    diffusion_steps: int = setting(0, "T discrete time steps, or 0 for continuous time", min=0, max=100_000)
    loss: Literal["vlb", "simple"] = setting(
        "vlb", "vlb: the bound itself; simple: DDPM's unweighted eps error (fixed schedules; the bound is still monitored)"
    )
    masked_training: Literal["times", "counts"] = setting(
        "times",
        "masked, continuous time: the training bound's estimate per sampled time t ((1/t) sum over the masked "
        "pixels), or per sampled count m of masked pixels (D/m times their sum: dgm eval's form, of finite variance)",
    )
    unet_channels: list[int] = setting(
        [32, 64, 64], "U-Net widths, one per resolution (the image halves between them)", min=1, max=4096
    )
    unet_blocks: int = setting(1, "U-Net residual blocks per resolution", min=1, max=16)
    attention: bool = setting(True, "self-attention at the U-Net's lowest resolution and in its middle")
    dropout: float = setting(0.0, "dropout in the U-Net's residual blocks", min=0, lt=1)
    fourier: bool = setting(
        True,
        "gaussian: Fourier features sin/cos(2^n 2 pi z) of the input at the data's resolution (VDM's: periods of "
        "two bins and one bin, n = log2(L) - 2 and - 1 rounded for L levels, 6 and 7 for 8-bit data)",
    )
    fourier_exponents: list[int] | None = setting(
        None,
        "gaussian, fourier: other exponents n than VDM's (runs written before run format 4 hold theirs)",
        min=-16,
        max=32,
    )
    time_samples: int = setting(4, "times per datapoint that dgm eval averages the bound over (stratified)", min=1, max=4096)

    def validate(self) -> None:
        defaults = DiffusionConfig.__dataclass_fields__
        if self.process == "masked":  # settings of the gaussian process only
            for key in ("schedule", "gamma_min", "gamma_max"):
                if getattr(self, key) != defaults[key].default:
                    raise ConfigError(f"{key} is a setting of gaussian diffusion; masked diffusion needs it left out")
        if self.masked_training == "counts" and (self.process != "masked" or self.diffusion_steps):
            raise ConfigError(
                "masked_training counts is the continuous-time masked bound's form: it needs --process masked and "
                "--diffusion-steps 0"
            )
        if self.schedule == "ddpm":
            for key in ("gamma_min", "gamma_max"):
                if getattr(self, key) != defaults[key].default:
                    raise ConfigError(f"{key} is a setting of the learned and linear schedules; ddpm's betas fix its ends")
            if self.diffusion_steps == 1:  # (its betas run from step 1 of T to step T: one step has no span)
                raise ConfigError(
                    "schedule ddpm with diffusion_steps 1: DDPM's betas rise over T >= 2 steps; give 2 or more, or 0 "
                    "(continuous time, the span of DDPM's 1000 steps)"
                )
        if self.loss == "simple" and (self.process != "gaussian" or self.schedule == "learned"):
            raise ConfigError(
                "loss simple (DDPM's eps error) needs gaussian diffusion with a fixed schedule (--schedule ddpm or "
                "linear): it gives a learned schedule no gradient"
            )
        if self.fourier_exponents is not None and (self.process != "gaussian" or not self.fourier):
            raise ConfigError("fourier_exponents sets the Fourier features of gaussian diffusion (--fourier)")
        if self.process == "gaussian" and self.schedule != "ddpm":
            if self.gamma_min >= self.gamma_max:
                raise ConfigError(f"gamma_min ({self.gamma_min}) must be below gamma_max ({self.gamma_max})")
            # (-13.3000001 and -13.3 passed here and met as one float32 value in the model: an internal error)
            # (ends about 0: -1e-46 and 1e-46 both became 0.0, two ends of no spacing; the spacing there is that at tiny)
            need = 2 * _FLOAT32_EPS * max(abs(self.gamma_min), abs(self.gamma_max), _FLOAT32_TINY)
            if self.gamma_max - self.gamma_min < need:
                raise ConfigError(
                    f"gamma_min ({self.gamma_min}) and gamma_max ({self.gamma_max}) are too close for the schedule's "
                    f"float32 parameters, which would hold them as one value: give ends at least {need:.3g} apart"
                )

    def inert_settings(self) -> dict[str, str]:
        """The settings of the other process, schedule or time that these choices leave unread (``validate``
        refuses another value than the default; given at the default, they are refused here)."""
        inert: dict[str, str] = {}
        if self.process == "masked":
            inert.update(dict.fromkeys(("schedule", "gamma_min", "gamma_max", "fourier", "loss"), "--process gaussian"))
        elif self.schedule == "ddpm":  # (its betas fix the ends)
            inert.update(dict.fromkeys(("gamma_min", "gamma_max"), "--schedule learned or linear"))
        if self.process != "masked" or self.diffusion_steps:
            inert["masked_training"] = "--process masked and --diffusion-steps 0"
        return inert

    def _fourier(self, levels: int) -> list[int]:
        return self.fourier_exponents if self.fourier_exponents is not None else _fourier_exponents(levels)

    @classmethod
    def from_format_3(cls, keys: dict, data: dict) -> dict:
        """Runs of format 3 and before were trained with Fourier features one octave above VDM's."""
        levels = data.get("num_levels")
        gaussian = keys.get("process", "gaussian") == "gaussian" and keys.get("fourier", True) is True
        if gaussian and "fourier_exponents" not in keys and isinstance(levels, int) and levels >= 2:
            return {**keys, "fourier_exponents": _fourier_exponents_before_format_4(levels)}
        return keys

    def transform(self, dataset: Dataset, binarize: str = "auto") -> DataTransform:
        if dataset.num_levels is None:
            raise ConfigError(
                f"{dataset.name}: diffusion models here score quantized data (integer levels); got continuous data"
            )
        if binarize == "dynamic":
            raise ConfigError("--binarize dynamic: a diffusion model scores the data's own levels")
        return DataTransform("integers", dataset.num_levels)

    @property
    def default_iw_samples(self) -> int:
        return self.time_samples

    def describe(self) -> str:
        time = f"{self.diffusion_steps} steps" if self.diffusion_steps else "continuous time"
        if self.process == "masked":
            return f"a masked (absorbing-state) diffusion model ({time})"
        return f"a gaussian diffusion model ({self.schedule} schedule, {time}, {self.loss} loss)"

    def training_objective(self) -> Objective:
        return DiffusionBound(self.loss)

    def model_for(self, data: DataSpec) -> GenerativeModel:
        if len(data.event_shape) != 3:
            raise ConfigError(
                f"diffusion models here are of images (C, H, W); got events of shape {tuple(data.event_shape)}"
            )
        if data.num_levels is None:
            raise ConfigError("diffusion models here score quantized data (integer levels)")
        c, h, w = data.event_shape
        gaussian = self.process == "gaussian"
        try:
            net = UNet(
                c if gaussian else c * (data.num_levels + 1),
                c if gaussian else c * data.num_levels,
                self.unet_channels,
                blocks=self.unet_blocks,
                attention=self.attention,
                dropout=self.dropout,
                fourier=self._fourier(data.num_levels) if gaussian and self.fourier else [],
                image_size=(h, w),
            )
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if not gaussian:
            return MaskedDiffusion(
                net, data.event_shape, data.num_levels, self.diffusion_steps, self.masked_training == "counts"
            )
        if self.schedule == "ddpm":
            schedule = SCHEDULES["ddpm"](self.diffusion_steps or 1000)
        else:
            schedule = SCHEDULES[self.schedule](self.gamma_min, self.gamma_max)
        return GaussianDiffusion(net, schedule, data.event_shape, data.num_levels, self.diffusion_steps)
