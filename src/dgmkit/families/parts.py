"""Settings and builders that several families share: likelihood heads and encoder/decoder
networks. A family includes a part by inheriting its settings dataclass."""

import dataclasses
import math
from typing import ClassVar, Literal

import torch
from torch import nn

from dgmkit.conditional import (
    BernoulliHead,
    CategoricalHead,
    Decoder,
    GaussianHead,
    LikelihoodHead,
    LogisticMixtureHead,
    MixedTableHead,
    StudentTHead,
)
from dgmkit.data import Dataset, DataTransform, make_transform
from dgmkit.errors import ConfigError, DataError
from dgmkit.families.base import DataSpec, PartlyRead
from dgmkit.nn import MLP, ConvDecoderNet, ConvEncoderNet, GatedMLP, OneHotColumns
from dgmkit.nn.conv import he_init
from dgmkit.priors import FlowPrior, MixtureOfGaussiansPrior, Prior, StandardNormalPrior, VampPrior
from dgmkit.settings import setting
from dgmkit.training.parts import KLWarmup, LabelledRows, TrainingPart
from dgmkit.transforms import VECTOR_FLOWS
from dgmkit.transforms.base import Bijection

__all__ = [
    "LikelihoodSettings",
    "NetworkSettings",
    "PriorSettings",
    "KLWeightSettings",
    "AutoencoderSettings",
    "VAESettings",
    "ImportanceSampledEval",
    "FixedLikelihood",
    "LabelledBatches",
    "encoder_net",
    "flat_input",
    "decoder_net",
    "Activation",
]

Activation = Literal["relu", "elu", "tanh", "gelu", "silu"]


_LIKELIHOOD_SETTINGS = {  # the settings of some likelihoods: those that read them
    "gaussian_variance": ("gaussian",),
    "gaussian_scale": ("gaussian",),
    "gaussian_min_scale": ("gaussian", "mixed"),
    "student_min_df": ("student-t",),
    "student_min_scale": ("student-t",),
    "logistic_components": ("logistic",),
    "table_input": ("mixed",),
}


