"""Diffusion models: the bound against exact likelihoods (a 1-D linear-Gaussian chain, and a
tiny masked diffusion by enumeration), the schedules, the variance gradient, the windowed
reconstruction term, sampling and the command line."""

import itertools
import json
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dgmkit.cli.main import main
from dgmkit.errors import ConfigError, DataError
from dgmkit.evaluation import evaluate
from dgmkit.families.base import DataSpec
from dgmkit.families.diffusion import DiffusionConfig
from dgmkit.models import DDPMSchedule, GaussianDiffusion, LearnedSchedule, LinearSchedule, MaskedDiffusion
from dgmkit.models.diffusion import stratified_times
from dgmkit.nn.unet import UNet
from dgmkit.objectives import DiffusionBound

# ---------------------------------------------------------------- 1-D Gaussian data, exact denoiser

MU, VAR, LEVELS = 0.1, 0.2**2, 1024
_LO, _HI = -13.3, 5.0  # the log-SNR range of the noise-level embedding (models.diffusion)


class _ExactDenoiser(nn.Module):
    """E[eps | z_t] for x ~ N(MU, VAR): sigma (z - alpha MU) / (alpha^2 VAR + sigma^2)."""

    def forward(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        g = (_LO + s * (_HI - _LO) / 1000).view(-1, 1, 1, 1)
        a2, s2 = torch.sigmoid(-g), torch.sigmoid(g)
        return s2.sqrt() * (z - a2.sqrt() * MU) / (a2 * VAR + s2)


def _gaussian_model(steps: int) -> GaussianDiffusion:
    return GaussianDiffusion(_ExactDenoiser(), LinearSchedule(-13.3, 10.0), (1, 1, 1), LEVELS, steps).double()


def _mc_elbo(model: GaussianDiffusion, k: int, n: int = 25_000, replicates: int = 8) -> tuple[float, float]:
    """The bound at level k by Monte Carlo over stratified times, and its standard error from
    independent replicates (the spread of one stratified set says little about its mean)."""
    x = torch.full((n, 1, 1, 1), k, dtype=torch.long)
    means = []
    with torch.no_grad():
        for _ in range(replicates):
            terms = model.bound_terms(x, stratified_times(n).double())
            means.append(-(terms["prior"] + terms["recon"] + terms["diffusion"]).mean().item())
    m = torch.tensor(means, dtype=torch.float64)
    return m.mean().item(), m.std().item() / math.sqrt(replicates)


def _chain_z0(model: GaussianDiffusion, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and variance of z_0 under the model's own generative chain with ``steps`` steps:
    z_1 ~ N(0, 1), each ancestral step affine in z plus Gaussian noise (the denoiser is affine)."""
    mean, var = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    sch = model.schedule
    for i in range(steps, 0, -1):
        gt, _ = sch(torch.tensor([i / steps], dtype=torch.float64))
        gs, _ = sch(torch.tensor([(i - 1) / steps], dtype=torch.float64))
        a2t, s2t = torch.sigmoid(-gt), torch.sigmoid(gt)
        slope, offset = s2t.sqrt() / (a2t * VAR + s2t), -s2t.sqrt() * a2t.sqrt() * MU / (a2t * VAR + s2t)
        c, r = -torch.expm1(gs - gt), torch.sqrt(torch.sigmoid(-gs) / a2t)
        coef = r * (1 - c * s2t.sqrt() * slope)
        mean = coef * mean - r * c * s2t.sqrt() * offset
        var = coef**2 * var + c * torch.sigmoid(gs)
    return mean, var


def _chain_log_prob(model: GaussianDiffusion, k: int, steps: int) -> float:
    """log P(k) of the model's own generative chain with ``steps`` steps: z_0 is Gaussian
    (``_chain_z0``); P(k) = E[p(k | z_0)] by quadrature over z_0 around level k."""
    mean, var = _chain_z0(model, steps)
    sch = model.schedule
    g0, _ = sch.endpoints()
    a0 = torch.sigmoid(-g0).sqrt()
    z = a0 * (model.levels[k].double() + torch.linspace(-12, 12, 100_001, dtype=torch.float64) * 2 / LEVELS)
    log_q = -0.5 * (z - mean) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)
    log_recon = torch.log_softmax(model._recon_logits(z, g0), -1)[:, k]
    return (torch.logsumexp(log_q + log_recon, 0) + torch.log(z[1] - z[0])).item()


def test_continuous_and_discrete_bounds_meet_the_exact_likelihood_on_1d_gaussian_data():
    torch.manual_seed(0)
    k = 560  # a level about 0.4 sd above the mean
    exact = _chain_log_prob(_gaussian_model(2000), k, 2000)  # the continuous-time model's chain, finely
    x = (2 * k + 1) / LEVELS - 1
    data = -0.5 * (x - MU) ** 2 / VAR - 0.5 * math.log(2 * math.pi * VAR) + math.log(2 / LEVELS)
    assert exact == pytest.approx(data, abs=0.02)  # the exact denoiser makes the model the data distribution
    cont, se = _mc_elbo(_gaussian_model(0), k)
    assert abs(cont - exact) < 4 * se + 0.03  # the continuous-time bound is tight here
    bounds = {}
    for steps in (10, 100, 1000):
        bound, se_t = _mc_elbo(_gaussian_model(steps), k)
        own = _chain_log_prob(_gaussian_model(steps), k, steps)
        assert bound <= own + 4 * se_t  # a bound on the T-step model's own log-likelihood
        bounds[steps] = (bound, se_t)
    # T -> infinity: the discrete-time bound rises towards the continuous one
    assert bounds[10][0] < bounds[100][0] - 1 < bounds[1000][0] - 1
    assert bounds[1000][0] <= cont + 4 * (bounds[1000][1] + se)
    assert abs(bounds[1000][0] - cont) < 4 * (bounds[1000][1] + se) + 0.05


# ---------------------------------------------------------------- schedules


@pytest.mark.parametrize("make", [lambda: LearnedSchedule(-9.0, 4.0, hidden=16), lambda: LinearSchedule(-9.0, 4.0),
                                  lambda: DDPMSchedule(1000)], ids=["learned", "linear", "ddpm"])  # fmt: skip
def test_schedules_are_increasing_with_the_derivative_they_report(make):
    torch.manual_seed(1)
    sch = make().double()
    if isinstance(sch, LearnedSchedule):  # random parameters: monotone by construction, whatever they are
        with torch.no_grad():
            for p in (sch.w1, sch.b1, sch.w2, sch.b2, sch.w3):
                p.copy_(torch.randn_like(p) * 3)
    t = torch.linspace(0, 1, 501, dtype=torch.float64, requires_grad=True)
    g, dg = sch(t)
    (auto,) = torch.autograd.grad(g.sum(), t)
    torch.testing.assert_close(dg, auto, rtol=1e-6, atol=1e-8)
    assert (dg > 0).all() and (g.diff() > 0).all()
    if not isinstance(sch, DDPMSchedule):
        g0, g1 = sch.endpoints()
        assert g0.item() == pytest.approx(-9.0) and g1.item() == pytest.approx(4.0)


@pytest.mark.parametrize("ends", [(-1.0, 0.0), (-0.5, -0.4), (2.0, 3.0), (-13.3, 5.0), (-30.0, 30.0)])
def test_a_learned_schedule_starts_at_the_ends_it_is_given(ends):
    """gamma(1) is gamma_0 + softplus(gap): a small gap (1) started gamma(1) 0.31 above the gamma_max asked for."""
    g0, g1 = LearnedSchedule(*ends, hidden=4).endpoints()
    assert (g0.item(), g1.item()) == pytest.approx(ends, abs=1e-5)


@pytest.mark.parametrize("levels, steps, needle", [(16.7, 0, "num_levels must be an integer >= 2, got 16.7"),
    (1, 0, "num_levels must be an integer >= 2, got 1"), (16, 3.7, "steps .* must be an integer >= 0, got 3.7"),
    (16, float("nan"), "steps .* must be an integer >= 0, got nan"), (16, -1, "steps .* >= 0, got -1")])  # fmt: skip
def test_gaussian_diffusion_refuses_levels_and_steps_that_are_not_whole_numbers(levels, steps, needle):
    """16.7 levels were built as num_levels 16 with 17 level values, 3.7 steps ran as 3, NaN steps failed in int()."""
    net = UNet(1, 1, [4], blocks=1, attention=False, fourier=[])
    with pytest.raises(ValueError, match=needle):
        GaussianDiffusion(net, LinearSchedule(), (1, 2, 2), levels, steps)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("steps", [0, -3, 2.7, float("nan"), True, 100_001, 10**30])
def test_diffusion_sampling_refuses_steps_that_are_not_whole_numbers_in_range(masked, steps):
    """2.7 steps ran as 2, True as 1, and NaN failed in int() naming nothing; 10**30 failed with
    OverflowError "int too big to convert" (Gaussian) or ran for ever (masked): refused in the
    range of dgm sample --steps, by the same check."""
    if masked:
        model = MaskedDiffusion(UNet(3, 2, [4], blocks=1, attention=False, fourier=[]), (1, 2, 2), 2)
    else:
        model = GaussianDiffusion(UNet(1, 1, [4], blocks=1, attention=False, fourier=[]), LinearSchedule(), (1, 2, 2), 4)
    with pytest.raises(ValueError, match=r"sampling steps must be an integer in 1\.\.100000, got "):
        model.sample(2, steps=steps)


_BAD_TIMES = [
    (torch.rand(2, 1), r"one time per datapoint, a tensor \(2,\), got shape \(2, 1\)"),
    (torch.tensor(0.3), r"a tensor \(2,\), got shape \(\)"),
    (torch.tensor([0.5, 1.5]), r"times lie in \[0, 1\]; got 1 time outside, e\.g\. 1\.5"),
    (torch.tensor([-0.2, 0.5]), r"times lie in \[0, 1\]"),
    (torch.tensor([0.5, float("nan")]), r"times lie in \[0, 1\]; .* e\.g\. nan"),
    ([0.5, 0.5], r"takes the times as a real torch tensor \(2,\), got \[0\.5, 0\.5\]"),
    (torch.tensor([True, False]), r"takes the times as a real torch tensor \(2,\), got a tensor of torch\.bool"),
]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("times, needle", _BAD_TIMES)
def test_bound_terms_refuse_times_of_another_shape_or_outside_0_1_by_name(masked, times, needle):
    """Times (B, 1) broadcast into a (B, B) diffusion term, a scalar into one time for all, and 1.5, -0.2
    or NaN were scored as numbers (continuous time: gamma beyond its ends; NaN: a NaN term), none a bound's."""
    if masked:
        model = MaskedDiffusion(UNet(3, 2, [4], blocks=1, attention=False, fourier=[]), (1, 2, 2), 2)
    else:
        model = GaussianDiffusion(UNet(1, 1, [4], blocks=1, attention=False, fourier=[]), LinearSchedule(), (1, 2, 2), 4)
    x = torch.zeros(2, 1, 2, 2, dtype=torch.long)
    with pytest.raises((ValueError, TypeError), match=needle):
        model.bound_terms(x, times)
    with pytest.raises(ValueError, match=r"data of shape \(2, 4\); the model's datapoints are of shape \(1, 2, 2\)"):
        model.bound_terms(x.flatten(1), torch.rand(2))  # (flat rows: a raw error inside the network)
    assert model.bound_terms(x, torch.tensor([0.0, 1.0]))["diffusion"].shape == (2,)


def test_ddpm_schedule_matches_ho_et_al_linear_betas():
    """alpha_bar of 1000 betas from 1e-4 to 0.02, against the continuous form at t_i = i / T."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    sch = DDPMSchedule(1000)
    for i in (100, 500, 1000):  # below ~100 steps the integral and the sum differ by about half a beta
        g, _ = sch(torch.tensor([(i - 1) / 999], dtype=torch.float64))  # tau = i / T
        # the continuous form leaves out sum(beta^2) / 2 of -log alpha_bar (at most 0.07 of 10.05)
        assert -F.logsigmoid(-g).item() == pytest.approx(-alpha_bar[i - 1].log().item(), rel=1e-2)


@pytest.mark.parametrize("steps", [0, 10])
def test_the_learned_shape_gets_the_variance_gradient_in_continuous_time_and_the_bound_s_with_steps(steps):
    torch.manual_seed(2)
    model = GaussianDiffusion(
        UNet(1, 1, [4], blocks=1, attention=False, fourier=[]), LearnedSchedule(hidden=8), (1, 4, 4), 16, steps
    ).double()
    x = torch.randint(0, 16, (6, 1, 4, 4))
    t = stratified_times(6).double()

    def terms(train: bool) -> dict:
        torch.manual_seed(3)
        return model.bound_terms(x, t, train=train)

    out = terms(True)
    loss = (out["prior"] + out["recon"] + out["diffusion"]).mean()
    shape = [model.schedule.w1, model.schedule.b1, model.schedule.w2, model.schedule.b2, model.schedule.w3]
    ends = [model.schedule.gamma_0, model.schedule.gamma_1]
    got = torch.autograd.grad(loss, shape + ends)
    plain = terms(False)
    bound = (plain["prior"] + plain["recon"] + plain["diffusion"]).mean()
    if steps:  # the shape changes a T-step bound: the bound trains it
        want_shape = torch.autograd.grad(bound, shape, retain_graph=True)
    else:  # d E[L^2] / (2 E[L]) with E[L] held fixed: the variance's direction at the loss's scale
        d = plain["diffusion"]
        want_shape = torch.autograd.grad(d.square().mean() / (2 * d.mean().detach()), shape, retain_graph=True)
    want_ends = torch.autograd.grad(bound, ends)
    for a, b in zip(got, [*want_shape, *want_ends], strict=True):
        torch.testing.assert_close(a, b)


def test_a_learned_schedule_stays_increasing_when_its_ends_cross():
    sch = LearnedSchedule(-9.0, 4.0, hidden=4).double()
    with torch.no_grad():
        sch.gamma_1.fill_(-20.0)  # an update that put gamma_1 below gamma_0
    g, dg = sch(torch.linspace(0, 1, 11, dtype=torch.float64))
    assert (dg > 0).all() and (g.diff() > 0).all()


def test_the_reconstruction_term_survives_a_diverged_or_huge_gamma_0():
    model = GaussianDiffusion(UNet(1, 1, [4], attention=False), LinearSchedule(), (1, 3, 3), 256)
    x = torch.randint(0, 256, (2, 1, 3, 3))
    assert torch.isnan(model._recon_nll(x, model.scale(x), torch.tensor(float("nan")))).all()
    # alpha_0 = 0: no signal left; NaN (the trainer names it) rather than an exception
    assert model._recon_nll(x, model.scale(x), torch.tensor(2000.0)).shape == (2,)
    assert torch.isfinite(model._recon_nll(x, model.scale(x), torch.tensor(8.0))).all()


def test_the_windowed_reconstruction_term_equals_the_full_softmax():
    torch.manual_seed(4)
    model = GaussianDiffusion(UNet(1, 1, [4], attention=False), LinearSchedule(), (1, 5, 5), 256).double()
    x = torch.randint(0, 256, (3, 1, 5, 5))
    xs = model.scale(x)
    for g in (-13.3, -6.0, 0.0):
        g0 = torch.tensor(g, dtype=torch.float64)
        torch.manual_seed(5)
        got = model._recon_nll(x, xs, g0)
        torch.manual_seed(5)
        z0 = torch.sigmoid(-g0).sqrt() * xs + torch.sigmoid(g0).sqrt() * torch.randn_like(xs)
        full = -torch.log_softmax(model._recon_logits(z0, g0), -1).gather(-1, x.unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(got, full.flatten(1).sum(1))


@pytest.mark.parametrize("schedule", ["linear", "learned"])
def test_ends_that_float32_holds_as_one_value_are_refused_by_name_and_those_it_tells_apart_build(schedule):
    # (-13.3000001 and -13.3 passed the config and met as one value in the float32 schedule: an internal error)
    with pytest.raises(ConfigError, match="too close for the schedule's float32"):
        DiffusionConfig(schedule=schedule, gamma_min=-13.3000001, gamma_max=-13.3).validate()
    # (ends about 0 that float32 holds as 0.0 both, -1e-46 and 1e-46: a spacing relative to them is no spacing)
    for lo, hi in [(-1e-46, 1e-46), (0.0, 1e-46)]:
        with pytest.raises(ConfigError, match="too close for the schedule's float32"):
            DiffusionConfig(schedule=schedule, gamma_min=lo, gamma_max=hi).validate()
    eps = float(torch.finfo(torch.float32).eps)
    built = [(-13.3, -13.3 + 2.02 * eps * 13.3), (29.99999, 30.0), (-1e-9, 1e-9), (-30.0, -30.0 + 61 * eps * 30)]
    for lo, hi in [*built, (-3e-45, 3e-45)]:
        cfg = DiffusionConfig(schedule=schedule, gamma_min=lo, gamma_max=hi, unet_channels=[4], attention=False)
        cfg.validate()
        with torch.no_grad():
            g0, g1 = cfg.model_for(DataSpec.of((1, 2, 2), 4)).schedule.endpoints()
        assert float(g0) < float(g1)


def test_the_windowed_reconstruction_term_of_a_float64_model_of_17_levels_is_normalised():
    # (the window recomputed the level values in float64, x held the float32 ones: at gamma_0 = -30 an image of 64
    # entries read -log p(x|z_0) down to -2.7 nats, a probability above 1)
    model = GaussianDiffusion(UNet(1, 1, [4], attention=False), LinearSchedule(), (1, 8, 8), 17).double()
    x = torch.randint(0, 17, (20, 1, 8, 8), generator=torch.Generator().manual_seed(6))
    xs = model.scale(x)
    for g in (-30.0, -20.0, -13.3, -7.0):
        g0 = torch.tensor(g, dtype=torch.float64)
        assert model._window(g0) is not None  # (the window's path, not the full softmax)
        torch.manual_seed(7)
        got = model._recon_nll(x, xs, g0)
        torch.manual_seed(7)
        z0 = torch.sigmoid(-g0).sqrt() * xs + torch.sigmoid(g0).sqrt() * torch.randn_like(xs)
        full = -torch.log_softmax(model._recon_logits(z0, g0), -1).gather(-1, x.unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(got, full.flatten(1).sum(1), atol=1e-9, rtol=1e-9)
        assert (got >= 0).all()


@pytest.mark.parametrize("schedule", [LearnedSchedule, LinearSchedule, DDPMSchedule])
def test_the_weight_of_a_step_of_many_is_the_float64_one_in_a_float32_model(schedule, monkeypatch):
    """With T steps the diffusion term weighs a time by expm1(gamma(i/T) - gamma((i-1)/T)): two
    values 1/T apart, whose float32 rounding was up to 4% of their difference at T = 100000
    (a bias of 0.1% of the term). The difference is taken in float64 whatever the model's dtype."""
    torch.manual_seed(0)
    steps = 100_000
    model = GaussianDiffusion(UNet(1, 1, [4], attention=False), schedule(), (1, 2, 2), 256, steps)
    double = GaussianDiffusion(UNet(1, 1, [4], attention=False), schedule(), (1, 2, 2), 256, steps).double()
    double.load_state_dict(model.state_dict())
    step = torch.tensor([1.0, 2.0, 777.0, 50_000.0, 99_999.0, 100_000.0], dtype=torch.float64)
    gap = model.schedule(step / steps)[0] - model.schedule((step - 1) / steps)[0]  # (float64 times: float64 values)
    exact = double.schedule(step / steps)[0] - double.schedule((step - 1) / steps)[0]
    assert gap.dtype == torch.float64 and torch.allclose(gap, exact, rtol=1e-9, atol=0)
    x = torch.randint(0, 256, (6, 1, 2, 2))
    t = ((step - 0.5) / steps).float()  # in the middle of each step
    monkeypatch.setattr(torch, "randn_like", torch.ones_like)  # the same noise in both precisions
    got = model.bound_terms(x, t)["diffusion"].double()
    want = double.bound_terms(x, t.double())["diffusion"]
    assert torch.allclose(got, want, rtol=1e-4, atol=0)
    assert model.schedule(torch.zeros(1))[0].dtype == torch.float32  # (float32 times: float32 values, as before)


@pytest.mark.parametrize("schedule", [LearnedSchedule, LinearSchedule, DDPMSchedule])
def test_a_float64_model_is_scored_in_float64_from_the_float32_times_the_bound_draws(schedule):
    """The objective draws its times in float32; a float64 model's network failed on them (its
    time embedding was float32), so ``.double()`` on a Gaussian diffusion could not be trained."""
    x = torch.randint(0, 256, (4, 1, 2, 2))
    for steps in (0, 10):
        torch.manual_seed(0)
        model = GaussianDiffusion(UNet(1, 1, [4], attention=False), schedule(), (1, 2, 2), 256, steps).double()
        loss = DiffusionBound()(model, x).loss
        assert loss.dtype == torch.float64 and torch.isfinite(loss).all()
    if schedule is not DDPMSchedule:  # (DDPM's fixed numbers are float64 in any model: it answers in the times' dtype)
        assert schedule().double()(torch.rand(3))[0].dtype == torch.float64  # float32 times, float64 parameters
    assert schedule()(torch.rand(3))[0].dtype == torch.float32  # float32 times and parameters: as before


@pytest.mark.parametrize("steps", [5, 20])
def test_ancestral_sampling_draws_the_chain_s_own_distribution_in_the_model_s_precision(steps):
    """The sampler is the chain whose z_0 is N(mean, var) in closed form (``_chain_z0``); its
    levels' mean and spread are z_0's over alpha_0 (the levels are 2/1024 apart). A float64
    model drew its noise in float32 and failed at the first step."""
    model = _gaussian_model(0)
    x, shown = model.sample(3000, torch.Generator().manual_seed(0), steps=steps)
    assert x.dtype == torch.long and torch.equal(x, shown) and 0 <= x.min() and x.max() < LEVELS
    mean, var = _chain_z0(model, steps)
    g0, _ = model.schedule.endpoints()
    a0 = torch.sigmoid(-g0).sqrt()
    v = model.levels[x].double()
    sd = (var.sqrt() / a0).item()
    assert v.mean().item() == pytest.approx((mean / a0).item(), abs=4 * sd / math.sqrt(3000) + 1e-3)
    assert v.std().item() == pytest.approx(sd, rel=0.05)
    net = GaussianDiffusion(UNet(1, 1, [4], attention=False), LinearSchedule(), (1, 3, 3), 16, steps).double()
    assert net.sample(2, torch.Generator().manual_seed(0))[0].shape == (2, 1, 3, 3)  # (float32 noise into float64 weights)


# ---------------------------------------------------------------- masked diffusion by enumeration


class _TinyDenoiser(nn.Module):
    """An MLP from the one-hot input (B, L + 1, 1, D) and the time to L logits per entry."""

    def __init__(self, d: int, levels: int):
        super().__init__()
        self.d, self.levels = d, levels
        self.net = nn.Sequential(nn.Linear(d * (levels + 1) + 1, 16), nn.Tanh(), nn.Linear(16, d * levels))

    def forward(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        out = self.net(torch.cat([h.flatten(1), s.view(-1, 1) / 1000], 1))
        return out.view(-1, self.levels, 1, self.d)


def _masked_model(steps: int, d: int = 3) -> MaskedDiffusion:
    torch.manual_seed(6)
    return MaskedDiffusion(_TinyDenoiser(d, 2), (1, 1, d), 2, steps).double()


def _exact_masked_log_probs(model: MaskedDiffusion, d: int) -> dict[tuple, float]:
    """log p(x) of every binary x under the T-step generative process, by a forward pass over
    all 3^d states (0, 1, mask)."""
    steps, mask = model.steps, 2
    states = list(itertools.product(range(3), repeat=d))
    prob = {s: 0.0 for s in states}
    prob[(mask,) * d] = 1.0
    for j in range(steps, 0, -1):
        nxt = {s: 0.0 for s in states}
        for s, p in prob.items():
            if p == 0.0:
                continue
            z = torch.tensor(s).view(1, 1, 1, d)
            pv = torch.softmax(model.logits(z, torch.tensor([j / steps], dtype=torch.float64)), -1)[0, 0, 0]
            options = []
            for i in range(d):
                if s[i] != mask:
                    options.append([(s[i], 1.0)])
                else:
                    stay = (j - 1) / j
                    options.append([(mask, stay)] + [(v, (1 - stay) * pv[i, v].item()) for v in range(2)])
            for combo in itertools.product(*options):
                nxt[tuple(v for v, _ in combo)] += p * math.prod(w for _, w in combo)
        prob = nxt
    return {s: math.log(p) for s, p in prob.items() if mask not in s}


def _exact_masked_elbo(model: MaskedDiffusion, x: tuple, d: int) -> float:
    """sum over steps j of E_{z_j ~ q}[(1/j) sum over masked i of log p(x_i | z_j)], enumerated."""
    steps, total = model.steps, 0.0
    xt = torch.tensor(x)
    for j in range(1, steps + 1):
        m = j / steps
        for masked in itertools.product([False, True], repeat=d):
            w = math.prod(m if b else 1 - m for b in masked)
            bm = torch.tensor(masked)
            z = torch.where(bm, torch.tensor(2), xt).view(1, 1, 1, d)
            logp = torch.log_softmax(model.logits(z, torch.tensor([m], dtype=torch.float64)), -1)[0, 0, 0]
            total += w * (1 / j) * sum(logp[i, x[i]].item() for i in range(d) if masked[i])
    return total


def test_masked_diffusion_bound_lies_below_the_exact_likelihood_by_enumeration():
    d = 3
    model = _masked_model(3, d)
    with torch.no_grad():
        exact = _exact_masked_log_probs(model, d)
        assert sum(math.exp(v) for v in exact.values()) == pytest.approx(1.0, abs=1e-9)  # a normalised model
        for x, log_p in exact.items():
            elbo = _exact_masked_elbo(model, x, d)
            assert elbo <= log_p + 1e-9
            assert elbo > log_p - 1.5  # a bound, not a vacuous one
            n = 40_000  # the model's Monte Carlo estimate over sampled times is unbiased for it
            xb = torch.tensor(x).view(1, 1, 1, d).expand(n, 1, 1, d)
            est = -model.bound_terms(xb, torch.rand(n, dtype=torch.float64))["diffusion"]
            assert est.mean().item() == pytest.approx(elbo, abs=4 * est.std().item() / math.sqrt(n) + 1e-3)


def test_masked_sampling_reveals_every_entry_with_the_model_s_conditionals():
    model = _masked_model(2, 2)
    with torch.no_grad():
        x, shown = model.sample(4000, torch.Generator().manual_seed(0))
        assert x.shape == (4000, 1, 1, 2) and set(x.unique().tolist()) <= {0, 1}
        exact = _exact_masked_log_probs(model, 2)
        for s, log_p in exact.items():
            freq = (x.view(-1, 2) == torch.tensor(s)).all(1).double().mean().item()
            assert freq == pytest.approx(math.exp(log_p), abs=0.03)


# ---------------------------------------------------------------- models, evaluation, the CLI


@pytest.mark.parametrize("process", ["gaussian", "masked"])
def test_family_builds_trains_a_step_and_samples(process):
    torch.manual_seed(7)
    cfg = DiffusionConfig(process=process, unet_channels=[8, 8])
    levels = 256 if process == "gaussian" else 2
    model = cfg.build((1, 8, 8), levels)
    x = torch.randint(0, levels, (5, 1, 8, 8))
    terms = DiffusionBound()(model, x)
    assert terms.loss.shape == (5,) and torch.isfinite(terms.loss).all()
    terms.loss.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    s, _ = model.sample(3, torch.Generator().manual_seed(0), steps=4)
    assert s.shape == (3, 1, 8, 8) and s.dtype == torch.long and 0 <= s.min() and s.max() < levels
    s2, _ = model.sample(3, torch.Generator().manual_seed(0), steps=4)
    assert torch.equal(s, s2)  # seeded sampling repeats


def test_time_sampled_evaluation_reports_the_bound_its_terms_and_an_honest_time_error():
    torch.manual_seed(8)
    model = _gaussian_model(0)
    x = torch.full((400, 1, 1, 1), 560, dtype=torch.long)
    r = evaluate(model, x, iw_samples=8, seed=0)
    assert r.estimate == "time-sampled" and r.iw_samples == 8
    assert r.elbo == pytest.approx(-r.nll) and r.kl == pytest.approx(r.term("prior_kl") + r.term("diffusion_kl"))
    assert r.nll == pytest.approx(-_chain_log_prob(model, 560, 2000), abs=4 * r.nll_stderr)
    # every datapoint is the same: the spread over datapoints is the time noise only, and the
    # halves' estimate must agree with it
    assert r.time_stderr == pytest.approx(r.nll_stderr, rel=0.3)
    assert "stratified" in r.variance_reduction


def test_simple_loss_is_refused_with_a_learned_schedule():
    from dgmkit.errors import ConfigError

    with pytest.raises(ConfigError, match="needs gaussian diffusion with a fixed schedule"):
        DiffusionConfig(loss="simple").validate()
    DiffusionConfig(loss="simple", schedule="ddpm", diffusion_steps=1000).validate()
    with pytest.raises(ConfigError, match="schedule is a setting of gaussian diffusion"):
        DiffusionConfig(process="masked", schedule="ddpm").validate()
    with pytest.raises(ConfigError, match="ddpm's betas fix its ends"):
        DiffusionConfig(schedule="ddpm", gamma_max=8.0).validate()
    from dgmkit.config import RunConfig

    with pytest.raises(ConfigError, match="without importance sampling"):
        RunConfig.of(model="diffusion", iw_samples=7)


def test_unet_keeps_odd_sizes():
    net = UNet(2, 3, [4, 8, 8], blocks=2, image_size=(7, 9))
    assert net(torch.zeros(2, 2, 7, 9), torch.zeros(2)).shape == (2, 3, 7, 9)
    net = UNet(1, 1, [4, 8, 8], image_size=(28, 28))
    assert net(torch.zeros(1, 1, 28, 28), torch.zeros(1)).shape == (1, 1, 28, 28)


def test_unet_embeds_noise_levels_of_any_dtype_in_its_weights_dtype():
    """Integer levels (embedded in float32) and float32 ones failed in a float64 U-Net ("mat1 and mat2
    must have the same dtype"); they give the float64 levels' output."""
    torch.manual_seed(0)
    net = UNet(1, 1, [4], blocks=1).double()
    for p in net.parameters():
        nn.init.normal_(p, 0.0, 0.3)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    want = net(x, torch.tensor([3.0, 700.0], dtype=torch.float64))
    for s in (torch.tensor([3, 700]), torch.tensor([3.0, 700.0])):
        assert torch.equal(net(x, s), want)


def test_unet_takes_one_image_whose_norm_groups_hold_a_single_value():
    # 1x1 images with one channel per GroupNorm group: a batch of one (eval --limit 1, dgm score
    # of one input, a last training batch of one) failed inside GroupNorm; it is computed as in
    # a larger batch (up to PyTorch's rounding there: in float64, where it is small)
    torch.manual_seed(0)
    net = UNet(1, 1, [8], blocks=1, image_size=(1, 1)).double()
    for p in net.parameters():
        nn.init.normal_(p)
    x, s = torch.randn(3, 1, 1, 1, dtype=torch.float64), torch.tensor([1.0, 500.0, 900.0], dtype=torch.float64)
    batch = net(x, s)
    for i in range(3):
        assert torch.allclose(net(x[i : i + 1], s[i : i + 1]), batch[i : i + 1], atol=1e-5)
    net = UNet(1, 1, [8, 8, 8, 8], blocks=1, image_size=(8, 8))  # 8x8 halved down to 1x1
    assert net(torch.zeros(1, 1, 8, 8), torch.zeros(1)).shape == (1, 1, 8, 8)
    # a batch that PyTorch's GroupNorm takes is computed by it, to the bit: its float32 output
    # there is the bias up to rounding only, and the numbers of existing runs stay as they were
    norm = next(m for m in net.modules() if isinstance(m, nn.GroupNorm))
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    own = nn.GroupNorm(norm.num_groups, norm.num_channels)
    own.load_state_dict(norm.state_dict())
    h = torch.randn(4, norm.num_channels, 1, 1) * 100
    assert torch.equal(norm(h), own(h))


def test_cli_trains_evaluates_and_samples_a_diffusion_model(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "diffusion", "--dataset", "digits", "--epochs", "1", "--unet-channels", "8", "8"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    assert main(["eval", str(out), "--time-samples", "2"]) == 0
    text = capsys.readouterr().out
    assert "NLL bound (2 times per datapoint)" in text and "diffusion KL" in text and "stratified" in text
    r = json.loads((out / "eval.json").read_text())
    assert r["estimate"] == "time-sampled" and r["iw_samples"] == 2 and r["time_stderr"] > 0
    assert r["bpd"] == pytest.approx(r["nll"] / (64 * math.log(2)))
    assert main(["eval", str(out), "--iw-samples", "5"]) == 1
    assert "--time-samples" in capsys.readouterr().err
    assert main(["ood", str(out), "--ood", "digits", "--iw-samples", "5"]) == 1  # (before the data are read)
    err = capsys.readouterr().err
    assert err.startswith("dgm: error: --iw-samples: a diffusion model is scored by its bound") and err.count("\n") == 1
    assert main(["sample", str(out), "-n", "4", "--steps", "3", "--out", str(tmp_path / "s.png")]) == 0
    assert "ancestral sampling in 3 steps" in capsys.readouterr().out
    assert (tmp_path / "s.png").stat().st_size > 0


def test_cli_refuses_steps_and_time_samples_where_they_mean_nothing(tmp_path, capsys):
    out = tmp_path / "vae"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    assert main(["sample", str(out), "--steps", "3", "--out", str(tmp_path / "s.png")]) == 1
    assert "--steps is for diffusion models" in capsys.readouterr().err
    assert main(["eval", str(out), "--time-samples", "3"]) == 1
    assert "--time-samples is for diffusion models" in capsys.readouterr().err


def test_continuous_data_is_refused(tmp_path, capsys):
    import numpy as np

    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).normal(size=(50, 1, 4, 4)).astype("float32"))
    code = main(["train", "--model", "diffusion", "--dataset", str(path), "--epochs", "1", "--out", str(tmp_path / "r")])
    assert code == 1 and "quantized" in capsys.readouterr().err


def _exact_continuous_masked_elbo(model: MaskedDiffusion, x: tuple, d: int, points: int = 4000) -> float:
    """The continuous-time bound: the integral over t of (1/t) E_{mask ~ Bernoulli(t)^d} of the
    masked entries' log p(x_i | z_t), the masks enumerated, t by the midpoint rule (the
    integrand is smooth and finite at both ends)."""
    t = (torch.arange(points, dtype=torch.float64) + 0.5) / points
    xt = torch.tensor(x)
    total = torch.zeros((), dtype=torch.float64)
    for masked in itertools.product([False, True], repeat=d):
        m = sum(masked)
        if m == 0:
            continue
        bm = torch.tensor(masked)
        z = torch.where(bm, torch.tensor(2), xt).view(1, 1, 1, d).expand(points, 1, 1, d)
        logp = torch.log_softmax(model.logits(z, t), -1)[:, 0, 0]  # (points, d, L)
        f = sum(logp[:, i, x[i]] for i in range(d) if masked[i])
        total += (t ** (m - 1) * (1 - t) ** (d - m) * f).mean()
    return total.item()


def test_masked_diffusion_evaluates_the_continuous_bound_by_counts_with_finite_variance():
    d = 3
    model = _masked_model(0, d)
    assert "counts" in model.variance_reduction
    n = 40_000
    torch.manual_seed(3)
    with torch.no_grad():
        for x in [(0, 1, 1), (1, 0, 0)]:
            exact = _exact_continuous_masked_elbo(model, x, d)
            xb = torch.tensor(x).view(1, 1, 1, d).expand(n, 1, 1, d)
            u = torch.rand(n, dtype=torch.float64)
            counts = -model.bound_terms(xb, u)["diffusion"]
            times = -model.bound_terms(xb, u, train=True)["diffusion"]  # the per-time form of training
            for est in (counts, times):  # both unbiased for the same bound
                assert est.mean().item() == pytest.approx(exact, abs=4 * est.std().item() / math.sqrt(n) + 1e-3)
            # bounded by D times the largest term: the count form's worst draw is a few nats; the
            # per-time form's draws near t = 0 carry weight 1/t
            assert counts.min().item() > -d * 10 and counts.std() < times.std() / 3
            # the typical 4-time estimate (stratified counts) sits at the bound, not below it
            k4 = -model.bound_terms(
                xb[: 4 * 2000], torch.remainder(torch.rand(2000).repeat_interleave(4) + torch.arange(4).repeat(2000) / 4, 1)
            )["diffusion"]
            assert k4.view(2000, 4).mean(1).median().item() == pytest.approx(exact, abs=0.1)


def test_masked_training_on_counts_uses_the_evaluation_s_finite_variance_form():
    torch.manual_seed(0)
    counts = MaskedDiffusion(_TinyDenoiser(3, 2), (1, 1, 3), 2, 0, train_counts=True).double()
    times = MaskedDiffusion(_TinyDenoiser(3, 2), (1, 1, 3), 2, 0).double()
    times.load_state_dict(counts.state_dict())
    x, t = torch.randint(0, 2, (64, 1, 1, 3)), torch.rand(64, dtype=torch.float64)

    def terms(model, train):
        torch.manual_seed(1)
        return model.bound_terms(x, t, train=train)["diffusion"]

    assert torch.equal(terms(counts, True), terms(counts, False))  # training's form is evaluation's
    assert not torch.equal(terms(times, True), terms(times, False))
    terms(counts, True).mean().backward()
    assert all(p.grad is not None for p in counts.parameters())
    assert MaskedDiffusion(_TinyDenoiser(3, 2), (1, 1, 3), 2, 4, train_counts=True).train_counts is False  # T steps
    with pytest.raises(ConfigError, match="masked_training counts"):
        DiffusionConfig(process="masked", diffusion_steps=10, masked_training="counts").validate()
    with pytest.raises(ConfigError, match="masked_training counts"):
        DiffusionConfig(masked_training="counts").validate()
    assert DiffusionConfig(process="masked", masked_training="counts").build((1, 8, 8), 2).train_counts


def test_the_moonshot_preset_trains_on_the_digits_samples_and_its_spread_over_seeds_is_its_stated_error(tmp_path, capsys):
    """Issue 29's preset as run (count-form training, EMA, cosine schedule, attention), on the
    digits with a narrow U-Net for 2 epochs and without compiling: it trains, draws samples, and
    the bound on all 300 test digits, repeated with 12 seeds of the time draws, spreads as much as
    the time error that each evaluation states (the spread over seeds has only the time noise)."""
    import statistics
    from pathlib import Path

    import dgmkit

    preset = Path(__file__).resolve().parents[1] / "configs" / "moonshot-masked-bmnist.toml"
    out = tmp_path / "moon"
    argv = ["train", "--config", str(preset), "--dataset", "digits", "--unet-channels", "16", "16", "--epochs", "2",
            "--batch-size", "64", "--no-compile", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert main(["sample", str(out), "-n", "4", "--out", str(tmp_path / "s.png")]) == 0, capsys.readouterr().err
    assert (tmp_path / "s.png").stat().st_size > 0
    run = dgmkit.load(out)
    assert run.cfg.model.masked_training == "counts" and run.cfg.optim.ema > 0
    results = [dgmkit.evaluate(run, "test", time_samples=4, seed=s) for s in range(12)]
    assert all(r.n == 300 and r.estimate == "time-sampled" for r in results)
    spread = statistics.stdev(r.nll for r in results)
    stated = statistics.fmean(r["time_stderr"] for r in results)
    assert 0.5 < spread / stated < 1.6, (spread, stated)  # 12 seeds: the ratio's 99% range is about 0.6 to 1.45
    assert all(r.nll_stderr > r["time_stderr"] for r in results)  # the total error holds the datapoints' spread too


def test_fourier_features_are_vdm_s_periods_of_two_bins_and_one_bin():
    """VDM's code (google-research/vdm, model_vdm.py): Base2FourierFeatures(start=6, stop=8) on
    z = 2 (x + 1/2) / 256 - 1, sin and cos of 2^n 2 pi z. At the bin centres, n = 7 (one bin) is
    the same for every level and n = 6 (two bins) tells even levels from odd ones."""
    from dgmkit.families.diffusion import _fourier_exponents
    from dgmkit.nn.unet import fourier_features

    assert _fourier_exponents(256) == [6, 7] and _fourier_exponents(2) == [-1, 0] and _fourier_exponents(17) == [2, 3]
    z = (2 * (torch.arange(256, dtype=torch.float64) + 0.5) / 256 - 1).view(1, 1, 1, 256)
    f = fourier_features(z, [6, 7])[0, :, 0]  # channels: z, sin n=6, sin n=7, cos n=6, cos n=7
    zeros = torch.zeros(256, dtype=torch.float64)
    assert torch.allclose(f[2], zeros, atol=1e-9) and torch.allclose(f[4], zeros - 1, atol=1e-9)
    parity = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(128)
    assert torch.allclose(f[1], parity * f[1, 0], atol=1e-9) and abs(f[1, 0]) == pytest.approx(1.0)
    model = DiffusionConfig().build((1, 8, 8), 256)
    assert model.net.fourier == [6, 7]


def test_a_run_written_before_format_4_keeps_the_fourier_features_it_was_trained_with(tmp_path, capsys):
    from dgmkit.config import load_run, migrate_record

    out = tmp_path / "vdm"
    argv = ["train", "--model", "diffusion", "--dataset", "digits", "--epochs", "1", "--unet-channels", "8", "8"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    new = load_run(out)
    assert new.record["format"] == 5 and new.cfg.model.fourier_exponents is None
    assert new.model.net.fourier == [2, 3]  # 17 levels: periods of 2.1 bins and 1.06 bins
    record = json.loads((out / "config.json").read_text())
    model_keys = {k: v for k, v in record["config"]["model"].items() if k != "fourier_exponents"}
    old = {**record, "format": 3, "config": {**record["config"], "model": model_keys}}
    migrated = migrate_record(old, "config.json")
    assert migrated["migrated_from"] == 3 and migrated["config"]["model"]["fourier_exponents"] == [4, 5]
    masked = {**old, "config": {**old["config"], "model": {**model_keys, "process": "masked"}}}
    assert "fourier_exponents" not in migrate_record(masked, "config.json")["config"]["model"]
    assert migrate_record(migrated, "config.json") == migrated  # the current format is left as it is
    # a folder of format 3 (its record in config.json and in the checkpoint) loads with its features
    from dgmkit.training.checkpoint import save_checkpoint

    (out / "config.json").write_text(json.dumps(old))
    for name in ("best.safetensors", "checkpoint.safetensors"):
        (out / name).unlink(missing_ok=True)
    save_checkpoint(out / "best.safetensors", new.model, old)
    again = load_run(out)
    assert again.record["migrated_from"] == 3 and again.model.net.fourier == [4, 5]
    for a, b in zip(again.model.state_dict().values(), new.model.state_dict().values()):
        assert torch.equal(a, b)  # the same weights, read with the features they were trained with
    with pytest.raises(ConfigError, match="fourier_exponents"):
        DiffusionConfig(process="masked", fourier_exponents=[1, 2]).validate()


@pytest.mark.parametrize(
    "settings, typed",
    [
        ({"process": "masked"}, ["--schedule", "learned"]),  # the defaults, given: validate let them through
        ({"process": "masked"}, ["--gamma-min", "-13.3"]),
        ({"schedule": "ddpm"}, ["--gamma-max", "5.0"]),
        ({}, ["--masked-training", "times"]),  # the gaussian process
        ({"process": "masked", "diffusion_steps": 4}, ["--masked-training", "times"]),  # discrete time
        ({"process": "masked"}, ["--loss", "vlb"]),  # the loss of gaussian diffusion (validate refused simple)
    ],
)
def test_a_setting_of_another_process_or_schedule_given_at_its_default_is_refused(tmp_path, capsys, settings, typed):
    """validate refused these settings at another value than the default, and took them given at it:
    --process masked --schedule learned trained as if the flag had not been given."""
    key = typed[0][2:].replace("-", "_")
    assert key in DiffusionConfig(**settings).inert_settings()
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    argv = ["train", "--dataset", "digits", "--model", "diffusion", *flags, *typed, "--epochs", "1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 1
    assert f"{key} = " in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_what_each_diffusion_process_and_schedule_reads_is_taken():
    from dgmkit.config import RunConfig

    for settings in (
        {"schedule": "linear", "gamma_min": -10.0},
        {"process": "masked", "masked_training": "counts"},
        {"process": "masked", "diffusion_steps": 4, "fourier": True},  # (the default of a setting left out: taken)
    ):
        RunConfig.of(model="diffusion", **settings).check_inert(None, [k for k in settings if k != "fourier"])


def test_a_ddpm_schedule_of_one_step_and_fourier_features_of_masked_diffusion_are_refused_by_name(tmp_path, capsys):
    """DDPM's betas over one step made no schedule (an internal error where the model was built);
    --no-fourier of masked diffusion was trained as if not given (its features are Gaussian's)."""
    from dgmkit.cli.main import main

    with pytest.raises(ConfigError, match="schedule ddpm with diffusion_steps 1"):
        DiffusionConfig(schedule="ddpm", diffusion_steps=1).validate()
    DiffusionConfig(schedule="ddpm", diffusion_steps=2).validate()
    assert DiffusionConfig(process="masked").inert_settings()["fourier"] == "--process gaussian"
    assert "fourier" not in DiffusionConfig().inert_settings()
    argv = ["train", "--dataset", "digits", "--model", "diffusion", "--epochs", "1", "--quiet"]
    assert main([*argv, "--process", "masked", "--no-fourier", "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "fourier = False is read only with --process gaussian" in err and not (tmp_path / "m").exists()


@torch.no_grad()
def test_the_time_sampled_estimate_is_minus_the_sum_of_its_three_terms():
    """A schedule that ends at gamma_1 = 0 leaves a prior term of a fraction of a nat: the
    estimate of log p(x) must carry it, as the one-time-sample objective does."""
    from dgmkit.evaluation.estimates import estimate

    model = GaussianDiffusion(_ExactDenoiser(), LinearSchedule(-13.3, 0.0), (1, 1, 1), LEVELS, 0).double()
    x = torch.full((6, 1, 1, 1), 560, dtype=torch.long)
    est = estimate(model, x, k=2, generator=torch.Generator().manual_seed(0))
    prior = model.bound_terms(x, torch.full((6,), 0.5, dtype=torch.float64))["prior"]
    assert est.kind == "time-sampled" and (prior > 0.05).all()
    assert torch.allclose(est.terms["prior_kl"], prior.double())
    assert torch.allclose(est.log_px, est.terms["recon"] - est.terms["kl"])
    assert torch.allclose(est.terms["kl"], est.terms["prior_kl"] + est.terms["diffusion_kl"])
    assert "time_var" in est.terms  # two halves of one time each still give an honest time error
    t = DiffusionBound()(model, x)  # the training objective's one-time-sample bound carries it too
    assert torch.allclose(t.bound, -(t.prior + t.recon + t.diffusion)) and (t.prior > 0.05).all()


def test_a_schedule_that_does_not_increase_and_the_simple_loss_of_a_masked_model_are_refused_by_name():
    """From Python, a decreasing schedule was taken and gave a 'bound' above log 1 (NLL -2.08
    nats on discrete data); DiffusionBound('simple') on a masked model died in a KeyError 'mse'."""
    for ends in ((5.0, -13.3), (1.0, 1.0), (-13.3, math.inf)):
        with pytest.raises(ValueError, match="gamma_0 < gamma_1"):
            LinearSchedule(*ends)

    class _Falling(LinearSchedule):
        def forward(self, t):
            g, d = super().forward(t)
            return -g, -d

    with pytest.raises(ValueError, match=r"the noise schedule must increase, gamma\(0\) < gamma\(1\)"):
        GaussianDiffusion(_ExactDenoiser(), _Falling(), (1, 1, 1), LEVELS)
    masked = _masked_model(0)
    x = torch.randint(0, 2, (4, 1, 1, 3))
    for call in (lambda: DiffusionBound("simple").check_model(masked), lambda: DiffusionBound("simple")(masked, x)):
        with pytest.raises(TypeError, match="simple loss is the error of a predicted noise.*MaskedDiffusion"):
            call()
    DiffusionBound("vlb").check_model(masked)
    DiffusionBound("simple").check_model(_gaussian_model(0))


@pytest.mark.parametrize("bad", [torch.tensor([[[[2.5]]]]), torch.tensor([[[[LEVELS]]]]), torch.tensor([[[[-1]]]])])
def test_gaussian_bound_terms_refuse_data_that_are_not_its_levels(bad: torch.Tensor) -> None:
    """2.5 was scored as the level 2 (long()); 1024 of 1024 levels and -1 met a raw IndexError inside."""
    with pytest.raises(DataError, match=f"GaussianDiffusion: its likelihood scores the integers 0..{LEVELS - 1}"):
        _gaussian_model(10).bound_terms(bad, torch.tensor([0.5]))


@pytest.mark.parametrize(
    "bad", [torch.tensor([[[0.0, 0.5, 1.0]]]), torch.tensor([[[0, 2, 1]]]), torch.tensor([[[0, -1, 1]]])]
)
def test_masked_bound_terms_refuse_data_that_are_not_its_levels(bad: torch.Tensor) -> None:
    """2 of 2 levels is the mask token's index: it met a raw index error in the gather of log p(x_d | z_t)."""
    with pytest.raises(DataError, match="MaskedDiffusion: its likelihood scores 0 or 1"):
        _masked_model(4).bound_terms(bad.unsqueeze(0), torch.tensor([0.5]))
