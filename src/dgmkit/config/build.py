"""Build a model from a run configuration and the data's shape."""

import math

import torch
from torch import nn

from dgmkit.conditional import (
    BernoulliHead,
    CategoricalEncoder,
    CategoricalHead,
    Decoder,
    GaussianEncoder,
    GaussianHead,
    IAFEncoder,
    LikelihoodHead,
    LogisticMixtureHead,
)
from dgmkit.config.schema import RunConfig
from dgmkit.errors import ConfigError
from dgmkit.models import PPCA, VAE, Autoencoder, CategoricalVAE, FlowModel, HelmholtzMachine, LogLinearLVM
from dgmkit.models.autoregressive import MADEARM, AutoregressiveModel, CausalConvARM, GatedPixelCNN
from dgmkit.models.dequantization import LogitNormalDequantizer, VariationallyDequantizedFlow
from dgmkit.nn import MLP, ConvDecoderNet, ConvEncoderNet, GatedMLP
from dgmkit.objectives import (
    ELBO,
    IWAE,
    DequantizationBound,
    GumbelSoftmaxELBO,
    MaximumLikelihood,
    Reconstruction,
    ReinforceELBO,
    ReweightedWakeSleep,
    WakeSleep,
)
from dgmkit.priors import FlowPrior, MixtureOfGaussiansPrior, Prior, StandardNormalPrior, UniformCategoricalPrior, VampPrior
from dgmkit.transforms import IMAGE_FLOWS, VECTOR_FLOWS, Compose, Logit, iaf

__all__ = ["build_model", "build_objective", "build_head"]


def build_head(cfg: RunConfig, num_levels: int | None) -> LikelihoodHead:
    if cfg.likelihood == "bernoulli":
        return BernoulliHead()
    if cfg.likelihood == "gaussian":
        return GaussianHead(cfg.gaussian_variance, cfg.gaussian_scale, cfg.gaussian_min_scale)
    if num_levels is None:
        raise ConfigError(f"the {cfg.likelihood} likelihood needs integer data")
    if cfg.likelihood == "categorical":
        return CategoricalHead(num_levels)
    return LogisticMixtureHead(num_levels, cfg.logistic_components)


def _conv_ok(event_shape) -> bool:
    return len(event_shape) == 3 and event_shape[1] % 4 == 0 and event_shape[2] % 4 == 0 and event_shape[1] >= 4