@dataclasses.dataclass
class LikelihoodSettings:
    """p(x|.) per pixel: Bernoulli, Gaussian or Student's t (dequantized or continuous data),
    256-way (L-way) categorical or discretized logistic mixture."""

    likelihood: Literal["bernoulli", "gaussian", "student-t", "categorical", "logistic", "mixed"] = setting(
        "bernoulli",
        "the output density p(x|z) per pixel (student-t: location, scale and degrees of freedom predicted, as "
        "MIWAE's tables; mixed: a table's columns, a Gaussian for each numeric one and a categorical for each "
        "categorical one)",
    )
    gaussian_variance: Literal["fixed", "learned", "predicted"] = setting(
        "learned", "gaussian likelihood: a fixed scale, one learned per pixel, or predicted per datapoint"
    )
    gaussian_scale: float = setting(0.1, "gaussian likelihood: the fixed (or initial) scale", gt=0, max=1e3)
    gaussian_min_scale: float = setting(
        0.01, "gaussian likelihood (and a mixed one's numeric columns): the floor of the scale", gt=0, max=1e3
    )
    student_min_df: float = setting(
        3.0, "student-t likelihood: the floor of the degrees of freedom (above 2: a finite variance)", gt=1, max=1e3
    )
    student_min_scale: float = setting(1e-3, "student-t likelihood: the floor of the scale", gt=0, max=1e3)
    logistic_components: int = setting(5, "logistic likelihood: mixture components per pixel", min=1, max=64)
    table_levels: list[int] | None = setting(
        None,
        "mixed likelihood: each column's number of categories, 0 for a numeric column (filled in from the table)",
        min=0,
        max=256,
    )
    # runs of format 4 and before read a mixed table's categorical columns as indices
    format_4_meant: ClassVar[dict] = {("likelihood", "mixed"): ("table_input", "index")}
    table_input: Literal["one-hot", "index"] = setting(
        "one-hot",
        "mixed likelihood: how a categorical column reaches the encoder: one-hot over its categories, or its index "
        "0..K-1 as one number (runs written before run format 5)",
    )

    def __post_init__(self) -> None:  # (the families' configs run it: none has its own)
        if self.likelihood != "mixed" and self.table_input != "one-hot":
            raise ConfigError(
                f"table_input {self.table_input} needs the mixed likelihood: it says how a table's categorical columns "
                "reach the encoder"
            )

    def inert_settings(self) -> dict[str, str]:
        """The other likelihoods' settings (``FamilyConfig.inert_settings``), with the next class's."""
        inert = super().inert_settings()  # type: ignore[misc]  # a mixin: the next class in the MRO has it
        for key, readers in _LIKELIHOOD_SETTINGS.items():
            if self.likelihood not in readers:
                inert[key] = "--likelihood " + " or ".join(readers)
        return inert

    def scored_likelihood(self) -> str | None:
        return self.likelihood

    def head(self, num_levels: int | None) -> LikelihoodHead:
        if self.likelihood == "mixed":
            if not self.table_levels:
                raise ConfigError("the mixed likelihood models a table (a .csv or .parquet file): its columns are unknown")
            return MixedTableHead(self.table_levels, self.gaussian_min_scale)
        if self.likelihood == "bernoulli":
            return BernoulliHead()
        if self.likelihood == "gaussian":
            return GaussianHead(self.gaussian_variance, self.gaussian_scale, self.gaussian_min_scale)
        if self.likelihood == "student-t":
            return StudentTHead(self.student_min_scale, self.student_min_df)
        if num_levels is None:
            raise ConfigError(f"the {self.likelihood} likelihood needs integer data")
        if self.likelihood == "categorical":
            return CategoricalHead(num_levels)
        return LogisticMixtureHead(num_levels, self.logistic_components)

    def settings_from_data(self, dataset: Dataset) -> dict:
        """A mixed likelihood's heads follow the table's columns (unless the config names them)."""
        if self.likelihood == "mixed" and self.table_levels is None and dataset.columns:
            return {"table_levels": [c.levels for c in dataset.columns]}
        return super().settings_from_data(dataset)  # type: ignore[misc]  # a mixin: the next class in the MRO has it

    def transform(self, dataset: Dataset, binarize: str = "auto") -> DataTransform:
        if self.likelihood == "mixed":
            levels = [c.levels for c in dataset.columns]
            if not levels:
                raise DataError(f"{dataset.name} is not a table (.csv or .parquet): the mixed likelihood needs columns")
            if self.table_levels != levels:
                raise DataError(
                    f"{dataset.name}'s columns have {levels} categories (0: numeric), the model was built for "
                    f"{self.table_levels}"
                )
            return DataTransform("continuous", None)
        if self.table_levels is not None:
            raise ConfigError("table_levels applies to the mixed likelihood only")
        return make_transform(self.likelihood, dataset, binarize)

    def one_hot_columns(self) -> list[int] | None:
        """A mixed table's columns' categories where the encoder reads them one-hot (0: numeric);
        None where it reads x flat as it is."""
        return self.table_levels if self.likelihood == "mixed" and self.table_input == "one-hot" else None

    def input_scale(self, num_levels: int | None) -> float:
        """Integer targets (categorical, logistic) reach the networks scaled to [0, 1]."""
        return 1.0 / (num_levels - 1) if self.likelihood in ("categorical", "logistic") and num_levels else 1.0


