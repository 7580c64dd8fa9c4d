"""Hierarchical VAEs: bounds against the closed-form likelihood of a linear-Gaussian two-layer
model, the posteriors against hand-written references, per-layer KL terms, free bits per layer,
and the family end to end through the CLI."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import MultivariateNormal, Normal

from dgmkit.cli.main import main
from dgmkit.conditional import BernoulliHead, Decoder, GaussianHead
from dgmkit.evaluation import importance_sampled_log_likelihood
from dgmkit.models.hvae import INFERENCE_KINDS, HierarchicalVAE
from dgmkit.nn.scale import ClippedLogVariance, SoftplusScale, scale_map
from dgmkit.objectives import log_importance_weights
from dgmkit.objectives.hierarchical import HierarchicalELBO, layer_kls
from dgmkit.priors import StandardNormalPrior
from dgmkit.priors.conditional import GaussianLayerPrior

D, M1, M2, NOISE = 3, 2, 2, 0.5


def _linear(i: int, o: int, g: torch.Generator, scale: float = 0.6) -> nn.Linear:
    lin = nn.Linear(i, o)
    with torch.no_grad():
        lin.weight.copy_(scale * torch.randn(o, i, generator=g))
        lin.bias.copy_(0.3 * torch.randn(o, generator=g))
    return lin


def linear_gaussian(inference: str, seed: int = 0, scale_map: nn.Module | None = None) -> HierarchicalVAE:
    """z_2 ~ N(0, I), z_1 | z_2 ~ N(A z_2 + a, diag s^2), x | z_1 ~ N(W z_1 + b, 0.5^2 I): the
    layer prior's scale does not depend on z_2 (its raw-scale rows have zero weights), so p(x)
    is Gaussian in closed form. The posterior networks are linear too (any weights).
    ``scale_map``: the Gaussian layers' raw -> standard deviation (default softplus)."""
    g = torch.Generator().manual_seed(seed)
    prior_net = _linear(M2, 2 * M1, g)
    with torch.no_grad():
        prior_net.weight[M1:] = 0.0
    ladder = []
    if inference == "bottom-up":
        q_nets = [_linear(D, 2 * M1, g), _linear(M1, 2 * M2, g)]
    elif inference == "top-down":
        q_nets = [_linear(D + M2, 2 * M1, g), _linear(D, 2 * M2, g)]
    else:
        ladder = [_linear(D, D, g)]
        q_nets = [_linear(D, 2 * M1, g), _linear(D, 2 * M2, g)]
    decoder = Decoder(_linear(M1, D, g), GaussianHead("fixed", scale=NOISE), (1, 1, D))
    model = HierarchicalVAE(
        [M1, M2],
        inference,
        nn.Flatten(),
        q_nets,
        [GaussianLayerPrior(prior_net, M1, scale_map=scale_map)],
        StandardNormalPrior(M2),
        decoder,
        ladder_nets=ladder,
        scale_map=scale_map,
    )
    return model.double().eval()


def exact_log_px(model: HierarchicalVAE, x: torch.Tensor) -> torch.Tensor:
    net = model.layer_priors[0].net
    a_mat, a = net.weight[:M1], net.bias[:M1]
    s = model.layer_priors[0].scale_map(net.bias[M1:])
    dec = model.decoder.net
    cov_z1 = a_mat @ a_mat.T + torch.diag(s**2)
    cov = dec.weight @ cov_z1 @ dec.weight.T + NOISE**2 * torch.eye(D, dtype=torch.float64)
    mean = dec.weight @ a + dec.bias
    return MultivariateNormal(mean, cov).log_prob(x.flatten(1))


@pytest.fixture
def data() -> torch.Tensor:
    return torch.randn(6, 1, 1, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


@pytest.mark.parametrize(
    "inference, scale_map",
    [*[(kind, None) for kind in INFERENCE_KINDS], ("top-down", ClippedLogVariance())],
    ids=[*INFERENCE_KINDS, "top-down-clipped-log-variance"],
)
@torch.no_grad()
def test_bounds_order_and_importance_sampling_reach_the_exact_likelihood(inference, scale_map, data):
    model = linear_gaussian(inference, scale_map=scale_map)
    exact = exact_log_px(model, data)
    torch.manual_seed(0)
    reps = 4000
    elbo = torch.stack([HierarchicalELBO()(model, data).elbo for _ in range(reps)])  # (R, B)
    log_w = log_importance_weights(model, data, reps).log_w  # (R, B): one-sample bounds
    iwae = torch.stack(
        [torch.logsumexp(log_importance_weights(model, data, 20).log_w, 0) - math.log(20) for _ in range(400)]
    )
    se = lambda t: t.std(0) / math.sqrt(len(t))  # noqa: E731
    # the per-layer closed-form KL terms estimate the same ELBO as the joint densities
    assert ((elbo.mean(0) - log_w.mean(0)).abs() <= 5 * (se(elbo) + se(log_w))).all()
    # ELBO <= IWAE-20 <= log p(x)
    assert (elbo.mean(0) <= iwae.mean(0) + 5 * (se(elbo) + se(iwae))).all()
    assert (iwae.mean(0) <= exact + 5 * se(iwae)).all()
    assert (elbo.mean(0) < exact - 0.01).all(), "a random linear posterior is not the true one: the ELBO gap is > 0"


def fit_posterior(model: HierarchicalVAE, x: torch.Tensor, steps: int = 1500) -> None:
    """Train the inference networks only (the generative model, so log p(x), stays fixed), with
    32 draws per datapoint per step and a decaying step size."""
    params = [*model.features.parameters(), *model.q_nets.parameters(), *model.ladder_nets.parameters()]
    opt = torch.optim.Adam(params, lr=0.03)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.01 ** (1 / steps))
    xs = x.repeat(32, 1, 1, 1)
    torch.manual_seed(0)
    for _ in range(steps):
        loss = HierarchicalELBO()(model, xs).loss.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()


@pytest.mark.parametrize("inference", INFERENCE_KINDS)
def test_importance_sampling_with_a_fitted_posterior_is_within_a_small_tolerance(inference, data):
    model = linear_gaussian(inference)
    exact = exact_log_px(model, data).detach()
    fit_posterior(model, data)
    with torch.no_grad():
        est = importance_sampled_log_likelihood(model, data, k=5000, generator=torch.Generator().manual_seed(1))
        elbo = torch.stack([HierarchicalELBO()(model, data).elbo for _ in range(500)]).mean(0)
    torch.testing.assert_close(est, exact, atol=0.05, rtol=0)  # a lower bound in expectation: the error is the gap
    assert (elbo <= exact + 0.02).all() and (elbo > exact - 1.0).all(), (elbo, exact)


