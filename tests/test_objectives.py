"""Bounds on a model with an exact likelihood: ELBO <= IWAE-k <= log p(x), equality at the
true posterior, IWAE-1 = ELBO in expectation, and the importance-sampled estimator."""

import math

import pytest
import torch

from dgmkit.evaluation import importance_sampled_log_likelihood
from dgmkit.objectives import ELBO, iwae_bound, log_importance_weights
from dgmkit.training import kl_weight
from linear_gaussian import data, loss_and_gradient, make


@torch.no_grad()
def test_bounds_are_tight_at_the_true_posterior():
    model, marginal = make(exact_posterior=True)
    x = data(marginal, 16)
    exact = marginal.log_prob(x.view(16, -1))
    # with q(z|x) = p(z|x) every importance weight equals p(x): zero variance, for any k
    for k in (1, 7):
        est = importance_sampled_log_likelihood(model, x, k=k, batch_size=5, chunk_size=3)
        assert torch.allclose(est, exact, atol=1e-9)
    # the closed-form-KL ELBO is exact only in expectation over its reconstruction sample
    assert torch.allclose(ELBO(20_000)(model, x).elbo, exact, atol=0.03)


@torch.no_grad()
def test_elbo_below_iwae_below_exact_with_an_imperfect_posterior():
    model, marginal = make(perturb=0.1)
    x = data(marginal, 64)
    exact = marginal.log_prob(x.view(64, -1)).mean()
    torch.manual_seed(0)
    elbo = ELBO(2000)(model, x).elbo.mean()
    iwae = {k: torch.stack([iwae_bound(model, x, k).mean() for _ in range(20)]).mean() for k in (10, 100)}
    is5000 = importance_sampled_log_likelihood(model, x, k=5000).mean()
    gap = exact - elbo
    assert gap > 0.2  # the perturbed posterior is measurably wrong
    assert elbo < iwae[10] < iwae[100] < exact + 1e-3
    assert (exact - is5000).abs() < 0.05 * gap  # 5000 importance samples close the gap


@torch.no_grad()
def test_iwae_with_one_sample_is_the_elbo_in_expectation():
    model, marginal = make(perturb=0.3)
    x = data(marginal, 8)
    torch.manual_seed(0)
    w = log_importance_weights(model, x, k=200_000).log_w  # each row is a 1-sample IWAE bound
    one_sample = w.mean(0)
    stderr = w.std(0) / math.sqrt(w.shape[0])
    elbo = ELBO(20_000)(model, x).elbo  # closed-form KL, reconstruction term averaged over 20k samples
    assert ((one_sample - elbo).abs() < 5 * stderr + 0.01).all()


def test_elbo_beta_weights_only_the_kl_in_the_loss():
    model, marginal = make(perturb=0.3)
    x = data(marginal, 4)
    torch.manual_seed(5)
    t = ELBO(1)(model, x, beta=0.25)
    assert torch.allclose(t.loss, -(t.log_px_z - 0.25 * t.kl))
    assert torch.allclose(t.elbo, t.log_px_z - t.kl)


def test_elbo_gradients_reach_encoder_and_decoder():
    model, marginal = make(perturb=0.3)
    ELBO(3)(model, data(marginal, 4)).loss.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("step", "expected"), [(0, 0.05), (9, 0.5), (19, 1.0), (100, 1.0)])
def test_linear_kl_warmup(step, expected):
    assert kl_weight(1.0, warmup_epochs=2, step=step, steps_per_epoch=10) == pytest.approx(expected)
    assert kl_weight(0.5, 0, step, 10) == 0.5


@torch.no_grad()
def test_iwae_objective_bounds_and_one_sample_case():
    from dgmkit.objectives import IWAE

    model, marginal = make(perturb=0.1)
    x = data(marginal, 32)
    exact = marginal.log_prob(x.view(32, -1)).mean()
    torch.manual_seed(0)
    k1 = torch.stack([IWAE(1)(model, x).iwae.mean() for _ in range(400)]).mean()
    k50 = torch.stack([IWAE(50)(model, x).iwae.mean() for _ in range(20)]).mean()
    elbo = ELBO(5000)(model, x).elbo.mean()
    assert abs(k1 - elbo) < 0.02  # IWAE-1 is the ELBO
    assert elbo < k50 < exact + 1e-3
    t = IWAE(50)(model, x, beta=0.5)
    assert torch.allclose(t.elbo, t.log_px_z - t.kl)


