"""Decoder p(x|z): a network followed by a likelihood head."""

import math
import operator
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Distribution

from dgmkit.conditional.base import ConditionalDistribution
from dgmkit.conditional.heads import LikelihoodHead

__all__ = ["Decoder"]


class Decoder(ConditionalDistribution):
    """p(x|z) over images of shape ``event_shape`` = (C, H, W).

    ``net`` maps (N, M) latents to C * P * H * W numbers (flat, for an MLP) or to
    (N, C * P, H, W) (for a conv net), where P is ``head.params_per_pixel``. Leading sample
    dimensions of z are kept: z of shape (S, B, M) gives a distribution of batch shape (S, B).
    """

    def __init__(self, net: nn.Module, head: LikelihoodHead, event_shape: Sequence[int]):
        super().__init__()
        self.net = net
        self.head = head
        try:
            self.event_shape = tuple(operator.index(n) for n in event_shape)
        except TypeError:
            self.event_shape = ()
        if len(self.event_shape) != 3 or min(self.event_shape) < 1:
            raise ValueError(
                f"a Decoder's event_shape is an image's (C, H, W), three positive integers, got {event_shape!r}: "
                "a vector of D values is the image (1, 1, D)"
            )

    def forward(self, z: torch.Tensor) -> Distribution:
        p = self.head(self._params(z))
        if not isinstance(p, Distribution):  # (else "'Tensor' object has no attribute 'log_prob'" deep in an objective)
            raise TypeError(
                f"the likelihood head {type(self.head).__name__} returned {_kind(p)}, not a distribution: a "
                "LikelihoodHead's forward maps the decoder network's output to p(x|z), a torch.distributions."
                "Distribution whose event is the image (C, H, W), e.g. Independent(Bernoulli(logits=...), 3)"
            )
        return p

    def pixel_log_pmf(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x_d = v | z) of every value v of every pixel, (*batch, C, H, W, L) in float64:
        what an entropy coder of x given z needs. A head of a density has none (TypeError)."""
        return self.head.pixel_log_pmf(self._params(z).movedim(-3, -1))

    def _params(self, z: torch.Tensor) -> torch.Tensor:
        """The head's parameters (*batch, C, P, H, W) for latents z (*batch, M)."""
        c, h, w = self.event_shape
        out = self.net(z.reshape(-1, z.shape[-1]))
        need = c * self.head.params_per_pixel * h * w
        if out.numel() != need * math.prod(z.shape[:-1]):
            raise ValueError(
                f"the decoder network gave output of shape {tuple(out.shape)} for {math.prod(z.shape[:-1])} latents; "
                f"the {type(self.head).__name__} needs C * P * H * W = {c} * {self.head.params_per_pixel} * {h} * {w} "
                f"= {need} numbers per latent (P: the head's params_per_pixel)"
            )
        return out.reshape(*z.shape[:-1], c, self.head.params_per_pixel, h, w)


def _kind(value: object) -> str:
    """What a head returned, in words: a tensor by its shape, else its type."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
