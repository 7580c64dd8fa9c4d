"""The published flow architectures as compositions of bijections.

Vector flows (data of shape (B, D), optionally conditional on a context (B, C)):
``nice``, ``realnvp``, ``glow``, ``maf``, ``iaf``. Image flows on (B, C, H, W), multi-scale:
``realnvp_multiscale`` (Dinh et al. 2017) and ``glow_multiscale`` (Kingma & Dhariwal 2018).
"""

from collections.abc import Callable, Sequence

import torch

from dgmkit.errors import whole_at_least
from dgmkit.nn import MLP, ConvConditioner, zero_init
from dgmkit.transforms.autoregressive import MaskedAffineAutoregressive, iaf_layer
from dgmkit.transforms.base import Bijection, Compose
from dgmkit.transforms.coupling import (
    AdditiveCoupling,
    AffineCoupling,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
)
from dgmkit.transforms.elementwise import DiagonalScaling
from dgmkit.transforms.linear import InvertibleLinear
from dgmkit.transforms.normalization import ActNorm
from dgmkit.transforms.permutation import Permutation
from dgmkit.transforms.reshape import MultiScale, Squeeze

__all__ = ["VECTOR_FLOWS", "IMAGE_FLOWS", "nice", "realnvp", "glow", "maf", "iaf", "realnvp_multiscale", "glow_multiscale"]


def _sizes(features: int, layers: int, context_features: int = 0, coupled: bool = False) -> None:
    """An architecture's sizes: a flow of no layers (the identity, silently) or of no features is
    refused by name, and a coupling flow (``coupled``) of one feature, which has none to condition on
    (its network was built with no outputs: "MLP's out_features must be an integer >= 1, got 0")."""
    whole_at_least("features", features, 1)
    if coupled and features < 2:
        raise ValueError(
            f"a coupling flow transforms some features given the others: it needs features >= 2, got {features} "
            "(maf, an autoregressive flow, models one)"
        )
    whole_at_least("layers", layers, 1)
    whole_at_least("context_features", context_features, 0)


def _mlp(d_in: int, hidden: Sequence[int], d_out: int, act: str) -> MLP:
    net = MLP(d_in, hidden, d_out, act)
    zero_init(net[-1])  # the coupling starts as the identity
    return net


def _coupling_net(mask: torch.Tensor, n_params: int, hidden: Sequence[int], context_features: int, act: str) -> MLP:
    kept = int(mask.sum())
    return _mlp(kept + context_features, hidden, n_params * (len(mask) - kept), act)


