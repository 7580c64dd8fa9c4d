"""Samplers against the distribution the model's own log-likelihood defines, on events small
enough to score every value: tiny models of random weights, drawn through ``dgm sample``'s path
(``draw_samples``, draws of p(x|z) where a model shows means), compared by a chi-square test
(cells under 5 expected pooled) with p(x) from enumeration, from a quadrature over a 2-D latent
of the prior's ``log_prob``, or from a forward pass over an ancestral chain written out here.
A sampler that draws from something else (a mixture's weights left out, a layer's scale
dropped, a reveal or noise step off, a temperature left on) fails by hundreds of chi-square
units at these sizes; the fixed seeds and a p-value floor of 1e-6 keep the tests from flaking."""

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from dgmkit.cli.figures import SampleOptions, draw_samples
from dgmkit.config import RunConfig, build_model
from dgmkit.config.run import Run

SHAPE = (1, 2, 2)


def _model(shape, levels, jitter=0.3, **settings):
    cfg = RunConfig.of(**settings)
    model = build_model(cfg, shape, levels).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random weights away from the initialisation's symmetries
        for p in model.parameters():
            p.add_(jitter * torch.randn(p.shape, generator=g))
    return Run(Path("r"), cfg, {}, model, Path("r/best.pt")), model


def _draws(run, n=20000, **options):
    """n draws through ``dgm sample``'s path, 10000 a call (its most)."""
    return torch.cat([draw_samples(run, 10000, seed, SampleOptions(**options))[0] for seed in range(n // 10000)])


def _all(levels, shape=SHAPE):
    values = list(itertools.product(range(levels), repeat=math.prod(shape)))
    return torch.tensor(values, dtype=torch.float32).view(-1, *shape)


def _agree(x, p, levels):
    """Chi-square of the draws' values x (n, *event) against probabilities p of ``_all`` order."""
    flat = x.flatten(1).round().long()
    code = (flat * levels ** torch.arange(flat.shape[1] - 1, -1, -1)).sum(1)
    seen = torch.bincount(code, minlength=len(p)).double()
    assert len(seen) == len(p), "a draw outside the values scored"
    want = len(x) * p.double() / p.double().sum()
    big = want >= 5
    obs, exp = torch.cat([seen[big], seen[~big].sum().view(1)]), torch.cat([want[big], want[~big].sum().view(1)])
    keep = exp > 0
    assert obs[~keep].sum() == 0, "draws of values of probability 0"
    chi2 = float(((obs - exp)[keep] ** 2 / exp[keep]).sum())
    p_value = stats.chi2.sf(chi2, int(keep.sum()) - 1)
    assert p_value > 1e-6, f"chi2 {chi2:.1f} on {int(keep.sum()) - 1} dof: {(seen / len(x)).tolist()} vs {p.tolist()}"


def _grid(half=7.0, step=0.05):
    t = torch.arange(-half + step / 2, half, step)
    return torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2), step * step


@torch.no_grad()
def _quadrature(images, prior_log_prob, likelihood):
    """p(x) = int p(z) p(x|z) dz over a 2-D latent, midpoint rule (the prior's mass checked)."""
    z, area = _grid()
    log_pz = prior_log_prob(z).double()
    assert abs(float(log_pz.exp().sum() * area) - 1) < 1e-3, "the grid misses prior mass"
    px = likelihood(z)
    log_px = torch.stack([px.log_prob(x.expand(len(z), *x.shape)).double() for x in images], 1)
    return (torch.logsumexp(log_px + log_pz[:, None], 0) + math.log(area)).exp()


@pytest.mark.parametrize(
    "prior",
    [
        {"prior": "standard"},
        {"prior": "mog", "prior_components": 4},
        {"prior": "vampprior", "prior_components": 4},
        {"prior": "flow", "flow_layers": 2},
    ],
    ids=lambda p: p["prior"],
)
def test_vae_draws_are_of_the_marginal_its_prior_s_log_prob_defines(prior):
    run, m = _model(SHAPE, 2, 0.2 if prior["prior"] == "flow" else 0.3, model="vae", latent_dim=2, hidden=[8], **prior)
    if prior["prior"] == "mog":
        with torch.no_grad():
            m.prior_module.logits.copy_(torch.tensor([2.0, -1.0, 0.5, 0.0]))  # weights far from equal
    images = _all(2)
    _agree(_draws(run, draw=True), _quadrature(images, lambda z: m.prior().log_prob(z), m.likelihood), 2)


@pytest.mark.parametrize(
    "settings", [{}, {"posterior": "ladder", "prior": "mog", "prior_components": 3}], ids=["top-down", "mog"]
)
def test_hvae_draws_are_ancestral_through_its_layers(settings):
    """Two one-dimensional layers: p(z_1, z_2) = p(z_2) p(z_1 | z_2) by its own ``log_prob``."""
    run, m = _model(SHAPE, 2, 0.5, model="hvae", latent_sizes=[1, 1], hidden=[8], **settings)
    if "prior" in settings:
        with torch.no_grad():
            m.top_prior_module.logits.copy_(torch.tensor([1.5, -1.0, 0.0]))
    _agree(_draws(run, draw=True), _quadrature(_all(2), lambda z: m.prior().log_prob(z), m.likelihood), 2)
    z = torch.cat([m.sample_latents(10000, torch.Generator().manual_seed(seed)) for seed in range(2)])  # what sample draws
    _box_agree(z, lambda v: m.prior().log_prob(v), -8.0, 8.0, 32, 10)


def test_m2_draws_classes_in_turn_of_its_uniform_p_y():
    run, m = _model(SHAPE, 2, 0.5, model="m2", classes=2, latent_dim=2, hidden=[8])
    images, p = _all(2), 0
    for y in range(2):
        onehot = F.one_hot(torch.tensor(y), 2).float()

        def prior(z, onehot=onehot):
            return m.log_joint(images[:1], torch.cat([onehot.expand(len(z), 2), z], -1).unsqueeze(1)).log_pz.view(-1)

        def likelihood(z, onehot=onehot):
            return m.decoder(torch.cat([z, onehot.expand(len(z), 2)], -1))

        p = p + _quadrature(images, lambda z: prior(z) + math.log(2), likelihood) / 2
    _agree(_draws(run, draw=True), p, 2)


@torch.no_grad()
def test_discrete_vae_and_helmholtz_machine_draws_by_enumerating_their_latents():
    images = _all(2)
    run, m = _model(SHAPE, 2, 0.7, model="dvae", latent_dim=2, latent_classes=3, hidden=[8])
    z = torch.stack([F.one_hot(torch.tensor(c), 3) for c in itertools.product(range(3), repeat=2)]).float()
    px = m.likelihood(z)
    log_px = torch.stack([px.log_prob(x.expand(len(z), *SHAPE)) for x in images], 1).double()
    _agree(_draws(run, draw=True), torch.logsumexp(log_px + m.prior().log_prob(z).double()[:, None], 0).exp(), 2)
    run, m = _model(SHAPE, 2, 0.8, model="helmholtz", layers=[2, 2])
    h = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))
    px = m.likelihood(h)
    log_px = torch.stack([px.log_prob(x.expand(len(h), *SHAPE)) for x in images], 1).double()
    _agree(_draws(run, draw=True), torch.logsumexp(log_px + m.prior().log_prob(h).double()[:, None], 0).exp(), 2)


