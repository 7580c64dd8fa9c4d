"""The very deep residual top-down VAE: its one-pass joint against separate evaluations, the
bounds against an independent estimate of log p(x) (importance sampling from the prior), scale
bounds, the configuration's checks, and the family end to end through the CLI."""

import json
import math

import pytest
import torch

from dgmkit.cli.main import main
from dgmkit.config import RunConfig
from dgmkit.errors import ConfigError
from dgmkit.evaluation import importance_sampled_log_likelihood
from dgmkit.families import get_family
from dgmkit.models.vdvae import DeepTopDownVAE, bounded_scale
from dgmkit.objectives import iwae_bound
from dgmkit.objectives.hierarchical import HierarchicalELBO, layer_kls


def tiny(**kw) -> DeepTopDownVAE:
    """4x4 binary images, latents of 1 channel at 2x2 and 4x4 (4 + 16 dimensions)."""
    settings = dict(posterior="residual", res_resolutions=[2, 4], res_layers=[1, 1], res_width=8)
    settings.update(res_bottleneck=4, res_latent_channels=1, **kw)
    torch.manual_seed(0)
    return get_family("hvae")(**settings).build((1, 4, 4), 2).double().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return (torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.4).double()


@torch.no_grad()
def test_one_pass_gives_the_same_terms_as_separate_evaluations(x):
    model = tiny(res_layers=[2, 1])
    assert model.sizes == [16, 4, 4] and model.num_layers == 3
    z, log_px_z, log_pz, log_qz = model.joint_pass(x, 3, torch.Generator().manual_seed(0))
    assert z.shape == (3, 6, 24)
    torch.testing.assert_close(model.likelihood(z).log_prob(x), log_px_z)
    torch.testing.assert_close(model.prior().log_prob(z), log_pz)
    torch.testing.assert_close(model.posterior(x).log_prob(z), log_qz)
    # the per-layer ELBO's terms are the same draw's: log w = log p(x|z) - sum KL on average
    terms = HierarchicalELBO()(model, x)
    assert torch.allclose(terms.elbo, terms.log_px_z - terms.kl)


