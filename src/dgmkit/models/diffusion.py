"""Diffusion models of quantized data, scored by their variational bound.

A diffusion model is a hierarchical VAE whose encoder is fixed: q(z_t | x) adds noise (or
masks) more and more as t goes from 0 to 1, and the model learns to undo one step at a time.
Its negative ELBO is a sum of three terms in nats, each per datapoint:

    -ELBO = KL(q(z_1|x) || p(z_1))              the prior term
          + E_q[-log p(x | z_0)]                the reconstruction term
          + sum over steps of KL(q(z_s|z_t,x) || p(z_s|z_t))   the diffusion term

``bound_terms(x, t)`` gives the three for one time t per datapoint, the diffusion term as an
unbiased one-time-sample estimate of the whole sum (continuous time: an integral over t; T
steps: T times one step's term), so that averaging over t in [0, 1] estimates the bound.

- ``GaussianDiffusion``: variational diffusion (Kingma et al. 2021, VDM) on data with L levels,
  scaled to x = 2 (k + 1/2) / L - 1 in [-1, 1]: z_t = alpha_t x + sigma_t eps with
  alpha_t^2 = sigmoid(-gamma(t)), sigma_t^2 = sigmoid(gamma(t)) (``noise_schedule``); a U-Net
  predicts eps. The reconstruction p(x | z_0) is a categorical over the L levels with logits
  -(z_0 / alpha_0 - v)^2 / (2 sigma_0^2 / alpha_0^2) at each level's value v. Continuous
  time: 1/2 gamma'(t) ||eps - eps_hat||^2; T steps: T/2 expm1(gamma(t) - gamma(s)) ||eps - eps_hat||^2
  with s = t - 1/T. Ho et al. 2020's DDPM is the case of the fixed ``DDPMSchedule`` (their
  linear betas in continuous form, z_0 at their first noise level and z_1 at their last, so that
  T = 1000 steps span their 999 intervals), with the simple loss ||eps - eps_hat||^2 (an objective's choice,
  ``objectives.diffusion``).
- ``MaskedDiffusion``: absorbing-state diffusion on data with L levels (binary images: L = 2):
  each entry is replaced by a mask token with probability t (Austin et al. 2021; Shi et al.
  and Sahoo et al. 2024). The network predicts p(x_d | z_t) for every masked entry; the
  diffusion term is (1/t) sum over masked d of -log p(x_d | z_t), continuous or at t = j / T.
  Its mean is the bound; in continuous time its variance is unbounded as t -> 0 (a few masked
  entries weighted by 1/t), so T steps give steadier estimates. Evaluation in continuous time
  uses the same bound written as a sum over the number m of masked entries (the t-integral of
  t^(m-1) (1-t)^(D-m) is 1 / (m C(D, m))):

      -ELBO = sum_{m=1..D} (1/m) E_{t ~ Beta(m, D-m+1), S uniform of size m} sum_{d in S} -log p(x_d | z_t)

  estimated with m stratified over 1..D, t the m-th smallest of D uniforms and S the entries
  whose uniforms lie at or below it (exactly m of them, uniformly chosen): D times the mean of m
  terms, bounded, so of finite variance.
  z_1 is all masks under q and p and z_0 = x: the prior and reconstruction terms are 0.
"""

import math
from typing import ClassVar, cast

import torch
from torch import nn
from torch.distributions import constraints
from torch.nn import functional as F

from dgmkit._rng import checked_generator, seeded_by
from dgmkit.devices import reads_are_free
from dgmkit.distributions.categorical import one_hot
from dgmkit.errors import plural, shown_value, whole_at_least
from dgmkit.models.base import (
    MAX_SAMPLE_STEPS,
    AnyOrderModel,
    GenerativeModel,
    TimeSampledBound,
    data_batch,
    sampling_steps,
)
from dgmkit.models.noise_schedule import LearnedSchedule, NoiseSchedule
from dgmkit.nn.unet import UNet

