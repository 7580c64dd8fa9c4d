"""Tests from a hand mutation sweep over the objectives (ELBO, IWAE, importance sampling, MIWAE,
wake-sleep, the discrete estimators, M2, beta-TCVAE, the hierarchical ELBO, diffusion, VQ, WAE and the
autoencoder's reconstruction): each pins a number or a gradient that a mutant changed unseen, against
a closed form, a hand-written reduction of the same draws, or a gradient estimator written out from
its definition."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from dgmkit.conditional import BernoulliHead, Decoder, GaussianEncoder
from dgmkit.config import RunConfig, build_model
from dgmkit.evaluation import importance_sampled_log_likelihood
from dgmkit.families import get_family
from dgmkit.models import VAE, Autoencoder, GaussianDiffusion, LearnedSchedule
from dgmkit.models.diffusion import stratified_times
from dgmkit.nn.unet import UNet
from dgmkit.objectives import (
    ELBO,
    BetaTCVAE,
    DiffusionBound,
    GumbelSoftmaxELBO,
    Reconstruction,
    ReinforceELBO,
    ReweightedWakeSleep,
    WAEObjective,
    WakeSleep,
    kl_term,
    log_importance_weights,
    log_mean_exp,
)
from dgmkit.objectives.base import unit_weight
from dgmkit.objectives.hierarchical import HierarchicalELBO
from dgmkit.objectives.miwae import MIWAE, impute
from dgmkit.objectives.semisupervised import M2Objective
from dgmkit.objectives.total_correlation import stratified_log_weights
from dgmkit.objectives.vq import VQObjective
from dgmkit.priors import StandardNormalPrior
from linear_gaussian import data, make
from test_helmholtz import tiny as tiny_helmholtz


# ------------------------------------------------------------------------------- ELBO and its weights
def test_kl_term_without_a_closed_form_is_the_mean_of_the_draws_estimate():
    # a mixture prior has no closed-form KL: the estimate from L draws is their mean, not their sum
    g = torch.Generator().manual_seed(0)
    q = Independent(Normal(torch.randn(3, 2, generator=g), torch.ones(3, 2)), 1)
    p = MixtureSameFamily(Categorical(logits=torch.zeros(2)), Independent(Normal(torch.randn(2, 2, generator=g), 1.0), 1))
    z = q.rsample((4,))
    log_qz, log_pz = q.log_prob(z), p.log_prob(z)
    torch.testing.assert_close(kl_term(q, p, log_qz, log_pz), (log_qz - log_pz).mean(0))


def test_the_weight_is_the_unit_one_only_for_the_number_one():
    assert unit_weight(1.0) and unit_weight(1)
    assert not unit_weight(4.0) and not unit_weight(0.5)
    assert not unit_weight(torch.tensor(1.0))  # (a compiled step's tensor weight: never branched on)


def test_a_beta_vae_weight_above_one_charges_the_kl_beta_times():
    model, marginal = make(perturb=0.3)
    x = data(marginal, 4)
    torch.manual_seed(5)
    t = ELBO(1)(model, x, beta=4.0)
    torch.testing.assert_close(t.loss, -(t.log_px_z - 4.0 * t.kl))


def test_an_objective_checks_the_module_that_torch_compile_wraps():
    # (torch.compile's wrapper keeps the module it compiled as ``_orig_mod``)
    model, _ = make()
    ELBO().check_model(SimpleNamespace(_orig_mod=model))
    with pytest.raises(TypeError, match="the model is a Linear"):
        ELBO().check_model(SimpleNamespace(_orig_mod=nn.Linear(2, 2)))


@pytest.mark.parametrize("setting", [{"num_samples": math.nan}, {"free_bits": math.nan}])
def test_a_nan_setting_is_refused(setting):
    with pytest.raises(ValueError, match="must be (an integer|a finite number) >="):
        ELBO(**setting)


def test_log_mean_exp_along_a_later_dimension_divides_by_that_dimensions_length():
    log_w = torch.log(torch.tensor([[1.0, 2.0, 3.0, 6.0], [4.0, 4.0, 4.0, 4.0]], dtype=torch.float64))
    torch.testing.assert_close(log_mean_exp(log_w, dim=1), torch.log(torch.tensor([3.0, 4.0], dtype=torch.float64)))
    torch.testing.assert_close(log_mean_exp(log_w), torch.log(torch.tensor([2.5, 3.0, 3.5, 5.0], dtype=torch.float64)))


# --------------------------------------------------------------------------------- importance sampling
@torch.no_grad()
def test_importance_sampling_of_a_float32_model_sums_its_chunks_in_float64():
    # at the true posterior every weight is p(x), here about e^-3e5: one draw a chunk, a float32 running logsumexp
    # stops growing once log((n + 1) / n) is under half its spacing at 3e5 (0.03), some 1.8 nats short at k = 400;
    # the float32 result itself is within 0.03 of log p(x)
    model, marginal = make(exact_posterior=True)
    x = data(marginal, 2) + 200.0
    exact = marginal.log_prob(x.view(2, -1))
    assert (exact < -3e5).all()
    est = importance_sampled_log_likelihood(model.float(), x.float(), k=400, batch_size=2, chunk_size=2)
    assert est.dtype == torch.float32
    torch.testing.assert_close(est.double(), exact, rtol=0, atol=0.1)


@torch.no_grad()
def test_importance_sampling_draws_at_most_a_chunk_of_rows_at_a_time(monkeypatch):
    import dgmkit.objectives.importance as importance

    rows, real = [], importance.log_importance_weights

    def counted(model, x, k, *args, **kwargs):
        rows.append(k * len(x))
        return real(model, x, k, *args, **kwargs)

    monkeypatch.setattr(importance, "log_importance_weights", counted)
    model, marginal = make(exact_posterior=True)
    x = data(marginal, 5)
    est = importance_sampled_log_likelihood(model, x, k=7, batch_size=5, chunk_size=10)
    torch.testing.assert_close(est, marginal.log_prob(x.view(5, -1)))
    assert rows == [10, 10, 10, 5]  # 2 draws for each of the 5 datapoints a chunk: 2 + 2 + 2 + 1 = 7


# --------------------------------------------------------------------------------------------- MIWAE
@torch.no_grad()
def test_the_miwae_objective_of_complete_data_is_the_iwae_bound_of_the_same_draws():
    # (not the mean log weight of its k draws, an ELBO whatever k: below the k-sample bound by Jensen)
    model, marginal = make(perturb=0.3)
    x = data(marginal, 8)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        log_w = log_importance_weights(model, x, 6).log_w
    torch.manual_seed(0)
    miwae = MIWAE(6)(model, x)
    torch.testing.assert_close(miwae.bound, torch.logsumexp(log_w, 0) - math.log(6))
    torch.testing.assert_close(miwae.loss, -miwae.bound)
    assert bool((miwae.bound > log_w.mean(0) + 1e-3).all())


def _bernoulli_vae_of_fixed_pixel_probabilities(probs: torch.Tensor) -> VAE:
    """p(x|z) = Bernoulli(probs) whatever z (the decoder's weights 0): p(x_m | x_o) = probs_m exactly."""
    d = len(probs)
    encoder = GaussianEncoder(nn.Sequential(nn.Flatten(), nn.Linear(d, 4)), 2)
    decoder = Decoder(nn.Linear(2, d), BernoulliHead(), (1, 1, d))
    with torch.no_grad():
        decoder.net.weight.zero_()
        decoder.net.bias.copy_(torch.logit(probs))
    return VAE(encoder, decoder, StandardNormalPrior(2)).double().eval()


def test_single_imputation_of_a_binary_pixel_is_its_conditional_probability():
    # (the mean of p(x_m | z), averaged over the draws; not the most probable value, 0 or 1)
    probs = torch.tensor([0.3, 0.8, 0.6], dtype=torch.float64)
    model = _bernoulli_vae_of_fixed_pixel_probabilities(probs)
    x = torch.tensor([[[[1.0, math.nan, math.nan]]], [[[math.nan, 0.0, 1.0]]]], dtype=torch.float64)
    single, _ = impute(model, x, k=5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(single.view(2, 3), torch.tensor([[1.0, 0.8, 0.6], [0.3, 0.0, 1.0]], dtype=torch.float64))


def test_imputation_takes_k_draws_in_all_whatever_the_chunks(monkeypatch):
    import dgmkit.objectives.miwae as miwae

    draws, real = [], miwae.log_importance_weights

    def counted(model, x, k, *args, **kwargs):
        draws.append(k)
        return real(model, x, k, *args, **kwargs)

    monkeypatch.setattr(miwae, "log_importance_weights", counted)
    model = _bernoulli_vae_of_fixed_pixel_probabilities(torch.tensor([0.3, 0.8], dtype=torch.float64))
    impute(model, torch.tensor([[[[1.0, math.nan]]]], dtype=torch.float64), k=7, draws=2, chunk=3)
    assert draws == [3, 3, 1]


# ---------------------------------------------------------------------------------------- wake-sleep
def test_the_wake_phase_gives_a_reparameterizable_posterior_no_gradient():
    # the wake term log p(x, h) at h ~ q(h|x) trains p alone: h carries no gradient even where q could
    # reparameterize it (the linear Gaussian VAE's); out of training there is no sleep term, so q gets none
    model, marginal = make(perturb=0.3)
    x = data(marginal, 4)
    torch.manual_seed(0)
    WakeSleep()(model.eval(), x).loss.sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in model.encoder.parameters())
    assert model.decoder.net[0].bias.grad.abs().sum() > 0


def _tiny_top_down():
    """A deep top-down VAE (its terms from one pass, ``joint_pass``) of 2x2 binary images, and two of them."""
    settings = dict(posterior="residual", res_resolutions=[2], res_layers=[1], res_width=4, res_bottleneck=2)
    torch.manual_seed(0)
    model = get_family("hvae")(**settings, res_latent_channels=1).build((1, 2, 2), 2).double()
    return model, torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]], [[[1.0, 1.0], [0.0, 0.0]]]], dtype=torch.float64)