def _fitted(x: torch.Tensor) -> DeepTopDownVAE:
    """The tiny model after 150 Adam steps of the ELBO on x: a posterior that is a fair proposal
    (at initialisation q is a random function of x and the importance weights are heavy-tailed)."""
    model = tiny().train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = -HierarchicalELBO()(model, x).elbo.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def _prior_sampling_estimate(model: DeepTopDownVAE, x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """log p(x) ~ log 1/n sum_i p(x | z_i), z_i ~ p(z): an estimate that does not use q."""
    z, _ = model.prior().rsample_and_log_prob((n,), generator=torch.Generator().manual_seed(seed))
    parts = [model.likelihood(c[:, None].expand(-1, len(x), -1)).log_prob(x) for c in z.split(20_000)]
    return torch.logsumexp(torch.cat(parts), 0) - math.log(n)


@pytest.mark.slow
def test_bounds_order_against_importance_sampling_from_the_prior(x):
    """ELBO <= IWAE-k <= log p(x) on average, and IS-5000 with q agrees with an estimate that
    does not use q at all: log E_{p(z)} p(x | z) with 200000 prior draws."""
    x = x[:3]
    model = _fitted(x)
    reference = _prior_sampling_estimate(model, x, 200_000, seed=2)
    with torch.no_grad():
        elbo = torch.stack([HierarchicalELBO()(model, x).elbo for _ in range(200)]).mean(0)
        iwae = torch.stack([iwae_bound(model, x, 20) for _ in range(20)]).mean(0)
        is_5000 = importance_sampled_log_likelihood(model, x, k=5000, generator=torch.Generator().manual_seed(3))
    assert (elbo <= iwae + 0.02).all() and (iwae <= reference + 0.05).all()  # MC error of 200 and 20 draws
    torch.testing.assert_close(is_5000, reference, atol=0.1, rtol=0)


def test_scales_stay_within_their_bounds_and_start_at_one():
    u = torch.linspace(-50, 50, 101)
    s = bounded_scale(u, 0.01, 5.0)
    assert s.min() >= 0.01 and s.max() <= 5.0 and (s[1:] >= s[:-1]).all()
    assert bounded_scale(torch.zeros(()), 0.01, 5.0).item() == pytest.approx(1.0)
    model = tiny(scale_min=0.5, scale_max=2.0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(30.0)  # wild weights: the scales still keep to [0.5, 2]
    for d in model.path((torch.rand(4, 1, 4, 4) < 0.5).double()):
        for dist in (d.q, d.p):
            if dist is not None:
                assert dist.stddev.min() >= 0.5 - 1e-12 and dist.stddev.max() <= 2.0 + 1e-12


@torch.no_grad()
def test_drawing_is_repeatable_and_every_layer_is_used():
    model = tiny()
    a = model.sample(5, generator=torch.Generator().manual_seed(3))[1]
    b = model.sample(5, generator=torch.Generator().manual_seed(3))[1]
    assert a.shape == (5, 1, 4, 4) and torch.equal(a, b)
    z = model.prior().rsample_and_log_prob((2,), generator=torch.Generator().manual_seed(4))[0]
    base = model.likelihood(z).mean
    for layer in range(model.num_layers):  # changing any one layer changes p(x | z)
        moved = torch.cat([t + (5.0 if i == layer else 0.0) for i, t in enumerate(model.split(z))], -1)
        assert not torch.allclose(model.likelihood(moved).mean, base)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(res_resolutions=[7, 14], res_layers=[2]), "one number of latent layers per resolution"),
        (dict(res_resolutions=[7, 15], res_layers=[1, 1]), "must double"),
        (dict(scale_min=0.5, scale_max=1.0), "scale_min < 1 < scale_max"),
    ],
)
def test_the_configuration_is_checked(settings, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.of(model="hvae", posterior="residual", **settings)


def test_resolutions_must_reach_the_image_size():
    cfg = get_family("hvae")(posterior="residual", res_resolutions=[3, 6], res_layers=[1, 1])
    with pytest.raises(ConfigError, match="by doublings"):
        cfg.build((1, 28, 28), 2)


def test_the_residual_model_trains_evaluates_diagnoses_and_draws_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "hvae", "--posterior", "residual", "--res-resolutions", "2", "4", "--res-layers", "2", "2"]
    argv += ["--res-width", "8", "--res-bottleneck", "4", "--dataset", "digits", "--epochs", "2", "--quiet"]
    argv += ["--free-bits", "0.05", "--skip-grad-norm", "1e6", "--ema", "0.9", "--warmup", "1"]
    assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines[-1]["valid_layer_kl"]) == 4 and lines[-1]["skipped_steps"] == 0
    assert main(["eval", str(out), "--iw-samples", "10"]) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "NLL (k=10)" in text and "layer z4" in text
    assert main(["diagnose", str(out), "--out", str(tmp_path / "d.png"), "-n", "100", "--samples", "2"]) == 0
    for cmd in (["sample", "-n", "4"], ["reconstruct", "-n", "4"], ["interpolate", "--pairs", "2"], ["latents"]):
        assert main([cmd[0], str(out), *cmd[1:], "--out", str(tmp_path / f"{cmd[0]}.png")]) == 0, capsys.readouterr().err


def _perturbed(scale: float = 0.1) -> DeepTopDownVAE:
    model = tiny()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