_SIGMA = {  # raw -> standard deviation, written out: the default, and a log-variance clip that binds here
    "softplus": lambda r: F.softplus(r) + 1e-3,
    "clipped": lambda r: torch.exp(0.5 * torch.where(r < -0.5, -0.5, torch.where(r > 0.5, 0.5, r))),
}


def _gauss(h: torch.Tensor, m: int, sigma=_SIGMA["softplus"]) -> Normal:
    return Normal(h[..., :m], sigma(h[..., m:]))


@pytest.mark.parametrize("scale", _SIGMA)
@pytest.mark.parametrize("inference", INFERENCE_KINDS)
@torch.no_grad()
def test_posterior_and_joint_match_a_hand_written_reference(inference, scale, data):
    """log q(z | x), log p(z) and log p(x | z) at fixed weights and latents, written out, with
    the default scale map and a clipped log-variance."""
    scale_map = ClippedLogVariance(-0.5, 0.5) if scale == "clipped" else None
    model = linear_gaussian(inference, seed=3, scale_map=scale_map)
    sigma = _SIGMA[scale]
    z = torch.randn(4, len(data), M1 + M2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    z1, z2 = z[..., :M1], z[..., M1:]
    h = data.flatten(1)
    q = model.q_nets
    if inference == "bottom-up":
        log_q = _gauss(q[0](h), M1, sigma).log_prob(z1).sum(-1) + _gauss(q[1](z1), M2, sigma).log_prob(z2).sum(-1)
    elif inference == "top-down":
        hz = torch.cat([h.expand(4, *h.shape), z2], -1)
        log_q = _gauss(q[1](h), M2, sigma).log_prob(z2).sum(-1) + _gauss(q[0](hz), M1, sigma).log_prob(z1).sum(-1)
    else:
        d2 = model.ladder_nets[0](h)
        top = _gauss(q[1](d2), M2, sigma)
        est, prior = _gauss(q[0](h), M1, sigma), _gauss(model.layer_priors[0].net(z2), M1, sigma)
        prec = est.scale**-2 + prior.scale**-2
        merged = Normal((est.loc * est.scale**-2 + prior.loc * prior.scale**-2) / prec, prec**-0.5)
        log_q = top.log_prob(z2).sum(-1) + merged.log_prob(z1).sum(-1)
    log_pz = Normal(0.0, 1.0).log_prob(z2).sum(-1) + _gauss(model.layer_priors[0].net(z2), M1, sigma).log_prob(z1).sum(-1)
    dec = model.decoder.net
    log_px_z = Normal(z1 @ dec.weight.T + dec.bias, NOISE).log_prob(h).sum(-1)
    torch.testing.assert_close(model.posterior(data).log_prob(z), log_q)
    joint = model.log_joint(data, z)
    torch.testing.assert_close(joint.log_pz, log_pz)
    torch.testing.assert_close(joint.log_px_z, log_px_z)
    # the draws and their densities agree: rsample_and_log_prob against log_prob
    draws, log_q_draws = model.posterior(data).rsample_and_log_prob((3,), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.posterior(data).log_prob(draws), log_q_draws)
    zp, log_p_draws = model.prior().rsample_and_log_prob((5,), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.prior().log_prob(zp), log_p_draws)


@torch.no_grad()
def test_per_layer_kl_terms_are_closed_form_where_the_conditioning_is_drawn_first(data):
    """Top-down: every layer's term is KL(q || p) at the drawn layer above; bottom-up: the lower
    layer's term is the one-draw log q - log p (its prior's z_2 is drawn from z_1)."""
    model = linear_gaussian("top-down")
    torch.manual_seed(0)
    draws = model.path(data)
    torch.manual_seed(0)
    _, kls = layer_kls(model, data)
    top, low = sorted(draws, key=lambda d: -d.index)
    expected_top = torch.distributions.kl_divergence(top.q, model.top())
    expected_low = torch.distributions.kl_divergence(low.q, low.p)
    torch.testing.assert_close(kls, torch.stack([expected_low, expected_top]))
    model = linear_gaussian("bottom-up")
    torch.manual_seed(0)
    draws = model.path(data)
    torch.manual_seed(0)
    _, kls = layer_kls(model, data)
    low, top = sorted(draws, key=lambda d: d.index)
    torch.testing.assert_close(kls[0], low.q.log_prob(low.z) - low.p.log_prob(low.z))
    torch.testing.assert_close(kls[1], torch.distributions.kl_divergence(top.q, model.top()))


@pytest.mark.parametrize("inference", INFERENCE_KINDS)
@torch.no_grad()
def test_dgm_eval_reports_the_elbo_with_the_per_layer_kl_terms_training_reports(inference, data):
    """Not the one-sample ELBO of the joint posterior (a Monte Carlo KL over all layers at once,
    whose total disagreed with the layer lines); the same draws give the same numbers."""
    from dgmkit.evaluation import evaluate
    from dgmkit.evaluation.estimates import elbo_terms

    model = linear_gaussian(inference)
    torch.manual_seed(3)
    terms = elbo_terms(model, data, batch_size=1000)
    torch.manual_seed(3)
    trained = HierarchicalELBO()(model, data)
    torch.testing.assert_close(terms["elbo"], trained.elbo)
    torch.testing.assert_close(terms["kl"], trained.kl)
    report = evaluate(model, data, iw_samples=0)
    assert report.elbo == pytest.approx(report.recon - report.kl, abs=1e-9) and report.estimate == "bound"
    if inference != "bottom-up":  # every term in closed form given the draws above: less spread than the joint's
        x = data[:1].expand(400, *data.shape[1:]).contiguous()
        own = elbo_terms(model, x, batch_size=1000)["kl"].var()
        from dgmkit.objectives import ELBO

        assert own < ELBO(1)(model, x).kl.var()


def test_free_bits_per_layer_stop_the_kl_gradient_of_layers_under_the_floor(data):
    model = linear_gaussian("top-down")
    torch.manual_seed(0)
    with torch.no_grad():
        _, kls = layer_kls(model, data)
    floor = float(kls.mean(1).max()) + 1.0  # every layer under the floor
    torch.manual_seed(0)
    terms = HierarchicalELBO(free_bits=floor)(model, data, beta=1.0)
    torch.testing.assert_close(terms.loss, -(terms.log_px_z - 2 * floor))
    terms.loss.sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in model.layer_priors.parameters()), "the floor lets KL through"
    assert model.decoder.net.weight.grad.abs().sum() > 0


