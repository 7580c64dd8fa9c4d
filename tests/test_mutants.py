"""Targeted tests that pin user-visible formulas: LR schedules, the active-units threshold,
and gradient clipping in the trainer."""

import math

import pytest
import torch
from torch import nn

from dgmkit.conditional import BernoulliHead, Decoder, GaussianEncoder
from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.data import Split, load_dataset, make_transform
from dgmkit.evaluation import active_units, posterior_statistics
from dgmkit.models import VAE
from dgmkit.priors import StandardNormalPrior
from dgmkit.training import Trainer, lr_factor


@pytest.mark.parametrize("epochs", [1, 4, 10])
def test_cosine_lr_factor_is_half_one_plus_cos(epochs):
    for epoch in range(epochs + 1):
        expected = 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        assert lr_factor("cosine", epoch, epochs) == pytest.approx(expected, abs=1e-12)
    assert lr_factor("cosine", 0, epochs) == pytest.approx(1.0)
    assert lr_factor("cosine", epochs, epochs) == pytest.approx(0.0, abs=1e-12)


def test_exponential_lr_factor_is_gamma_to_the_epoch_with_default_gamma_0_99():
    for epoch in (0, 1, 2, 5, 50):
        assert lr_factor("exponential", epoch, 100) == pytest.approx(0.99**epoch, rel=1e-12)
        assert lr_factor("exponential", epoch, 100, gamma=0.5) == pytest.approx(0.5**epoch, rel=1e-12)
    assert lr_factor("constant", 7, 10) == 1.0


def _fixed_mean_vae(scales):
    """A VAE whose posterior mean in unit u is scales[u] * s(x) with s(x) = +-1 (half each),
    so the unbiased sample variance of the posterior means is exactly scales[u]^2 * n / (n - 1)."""
    m = len(scales)
    a = torch.tensor(scales, dtype=torch.float32)

    class Enc(nn.Module):
        def forward(self, x):
            s = x.flatten(1)[:, :1] * 2 - 1  # +-1 from the first pixel
            out = torch.zeros(x.shape[0], 2 * m)
            out[:, :m] = s * a
            out[:, m:] = math.log(math.expm1(1.0))  # unit scale
            return out

    return VAE(
        GaussianEncoder(Enc(), m, min_scale=0.0),
        Decoder(nn.Linear(m, 4), BernoulliHead(), (1, 2, 2)),
        StandardNormalPrior(m),
    )