@torch.no_grad()
def test_the_prior_scores_its_own_draws_and_the_posterior_of_a_layer_depends_on_the_layers_above():
    """Ancestral sampling returns the prior's log_prob of its draw (every layer counted), and q(z_l
    | x, z_>l) is top-down: the same x with another top layer gives another q below."""
    prior = _perturbed().prior()
    z, log_p = prior.rsample_and_log_prob((5,), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(log_p, prior.log_prob(z))
    model = tiny()
    x = (torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.4).double()
    z = model.posterior(x).rsample()
    moved = z.clone()
    moved[..., model.sizes[0] :] += 2.0  # the top layer moved, the bottom one kept
    q, q_moved = (next(d.q for d in model.path(x, given=g) if d.index == 0) for g in (z, moved))
    assert (q.mean - q_moved.mean).abs().max() > 1e-4


def test_the_elbo_gradient_reaches_the_top_layer_s_posterior_through_the_layers_below():
    """z_L enters the state the lower layers read: its draw's gradient is the pathwise one (a
    detached z there leaves every value the same and trains q(z_L | x) by its KL alone)."""
    from pathwise import check_directional_derivative

    model = tiny()
    x = (torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.4).double()
    check_directional_derivative(lambda: model.elbo_terms(x)["elbo"].sum(), list(model.cells[0].q.parameters()))


def test_free_bits_and_the_kl_weight_change_the_loss_alone_not_the_reported_elbo_and_kls(x):
    """Free bits (per layer) and beta < 1 are training devices: the ELBO and KL the objective
    reports stay the unmodified beta = 1 ones of the same draw, and the eval bound
    (``elbo_terms``) is that same ELBO."""
    model = tiny(res_layers=[2, 1])
    torch.manual_seed(0)
    _, kls = layer_kls(model, x)
    floor = float(kls.detach().mean(1).max()) + 1.0  # every layer under the floor
    runs = {}
    for name, objective, beta in [("plain", HierarchicalELBO(), 1.0), ("trained", HierarchicalELBO(free_bits=floor), 0.3)]:
        torch.manual_seed(0)
        runs[name] = objective(model, x, beta=beta)
    plain, trained = runs["plain"], runs["trained"]
    torch.testing.assert_close(trained.elbo, plain.elbo)
    torch.testing.assert_close(trained.kl, kls.sum(0))
    torch.testing.assert_close(plain.elbo, plain.log_px_z - kls.sum(0))
    torch.testing.assert_close(trained.loss, -(plain.log_px_z - 0.3 * floor * len(kls)))
    torch.manual_seed(0)
    torch.testing.assert_close(model.elbo_terms(x)["elbo"], plain.elbo)


@pytest.mark.parametrize("method", ["likelihood", "pixel_log_pmf"])
@torch.no_grad()
def test_p_x_given_z_refuses_latents_of_another_width_by_name(method):
    """z one dimension short or over, or the bottom layer alone, was torch's 'split_with_sizes
    expects split_sizes to sum exactly to 19' from the top-down pass: named as the hierarchical
    VAE names it, with the layers' widths."""
    model = tiny()
    d = model.latent_dim
    assert getattr(model, method)(torch.zeros(3, d)) is not None
    for width in (d - 1, d + 1, model.sizes[0]):
        with pytest.raises(ValueError, match=rf"shape \(3, {width}\); this model's z has {d} dimensions \(its layers'"):
            getattr(model, method)(torch.zeros(3, width))


@torch.no_grad()
def test_latents_of_another_precision_are_scored_in_the_model_s():
    """float32 z against a float64 model: p(x|z), p(z) and q(z|x) as of the same z in float64 (they
    were torch's 'Input type (float) and bias type (double) should be the same')."""
    model = tiny()
    x = torch.zeros(2, *model.event_shape, dtype=torch.float64)
    z = torch.randn(2, model.latent_dim, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.likelihood(z).log_prob(x), model.likelihood(z.double()).log_prob(x))
    torch.testing.assert_close(model.prior().log_prob(z), model.prior().log_prob(z.double()))
    torch.testing.assert_close(model.posterior(x).log_prob(z), model.posterior(x).log_prob(z.double()))
