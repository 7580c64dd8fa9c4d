"""The WAE's MMD estimator and beta-TCVAE's aggregate-posterior estimators: the MMD estimate is
unbiased (mean 0 for one distribution, the closed form for two Gaussians under an RBF kernel),
and the total-correlation estimator recovers the known TC of a Gaussian aggregate posterior."""

import math
import re

import pytest
import torch

from dgmkit.distributions.mmd import imq_kernel, mmd2_unbiased, rbf_kernel
from dgmkit.objectives.total_correlation import aggregate_log_densities, decompose_kl, stratified_log_weights


def _repeat(fn, n=400):
    vals = torch.stack([fn(i) for i in range(n)])
    return vals.mean().item(), (vals.std() / math.sqrt(n)).item()


@pytest.mark.parametrize("kernel", [rbf_kernel(1.5), imq_kernel(1.0)], ids=["rbf", "imq"])
def test_mmd_has_expectation_zero_for_one_distribution(kernel):
    g = torch.Generator().manual_seed(0)
    mean, se = _repeat(
        lambda i: mmd2_unbiased(
            torch.randn(20, 3, generator=g, dtype=torch.float64),
            torch.randn(30, 3, generator=g, dtype=torch.float64),
            kernel,
        )
    )
    assert abs(mean) < 3.5 * se + 1e-12


def test_mmd_matches_the_closed_form_for_two_gaussians_with_an_rbf_kernel():
    g = torch.Generator().manual_seed(1)
    l = 1.3  # noqa: E741
    mu1, mu2 = torch.tensor([0.0, 0.5], dtype=torch.float64), torch.tensor([0.8, -0.2], dtype=torch.float64)
    s1, s2 = torch.tensor([1.0, 0.6], dtype=torch.float64), torch.tensor([0.7, 1.2], dtype=torch.float64)

    def e_k(m, v):  # E exp(-|d|^2 / (2 l^2)) for d ~ N(m, diag(v))
        return torch.prod((1 + v / l**2) ** -0.5 * torch.exp(-0.5 * m**2 / (l**2 + v))).item()

    exact = e_k(0 * mu1, 2 * s1**2) + e_k(0 * mu2, 2 * s2**2) - 2 * e_k(mu1 - mu2, s1**2 + s2**2)
    mean, se = _repeat(
        lambda i: mmd2_unbiased(
            mu1 + s1 * torch.randn(25, 2, generator=g, dtype=torch.float64),
            mu2 + s2 * torch.randn(15, 2, generator=g, dtype=torch.float64),
            rbf_kernel(l),
        )
    )
    assert exact > 0.05
    assert abs(mean - exact) < 3.5 * se


