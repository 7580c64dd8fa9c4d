"""The hierarchical VAE family: several Gaussian stochastic layers with a bottom-up, top-down
(Tomczak & Welling's HVAE) or ladder posterior, any prior on the top layer, trained by the ELBO
with one KL term per layer (beta, KL warm-up and free bits per layer) or the IWAE bound."""

import dataclasses
import math
from typing import Literal

import torch
from torch import nn

from dgmkit.conditional import Decoder
from dgmkit.errors import ConfigError
from dgmkit.families.base import FamilyConfig
from dgmkit.families.parts import (
    KLWeightSettings,
    LikelihoodSettings,
    NetworkSettings,
    PriorSettings,
    decoder_net,
    encoder_net,
)
from dgmkit.families.registry import register_family
from dgmkit.models.hvae import HierarchicalVAE
from dgmkit.nn import MLP, GatedMLP
from dgmkit.nn.gated import GatedBranches, GatedDense
from dgmkit.nn.mlp import activation
from dgmkit.objectives import IWAE, Objective
from dgmkit.objectives.hierarchical import HierarchicalELBO
from dgmkit.priors.conditional import GaussianLayerPrior
from dgmkit.settings import setting

__all__ = ["HVAEConfig"]


@register_family
@dataclasses.dataclass
class HVAEConfig(KLWeightSettings, PriorSettings, NetworkSettings, LikelihoodSettings, FamilyConfig):
    name = "hvae"
    summary = "hierarchical VAE: stochastic layers z_1..z_L, bottom-up, top-down or ladder posterior"

    latent_sizes: list[int] = setting(
        [40, 40], "dimensions of each stochastic layer, from z_1 (next to x) to the top", min=1, max=4096
    )
    posterior: Literal["top-down", "bottom-up", "ladder"] = setting(
        "top-down", "q(z|x): top-down given x (Tomczak & Welling), the bottom-up stack, or the Ladder VAE's merge"
    )
    decoder_input: Literal["auto", "bottom", "all"] = setting(
        "auto", "what p(x|z) sees: z_1, or every layer (auto: every layer for top-down, z_1 otherwise)"
    )
    objective: Literal["elbo", "iwae"] = setting("elbo", "the training objective")
    iw_k: int = setting(5, "iwae: importance samples per datapoint", min=1, max=5000)
    free_bits: float = setting(0.0, "elbo: floor (nats) on each layer's batch-mean KL", min=0, max=1e3)

    def validate(self) -> None:
        if self.prior == "vampprior" and self.posterior == "bottom-up":
            raise ConfigError("the VampPrior is made of q(z_L | x): it needs a top-down or ladder posterior")
        if self.free_bits and (self.objective != "elbo" or self.posterior == "bottom-up"):
            raise ConfigError(
                "free_bits (per layer) needs the elbo objective and a top-down or ladder posterior, whose layer "
                "terms are KL divergences (a bottom-up layer's term is a one-draw estimate that can be negative)"
            )

    @property
    def default_iw_samples(self) -> int:
        return 5000

    @property
    def decoder_sees(self) -> str:
        if self.decoder_input != "auto":
            return self.decoder_input
        return "all" if self.posterior == "top-down" else "bottom"

    def describe(self) -> str:
        return (
            f"a hierarchical VAE ({len(self.latent_sizes)} layers {self.latent_sizes}, {self.posterior} posterior, "
            f"{self.hidden} {self.encoder} networks, {self.prior} top prior, {self.likelihood.capitalize()} likelihood)"
        )

    def training_objective(self) -> Objective:
        if self.objective == "iwae":
            return IWAE(k=self.iw_k)
        return HierarchicalELBO(free_bits=self.free_bits)

    def _features(self, event_shape: tuple[int, ...]) -> nn.Module:
        """x -> h of width hidden[-1], the deterministic encoder every posterior starts from
        (gated: the reference HVAE's gated dense layers, without an output layer)."""
        dims, act = math.prod(event_shape), self.activation
        if self._reference_hvae:
            return nn.Flatten()  # every posterior network reads x itself
        if self.encoder == "gated":
            sizes = [dims, *self.hidden]
            return nn.Sequential(nn.Flatten(), *[GatedDense(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
        if self.encoder == "mlp":
            return nn.Sequential(nn.Flatten(), MLP(dims, self.hidden[:-1], self.hidden[-1], act), activation(act))
        return nn.Sequential(encoder_net(self, event_shape, self.hidden[-1]), activation(act))

    @property
    def _reference_hvae(self) -> bool:
        """Gated networks with a top-down posterior: the reference two-level HVAE's networks
        (Tomczak & Welling 2018): q(z_L | x) a gated MLP on x; q(z_l | x, z_{l+1}) and
        p(x | z_1, ..., z_L) one gated branch per input, joined by a gated layer."""
        return self.encoder == "gated" and self.posterior == "top-down"

    def _net(self, i: int, o: int) -> nn.Module:
        """A layer's network (posterior or prior): gated or plain, with the hidden sizes."""
        return GatedMLP(i, self.hidden, o) if self.encoder == "gated" else MLP(i, self.hidden, o, self.activation)

    def build(
        self, event_shape: tuple[int, ...], num_levels: int | None, init_data: torch.Tensor | None = None, seed: int = 0
    ) -> HierarchicalVAE:
        self.check_networks(event_shape)
        sizes, width, act = self.latent_sizes, self.hidden[-1], self.activation
        head = self.head(num_levels)
        features = self._features(event_shape)
        top = len(sizes) - 1
        ladder = []
        if self.posterior == "bottom-up":
            q_nets = [nn.Linear(width, 2 * sizes[0])]
            q_nets += [self._net(sizes[i - 1], 2 * sizes[i]) for i in range(1, len(sizes))]
        elif self._reference_hvae:
            dims = math.prod(event_shape)  # the features are x itself
            q_nets = [GatedBranches([dims, sizes[i + 1]], self.hidden[-1], 2 * sizes[i]) for i in range(top)]
            q_nets.append(GatedMLP(dims, self.hidden, 2 * sizes[top]))
        elif self.posterior == "top-down":
            q_nets = [self._net(width + sizes[i + 1], 2 * sizes[i]) for i in range(top)]
            q_nets.append(nn.Linear(width, 2 * sizes[top]))
        else:
            ladder = [nn.Sequential(MLP(width, [width], width, act), activation(act)) for _ in range(top)]
            q_nets = [nn.Linear(width, 2 * m) for m in sizes]
        layer_priors = [GaussianLayerPrior(self._net(sizes[i + 1], 2 * sizes[i]), sizes[i]) for i in range(top)]
        decoder_in = sum(sizes) if self.decoder_sees == "all" else sizes[0]
        if self.decoder_sees == "all" and (self.decoder or self.encoder) == "gated" and len(sizes) > 1:
            out = math.prod(event_shape) * head.params_per_pixel
            decoder = Decoder(GatedBranches(sizes, self.hidden[-1], out), head, event_shape)
        else:
            decoder = Decoder(decoder_net(self, event_shape, decoder_in, head.params_per_pixel), head, event_shape)
        scale = self.input_scale(num_levels)
        prior = self.build_prior(sizes[top], self.hidden, act, event_shape, scale, init_data, seed)
        return HierarchicalVAE(
            sizes,
            self.posterior,
            features,
            q_nets,
            layer_priors,
            prior,
            decoder,
            decoder_input=self.decoder_sees,
            ladder_nets=ladder,
            input_scale=scale,
        )
