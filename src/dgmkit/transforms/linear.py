r"""Invertible linear map of the channels (Glow's invertible 1x1 convolution, arXiv 1807.03039).

W = P L (U + diag(sign(s) exp(log|s|))) with P a fixed permutation, L unit lower triangular and
U strictly upper triangular: log|det W| = sum log|s|, O(C) instead of O(C^3). On images each
pixel's channel vector is multiplied by W (a 1x1 convolution), so log|det J| = H W sum log|s|.
"""

import math

import torch
from torch import nn

from dgmkit.errors import whole_at_least
from dgmkit.transforms.base import Bijection, check_width

__all__ = ["InvertibleLinear"]


class InvertibleLinear(Bijection):
    """LU-parameterised invertible linear map of dim 1, initialised at a random rotation."""

    p: torch.Tensor
    sign_s: torch.Tensor
    lower_mask: torch.Tensor

    def __init__(self, channels: int, generator: torch.Generator | None = None):
        super().__init__()
        whole_at_least("channels", channels, 1)
        w = torch.linalg.qr(torch.randn(channels, channels, generator=generator, dtype=torch.float64))[0]
        dt = torch.get_default_dtype()
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("p", p.to(dt))
        self.register_buffer("sign_s", torch.sign(s).to(dt))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower.to(dt))
        self.upper = nn.Parameter(torch.triu(upper, 1).to(dt))
        self.log_s = nn.Parameter(torch.log(s.abs()).to(dt))

    def weight(self) -> torch.Tensor:
        eye = torch.eye(self.lower.shape[0], device=self.lower.device, dtype=self.lower.dtype)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * self.log_s.exp())
        return self.p @ lower @ upper

    def _multiply(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        check_width(self, x, len(w))  # (einsum broadcast an image of 1 channel into C: a z of C channels)
        if x.dim() == 2:
            return x @ w.T
        return torch.einsum("ij,bj...->bi...", w, x)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        spatial = math.prod(x.shape[2:])
        return self._multiply(x, self.weight()), (self.log_s.sum() * spatial).expand(x.shape[0])

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        spatial = math.prod(z.shape[2:])
        return self._multiply(z, torch.linalg.inv(self.weight())), (-self.log_s.sum() * spatial).expand(z.shape[0])