def test_mmd_is_differentiable_and_refuses_bad_samples():
    x = torch.randn(10, 2, requires_grad=True)
    mmd2_unbiased(x, torch.randn(12, 2) + 3, imq_kernel()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same dimension"):
        mmd2_unbiased(torch.zeros(5, 2), torch.zeros(5, 3), rbf_kernel())
    with pytest.raises(ValueError, match="at least 2"):
        mmd2_unbiased(torch.zeros(1, 2), torch.zeros(5, 2), rbf_kernel())
    for make, needle in [
        (lambda: imq_kernel(0.0), "kernel's prior variance must be a finite number > 0, got 0.0"),
        (lambda: imq_kernel(math.inf), "kernel's prior variance must be a finite number > 0, got inf"),
        (lambda: imq_kernel(1.0, scales=(1.0, math.nan)), r"kernel's scales\[1\] must be a finite number > 0, got nan"),
        (lambda: imq_kernel(1.0, scales=()), "needs at least one scale"),
        (lambda: rbf_kernel(math.inf), "lengthscale must be a finite number > 0, got inf"),
    ]:
        with pytest.raises(ValueError, match=needle):  # (a NaN scale, first or not, was taken; inf gave NaN values)
            make()


def test_stratified_weights_sum_to_one_and_a_full_batch_is_the_exact_mixture():
    w = stratified_log_weights(7, 100).exp()
    assert torch.allclose(w.sum(1), torch.ones(7, dtype=torch.float64))
    assert torch.allclose(stratified_log_weights(5, 5).exp(), torch.full((5, 5), 0.2, dtype=torch.float64))
    with pytest.raises(ValueError):
        stratified_log_weights(10, 5)


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_total_correlation_of_a_gaussian_aggregate_posterior_is_recovered(estimator):
    """q(z | n) = N(mu_n, s^2 I) with mu_n ~ N(0, a^2 C): q(z) = N(0, a^2 C + s^2 I), whose total
    correlation is -1/2 log(1 - r^2) with r = a^2 rho / (a^2 + s^2); I(x; z) = 1/2 log det(q(z)'s
    covariance) - log s^2."""
    g = torch.Generator().manual_seed(2)
    m, a, s, rho = 3000, 1.0, 0.5, 0.8
    chol = torch.linalg.cholesky(torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64))
    loc = a * torch.randn(m, 2, generator=g, dtype=torch.float64) @ chol.T
    scale = torch.full_like(loc, s)
    z = loc + scale * torch.randn(m, 2, generator=g, dtype=torch.float64)
    log_pz = (-0.5 * z.square() - 0.5 * math.log(2 * math.pi)).sum(-1)
    mi, tc, dim_kl = decompose_kl(z, loc, scale, log_pz, dataset_size=10**6, estimator=estimator)
    r = a * a * rho / (a * a + s * s)
    assert tc.mean().item() == pytest.approx(-0.5 * math.log(1 - r * r), abs=0.03)
    cov = a * a * torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64) + s * s * torch.eye(2, dtype=torch.float64)
    exact_mi = 0.5 * torch.logdet(cov).item() - 2 * math.log(s)
    assert mi.mean().item() == pytest.approx(exact_mi, abs=0.05)
    # the three terms add up to the one-draw KL estimate log q(z|x) - log p(z)
    log_qzx = (-0.5 * ((z - loc) / scale).square() - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert torch.allclose(mi + tc + dim_kl, log_qzx - log_pz)


def test_aggregate_densities_match_brute_force_on_a_full_batch():
    g = torch.Generator().manual_seed(3)
    loc, scale = (
        torch.randn(6, 3, generator=g, dtype=torch.float64),
        0.3 + torch.rand(6, 3, generator=g, dtype=torch.float64),
    )
    z = torch.randn(6, 3, generator=g, dtype=torch.float64)
    log_qz, log_dims = aggregate_log_densities(z, loc, scale, dataset_size=6)
    normal = torch.distributions.Normal(loc, scale)
    for i in range(6):
        per = normal.log_prob(z[i]).exp()  # (6, 3): each posterior's density of z_i per dimension
        assert log_qz[i].item() == pytest.approx(math.log(per.prod(1).mean().item()), rel=1e-10)
        assert log_dims[i].item() == pytest.approx(per.mean(0).log().sum().item(), rel=1e-10)


def _small_vae(objective="tcvae", **kw):
    from dgmkit.config import RunConfig, build_model

    cfg = RunConfig.of(
        model="vae", dataset="digits", likelihood="bernoulli", hidden=[32], latent_dim=4, objective=objective, **kw
    )
    return cfg, build_model(cfg, (1, 8, 8), 2)


def test_tcvae_objective_with_unit_weights_is_the_one_draw_elbo():
    from dgmkit.objectives import BetaTCVAE

    cfg, model = _small_vae(tc_weight=1.0)
    x = (torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(4)) < 0.4).float()
    objective = cfg.model.training_objective()
    assert isinstance(objective, BetaTCVAE) and objective.weights == (1.0, 1.0, 1.0)
    objective.setup(1000)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        t = objective(model, x)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        q = model.posterior(x)
        z, log_q = q.rsample_and_log_prob()
        one_draw = model.likelihood(z).log_prob(x) - (log_q - model.prior().log_prob(z))
    assert torch.allclose(-t.loss, one_draw, atol=1e-4)
    assert torch.allclose(t.mi + t.tc + t.dim_kl, t.log_px_z - one_draw, atol=1e-4)
    assert torch.allclose(t.elbo, t.log_px_z - t.kl)
    # beta 6 on the TC: the loss grows by 5 tc (per example), the reported ELBO does not change
    heavy = BetaTCVAE(tc_weight=6.0, dataset_size=1000)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        h = heavy(model, x)
    assert torch.allclose(h.loss - t.loss, 5 * t.tc, atol=1e-3) and torch.allclose(h.elbo, t.elbo)
    h.loss.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_tcvae_from_python_with_a_prior_of_no_closed_form_kl_reports_the_draws_estimate():
    """The CLI keeps the standard prior; composed by hand with a mixture prior (no KL in torch's
    registry: a raw NotImplementedError before), the KL is the draw's log q - log p, of which the
    three parts are a split."""
    from dgmkit.models import VAE
    from dgmkit.objectives import BetaTCVAE
    from dgmkit.priors import MixtureOfGaussiansPrior

    _, small = _small_vae()
    torch.manual_seed(0)
    model = VAE(small.encoder, small.decoder, MixtureOfGaussiansPrior(4, components=3))
    x = (torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(4)) < 0.4).float()
    t = BetaTCVAE(dataset_size=1000)(model, x)
    assert torch.allclose(t.mi + t.tc + t.dim_kl, t.kl, atol=1e-4) and torch.allclose(t.elbo, t.log_px_z - t.kl)
    assert torch.isfinite(t.loss).all()


