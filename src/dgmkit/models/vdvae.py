r"""A very deep residual top-down VAE on images, in the style of VDVAE (Child 2021) and NVAE
(Vahdat & Kautz 2020).

- **Bottom-up**: a stem convolution, then at each resolution (e.g. 28, 14, 7 for 28x28 images)
  residual bottleneck blocks whose output a_r is kept, and 2x average pooling between them.
- **Top-down**: a learned state h at the lowest resolution passes through the latent layers,
  lowest resolution first, with nearest-neighbour 2x upsampling between resolutions. Each latent
  layer l at resolution r has C_z channels (z_l of shape (C_z, r, r)) and is a residual cell:

      p(z_l | z_{>l}) = N(mu_p, sigma_p),  (mu_p, sigma_p, dh) = f_p(h)        (generative)
      q(z_l | x, z_{>l}) = N(mu_q, sigma_q), (mu_q, sigma_q) = f_q([h, a_r])    (inference)
      h <- h + dh + W z_l;  h <- h + g(h)

  so p and q share the top-down state h (the posterior is top-down, like the Ladder VAE's, with
  a learned merge instead of precision weighting). The topmost layer's prior is the model's top
  prior (standard, mixture of Gaussians, VampPrior, flow) over its flattened z_L; the others'
  are Gaussians given the state. After the last latent layer, residual blocks at full
  resolution and a 1x1 convolution give the parameters of the likelihood head (Bernoulli,
  logistic mixture, ...).
- **Stability**: every scale is bounded, sigma = s_min + (s_max - s_min) sigmoid(u + c) (posterior
  scale bounds; c puts sigma = 1 at u = 0 where 1 lies between them, as for the defaults); the
  last convolution of each residual branch and of W is scaled by 1/sqrt(L) at initialisation
  (VDVAE), so the state's variance does not grow with the depth. Gradient-norm skipping, free
  bits per layer, KL warm-up and an EMA of the weights come from the Trainer and the objective.

It follows the hierarchical contract of ``models.hvae`` (``path``, ``draw``, ``descend``,
``closed_form_kl``, ``top``), so the per-layer ELBO, the importance-sampled likelihood, the
diagnostics and every figure apply unchanged. One top-down pass gives q, p and p(x | z) together
(``draw`` and ``joint_pass``): training and importance sampling never run it twice. Bits-back
coding (``dgmkit.coding``) runs the same pass a layer at a time (``top_down_steps``), choosing
each layer before the pass goes on.
"""

import math
from collections.abc import Iterable, Sequence
from typing import ClassVar, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, constraints

from dgmkit._rng import randn, seeded_by
from dgmkit.conditional.heads import LikelihoodHead
from dgmkit.distributions import DiagonalNormal, diagonal_normal
from dgmkit.distributions.sampling import rsample_and_log_prob
from dgmkit.models.base import LatentVariableModel
from dgmkit.models.hvae import LayerDraw, LayerStack, PosteriorPass, TopDownSteps, log_q_of
from dgmkit.priors import Prior

__all__ = ["DeepTopDownVAE", "BottleneckBlock"]


