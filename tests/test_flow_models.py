"""Flows inside models: IAF posteriors and flow priors against exact linear-Gaussian
likelihoods, and the dequantization accounting of image flows' bits/dim."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from tests import linear_gaussian as lg
from torch import nn
from torch.distributions import MultivariateNormal

import dgmkit.transforms as T
from dgmkit.conditional import IAFEncoder
from dgmkit.data import DataTransform
from dgmkit.evaluation import evaluate, importance_sampled_log_likelihood
from dgmkit.evaluation.metrics import discrete_nll
from dgmkit.models import FlowModel
from dgmkit.objectives import ELBO, MaximumLikelihood, iwae_bound, log_importance_weights
from dgmkit.priors import FlowPrior


def _iaf_vae(perturb: float):
    """The linear Gaussian VAE with its exact posterior as the Gaussian stage of an IAF posterior."""
    model, marginal = lg.make(seed=0)
    lin = model.encoder.net[1]
    ctx = 3
    net = nn.Sequential(nn.Flatten(), nn.Linear(lg.D, 2 * lg.M + ctx)).double()
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].bias.zero_()
        net[1].weight[: 2 * lg.M] = lin.weight
        net[1].bias[: 2 * lg.M] = lin.bias
        net[1].weight[2 * lg.M :] = torch.randn(ctx, lg.D, dtype=torch.float64)
    flow = T.iaf(lg.M, [16], 3, context_features=ctx).double()  # two reversals: identity at zero weights
    if perturb:
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for p in flow.parameters():
                p.add_(perturb * torch.randn(p.shape, generator=g, dtype=torch.float64))
    model.encoder = IAFEncoder(net, lg.M, ctx, flow)
    return model.eval(), marginal


def test_iaf_posterior_at_the_identity_is_exact():
    """With the exact Gaussian stage and identity IAF layers, every log weight equals log p(x)."""
    model, marginal = _iaf_vae(perturb=0.0)
    x = lg.data(marginal, 50)
    exact = marginal.log_prob(x.view(50, -1))
    with torch.no_grad():
        q = model.posterior(x)
        z = q.rsample((20,))
        log_w = model.likelihood(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)
    torch.testing.assert_close(log_w, exact.expand(20, -1), atol=1e-9, rtol=0)


def test_iaf_posterior_bounds_and_importance_sampling():
    model, marginal = _iaf_vae(perturb=0.03)  # ELBO ~1 nat below log p(x)
    x = lg.data(marginal, 200)
    exact = marginal.log_prob(x.view(200, -1)).mean().item()
    torch.manual_seed(0)
    with torch.no_grad():
        q = model.posterior(x)
        z = q.rsample((7,))
        # the cached log q of a sample equals the density computed by the sequential inverse
        torch.testing.assert_close(q.log_prob(z), q.log_prob(z.clone()), atol=1e-9, rtol=0)
        elbo = ELBO(200)(model, x).elbo.mean().item()
        iw = {k: torch.stack([iwae_bound(model, x, k).mean() for _ in range(5)]).mean().item() for k in (5, 100)}
        est = importance_sampled_log_likelihood(model, x, k=5000, generator=torch.Generator().manual_seed(0)).mean().item()
    assert elbo < exact - 0.05, "the perturbed flow should not be exact"
    assert elbo < iw[5] < iw[100] <= exact + 1e-3
    # a wrong log q (e.g. a missing log-det) is off by nats; k = 5000 leaves a bias below of a few
    # hundredths at this ELBO gap (0.87 nats)
    assert -0.1 < est - exact < 0.03


def test_flow_prior_gives_the_gaussian_marginal():
    """A linear flow prior (ActNorm + invertible linear) makes p(z) a full-covariance Gaussian,
    so p(x) is Gaussian in closed form; importance sampling must reach it."""
    model, _ = lg.make(seed=0)
    flow = T.Compose([T.ActNorm(lg.M), T.InvertibleLinear(lg.M)]).double()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.4 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    flow.eval()
    model.prior_module = FlowPrior(lg.M, flow).double()
    # z = T^{-1}(u) = A u + m with u ~ N(0, I)
    m, _ = flow.inverse(torch.zeros(1, lg.M, dtype=torch.float64))
    eye = torch.eye(lg.M, dtype=torch.float64)
    A = flow.inverse(eye)[0].T - m.T  # columns: images of the unit vectors
    W, b = model.decoder.net[0].weight, model.decoder.net[0].bias
    cov = W @ A @ A.T @ W.T + lg.SIGMA**2 * torch.eye(lg.D, dtype=torch.float64)
    marginal = MultivariateNormal(W @ m[0] + b, cov)
    x = lg.data(marginal, 200)
    exact = marginal.log_prob(x.view(200, -1)).mean().item()
    with torch.no_grad():
        est = importance_sampled_log_likelihood(model, x, k=5000, generator=torch.Generator().manual_seed(0)).mean().item()
        elbo = ELBO(100)(model, x).elbo.mean().item()
    assert elbo < est
    assert abs(est - exact) < 0.02


def _logit_flow(seed=0):
    torch.manual_seed(seed)
    bij = T.Compose([T.Logit(0.05), T.realnvp(2, [32], 4, act="tanh")]).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in bij.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return FlowModel(bij, (1, 1, 2), flatten=True).double().eval()


def test_dequantized_nll_bounds_the_probability_of_each_integer_image():
    """Two pixels with 4 levels: P(k) is the flow's mass on the cell [k/4, (k+1)/4)^2. The
    reported NLL (continuous NLL plus D log L) must be >= -log P(k) for each of the 16 images,
    and for most of them within log 16 of it; forgetting the D log L term (or counting it twice) fails by log 16."""
    model, levels = _logit_flow(), 4
    transform = DataTransform("dequantize", levels)
    n = 200  # grid points per cell side for P(k)
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    cell = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    g = torch.Generator().manual_seed(0)
    total, gaps = 0.0, []
    with torch.no_grad():
        for k1 in range(levels):
            for k2 in range(levels):
                k = torch.tensor([[k1, k2]], dtype=torch.uint8).view(1, 1, 1, 2)
                y = (torch.tensor([k1, k2], dtype=torch.float64) + cell) / levels
                mass = model.log_prob(y.view(-1, 1, 1, 2)).exp().mean().item() / levels**2
                total += mass
                ys = transform(k.expand(4000, 1, 1, 2), g).double()
                nll = discrete_nll(-model.log_prob(ys).mean().item(), 2, transform.log_volume)
                assert nll >= -math.log(mass) - 0.01
                gaps.append(nll + math.log(mass))
    # the Jensen gap is large only in the edge cells, where the logit's density varies most; so
    # a missing D log L term breaks the bound in most cells and a doubled one the median gap
    assert sorted(gaps)[len(gaps) // 2] < math.log(levels**2)
    assert sum(g < math.log(levels**2) for g in gaps) >= len(gaps) // 2
    assert 0.8 < total <= 1.0 + 1e-6  # the logit's alpha leaves a little mass outside [0, 1]^2


def test_evaluate_reports_bits_per_dim_of_the_integer_images():
    model = FlowModel(T.Compose([T.Logit(0.05), T.realnvp_multiscale((1, 4, 4), hidden=8, layers=2)]), (1, 4, 4))
    k = torch.randint(0, 256, (64, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    t = DataTransform("dequantize", 256)
    y = t(k, torch.Generator().manual_seed(1))
    r = evaluate(model, y, log_volume=t.log_volume)
    with torch.no_grad():
        nll_y = -model.log_prob(y).double().mean().item()
    assert r.estimate == "exact" and r.recon is None and r.elbo is None
    assert r.nll == pytest.approx(nll_y + 16 * math.log(256), rel=1e-6)
    assert r.bpd == pytest.approx((nll_y + 16 * math.log(256)) / (16 * math.log(2)), rel=1e-6)


def test_maximum_likelihood_training_raises_the_likelihood():
    from dgmkit.data import load_dataset

    x = load_dataset("gaussian-mixture").train.x[:2000]
    model = FlowModel(T.realnvp(2, [32, 32], 4), (1, 1, 2), flatten=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    before = model.log_prob(x).mean().item()
    for _ in range(150):
        loss = MaximumLikelihood()(model, x[torch.randint(0, 2000, (256,))]).loss.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.log_prob(x).mean().item()
    assert after > before + 0.5


def test_variational_dequantization_bounds_the_probability_of_each_integer_image():
    """ELBO <= IW-bound(k) <= log P(k) for every image of two 4-level pixels, P(k) by quadrature."""
    from dgmkit.models import VariationallyDequantizedFlow
    from dgmkit.models.dequantization import LogitNormalDequantizer

    levels = 4
    flow = _logit_flow()
    torch.manual_seed(0)
    model = VariationallyDequantizedFlow(flow, LogitNormalDequantizer(1, levels, hidden=8).double()).eval()
    n = 200
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    cell = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    gaps = []
    with torch.no_grad():
        for k1 in range(levels):
            for k2 in range(levels):
                y = (torch.tensor([k1, k2], dtype=torch.float64) + cell) / levels
                log_mass = math.log(flow.log_prob(y.view(-1, 1, 1, 2)).exp().mean().item() / levels**2)
                k = torch.tensor([k1, k2]).view(1, 1, 1, 2).expand(2000, 1, 1, 2)
                elbo = log_importance_weights(model, k, 1).log_w[0].mean().item()
                iw = iwae_bound(model, k[:20], 100).mean().item()
                assert elbo <= iw + 0.01
                assert iw <= log_mass + 0.02, (k1, k2, iw, log_mass)
                gaps.append(log_mass - iw)
    assert sorted(gaps)[len(gaps) // 2] < 0.5  # importance sampling closes most of the gap


def test_a_variationally_dequantized_flow_draws_each_integer_image_with_its_probability():
    """Its draws are the flow's y floored to the L levels: an image of inner levels as often as
    the flow's mass on its cell [k/L, (k+1)/L)^2, P(k) by quadrature; the logit's margin leaves a
    little mass outside [0, 1]^2 (P sums to less than 1), which the draws give to the edge levels.
    (The model's draws had no test, and the flow's ignored its dtype: a float64 flow failed.)"""
    from dgmkit.models import VariationallyDequantizedFlow
    from dgmkit.models.dequantization import LogitNormalDequantizer

    levels, n = 4, 20_000
    flow = _logit_flow()
    model = VariationallyDequantizedFlow(flow, LogitNormalDequantizer(1, levels, hidden=8).double()).eval()
    k, shown = model.sample(n, torch.Generator().manual_seed(0))
    assert k.shape == (n, 1, 1, 2) and k.dtype == torch.float64 and torch.equal(k, shown) and torch.equal(k, k.round())
    assert 0 <= k.min() and k.max() <= levels - 1
    assert torch.equal(k, model.sample(n, torch.Generator().manual_seed(0))[0])
    t = (torch.arange(100, dtype=torch.float64) + 0.5) / 100
    cell = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    flat, total, excess = k.view(n, 2), 0.0, 0.0
    with torch.no_grad():
        for k1, k2 in itertools.product(range(levels), repeat=2):
            y = (torch.tensor([k1, k2], dtype=torch.float64) + cell) / levels
            mass = flow.log_prob(y.view(-1, 1, 1, 2)).exp().mean().item() / levels**2
            freq = (flat == torch.tensor([k1, k2], dtype=flat.dtype)).all(1).double().mean().item()
            tolerance = 4 * math.sqrt(mass * (1 - mass) / n) + 1e-3
            total += mass
            if {k1, k2} & {0, levels - 1}:
                assert freq >= mass - tolerance, (k1, k2, freq, mass)
                excess += freq - mass
            else:
                assert freq == pytest.approx(mass, abs=tolerance), (k1, k2)
    assert 0.95 < total < 0.99 and excess == pytest.approx(1 - total, abs=0.01)  # the mass outside, at the edges


def test_a_flow_model_as_a_distribution_scores_as_the_model_and_names_a_wrong_shape():
    """``distribution()`` (a torch Distribution over flattened data) and ``base()`` give the
    numbers log_prob writes out by hand: log N(T(x); 0, I) + log|det|."""
    flow = _logit_flow()
    y = torch.rand(5, 1, 1, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        z, ladj = flow.transform(y)
        torch.testing.assert_close(flow.base().log_prob(z) + ladj, flow.log_prob(y))
        torch.testing.assert_close(flow.distribution().log_prob(y.flatten(1)), flow.log_prob(y))
        torch.manual_seed(5)
        x = flow.distribution().sample((4,))
        torch.manual_seed(5)
        torch.testing.assert_close(x, flow.sample(4)[0].flatten(1))  # the model's own draws
    with pytest.raises(ValueError, match=r"given data of shape \(5, 2\); .* \(B, 1, 1, 2\) \(flatten=True flattens"):
        flow.log_prob(y.flatten(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_logit_normal_draw_far_in_the_tail_comes_with_the_density_it_was_drawn_from(dtype):
    """u is kept within [1e-6, 1 - 1e-6]; log q is that of the draw v = loc + scale eps itself, the
    density an importance weight needs, not log_prob of the clipped u (an atom, not a density)."""
    from torch.distributions import Normal

    from dgmkit.distributions.logit_normal import LogitNormal

    loc, scale = torch.tensor([20.0, -20.0, 0.3], dtype=dtype).view(1, 3, 1, 1), torch.ones(1, 3, 1, 1, dtype=dtype)
    u, log_q = LogitNormal(loc, scale).rsample_and_log_prob((4,), generator=torch.Generator().manual_seed(0))
    assert float(u.min()) > 0 and float(u.max()) < 1
    v = loc + scale * torch.randn((4, *loc.shape), generator=torch.Generator().manual_seed(0), dtype=dtype)
    own = Normal(loc, scale).log_prob(v) - F.logsigmoid(v) - F.logsigmoid(-v)
    torch.testing.assert_close(log_q, own.flatten(-3).sum(-1))


def test_the_variational_dequantization_bound_stays_below_log_p_k_with_q_past_the_clip():
    """With q's draws past the clip (loc 20 in logit space), log q of the clipped u made the one-draw
    bound about +25 nats a pixel, above the exact log P(k) (-1.3 to -2.2 here, by quadrature), and
    rising with loc: training could push q there without limit."""
    from dgmkit.models.dequantization import LogitNormalDequantizer, VariationallyDequantizedFlow
    from dgmkit.objectives import DequantizationBound

    torch.manual_seed(0)
    levels = 5
    flow = FlowModel(T.Compose([T.Logit(0.05), T.maf(1, [8], 1)]), (1, 1, 1), flatten=True).double().eval()
    dequantizer = LogitNormalDequantizer(1, levels, hidden=4).double()
    with torch.no_grad():  # q(u | k): v ~ N(20, softplus(0)^2) for every k
        dequantizer.net[-1].weight.zero_()
        dequantizer.net[-1].bias.copy_(torch.tensor([20.0, 0.0]))
    model = VariationallyDequantizedFlow(flow, dequantizer).eval()
    k = torch.arange(levels, dtype=torch.float64).view(-1, 1, 1, 1)
    y = (k.flatten() + torch.linspace(0, 1, 4001, dtype=torch.float64)[:, None]) / levels  # (grid, levels)
    with torch.no_grad():
        density = flow.log_prob(y.reshape(-1, 1, 1, 1)).exp().view(y.shape)
        log_pk = torch.trapezoid(density, dx=1 / (levels * 4000), dim=0).log()
        bound = -DequantizationBound(1)(model, k.repeat(50, 1, 1, 1)).loss.view(50, levels).mean(0)
    assert (bound < log_pk).all(), (bound, log_pk)


def test_the_logit_transform_needs_a_margin_from_the_boundary():
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 0.5\)"):
        T.Logit(0.0)


@pytest.mark.parametrize("alpha", [1e-6, 1e-9])
def test_the_logit_of_float32_data_at_the_boundary_is_that_of_float64(alpha):
    """In float32 a dequantized 255 + u rounds to 256, y = 1.0, inside the logit's domain [0, 1]. 1 - s
    was taken by cancellation: for alpha 1e-9 s was exactly 1 (z and log|det J| inf, the flow's log p
    NaN); for alpha 1e-6 (MAF's MNIST setting) z and log|det J| were 0.013 off at y = 1, exact at y = 0."""
    y = torch.tensor([[1.0, 1 - 2**-16, 0.5, 2**-16, 0.0]])
    logit = T.Logit(alpha)
    z32, ladj32 = logit(y)
    z64, ladj64 = logit(y.double())
    torch.testing.assert_close(z32.double(), z64, rtol=1e-6, atol=0)
    torch.testing.assert_close(ladj32.double(), ladj64, rtol=1e-6, atol=0)
    flow = FlowModel(T.Compose([logit, realnvp(5, [4], 2)]), (5,), flatten=True)
    flow.check_data(y)  # (y = 1.0 fits the flow's support: a NaN here is no refusal)
    assert torch.isfinite(flow.log_prob(y)).all()


def test_a_flow_draw_at_a_temperature_shrinks_the_base_about_its_mean_and_keeps_the_density_at_one():
    """u = mean + T (u' - mean) in the base, and log p(x) of the flow itself (temperature 1)."""
    from dgmkit.distributions import DiagonalNormal, FlowDistribution
    from dgmkit.transforms import DiagonalScaling

    scaling = DiagonalScaling((2,))
    with torch.no_grad():
        scaling.log_scale.copy_(torch.tensor([0.3, -0.2]))
    base = DiagonalNormal(torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.5]))
    torch.manual_seed(0)
    x, log_px = FlowDistribution(base, scaling, temperature=0.5).rsample_and_log_prob((40_000,))
    assert torch.allclose(log_px, FlowDistribution(base, scaling).log_prob(x.clone()), atol=1e-5)
    u, _ = scaling(x)
    assert torch.allclose(u.mean(0), base.mean, atol=0.01)  # stderr <= 0.0025
    assert torch.allclose(u.std(0), 0.5 * base.stddev, atol=0.01)


