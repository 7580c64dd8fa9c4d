r"""The maximum mean discrepancy between two samples, the penalty of the Wasserstein autoencoder.

For a kernel k and samples x_1..x_n ~ P, y_1..y_m ~ Q, the unbiased estimate (Gretton et al.
2012, the U-statistic) of

    MMD^2(P, Q) = E k(x, x') + E k(y, y') - 2 E k(x, y)

is

    1/(n(n-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j) - 2/(nm) sum_{i,j} k(x_i, y_j);

its expectation is exactly MMD^2 (0 when P = Q), so it can be negative.

Kernels: the inverse multiquadric k(x, y) = C / (C + |x - y|^2) that Tolstikhin et al. (2018)
use for WAE-MMD, summed over several scales C = 2 M sigma^2 s with s in ``IMQ_SCALES`` (M the
dimension, sigma^2 the prior's variance), and the Gaussian (RBF) kernel
exp(-|x - y|^2 / (2 l^2)) for which MMD^2 between Gaussians has a closed form (used in tests).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch

from dgmkit.errors import finite_at_least

__all__ = [
    "mmd2_unbiased",
    "imq_kernel",
    "rbf_kernel",
    "kernel_words",
    "InverseMultiquadric",
    "RadialBasis",
    "IMQ_SCALES",
]

IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)

Kernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _sq_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|x_i - y_j|^2 (n, m), clamped at 0 against rounding."""
    return (x.square().sum(-1)[:, None] + y.square().sum(-1)[None, :] - 2 * x @ y.T).clamp_min(0)


@dataclass(frozen=True)
class InverseMultiquadric:
    """k(x, y) = sum_s C_s / (C_s + |x - y|^2), C_s = 2 M prior_variance s (Tolstikhin et al.
    2018), M the dimension of x and y; an object (not a closure), so that a model holding it pickles."""

    prior_variance: float = 1.0
    scales: tuple[float, ...] = IMQ_SCALES

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(self.scales))  # (frozen: any sequence given, kept as a tuple)
        finite_at_least("the inverse multiquadric kernel's prior variance", self.prior_variance, 0, strict=True)
        if not self.scales:
            raise ValueError("the inverse multiquadric kernel needs at least one scale")
        for i, scale in enumerate(self.scales):
            finite_at_least(f"the inverse multiquadric kernel's scales[{i}]", scale, 0, strict=True)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d2 = _sq_dist(x, y)
        base = 2.0 * x.shape[-1] * self.prior_variance
        return cast(torch.Tensor, sum(base * s / (base * s + d2) for s in self.scales))  # scales: not empty, checked


@dataclass(frozen=True)
class RadialBasis:
    """k(x, y) = exp(-|x - y|^2 / (2 l^2)), l the ``lengthscale``."""

    lengthscale: float = 1.0

    def __post_init__(self) -> None:
        finite_at_least("the Gaussian kernel's lengthscale", self.lengthscale, 0, strict=True)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.exp(-_sq_dist(x, y) / (2 * self.lengthscale**2))


def imq_kernel(prior_variance: float = 1.0, scales: Sequence[float] = IMQ_SCALES) -> Kernel:
    """The inverse multiquadric kernel (``InverseMultiquadric``) of a prior variance and scales."""
    return InverseMultiquadric(prior_variance, tuple(scales))


def rbf_kernel(lengthscale: float = 1.0) -> Kernel:
    """The Gaussian kernel exp(-|x - y|^2 / (2 l^2)) (``RadialBasis``)."""
    return RadialBasis(lengthscale)


def kernel_words(kernel: Kernel) -> str:
    """The kernel in words, for a report: the inverse multiquadric, the Gaussian of its lengthscale,
    or a kernel of one's own."""
    if isinstance(kernel, InverseMultiquadric):
        return "inverse multiquadric kernel"
    if isinstance(kernel, RadialBasis):
        return f"Gaussian kernel of lengthscale {kernel.lengthscale:g}"
    return "the model's own kernel"


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, kernel: Kernel) -> torch.Tensor:
    """The unbiased estimate of MMD^2 between samples x (n, M) and y (m, M), n, m >= 2 (a
    scalar tensor, differentiable in both)."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or x.shape[1] < 1:
        raise ValueError(
            f"need samples (n, M) and (m, M) of the same dimension M >= 1, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    dtype = torch.promote_types(x.dtype, y.dtype)  # (float32 and float64 was the kernel's matmul RuntimeError)
    if not dtype.is_floating_point:  # (codes of integers: the default float)
        dtype = torch.get_default_dtype()
    x, y = x.to(dtype), y.to(dtype)
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 points in each sample, got {n} and {m}")
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return xx + yy - 2 * kxy.mean()