@dataclasses.dataclass
class NetworkSettings:
    """Encoder and decoder networks: MLP, gated MLP or convolutional."""

    encoder: Literal["mlp", "gated", "conv"] = setting("mlp", "the encoder network")
    decoder: Literal["mlp", "gated", "conv"] | None = setting(None, "the decoder network (default: as the encoder)")
    hidden: list[int] = setting(
        [512, 256],
        "hidden layer sizes, input side first (conv: the first is the dense layer between the conv stages and z)",
        min=1,
        max=16384,
    )
    conv_channels: list[int] = setting(
        [32, 64], "conv: channels of the two stride-2 convolution stages, input side first", min=1, max=4096
    )
    activation: Activation = setting("relu", "the networks' activation")
    init: Literal["default", "he"] = setting(
        "default",
        "the dense layers' initial weights: each layer's default, or He et al.'s N(0, 2/fan_in) in every dense layer "
        "outside a flow, biases as they were (the VampPrior reference code's initialisation)",
    )

    def inert_settings(self) -> dict[str, str]:
        """``activation`` where no network of the run reads it (``activation_needs``), and ``conv_channels``
        where no network is conv (``check_networks`` refuses another value there), with the next class's."""
        inert = super().inert_settings()  # type: ignore[misc]  # a mixin: the next class in the MRO has it
        needs = self.activation_needs()
        if needs is not None:
            inert["activation"] = needs
        if "conv" not in (self.encoder, self.decoder or self.encoder):
            inert["conv_channels"] = "--encoder conv or --decoder conv"
        return inert

    def activation_needs(self) -> str | None:
        """The choices that read ``activation``, where this run's leave it unread (None: read): gated
        networks gate by a sigmoid and read none; a family whose other parts read it (a flow prior)
        says so in its own."""
        if self.encoder == "gated" and (self.decoder or self.encoder) == "gated":
            return "an mlp or conv network (--encoder, --decoder)"
        return None

    def partly_read_settings(self, event_shape: tuple[int, ...] | None = None) -> dict[str, PartlyRead]:
        """``hidden`` where its networks read only some of its entries (``hidden_read``), with the next class's."""
        parts = super().partly_read_settings(event_shape)  # type: ignore[misc]  # a mixin: the next class in the MRO
        hidden = self.hidden_read()
        if hidden is not None:
            parts["hidden"] = hidden
        return parts

    def hidden_read(self) -> PartlyRead | None:
        """The entries of ``hidden`` that this run reads, where not all (None: all): conv networks have
        one dense layer, of hidden's first entry; a family whose other parts read them (an IAF
        posterior) says so in its own."""
        if self.encoder == "conv" and (self.decoder or self.encoder) == "conv":
            return PartlyRead(
                "first", "the dense layer of its conv networks", "an mlp or gated network (--encoder, --decoder)"
            )
        return None

    def initialise_weights(self, model: nn.Module) -> None:
        if self.init == "he":
            inside_flows = {id(m) for b in model.modules() if isinstance(b, Bijection) for m in b.modules()}
            he_init((m for m in model.modules() if isinstance(m, nn.Linear) and id(m) not in inside_flows), zero_bias=False)

    def check_networks(self, event_shape: tuple[int, ...]) -> None:
        conv = "conv" in (self.encoder, self.decoder or self.encoder)
        if len(self.conv_channels) != 2:
            raise ConfigError(f"conv_channels takes the channels of the 2 conv stages, got {self.conv_channels}")
        if not conv and self.conv_channels != [32, 64]:
            raise ConfigError("conv_channels sets conv networks; this model has none (choose --encoder conv)")
        for kind in (self.encoder, self.decoder or self.encoder):
            ok = len(event_shape) == 3 and event_shape[1] >= 4 and event_shape[1] % 4 == 0 and event_shape[2] % 4 == 0
            if kind == "conv" and not ok:
                raise ConfigError(f"conv networks need images with height and width divisible by 4, got shape {event_shape}")


def vector_flow(
    flow: str, dims: int, hidden: list[int], layers: int, act: str, what: str, of: str, fix: str = ""
) -> Bijection:
    """``VECTOR_FLOWS[flow]`` over ``dims`` dimensions; a coupling flow (all but MAF) over one is
    refused by name (``what``: the flow's role; ``of``: what it models, with its verb): its couplings transform some
    dimensions given the others, and a mask or network with nothing on one side was an internal error."""
    if dims < 2 and flow != "maf":
        raise ConfigError(
            f"a {flow} {what}'s couplings transform some of the dimensions given the others; {of} a single "
            f"dimension: use --flow maf{fix}"
        )
    return VECTOR_FLOWS[flow](dims, hidden, layers, act=act)