@torch.no_grad()
def _masked_chain(m, steps, levels):
    """p(x) of ``steps`` reveal steps from all masks: at step i each masked entry is revealed with
    probability 1/i, at a level of p(x_d | z_t), t = i / steps (the bound's p(z_s | z_t))."""
    d = math.prod(SHAPE)
    states = torch.tensor(list(itertools.product(range(levels + 1), repeat=d)))  # the level ``levels``: the mask
    prob = torch.zeros(len(states), dtype=torch.float64)
    prob[-1] = 1.0
    for i in range(steps, 0, -1):
        pv = torch.softmax(m.logits(states.view(-1, *SHAPE), torch.full((len(states),), i / steps)).double(), -1)
        pv = pv.reshape(len(states), d, levels)
        masked = states == levels
        kernel = torch.cat([pv / i, torch.full((len(states), d, 1), 1 - 1 / i, dtype=torch.float64)], -1)
        kernel[~masked] = F.one_hot(states[~masked], levels + 1).double()
        move = torch.ones(len(states), len(states), dtype=torch.float64)
        for e in range(d):
            move = move * kernel[:, e, states[:, e]]
        prob = prob @ move
    return prob.view(*[levels + 1] * d)[(slice(0, levels),) * d].reshape(-1)


@pytest.mark.parametrize("steps", [1, 4])
def test_masked_diffusion_draws_its_reveal_chain_s_own_distribution(steps):
    run, m = _model(SHAPE, 2, 0.3, model="diffusion", process="masked", unet_channels=[8], attention=False)
    _agree(_draws(run, steps=steps), _masked_chain(m, steps, 2), 2)


class _Denoiser(torch.nn.Module):
    """eps_hat(z, t) of one entry, depending on both (the U-Net reads a 1x1 image as a constant)."""

    def forward(self, z, t):
        t = (t / 1000.0).view(-1, *([1] * (z.dim() - 1))).to(z.dtype)
        return 0.9 * torch.tanh(1.7 * z - 0.4) * (0.3 + t) + 0.3 * torch.sin(3 * z) * (1 - t)