def test_iwae_gradient_is_the_self_normalized_weighting():
    """d/dtheta L_k = sum_i w~_i d/dtheta log w_i, with w~ the normalized weights."""
    from dgmkit.objectives import IWAE

    model, marginal = make(perturb=0.3)
    x = data(marginal, 1)
    torch.manual_seed(3)
    IWAE(8)(model, x).loss.sum().backward()
    g_ours = model.decoder.net[0].bias.grad.clone()
    model.zero_grad()
    torch.manual_seed(3)
    log_w = log_importance_weights(model, x, 8).log_w[:, 0]
    weights = torch.softmax(log_w.detach(), 0)
    (-(weights * log_w).sum()).backward()
    assert torch.allclose(model.decoder.net[0].bias.grad, g_ours, atol=1e-10)


def test_free_bits_floor_the_kl_of_each_dimension():
    model, marginal = make(perturb=0.3)
    x = data(marginal, 16)
    q, p = model.posterior(x), model.prior()
    from dgmkit.distributions import kl_per_dimension

    per_dim = kl_per_dimension(q, p).mean(0).detach()  # (M,)
    floor = float(per_dim.mean())  # one dimension above the floor, one below (M = 2)
    assert (per_dim > floor).sum() == 1
    torch.manual_seed(0)
    t = ELBO(1, free_bits=floor)(model, x)
    torch.manual_seed(0)
    plain = ELBO(1)(model, x)
    expected = -(plain.log_px_z.mean() - torch.clamp(per_dim, min=floor).sum())
    assert torch.allclose(t.loss.mean(), expected)
    assert torch.allclose(t.elbo, plain.elbo)  # the reported bound is untouched
    model.zero_grad()
    t.loss.mean().backward()
    below = int(per_dim.argmin())
    # the dimension under the floor gets no gradient from the KL: only the reconstruction's
    model2, _ = make(perturb=0.3)
    torch.manual_seed(0)
    (-ELBO(1)(model2, x).log_px_z.mean()).backward()
    enc, enc2 = model.encoder.net[1], model2.encoder.net[1]
    assert torch.allclose(enc.bias.grad[[below, 2 + below]], enc2.bias.grad[[below, 2 + below]], atol=1e-10)


@torch.no_grad()
def test_iwae_training_weights_raise_only_the_prior_ratio_to_the_kl_weight():
    """With KL weight beta the training weights are p(x|z) (p(z)/q(z|x))^beta: beta = 0 leaves the
    likelihood's log-mean-exp; the reported bound stays the beta = 1 one."""
    from dgmkit.objectives import IWAE

    model, marginal = make(perturb=0.3)
    x = data(marginal, 4)
    for beta in (0.0, 0.5):
        torch.manual_seed(3)
        t = IWAE(8)(model, x, beta=beta)
        torch.manual_seed(3)
        w = log_importance_weights(model, x, 8)
        ratio = w.log_pz - w.log_qz
        assert torch.allclose(t.loss, -(torch.logsumexp(w.log_px_z + beta * ratio, 0) - math.log(8)))
        assert torch.allclose(t.iwae, torch.logsumexp(w.log_w, 0) - math.log(8))


def test_iwae_training_gradient_at_a_kl_weight_near_one_is_the_bound_s_gradient():
    """The loss at beta is -log-mean-exp of log p(x|z) + beta (log p(z) - log q(z|x)), every term with
    its gradient: at beta = 1 - 1e-6 its gradient is the bound's (q's log-density included)."""
    from dgmkit.objectives import IWAE

    model, marginal = make(perturb=0.3)
    x = data(marginal, 4)
    grads = []
    for beta in (1.0, 1.0 - 1e-6):
        model.zero_grad()
        torch.manual_seed(3)
        IWAE(8)(model, x, beta=beta).loss.sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.encoder.parameters()]))
    assert grads[0].abs().max() > 1e-3 and torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_the_dequantization_bound_is_the_importance_weighted_bound_in_value_and_gradient():
    """Its noise is the latent of a variational model: on any such model it is the IWAE bound, and
    its loss trains the model as IWAE's does."""
    from dgmkit.objectives import IWAE, DequantizationBound

    model, marginal = make(perturb=0.3)
    x = data(marginal, 4)
    (bound, g_bound), (iwae, g_iwae) = (loss_and_gradient(o, model, x) for o in (DequantizationBound(6), IWAE(6)))
    assert torch.allclose(bound, iwae) and max(g.abs().max() for g in g_iwae) > 1e-3
    assert all(torch.allclose(a, b) for a, b in zip(g_bound, g_iwae))


