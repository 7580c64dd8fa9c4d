r"""Coupling layers (Dinh et al. 2015 NICE, arXiv 1410.8516; 2017 RealNVP, arXiv 1605.08803).

A binary mask b splits x into a part that passes unchanged and a part transformed
conditionally on it:

    additive:  z = b x + (1 - b) (x + t(b x))                         log|det J| = 0
    affine:    z = b x + (1 - b) (x exp(s(b x)) + t(b x))              log|det J| = sum (1 - b) s

The log-scale is bounded softly, s = bound * tanh(raw / bound): an unbounded exp(s) is the
usual source of overflow and NaN in these models. The conditioner's last layer starts at zero,
so every coupling starts as the identity, but Glow's (``scale="sigmoid"``), which starts as a
scaling by sigmoid(2) = 0.88, as openai/glow's does.
"""

import torch
import torch.nn.functional as F
from torch import nn

from dgmkit.errors import finite_at_least, plural, whole_at_least
from dgmkit.transforms.base import Bijection, check_context, check_width, sum_except_batch

__all__ = ["AdditiveCoupling", "AffineCoupling", "alternating_mask", "checkerboard_mask", "channel_mask", "soft_clamp"]


def soft_clamp(raw: torch.Tensor, bound: float) -> torch.Tensor:
    return bound * torch.tanh(raw / bound)


def positive_bound(bound: float) -> float:
    """A log-scale bound of ``soft_clamp``: finite and positive (0 divides by zero, NaN makes NaN)."""
    return float(finite_at_least("scale_bound", bound, 0, strict=True))


def _parity(parity: int) -> int:
    if parity not in (0, 1) or isinstance(parity, bool):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")
    return parity


def alternating_mask(features: int, parity: int = 0) -> torch.Tensor:
    """(D,) mask 1, 0, 1, ... (or 0, 1, 0, ... with parity 1)."""
    whole_at_least("features", features, 1)
    _parity(parity)
    return ((torch.arange(features, device="cpu") + parity) % 2 == 0).float()  # (on the CPU: a structure, not a state)


def checkerboard_mask(height: int, width: int, parity: int = 0) -> torch.Tensor:
    """(1, H, W) checkerboard mask of an image (RealNVP's spatial partition)."""
    whole_at_least("height", height, 1)
    whole_at_least("width", width, 1)
    _parity(parity)
    i, j = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return ((i + j + parity) % 2 == 0).float().unsqueeze(0)