def test_draws_asked_without_reparameterization_carry_no_gradient_for_a_one_pass_model_too():
    # (wake-sleep asks for them; a deep top-down VAE's one pass would reparameterize them)
    model, x = _tiny_top_down()
    assert getattr(model, "joint_pass", None) is not None
    assert log_importance_weights(model, x, 3).z.requires_grad
    w = log_importance_weights(model, x, 3, reparameterized=False)
    assert not w.z.requires_grad and w.log_qz.requires_grad


def test_wake_sleep_reports_the_kl_and_elbo_of_its_draw():
    model, x = tiny_helmholtz().eval(), torch.tensor([[[[1.0, 0.0, 1.0]]], [[[0.0, 0.0, 1.0]]]])
    with torch.no_grad():
        torch.manual_seed(0)
        t = WakeSleep()(model, x)
        torch.manual_seed(0)
        q = model.posterior(x)
        h = q.sample((1,))[0]
        kl = q.log_prob(h) - model.prior().log_prob(h)
    torch.testing.assert_close(t.kl, kl)
    torch.testing.assert_close(t.elbo, t.log_px_z - t.kl)
    torch.testing.assert_close(t.iwae, t.elbo)


@pytest.mark.parametrize("objective", [WakeSleep(), ReweightedWakeSleep(3)], ids=["ws", "rws"])
def test_the_sleep_phase_adds_minus_log_q_of_the_dreams_in_training(objective):
    # -log q(h|x) of a binary h is positive: with the same wake draws the training loss is above the evaluation one
    model, x = tiny_helmholtz(), torch.tensor([[[[1.0, 0.0, 1.0]]]]).expand(64, 1, 1, 3)
    with torch.no_grad():
        torch.manual_seed(0)
        evaluated = objective(model.eval(), x).loss
        torch.manual_seed(0)
        trained = objective(model.train(), x).loss
    assert bool((trained > evaluated).all())