@torch.no_grad()
def test_importance_sampling_is_exact_for_datapoints_whose_weights_underflow_exp():
    """Datapoints far out in the tail have log p(x) of thousands of nats below zero, where exp of
    a log-weight is 0 even in float64: the chunks must be reduced by logsumexp."""
    model, marginal = make(exact_posterior=True)
    x = data(marginal, 4) + 40.0
    exact = marginal.log_prob(x.view(4, -1))
    assert (exact < -1000).all()
    est = importance_sampled_log_likelihood(model, x, k=7, batch_size=2, chunk_size=6)
    assert torch.allclose(est, exact, rtol=1e-9)


@torch.no_grad()
def test_wake_sleep_reports_the_elbo_as_reconstruction_minus_kl():
    from dgmkit.objectives import ReweightedWakeSleep

    model, marginal = make(perturb=0.3)
    x = data(marginal, 8)
    torch.manual_seed(0)
    t = ReweightedWakeSleep(5)(model, x)
    assert torch.allclose(t.elbo, t.log_px_z - t.kl)


# ------------------------------------------------ gradients against the linear Gaussian's closed form
def _closed_form_elbo(model, x: torch.Tensor) -> torch.Tensor:
    """The ELBO of the linear Gaussian model under q(z|x) = N(mu, diag s^2), exact: E_q log p(x|z)
    = -D/2 log 2 pi sigma^2 - (|x - W mu - b|^2 + sum_j s_j^2 |W_j|^2) / (2 sigma^2), minus KL(q||p)."""
    from linear_gaussian import SIGMA, D

    q, p = model.posterior(x), model.prior()
    w, b = model.decoder.net[0].weight, model.decoder.net[0].bias
    residual = x.view(len(x), -1) - q.loc @ w.T - b
    spread = (q.scale.square() * w.square().sum(0)).sum(-1)
    recon = -0.5 * D * math.log(2 * math.pi * SIGMA**2) - (residual.square().sum(-1) + spread) / (2 * SIGMA**2)
    return recon - torch.distributions.kl_divergence(q, p)


def _encoder_bias_gradient(model, loss: torch.Tensor) -> torch.Tensor:
    model.zero_grad()
    loss.backward()
    return model.encoder.net[1].bias.grad.clone()


def test_the_reparameterized_gradients_reach_the_posterior_scale_as_the_closed_form_says():
    """The ELBO's and IWAE's gradients come through the draws z = mu + s eps: a draw that let no
    gradient reach s (or mu) through the reconstruction term still trained, the KL alone moving s.
    The encoder's gradient (means and scales) of ELBO(L) and of IWAE(1) over many draws is the
    closed form's; IWAE(1)'s also through ``log_importance_weights``, which IWAE, MIWAE and the
    dequantization bound share."""
    from dgmkit.objectives import IWAE

    model, marginal = make(perturb=0.3)
    x = data(marginal, 8)
    exact = _encoder_bias_gradient(model, -_closed_form_elbo(model, x).mean())
    torch.manual_seed(0)
    elbo = _encoder_bias_gradient(model, -ELBO(20_000)(model, x).elbo.mean())
    torch.manual_seed(0)
    iwae = _encoder_bias_gradient(model, IWAE(1)(model, x.repeat(4000, 1, 1, 1)).loss.mean())
    assert exact[2:].abs().min() > 0.1  # (the scales' part is not zero: the check can see it)
    for got in (elbo, iwae):
        torch.testing.assert_close(got, exact, rtol=0.05, atol=0.03)