def channel_mask(channels: int, parity: int = 0) -> torch.Tensor:
    """(C, 1, 1) mask of the first (parity 0) or second half of the channels."""
    whole_at_least("channels", channels, 1)
    _parity(parity)
    first = (torch.arange(channels) < channels // 2).float()
    return (first if parity == 0 else 1 - first).view(-1, 1, 1)


def _layout(keep: torch.Tensor, move: torch.Tensor) -> str:
    d = len(keep) + len(move)
    if len(keep) == len(move) and (keep % 2 == keep[0] % 2).all() and (move % 2 != keep[0] % 2).all():
        return "interleave"  # even D, alternating mask
    # (the ranges on the mask's device: built under torch.device("meta"), as a checkpoint's check builds a
    # model, a default-device arange met the CPU mask and failed every vector flow but an even interleave)
    if (keep == torch.arange(len(keep), device=keep.device)).all():
        return "head"
    if (keep == torch.arange(d - len(keep), d, device=keep.device)).all():
        return "tail"
    return "index"


class _Coupling(Bijection):
    """``net`` computes the transform's ``n_params`` parameters from the masked part.

    Vectors (a (D,) mask): the kept entries x_a (and the context) go in, n_params * |b|
    numbers for the other entries x_b come out; no work is spent on masked zeros.
    Images (a (1, H, W) or (C, 1, 1) mask): the net sees b * x and returns n_params * C
    channels, of which only the masked-out positions are used."""

    mask: torch.Tensor
    keep: torch.Tensor
    move: torch.Tensor
    merge: torch.Tensor

    n_params: int

    def __init__(self, mask: torch.Tensor, net: nn.Module, context_features: int = 0):
        super().__init__()
        self.register_buffer("mask", mask.float())
        self.net = net
        self.context_features = whole_at_least("context_features", context_features, 0)
        self.vector = mask.dim() == 1
        if self.vector:
            keep, move = torch.nonzero(mask).flatten(), torch.nonzero(mask == 0).flatten()
            if len(keep) == 0 or len(move) == 0:
                raise ValueError("a coupling mask must keep some entries and transform the others")
            self.layout, self.first = _layout(keep, move), int(keep[0])
            self.register_buffer("keep", keep)
            self.register_buffer("move", move)
            self.register_buffer("merge", torch.argsort(torch.cat([keep, move])))

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_a, x_b). Strided views where the mask allows: their backward is a copy, while
        that of an index gather is a slow scatter-add."""
        k = len(self.keep)
        if self.layout == "interleave":
            return x[:, self.first :: 2], x[:, 1 - self.first :: 2]
        if self.layout == "head":
            return x[:, :k], x[:, k:]
        if self.layout == "tail":
            return x[:, -k:], x[:, :-k]
        return x.index_select(1, self.keep), x.index_select(1, self.move)

    def _merge(self, xa: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if self.layout == "interleave":
            first, second = (xa, yb) if self.first == 0 else (yb, xa)
            return torch.stack([first, second], -1).flatten(1)
        if self.layout == "head":
            return torch.cat([xa, yb], 1)
        if self.layout == "tail":
            return torch.cat([yb, xa], 1)
        return torch.cat([xa, yb], 1).index_select(1, self.merge)

    def _net_input(self, xa: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        if not self.context_features:
            return xa
        return torch.cat([xa, check_context(self, xa, context, self.context_features)], dim=-1)

    def _couple(self, x: torch.Tensor, context: torch.Tensor | None, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if self.vector:
            check_width(self, x, len(self.mask))  # (an index-layout mask dropped a wider x's rest: z (2, 6) of x (2, 7))
            xa, xb = self._split(x)
            out = self.net(self._net_input(xa, context))
            if out.shape != (len(x), self.n_params * len(self.move)):  # (else unflatten's words, or a broadcast)
                raise self._width_error(out, (len(x), self.n_params * len(self.move)), len(self.move), "entry", "entries")
            params = out.unflatten(-1, (self.n_params, len(self.move))).unbind(1)
            yb, ladj = self._transform(xb, params, inverse, None)
            return self._merge(xa, yb), ladj
        if self.context_features:
            raise ValueError("conditional coupling layers take vectors")
        self._check_image(x)
        out = self.net(x * self.mask)
        if out.shape != (len(x), self.n_params * x.shape[1], *x.shape[2:]):  # (more channels broadcast x into them)
            need = (len(x), self.n_params * x.shape[1], *x.shape[2:])
            raise self._width_error(out, need, x.shape[1], "channel of the image", "channels of the image")
        params = out.chunk(self.n_params, dim=1)
        return self._transform(x, params, inverse, 1 - self.mask)

    def _check_image(self, x: torch.Tensor) -> None:
        """Refuses images x that the image mask does not fit: one of (1, H, W) takes (B, C, H, W), one of
        (C, 1, 1) takes (B, C, H, W) of its C (else torch's broadcast error, or x broadcast into more channels)."""
        if x.dim() != 1 + self.mask.dim() or any(m not in (1, n) for m, n in zip(self.mask.shape, x.shape[1:])):
            sizes = [str(m) if m > 1 else name for m, name in zip(self.mask.shape, "CHW")]
            need = f"(B, {', '.join(sizes)})" if self.mask.dim() == 3 else f"(B, *{tuple(self.mask.shape)})"
            raise ValueError(
                f"{type(self).__name__} of an image mask of shape {tuple(self.mask.shape)} takes images {need}, "
                f"got x of shape {tuple(x.shape)}"
            )

    def _width_error(self, out: torch.Tensor, need: tuple[int, ...], count: int, unit: str, units: str) -> ValueError:
        """The refusal of the network's output ``out``, of a shape other than ``need``: ``n_params``
        numbers for each of ``count`` units (entries, channels) that the coupling transforms."""
        what = "a log-scale and a shift" if self.n_params == 2 else "a shift"
        return ValueError(
            f"the {type(self).__name__}'s network gave output of shape {tuple(out.shape)}; it needs {need}: {what} "
            f"for each {unit.split()[0]} it transforms, {self.n_params} * {plural(count, unit, units)} = {need[1]}"
        )

    def _transform(
        self, x: torch.Tensor, params: tuple[torch.Tensor, ...], inverse: bool, where: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The element-wise transform of x given its parameters; ``where`` (images) marks the
        entries it applies to, the others pass unchanged."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._couple(x, context, inverse=False)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._couple(z, context, inverse=True)


class AdditiveCoupling(_Coupling):
    """NICE's coupling, volume-preserving: z_b = x_b + t(x_a). On vectors (a (D,) mask) ``net``
    reads the kept entries x_a, (B, |a|) (and the context after them), and gives t, (B, |b|); on
    images (a (1, H, W) or (C, 1, 1) mask) it reads the masked image (B, C, H, W) and gives
    (B, C, H, W), of which the positions the mask moves are used."""

    n_params = 1

    def _transform(
        self, x: torch.Tensor, params: tuple[torch.Tensor, ...], inverse: bool, where: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t = params[0] if where is None else params[0] * where
        return (x - t if inverse else x + t), x.new_zeros(x.shape[0])


class AffineCoupling(_Coupling):
    """RealNVP's coupling: z_b = x_b exp(s(x_a)) + t(x_a), s bounded softly by ``scale_bound``
    (``scale="sigmoid"``: Glow's contracting scale). On vectors (a (D,) mask) ``net`` reads the
    kept entries x_a, (B, |a|) (and the context after them), and gives the raw log-scales, then the
    shifts, (B, 2 |b|); on images (a (1, H, W) or (C, 1, 1) mask) it reads the masked image
    (B, C, H, W) and gives (B, 2C, H, W), the log-scales' channels first, of which the positions the
    mask moves are used."""

    n_params = 2

    def __init__(
        self, mask: torch.Tensor, net: nn.Module, context_features: int = 0, scale_bound: float = 3.0, scale: str = "tanh"
    ):
        super().__init__(mask, net, context_features)
        if scale not in ("tanh", "sigmoid"):
            raise ValueError(f"scale must be tanh or sigmoid, got {scale!r}")
        self.scale_bound, self.scale = positive_bound(scale_bound), scale

    def _transform(
        self, x: torch.Tensor, params: tuple[torch.Tensor, ...], inverse: bool, where: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raw, t = params
        # tanh: log-scale in (-bound, bound); sigmoid (Glow): scale sigmoid(raw + 2) in (0, 1),
        # so that on the way to z a coupling can only contract and the expansion is left to ActNorm
        s = soft_clamp(raw, self.scale_bound) if self.scale == "tanh" else F.logsigmoid(raw + 2.0)
        if where is not None:
            s, t = s * where, t * where
        if inverse:
            return (x - t) * (-s).exp(), -sum_except_batch(s)
        return x * s.exp() + t, sum_except_batch(s)
