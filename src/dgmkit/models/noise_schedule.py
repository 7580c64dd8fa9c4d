"""Noise schedules of Gaussian diffusion, as the log signal-to-noise ratio's negative
gamma(t) = log(sigma_t^2 / alpha_t^2) over t in [0, 1], increasing (Kingma et al. 2021).

The diffusion is variance preserving: alpha_t^2 = sigmoid(-gamma(t)), sigma_t^2 =
sigmoid(gamma(t)). Every schedule returns gamma(t) and its derivative dgamma/dt, which weights
the continuous-time loss.

- ``LearnedSchedule``: VDM's monotone network, gamma(t) = gamma_0 + (gamma_1 - gamma_0)
  (g(t) - g(0)) / (g(1) - g(0)) with g a sum of a positive-weight linear map and a
  positive-weight sigmoid layer, so that gamma is increasing for any parameters. The endpoints
  gamma_0 and gamma_1 are learned by the bound (gamma_1 kept above gamma_0: their gap passes
  through a softplus); in continuous time the shape in between does not change the bound, only
  its variance, and is trained to reduce the variance (``variance_gradient``); with T steps it
  changes the bound, and the bound trains it.
- ``LinearSchedule``: gamma linear from gamma_0 to gamma_1 (VDM's fixed baseline).
- ``DDPMSchedule``: Ho et al. 2020's linear betas over T steps in their continuous form
  (Song et al. 2021's variance-preserving SDE): log alpha_bar(tau) = -(b0 tau + (b1 - b0) tau^2 / 2)
  with b0 = 0.1, b1 = 20 for tau in [1/T, 1], so gamma = log(expm1(b0 tau + (b1 - b0) tau^2 / 2)).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from dgmkit.errors import whole_at_least

__all__ = ["NoiseSchedule", "LearnedSchedule", "LinearSchedule", "DDPMSchedule", "SCHEDULES", "variance_gradient"]


class NoiseSchedule(nn.Module):
    """gamma(t), increasing on [0, 1]; ``forward(t)`` returns (gamma(t), dgamma/dt(t)), computed
    in the wider of t's and the parameters' dtypes (float64 times give float64 values in a
    float32 model, as float32 times do in a float64 one)."""

    learned_shape = False  # whether the shape between the endpoints has parameters

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def endpoints(self) -> tuple[torch.Tensor, torch.Tensor]:
        g, _ = self(torch.linspace(0.0, 1.0, 2, device=self._device()))  # (made there: no copy from the host)
        return g[0], g[1]

    def _device(self) -> torch.device:
        p = next(self.parameters(), None)
        b = next(self.buffers(), None)
        return p.device if p is not None else (b.device if b is not None else torch.device("cpu"))


class _ScaleShapeGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient of each example by ``holder[0]`` (B,)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dx: torch.Tensor, holder: list) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
        ctx.holder = holder
        return x.view_as(x), dx.view_as(dx)

    @staticmethod
    def backward(ctx, gx: torch.Tensor, gdx: torch.Tensor) -> tuple:  # noqa: ANN001
        scale = ctx.holder[0] if ctx.holder else None
        if scale is None:
            return gx, gdx, None
        return gx * scale, gdx * scale, None


def variance_gradient(shape: torch.Tensor, dshape: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], list]:
    """The shape of a learned schedule, made to receive a per-example multiple of its gradient
    (VDM section 5.2: in continuous time E[L] does not depend on the shape, so minimising
    E[L^2] = Var[L] + E[L]^2 lowers the variance). Returns the pass-through tensors and a holder;
    put the per-example factor (B,) into ``holder`` before backward: L / mean(L) gives the
    gradient of E[L^2] / (2 E[L]), the variance's direction at the scale of the loss."""
    holder: list = []
    return _ScaleShapeGradient.apply(shape, dshape, holder), holder