# ------------------------------------------------------------- flows composed by hand (a hostile review)
realnvp = T.realnvp


def test_a_transform_whose_log_det_is_not_one_value_a_datapoint_is_named():
    """A (B, 1) log|det J| broadcast into a (B, B) "log p(x)": a mean that looked right, wrong rows."""
    from dgmkit.transforms import Bijection, Compose

    class Doubling(Bijection):
        def forward(self, x, context=None):
            return 2 * x, x.new_full((len(x), 1), x.shape[1] * math.log(2))

        def inverse(self, z, context=None):
            return z / 2, z.new_full((len(z), 1), -z.shape[1] * math.log(2))

    flow = FlowModel(Compose([Doubling(), realnvp(3, [4], 2)]), (3,), flatten=True)
    with pytest.raises(ValueError, match=r"gave log\|det J\| of shape \(8, 8\) for 8 datapoints.*shape \(8,\)"):
        flow.log_prob(torch.randn(8, 3))


def test_an_image_flow_that_does_not_flatten_is_named_and_one_that_does_scores():
    """Couplings on (B, 1, 8, 8) left z an image: log N(z; 0, I) summed over its last axis alone,
    (8, 1, 8) for a batch of 8 (a silently wrong "log p(x)"), a broadcast error for other sizes."""

    def couplings():
        torch.manual_seed(0)
        nets = [nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1)) for _ in "ab"]
        for net in nets:  # (not the identity it starts as)
            nn.init.normal_(net[-1].weight, std=0.1)
        masks = [T.checkerboard_mask(8, 8, 0), T.checkerboard_mask(8, 8, 1)]
        return T.Compose([T.Logit(0.05), *(T.AffineCoupling(m, net) for m, net in zip(masks, nets))])

    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    unflattened = FlowModel(couplings(), (1, 8, 8))
    for n in (8, 5):
        said = rf"gave z of shape \({n}, 1, 8, 8\) for {n} datapoints.*\({n}, 64\).*MultiScale"
        with pytest.raises(ValueError, match=said):
            unflattened.log_prob(x[:n])
    flat = FlowModel(T.MultiScale([couplings()], (1, 8, 8)), (1, 8, 8))
    z, ladj = couplings()(x)
    want = ladj - 0.5 * z.pow(2).flatten(1).sum(1) - 32 * math.log(2 * math.pi)
    torch.testing.assert_close(flat.log_prob(x), want)


