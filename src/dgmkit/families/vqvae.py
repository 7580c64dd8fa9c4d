"""The VQ-VAE family: a convolutional encoder to a grid of K discrete codes and a decoder back,
with the codebook kept alive by EMA updates, k-means initialisation and dead-code restarts."""

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Literal, cast

import torch
from torch import nn

from dgmkit.conditional.heads import LikelihoodHead
from dgmkit.data import Dataset, Split
from dgmkit.errors import ConfigError, plural
from dgmkit.families.base import DataSpec, FamilyConfig
from dgmkit.families.parts import LikelihoodSettings
from dgmkit.models import GenerativeModel
from dgmkit.models.vqvae import VQVAE
from dgmkit.models.vqvae2 import TwoLevelVQVAE
from dgmkit.nn.conv import DownsamplingEncoder, UpsamplingDecoder
from dgmkit.nn.quantize import VectorQuantizer
from dgmkit.objectives import Objective
from dgmkit.objectives.vq import VQObjective
from dgmkit.settings import setting

if TYPE_CHECKING:
    from dgmkit.config.run import Run

__all__ = ["VQVAEConfig"]

_ENCODE_BATCH = 1000


@dataclasses.dataclass
class VQVAEConfig(LikelihoodSettings, FamilyConfig):
    name = "vqvae"
    summary = "VQ-VAE: a grid of discrete codes (EMA codebook), bound under a uniform or learned code prior"
    # the second stage: a prior trained on this run's code grids (--codes-of), attached when used
    derived_data: ClassVar[str | None] = "codes"
    point_mass_posterior = True  # (the model's too: tests/test_registry.py checks the two agree)
    unused_settings: ClassVar[frozenset[str]] = frozenset({"table_input"})  # (conv networks: no table reaches them)
    inputs: ClassVar[dict[str, str]] = {
        "code-prior": "a run trained on this run's code grids (--codes-of), the prior p(z) of the bound and of sampling"
    }

    codes: int = setting(512, "K: codes in the codebook", min=2, max=65536)
    code_dim: int = setting(64, "D: dimension of each code", min=1, max=4096)
    vq_width: int = setting(64, "channels of the encoder and decoder", min=1, max=4096)
    downsample: int = setting(2, "halvings from the image to the code grid (2: 28x28 -> 7x7)", min=1, max=6)
    res_blocks: int = setting(2, "residual blocks in the encoder and in the decoder", min=0, max=64)
    commitment: float = setting(0.25, "beta: weight of the commitment loss", min=0, max=1e6)
    codebook_update: Literal["ema", "gradient"] = setting(
        "ema", "the codebook follows an EMA of its vectors, or the codebook loss"
    )
    vq_decay: float = setting(0.99, "ema: decay of the codebook's moving averages", gt=0, max=0.99999)
    kmeans_init: bool = setting(True, "start the codebook as k-means centres of the first batch")
    restart_dead: bool = setting(True, "ema: restart codes unused for long at random encoder outputs")
    vq_levels: int = setting(1, "1, or 2: VQ-VAE-2's top grid (half the resolution) above the bottom grid", min=1, max=2)

    def validate_optim(self, optim: object) -> None:
        if getattr(optim, "ema", 0):
            raise ConfigError(
                "--ema averages the networks' weights but not the codebook (itself a moving average of the encoder's "
                "outputs), so evaluation would pair an averaged encoder with the live codebook: leave it out for vqvae"
            )

    @property
    def default_iw_samples(self) -> int:
        return 1  # the posterior is a point mass: one draw is the bound

    def describe(self) -> str:
        return (
            f"a {'two-level VQ-VAE-2' if self.vq_levels == 2 else 'VQ-VAE'} ({self.codes} codes of dimension "
            f"{self.code_dim}, width {self.vq_width}, {plural(self.downsample, 'halving')}, "
            f"{self.codebook_update} codebook, {self.likelihood.capitalize()} likelihood)"
        )

    def training_objective(self) -> Objective:
        return VQObjective()

    @torch.no_grad()
    def make_derived_data(
        self, model: GenerativeModel, held_out: Callable[[torch.Tensor], torch.Tensor], data: Dataset, name: str
    ) -> Dataset:
        """The code grids (N, 1, h, w) with K levels of every split (each image as the run's model
        sees held-out data, ``held_out``, then its nearest codes), with the labels."""
        vq = cast(VQVAE, model)  # what build() makes
        k = vq.num_codes
        dtype = torch.uint8 if k <= 256 else torch.int32
        splits = {}
        for split in ("train", "valid", "test"):
            s = data.split(split)
            x = held_out(s.x)
            codes = torch.cat([vq.codes(b) for b in x.split(_ENCODE_BATCH)])
            splits[split] = Split(codes.unsqueeze(1).to(dtype), s.y)
        return Dataset(name, splits["train"], splits["valid"], splits["test"], num_levels=k)

    def attach(self, role: str, run: "Run", other: "Run", trained_on_mine: bool) -> None:
        """A code prior: an exact model of integer grids of the codes' shape and alphabet,
        trained on this run's codes as they are now."""
        if not trained_on_mine:
            raise ConfigError(
                f"{other.path} was not trained on the codes of {run.path} as it is now (it belongs to another run, or "
                f"this one was trained on since); train one with "
                f"`dgm train --model arm --codes-of {run.path} --likelihood categorical`"
            )
        data = other.record["data"]
        vq = cast(VQVAE, run.model)  # a run of this family
        if list(data["event_shape"]) != [1, *vq.code_shape] or data["num_levels"] != vq.num_codes:
            raise ConfigError(f"{other.path} models grids of another shape or alphabet than {run.path}'s codes")
        if data.get("transform") != "integers":
            raise ConfigError(
                f"{other.path} models its codes as {data.get('transform')} data, not as the integers they are; "
                "a code prior needs --likelihood categorical or logistic"
            )
        if other.model.estimate_kind != "exact" or not other.model.can_sample:
            raise ConfigError(
                f"{other.path} holds a {other.cfg.family} model: a code prior needs an exact log-likelihood and sampling"
            )
        run.model.code_prior = other.model

    def model_for(self, data: DataSpec) -> VQVAE:
        if len(data.event_shape) != 3:
            raise ConfigError(f"the VQ-VAE needs images (C, H, W), got shape {data.event_shape}")
        c, h, w = data.event_shape
        f = 2**self.downsample
        if h == 1:  # (a table's rows, 2-D points: 1 x D)
            raise ConfigError(f"the VQ-VAE's networks are convolutional: it needs images, not rows of {w} values")
        if h % f or w % f:
            raise ConfigError(
                f"with {plural(self.downsample, 'halving')}, the height and width must be divisible by {f}, got {h}x{w}"
            )
        head = self.head(data.num_levels)
        if self.vq_levels == 2:
            return self._build_two_levels(head, (c, h, w), f, data.num_levels)
        encoder = DownsamplingEncoder(c, self.code_dim, self.vq_width, self.downsample, self.res_blocks)
        decoder = UpsamplingDecoder(
            self.code_dim, c * head.params_per_pixel, self.vq_width, self.downsample, self.res_blocks
        )
        return VQVAE(
            encoder, self._quantizer(), decoder, head, (c, h, w), (h // f, w // f), self.input_scale(data.num_levels)
        )

    def inert_settings(self) -> dict[str, str]:
        inert = super().inert_settings()
        if self.codebook_update != "ema":
            inert.update(dict.fromkeys(("vq_decay", "restart_dead"), "--codebook-update ema"))
        return inert

    def _quantizer(self) -> VectorQuantizer:
        return VectorQuantizer(
            self.codes,
            self.code_dim,
            commitment=self.commitment,
            ema=self.codebook_update == "ema",
            decay=self.vq_decay,
            kmeans_init=self.kmeans_init,
            restart_dead=self.restart_dead,
        )

    def _build_two_levels(
        self, head: LikelihoodHead, event_shape: tuple[int, int, int], f: int, num_levels: int | None
    ) -> TwoLevelVQVAE:
        c, h, w = event_shape
        if (h // f) % 2 or (w // f) % 2:
            raise ConfigError(
                f"two levels need a bottom grid with even sides; {h}x{w} with {plural(self.downsample, 'halving')} "
                f"gives {h // f}x{w // f}"
            )
        d, width, blocks = self.code_dim, self.vq_width, self.res_blocks
        return TwoLevelVQVAE(
            encoder=DownsamplingEncoder(c, width, width, self.downsample, blocks),
            top_encoder=DownsamplingEncoder(width, d, width, 1, blocks),
            top_decoder=UpsamplingDecoder(d, width, width, 1, blocks),
            merge=nn.Conv2d(2 * width, d, 1),
            top_up=nn.ConvTranspose2d(d, d, 4, stride=2, padding=1),
            top_quantizer=self._quantizer(),
            quantizer=self._quantizer(),
            decoder=UpsamplingDecoder(2 * d, c * head.params_per_pixel, width, self.downsample, blocks),
            head=head,
            event_shape=event_shape,
            bottom_shape=(h // f, w // f),
            input_scale=self.input_scale(num_levels),
        )