def build_model(
    cfg: RunConfig, event_shape: tuple[int, int, int], num_levels: int | None, init_data: torch.Tensor | None = None
) -> VAE | PPCA:
    """The model that ``cfg`` describes for images of ``event_shape`` = (C, H, W).

    ``init_data``: transformed training images, needed only for VampPrior pseudo-inputs
    initialised from data (``pseudo_init = "data"``)."""
    if cfg.model == "ppca":
        return PPCA.empty(tuple(event_shape), cfg.latent_dim)
    if cfg.model == "loglinear":
        try:
            return LogLinearLVM(event_shape, cfg.latent_dim)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if cfg.model == "flow":
        return build_flow(cfg, event_shape, num_levels)
    if cfg.model == "arm":
        return build_arm(cfg, event_shape, num_levels)
    if cfg.model == "helmholtz":
        return HelmholtzMachine(event_shape, [*cfg.hidden, cfg.latent_dim])
    c, h, w = event_shape
    dims = c * h * w
    categorical = cfg.latent == "categorical"
    m = cfg.latent_dim * cfg.latent_classes if categorical else cfg.latent_dim  # decoder input size
    enc_out = m if categorical else 2 * m
    head = build_head(cfg, num_levels)
    p = head.params_per_pixel
    decoder_kind = cfg.decoder or cfg.encoder
    for kind in (cfg.encoder, decoder_kind):
        if kind == "conv" and not _conv_ok(event_shape):
            raise ConfigError(f"conv networks need images with height and width divisible by 4, got shape {event_shape}")
    if cfg.encoder == "mlp":
        enc_net = nn.Sequential(nn.Flatten(), MLP(dims, cfg.hidden, enc_out, cfg.activation))
    elif cfg.encoder == "gated":
        enc_net = nn.Sequential(nn.Flatten(), GatedMLP(dims, cfg.hidden, enc_out))
    else:
        enc_net = ConvEncoderNet(event_shape, enc_out, hidden=cfg.hidden[0], act=cfg.activation)
    if decoder_kind == "mlp":
        dec_net = MLP(m, list(reversed(cfg.hidden)), dims * p, cfg.activation)
    elif decoder_kind == "gated":
        dec_net = GatedMLP(m, list(reversed(cfg.hidden)), dims * p)
    else:
        dec_net = ConvDecoderNet(m, event_shape, c * p, hidden=cfg.hidden[0], act=cfg.activation)
    input_scale = 1.0 / (num_levels - 1) if cfg.likelihood in ("categorical", "logistic") else 1.0
    decoder = Decoder(dec_net, head, event_shape)
    if categorical:
        encoder = CategoricalEncoder(enc_net, cfg.latent_dim, cfg.latent_classes)
        prior = UniformCategoricalPrior(cfg.latent_dim, cfg.latent_classes)
        baseline = None
        if cfg.objective == "reinforce":
            baseline = nn.Sequential(nn.Flatten(), MLP(dims, [cfg.hidden[-1]], 1, cfg.activation))
        return CategoricalVAE(encoder, decoder, prior, input_scale, baseline=baseline)
    if cfg.model == "ae":
        if cfg.encoder == "conv":  # the conv encoder's head outputs 2M numbers for a VAE; here M
            enc_net = ConvEncoderNet(event_shape, m, hidden=cfg.hidden[0], act=cfg.activation)
        elif cfg.encoder == "gated":
            enc_net = nn.Sequential(nn.Flatten(), GatedMLP(dims, cfg.hidden, m))
        else:
            enc_net = nn.Sequential(nn.Flatten(), MLP(dims, cfg.hidden, m, cfg.activation))
        return Autoencoder(enc_net, decoder, m, input_scale)
    if cfg.posterior == "iaf":
        encoder = _iaf_encoder(cfg, event_shape, m)
    else:
        encoder = GaussianEncoder(enc_net, m)
    prior = build_prior(cfg, encoder, event_shape, input_scale, init_data)
    return VAE(encoder, decoder, prior, input_scale)


def build_prior(cfg: RunConfig, encoder, event_shape, input_scale: float, init_data: torch.Tensor | None) -> Prior:
    m = cfg.latent_dim
    if cfg.prior == "standard":
        return StandardNormalPrior(m)
    if cfg.prior == "flow":
        return FlowPrior(m, VECTOR_FLOWS[cfg.flow](m, cfg.hidden, cfg.flow_layers, act=cfg.activation))
    if cfg.prior == "mog":
        return MixtureOfGaussiansPrior(m, cfg.prior_components or 10)
    k = cfg.prior_components or 500
    init = None
    if cfg.pseudo_init == "data" and init_data is not None:
        if len(init_data) < k:
            raise ConfigError(f"pseudo_init = data needs at least {k} training images, got {len(init_data)}")
        idx = torch.randperm(len(init_data), generator=torch.Generator().manual_seed(cfg.seed))[:k]
        init = init_data[idx].float() * input_scale
    return VampPrior(encoder, m, tuple(event_shape), k, init=init)


