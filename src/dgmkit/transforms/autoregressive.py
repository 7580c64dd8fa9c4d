r"""Masked autoregressive transforms (Papamakarios et al. 2017 MAF, arXiv 1705.07057;
Kingma et al. 2016 IAF, arXiv 1606.04934).

MAF layer, data -> noise in one pass of a MADE over x:

    z_d = (x_d - mu_d(x_<d)) exp(-alpha_d(x_<d)),        log|det dz/dx| = -sum_d alpha_d

Its inverse is sequential: D passes, each fixing one more dimension. IAF is the same layer used
the other way round (``Inverse``): sampling is the single pass and density evaluation of an
arbitrary point the sequential one; a sample's own density comes with it for free.
"""

from collections.abc import Sequence

import torch

from dgmkit.nn.made import MADE
from dgmkit.transforms.base import Bijection, Inverse, check_context
from dgmkit.transforms.coupling import positive_bound, soft_clamp

__all__ = ["MaskedAffineAutoregressive", "iaf_layer"]


class MaskedAffineAutoregressive(Bijection):
    """One MAF layer with a MADE conditioner (``context_features`` > 0 for a conditional flow)."""

    def __init__(
        self,
        features: int,
        hidden: Sequence[int],
        context_features: int = 0,
        scale_bound: float = 3.0,
        order: torch.Tensor | None = None,
        act: str = "relu",
    ):
        super().__init__()
        self.made = MADE(features, hidden, 2, context_features, act=act, order=order)
        torch.nn.init.zeros_(self.made.output_layer.weight)  # start at the identity
        torch.nn.init.zeros_(self.made.output_layer.bias)
        self.scale_bound = positive_bound(scale_bound)
        self.features = features

    def _params(self, x: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 2 or x.shape[1] != self.features:  # (else a MADE's "mat1 and mat2 shapes", or an IndexError)
            d = self.features
            raise ValueError(f"this MAF layer of {d} features takes x (B, {d}), got {tuple(x.shape)}")
        if self.made.context is not None:  # (the MADE's own word: a module pickled before this check has it too)
            check_context(self, x, context, self.made.context.in_features)
        out = self.made(x, context)  # (B, 2, D)
        return out[:, 0], soft_clamp(out[:, 1], self.scale_bound)

    def passes(self, inverse: bool = False) -> int:
        return self.features if inverse else 1

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mu, alpha = self._params(x, context)
        return (x - mu) * torch.exp(-alpha), -alpha.sum(-1)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.zeros_like(z)
        for _ in range(self.features):  # after pass k, the first k positions in the order are exact
            mu, alpha = self._params(x, context)
            x = z * alpha.exp() + mu
        return x, alpha.sum(-1)


def iaf_layer(features: int, hidden: Sequence[int], context_features: int = 0, **kwargs) -> Inverse:
    """An IAF layer: one MADE pass from noise to data, x = (z - mu(z_<d)) exp(-alpha(z_<d)), the
    MAF layer's one pass run from noise to data (Kingma et al.'s x = z exp(s) + m, with s = -alpha
    and m = -mu exp(-alpha)); log |det dx/dz| = -sum alpha."""
    return Inverse(MaskedAffineAutoregressive(features, hidden, context_features, **kwargs))
