"""The hierarchical VAE family: several Gaussian stochastic layers with a bottom-up, top-down
(Tomczak & Welling's HVAE) or ladder posterior, any prior on the top layer, trained by the ELBO
with one KL term per layer (beta, KL warm-up and free bits per layer) or the IWAE bound."""

import dataclasses
import math
from typing import ClassVar, Literal

from torch import nn

from dgmkit.conditional import Decoder
from dgmkit.errors import ConfigError, plural
from dgmkit.families.base import DataSpec, FamilyConfig, PartlyRead
from dgmkit.families.parts import ImportanceSampledEval, VAESettings, decoder_net, encoder_net, flat_input
from dgmkit.models.hvae import HierarchicalVAE
from dgmkit.models.vdvae import DeepTopDownVAE
from dgmkit.nn import MLP, GatedMLP
from dgmkit.nn.gated import GatedBranches, GatedConv2d, GatedDense, ImageBranch
from dgmkit.nn.mlp import activation
from dgmkit.nn.scale import ScaleKind, scale_map
from dgmkit.objectives import IWAE, Objective
from dgmkit.objectives.hierarchical import HierarchicalELBO
from dgmkit.priors.conditional import GaussianLayerPrior
from dgmkit.settings import setting

__all__ = ["HVAEConfig", "StackSettings"]