__all__ = ["GaussianDiffusion", "MaskedDiffusion", "stratified_times", "sampling_steps", "MAX_SAMPLE_STEPS"]

_TIMES = (
    "stratified times: per datapoint two independent sets of K/2, (u_r + 2m/K) mod 1 (one set of K for odd K); "
    "in training, (u + i/B) mod 1 over the batch"
)
_COUNTS = (
    "stratified counts of masked entries: per datapoint two independent sets of K/2 stratified u (one set of K for "
    "odd K); m = floor(u D) + 1 entries masked, at t the m-th smallest of D uniforms, scored D/m times their sum "
    "(bounded: a finite variance)"
)
# the log-SNR range that the network's noise-level embedding maps to [0, 1000] (VDM's)
_GAMMA_RANGE = (-13.3, 5.0)


def stratified_times(n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """n times in [0, 1) of low discrepancy: (u + i / n) mod 1 with one uniform u (VDM): each
    is uniform, and together they cover [0, 1) evenly, which lowers the variance of a mean."""
    checked_generator(generator)
    # drawn where the generator lives (the device's default one without a generator: no copy, no wait)
    u = torch.rand((), generator=generator, device=generator.device if generator is not None else device).to(device)
    return torch.remainder(u + torch.arange(n, device=device, dtype=torch.float32) / n, 1.0)


def _checked_times(t: object, x: torch.Tensor, what: str) -> torch.Tensor:
    """``bound_terms``' times: a real tensor (B,), one per datapoint of x, within [0, 1] (values
    looked at where the host reads them at no cost: ``reads_are_free``). Times (B, 1) broadcast
    against the batch into a (B, B) diffusion term, and a time of 1.5 (continuous: gamma beyond
    gamma(1)) or NaN was scored as a number of no bound."""
    if not isinstance(t, torch.Tensor) or t.is_complex() or t.dtype == torch.bool:
        got = f"a tensor of {t.dtype}" if isinstance(t, torch.Tensor) else shown_value(t)
        raise TypeError(f"{what} takes the times as a real torch tensor ({len(x)},), got {got}")
    if tuple(t.shape) != (len(x),):
        raise ValueError(f"{what} takes one time per datapoint, a tensor ({len(x)},), got shape {tuple(t.shape)}")
    if reads_are_free(t) and not bool(((t >= 0) & (t <= 1)).all()):  # (NaN is in no interval)
        bad = t[~((t >= 0) & (t <= 1))]
        raise ValueError(f"{what}'s times lie in [0, 1]; got {plural(len(bad), 'time')} outside, e.g. {bad[0].item()}")
    return t


def _checked_data(model: GenerativeModel, x: torch.Tensor) -> torch.Tensor:
    """``bound_terms``' data x, refused by the model's ``check_data`` (its levels 0..L-1, whole
    numbers) where the host reads them at no cost (``reads_are_free``, as the times are): 2.5 was
    scored as the level 2 (``long()``), and L or -1 met a raw IndexError inside."""
    if reads_are_free(x) and x.dtype != torch.bool:
        model.check_data(x)
    return x


def _step(t: torch.Tensor, steps: int) -> torch.Tensor:
    """t in [0, 1) to the index i in 1..T of its step, the one that ends at i / T (float64)."""
    return torch.clamp(torch.floor(t.double() * steps) + 1, 1, steps)


def _discretize(t: torch.Tensor, steps: int) -> torch.Tensor:
    """t in [0, 1) to the end of its step, i / T (in t's dtype)."""
    return (_step(t, steps) / steps).to(t.dtype)


class GaussianDiffusion(TimeSampledBound, GenerativeModel):
    """VDM on images of shape (C, H, W) with ``num_levels`` levels (see the module docstring).

    ``steps``: T discrete steps, or 0 for continuous time. ``net``: a U-Net from
    (z_t, noise level) to eps_hat."""

    levels: torch.Tensor

    estimate_kind: ClassVar[str] = "time-sampled"
    sample_steps: ClassVar[bool] = True
    eps_error: ClassVar[bool] = True

    def __init__(self, net: UNet, schedule: NoiseSchedule, event_shape: tuple[int, ...], num_levels: int, steps: int = 0):
        super().__init__()
        # (16.7 levels were taken as 16 with 17 level values, 3.7 steps as 3, and NaN steps failed in int())
        whole_at_least("gaussian diffusion's num_levels", num_levels, 2)
        whole_at_least("steps (0: continuous time)", steps, 0)
        with torch.no_grad():
            ends = schedule.endpoints()
        if not ends[0].is_meta:  # (meta: a run loaded from its checkpoint, its schedule checked by its config)
            g0, g1 = float(ends[0]), float(ends[1])
            if not (math.isfinite(g0) and math.isfinite(g1) and g0 < g1):  # (decreasing: a "bound" above log 1)
                raise ValueError(f"the noise schedule must increase, gamma(0) < gamma(1) and both finite; got {g0} and {g1}")
        self.net, self.schedule = net, schedule
        self.event_shape = tuple(event_shape)
        self.num_levels, self.steps = int(num_levels), int(steps)
        self.register_buffer("levels", (2 * torch.arange(num_levels, dtype=torch.float32) + 1) / num_levels - 1)

    @property
    def data_support(self) -> constraints.Constraint:
        """The integer levels 0..L-1 it models."""
        return constraints.integer_interval(0, self.num_levels - 1)

    @property
    def variance_reduction(self) -> str:
        return _TIMES

    @property
    def default_sample_steps(self) -> int:
        return self.steps or 250

    def scale(self, k: torch.Tensor) -> torch.Tensor:
        """Integers 0..L-1 to the centres of L equal bins of [-1, 1]."""
        return self.levels[k.long()]

    def _step_gammas(
        self, step: torch.Tensor, steps: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """gamma(i / T) and gamma((i - 1) / T) in ``dtype`` for steps i (float64, (B,)), and their
        difference in float64: the two are 1/T apart, and float32's rounding of each (about 1e-6
        of values near 10) was up to a few percent of the difference at T = 100000."""
        g_t, _ = self.schedule(step / steps)  # (float64 times: float64 values, whatever the parameters' dtype)
        g_s, _ = self.schedule((step - 1) / steps)
        return g_t.to(dtype), g_s.to(dtype), g_t - g_s

    def eps_hat(self, z: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        lo, hi = _GAMMA_RANGE
        return self.net(z, 1000.0 * (gamma - lo) / (hi - lo))

    def _prior_kl(self, x: torch.Tensor, gamma_1: torch.Tensor) -> torch.Tensor:
        # sigma_1^2 - 1 - log sigma_1^2 = softplus(-gamma_1) - sigmoid(-gamma_1), about exp(-2 gamma_1) / 2, in float64:
        # float32's sigmoid(gamma_1) - 1 lost it (at gamma_1 = 15 the term of four entries read 1.9e-7 nats for 3.1e-7)
        g = gamma_1.double()
        var_term = (F.softplus(-g) - torch.sigmoid(-g)).to(x.dtype)
        mean2 = torch.sigmoid(-gamma_1) * x.square()
        return 0.5 * (var_term + mean2).flatten(1).sum(1)

    def _recon_logits(self, z0: torch.Tensor, gamma_0: torch.Tensor) -> torch.Tensor:
        """Logits (..., L) of p(x | z_0) over the levels for every entry of z_0."""
        rescaled = z0 / torch.sigmoid(-gamma_0).sqrt()
        return -0.5 * torch.exp(-gamma_0) * (rescaled.unsqueeze(-1) - self.levels).square()

    def _recon_nll(self, k: torch.Tensor, x: torch.Tensor, gamma_0: torch.Tensor) -> torch.Tensor:
        """-log p(x | z_0) at one draw of z_0 ~ q(z_0 | x), summed over the entries. The
        normaliser sums the levels within 12 standard deviations of z_0 / alpha_0 (and x's own),
        which leaves out less than L exp(-72) of it, on the CPU; every level where that window is
        most of them, and on a GPU or under torch.compile (``_window``)."""
        a0, s0 = torch.sigmoid(-gamma_0).sqrt(), torch.sigmoid(gamma_0).sqrt()
        z0 = a0 * x + s0 * torch.randn_like(x)
        u, prec = z0 / a0, torch.exp(-gamma_0)
        levels, width = self.num_levels, 2.0 / self.num_levels
        half = self._window(gamma_0)
        if half is None:
            logp = torch.log_softmax(self._recon_logits(z0, gamma_0), dim=-1)
            return -logp.gather(-1, k.long().unsqueeze(-1)).squeeze(-1).flatten(1).sum(1)
        centre = torch.round((u + 1) / width - 0.5).clamp(0, levels - 1)
        idx = centre.unsqueeze(-1) + torch.arange(-half, half + 1, device=x.device, dtype=u.dtype)
        # the level values x was scaled to (the buffer's: a float64 model's (2k + 1) / L - 1 recomputed in float64 missed
        # x's float32 ones by up to 3e-8, which exp(-gamma_0) made 2.7 nats of -log p(x|z_0) < 0 for 17 levels at -30)
        values = self.levels.to(u.dtype)[idx.clamp(0, levels - 1).long()]
        logits = -0.5 * prec * (u.unsqueeze(-1) - values).square()
        logits = logits.masked_fill((idx < 0) | (idx >= levels), float("-inf"))
        norm = torch.logsumexp(logits, dim=-1)
        own = -0.5 * prec * (u - x).square()
        outside = (k.to(u.dtype) - centre).abs() > half
        norm = torch.where(outside, torch.logaddexp(norm, own), norm)
        return -(own - norm).flatten(1).sum(1)

    def _window(self, gamma_0: torch.Tensor) -> int | None:
        """How many levels either side of z_0 / alpha_0 the normaliser of p(x | z_0) sums, or
        None for all of them. The window's size depends on gamma_0's value, which the host can
        read for free on the CPU only: on a GPU it waits for the device, and under torch.compile
        it ends the graph. There every level is summed: the same value (the window leaves out
        less than L exp(-72) of the normaliser) at no read, for L times the work of an
        elementwise term, which a GPU does in microseconds."""
        if not reads_are_free(gamma_0):
            return None
        levels, width = self.num_levels, 2.0 / self.num_levels
        g0 = float(gamma_0.detach())
        if not math.isfinite(g0) or 0.5 * g0 > math.log(levels * width):  # the window would hold every level
            return None
        half = math.ceil(12 * math.exp(0.5 * g0) / width) + 1
        return None if 2 * half + 1 >= levels else half

    def bound_terms(self, x: torch.Tensor, t: torch.Tensor, train: bool = False) -> dict[str, torch.Tensor]:
        """``prior``, ``recon``, ``diffusion`` (nats, (B,) each; their sum estimates -ELBO) and
        ``mse``, the mean squared error of eps_hat per entry (DDPM's simple loss), for integer
        images x (B, C, H, W) and times t (B,). ``train``: a learned schedule's shape receives
        the gradient of the squared diffusion term (its variance) instead of the term's."""
        k = _checked_data(self, data_batch(x, self.event_shape, "GaussianDiffusion.bound_terms"))
        t = _checked_times(t, k, "GaussianDiffusion.bound_terms")
        xs = self.scale(k)
        t = t.to(torch.promote_types(t.dtype, xs.dtype))  # (a float64 model: float64 times, as its network takes)
        gamma_0, gamma_1 = self.schedule.endpoints()
        step = None
        if self.steps:
            step = _step(t, self.steps)
            t = (step / self.steps).to(t.dtype)
        # continuous time: the shape leaves the bound unchanged and is trained for its variance;
        # with T steps the shape changes the bound itself, and the bound trains it
        variance = train and isinstance(self.schedule, LearnedSchedule) and not self.steps
        if variance:
            gamma_t, dgamma_t = self.schedule(t, for_variance=True)
        elif step is not None:
            gamma_t, _, gap = self._step_gammas(step, self.steps, t.dtype)
        else:
            gamma_t, dgamma_t = self.schedule(t)
        g = gamma_t.view(-1, *([1] * (xs.dim() - 1)))
        eps = torch.randn_like(xs)
        z = torch.sigmoid(-g).sqrt() * xs + torch.sigmoid(g).sqrt() * eps
        err = (eps - self.eps_hat(z, gamma_t)).square().flatten(1)
        if step is not None:
            weight = (0.5 * self.steps * torch.expm1(gap)).to(gamma_t.dtype)
        else:
            weight = 0.5 * dgamma_t
        diffusion = weight * err.sum(1)
        if variance:  # d E[L^2] / (2 E[L]): the variance's direction at the bound's scale (clipping stays meaningful)
            d = diffusion.detach()
            pending = cast(LearnedSchedule, self.schedule).pending
            assert pending is not None  # the schedule's forward for_variance, above
            pending.append(d / d.mean().clamp_min(torch.finfo(d.dtype).tiny))
        return {
            "prior": self._prior_kl(xs, gamma_1),
            "recon": self._recon_nll(k, xs, gamma_0),
            "diffusion": diffusion,
            "mse": err.mean(1),
        }

    sample_kind = "levels"

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, steps: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n images by ancestral sampling with ``steps`` steps from t = 1 to 0 (default: T, or
        250 in continuous time), then x ~ p(x | z_0). Returns (x, x)."""
        # (2.7 steps ran as 2)
        steps = self.default_sample_steps if steps is None else steps
        device, dtype = self.levels.device, self.levels.dtype  # (the model's precision, as it was cast)
        with seeded_by(generator, device):
            z = torch.randn(n, *self.event_shape, device=device, dtype=dtype)
            for i in range(steps, 0, -1):
                g_t, g_s, gap = self._step_gammas(
                    torch.full((n,), float(i), device=device, dtype=torch.float64), steps, dtype
                )
                eps_hat = self.eps_hat(z, g_t)
                shape = (-1, *([1] * len(self.event_shape)))
                g_t, g_s = g_t.view(shape), g_s.view(shape)
                c = -torch.expm1(-gap).to(dtype).view(shape)
                ratio = torch.sqrt(torch.sigmoid(-g_s) / torch.sigmoid(-g_t))
                mean = ratio * (z - c * torch.sigmoid(g_t).sqrt() * eps_hat)
                z = mean + torch.sqrt(c * torch.sigmoid(g_s)) * torch.randn_like(z)
            gamma_0, _ = self.schedule.endpoints()
            logits = self._recon_logits(z, gamma_0)
            x = torch.distributions.Categorical(logits=logits).sample()
        return x, x


class MaskedDiffusion(TimeSampledBound, AnyOrderModel, GenerativeModel):
    """Absorbing-state (masked) diffusion on images (C, H, W) with ``num_levels`` levels (see
    the module docstring). ``net`` maps the one-hot input (levels + mask: C (L + 1) channels)
    and the time to L logits per entry."""

    _device_probe: torch.Tensor

    estimate_kind: ClassVar[str] = "time-sampled"
    sample_steps: ClassVar[bool] = True
    # checked: 29 epochs of the widened preset in bf16 on an H100 reached 80.2 nats (issue 29),
    # and the compiled bf16 step ran 300 steps without a non-finite loss
    trains_in_bf16: ClassVar[bool] = True

    def __init__(
        self, net: nn.Module, event_shape: tuple[int, ...], num_levels: int, steps: int = 0, train_counts: bool = False
    ):
        super().__init__()
        # (2.5 levels and 3.7 steps were taken as 2 and 3)
        whole_at_least("masked diffusion's num_levels", num_levels, 2)
        whole_at_least("steps (0: continuous time)", steps, 0)
        self.net = net
        self.event_shape = tuple(event_shape)
        self.num_levels, self.steps = int(num_levels), int(steps)
        self.train_counts = bool(train_counts) and not self.steps  # continuous time: train on the count form too
        self.register_buffer("_device_probe", torch.zeros(()), persistent=False)

    @property
    def data_support(self) -> constraints.Constraint:
        """The integer levels 0..L-1 it models."""
        return constraints.integer_interval(0, self.num_levels - 1)

    @property
    def variance_reduction(self) -> str:
        return _TIMES if self.steps else _COUNTS

    @property
    def default_sample_steps(self) -> int:
        return self.steps or math.prod(self.event_shape)

    def logits(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits (B, *event, L) of p(x_d | z_t); z holds levels 0..L-1 and the mask L."""
        c = self.event_shape[0]
        onehot = one_hot(z.long(), self.num_levels + 1, self._device_probe.dtype)  # (B, C, H, W, L+1)
        h = onehot.permute(0, 1, 4, 2, 3).reshape(z.shape[0], c * (self.num_levels + 1), *z.shape[2:])
        out = self.net(h, 1000.0 * t.to(onehot.dtype))  # (B, C L, H, W); (times drawn in float32: a float64 model)
        return out.view(z.shape[0], c, self.num_levels, *z.shape[2:]).permute(0, 1, 3, 4, 2)

    def bound_terms(self, x: torch.Tensor, t: torch.Tensor, train: bool = False) -> dict[str, torch.Tensor]:
        """``prior`` and ``recon`` (both 0) and ``diffusion``: (1/t) sum of -log p(x_d | z_t)
        over the masked entries, for integer images x and times t (B,) uniform in [0, 1). In
        continuous time outside training, t is read as the stratified count of masked entries
        instead (see the module docstring): the same bound's estimate of finite variance, in
        training too where ``train_counts``."""
        x = _checked_data(self, data_batch(x, self.event_shape, "MaskedDiffusion.bound_terms")).long()
        t = _checked_times(t, x, "MaskedDiffusion.bound_terms")
        if self.steps or (train and not self.train_counts):
            t = _discretize(t, self.steps) if self.steps else 1.0 - t  # continuous: uniform on (0, 1]
            masked = torch.rand(x.shape, device=x.device) < t.view(-1, *([1] * (x.dim() - 1)))
            weight = None
        else:
            d = math.prod(x.shape[1:])
            m = torch.clamp(torch.floor(t * d).long() + 1, 1, d)  # (B,) masked entries, 1..D
            r = torch.rand(x.shape, device=x.device).flatten(1)
            t = r.sort(1).values.gather(1, (m - 1).unsqueeze(1)).squeeze(1)  # t ~ Beta(m, D - m + 1)
            masked = (r <= t.unsqueeze(1)).view(x.shape)  # exactly m entries, uniformly chosen
            weight = d / m.to(t.dtype)  # D times the mean over the m entries
        z = torch.where(masked, torch.full_like(x, self.num_levels), x)
        logp = torch.log_softmax(self.logits(z, t), dim=-1).gather(-1, x.unsqueeze(-1)).squeeze(-1)
        nll = -(logp * masked).flatten(1).sum(1)
        zero = torch.zeros_like(nll)
        return {"prior": zero, "recon": zero, "diffusion": nll / t if weight is None else nll * weight}

    def order_time(self, m: int, d: int) -> float:
        """The time at which the network reads m of d entries masked: in continuous time m / (d + 1),
        the mean of the Beta(m, d - m + 1) time the bound draws for m masks; in T steps the nearest
        step j / T, where t = 1 (all masks in training) is left to m = d alone: other m stop at
        (T - 1) / T, and m = d takes it where it is the nearest step (d >= 2T; at d = 2T - 1 its
        T - 1/2 is a tie, which round takes to the even step: T only where T is even)."""
        t = m / (d + 1)
        if not self.steps:
            return t
        last = self.steps if m == d or self.steps == 1 else self.steps - 1
        return min(max(round(t * self.steps), 1), last) / self.steps

    @torch.no_grad()
    def order_log_likelihood(self, x: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        """log p(x | sigma_j), (B, M), float64 (see ``AnyOrderModel``): D network passes over
        the B M pairs, the i-th reading x with the entries sigma_j(>= i) masked and scoring entry
        sigma_j(i). The network's time is that of m = D - i masked entries (``order_time``): any
        time gives a normalised conditional, this one the network was trained at. Call it in eval
        mode (``dgm eval`` does): dropout would make each pass another network."""
        d = math.prod(self.event_shape)
        x = data_batch(x, self.event_shape, "order_log_likelihood").long()
        if orders.dim() != 2 or orders.shape[1] != d or len(orders) == 0:
            raise ValueError(f"orders must be (M, {d}) permutations of the entries, got shape {tuple(orders.shape)}")
        if orders.is_floating_point() or orders.is_complex() or orders.dtype == torch.bool:  # (0.5 + k was read as k)
            raise ValueError(f"orders must be integer permutations of the entries, got a tensor of {orders.dtype}")
        orders = orders.to(x.device).long()
        if not torch.equal(orders.sort(1).values, torch.arange(d, device=x.device).expand_as(orders)):
            raise ValueError("every row of orders must be a permutation of 0..D-1")
        b, m = len(x), len(orders)
        rank = torch.empty_like(orders).scatter_(1, orders, torch.arange(d, device=x.device).expand_as(orders))
        ranks = rank.repeat(b, 1)  # (B M, D): row b M + j is datapoint b in order j
        xs = x.flatten(1).repeat_interleave(m, 0)
        total = torch.zeros(b * m, dtype=torch.float64, device=x.device)
        rows = torch.arange(b * m, device=x.device)
        for i in range(d):
            z = torch.where(ranks >= i, self.num_levels, xs).view(b * m, *self.event_shape)
            t = torch.full((b * m,), self.order_time(d - i, d), device=x.device, dtype=self._device_probe.dtype)
            entry = orders[:, i].repeat(b)  # the entry each row reveals at step i
            logits = self.logits(z, t).flatten(1, -2)[rows, entry]  # (B M, L): that entry's only
            total += torch.log_softmax(logits.double(), dim=-1)[rows, xs[rows, entry]]
        return total.view(b, m)

    sample_kind = "levels"

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, steps: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n images by ancestral sampling with ``steps`` steps (default: T, or one entry per
        step in continuous time): from all masks, each masked entry is revealed between t and
        s = t - 1/steps with probability (t - s) / t, its level drawn from p(x_d | z_t)."""
        # (2.7 steps ran as 2)
        steps = self.default_sample_steps if steps is None else steps
        device = self._device_probe.device
        with seeded_by(generator, device):
            z = torch.full((n, *self.event_shape), self.num_levels, dtype=torch.long, device=device)
            for i in range(steps, 0, -1):
                still = z == self.num_levels
                if not still.any():
                    break
                t = torch.full((n,), i / steps, device=device, dtype=self._device_probe.dtype)
                reveal = still & (torch.rand(z.shape, device=device) < 1.0 / i)
                if reveal.any():
                    draw = torch.distributions.Categorical(logits=self.logits(z, t)).sample()
                    z = torch.where(reveal, draw, z)
        return z, z