def test_flows_and_ppca_take_empty_batches_and_their_own_precision():
    from dgmkit.models import PPCA
    from dgmkit.transforms import glow

    for bijection in (realnvp(4, [8]), glow(4, [8])):
        flow = FlowModel(bijection, (4,), flatten=True).eval()
        assert flow.log_prob(torch.zeros(0, 4)).shape == (0,) and flow.sample(0)[0].shape == (0, 4)
    ppca = PPCA.fit(torch.randn(50, 4, generator=torch.Generator().manual_seed(0)), 2)
    assert ppca.log_prob(torch.zeros(0, 4)).shape == (0,)
    wide = FlowModel(realnvp(2, [4]), (2,), flatten=True).double()
    assert wide.log_prob(torch.randint(0, 2, (3, 2))).dtype == torch.float64
    assert torch.equal(wide.log_prob(torch.ones(3, 2)), wide.log_prob(torch.ones(3, 2, dtype=torch.float64)))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got 0"):
        wide.sample(2, temperature=0.0)


def test_a_flows_sample_refuses_an_infinite_temperature():
    """z = inf * u' made every draw NaN, silently (the CLI refused it; FlowModel.sample took it)."""
    from dgmkit.transforms import realnvp

    flow = FlowModel(realnvp(2, [4]), (2,), flatten=True)
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="the temperature must be a finite number > 0, got"):
            flow.sample(2, temperature=bad)
    assert torch.isfinite(flow.sample(2, temperature=2.0)[0]).all()