class BottleneckBlock(nn.Module):
    """GELU, 1x1 conv to ``mid``, two GELU-3x3 convs, GELU, 1x1 conv to ``out`` (VDVAE's block);
    ``residual``: x + block(x). ``out_scale`` multiplies the last convolution's initial weights."""

    def __init__(self, cin: int, mid: int, out: int, residual: bool = False, out_scale: float = 1.0):
        super().__init__()
        if residual and cin != out:
            raise ValueError("a residual block keeps its width")
        self.residual = residual
        self.c1 = nn.Conv2d(cin, mid, 1)
        self.c2 = nn.Conv2d(mid, mid, 3, padding=1)
        self.c3 = nn.Conv2d(mid, mid, 3, padding=1)
        self.c4 = nn.Conv2d(mid, out, 1)
        with torch.no_grad():
            self.c4.weight.mul_(out_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(F.gelu(x))
        y = self.c3(F.gelu(self.c2(F.gelu(y))))
        y = self.c4(F.gelu(y))
        return x + y if self.residual else y


def bounded_scale(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """lo + (hi - lo) sigmoid(u + c), with c such that u = 0 gives 1 where 1 lies in (lo, hi)."""
    c = math.log((1 - lo) / (hi - 1)) if lo < 1 < hi else 0.0
    return lo + (hi - lo) * torch.sigmoid(u + c)


class _LatentCell(nn.Module):
    """One latent layer of the top-down path (see the module docstring)."""

    def __init__(self, width: int, mid: int, zc: int, depth_scale: float, top: bool):
        super().__init__()
        self.zc, self.top = zc, top
        self.q = BottleneckBlock(2 * width, mid, 2 * zc)
        self.p = BottleneckBlock(width, mid, width if top else 2 * zc + width, out_scale=depth_scale)
        self.z_in = nn.Conv2d(zc, width, 1)
        with torch.no_grad():
            self.z_in.weight.mul_(depth_scale)
        self.res = BottleneckBlock(width, mid, width, residual=True, out_scale=depth_scale)

    def prior_part(
        self, h: torch.Tensor, lo: float, hi: float
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """(mu_p, sigma_p, dh); the top cell has no Gaussian prior of its own (None, None, dh)."""
        out = self.p(h)
        if self.top:
            return None, None, out
        mu, u, dh = out.split([self.zc, self.zc, out.shape[1] - 2 * self.zc], 1)
        return mu, bounded_scale(u, lo, hi), dh

    def posterior_part(self, h: torch.Tensor, a: torch.Tensor, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
        mu, u = self.q(torch.cat([h, a], 1)).chunk(2, 1)
        return mu, bounded_scale(u, lo, hi)

    def absorb(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.res(h + self.z_in(z))


def _upsampled(h: torch.Tensor, r: int) -> torch.Tensor:
    """The state h doubled in size (nearest neighbour) until it is r x r."""
    while h.shape[-1] < r:
        h = F.interpolate(h, scale_factor=2, mode="nearest")
    return h


def _flat_normal(mu: torch.Tensor, sigma: torch.Tensor, lead: tuple[int, ...]) -> DiagonalNormal:
    """(N, C, r, r) parameters -> a DiagonalNormal over the flattened layer with batch ``lead``."""
    return diagonal_normal(mu.reshape(*lead, -1), sigma.reshape(*lead, -1))


def _check_geometry(hgt: int, wid: int, res: list[int], layers: Sequence[int], scale_bounds: tuple[float, float]) -> None:
    """The deep top-down VAE's shape: latent layers at resolutions that double up to the square
    image by further doublings, and scale bounds 0 < min < max."""
    if len(res) != len(layers) or not res or any(n < 1 for n in layers):
        raise ValueError("need one positive number of latent layers per resolution")
    ratio = hgt // res[-1] if hgt % res[-1] == 0 else 0
    if hgt != wid or any(b != 2 * a for a, b in zip(res, res[1:])) or ratio == 0 or ratio & (ratio - 1):
        raise ValueError(
            f"the resolutions {res} must double from one to the next and reach {hgt}x{wid} by further doublings"
        )
    lo, hi = scale_bounds
    if not 0 < lo < hi:
        raise ValueError(f"the scale bounds must satisfy 0 < min < max, got {scale_bounds}")


class DeepTopDownVAE(LayerStack, LatentVariableModel):
    """See the module docstring. ``resolutions``: the latent resolutions, lowest first (each
    twice the one before, the last dividing the image); ``layers``: latent layers at each;
    ``width``: channels of the state; ``mid``: the blocks' bottleneck width; ``latent_channels``
    C_z; ``blocks``: bottom-up residual blocks per resolution (and output blocks at full size)."""

    sample_means: ClassVar[bool] = True
    inference: ClassVar[str] = "top-down"
    coding: ClassVar[Literal["sequential", "bits-back"] | None] = "bits-back"

    def __init__(
        self,
        event_shape: Sequence[int],
        head: LikelihoodHead,
        top_prior: Prior,
        resolutions: Sequence[int] = (7, 14),
        layers: Sequence[int] = (8, 8),
        width: int = 64,
        mid: int = 16,
        latent_channels: int = 4,
        blocks: int = 1,
        scale_bounds: tuple[float, float] = (1e-3, 10.0),
        input_scale: float = 1.0,
    ):
        super().__init__()
        c, hgt, wid = (int(v) for v in event_shape)
        res = [int(r) for r in resolutions]
        _check_geometry(hgt, wid, res, layers, scale_bounds)
        lo, hi = scale_bounds
        self.event_shape = (c, hgt, wid)
        self.head = head
        self.top_prior = top_prior
        self.resolutions = res
        self.layers_at = [int(n) for n in layers]
        self.width, self.latent_channels, self.scale_bounds = width, latent_channels, (float(lo), float(hi))
        self.input_scale = float(input_scale)
        # every resolution of the bottom-up pass, full size down to the lowest latent one
        self.pyramid = [hgt]
        while self.pyramid[-1] > res[0]:
            self.pyramid.append(self.pyramid[-1] // 2)
        total = sum(self.layers_at)
        depth_scale = 1.0 / math.sqrt(total)
        self.stem = nn.Conv2d(c, width, 3, padding=1)
        self.up_blocks = nn.ModuleList(
            nn.Sequential(*[BottleneckBlock(width, mid, width, residual=True, out_scale=depth_scale) for _ in range(blocks)])
            for _ in self.pyramid
        )
        self.h0 = nn.Parameter(torch.zeros(1, width, res[0], res[0]))
        self.cells = nn.ModuleList(_LatentCell(width, mid, latent_channels, depth_scale, top=(i == 0)) for i in range(total))
        self.cell_res = [r for r, n in zip(res, self.layers_at) for _ in range(n)]
        self.out_blocks = nn.Sequential(
            *[BottleneckBlock(width, mid, width, residual=True, out_scale=depth_scale) for _ in range(blocks)]
        )
        self.out = nn.Conv2d(width, c * head.params_per_pixel, 1)
        # layer sizes, index 0 next to x (drawn last): the contract's order
        self.sizes = [latent_channels * r * r for r in reversed(self.cell_res)]
        if top_prior.latent_dim != self.sizes[-1]:
            raise ValueError(f"the top prior must be over {self.sizes[-1]} dimensions, got {top_prior.latent_dim}")

    @property
    def data_support(self) -> constraints.Constraint:
        return self.head.support

    @property
    def coding_levels(self) -> int | None:
        return self.head.num_levels if self.head.discrete else None

    @property
    def draws_top_down(self) -> bool:
        return True

    # ------------------------------------------------------------ shapes
    def closed_form_kl(self, index: int) -> bool:
        return True  # top-down: every layer's prior conditions on layers drawn before it

    # ------------------------------------------------------------ passes
    def _bottom_up(self, x: torch.Tensor, scale: bool = True) -> dict[int, torch.Tensor]:
        x = x.to(self.h0.dtype)  # (integers, or floats of another precision: float64 failed in float32 layers)
        if scale and self.input_scale != 1.0:
            x = x * self.input_scale
        h = self.stem(x)
        acts = {}
        for i, (r, block) in enumerate(zip(self.pyramid, self.up_blocks)):
            if i:
                h = F.avg_pool2d(h, 2)
            h = block(h)
            acts[r] = h
        return acts

    def _top_down(
        self,
        n: int,
        lead: tuple[int, ...],
        acts: dict[int, torch.Tensor] | None,
        given: list[torch.Tensor] | None,
        generator: torch.Generator | None,
        means: bool,
        z_top: torch.Tensor | None = None,
    ) -> tuple[list[LayerDraw], torch.Tensor, torch.Tensor]:
        """One pass for n = prod(lead) rows: with ``acts`` (bottom-up activations, n rows) each
        layer is drawn from q (or taken from ``given``, layers in drawing order, each (*lead,
        M_l)); without, from p (after ``z_top``, the top layer, if given). Returns the draws in
        drawing order, the joint z (*lead, sum M_l) and the last state h (``_head_params``)."""
        h = self.h0.expand(n, -1, -1, -1)
        top_dist = self.top() if acts is None and z_top is None and given is None else None
        draws = []
        total = len(self.cells)
        for j, (cell, r) in enumerate(zip(cast(Iterable[_LatentCell], self.cells), self.cell_res)):
            h = _upsampled(h, r)
            p, q, dh = self._cell_dists(cell, h, None if acts is None else acts[r], lead)
            index = total - 1 - j
            if given is not None:
                z = given[j]
            elif j == 0 and z_top is not None:
                z = z_top
            else:
                dist = q if q is not None else p
                if dist is None:  # the top layer, generating: the top prior
                    assert top_dist is not None  # neither acts, nor z_top, nor given
                    z, _ = rsample_and_log_prob(top_dist, lead, generator, device=h.device)
                elif means:
                    z = dist.mean
                else:
                    eps = randn(dist.mean.shape, generator, device=h.device, dtype=h.dtype)
                    z = dist.mean + dist.stddev * eps
            # the top layer's q reads x and the constant start state alone; each below, the layers drawn before it
            of_x = j == 0 and q is not None
            draws.append(LayerDraw(index, q if q is not None else p, z, p, of_x))  # type: ignore[arg-type]  # None at the top when generating; not read
            h = cell.absorb(h + dh, z.reshape(n, self.latent_channels, r, r))
        return draws, torch.cat([d.z for d in reversed(draws)], -1), h

    def _head_params(self, h: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
        """The likelihood head's parameters (*lead, C, P, H, W) from a top-down pass's last state."""
        c, hh, ww = self.event_shape
        params = self.out(self.out_blocks(_upsampled(h, hh)))
        return params.reshape(*lead, c, self.head.params_per_pixel, hh, ww)

    def top_down_steps(self, x: torch.Tensor | None, n: int) -> TopDownSteps:
        """``LayerStack.top_down_steps``: the top-down pass a layer at a time."""
        acts = None if x is None else self._bottom_up(x)
        h = self.h0.expand(n, -1, -1, -1)
        for j, (cell, r) in enumerate(zip(cast(Iterable[_LatentCell], self.cells), self.cell_res)):
            h = _upsampled(h, r)
            p, q, dh = self._cell_dists(cell, h, None if acts is None else acts[r], (n,))
            z = yield len(self.cells) - 1 - j, p, q
            h = cell.absorb(h + dh, z.reshape(n, self.latent_channels, r, r))

    def _cell_dists(
        self, cell: _LatentCell, h: torch.Tensor, act: torch.Tensor | None, lead: tuple[int, ...]
    ) -> tuple[DiagonalNormal | None, DiagonalNormal | None, torch.Tensor]:
        """A cell's prior p (None at the top: the top prior), its posterior q given the bottom-up
        activation ``act`` (None without one) and its prior branch's update of the state h."""
        lo, hi = self.scale_bounds
        mu_p, sd_p, dh = cell.prior_part(h, lo, hi)
        p = None if mu_p is None or sd_p is None else _flat_normal(mu_p, sd_p, lead)
        q = None
        if act is not None:
            mu_q, sd_q = cell.posterior_part(h, act, lo, hi)
            q = _flat_normal(mu_q, sd_q, lead)
        return p, q, dh

    def _expanded_acts(self, x: torch.Tensor, sample_shape: tuple[int, ...]) -> tuple[dict, int, tuple[int, ...]]:
        acts = self._bottom_up(x)  # once per datapoint, whatever the number of draws
        lead = (*sample_shape, len(x))
        n = math.prod(lead)
        if sample_shape:  # copied per draw: only the resolutions the latent cells read (not the input's, the largest)
            read = set(self.cell_res)
            acts = {r: a.expand(*sample_shape, *a.shape).reshape(n, *a.shape[1:]) for r, a in acts.items() if r in read}
        return acts, n, lead

    def _with_given(self, given: torch.Tensor | None) -> list[torch.Tensor] | None:
        return None if given is None else list(reversed(self.split(given)))

    def _posterior_pass(
        self, x: torch.Tensor, how: PosteriorPass, output: bool
    ) -> tuple[list[LayerDraw], Distribution | None]:
        """One top-down pass of the posterior: its draws in drawing order, top first (the top
        one's p is None: the top prior), and p(x | z) (if ``output``)."""
        acts, n, lead = self._expanded_acts(x, tuple(how.sample_shape))
        draws, _, h = self._top_down(n, lead, acts, self._with_given(how.given), how.generator, how.means)
        draws[0].p = None
        return draws, self.head(self._head_params(h, lead)) if output else None

    def joint_pass(
        self, x: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """k posterior draws per datapoint and their log p(x | z), log p(z), log q(z | x), each
        (k, B), from one top-down pass (the importance weights' terms)."""
        draws, px = self._posterior_pass(x, PosteriorPass((k,), generator=generator), output=True)
        z = torch.cat([d.z for d in reversed(draws)], -1)
        log_q = log_q_of(draws)
        log_p = self.top().log_prob(draws[0].z) + sum(cast(DiagonalNormal, d.p).log_prob(d.z) for d in draws[1:])
        assert px is not None  # output=True
        return z, px.log_prob(x), log_p, log_q

    def descend(self, z_top: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Complete top-layer draws (*batch, M_L) from the layer priors: z and log prod_{l<L} p."""
        lead = tuple(z_top.shape[:-1])
        draws, z, _ = self._top_down(math.prod(lead), lead, None, None, generator, False, z_top=z_top)
        return z, sum((cast(DiagonalNormal, d.p).log_prob(d.z) for d in draws[1:]), z_top.new_zeros(lead))

    # ------------------------------------------------------------ contract
    def top_posterior(self, u: torch.Tensor) -> DiagonalNormal:
        """q(z_L | u) for network inputs u: the top layer's posterior depends on x alone (the
        VampPrior's components at its pseudo-inputs)."""
        acts = self._bottom_up(u, scale=False)
        lo, hi = self.scale_bounds
        h = self.h0.expand(len(u), -1, -1, -1)
        mu, sd = cast(_LatentCell, self.cells[0]).posterior_part(h, acts[self.cell_res[0]], lo, hi)
        return _flat_normal(mu, sd, (len(u),))

    def log_prob_below(self, z: torch.Tensor) -> torch.Tensor:
        """sum_{l<L} log p(z_l | z_{>l}) for joint latents z (*batch, sum M_l), one top-down pass."""
        lead = tuple(z.shape[:-1])
        draws, _, _ = self._top_down(math.prod(lead), lead, None, self._with_given(z), None, False)
        return sum((cast(DiagonalNormal, d.p).log_prob(d.z) for d in draws[1:]), z.new_zeros(lead))

    def _head_params_at(self, z: torch.Tensor, what: str) -> torch.Tensor:
        """The likelihood head's parameters (*batch, C, P, H, W) at joint latents z (*batch, sum M_l),
        checked first (``checked_latents``): ``what`` was given them."""
        z = self.checked_latents(z, what)
        lead = tuple(z.shape[:-1])
        return self._head_params(self._top_down(math.prod(lead), lead, None, self._with_given(z), None, False)[2], lead)

    def likelihood(self, z: torch.Tensor) -> Distribution:
        return self.head(self._head_params_at(z, "p(x|z)"))

    def pixel_log_pmf(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x_d = v | z) of every value v of every pixel, (*batch, C, H, W, L) in float64."""
        return self.head.pixel_log_pmf(self._head_params_at(z, "pixel_log_pmf (each pixel's pmf given z)").movedim(-3, -1))

    sample_kind = "float"

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _, z, h = self._top_down(n, (n,), None, None, generator, False)
        px = self.head(self._head_params(h, (n,)))
        with seeded_by(generator, z.device):
            return px.sample(), px.mean