def test_reweighted_wake_sleep_reports_the_k_sample_bound_of_its_own_draws():
    """RWS's ``iwae``, the score its early stopping and best checkpoint use, is log (1/k) sum_i w_i
    of the draws it trains on (not their mean log-weight, an ELBO)."""
    from dgmkit.objectives import ReweightedWakeSleep

    model, marginal = make(perturb=0.3)
    x = data(marginal, 8)
    with torch.no_grad():
        torch.manual_seed(0)
        terms = ReweightedWakeSleep(5)(model, x)
        torch.manual_seed(0)
        log_w = log_importance_weights(model, x, 5, reparameterized=False).log_w
    torch.testing.assert_close(terms.iwae, torch.logsumexp(log_w, 0) - math.log(5))
    assert bool((terms.iwae > log_w.mean(0)).all())  # (Jensen: the k-sample bound is above the ELBO's draws)


def test_objective_settings_are_refused_by_kind_and_range():
    """Built by hand: ELBO(2.5) and IWAE(1.5) were kept as float sample counts, a NaN or infinite
    weight (tc_weight, mmd_weight) was kept to make NaN losses, a negative anneal rate raised the
    temperature without end, and sleep="no" (a true string) kept the sleep phase."""
    import numpy as np

    from dgmkit.objectives import (
        ELBO,
        IWAE,
        BetaTCVAE,
        DequantizationBound,
        GumbelSoftmaxELBO,
        ReweightedWakeSleep,
        WAEObjective,
    )

    for build, needle in (
        (lambda: ELBO(2.5), "num_samples must be an integer >= 1, got 2.5"),
        (lambda: ELBO(1, free_bits=math.nan), "free_bits must be a finite number >= 0, got nan"),
        (lambda: IWAE(1.5), "k must be an integer >= 1, got 1.5"),
        (lambda: IWAE(True), "k must be an integer >= 1, got True"),
        (lambda: DequantizationBound(0), "samples must be an integer >= 1, got 0"),
        (lambda: BetaTCVAE(tc_weight=math.nan), "tc_weight must be a finite number >= 0, got nan"),
        (lambda: BetaTCVAE(dataset_size=2.5), "dataset_size must be an integer >= 1, got 2.5"),
        (lambda: WAEObjective(math.inf), "mmd_weight must be a finite number >= 0, got inf"),
        (lambda: GumbelSoftmaxELBO(anneal_rate=-1.0), "anneal_rate must be a finite number >= 0, got -1.0"),
        (lambda: GumbelSoftmaxELBO(temperature=math.inf), "need 0 < temperature_min <= temperature, finite"),
        (lambda: ReweightedWakeSleep(2, sleep="no"), "sleep must be True or False, got 'no'"),
    ):
        with pytest.raises(ValueError) as e:
            build()
        assert needle in str(e.value)
    assert IWAE(np.int64(3)).k == 3 and type(IWAE(np.int64(3)).k) is int
    assert BetaTCVAE(tc_weight=np.float32(2.0)).weights == (1.0, 2.0, 1.0)


def test_importance_weights_of_an_empty_batch_are_refused_in_words():
    """IWAE(k) and the importance-weighted bounds of a batch of no datapoints: torch's "cannot
    reshape tensor of 0 elements" from inside a distribution's log_prob, named now."""
    from dgmkit.config import RunConfig, build_model
    from dgmkit.objectives import IWAE

    model = build_model(RunConfig.of(dataset="digits", hidden=[8], latent_dim=2), (1, 8, 8), 17)
    with pytest.raises(ValueError, match=r"^importance weights of an empty batch \(0 datapoints\)"):
        IWAE(3)(model, torch.zeros(0, 1, 8, 8))
    assert IWAE(3)(model, torch.zeros(2, 1, 8, 8)).loss.shape == (2,)


def test_the_elbo_of_an_empty_batch_is_refused_in_words():
    """The ELBO whose KL is in closed form draws its reconstruction term alone (``log_px_at_draws``),
    which met torch's "cannot reshape tensor of 0 elements into shape [3, 0, -1]" for a batch of no
    datapoints, where IWAE's importance weights name the problem."""
    model, _ = make(perturb=0.3)
    with pytest.raises(ValueError, match=r"^the reconstruction term log p\(x\|z\) of an empty batch \(0 datapoints\)"):
        ELBO(3)(model, torch.zeros(0, 1, 1, 4, dtype=torch.float64))
    assert ELBO(3)(model, torch.zeros(2, 1, 1, 4, dtype=torch.float64)).loss.shape == (2,)