def _half_mask(features: int) -> torch.Tensor:
    return (torch.arange(features, device="cpu") < (features + 1) // 2).float()


def _alternating_couplings(
    features: int, hidden: Sequence[int], layers: int, context_features: int, act: str, affine: bool
) -> list[Bijection]:
    """``layers`` couplings on alternating masks, additive (NICE) or affine (RealNVP)."""
    _sizes(features, layers, context_features, coupled=True)
    steps: list[Bijection] = []
    for i in range(layers):
        mask = alternating_mask(features, i % 2)
        net = _coupling_net(mask, 2 if affine else 1, hidden, context_features, act)
        coupling = AffineCoupling if affine else AdditiveCoupling
        steps.append(coupling(mask, net, context_features))
    return steps


def nice(features: int, hidden: Sequence[int], layers: int = 4, context_features: int = 0, act: str = "relu") -> Compose:
    """NICE: additive couplings on alternating halves, then a diagonal scaling (arXiv 1410.8516)."""
    steps = _alternating_couplings(features, hidden, layers, context_features, act, affine=False)
    return Compose([*steps, DiagonalScaling((features,))])


def realnvp(features: int, hidden: Sequence[int], layers: int = 4, context_features: int = 0, act: str = "relu") -> Compose:
    """RealNVP on vectors: affine couplings on alternating masks (arXiv 1605.08803)."""
    return Compose(_alternating_couplings(features, hidden, layers, context_features, act, affine=True))


def glow(features: int, hidden: Sequence[int], layers: int = 4, context_features: int = 0, act: str = "relu") -> Compose:
    """Glow steps on vectors: ActNorm, an LU-parameterised invertible linear map, an affine
    coupling of the first half on the second (arXiv 1807.03039)."""
    _sizes(features, layers, context_features, coupled=True)
    g = torch.Generator().manual_seed(0)
    steps: list[Bijection] = []
    mask = _half_mask(features)
    for _ in range(layers):
        steps += [
            ActNorm(features),
            InvertibleLinear(features, generator=g),
            AffineCoupling(mask, _coupling_net(mask, 2, hidden, context_features, act), context_features),
        ]
    return Compose(steps)


def _reversing(features: int, layers: int, make_layer: Callable[[], Bijection]) -> Compose:
    """``layers`` autoregressive layers with the order reversed between consecutive ones."""
    _sizes(features, layers)
    steps: list[Bijection] = []
    for i in range(layers):
        if i:
            steps.append(Permutation.reverse(features))
        steps.append(make_layer())
    return Compose(steps)


def maf(features: int, hidden: Sequence[int], layers: int = 4, context_features: int = 0, act: str = "relu") -> Compose:
    """MAF: MADE-conditioned affine autoregressive layers, the order reversed between layers
    (arXiv 1705.07057)."""
    return _reversing(features, layers, lambda: MaskedAffineAutoregressive(features, hidden, context_features, act=act))


def iaf(features: int, hidden: Sequence[int], layers: int = 2, context_features: int = 0, act: str = "relu") -> Compose:
    """IAF: inverted MAF layers, a single pass from base to data (arXiv 1606.04934)."""
    return _reversing(features, layers, lambda: iaf_layer(features, hidden, context_features, act=act))


VECTOR_FLOWS = {"nice": nice, "realnvp": realnvp, "glow": glow, "maf": maf, "iaf": iaf}


def _conv_affine(mask: torch.Tensor, channels: int, hidden: int, blocks: int, scale: str = "tanh") -> AffineCoupling:
    return AffineCoupling(mask, ConvConditioner(channels, 2 * channels, hidden, blocks), scale=scale)


def _image_sizes(event_shape: tuple[int, int, int], hidden: int, layers: int, levels: int, blocks: int) -> None:
    """The sizes of an image flow; ``event_shape`` a (C, H, W) of whole numbers >= 1 (a (H, W) met
    "not enough values to unpack (expected 3, got 2)", a C of 0 a conditioner's in_channels)."""
    if not isinstance(event_shape, tuple | list) or len(event_shape) != 3:
        raise ValueError(f"an image flow's event_shape is (C, H, W), got {event_shape!r}")
    for name, size in zip(("channels", "height", "width"), event_shape):
        whole_at_least(f"event_shape's {name}", size, 1)
    for name, value, low in (("hidden", hidden, 1), ("layers", layers, 1), ("levels", levels, 1), ("blocks", blocks, 0)):
        whole_at_least(name, value, low)


def _check_divisible(event_shape: tuple[int, int, int], factor: int, name: str) -> None:
    _, h, w = event_shape
    if h % factor or w % factor:
        raise ValueError(f"{name} with these levels needs height and width divisible by {factor}, got {h}x{w}")


def realnvp_multiscale(
    event_shape: tuple[int, int, int], hidden: int = 64, layers: int = 3, levels: int = 2, blocks: int = 1
) -> MultiScale:
    """RealNVP's multi-scale flow: per level, ``layers`` checkerboard couplings, a squeeze and
    ``layers`` channel couplings, then half the channels are factored out; the last level has
    ``layers + 1`` checkerboard couplings."""
    _image_sizes(event_shape, hidden, layers, levels, blocks)
    _check_divisible(event_shape, 2 ** (levels - 1), "realnvp")
    c, h, w = event_shape
    out: list[Bijection] = []
    for level in range(levels):
        steps: list[Bijection] = []
        last = level == levels - 1
        for i in range(layers + 1 if last else layers):
            steps.append(_conv_affine(checkerboard_mask(h, w, i % 2), c, hidden, blocks))
        if not last:
            steps.append(Squeeze())
            c, h, w = 4 * c, h // 2, w // 2
            for i in range(layers):
                steps.append(_conv_affine(channel_mask(c, i % 2), c, hidden, blocks))
            c //= 2
        out.append(Compose(steps))
    return MultiScale(out, event_shape)


def glow_multiscale(
    event_shape: tuple[int, int, int], hidden: int = 64, layers: int = 8, levels: int = 2, blocks: int = 0
) -> MultiScale:
    """Glow: per level a squeeze and ``layers`` steps of ActNorm, invertible 1x1 convolution and
    an affine coupling of the channel halves; half the channels are factored out between levels."""
    _image_sizes(event_shape, hidden, layers, levels, blocks)
    _check_divisible(event_shape, 2**levels, "glow")
    c, h, w = event_shape
    g = torch.Generator().manual_seed(0)
    out: list[Bijection] = []
    for level in range(levels):
        c, h, w = 4 * c, h // 2, w // 2
        steps: list[Bijection] = [Squeeze()]
        for _ in range(layers):
            steps += [
                ActNorm(c),
                InvertibleLinear(c, generator=g),
                _conv_affine(channel_mask(c), c, hidden, blocks, "sigmoid"),
            ]
        out.append(Compose(steps))
        if level < levels - 1:
            c //= 2
    return MultiScale(out, event_shape)


IMAGE_FLOWS = {"realnvp": realnvp_multiscale, "glow": glow_multiscale}