@torch.no_grad()
def test_gaussian_diffusion_draws_the_chain_of_q_of_z_s_given_z_t_and_x_hat():
    """One entry, 4 levels: the chain's z on 2400 bins, each step VDM's q(z_s | z_t, x = x_hat)
    written out here (a Gaussian integrated over each bin), then p(x | z_0)."""
    run, m = _model(
        (1, 1, 1), 4, 0.0, model="diffusion", schedule="linear", gamma_min=-5.0, gamma_max=3.0, unet_channels=[8]
    )
    m.net = _Denoiser()
    steps = 5
    edges = torch.arange(-6.0, 6.0 + 1e-9, 0.005, dtype=torch.float64)
    mid = (edges[1:] + edges[:-1]) / 2

    def binned(mean, sd):
        c = torch.special.ndtr((edges - mean[:, None]) / sd)
        out = c[:, 1:] - c[:, :-1]
        out[:, 0] += c[:, 0]
        out[:, -1] += 1 - c[:, -1]
        return out

    prob = binned(torch.zeros(1, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))[0]  # z_1 ~ N(0, 1)
    for i in range(steps, 0, -1):
        g_t, g_s = (m.schedule(torch.tensor([j / steps], dtype=torch.float64))[0].double() for j in (i, i - 1))
        a2t, s2t, a2s, s2s = torch.sigmoid(-g_t), torch.sigmoid(g_t), torch.sigmoid(-g_s), torch.sigmoid(g_s)
        eps = m.eps_hat(mid.float().view(-1, 1, 1, 1), g_t.float().expand(len(mid))).double().view(-1)
        x_hat = (mid - s2t.sqrt() * eps) / a2t.sqrt()
        s2_ts = s2t - a2t / a2s * s2s
        mean = (a2t / a2s).sqrt() * s2s / s2t * mid + a2s.sqrt() * s2_ts / s2t * x_hat
        prob = prob @ binned(mean, (s2_ts * s2s / s2t).sqrt())
    p = prob @ torch.softmax(m._recon_logits(mid.float(), m.schedule.endpoints()[0]).double(), -1)
    _agree(_draws(run, steps=steps), p, 4)


def _box_agree(x, log_density, lo=-6.0, hi=6.0, bins=24, sub=20):
    """A 2-D histogram of points x (n, 2) on [lo, hi]^2 (and one cell outside) against the
    density integrated over each bin (midpoint rule, sub x sub points a bin)."""
    step = (hi - lo) / (bins * sub)
    t = torch.arange(lo + step / 2, hi, step)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        w = log_density(grid).double().exp() * step * step

    def cell(v):
        i = ((v.double() - lo) / (hi - lo) * bins).floor().long()
        return torch.where(((i >= 0) & (i < bins)).all(1), i[:, 0] * bins + i[:, 1], bins * bins)

    p = torch.zeros(bins * bins + 1, dtype=torch.float64).index_add_(0, cell(grid), w)
    p[-1] = max(1 - float(w.sum()), 0.0)
    _agree(cell(x).view(-1, 1, 1, 1).float(), p, bins * bins + 1)


@pytest.mark.parametrize("temperature", [None, 0.6])
def test_a_flow_draws_its_density_and_at_a_temperature_the_base_narrowed_by_it(temperature):
    """At temperature tau the draws are T^-1 of N(0, tau^2 I): density N(T(x); 0, tau^2 I) |det dT/dx|."""
    run, m = _model((1, 1, 2), None, 0.15, model="flow", flow="realnvp", hidden=[16], flow_layers=3)
    tau = temperature or 1.0

    def log_density(v):
        z, ladj = m.transform(v.view(-1, 1, 1, 2))
        return ladj - 0.5 * (z / tau).pow(2).sum(-1) - 2 * math.log(tau) - math.log(2 * math.pi)

    _box_agree(_draws(run, temperature=temperature).view(-1, 2), log_density)


@torch.no_grad()
def test_a_variationally_dequantized_flow_draws_the_levels_of_its_density_s_cells():
    """P(k) is the density's mass over the cell [k/L, (k+1)/L)^D; what its logit puts beyond [0, 1]
    (its margin alpha / (1 - 2 alpha)) is drawn at the nearest level, as ``dgm sample`` says."""
    levels = 4
    run, m = _model(
        (1, 1, 2), levels, 0.15, model="flow", flow="maf", hidden=[16], flow_layers=2, dequantization="variational"
    )
    margin = run.cfg.model.logit_alpha / (1 - 2 * run.cfg.model.logit_alpha)
    step = (1 + 2 * margin) / 600
    t = torch.arange(-margin + step / 2, 1 + margin, step)
    y = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    w = m.flow.log_prob(y.view(-1, 1, 1, 2)).double().exp() * step * step
    k = (y * levels).floor().clamp(0, levels - 1).long()
    p = torch.zeros(levels * levels, dtype=torch.float64).index_add_(0, k[:, 0] * levels + k[:, 1], w)
    _agree(_draws(run), p, levels)