def test_reweighted_wake_sleep_without_sleep_trains_on_the_wake_terms_alone():
    model, x = tiny_helmholtz(), torch.tensor([[[[1.0, 0.0, 1.0]]]]).expand(8, 1, 1, 3)
    with torch.no_grad():
        torch.manual_seed(0)
        evaluated = ReweightedWakeSleep(3, sleep=False)(model.eval(), x).loss
        torch.manual_seed(0)
        trained = ReweightedWakeSleep(3, sleep=False)(model.train(), x).loss
    torch.testing.assert_close(trained, evaluated)


def test_the_q_wake_update_is_the_self_normalized_weighting_of_grad_log_q():
    # sum_i w~_i grad log q(h_i|x) (Bornschein & Bengio's wake update of q), from the same draws
    model, x = tiny_helmholtz().eval(), torch.tensor([[[[1.0, 0.0, 1.0]]], [[[0.0, 1.0, 1.0]]]])
    torch.manual_seed(5)
    ReweightedWakeSleep(k=4, sleep=False)(model, x).loss.sum().backward()
    ours = [p.grad.clone() for p in model.recognition.parameters()]
    model.zero_grad()
    torch.manual_seed(5)
    q = model.posterior(x)
    h = q.sample((4,))
    log_q = q.log_prob(h)
    log_w = model.likelihood(h).log_prob(x) + model.prior().log_prob(h) - log_q
    (-(torch.softmax(log_w.detach(), 0) * log_q).sum()).backward()
    assert all(g.abs().sum() > 0 for g in ours)
    for g, p in zip(ours, model.recognition.parameters()):
        torch.testing.assert_close(g, p.grad)