@dataclasses.dataclass
class PriorSettings:
    """The prior p(z) of a Gaussian latent layer (a VAE's, or the top layer of a hierarchy)."""

    prior: Literal["standard", "mog", "vampprior", "flow"] = setting("standard", "the prior p(z)")
    prior_components: int | None = setting(None, "mog / vampprior components K (default 10 / 500)", min=1, max=10000)
    pseudo_init: Literal["random", "data"] = setting("random", "vampprior pseudo-inputs: random, or random training images")
    # runs of format 4 and before clipped a VampPrior's pseudo-inputs to [0, 1] on any data
    format_4_meant: ClassVar[dict] = {("prior", "vampprior"): ("pseudo_range", "unit")}
    pseudo_range: Literal["data", "unit"] = setting(
        "data",
        "vampprior pseudo-inputs: clipped to [0, 1] where the encoder reads pixels scaled there, free where it reads "
        "continuous values (a table's standardized columns, another run's latents) (data); or clipped to [0, 1] "
        "always (unit: runs written before run format 5)",
    )
    flow: Literal["nice", "realnvp", "glow", "maf"] = setting("maf", "the flow of --prior flow")
    flow_layers: int = setting(4, "layers of the flow prior (or of a VAE's IAF posterior)", min=1, max=256)

    @classmethod
    def from_format_4(cls, keys: dict, data: dict) -> dict:
        """As ``format_4_meant`` says, with the next class's; on quantized data, a VampPrior's pseudo-inputs
        are clipped to [0, 1] whatever pseudo_range says, which is left at its default there (unit, unread,
        would refuse the run's settings repeated in a new run: ``data_inert_settings``)."""
        keys = super().from_format_4(keys, data)  # type: ignore[misc]  # a mixin: the next class in the MRO has it
        if data.get("num_levels") is not None and keys.get("pseudo_range") == "unit":  # (set by format_4_meant)
            keys = {k: v for k, v in keys.items() if k != "pseudo_range"}
        return keys

    @property
    def needs_init_data(self) -> bool:
        return self.prior == "vampprior" and self.pseudo_init == "data"

    def prior_inert_settings(self) -> dict[str, str]:
        """The prior's settings that the chosen prior leaves unread (``FamilyConfig.inert_settings``)."""
        inert = {}
        if self.prior not in ("mog", "vampprior"):
            inert["prior_components"] = "--prior mog or vampprior"
        if self.prior != "vampprior":
            inert.update(pseudo_init="--prior vampprior", pseudo_range="--prior vampprior")
        if self.prior != "flow":
            inert.update(flow="--prior flow", flow_layers="--prior flow")
        return inert

    def data_inert_settings(self, event_shape: tuple[int, ...], num_levels: int | None) -> dict[str, str]:
        """A VampPrior's ``pseudo_range`` on quantized data, whose pixels the encoder reads scaled to [0, 1]:
        its pseudo-inputs are clipped there whatever the setting says (``build_prior``), which is read only on
        continuous data; with the next class's."""
        inert = super().data_inert_settings(event_shape, num_levels)  # type: ignore[misc]  # a mixin: the next class
        if self.prior == "vampprior" and num_levels is not None:  # (another prior: prior_inert_settings)
            inert["pseudo_range"] = "continuous data (a table, another run's latents)"
        return inert

    def build_prior(
        self,
        m: int,
        hidden: list[int],
        act: str,
        input_scale: float,
        data: DataSpec,
    ) -> Prior:
        """p(z) over ``m`` dimensions; a flow prior's networks have widths ``hidden``; a VampPrior's
        pseudo-inputs have the data's event shape (and start at training images where asked)."""
        if self.prior == "standard":
            return StandardNormalPrior(m)
        if self.prior == "flow":
            flow = vector_flow(
                self.flow, m, hidden, self.flow_layers, act, "flow prior", "this z has", ", or more latent dimensions"
            )
            return FlowPrior(m, flow)
        if self.prior == "mog":
            return MixtureOfGaussiansPrior(m, self.prior_components or 10)
        k = self.prior_components or 500
        init = None
        if self.pseudo_init == "data" and data.init_data is not None:
            if len(data.init_data) < k:
                raise ConfigError(f"pseudo_init = data needs at least {k} training images, got {len(data.init_data)}")
            idx = torch.randperm(len(data.init_data), generator=torch.Generator().manual_seed(data.seed))[:k]
            x = data.init_data.float()
            filled = torch.nanmean(x, 0).nan_to_num(0.0)  # a missing entry (NaN): its observed mean (no NaN weights)
            init = torch.where(torch.isnan(x[idx]), filled, x[idx]) * input_scale
        bounded = self.pseudo_range == "unit" or data.num_levels is not None  # (levels: pixels scaled to [0, 1])
        return VampPrior(m, data.event_shape, k, init=init, bounded=bounded)


@dataclasses.dataclass
class KLWeightSettings:
    """The KL term's weight in the training loss: beta (beta-VAE) reached by linear warm-up.
    The reported ELBO always keeps weight 1."""

    beta: float = setting(1.0, "weight of the KL term in the loss (the reported ELBO keeps 1)", min=0, max=1e6)
    warmup: float = setting(0.0, "epochs of linear KL warm-up from 0 to beta", min=0, max=1e6)

    def inert_settings(self) -> dict[str, str]:
        """``warmup`` under beta = 0, a weight that stays 0 from the start, with the next class's."""
        inert = super().inert_settings()  # type: ignore[misc]  # a mixin: the next class in the MRO has it
        if self.beta == 0:
            inert["warmup"] = "--beta above 0"
        return inert

    def training_parts(self) -> list[TrainingPart]:
        return [KLWarmup(self.beta, self.warmup)]