def test_the_vampprior_needs_q_of_the_top_layer_given_x():
    from dgmkit.config import RunConfig
    from dgmkit.errors import ConfigError

    with pytest.raises(ConfigError, match="top-down or ladder"):
        RunConfig.of(model="hvae", posterior="bottom-up", prior="vampprior")


@pytest.mark.parametrize("posterior", ["top-down", "ladder"])
def test_hvae_trains_evaluates_and_draws_from_the_command_line(posterior, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "hvae", "--posterior", posterior, "--latent-sizes", "4", "2", "--hidden", "16"]
    argv += ["--prior", "vampprior", "--prior-components", "5", "--dataset", "digits", "--epochs", "2", "--quiet"]
    assert main([*argv, "--warmup", "1", "--free-bits", "0.1", "--out", str(out)]) == 0, capsys.readouterr().err
    assert main(["eval", str(out), "--iw-samples", "20"]) == 0
    text = capsys.readouterr().out
    assert "NLL (k=20)" in text and "active units" in text
    for cmd in (["sample", "-n", "4"], ["reconstruct", "-n", "4"], ["interpolate", "--pairs", "2"], ["latents"]):
        assert main([cmd[0], str(out), *cmd[1:], "--out", str(tmp_path / f"{cmd[0]}.png")]) == 0, capsys.readouterr().err
        assert (tmp_path / f"{cmd[0]}.png").read_bytes()[:4] == b"\x89PNG"
    # its codes are each layer's mean given the means above, not E[z|x]: said so (it said "latent means")
    assert (
        "codes, layer-by-layer posterior means (each layer's given the means above) of test datapoints ("
        in capsys.readouterr().out
    )


def test_the_codes_a_figure_shows_are_named_by_the_posterior():
    """location(q) is E[z|x] for a Gaussian q(z|x); a hierarchical or IAF posterior's point is another."""
    from dgmkit.config import RunConfig
    from dgmkit.distributions.flow import POSTERIOR_MEANS, location_name

    x = torch.rand(3, 1, 8, 8)
    names = {
        kind: location_name(RunConfig.of(model=m, **kw).model.build((1, 8, 8), 2).posterior(x))
        for kind, (m, kw) in {
            "gaussian": ("vae", {}),
            "iaf": ("vae", {"posterior": "iaf"}),
            "hvae": ("hvae", {"latent_sizes": [4, 2], "hidden": [16]}),
            "bottom-up": ("hvae", {"latent_sizes": [4, 2], "hidden": [16], "posterior": "bottom-up"}),
            "ae": ("ae", {}),  # (an autoencoder's codes and a Helmholtz machine's mean field were "posterior means")
            "helmholtz": ("helmholtz", {}),
        }.items()
    }
    assert names["gaussian"] == POSTERIOR_MEANS == "posterior means E[z|x]"
    assert names["iaf"].startswith("posterior base means through the flow") and names["hvae"].startswith("layer-by-layer")
    assert names["ae"] == "codes z = f(x)" and names["helmholtz"].startswith("mean-field recognition probabilities")
    # the means are taken in the order the posterior draws the layers: a bottom-up one's z_2 given z_1's (it said "above")
    assert names["hvae"].endswith("(each layer's given the means above)")
    assert names["bottom-up"] == "layer-by-layer posterior means (each layer's given the means below)"


@torch.no_grad()
def test_prior_and_posterior_draws_have_the_right_moments(data):
    """The samplers against the model's parameters (not against their own log_prob): the prior's
    marginals in closed form, and the top posterior layer against q(z_2 | x)."""
    model = linear_gaussian("top-down")
    n = 200_000
    z, _ = model.prior().rsample_and_log_prob((n,), generator=torch.Generator().manual_seed(0))
    net = model.layer_priors[0].net
    a_mat, a = net.weight[:M1], net.bias[:M1]
    s = model.layer_priors[0].scale_map(net.bias[M1:])
    z1, z2 = z[:, :M1], z[:, M1:]
    torch.testing.assert_close(z2.mean(0), torch.zeros(M2, dtype=torch.float64), atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(z2.T), torch.eye(M2, dtype=torch.float64), atol=0.02, rtol=0)
    torch.testing.assert_close(z1.mean(0), a, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(z1.T), a_mat @ a_mat.T + torch.diag(s**2), atol=0.03, rtol=0)
    zq, _ = model.posterior(data[:1]).rsample_and_log_prob((n,), generator=torch.Generator().manual_seed(1))
    top = _gauss(model.q_nets[1](data[:1].flatten(1)), M2)
    torch.testing.assert_close(zq[:, 0, M1:].mean(0), top.loc[0], atol=0.02, rtol=0)
    torch.testing.assert_close(zq[:, 0, M1:].std(0), top.scale[0], atol=0.02, rtol=0)
    # z_1 | z_2 is linear in z_2 here: its mean is q(z_1 | x, E[z_2])'s
    hz = torch.cat([data[:1].flatten(1), top.loc], -1)
    torch.testing.assert_close(zq[:, 0, :M1].mean(0), _gauss(model.q_nets[0](hz), M1).loc[0], atol=0.02, rtol=0)


@pytest.mark.parametrize("posterior", INFERENCE_KINDS)
@torch.no_grad()
def test_three_layers_per_layer_terms_estimate_the_same_elbo_as_the_joint(posterior):
    from dgmkit.families.hvae import HVAEConfig

    torch.manual_seed(0)
    cfg = HVAEConfig(latent_sizes=[3, 2, 2], posterior=posterior, hidden=[8], encoder="gated")
    model = cfg.build((1, 2, 3), 2).double().eval()
    x = torch.randint(0, 2, (4, 1, 2, 3), generator=torch.Generator().manual_seed(1)).double()
    reps = 6000
    elbo = torch.stack([HierarchicalELBO()(model, x).elbo for _ in range(reps)])
    log_w = log_importance_weights(model, x, reps).log_w
    se = elbo.std(0) / math.sqrt(reps) + log_w.std(0) / math.sqrt(reps)
    assert ((elbo.mean(0) - log_w.mean(0)).abs() <= 5 * se).all(), (elbo.mean(0), log_w.mean(0))