@torch.no_grad()
def test_the_sleep_term_scores_dreamed_pairs_of_binary_data():
    # (h, x) ~ p(h) p(x|h): x a draw of the binary pixels, not their probabilities
    model, x = tiny_helmholtz(), torch.tensor([[[[1.0, 0.0, 1.0]]]]).expand(16, 1, 1, 3)
    torch.manual_seed(0)
    evaluated = WakeSleep()(model.eval(), x).loss
    torch.manual_seed(0)
    trained = WakeSleep()(model.train(), x).loss
    torch.manual_seed(0)
    model.posterior(x).sample((1,))  # (the wake phase's draw)
    h = model.prior().sample((16,))
    dreams = model.likelihood(h).sample()
    assert set(dreams.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(trained - evaluated, -model.posterior(dreams).log_prob(h))


# ------------------------------------------------------------------------------ discrete latents
def test_the_gumbel_softmax_temperature_follows_the_schedule_after_the_first_step():
    # the temperature lives in a tensor made at the first call: a later update must reach it
    from test_discrete import X, tiny_model

    model = tiny_model().train()
    annealed = GumbelSoftmaxELBO(temperature=2.0, temperature_min=0.3, anneal_rate=1.0)
    annealed(model, X)
    annealed.update(100)
    torch.manual_seed(0)
    got = annealed(model, X.expand(8, 1, 1, 4)).loss
    torch.manual_seed(0)
    expected = GumbelSoftmaxELBO(temperature=0.3, temperature_min=0.3)(model, X.expand(8, 1, 1, 4)).loss
    torch.testing.assert_close(got, expected)


def test_the_straight_through_gradient_is_the_decoders_gradient_at_the_hard_draw_through_the_relaxed_one():
    # d loss / d logits = J_soft^T (-d log p(x|z) / dz at z = hard) + d KL / d logits, same noise
    from dgmkit.distributions.categorical import one_hot
    from dgmkit.objectives.discrete import _gumbel
    from test_discrete import X, tiny_model

    model, x, tau = tiny_model().train(), X.expand(4, 1, 1, 4), 0.7
    torch.manual_seed(0)
    GumbelSoftmaxELBO(tau, tau, straight_through=True)(model, x).loss.sum().backward()
    ours = [p.grad.clone() for p in model.encoder.parameters()]
    model.zero_grad()
    torch.manual_seed(0)
    q = model.posterior(x)
    logits = q.base_dist.logits
    perturbed = logits + _gumbel(logits.shape, logits)
    hard = one_hot(perturbed.argmax(-1), logits.shape[-1], logits.dtype).requires_grad_()
    (grad_hard,) = torch.autograd.grad(model.likelihood(hard).log_prob(x).sum(), hard)
    soft = torch.softmax(perturbed / tau, -1)
    (-(soft * grad_hard).sum() + kl_divergence(q, model.prior()).sum()).backward()
    for g, p in zip(ours, model.encoder.parameters()):
        torch.testing.assert_close(g, p.grad)


def test_the_reinforce_gradients_of_each_part_from_the_same_draw():
    # encoder: -(f - b) grad log q(z|x) + grad KL; decoder: -grad f; baseline: grad (f - b)^2, f = log p(x|z)
    from test_discrete import X, tiny_model

    model, x = tiny_model().train(), X.expand(6, 1, 1, 4)
    torch.manual_seed(0)
    ReinforceELBO()(model, x, beta=0.5).loss.sum().backward()
    ours = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    torch.manual_seed(0)
    q = model.posterior(x)
    z = q.sample()
    f = model.likelihood(z).log_prob(x)
    b = model.baseline_value(x)
    surrogate = -(f.detach() - b.detach()) * q.log_prob(z) + 0.5 * kl_divergence(q, model.prior()) - f
    (surrogate + (f.detach() - b).square()).sum().backward()
    assert set(ours) == {name for name, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        assert p.grad.abs().sum() > 0, name
        torch.testing.assert_close(ours[name], p.grad, msg=name)


@torch.no_grad()
def test_the_gumbel_softmax_loss_out_of_training_is_minus_the_discrete_elbo():
    from test_discrete import X, tiny_model

    t = GumbelSoftmaxELBO()(tiny_model().eval(), X.expand(4, 1, 1, 4))
    assert bool((t.kl > 0.1).all())
    torch.testing.assert_close(t.loss, -(t.log_px_z - t.kl))
    torch.testing.assert_close(t.elbo, t.log_px_z - t.kl)


# ----------------------------------------------------------------- M2, beta-TCVAE, the hierarchical ELBO
@torch.no_grad()
def test_the_classification_term_of_a_labelled_row_carries_its_groups_weight():
    # a labelled row stands for (N_l / N) (B / B_l) of the batch, its classification term alpha log q(y|x) too:
    # then the batch mean's classification part estimates a E_l[log q(y|x)], the paper's alpha / N of it
    from test_semisupervised import _binary, _tiny_m2

    model, x, y = _tiny_m2().double(), _binary(6).double(), torch.tensor([0, 2, -1, -1, -1, -1])
    objective = M2Objective(alpha_fraction=0.1)
    objective.setup(1000)
    objective.setup_labels(10, added=2)
    torch.manual_seed(0)
    t = objective(model, x, y=y)
    torch.manual_seed(0)
    e = model.enumerate(x)
    at = y.clamp(min=0)[:, None]
    labelled = e.bound.gather(1, at).squeeze(1) + 0.1 * 1000 / 10 * e.log_qy.gather(1, at).squeeze(1)
    torch.testing.assert_close(
        t.loss, torch.where(y >= 0, -(10 / 1000) * (6 / 2) * labelled, -(990 / 1000) * (6 / 4) * e.unlabelled())
    )


def test_the_beta_tcvae_objective_is_at_full_weight_whatever_the_kl_weight():
    model, marginal = make(perturb=0.3)
    x = data(marginal, 8)
    torch.manual_seed(0)
    t = BetaTCVAE(tc_weight=6.0)(model, x, beta=0.5)
    penalty = t.mi + 6.0 * t.tc + t.dim_kl
    torch.testing.assert_close(t.objective, t.log_px_z - penalty)
    torch.testing.assert_close(t.loss, -(t.log_px_z - 0.5 * penalty))


def test_stratified_weights_refuse_a_batch_larger_than_the_data_set():
    assert stratified_log_weights(4, 4).exp().sum(1).tolist() == pytest.approx([1.0] * 4)
    with pytest.raises(ValueError, match="1 <= batch <= dataset size, got 5 and 4"):
        stratified_log_weights(5, 4)


def test_the_hierarchical_elbo_weights_the_kl_by_beta_in_training():
    model, x = _tiny_top_down()
    torch.manual_seed(1)
    t = HierarchicalELBO()(model, x, beta=0.25)
    assert bool((t.kl > 0.01).all())
    torch.testing.assert_close(t.loss, -(t.log_px_z - 0.25 * t.kl))
    torch.testing.assert_close(t.elbo, t.log_px_z - t.kl)


# --------------------------------------------------------------------------------------------- VQ-VAE
def test_the_vq_loss_charges_both_codebook_terms_and_usage_is_the_share_of_codes_the_batch_uses():
    settings = dict(codes=16, code_dim=3, vq_width=8, downsample=1, res_blocks=1, codebook_update="gradient")
    model = build_model(RunConfig.of(model="vqvae", dataset="digits-4x4", **settings), (1, 4, 4), 2).train()
    torch.manual_seed(0)
    with torch.no_grad():
        model.quantizer.embedding.copy_(torch.randn(16, 3))
    x = (torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.5).float()  # 8 code positions
    t = VQObjective()(model, x)
    assert bool((t.commitment > 0).all() and (t.codebook_loss > 0).all())
    torch.testing.assert_close(t.loss, -t.recon + t.commitment + t.codebook_loss)
    with torch.no_grad():
        used = len(model.codes(x).unique())
    assert 0 < used < 16
    torch.testing.assert_close(t.usage, torch.full((2,), used / 16))


# ------------------------------------------------------------------------------------------------ WAE
@torch.no_grad()
def test_the_wae_penalty_of_two_codes_is_the_mmd_under_the_model_s_kernel():
    # C_s = 2 M prior_variance s: a prior variance of 4 puts C_1 at 2 * 3 * 4 = 24 for 3 latent dimensions
    from dgmkit.distributions.mmd import imq_kernel
    from dgmkit.models import WassersteinAutoencoder

    cfg = RunConfig.of(model="wae", dataset="digits", hidden=[8], latent_dim=3)
    built = build_model(cfg, (1, 8, 8), 2)
    kernel = imq_kernel(4.0, scales=(1.0,))
    model = WassersteinAutoencoder(built.encoder, built.decoder, built.top_prior, built.deterministic, kernel=kernel)
    x = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    objective = WAEObjective(mmd_weight=3.0)
    torch.manual_seed(3)
    t = objective(model, x)
    torch.manual_seed(3)
    z = model.posterior(x).rsample()
    zp = model.prior().rsample((2,))

    def k(a, b):
        return 24.0 / (24.0 + (a - b).square().sum())

    mmd = 2 * k(z[0], z[1]) / 2 + 2 * k(zp[0], zp[1]) / 2 - 2 * sum(k(a, b) for a in z for b in zp) / 4
    assert float(mmd) != 0.0
    torch.testing.assert_close(t.mmd, mmd.expand(2))
    torch.testing.assert_close(t.loss, -t.recon + 3.0 * mmd)


# ------------------------------------------------------------------------------ the autoencoder
def test_the_autoencoders_loss_is_minus_the_reconstruction_and_trains_the_encoder_through_the_code():
    torch.manual_seed(0)
    model = Autoencoder(
        nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), Decoder(nn.Linear(2, 4), BernoulliHead(), (1, 1, 4)), 2
    )
    x = torch.tensor([[[[1.0, 0.0, 1.0, 1.0]]], [[[0.0, 0.0, 1.0, 0.0]]]])
    t = Reconstruction()(model, x)
    logits = model.decoder.net(model.encoder_net(x))
    want = -nn.functional.binary_cross_entropy_with_logits(logits, x.view(2, 4), reduction="none").sum(-1)
    torch.testing.assert_close(t.recon, want)
    torch.testing.assert_close(t.loss, -want)
    t.loss.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder_net.parameters())


# ------------------------------------------------------------------------------------------- diffusion
@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_a_learned_schedules_shape_gets_the_variance_gradient_in_training_alone(training):
    # in continuous time the shape leaves the bound unchanged and is trained for its variance, in training;
    # a gradient taken out of training is the bound's own
    torch.manual_seed(2)
    net = UNet(1, 1, [4], blocks=1, attention=False, fourier=[])
    model = GaussianDiffusion(net, LearnedSchedule(hidden=8), (1, 2, 2), 16, 0).double().train(training)
    x = torch.randint(0, 16, (4, 1, 2, 2))
    shape = [model.schedule.w1, model.schedule.b1, model.schedule.w2, model.schedule.b2, model.schedule.w3]
    torch.manual_seed(3)
    got = torch.autograd.grad(DiffusionBound()(model, x).loss.mean(), shape)
    torch.manual_seed(3)
    terms = model.bound_terms(x, stratified_times(4), train=training)
    want = torch.autograd.grad((terms["prior"] + terms["recon"] + terms["diffusion"]).mean(), shape)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