class LearnedSchedule(NoiseSchedule):
    """VDM's monotone network with learned endpoints (initialised at ``gamma_0``, ``gamma_1``)."""

    learned_shape = True

    def __init__(self, gamma_0: float = -13.3, gamma_1: float = 5.0, hidden: int = 1024):
        super().__init__()
        _increasing(gamma_0, gamma_1)
        whole_at_least("hidden", hidden, 1)
        self.gamma_0 = nn.Parameter(torch.tensor(float(gamma_0)))
        # gamma(1) = gamma_0 + softplus(self.gamma_1 - gamma_0): the inverse softplus of the gap starts it at gamma_1
        # (gamma_1 itself started gamma(1) at 0.31 for the ends -1 and 0; the same within float32's rounding from a
        # gap of 17 up, VDM's 18.3 included)
        gap = float(gamma_1) - float(gamma_0)
        self.gamma_1 = nn.Parameter(torch.tensor(float(gamma_0) + gap + math.log(-math.expm1(-gap))))
        # positive weights through softplus of free parameters; initialised near a linear map
        self.w1 = nn.Parameter(torch.tensor(1.0))
        self.b1 = nn.Parameter(torch.tensor(0.0))
        self.w2 = nn.Parameter(torch.randn(hidden) * 0.1)
        self.b2 = nn.Parameter(torch.randn(hidden) * 0.1)
        self.w3 = nn.Parameter(torch.full((hidden,), -6.0))  # softplus(-6) = 0.0025: the sigmoid layer starts small
        self.pending: list | None = None  # the holder of the last forward with the variance gradient

    def _g(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = torch.promote_types(t.dtype, self.w1.dtype)
        t = t.to(dtype)
        w1, b1, w2, b2, w3 = (getattr(self, name).to(dtype) for name in ("w1", "b1", "w2", "b2", "w3"))
        w1, w2, w3 = F.softplus(w1), F.softplus(w2), F.softplus(w3)
        u = w1 * t + b1  # (B,)
        a = u[..., None] * w2 + b2  # (B, H)
        s = torch.sigmoid(a)
        g = u + (s * w3).sum(-1)
        dg = w1 + (s * (1 - s) * w2 * w3).sum(-1) * w1
        return g, dg

    def shape(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised shape in [0, 1] and its derivative, both (B,)."""
        g, dg = self._g(t)
        ends, _ = self._g(torch.linspace(0.0, 1.0, 2, device=t.device, dtype=t.dtype))  # (made there: no copy)
        span = ends[1] - ends[0]
        return (g - ends[0]) / span, dg / span

    def forward(self, t: torch.Tensor, for_variance: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        shape, dshape = self.shape(t)
        if for_variance:
            (shape, dshape), self.pending = variance_gradient(shape, dshape)
        dtype = torch.promote_types(t.dtype, self.gamma_0.dtype)
        gamma_0, gamma_1 = self.gamma_0.to(dtype), self.gamma_1.to(dtype)
        span = F.softplus(gamma_1 - gamma_0)  # > 0: the schedule increases whatever the parameters
        return gamma_0 + span * shape, span * dshape


def _increasing(gamma_0: float, gamma_1: float) -> None:
    if not (math.isfinite(gamma_0) and math.isfinite(gamma_1) and gamma_0 < gamma_1):
        raise ValueError(f"a noise schedule increases: gamma_0 < gamma_1, both finite; got {gamma_0} and {gamma_1}")


class LinearSchedule(NoiseSchedule):
    """gamma(t) = gamma_0 + (gamma_1 - gamma_0) t, fixed."""

    ends: torch.Tensor

    def __init__(self, gamma_0: float = -13.3, gamma_1: float = 5.0):
        super().__init__()
        _increasing(gamma_0, gamma_1)
        self.register_buffer("ends", torch.tensor([float(gamma_0), float(gamma_1)]))

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = t.to(torch.promote_types(t.dtype, self.ends.dtype))
        g0, g1 = self.ends.to(t.dtype).unbind()
        return g0 + (g1 - g0) * t, (g1 - g0).expand_as(t)


class DDPMSchedule(NoiseSchedule):
    """Ho et al. 2020's linear betas (1e-4 to 0.02 over ``steps`` = 1000), in continuous time."""

    params: torch.Tensor

    def __init__(self, steps: int = 1000, beta_min: float = 0.1, beta_max: float = 20.0):
        super().__init__()
        whole_at_least("steps", steps, 1)
        if not 0 < beta_min <= beta_max < math.inf:  # (NaN is never; decreasing betas would not be a schedule)
            raise ValueError(f"the betas need 0 < beta_min <= beta_max, both finite; got {beta_min} and {beta_max}")
        self.register_buffer("params", torch.tensor([1.0 / steps, beta_min, beta_max], dtype=torch.float64))

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eps, b0, b1 = self.params.to(t.device, torch.float64).unbind()  # (tensors: a read would wait for a GPU)
        tau = eps + (1 - eps) * t.double()
        a = b0 * tau + 0.5 * (b1 - b0) * tau**2  # -log alpha_bar
        gamma = torch.log(torch.expm1(a))
        dgamma = (b0 + (b1 - b0) * tau) * (1 - eps) / (-torch.expm1(-a))  # d/dtau log(e^a - 1) = a' e^a / (e^a - 1)
        return gamma.to(t.dtype), dgamma.to(t.dtype)


SCHEDULES = {"learned": LearnedSchedule, "linear": LinearSchedule, "ddpm": DDPMSchedule}