def test_tcvae_needs_a_factorized_prior_and_logs_its_terms(tmp_path, capsys):
    import json

    from dgmkit.cli.main import main
    from dgmkit.config import RunConfig
    from dgmkit.errors import ConfigError

    with pytest.raises(ConfigError, match="standard prior"):
        RunConfig.of(model="vae", objective="tcvae", prior="mog")
    out = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--objective", "tcvae", "--tc-weight", "4", "--latent-dim", "4"]
    assert main([*argv, "--hidden", "32", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    for k in ("valid_mi", "valid_tc", "valid_dim_kl", "valid_elbo"):
        assert k in line and math.isfinite(line[k])
    assert line["valid_mi"] + line["valid_tc"] + line["valid_dim_kl"] == pytest.approx(line["valid_kl"], abs=2.0)


def test_the_kernels_values_at_a_known_distance():
    x = torch.zeros(1, 3, dtype=torch.float64)
    y = torch.tensor([[1.0, 2.0, 2.0]], dtype=torch.float64)  # |x - y|^2 = 9, M = 3
    assert rbf_kernel(1.5)(x, y).item() == pytest.approx(math.exp(-9 / (2 * 1.5**2)))
    # the inverse multiquadric's C_s = 2 M sigma^2 s (Tolstikhin et al.): 3 and 6 here
    assert imq_kernel(0.5, scales=(1.0, 2.0))(x, y).item() == pytest.approx(3 / (3 + 9) + 6 / (6 + 9))
    assert imq_kernel()(x, x).item() == pytest.approx(7.0)  # 1 for each of the 7 scales at distance 0


def test_tcvae_weights_the_batch_by_the_training_set_size_and_its_penalty_by_the_kl_weight():
    from dgmkit.objectives import BetaTCVAE

    _, model = _small_vae(tc_weight=1.0)
    x = (torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(4)) < 0.4).float()
    objective = BetaTCVAE(tc_weight=6.0)
    objective.setup(1000)  # the batch stands for 1000 datapoints: stratified weights, not the batch mixture
    with torch.random.fork_rng():
        torch.manual_seed(5)
        t = objective(model, x, beta=0.5)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        q = model.posterior(x)
        z, _ = q.rsample_and_log_prob()
        mi, tc, dim_kl = decompose_kl(z, q.loc, q.scale, model.prior().log_prob(z), 1000)
    assert torch.allclose(t.mi, mi, atol=1e-5) and torch.allclose(t.tc, tc, atol=1e-5)
    assert torch.allclose(t.loss, -(t.log_px_z - 0.5 * (mi + 6 * tc + dim_kl)), atol=1e-4)


def test_tcvae_weighs_each_part_of_the_kl_by_its_own_weight():
    from dgmkit.objectives import BetaTCVAE

    _, model = _small_vae(tc_weight=1.0)
    x = (torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(4)) < 0.4).float()
    with torch.random.fork_rng():
        torch.manual_seed(5)
        t = BetaTCVAE(mi_weight=2.0, tc_weight=3.0, dim_kl_weight=5.0, dataset_size=1000)(model, x)
    assert t.mi.abs().sum() > 0 and t.dim_kl.abs().sum() > 0
    penalty = 2.0 * t.mi + 3.0 * t.tc + 5.0 * t.dim_kl
    assert torch.allclose(t.objective, t.log_px_z - penalty, atol=1e-4)
    assert torch.allclose(t.loss, -(t.log_px_z - penalty), atol=1e-4)
    # and in gradient: the penalty trains the encoder
    params = list(model.encoder.parameters())
    got = torch.autograd.grad(t.loss.sum(), params, retain_graph=True)
    want = torch.autograd.grad(-(t.log_px_z - penalty).sum(), params)
    assert all(torch.allclose(g, w, atol=1e-4) for g, w in zip(got, want))


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_a_batch_of_one_is_its_own_posterior_and_an_empty_one_is_refused(estimator):
    """M = 1 leaves stratified sampling's (N - 1)/(N (M - 1)) undefined: the lone posterior is all
    the batch says of q(z), as the batch mixture has it: log q(z) = log q(z|x) by closed form,
    each dimension's marginal its own factor, and so no mutual information."""
    g = torch.Generator().manual_seed(4)
    loc, scale = torch.randn(1, 3, generator=g, dtype=torch.float64), torch.tensor([[0.5, 1.0, 2.0]], dtype=torch.float64)
    z = loc + scale * torch.randn(1, 3, generator=g, dtype=torch.float64)
    log_qz, log_dims = aggregate_log_densities(z, loc, scale, dataset_size=1000, estimator=estimator)
    per_dim = torch.distributions.Normal(loc, scale).log_prob(z)
    torch.testing.assert_close(log_qz, per_dim.sum(1))
    torch.testing.assert_close(log_dims, per_dim.sum(1))
    mi, tc, _ = decompose_kl(z, loc, scale, torch.zeros(1, dtype=torch.float64), 1000, estimator)
    assert mi.abs().item() < 1e-12 and tc.abs().item() < 1e-12
    with pytest.raises(ValueError, match="batch"):
        aggregate_log_densities(z[:0], loc[:0], scale[:0], dataset_size=1000, estimator=estimator)
    with pytest.raises(ValueError, match=r"estimator must be one of \('mss', 'mws'\), got 'msss'"):
        aggregate_log_densities(z, loc, scale, 1000, "msss")
    with pytest.raises(ValueError, match=r"same shape \(M, D\), got \(1, 3\), \(1, 2\)"):
        aggregate_log_densities(z, loc[:, :2], scale, 1000, estimator)