def test_data_outside_a_logit_flows_domain_are_refused_by_name():
    """Integers given to a flow that begins with a logit (dequantization forgotten) were a NaN
    log-likelihood, and in training 'try a lower --lr'."""
    from dgmkit.errors import DataError
    from dgmkit.evaluation import evaluate
    from dgmkit.transforms import Compose, Logit

    flow = FlowModel(Compose([Logit(0.05), realnvp(2, [4])]), (2,), flatten=True)
    assert flow.data_support is not None and not flow.discrete_data
    with pytest.raises(DataError, match=r"the data do not fit FlowModel: its likelihood scores values in \[0, 1\] in each"):
        evaluate(flow, torch.randint(0, 17, (64, 2)).float())
    with pytest.raises(DataError) as e:  # (whole numbers or not: no matter on an interval)
        evaluate(flow, torch.rand(64, 2) * 2)
    assert "not all whole numbers" not in str(e.value) and "the data hold values in [" in str(e.value)
    assert math.isfinite(evaluate(flow, torch.rand(64, 2)).nll)
    import numpy as np

    from dgmkit.models.hybrid import HybridFlow

    with pytest.raises(DataError, match=r"the data do not fit HybridFlow"):  # (a hybrid flow's is its flow's)
        evaluate(HybridFlow(flow, 3), torch.randint(0, 17, (64, 2)).float())
    with pytest.raises(TypeError, match="the hybrid model's flow must be a FlowModel, got NoneType"):
        HybridFlow(None, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="the hybrid flow's num_classes must be an integer >= 2, got 1"):
        HybridFlow(flow, 1)
    assert type(HybridFlow(flow, np.int64(3)).num_classes) is int