@dataclasses.dataclass
class AutoencoderSettings(NetworkSettings, LikelihoodSettings):
    """An encoder and a decoder network (``encoder_net``, ``decoder_net``) around a code, with
    p(x|.) at the decoder's end: the parts of every autoencoding family."""

    def build_decoder(self, event_shape: tuple[int, ...], latent: int, head: LikelihoodHead) -> Decoder:
        """p(x|.) of a code of ``latent`` dimensions: ``decoder_net``, then ``head``."""
        return Decoder(decoder_net(self, event_shape, latent, head.params_per_pixel), head, event_shape)


@dataclasses.dataclass
class VAESettings(KLWeightSettings, PriorSettings, AutoencoderSettings):
    """An autoencoder with Gaussian latents under a chosen prior p(z) and a weighted KL term: the
    parts of the VAE and of the hierarchical VAE."""


class ImportanceSampledEval:
    """A family whose models ``dgm eval`` scores by importance sampling: 5000 draws per
    datapoint by default (Burda et al.'s protocol)."""

    @property
    def default_iw_samples(self) -> int:
        return 5000


class FixedLikelihood:
    """A family whose models all score the data by one kind of p(x|.), ``data_likelihood``
    (bernoulli: binary units; gaussian: a linear Gaussian model): the data are transformed for it."""

    data_likelihood: ClassVar[str]

    def scored_likelihood(self) -> str | None:
        return self.data_likelihood

    def transform(self, dataset: Dataset, binarize: str = "auto") -> DataTransform:
        other = (
            f"choose a family of another likelihood (the {getattr(self, 'name', 'this')} model's is {self.data_likelihood})"
        )
        return make_transform(self.data_likelihood, dataset, binarize, other)


class LabelledBatches:
    """A family trained on labels (some of them hidden, the data setting ``labels``) whose every
    batch takes ``labelled_batch`` more rows drawn from the kept labels (a setting of its own)."""

    uses_labels: ClassVar[bool] = True
    labelled_batch: int

    def training_parts(self) -> list[TrainingPart]:
        return [LabelledRows(self.labelled_batch)]


def flat_input(s: object, event_shape: tuple[int, ...]) -> tuple[nn.Module, int]:
    """The layer that reads x (B, *event) as flat features for a dense network, and their number:
    x flattened, or a mixed table's row with its categorical columns one-hot."""
    levels = s.one_hot_columns() if isinstance(s, LikelihoodSettings) else None
    if levels:
        layer = OneHotColumns(levels)
        return layer, layer.width
    return nn.Flatten(), math.prod(event_shape)


def encoder_net(s: NetworkSettings, event_shape: tuple[int, ...], out: int) -> nn.Module:
    """x (B, *event) -> (B, out)."""
    if s.encoder == "conv":
        return ConvEncoderNet(event_shape, out, channels=s.conv_channels, hidden=s.hidden[0], act=s.activation)
    flat, dims = flat_input(s, event_shape)
    if s.encoder == "gated":
        return nn.Sequential(flat, GatedMLP(dims, s.hidden, out))
    return nn.Sequential(flat, MLP(dims, s.hidden, out, s.activation))


def decoder_net(s: NetworkSettings, event_shape: tuple[int, ...], latent: int, params_per_pixel: int) -> nn.Module:
    """z (N, latent) -> the head's parameters: (N, D * P) flat, or (N, C * P, H, W) for conv."""
    kind = s.decoder or s.encoder
    dims = math.prod(event_shape)
    if kind == "conv":
        return ConvDecoderNet(
            latent,
            event_shape,
            event_shape[0] * params_per_pixel,
            channels=list(reversed(s.conv_channels)),
            hidden=s.hidden[0],
            act=s.activation,
        )
    if kind == "gated":
        return GatedMLP(latent, list(reversed(s.hidden)), dims * params_per_pixel)
    return MLP(latent, list(reversed(s.hidden)), dims * params_per_pixel, s.activation)