def test_tcvae_refuses_a_batch_of_one_and_leaves_out_a_last_batch_of_one():
    """A batch of one estimates q(z) by its own posterior: MI and TC are 0 whatever the draw, so
    --tc-weight 6 at batch size 1 trained the KL at gamma alone (as did each epoch's last batch
    of one). Such a batch is refused, and a last one left out; equal weights split nothing."""
    from dgmkit.data import Split, load_dataset, make_transform
    from dgmkit.errors import ConfigError
    from dgmkit.training import Trainer

    cfg, model = _small_vae(tc_weight=6.0)
    data = load_dataset("digits")
    train, transform = Split(data.split("train").x[:9]), make_transform("bernoulli", data)
    weighted = cfg.model.training_objective()
    with pytest.raises(ConfigError, match="BetaTCVAE's estimate needs at least 2 datapoints of a batch together"):
        Trainer(model, weighted, train, transform, batch_size=1, progress=False)
    assert Trainer(model, weighted, train, transform, batch_size=4, progress=False).steps_per_epoch == 2
    unit = cfg.replace(tc_weight=1.0).model.training_objective()
    assert Trainer(model, unit, train, transform, batch_size=4, progress=False).steps_per_epoch == 3


def test_decompose_kl_refuses_a_log_prior_that_is_not_one_per_draw():
    """log p(z) of shape (M, 1) broadcast each term to (M, M) silently; (3,) for M = 4 was broadcasting's RuntimeError."""
    z, loc, scale = (
        torch.randn(4, 2, dtype=torch.float64),
        torch.zeros(4, 2, dtype=torch.float64),
        torch.ones(4, 2, dtype=torch.float64),
    )
    for bad in (torch.zeros(4, 1, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)):
        with pytest.raises(ValueError, match=re.escape(f"log p(z_i) of shape (4,), one per draw, got {tuple(bad.shape)}")):
            decompose_kl(z, loc, scale, bad, 10)


def test_mmd_of_samples_of_two_precisions_is_that_of_the_wider_and_no_dimension_is_refused():
    """float32 codes against float64 prior draws were the kernel's matmul RuntimeError; M = 0 gave NaN."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 2, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64)
    mixed = mmd2_unbiased(x.float(), y, imq_kernel())
    assert mixed.dtype == torch.float64
    torch.testing.assert_close(mixed, mmd2_unbiased(x.float().double(), y, imq_kernel()))
    with pytest.raises(ValueError, match="same dimension M >= 1"):
        mmd2_unbiased(torch.zeros(3, 0), torch.zeros(3, 0), imq_kernel())
    half = mmd2_unbiased(x.bfloat16(), y.bfloat16(), imq_kernel())  # (one precision stays its own, whatever the default)
    assert half.dtype == torch.bfloat16
    assert mmd2_unbiased(torch.tensor([[0], [1], [2]]), torch.tensor([[1], [3]]), imq_kernel()).is_floating_point()