def test_actnorm_a_rank_deficient_ppca_and_a_transform_without_levels_are_refused_by_name():
    import numpy as np

    from dgmkit.data import DataTransform
    from dgmkit.errors import ConfigError, DataError
    from dgmkit.models import PPCA
    from dgmkit.transforms import glow

    flow = FlowModel(glow(2, [4], layers=1), (2,), flatten=True)  # training mode: ActNorm initialises
    with pytest.raises(ConfigError, match="a batch of 1 holds 1 value.*--batch-size"):
        flow.log_prob(torch.randn(1, 2))  # (a scale from a spread of 0: every other point at -1e12)
    flat = torch.randn(100, 3, generator=torch.Generator().manual_seed(0)) @ torch.randn(3, 6)
    with pytest.raises(ValueError, match="vary in at most 3 directions"):
        PPCA.fit(flat, 3)
    assert PPCA.fit(flat, 2).sigma2.item() > 0
    for kind in ("dequantize", "scale", "dynamic-binarize"):
        with pytest.raises(DataError, match=f"the {kind} transform reads the data's levels"):
            DataTransform(kind, None)
    assert DataTransform("dequantize", np.int64(256)).num_levels == 256  # (a NumPy integer is one)
    assert type(DataTransform("scale", torch.tensor(17)).num_levels) is int