@dataclasses.dataclass
class StackSettings(VAESettings, ImportanceSampledEval):
    """A stack of Gaussian stochastic layers z_1..z_L: its settings, posterior and prior networks
    and decoder (the hierarchical VAE's, and the PixelVAE's with an autoregressive decoder).
    ``stack_class`` is the model built; ``_decoder`` makes p(x | z)."""

    stack_class: ClassVar[type[HierarchicalVAE]] = HierarchicalVAE

    latent_sizes: list[int] = setting(
        [40, 40], "dimensions of each stochastic layer, from z_1 (next to x) to the top", min=1, max=4096
    )
    posterior: Literal["top-down", "bottom-up", "ladder", "residual"] = setting(
        "top-down",
        "q(z|x): top-down given x (Tomczak & Welling), the bottom-up stack, the Ladder VAE's merge, or the "
        "very deep residual top-down VAE on images (VDVAE/NVAE style; its layers are set by the res_* settings)",
    )
    decoder_input: Literal["auto", "bottom", "all"] = setting(
        "auto", "what p(x|z) sees: z_1, or every layer (auto: every layer for top-down, z_1 otherwise)"
    )
    objective: Literal["elbo", "iwae"] = setting("elbo", "the training objective")
    iw_k: int = setting(
        5, "iwae: importance samples K per datapoint in the training bound (dgm eval's k is --iw-samples)", min=1, max=5000
    )
    free_bits: float = setting(0.0, "elbo: floor (nats) on each layer's batch-mean KL", min=0, max=1e3)
    architecture: Literal["default", "conv-hvae"] = setting(
        "default",
        "conv-hvae: Tomczak & Welling's convHVAE networks (gated convolutions on x in q(z_L|x), q(z_l|x,z_l+1) and "
        "p(x|z), gated dense layers of hidden[-1] units elsewhere; top-down posterior)",
    )
    latent_scale: ScaleKind = setting(
        "softplus",
        "how the latent layers' Gaussian standard deviations come from the networks: softplus(raw) + 0.001, or "
        "clipped-log-variance, raw as log sigma^2 clipped to [-6, 2] (the VampPrior reference code's)",
    )

    def validate(self) -> None:
        own_networks = self.architecture == "conv-hvae" or self.posterior == "residual"
        if own_networks and self.conv_channels != [32, 64]:
            raise ConfigError("conv_channels sets --encoder conv networks; conv-hvae and the residual model have their own")
        if self.posterior == "residual" and self.init != "default":
            raise ConfigError("init sets the dense layers' weights; the residual model has none (it is convolutional)")
        if self.posterior == "residual" and self.latent_scale != "softplus":
            raise ConfigError("latent_scale sets the dense stacks' Gaussian layers; the residual model has its own")
        if self.architecture == "conv-hvae" and (self.posterior != "top-down" or self.decoder_sees != "all"):
            raise ConfigError("architecture = conv-hvae is a top-down posterior whose decoder sees every layer")
        if self.prior == "vampprior" and self.posterior == "bottom-up" and len(self.latent_sizes) > 1:
            raise ConfigError(
                "the VampPrior is made of q(z_L | x): it needs a top-down or ladder posterior (or a single layer)"
            )
        if self.free_bits and (self.objective != "elbo" or self._one_draw_layer_terms):
            raise ConfigError(
                "free_bits (per layer) needs the elbo objective and a top-down, ladder or residual posterior, whose layer "
                "terms are KL divergences (a bottom-up layer's term below the top is a one-draw estimate that can "
                "be negative)"
            )

    @property
    def _one_draw_layer_terms(self) -> bool:
        """Whether a layer's ELBO term is a one-draw estimate that can be negative, not a KL: those
        below the top of a bottom-up posterior of two or more layers (one layer: the top's, a KL)."""
        return self.posterior == "bottom-up" and len(self.latent_sizes) > 1

    def inert_settings(self) -> dict[str, str]:
        inert = {**super().inert_settings(), **self.prior_inert_settings()}
        if self.objective != "iwae":
            inert["iw_k"] = "--objective iwae"
        if self.objective != "elbo" or self._one_draw_layer_terms:  # (validate refuses another value)
            inert["free_bits"] = "--objective elbo with another posterior than bottom-up (of two or more layers)"
        elif self.beta == 0:  # (the floor is on the KL term, which beta 0 weighs by 0)
            inert["free_bits"] = "--beta above 0"
        if len(self.latent_sizes) == 1:  # (z_1 is every layer: the decoder sees the same whatever it says)
            inert["decoder_input"] = "--latent-sizes of two or more layers"
        if self.architecture == "conv-hvae":  # (its networks are its own: gated convolutions and gated dense layers)
            inert.update(dict.fromkeys(("encoder", "decoder"), "--architecture default"))
            inert["conv_channels"] = "--architecture default with --encoder conv or --decoder conv"
        return inert

    def activation_needs(self) -> str | None:
        """conv-hvae's networks are gated; a ladder posterior's merge networks (of two or more layers)
        and a flow prior's read the activation beside the encoder and decoder networks."""
        if self.posterior == "residual" or self.prior == "flow":  # (the residual model's: the hvae family's own rule)
            return None
        if self.architecture == "conv-hvae":
            return "--prior flow, or --architecture default with mlp or conv networks"
        needs = super().activation_needs()
        ladder = self.posterior == "ladder" and len(self.latent_sizes) > 1
        return None if needs is None or ladder else f"{needs}, --posterior ladder (of two or more layers) or --prior flow"

    def hidden_read(self) -> PartlyRead | None:
        """With one stochastic layer and no flow prior, no network between layers reads hidden: conv
        networks read its first entry (their dense layer) and its last (the encoder's output width),
        conv-hvae's networks its last (their width)."""
        if self.posterior == "residual" or self.prior == "flow" or len(self.latent_sizes) > 1:
            return None
        more = "two or more --latent-sizes or --prior flow"
        if self.architecture == "conv-hvae":
            return PartlyRead("last", "the width of the conv-hvae networks' dense layers", more)
        part = super().hidden_read()
        if part is None:
            return None
        return PartlyRead("ends", f"{part.what} and the width of the encoder's output", f"{part.needs}, {more}")

    @property
    def networks(self) -> str:
        """What the networks are, as ``describe`` says: conv-hvae's, or the encoder's kind."""
        return "conv-hvae" if self.architecture == "conv-hvae" else self.encoder

    @property
    def decoder_sees(self) -> str:
        if self.decoder_input != "auto":
            return self.decoder_input
        return "all" if self.posterior == "top-down" else "bottom"

    def describe(self) -> str:
        return (
            f"a hierarchical VAE ({plural(len(self.latent_sizes), 'layer')} "
            f"{self.latent_sizes}, {self.posterior} posterior, "
            f"{self.hidden} {self.networks} networks, {self.prior} top prior, {self.likelihood.capitalize()} likelihood)"
        )

    def training_objective(self) -> Objective:
        if self.objective == "iwae":
            return IWAE(k=self.iw_k)
        return HierarchicalELBO(free_bits=self.free_bits)

    def _features(self, event_shape: tuple[int, ...]) -> nn.Module:
        """x -> h of width hidden[-1], the deterministic encoder every posterior starts from
        (gated: the reference HVAE's gated dense layers, without an output layer)."""
        (flat, dims), act = flat_input(self, event_shape), self.activation
        if self._reference_hvae:
            return flat  # every posterior network reads x itself
        if self.encoder == "gated":
            sizes = [dims, *self.hidden]
            return nn.Sequential(flat, *[GatedDense(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
        if self.encoder == "mlp":
            h = self._hidden_at(0)
            return nn.Sequential(flat, MLP(dims, h[:-1], h[-1], act), activation(act))
        return nn.Sequential(encoder_net(self, event_shape, self.hidden[-1]), activation(act))

    @property
    def _reference_hvae(self) -> bool:
        """Gated networks with a top-down posterior: the reference two-level HVAE's networks
        (Tomczak & Welling 2018): q(z_L | x) a gated MLP on x; q(z_l | x, z_{l+1}) and
        p(x | z_1, ..., z_L) one gated branch per input, joined by a gated layer."""
        return self.encoder == "gated" and self.posterior == "top-down"

    def _net(self, i: int, o: int, hidden: list[int] | None = None) -> nn.Module:
        """A layer's network (posterior or prior): gated or plain, with the hidden sizes (``hidden``,
        default the setting's)."""
        hidden = self.hidden if hidden is None else hidden
        return GatedMLP(i, hidden, o) if self.encoder == "gated" else MLP(i, hidden, o, self.activation)

    def _layer_widths(self) -> list[int]:
        """The width of the networks between each stochastic layer and the one below it (x below
        z_1), where they differ from layer to layer (the hvae family's ``layer_hidden``); empty:
        every network has the hidden sizes."""
        return []

    def _hidden_at(self, layer: int) -> list[int]:
        """The hidden sizes of the networks between z_{layer+1} and the layer below it (layer 0:
        between x and z_1, layer 1: between z_1 and z_2, ...)."""
        widths = self._layer_widths()
        return [widths[layer]] * len(self.hidden) if widths else self.hidden

    def _decoder(self, event_shape: tuple[int, ...], num_levels: int | None, scale: float) -> Decoder:
        """p(x | z) for the layers the decoder sees; ``scale``: the model's input scale."""
        head = self.head(num_levels)
        return Decoder(self._decoder_net(event_shape, head.params_per_pixel), head, event_shape)

    def _decoder_net(self, event_shape: tuple[int, ...], per_pixel: int) -> nn.Module:
        """The layers the decoder sees -> ``per_pixel`` numbers a pixel (flat, or (C * per_pixel, H, W))."""
        sizes = self.latent_sizes
        if self.architecture == "conv-hvae":
            return _conv_hvae_decoder_net(event_shape, sizes, self.hidden[-1], per_pixel)
        if self.decoder_sees == "all" and (self.decoder or self.encoder) == "gated" and len(sizes) > 1:
            return GatedBranches(sizes, self.hidden[-1], math.prod(event_shape) * per_pixel)
        decoder_in = sum(sizes) if self.decoder_sees == "all" else sizes[0]
        if self._layer_widths():  # mlp networks (validated): p(x | z_1) as wide as q(z_1 | x)
            return MLP(decoder_in, self._hidden_at(0), math.prod(event_shape) * per_pixel, self.activation)
        return decoder_net(self, event_shape, decoder_in, per_pixel)

    def _scale(self) -> nn.Module:
        """The Gaussian layers' map from a raw network output to a standard deviation."""
        return scale_map(self.latent_scale)

    def _build_stack(self, data: DataSpec) -> HierarchicalVAE:
        if self.architecture == "conv-hvae":
            return self._build_conv_hvae(data)
        self.check_networks(data.event_shape)
        sizes, width, act = self.latent_sizes, self._hidden_at(0)[-1], self.activation
        features = self._features(data.event_shape)
        top = len(sizes) - 1
        ladder = []
        if self.posterior == "bottom-up":
            q_nets: list[nn.Module] = [nn.Linear(width, 2 * sizes[0])]
            q_nets += [self._net(sizes[i - 1], 2 * sizes[i], self._hidden_at(i)) for i in range(1, len(sizes))]
        elif self._reference_hvae:
            dims = flat_input(self, data.event_shape)[1]  # the features are x itself
            q_nets = [GatedBranches([dims, sizes[i + 1]], self.hidden[-1], 2 * sizes[i]) for i in range(top)]
            q_nets.append(GatedMLP(dims, self.hidden, 2 * sizes[top]))
        elif self.posterior == "top-down":
            q_nets = [self._net(width + sizes[i + 1], 2 * sizes[i]) for i in range(top)]
            q_nets.append(nn.Linear(width, 2 * sizes[top]))
        else:
            ladder = [nn.Sequential(MLP(width, [width], width, act), activation(act)) for _ in range(top)]
            q_nets = [nn.Linear(width, 2 * m) for m in sizes]
        prior_nets = [self._net(sizes[i + 1], 2 * sizes[i], self._hidden_at(i + 1)) for i in range(top)]
        layer_priors = [GaussianLayerPrior(net, sizes[i], scale_map=self._scale()) for i, net in enumerate(prior_nets)]
        scale = self.input_scale(data.num_levels)
        decoder = self._decoder(data.event_shape, data.num_levels, scale)
        prior = self.build_prior(sizes[top], self.hidden, act, scale, data)
        return self.stack_class(
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
            scale_map=self._scale(),
        )

    def _build_conv_hvae(self, data: DataSpec) -> HierarchicalVAE:
        """Tomczak & Welling's convHVAE (reference code ``convHVAE_2level``): q(z_L | x) a gated
        conv stack (kernels 7, 3/2, 5, 3/2, 3 to 6 channels at a quarter of the size) and an affine
        layer; q(z_l | x, z_{l+1}) another conv stack (kernels 3) and a gated layer on z_{l+1},
        joined by a gated layer; p(z_l | z_{l+1}) gated dense layers; p(x | z) a gated layer per
        layer, a gated layer to the image size, four gated 3x3 convolutions of 64 channels and a
        1x1 convolution."""
        if len(data.event_shape) != 3 or data.event_shape[1] % 4 or data.event_shape[2] % 4:
            raise ConfigError(f"conv-hvae needs images whose sides divide by 4, got shape {data.event_shape}")
        c, hgt, wid = data.event_shape
        dims, width, sizes = c * hgt * wid, self.hidden[-1], self.latent_sizes
        h_size = 6 * (hgt // 4) * (wid // 4)
        top = len(sizes) - 1

        def stack(kernels: list[tuple[int, int, int, int]]) -> ImageBranch:
            chans, layers = [c, 32, 32, 64, 64, 6], []
            for (k, st, pad, _), a, b in zip(kernels, chans[:-1], chans[1:]):
                layers.append(GatedConv2d(a, b, k, st, pad))
            return ImageBranch(nn.Sequential(*layers), data.event_shape, h_size)

        top_stack = [(7, 1, 3, 0), (3, 2, 1, 0), (5, 1, 2, 0), (3, 2, 1, 0), (3, 1, 1, 0)]
        small = [(3, 1, 1, 0), (3, 2, 1, 0), (3, 1, 1, 0), (3, 2, 1, 0), (3, 1, 1, 0)]
        q_nets: list[nn.Module] = [
            GatedBranches(
                [dims, sizes[i + 1]], width, 2 * sizes[i], branches=[stack(small), GatedDense(sizes[i + 1], h_size)]
            )
            for i in range(top)
        ]
        q_nets.append(nn.Sequential(stack(top_stack), nn.Linear(h_size, 2 * sizes[top])))
        layer_priors = [
            GaussianLayerPrior(GatedMLP(sizes[i + 1], self.hidden, 2 * sizes[i]), sizes[i], scale_map=self._scale())
            for i in range(top)
        ]
        scale = self.input_scale(data.num_levels)
        decoder = self._decoder(data.event_shape, data.num_levels, scale)
        prior = self.build_prior(sizes[top], self.hidden, self.activation, scale, data)
        return self.stack_class(
            sizes,
            "top-down",
            nn.Flatten(),
            q_nets,
            layer_priors,
            prior,
            decoder,
            decoder_input="all",
            input_scale=scale,
            scale_map=self._scale(),
        )


def _conv_hvae_decoder_net(event_shape: tuple[int, ...], sizes: list[int], width: int, per_pixel: int) -> nn.Module:
    """convHVAE's p(x | z_1, ..., z_L) network: a gated layer of ``width`` units per layer, a gated
    layer to the image size, four gated 3x3 convolutions of 64 channels and a 1x1 convolution to
    ``per_pixel`` numbers a pixel."""
    c, hgt, wid = event_shape
    dims = c * hgt * wid
    convs = [GatedConv2d(c, 64, 3, 1, 1), *[GatedConv2d(64, 64, 3, 1, 1) for _ in range(3)]]
    out = nn.Sequential(nn.Unflatten(-1, (c, hgt, wid)), *convs, nn.Conv2d(64, c * per_pixel, 1))
    branches = [GatedDense(m, width) for m in sizes]
    return GatedBranches(sizes, dims, dims * per_pixel, branches=branches, out=out)


@dataclasses.dataclass
class HVAEConfig(StackSettings, FamilyConfig):
    name = "hvae"
    summary = "hierarchical VAE: stochastic layers z_1..z_L, bottom-up, top-down or ladder posterior"

    res_resolutions: list[int] = setting(
        [7, 14], "residual: latent resolutions, lowest first, each twice the one before", min=1, max=1024
    )
    res_layers: list[int] = setting([8, 8], "residual: latent layers at each resolution", min=1, max=256)
    res_width: int = setting(64, "residual: channels of the top-down state and bottom-up activations", min=1, max=1024)
    res_bottleneck: int = setting(16, "residual: the residual blocks' bottleneck channels", min=1, max=1024)
    res_latent_channels: int = setting(4, "residual: channels of each latent layer", min=1, max=256)
    res_blocks: int = setting(1, "residual: blocks per bottom-up resolution and at the output", min=1, max=64)
    scale_min: float = setting(1e-3, "residual: lower bound of every posterior and prior scale", min=1e-6, max=1.0)
    scale_max: float = setting(10.0, "residual: upper bound of every posterior and prior scale", min=1.0, max=1e4)
    layer_hidden: list[int] | None = setting(
        None,
        "bottom-up posterior of mlp networks: the width of the networks between each stochastic layer and the one "
        "below it (x below z_1), one a layer, each as deep as hidden (Burda et al.'s two layers: 200 100; default: "
        "every network has hidden's sizes)",
        min=1,
        max=65536,
    )

    def validate(self) -> None:
        super().validate()
        if self.layer_hidden:
            if len(self.layer_hidden) != len(self.latent_sizes):
                raise ConfigError(
                    f"layer_hidden {self.layer_hidden} needs one width per stochastic layer "
                    f"(latent_sizes {self.latent_sizes})"
                )
            if self.posterior != "bottom-up" or self.encoder != "mlp" or (self.decoder or "mlp") != "mlp":
                raise ConfigError("layer_hidden sets the mlp networks of a bottom-up posterior (--posterior bottom-up)")
            if self.architecture != "default":
                raise ConfigError("layer_hidden sets the default networks, not conv-hvae's")
        if self.posterior == "residual":
            if len(self.res_layers) != len(self.res_resolutions):
                raise ConfigError(
                    f"res_layers {self.res_layers} needs one number of latent layers per resolution in "
                    f"res_resolutions {self.res_resolutions}"
                )
            if any(b != 2 * a for a, b in zip(self.res_resolutions, self.res_resolutions[1:])):
                raise ConfigError(f"res_resolutions {self.res_resolutions} must double from one to the next")
            if not self.scale_min < 1.0 < self.scale_max:
                raise ConfigError("scale_min < 1 < scale_max is needed (a unit scale at initialisation)")

    def inert_settings(self) -> dict[str, str]:
        inert = super().inert_settings()
        if self.posterior != "residual":
            residual = [f.name for f in dataclasses.fields(self) if f.name.startswith("res_")] + ["scale_min", "scale_max"]
            inert.update(dict.fromkeys(residual, "--posterior residual"))
        else:  # the residual model's layers and networks are its res_* settings' (a flow prior's read activation)
            stack = ["latent_sizes", "hidden", "encoder", "decoder", "decoder_input", "architecture", "conv_channels"]
            stack += ["init", "latent_scale"]  # (no dense layer outside a flow; its scales are bounded by scale_min/max)
            stack += [] if self.prior == "flow" else ["activation"]
            inert.update(dict.fromkeys(stack, "--posterior top-down, bottom-up or ladder"))
        return inert

    def _layer_widths(self) -> list[int]:
        return self.layer_hidden or []

    def describe(self) -> str:
        if self.posterior == "residual":
            return (
                f"a very deep residual top-down VAE ({sum(self.res_layers)} latent layers of {self.res_latent_channels} "
                f"channels at {self.res_resolutions} with {self.res_layers} layers, width {self.res_width}, "
                f"{self.prior} top prior, {self.likelihood.capitalize()} likelihood)"
            )
        return super().describe()

    def model_for(self, data: DataSpec) -> HierarchicalVAE | DeepTopDownVAE:
        if self.posterior == "residual":
            return self._build_residual(data)
        return self._build_stack(data)

    def _build_residual(self, data: DataSpec) -> DeepTopDownVAE:
        if len(data.event_shape) != 3 or data.event_shape[1] != data.event_shape[2]:
            raise ConfigError(f"the residual top-down VAE needs square images (C, H, H), got shape {data.event_shape}")
        side, low, high = data.event_shape[1], self.res_resolutions[0], self.res_resolutions[-1]
        ratio = side // high if side % high == 0 else 0
        if ratio == 0 or ratio & (ratio - 1):
            raise ConfigError(
                f"res_resolutions {self.res_resolutions} must reach the {side}x{side} images by doublings "
                f"(e.g. [7, 14] for 28x28, [4, 8, 16] for 32x32)"
            )
        top = self.res_latent_channels * low * low
        scale = self.input_scale(data.num_levels)
        hidden = [self.res_width, self.res_width]
        prior = self.build_prior(top, hidden, self.activation, scale, data)
        return DeepTopDownVAE(
            data.event_shape,
            self.head(data.num_levels),
            prior,
            resolutions=self.res_resolutions,
            layers=self.res_layers,
            width=self.res_width,
            mid=self.res_bottleneck,
            latent_channels=self.res_latent_channels,
            blocks=self.res_blocks,
            scale_bounds=(self.scale_min, self.scale_max),
            input_scale=scale,
        )