def test_free_bits_apply_per_layer(data):
    model = linear_gaussian("ladder")
    torch.manual_seed(0)
    with torch.no_grad():
        _, kls = layer_kls(model, data)
    means = kls.mean(1)
    low, high = int(means.argmin()), int(means.argmax())
    assert means[high] - means[low] > 0.2
    floor = float(means[low] + means[high]) / 2  # one layer under the floor, one above
    torch.manual_seed(0)
    terms = HierarchicalELBO(free_bits=floor)(model, data)
    torch.manual_seed(0)
    _, kls = layer_kls(model, data)
    torch.testing.assert_close(terms.loss, -(terms.log_px_z - kls[high] - floor))
    with pytest.raises(Exception, match="top-down, ladder or residual posterior"):
        from dgmkit.config import RunConfig

        RunConfig.of(model="hvae", posterior="bottom-up", free_bits=0.5)


@pytest.mark.parametrize("model", ["hvae", "pixelvae"])
def test_free_bits_are_taken_by_a_bottom_up_posterior_of_one_layer(model):
    """One layer: its term is the top's, a closed-form KL, whatever the posterior (a one-layer
    PixelVAE with --posterior bottom-up and free bits was refused as if it were a one-draw estimate)."""
    from dgmkit.config import RunConfig
    from dgmkit.errors import ConfigError

    cfg = RunConfig.of(model=model, posterior="bottom-up", latent_sizes=[4], free_bits=0.5)
    assert cfg.model.training_objective().free_bits == 0.5
    with pytest.raises(ConfigError, match="below the top is a one-draw estimate"):
        RunConfig.of(model=model, posterior="bottom-up", latent_sizes=[4, 2], free_bits=0.5)


@torch.no_grad()
def test_a_one_layer_bottom_up_posterior_makes_a_vampprior():
    """Its q(z_1 | x) is q(z_L | x), of x alone: the VampPrior's components are it at the
    pseudo-inputs (it was refused as if the top layer were drawn from the ones below)."""
    from dgmkit.config import RunConfig, build_model

    settings = dict(posterior="bottom-up", latent_sizes=[3], hidden=[8], prior="vampprior", prior_components=2)
    cfg = RunConfig.of(dataset="digits", model="hvae", **settings)
    torch.manual_seed(0)
    model = build_model(cfg, (1, 8, 8), 2)
    x = (torch.rand(4, 1, 8, 8) < 0.5).float()
    q, top = model.posterior(x), model.top_posterior(x * model.input_scale)
    torch.testing.assert_close(q.location(), top.mean)
    assert torch.isfinite(HierarchicalELBO()(model, x).elbo).all()


def test_gated_branches_partial_is_the_network_with_its_first_input_fixed():
    from dgmkit.nn.gated import GatedBranches

    torch.manual_seed(0)
    net = GatedBranches([5, 3], 7, 4)
    a, b = torch.randn(2, 5), torch.randn(6, 2, 3)
    torch.testing.assert_close(net.partial(a)(b), net(torch.cat([a.expand(6, 2, 5), b], -1)))


def test_the_reference_hvae_clusters_trains_bottom_up_and_decodes_from_every_layer(tmp_path, capsys):
    base = ["train", "--model", "hvae", "--latent-sizes", "3", "2", "--dataset", "digits", "--epochs", "1", "--quiet"]
    out = tmp_path / "mog"
    argv = [*base, "--encoder", "gated", "--hidden", "16", "--prior", "mog", "--prior-components", "4"]
    assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
    assert main(["cluster", str(out)]) == 0, capsys.readouterr().err
    assert "accuracy" in capsys.readouterr().out
    out = tmp_path / "bu"
    assert main([*base, "--posterior", "bottom-up", "--hidden", "16", "--decoder-input", "all", "--out", str(out)]) == 0
    assert main(["eval", str(out), "--iw-samples", "5"]) == 0, capsys.readouterr().err


