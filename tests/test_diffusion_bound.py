"""VDM's bound on data of a few levels, against quadrature and exact likelihoods.

With the exact denoiser E[eps | z_t] of data on L = 2 or 4 levels (a mixture of L point
masses), the continuous-time model generates the data distribution itself, so its bound is
tight at -log pi_k; the T-step bound lies below the T-step chain's own log-likelihood (computed
on a grid) and rises to the continuous one as 1/T. The bound's expectation over the time is
computed here by quadrature (over eps and t, independently of ``bound_terms``), which the
time-sampled estimates must match within their noise; and a step's term is T times the KL of
q(z_s | z_t, x) against p(z_s | z_t) written from the posterior's mean and variance."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dgmkit.evaluation.estimates import estimate
from dgmkit.models import GaussianDiffusion, LinearSchedule

_LO, _HI = -13.3, 5.0  # the log-SNR range of the noise-level embedding (models.diffusion)
_EPS = torch.linspace(-9, 9, 1201, dtype=torch.float64)  # a grid of eps for E over N(0, 1)
_EPS_W = torch.exp(-0.5 * _EPS**2) / math.sqrt(2 * math.pi) * (_EPS[1] - _EPS[0])


def _values(levels: int) -> torch.Tensor:
    return (2 * torch.arange(levels, dtype=torch.float64) + 1) / levels - 1


def _eps_hat(z: torch.Tensor, g: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """E[eps | z_t = z] at gamma g for x on the levels with probabilities pi (z, g broadcast)."""
    v = _values(len(pi))
    a, s = torch.sigmoid(-g).sqrt().unsqueeze(-1), torch.sigmoid(g).sqrt().unsqueeze(-1)
    w = torch.softmax(pi.log() - 0.5 * ((z.unsqueeze(-1) - a * v) / s).square(), -1)
    return (z - a.squeeze(-1) * (w * v).sum(-1)) / s.squeeze(-1)


class _Mixture(nn.Module):
    """The exact denoiser of ``pi``, read from the model's noise-level embedding."""

    def __init__(self, pi: torch.Tensor):
        super().__init__()
        self.pi = pi

    def forward(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return _eps_hat(z, (_LO + s * (_HI - _LO) / 1000).view(-1, 1, 1, 1), self.pi)


def _model(pi: torch.Tensor, ends: tuple[float, float], steps: int) -> GaussianDiffusion:
    return GaussianDiffusion(_Mixture(pi), LinearSchedule(*ends), (1, 1, 1), len(pi), steps).double()


def _mse(g: torch.Tensor, k: int, pi: torch.Tensor) -> torch.Tensor:
    """E_eps ||eps - eps_hat(z_t)||^2 at each gamma of g (n,) for x at level k, by quadrature."""
    g = g.view(-1, 1)
    z = torch.sigmoid(-g).sqrt() * _values(len(pi))[k] + torch.sigmoid(g).sqrt() * _EPS
    return ((_EPS - _eps_hat(z, g, pi)).square() * _EPS_W).sum(-1)


def _ends_terms(model: GaussianDiffusion, k: int) -> float:
    """The prior term (closed form) and the reconstruction term (quadrature over z_0)."""
    g0, g1 = (g.double() for g in model.schedule.endpoints())
    v = model.levels.double()[k]
    prior = 0.5 * (torch.sigmoid(g1) + torch.sigmoid(-g1) * v**2 - 1 - F.logsigmoid(g1))
    z0 = torch.sigmoid(-g0).sqrt() * v + torch.sigmoid(g0).sqrt() * _EPS
    recon = -(torch.log_softmax(model._recon_logits(z0, g0), -1)[:, k] * _EPS_W).sum()
    return (prior + recon).item()


def _quad_bound(pi: torch.Tensor, ends: tuple[float, float], k: int, steps: int) -> float:
    """-ELBO at level k: continuous time (steps 0) as the t-integral of 1/2 gamma' E||eps - eps_hat||^2
    by the trapezoid rule, or the sum over T steps of 1/2 (SNR(s) / SNR(t) - 1) E||eps - eps_hat||^2."""
    g0, g1 = ends
    ends_terms = _ends_terms(_model(pi, ends, steps), k)
    if steps:
        g = g0 + (g1 - g0) * torch.arange(steps + 1, dtype=torch.float64) / steps
        return ends_terms + (0.5 * torch.expm1(g[1:] - g[:-1]) * _mse(g[1:], k, pi)).sum().item()
    g = torch.linspace(g0, g1, 1001, dtype=torch.float64)
    return ends_terms + torch.trapezoid(0.5 * _mse(g, k, pi), g).item()  # (dt gamma' = d gamma)


_PI4 = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
_VDM = (-13.3, 8.0)


def test_the_continuous_bound_of_the_exact_denoiser_on_four_levels_is_tight():
    """The model is the data distribution (up to p(z_1) = N(0, 1)), and so is its posterior over
    the path: -ELBO = -log pi_k to the prior term's 1e-4 (a missing 1/2 or a gamma' read as
    gamma would move it by a nat)."""
    for k in range(4):
        assert _quad_bound(_PI4, _VDM, k, 0) == pytest.approx(-math.log(_PI4[k]), abs=1e-3)


@torch.no_grad()
def test_the_time_sampled_bound_is_unbiased_for_the_quadrature_in_continuous_time_and_with_steps():
    """dgm eval's estimate (two stratified halves of k times per datapoint) against the bound by
    quadrature; with T steps also the one-sample training estimate at uniform times."""
    torch.manual_seed(0)
    for steps in (0, 10):
        model = _model(_PI4, _VDM, steps)
        for k in (0, 3):
            want = _quad_bound(_PI4, _VDM, k, steps)
            x = torch.full((20_000, 1, 1, 1), k, dtype=torch.long)
            got = -estimate(model, x, k=4, generator=torch.Generator().manual_seed(k)).log_px
            assert got.mean().item() == pytest.approx(want, abs=4 * got.std().item() / math.sqrt(len(got)))
            terms = model.bound_terms(x, torch.rand(len(x), dtype=torch.float64))
            one = terms["prior"] + terms["recon"] + terms["diffusion"]
            assert one.mean().item() == pytest.approx(want, abs=4 * one.std().item() / math.sqrt(len(one)))


def test_the_step_bound_falls_to_the_continuous_one_as_one_over_t():
    """T (bound_T - bound) tends to a constant: 1/T convergence from above (VDM's T-step bound
    is worse than the continuous one, and better with more steps)."""
    cont = _quad_bound(_PI4, _VDM, 1, 0)
    gaps = {steps: _quad_bound(_PI4, _VDM, 1, steps) - cont for steps in (10, 100, 1000)}
    assert gaps[10] > gaps[100] > gaps[1000] > 0
    assert 100 * gaps[100] == pytest.approx(1000 * gaps[1000], rel=0.15)


def _chain_probs(pi: torch.Tensor, ends: tuple[float, float], steps: int) -> torch.Tensor:
    """P(k) of the T-step ancestral chain p(z_s | z_t) = q(z_s | z_t, x = x_hat(z_t)), the density
    of z carried on a grid from z_1 ~ N(0, 1) to z_0, then through p(x | z_0)."""
    z = torch.linspace(-4, 4, 2001, dtype=torch.float64)
    dz = z[1] - z[0]
    p = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    g = ends[0] + (ends[1] - ends[0]) * torch.arange(steps + 1, dtype=torch.float64) / steps
    for i in range(steps, 0, -1):
        a2t, s2t, a2s, s2s = torch.sigmoid(-g[i]), torch.sigmoid(g[i]), torch.sigmoid(-g[i - 1]), torch.sigmoid(g[i - 1])
        x_hat = (z - s2t.sqrt() * _eps_hat(z, g[i], pi)) / a2t.sqrt()
        a2ts = a2t / a2s
        s2ts = s2t - a2ts * s2s  # sigma_{t|s}^2
        mean = a2ts.sqrt() * s2s / s2t * z + a2s.sqrt() * s2ts / s2t * x_hat
        var = s2ts * s2s / s2t
        kernel = torch.exp(-0.5 * (z.view(-1, 1) - mean).square() / var) / torch.sqrt(2 * math.pi * var)
        p = kernel @ p * dz
    decoder = torch.softmax(_model(pi, ends, steps)._recon_logits(z, g[0]), -1)
    return (p.view(-1, 1) * decoder).sum(0) * dz


def test_the_step_bound_lies_below_the_step_chain_s_own_likelihood_on_two_levels():
    pi, ends = torch.tensor([0.3, 0.7], dtype=torch.float64), (-6.0, 6.0)
    gaps = []
    for steps in (3, 10, 30):
        probs = _chain_probs(pi, ends, steps)
        assert probs.sum().item() == pytest.approx(1.0, abs=2e-3)  # (the grid's edges and steps)
        for k in range(2):
            gap = _quad_bound(pi, ends, k, steps) + probs[k].log().item()
            assert gap >= 0  # -ELBO >= -log p_T(x)
            gaps.append(gap)
    assert gaps[0] > gaps[2] > gaps[4]  # and tighter with more steps
    assert gaps[4] < 0.3  # (0.25 nats at T = 30 for the rarer level)


@torch.no_grad()
def test_a_step_s_term_is_t_times_the_kl_of_the_posterior_step_against_the_model_s():
    """KL(q(z_s | z_t, x) || p(z_s | z_t)), two Gaussians of one variance, from VDM's posterior
    mean alpha_{t|s} sigma_s^2 / sigma_t^2 z_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x with p's
    x_hat = (z_t - sigma_t eps_hat) / alpha_t, at the z_t that bound_terms draws."""
    steps, ends = 7, (-4.0, 3.0)
    model = _model(_PI4, ends, steps)
    x = torch.arange(4).repeat(50).view(-1, 1, 1, 1)
    t = torch.rand(len(x), dtype=torch.float64)
    torch.manual_seed(1)
    got = model.bound_terms(x, t)["diffusion"]
    torch.manual_seed(1)
    eps = torch.randn(x.shape, dtype=torch.float64).flatten()  # bound_terms' first draw
    i = torch.floor(t * steps) + 1
    gt, gs = ends[0] + (ends[1] - ends[0]) * i / steps, ends[0] + (ends[1] - ends[0]) * (i - 1) / steps
    a2t, s2t, a2s, s2s = torch.sigmoid(-gt), torch.sigmoid(gt), torch.sigmoid(-gs), torch.sigmoid(gs)
    xs = model.levels.double()[x.flatten()]
    z = a2t.sqrt() * xs + s2t.sqrt() * eps
    x_hat = (z - s2t.sqrt() * _eps_hat(z, gt, _PI4)) / a2t.sqrt()
    s2ts = s2t - a2t / a2s * s2s
    var = s2ts * s2s / s2t
    kl = (a2s.sqrt() * s2ts / s2t * (xs - x_hat)).square() / (2 * var)  # the means differ in x only
    torch.testing.assert_close(got, steps * kl, rtol=1e-9, atol=1e-12)