def build_objective(cfg: RunConfig):
    if cfg.model == "flow" and cfg.dequantization == "variational":
        return DequantizationBound(cfg.samples)
    if cfg.model in ("flow", "arm"):
        return MaximumLikelihood()
    if cfg.model == "ae":
        return Reconstruction()
    if cfg.objective == "gumbel-softmax":
        return GumbelSoftmaxELBO(cfg.temperature, cfg.temperature_min, cfg.anneal_rate, cfg.straight_through)
    if cfg.objective == "reinforce":
        return ReinforceELBO()
    if cfg.objective == "wake-sleep":
        return WakeSleep()
    if cfg.objective == "rws":
        return ReweightedWakeSleep(k=cfg.iw_k)
    if cfg.objective == "iwae":
        return IWAE(k=cfg.iw_k)
    return ELBO(num_samples=cfg.samples, free_bits=cfg.free_bits)


def _image_flow_fits(cfg: RunConfig, event_shape) -> bool:
    if cfg.flow not in IMAGE_FLOWS or len(event_shape) != 3 or min(event_shape[1:]) < 2:
        return False
    factor = 2 ** (cfg.flow_levels - (cfg.flow == "realnvp"))
    return event_shape[1] % factor == 0 and event_shape[2] % factor == 0


def build_flow(cfg: RunConfig, event_shape, num_levels: int | None) -> FlowModel:
    """A flow over ``event_shape``: the multi-scale convolutional RealNVP or Glow for images
    whose sides the levels divide, else the vector version over the flattened data. Quantized
    data (num_levels set) arrive dequantized in [0, 1] and get the logit pre-processing."""
    if _image_flow_fits(cfg, event_shape):
        bij = IMAGE_FLOWS[cfg.flow](
            tuple(event_shape), hidden=cfg.hidden[0], layers=cfg.flow_layers, levels=cfg.flow_levels, blocks=cfg.flow_blocks
        )
        flatten = False
    else:
        bij = VECTOR_FLOWS[cfg.flow](math.prod(event_shape), cfg.hidden, cfg.flow_layers, act=cfg.activation)
        flatten = True
    if num_levels is not None:
        bij = Compose([Logit(cfg.logit_alpha), bij])
    flow = FlowModel(bij, tuple(event_shape), flatten=flatten)
    if cfg.dequantization == "variational":
        if num_levels is None:
            raise ConfigError("variational dequantization needs integer data")
        return VariationallyDequantizedFlow(flow, LogitNormalDequantizer(event_shape[0], num_levels, cfg.hidden[0]))
    return flow


def _iaf_encoder(cfg: RunConfig, event_shape, m: int) -> IAFEncoder:
    """An MLP (or conv) network to mean, scale and an h(x) context of hidden[-1] features,
    then ``flow_layers`` IAF layers with MADEs of the ``hidden`` sizes."""
    c = cfg.hidden[-1]
    dims = math.prod(event_shape)
    if cfg.encoder == "conv":
        net = ConvEncoderNet(event_shape, 2 * m + c, hidden=cfg.hidden[0], act=cfg.activation)
    elif cfg.encoder == "gated":
        net = nn.Sequential(nn.Flatten(), GatedMLP(dims, cfg.hidden, 2 * m + c))
    else:
        net = nn.Sequential(nn.Flatten(), MLP(dims, cfg.hidden, 2 * m + c, cfg.activation))
    return IAFEncoder(net, m, c, iaf(m, cfg.hidden, cfg.flow_layers, context_features=c, act=cfg.activation))


def build_arm(cfg: RunConfig, event_shape, num_levels: int | None) -> AutoregressiveModel:
    """An autoregressive model of single-channel images with the configured likelihood head."""
    head = build_head(cfg, num_levels)
    scale = 1.0 / (num_levels - 1) if cfg.likelihood in ("categorical", "logistic") else 1.0
    try:
        if cfg.arm == "made":
            return MADEARM(
                head, event_shape, cfg.hidden, cfg.made_masks, cfg.made_random_order, cfg.seed, scale, cfg.made_direct
            )
        kind = CausalConvARM if cfg.arm == "causal-conv" else GatedPixelCNN
        return kind(head, event_shape, cfg.hidden[0], cfg.arm_layers, cfg.arm_kernel, input_scale=scale)
    except ValueError as e:
        raise ConfigError(str(e)) from None