@torch.no_grad()
def test_conv_hvae_has_the_reference_networks_and_its_x_branch_runs_once_per_datapoint():
    """Tomczak & Welling's convHVAE: gated conv stacks to 6 x 7 x 7 = 294 features in q(z2|x) and
    q(z1|x,z2), a gated layer to 784 then four gated convolutions in p(x|z1,z2)."""
    from dgmkit.families import get_family
    from dgmkit.nn.gated import GatedConv2d

    cfg = get_family("hvae")(architecture="conv-hvae", encoder="gated", hidden=[300, 300], latent_sizes=[40, 40])
    model = cfg.build((1, 28, 28), 2).eval()
    x = (torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    assert model.q_nets[1][0].net(x).shape == (3, 6, 7, 7)
    assert model.q_nets[0].branches[0].net(x).shape == (3, 6, 7, 7)
    assert model.q_nets[0].joint.linear.in_features == 2 * 294 and model.q_nets[0].joint.out_features == 300
    assert model.decoder.net.joint.out_features == 784
    assert sum(isinstance(m, GatedConv2d) for m in model.decoder.net.out) == 4
    flat = x.flatten(1)
    z2 = torch.randn(5, 3, 40)  # 5 draws per datapoint
    full = model.q_nets[0](torch.cat([flat.expand(5, -1, -1), z2], -1))
    torch.testing.assert_close(model.q_nets[0].partial(flat)(z2), full)
    terms = HierarchicalELBO()(model, x)
    assert torch.isfinite(terms.elbo).all() and terms.elbo.shape == (3,)
    assert model.sample(2)[1].shape == (2, 1, 28, 28)


def test_conv_hvae_is_a_top_down_posterior():
    from dgmkit.config import RunConfig
    from dgmkit.errors import ConfigError

    with pytest.raises(ConfigError, match="conv-hvae"):
        RunConfig.of(model="hvae", architecture="conv-hvae", posterior="ladder")


def test_layer_hidden_builds_burda_et_al_s_two_layer_networks():
    """Burda et al.'s two stochastic layers (their code, experiments.py): q(z1|x) 784-200-200-100,
    q(z2|z1) 100-100-100-50, p(z1|z2) 50-100-100-100, p(x|z1) 100-200-200-784, tanh: 521,084
    parameters; widths per layer, each network as deep as --hidden."""
    from dgmkit.families import get_family

    cfg = get_family("hvae")(
        posterior="bottom-up",
        encoder="mlp",
        activation="tanh",
        hidden=[200, 200],
        latent_sizes=[100, 50],
        layer_hidden=[200, 100],
    )
    model = cfg.build((1, 28, 28), 2)
    linears = lambda net: [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]  # noqa: E731
    assert linears(model.features) + linears(model.q_nets[0]) == [(784, 200), (200, 200), (200, 200)]  # mean and scale
    assert linears(model.q_nets[1]) == [(100, 100), (100, 100), (100, 100)]
    assert linears(model.layer_priors[0]) == [(50, 100), (100, 100), (100, 200)]
    assert linears(model.decoder) == [(100, 200), (200, 200), (200, 784)]
    assert sum(p.numel() for p in model.parameters()) == 521_084
    x = (torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    assert torch.isfinite(HierarchicalELBO()(model, x).elbo).all()


@pytest.mark.parametrize(
    "settings, match",
    [
        (dict(latent_sizes=[100, 50], layer_hidden=[200]), "one width per stochastic layer"),
        (dict(posterior="top-down", layer_hidden=[200, 100]), "bottom-up"),
        (dict(posterior="bottom-up", encoder="gated", layer_hidden=[200, 100]), "bottom-up"),
        (dict(posterior="residual", init="he"), "dense layers"),
        (dict(posterior="residual", latent_scale="clipped-log-variance"), "has its own"),
        (dict(encoder="gated", normalise_gradients=True, grad_clip=100.0), "grad_clip would do nothing"),
    ],
)
def test_settings_are_refused_where_they_would_mean_nothing(settings, match):
    from dgmkit.config import RunConfig
    from dgmkit.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        RunConfig.of(model="hvae", **settings)


def _dense_layers(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    return {n: (m.weight.detach().clone(), None if m.bias is None else m.bias.detach().clone())
            for n, m in model.named_modules() if isinstance(m, nn.Linear)}  # fmt: skip


@pytest.mark.parametrize(
    "settings",
    [
        dict(model="hvae", encoder="gated", posterior="top-down", prior="vampprior", hidden=[300, 300]),
        dict(model="vae", encoder="gated", hidden=[300, 300], prior="flow", posterior="iaf", latent_dim=8),
    ],
    ids=["reference HVAE", "VAE with flows"],
)
def test_he_initialisation_draws_each_dense_layer_outside_a_flow(settings):
    """``init = "he"``: every dense layer's weights N(0, 2 / fan_in), as the VampPrior reference
    code draws them; biases, pseudo-inputs and the layers of a flow (prior or IAF posterior) as
    they were built."""
    from dgmkit.config import RunConfig, build_model
    from dgmkit.transforms.base import Bijection

    def built(init):
        return build_model(RunConfig.of(dataset="digits", init=init, seed=3, **settings), (1, 8, 8), 2)

    default, he = built("default"), built("he")
    flows = {f"{n}.{m}".strip(".") for n, b in he.named_modules() if isinstance(b, Bijection) for m, _ in b.named_modules()}
    before, after = _dense_layers(default), _dense_layers(he)
    assert before.keys() == after.keys()
    assert bool(flows & after.keys()) == (settings.get("prior") == "flow")  # the flows hold dense layers
    drawn = 0
    for name, (w, b) in after.items():
        w0, b0 = before[name]
        assert b is None or torch.equal(b, b0)
        if name in flows:
            assert torch.equal(w, w0), name
            continue
        drawn += 1
        assert not torch.equal(w, w0), name
        if w.numel() >= 2000:  # moments of many draws
            assert abs(w.std().item() / math.sqrt(2 / w.shape[1]) - 1) < 0.1, name
            assert abs(w.mean().item()) < 0.1 * math.sqrt(2 / w.shape[1]), name
    assert drawn >= 4
    for (n0, p0), p1 in zip(default.named_parameters(), he.parameters()):
        if "pseudo" in n0:
            assert torch.equal(p0, p1)
    assert all(torch.equal(a, b) for a, b in zip(he.parameters(), built("he").parameters()))  # seeded
    other = build_model(RunConfig.of(dataset="digits", init="he", seed=4, **settings), (1, 8, 8), 2)
    assert not torch.equal(next(iter(_dense_layers(other).values()))[0], next(iter(after.values()))[0])


def test_scale_maps_floor_and_clip_the_standard_deviation():
    """softplus(raw) + floor: above the floor, unbounded, smooth; the clipped log-variance:
    exp(raw / 2) between e^(low/2) and e^(high/2), with no gradient where the clip holds."""
    raw = torch.linspace(-40.0, 40.0, 801, dtype=torch.float64, requires_grad=True)
    clipped = ClippedLogVariance()(raw)
    inside = (raw > -6) & (raw < 2)
    torch.testing.assert_close(clipped[inside], torch.exp(raw[inside] / 2))
    assert clipped.min().item() == pytest.approx(math.exp(-3)) and clipped.max().item() == pytest.approx(math.exp(1))
    (grad,) = torch.autograd.grad(clipped.sum(), raw)
    assert (grad[~inside] == 0).all() and (grad[inside] > 0).all()
    soft = SoftplusScale(1e-3)(raw)
    assert (soft > 1e-3).all() and soft.max().item() > 39 and torch.isfinite(soft).all()
    (grad,) = torch.autograd.grad(soft.sum(), raw)
    assert (grad > 0).all()
    for bad in (lambda: SoftplusScale(0.0), lambda: SoftplusScale(float("nan")), lambda: ClippedLogVariance(2.0, -6.0)):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError, match="unknown scale parametrisation"):
        scale_map("exp")  # type: ignore[arg-type]


_REFERENCE = dict(encoder="gated", posterior="top-down", prior="vampprior")


@pytest.mark.parametrize(
    "settings",
    [
        dict(model="hvae", **_REFERENCE),
        dict(model="hvae", architecture="conv-hvae", **_REFERENCE),
        dict(model="hvae", encoder="mlp", posterior="bottom-up", prior="standard"),
        dict(model="hvae", encoder="mlp", posterior="ladder", prior="vampprior"),
        dict(model="pixelvae", pixelcnn_layers=2, pixelcnn_channels=8, **_REFERENCE),
    ],
    ids=["reference", "conv-hvae", "bottom-up", "ladder", "pixelhvae"],
)
@torch.no_grad()
def test_latent_scale_sets_every_gaussian_layer_and_no_weight(settings):
    """``latent_scale = "clipped-log-variance"`` (the VampPrior reference code's): every
    posterior layer, every layer prior and the VampPrior's components keep their standard
    deviations within [e^-3, e^1] however large the networks' outputs (the ladder's merge of two
    such Gaussians down to e^-3 / sqrt 2), where softplus's are not bounded; the weights drawn
    for a seed are the same under either setting."""
    from dgmkit.config import RunConfig, build_model

    def built(kind):
        cfg = RunConfig.of(
            dataset="digits", hidden=[32, 32], latent_sizes=[6, 4], prior_components=5, latent_scale=kind, seed=2,
            **settings,
        )  # fmt: skip
        return build_model(cfg, (1, 8, 8), 2)

    soft, clipped = built("softplus"), built("clipped-log-variance")
    assert all(torch.equal(a, b) for a, b in zip(soft.state_dict().values(), clipped.state_dict().values()))
    assert soft.state_dict().keys() == clipped.state_dict().keys()
    x = (torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    spans = {}
    for name, model in (("softplus", soft), ("clipped", clipped)):
        for p in model.parameters():
            p.mul_(40.0)  # outputs far outside [-6, 2]
        draws = model.path(x, generator=torch.Generator().manual_seed(0))
        scales = [d.q.stddev for d in draws] + [d.p.stddev for d in draws if d.p is not None]
        if settings["prior"] == "vampprior":
            scales.append(model.top().scale)  # the VampPrior's components, q(z_L | u_k)
        spans[name] = (min(s.min().item() for s in scales), max(s.max().item() for s in scales))
    low, high = spans["clipped"]
    floor = math.exp(-3) / (math.sqrt(2) if settings["posterior"] == "ladder" else 1.0)
    assert floor - 1e-6 <= low and high <= math.exp(1) + 1e-6, spans
    assert spans["softplus"][1] > 10 * math.exp(1) and spans["softplus"][0] < floor, spans


@pytest.mark.parametrize("posterior", ["top-down", "residual"])
@torch.no_grad()
def test_integer_images_reach_the_networks_scaled_and_the_vampprior_is_made_of_the_top_posterior(posterior):
    """Integer levels (a categorical likelihood: network inputs x / (L - 1)): the posterior of the
    integers is that of the same values as floats; q(z_L | u) at network inputs u = x / (L - 1) is
    the top layer of the posterior of x (unscaled it is not); and the VampPrior p(z_L) is the
    uniform mixture of q(z_L | u_k) at its pseudo-inputs, for both stacks (the residual one's
    q(z_L | u) had no test)."""
    from dgmkit.families import get_family

    settings = {
        "top-down": dict(latent_sizes=[3, 2], hidden=[8]),
        "residual": dict(res_resolutions=[2, 4], res_layers=[1, 1], res_width=8, res_bottleneck=4, res_latent_channels=1),
    }[posterior]
    torch.manual_seed(0)
    family = get_family("hvae")(
        posterior=posterior, likelihood="categorical", prior="vampprior", prior_components=3, **settings
    )
    model = family.build((1, 4, 4), 4).double().eval()
    assert model.input_scale == pytest.approx(1 / 3)
    x = torch.randint(0, 4, (5, 1, 4, 4), generator=torch.Generator().manual_seed(1))

    def top_q(v):
        return next(d.q for d in model.path(v, means=True) if d.index == model.num_layers - 1)

    for a, b in zip(model.path(x, means=True), model.path(x.double(), means=True)):
        torch.testing.assert_close((a.q.mean, a.q.stddev), (b.q.mean, b.q.stddev))
    q, u = top_q(x), model.top_posterior(x.double() / 3)
    torch.testing.assert_close((u.mean, u.stddev), (q.mean, q.stddev))
    assert not torch.allclose(model.top_posterior(x.double()).mean, q.mean)
    model.top_prior.pseudo_inputs.copy_(x[:3].double() / 3)
    z = torch.randn(7, model.sizes[-1], dtype=torch.float64)
    mixture = torch.logsumexp(top_q(x[:3]).log_prob(z[:, None]), 1) - math.log(3)
    torch.testing.assert_close(model.top().log_prob(z), mixture)


# ------------------------------------------------- three layers: what two layers cannot show
def _three_layers(posterior: str) -> HierarchicalVAE:
    from dgmkit.families.hvae import HVAEConfig

    torch.manual_seed(0)
    model = HVAEConfig(latent_sizes=[2, 2, 2], posterior=posterior, hidden=[8]).build((1, 2, 3), 2).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("posterior", ["bottom-up", "top-down", "ladder"])
@torch.no_grad()
def test_the_prior_and_posterior_draw_none_as_torch_s_distributions_do(posterior):
    """A sample_shape of no elements ((0,), (2, 0)) gives empty draws and log-densities of the
    shapes one draw has, as torch's Normal does; the layers' reshapes had failed with 'cannot
    reshape tensor of 0 elements into shape [0, 3, -1]'."""
    model = _three_layers(posterior)
    x = torch.randint(0, 2, (3, 1, 2, 3)).double()
    for d in (model.prior(), model.posterior(x)):
        for shape in [(0,), (2, 0)]:
            z, log_p = d.rsample_and_log_prob(shape)
            assert z.shape == (*shape, *d.batch_shape, 6) and log_p.shape == (*shape, *d.batch_shape)
            assert z.dtype == log_p.dtype == torch.float64
            assert d.rsample(shape).shape == z.shape
            assert d.log_prob(z).shape == log_p.shape  # (its empty draws scored: the same reshapes had failed)


@pytest.mark.parametrize("posterior", ["bottom-up", "top-down", "ladder"])
@torch.no_grad()
def test_the_prior_and_posterior_refuse_z_of_another_shape_by_name(posterior):
    """A z of another width or batch met torch's 'split_with_sizes expects split_sizes to sum
    exactly to 7' (or a broadcast's words) from the layers; it is refused naming the shape scored."""
    model = _three_layers(posterior)
    q = model.posterior(torch.randint(0, 2, (3, 1, 2, 3)).double())
    for d, z, need in [
        (
            model.prior(),
            torch.zeros(4, 7),
            r"HierarchicalPrior over 6 dimensions scores z of shape \(\.\.\., 6\), "
            r"got \(4, 7\)",
        ),
        (model.prior(), torch.zeros(0, 7), r"got \(0, 7\)"),
        (q, torch.zeros(3, 7), r"HierarchicalPosterior over 6 dimensions scores z of shape \(\.\.\., 3, 6\), got \(3, 7\)"),
        (q, torch.zeros(2, 4, 6), r"got \(2, 4, 6\)"),
    ]:
        with pytest.raises(ValueError, match=need):
            d.log_prob(z.double())


@pytest.mark.parametrize("posterior", ["bottom-up", "top-down", "ladder"])
@torch.no_grad()
def test_a_three_layer_prior_scores_its_own_draws(posterior):
    """p(z) = p(z_3) p(z_2|z_3) p(z_1|z_2): the log-density ancestral sampling returns is the
    prior's log_prob of the draw. (With two layers, conditioning each layer on the top one instead
    of the one above is the same thing.)"""
    prior = _three_layers(posterior).prior()
    z, log_p = prior.rsample_and_log_prob((7,), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(log_p, prior.log_prob(z))


@torch.no_grad()
def test_a_three_layer_ladder_merges_each_layer_s_own_bottom_up_estimate():
    """Ladder VAE (Sonderby et al. 2016): q(z_l | .) is the precision-weighted merge of the l-th
    bottom-up step's estimate N(mu^_l, s^_l) and p(z_l | z_{l+1}); the middle layer by hand."""
    from dgmkit.distributions import diagonal_normal

    model = _three_layers("ladder")
    x = torch.randint(0, 2, (4, 1, 2, 3), generator=torch.Generator().manual_seed(1)).double()
    z = model.posterior(x).rsample()
    d1 = model.ladder_nets[0](model.features(x * model.input_scale))
    loc, raw = model.q_nets[1](d1).split(2, -1)
    estimate = diagonal_normal(loc, model.scale_map(raw))
    p = model.layer_priors[1](model.split(z)[2])
    pe, pp = estimate.stddev.pow(-2), p.stddev.pow(-2)
    var = 1 / (pe + pp)
    q = next(d.q for d in model.path(x, given=z) if d.index == 1)
    torch.testing.assert_close(q.mean, (estimate.mean * pe + p.mean * pp) * var)
    torch.testing.assert_close(q.stddev, var.sqrt())


def test_a_stack_of_one_layer_is_described_in_the_singular():
    from dgmkit.config import RunConfig

    assert "(1 layer [8]," in RunConfig.of(model="hvae", latent_sizes=[8]).model.describe()
    assert "(2 layers [40, 40]," in RunConfig.of(model="hvae").model.describe()


@pytest.mark.parametrize(
    "settings, note",
    [
        (dict(model="hvae", prior="flow"), "the hvae model's flow prior over z draws at temperature 1"),
        (dict(model="vae", prior="flow", latent_dim=4), "the vae model's flow prior over z draws at temperature 1"),
        (dict(model="hvae", prior="mog"), None),
        (dict(model="vae"), None),
    ],
)
def test_a_temperature_refused_says_where_a_flow_prior_over_z_draws_at_temperature_one(settings, note):
    """A temperature is for flows of the data; of a latent model with a flow prior (the VAE's
    prior module, the hierarchy's top prior) the refusal adds that the prior draws at temperature
    1, as the model declares it (``untaken_sample_note``), not read off the config."""
    from pathlib import Path

    from dgmkit.cli.figures import SampleOptions, check_sample_options
    from dgmkit.config import RunConfig, build_model
    from dgmkit.config.run import Run
    from dgmkit.errors import ConfigError

    cfg = RunConfig.of(dataset="digits", **settings)
    model = build_model(cfg, (1, 8, 8), 2)
    assert model.untaken_sample_note("temperature") == (None if note is None else note.split("model's ")[1])
    assert model.untaken_sample_note("naive") is None
    run = Run(Path("r"), cfg, {}, model, Path("r/best.pt"))
    with pytest.raises(ConfigError, match="is for flows of the data") as e:
        check_sample_options(run, 4, SampleOptions(temperature=0.5), keywords=True)
    assert str(e.value).startswith("temperature is for flows")
    assert (note is not None and str(e.value).endswith(note)) or (note is None and "prior" not in str(e.value))


def _tanh_net(i: int, o: int, g: torch.Generator, gaussian: bool = True) -> nn.Module:
    """A random tanh MLP; ``gaussian``: its second half of outputs are raw scales near
    softplus(0.5) ~ 1, so that q and p are wide enough for a grid of step 0.06."""
    net = nn.Sequential(nn.Linear(i, 6), nn.Tanh(), nn.Linear(6, o))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.8 * torch.randn(p.shape, generator=g))
        if gaussian:
            net[2].weight[o // 2 :] *= 0.3
            net[2].bias[o // 2 :] = 0.5
    return net


def _bernoulli_two_layers(inference: str) -> HierarchicalVAE:
    """z_2 ~ N(0, 1), z_1 | z_2 ~ N(mu(z_2), s(z_2)^2), x | z_1, z_2 ~ Bernoulli over 3 pixels,
    every network a random tanh MLP (nothing in closed form but the Gaussian layers)."""
    g = torch.Generator().manual_seed(0)
    ladder = [_tanh_net(3, 3, g, gaussian=False)] if inference == "ladder" else []
    first_in = {"bottom-up": 3, "top-down": 4, "ladder": 3}[inference]
    q_nets = [_tanh_net(first_in, 2, g), _tanh_net(1 if inference == "bottom-up" else 3, 2, g)]
    decoder = Decoder(_tanh_net(2, 3, g, gaussian=False), BernoulliHead(), (1, 1, 3))
    prior = GaussianLayerPrior(_tanh_net(1, 2, g), 1)
    model = HierarchicalVAE([1, 1], inference, nn.Flatten(), q_nets, [prior], StandardNormalPrior(1), decoder, "all", ladder)
    return model.double().eval()


def _on_a_grid(model: HierarchicalVAE, x: torch.Tensor, grid: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each factor of p(x, z) and q(z | x) written out from the networks on a (z_1, z_2) grid,
    (G, G, B): log p(z_2), log p(z_1 | z_2), log p(x | z), the two factors of log q."""
    n, h = len(grid), x.flatten(1).expand(len(grid), len(grid), -1, -1)
    z1 = grid[:, None, None, None].expand(n, n, len(x), 1)
    z2 = grid[None, :, None, None].expand(n, n, len(x), 1)
    q, logits = model.q_nets, model.decoder.net(torch.cat([z1, z2], -1))
    out = {"p2": Normal(0.0, 1.0).log_prob(z2), "p1": _gauss(model.layer_priors[0].net(z2), 1).log_prob(z1)}
    out["px"] = torch.distributions.Bernoulli(logits=logits).log_prob(h).sum(-1)
    if model.inference == "bottom-up":
        out["q1"], out["q2"] = _gauss(q[0](h), 1).log_prob(z1), _gauss(q[1](z1), 1).log_prob(z2)
    elif model.inference == "top-down":
        out["q2"], out["q1"] = _gauss(q[1](h), 1).log_prob(z2), _gauss(q[0](torch.cat([h, z2], -1)), 1).log_prob(z1)
    else:
        est, prior = _gauss(q[0](h), 1), _gauss(model.layer_priors[0].net(z2), 1)
        prec = est.scale**-2 + prior.scale**-2
        merged = Normal((est.loc * est.scale**-2 + prior.loc * prior.scale**-2) / prec, prec**-0.5)
        out["q2"], out["q1"] = _gauss(q[1](model.ladder_nets[0](h)), 1).log_prob(z2), merged.log_prob(z1)
    return {k: v.reshape(n, n, len(x)) for k, v in out.items()}


@pytest.mark.parametrize("inference", INFERENCE_KINDS)
@torch.no_grad()
def test_a_bernoulli_model_s_elbo_and_layer_terms_match_their_definitions_by_quadrature(inference):
    """The ELBO and each layer's term E_q[log q(z_l | .) - log p(z_l | z_2)] that the objective
    reports (closed form or one draw), on average, against the integrals over a grid of the
    factors written out, and the grid's log p(x) normalising over the 8 images."""
    model = _bernoulli_two_layers(inference)
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64).view(8, 1, 1, 3)
    grid = torch.linspace(-9, 9, 301, dtype=torch.float64)
    f, area = _on_a_grid(model, x, grid), (grid[1] - grid[0]) ** 2
    log_px = torch.logsumexp((f["p2"] + f["p1"] + f["px"]).flatten(0, 1), 0) + area.log()
    torch.testing.assert_close(log_px.logsumexp(0), torch.zeros((), dtype=torch.float64), atol=1e-6, rtol=0)
    q = (f["q1"] + f["q2"]).exp() * area
    torch.testing.assert_close(q.sum((0, 1)), torch.ones(8, dtype=torch.float64), atol=1e-4, rtol=0)
    expect = [(q * (f["q1"] - f["p1"])).sum((0, 1)), (q * (f["q2"] - f["p2"])).sum((0, 1))]
    elbo_q = (q * (f["p2"] + f["p1"] + f["px"] - f["q1"] - f["q2"])).sum((0, 1))
    torch.manual_seed(0)
    reps = 3000
    log_px_z, kls = layer_kls(model, x.repeat(reps, 1, 1, 1))
    kls = kls.view(2, reps, 8)
    elbo = HierarchicalELBO()(model, x.repeat(reps, 1, 1, 1)).elbo.view(reps, 8)
    for got, want in [(kls[0], expect[0]), (kls[1], expect[1]), (elbo, elbo_q)]:
        se = got.std(0) / math.sqrt(reps)
        assert ((got.mean(0) - want).abs() <= 5 * se + 1e-3).all(), (got.mean(0), want, se)  # (1e-3: the grid)
    assert (elbo_q < log_px - 0.05).all()


@pytest.mark.parametrize("decoder_input", ["bottom", "all"])
def test_pixel_log_pmf_refuses_latents_of_another_width_by_name_as_the_likelihood_does(decoder_input):
    """z_1 alone (width M_1) or one dimension too many was torch's 'split_with_sizes expects
    split_sizes to sum exactly to 2' (decoder of z_1) or a matmul's shape error (decoder of every
    layer) from bits-back coding's pixel pmf, where p(x|z) names the model's width."""
    g = torch.Generator().manual_seed(0)
    dec = Decoder(_tanh_net(1 if decoder_input == "bottom" else 2, 3, g, gaussian=False), BernoulliHead(), (1, 1, 3))
    q_nets = [_tanh_net(4, 2, g), _tanh_net(3, 2, g)]
    prior = GaussianLayerPrior(_tanh_net(1, 2, g), 1)
    model = HierarchicalVAE([1, 1], "top-down", nn.Flatten(), q_nets, [prior], StandardNormalPrior(1), dec, decoder_input)
    assert model.pixel_log_pmf(torch.zeros(4, 2)).shape == (4, 1, 1, 3, 2)
    for width in (1, 3):
        expect = rf"pixel_log_pmf .*shape \(4, {width}\).* 2 dimensions \(its layers' \[1, 1\]"
        with pytest.raises(ValueError, match=expect):
            model.pixel_log_pmf(torch.zeros(4, width))


@pytest.mark.parametrize("inference", INFERENCE_KINDS)
@torch.no_grad()
def test_latents_of_another_precision_are_scored_in_the_model_s(inference):
    """float32 z against a float64 model: p(x|z), the pixels' pmf, p(z) and q(z|x) as of the same z in
    float64 (they were torch's 'mat1 and mat2 must have the same dtype', or the layer prior's
    words that its network does not take the layer above's draws 'of that layer's width')."""
    model = _bernoulli_two_layers(inference)
    x = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]], dtype=torch.float64).view(2, 1, 1, 3)
    z = torch.tensor([[0.25, -0.5], [1.0, 0.75]])
    torch.testing.assert_close(model.likelihood(z).log_prob(x), model.likelihood(z.double()).log_prob(x))
    torch.testing.assert_close(model.pixel_log_pmf(z), model.pixel_log_pmf(z.double()))
    torch.testing.assert_close(model.prior().log_prob(z), model.prior().log_prob(z.double()))
    torch.testing.assert_close(model.posterior(x).log_prob(z), model.posterior(x).log_prob(z.double()))