def test_the_dequantization_bound_and_its_evaluation_are_the_k_sample_bound_and_a_one_draw_elbo():
    """DequantizationBound(S) trains and reports the S-sample bound (not the mean of its draws'
    log-weights); the evaluation of a 'bound' model reports that bound as log p(x) and, beside
    it, the ELBO of the first draw, below it for a dequantizer that is not the exact posterior."""
    from dgmkit.evaluation.estimates import estimate
    from dgmkit.models import VariationallyDequantizedFlow
    from dgmkit.models.dequantization import LogitNormalDequantizer
    from dgmkit.objectives import DequantizationBound

    torch.manual_seed(0)
    model = VariationallyDequantizedFlow(_logit_flow(), LogitNormalDequantizer(1, 4, hidden=8).double()).eval()
    k = torch.randint(0, 4, (6, 1, 1, 2))
    with torch.no_grad():
        torch.manual_seed(3)
        bound = DequantizationBound(8)(model, k).bound
        torch.manual_seed(3)
        torch.testing.assert_close(bound, iwae_bound(model, k, 8))
        torch.manual_seed(3)
        assert bool((bound > log_importance_weights(model, k, 8).log_w.mean(0)).all())
    k = torch.randint(0, 4, (200, 1, 1, 2))
    one = estimate(model, k, k=1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(one.terms["elbo"], one.log_px)  # one draw: the bound is its ELBO
    est = estimate(model, k, k=64, generator=torch.Generator().manual_seed(0))
    assert est.kind == "bound" and est.terms["elbo"].mean() < est.log_px.mean() - 0.01


def test_a_multiscale_flow_keeps_the_domain_of_its_first_level():
    """A MultiScale whose first level begins with a logit (as FlowModel's message suggests wrapping a flow
    in one) had no domain: integers given to it were scored as NaN, refused only as 'a non-finite
    log-likelihood (nan) to 10 of 10 datapoints', not as data outside the logit's [0, 1]."""
    from dgmkit.errors import DataError
    from dgmkit.transforms import Compose, Logit, MultiScale, realnvp_multiscale

    inner = realnvp_multiscale((1, 4, 4), hidden=4, layers=1, levels=1)
    flow = FlowModel(MultiScale([Compose([Logit(0.05), inner])], (1, 4, 4)), (1, 4, 4)).eval()
    assert flow.data_support is not None
    with pytest.raises(DataError, match=r"the data do not fit FlowModel: its likelihood scores values in \[0, 1\] in each"):
        evaluate(flow, torch.randint(0, 256, (10, 1, 4, 4)).float())
    assert math.isfinite(evaluate(flow, torch.rand(10, 1, 4, 4)).nll)
    assert T.MultiScale([inner], (1, 4, 4)).domain is None  # (no logit: the real line)


@pytest.mark.parametrize("event_shape, channels", [((4,), 4), ((1, 2, 2), 3)])
def test_a_variationally_dequantized_flow_refuses_a_dequantizer_that_cannot_read_its_data(event_shape, channels):
    from dgmkit.models import LogitNormalDequantizer, VariationallyDequantizedFlow

    flow = FlowModel(T.maf(4, [8], layers=1), event_shape, flatten=True)
    with pytest.raises(ValueError, match=r"reads images \(C, H, W\)"):
        VariationallyDequantizedFlow(flow, LogitNormalDequantizer(channels, 16, hidden=4))


def test_a_variationally_dequantized_flows_log_joint_takes_any_sample_dimensions_and_names_a_wrong_noise():
    """log_joint takes u of (*sample, B, *event), as every VariationalModel's: u (B, *event) of no
    sample dimension was read as B draws of B - 1 datapoints ("the flow was given data of shape (6, 1, 2)"),
    and (2, 3, B, *event) was refused the same way."""
    from dgmkit.models import VariationallyDequantizedFlow
    from dgmkit.models.dequantization import LogitNormalDequantizer

    torch.manual_seed(0)
    model = VariationallyDequantizedFlow(_logit_flow(), LogitNormalDequantizer(1, 4, hidden=8).double()).eval()
    k, u = torch.randint(0, 4, (6, 1, 1, 2)), torch.rand(2, 3, 6, 1, 1, 2, dtype=torch.float64)
    with torch.no_grad():
        many = model.log_joint(k, u).log_px_z
        assert many.shape == (2, 3, 6)
        torch.testing.assert_close(model.log_joint(k, u[1, 2]).log_px_z, many[1, 2])
        torch.testing.assert_close(model.log_joint(k, u[1]).log_px_z, many[1])
        with pytest.raises(ValueError, match=r"noise u of shape \(\*sample, 6, \*\(1, 1, 2\)\) for 6 datapoints"):
            model.log_joint(k, u[..., :5, :, :, :])