def test_active_units_default_threshold_is_0_01():
    n = 200
    x = torch.zeros(n, 1, 2, 2)
    x[: n // 2, 0, 0, 0] = 1.0
    # posterior-mean variances 0.0 (collapsed), ~0.0081 and ~0.0121 (just below / just above
    # the default 0.01), ~0.040 and ~0.25: three active at 0.01, one at 0.1
    scales = [0.0, 0.09, 0.11, 0.2, 0.5]
    model = _fixed_mean_vae(scales)
    stats = posterior_statistics(model, x)
    var = torch.tensor(stats["posterior_mean_variance"])
    expected = torch.tensor(scales) ** 2 * n / (n - 1)
    torch.testing.assert_close(var, expected, atol=1e-6, rtol=1e-5)
    assert stats["active_units"] == 3  # 0.0121, 0.04, 0.25 exceed 0.01
    assert active_units(model, x) == 3
    assert active_units(model, x, threshold=0.1) == 1
    assert posterior_statistics(model, x, threshold=0.001)["active_units"] == 4


def test_trainer_clips_the_gradient_norm_seen_by_the_optimizer():
    clip = 0.5
    digits = load_dataset("digits")
    cfg = RunConfig.of(dataset="digits", hidden=[16], latent_dim=2, batch_size=256, epochs=1, seed=0, device="cpu")
    torch.manual_seed(0)
    model = build_model(cfg, digits.event_shape, digits.num_levels)
    base = build_objective(cfg)

    class Huge(type(base)):  # a loss scaled so that every raw gradient norm is far above ``clip``
        def __call__(self, model, x, beta=1.0):
            terms = base(model, x, beta)
            return terms._replace(loss=terms.loss * 1e4)

    trainer = Trainer(
        model,
        Huge(),
        Split(digits.train.x[:512]),  # two steps of 256 suffice
        make_transform("bernoulli", digits),
        epochs=1,
        batch_size=256,
        grad_clip=clip,
        device="cpu",
        seed=0,
        progress=False,
    )
    norms = []

    def record(opt, args, kwargs):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

    trainer.optimizer.register_step_pre_hook(record)
    trainer.fit()
    assert norms, "the optimizer never stepped"
    assert max(norms) <= clip * (1 + 1e-4)
    assert min(norms) == pytest.approx(clip, rel=1e-3)  # the huge raw gradients were clipped to exactly c


# ------------------------------------------------- formulas the suite did not pin (issue 32)
def test_the_logistic_mixtures_mean_is_the_mean_of_its_levels():
    """E[k] by enumeration of P(k) over the levels (the mean of the centres is not: the mass is
    cut at both ends)."""
    from dgmkit.distributions import DiscretizedLogisticMixture

    g = torch.Generator().manual_seed(0)
    for levels in (2, 5, 256):
        w, loc = (
            torch.randn(3, 1, 2, 2, 4, generator=g, dtype=torch.float64),
            torch.randn(3, 1, 2, 2, 4, generator=g, dtype=torch.float64),
        )
        log_s = torch.randn(3, 1, 2, 2, 4, generator=g, dtype=torch.float64) - 1
        d = DiscretizedLogisticMixture(w, loc, log_s, num_levels=levels, event_dims=3)
        k = torch.arange(levels, dtype=torch.float64).view(-1, 1, 1, 1, 1)
        p = d.log_prob_elements(k.long().expand(levels, 3, 1, 2, 2)).exp()
        assert torch.allclose(p.sum(0), torch.ones(3, 1, 2, 2, dtype=torch.float64))
        torch.testing.assert_close(d.mean, (k * p).sum(0), rtol=1e-10, atol=1e-10)


def test_the_categorical_mode_is_the_most_probable_level():
    from dgmkit.distributions import CategoricalPixels

    logits = torch.tensor([[[[[0.1, 2.0, -1.0, 1.9]]]], [[[[3.0, -2.0, 0.0, 2.9]]]]])  # (2, 1, 1, 1, 4)
    d = CategoricalPixels(logits, event_dims=3)
    assert d.mode.flatten().tolist() == [1, 0]


def test_a_flow_posteriors_location_is_the_image_of_its_base_mean():
    """location(q) = T^{-1}(E[u]): the bijection maps it back onto the base mean (not the mean
    of draws, not the base mean itself)."""
    from dgmkit.distributions import DiagonalNormal, FlowDistribution, location
    from dgmkit.transforms import iaf

    torch.manual_seed(1)
    bij = iaf(2, [8], 2, context_features=3).double()
    for p in bij.parameters():
        p.data += 0.3 * torch.randn_like(p)
    loc, scale = torch.randn(4, 2, dtype=torch.float64), torch.rand(4, 2, dtype=torch.float64) + 0.5
    context = torch.randn(4, 3, dtype=torch.float64)
    q = FlowDistribution(DiagonalNormal(loc, scale), bij, context=context)
    x = location(q)
    u, _ = bij(x, context)
    torch.testing.assert_close(u, loc, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(x, loc, atol=1e-3)


def test_the_vdm_prior_kl_is_kl_of_q_z1_against_the_standard_normal():
    """KL(q(z_1|x) || N(0, I)) with q(z_1|x) = N(alpha_1 x, sigma_1^2), alpha_1^2 = sigmoid(-gamma_1),
    sigma_1^2 = sigmoid(gamma_1), against torch's closed form, to float64 rounding (a sign error
    of log sigma^2 moves it by about 5 nats on MNIST, under the loose tolerance of other tests)."""
    from torch.distributions import Normal, kl_divergence

    from dgmkit.models.diffusion import GaussianDiffusion

    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    for gamma_1 in (-2.0, 1.5, 6.0):
        g = torch.tensor(gamma_1, dtype=torch.float64)
        got = GaussianDiffusion._prior_kl(None, x, g)
        q = Normal(torch.sigmoid(-g).sqrt() * x, torch.sigmoid(g).sqrt())
        want = kl_divergence(q, Normal(torch.zeros_like(x), torch.ones_like(x))).flatten(1).sum(1)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_eval_bits_per_dim_of_the_nll_and_of_the_elbo():
    """bpd = NLL / (D ln 2) and the ELBO's bpd = -ELBO / (D ln 2): the bound's is the larger."""
    from dgmkit.evaluation import evaluate

    data = load_dataset("digits-4x4")
    cfg = RunConfig.of(dataset="digits-4x4", hidden=[16], latent_dim=2, epochs=2, batch_size=64)
    torch.manual_seed(0)
    model = build_model(cfg, data.event_shape, data.num_levels)
    t = make_transform("bernoulli", data)
    Trainer(model, build_objective(cfg), data.train, t, epochs=2, batch_size=64, seed=0, progress=False).fit()
    r = evaluate(model, t(data.test.x), iw_samples=50)
    d = 16 * math.log(2)
    assert r.bpd == pytest.approx(r.nll / d, rel=1e-12) and r.elbo_bpd == pytest.approx(-r.elbo / d, rel=1e-12)
    assert r.elbo_bpd > r.bpd > 0
