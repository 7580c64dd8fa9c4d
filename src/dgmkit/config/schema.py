"""The run configuration: one flat set of typed keys shared by config files and CLI flags.

A config file (TOML or JSON) holds any of these keys; flags given on the command line override
it. Unknown keys and values of the wrong type are rejected with a message naming them.
"""

import dataclasses
import difflib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dgmkit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["RunConfig", "load_config_file", "CHOICES"]

CHOICES = {
    "model": ("vae", "ae", "ppca", "helmholtz", "loglinear", "flow", "arm"),
    "arm": ("causal-conv", "made", "pixelcnn"),
    "flow": ("nice", "realnvp", "glow", "maf"),
    "posterior": ("gaussian", "iaf"),
    "dequantization": ("uniform", "variational"),
    "encoder": ("mlp", "gated", "conv"),
    "decoder": ("mlp", "gated", "conv", None),
    "likelihood": ("bernoulli", "gaussian", "categorical", "logistic"),
    "gaussian_variance": ("fixed", "learned", "predicted"),
    "prior": ("standard", "mog", "vampprior", "flow"),
    "pseudo_init": ("random", "data"),
    "objective": ("elbo", "iwae", "gumbel-softmax", "reinforce", "wake-sleep", "rws"),
    "latent": ("gaussian", "categorical"),
    "binarize": ("auto", "dynamic", "none"),
    "lr_schedule": ("constant", "cosine", "exponential"),
    "device": ("auto", "cpu", "cuda"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "activation": ("relu", "elu", "tanh", "gelu", "silu"),
}


@dataclass
class RunConfig:
    """Every key of a run. The defaults train an MLP VAE with a Bernoulli likelihood."""

    # data
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = True
    binarize: str = "auto"
    # model
    model: str = "vae"
    encoder: str = "mlp"
    decoder: str | None = None
    likelihood: str = "bernoulli"
    # helmholtz: stochastic binary layers of sizes hidden + [latent_dim], bottom to top
    latent: str = "gaussian"  # or categorical: latent_dim variables with latent_classes classes each
    latent_dim: int = 32
    latent_classes: int = 10
    hidden: list[int] = field(default_factory=lambda: [512, 256])
    activation: str = "relu"
    prior: str = "standard"
    prior_components: int | None = None  # K: 10 for mog, 500 for vampprior
    pseudo_init: str = "random"  # vampprior pseudo-inputs: random or random training images
    posterior: str = "gaussian"  # or iaf: a Gaussian followed by flow_layers IAF layers
    # flows (--model flow, --prior flow, --posterior iaf)
    flow: str = "realnvp"
    flow_layers: int = 4  # couplings (or MADE layers, or Glow steps) per level
    flow_levels: int = 2  # image flows: scales of the multi-scale architecture
    flow_blocks: int = 1  # image flows: residual blocks per coupling network (width hidden[0])
    logit_alpha: float = 0.05  # dequantized data y -> logit(alpha + (1 - 2 alpha) y)
    dequantization: str = "uniform"  # or variational: a learned q(u|x) (flows on integer data)
    # autoregressive models (--model arm)
    arm: str = "pixelcnn"
    arm_layers: int = 6  # gated layers (pixelcnn, causal-conv); the width is hidden[0]
    arm_kernel: int = 3
    made_masks: int = 1  # K connectivities: trained one per minibatch, evaluated as their mixture
    made_random_order: bool = False  # MADE: random input orders (else the raster order, new hidden degrees)
    made_direct: bool = False  # MADE: masked direct input -> output connections as well
    gaussian_variance: str = "learned"
    gaussian_scale: float = 0.1
    gaussian_min_scale: float = 0.01
    logistic_components: int = 5
    # objective
    objective: str = "elbo"
    samples: int = 1
    iw_k: int = 5  # importance samples of the iwae objective
    beta: float = 1.0
    warmup: float = 0.0
    free_bits: float = 0.0
    temperature: float = 1.0  # gumbel-softmax: initial relaxation temperature
    temperature_min: float = 0.5
    anneal_rate: float = 3e-5  # tau_t = max(temperature_min, temperature * exp(-anneal_rate * step))
    straight_through: bool = False
    # optimization
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    grad_clip: float | None = None
    patience: int | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    # evaluation
    iw_samples: int = 5000

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        for key, allowed in CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                shown = ", ".join(str(a) for a in allowed if a is not None)
                raise ConfigError(f"unknown {key} {value!r}; choose from {shown}")
        positive = (
            "latent_dim",
            "samples",
            "epochs",
            "batch_size",
            "logistic_components",
            "iw_k",
            "flow_layers",
            "flow_levels",
            "arm_layers",
            "made_masks",
        )
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("lr", "gaussian_scale", "gaussian_min_scale"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)}")
        if self.beta < 0 or self.warmup < 0 or self.iw_samples < 0 or self.weight_decay < 0 or self.free_bits < 0:
            raise ConfigError("beta, warmup, iw_samples, weight_decay and free_bits must be >= 0")
        if self.prior_components is not None and self.prior_components < 1:
            raise ConfigError(f"prior_components must be >= 1, got {self.prior_components}")
        discrete = self.objective in ("gumbel-softmax", "reinforce")
        if (self.latent == "categorical") != discrete:
            raise ConfigError(
                "categorical latents train with --objective gumbel-softmax or reinforce, and those "
                "objectives need --latent categorical"
            )
        if self.latent == "categorical" and (self.prior != "standard" or self.model != "vae"):
            raise ConfigError("categorical latents use the uniform prior (--prior standard) and --model vae")
        if self.latent_classes < 2:
            raise ConfigError(f"latent_classes must be >= 2, got {self.latent_classes}")
        if not 0 < self.temperature_min <= self.temperature or self.anneal_rate < 0:
            raise ConfigError("need 0 < temperature_min <= temperature and anneal_rate >= 0")
        if (self.model == "helmholtz") != (self.objective in ("wake-sleep", "rws")):
            raise ConfigError(
                "the helmholtz model trains with --objective wake-sleep or rws, and those objectives need --model helmholtz"
            )
        if self.model == "helmholtz" and (self.likelihood != "bernoulli" or self.prior != "standard"):
            raise ConfigError("the helmholtz model is a sigmoid belief network: --likelihood bernoulli, its own prior")
        if self.model == "ae" and (self.objective != "elbo" or self.prior != "standard" or self.latent != "gaussian"):
            raise ConfigError("the autoencoder (--model ae) has no prior and trains on reconstruction only")
        if self.model == "loglinear" and (self.likelihood != "bernoulli" or self.objective != "elbo"):
            raise ConfigError("the loglinear model is trained by EM on binary data: --likelihood bernoulli, no --objective")
        if self.model == "ppca" and self.likelihood != "gaussian":
            raise ConfigError("the ppca model is linear Gaussian: use --likelihood gaussian")
        if self.free_bits and (self.objective != "elbo" or self.prior != "standard"):
            raise ConfigError("free_bits needs the elbo objective and the standard prior (a per-dimension KL)")
        if self.flow_blocks < 0 or not 0 < self.logit_alpha < 0.5:
            raise ConfigError("need flow_blocks >= 0 and 0 < logit_alpha < 0.5")
        if self.model == "flow" and (self.objective != "elbo" or self.prior != "standard" or self.posterior != "gaussian"):
            raise ConfigError(
                "a flow (--model flow) is trained by maximum likelihood: no --objective, --prior or --posterior"
            )
        if self.posterior == "iaf" and (self.model != "vae" or self.latent != "gaussian"):
            raise ConfigError("the iaf posterior is for --model vae with gaussian latents")
        if self.dequantization == "variational" and self.model != "flow":
            raise ConfigError("--dequantization variational is for flows (--model flow) on integer data")
        if self.posterior == "iaf" and self.free_bits:
            raise ConfigError("free_bits needs a diagonal Gaussian posterior, not --posterior iaf")
        if self.model == "arm":
            if (
                self.objective != "elbo"
                or self.prior != "standard"
                or self.posterior != "gaussian"
                or self.latent != "gaussian"
            ):
                raise ConfigError("an autoregressive model (--model arm) is trained by maximum likelihood: no latents")
            if self.likelihood == "gaussian":
                raise ConfigError("autoregressive models here are discrete: --likelihood bernoulli, categorical or logistic")
            if self.arm_kernel < 2 or (self.arm == "pixelcnn" and self.arm_kernel % 2 == 0):
                raise ConfigError(f"arm_kernel must be >= 2 (odd for pixelcnn), got {self.arm_kernel}")
        if any(h < 1 for h in self.hidden) or not self.hidden:
            raise ConfigError(f"hidden must be a non-empty list of positive sizes, got {self.hidden}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in values if k not in known]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, known, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(f"{source}: unknown key(s) {', '.join(hints)}")
        return cls(**values)

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)


def _check_type(name: str, value, annotation) -> None:
    text = str(annotation)
    ok = True
    if value is None:
        ok = "None" in text
    elif text.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif text.startswith("float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif text.startswith("bool"):
        ok = isinstance(value, bool)
    elif text.startswith("str"):
        ok = isinstance(value, str)
    elif text.startswith("list[int]"):
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok:
        raise ConfigError(f"{name} has the wrong type: {value!r} (expected {text})")


def load_config_file(path: str | Path) -> dict:
    """Read a TOML or JSON config file into a dict of keys (checked by RunConfig.from_dict)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        if path.suffix == ".json":
            values = json.loads(text)
        else:
            values = tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a table of keys")
    return values
