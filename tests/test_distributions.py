"""Pixel likelihoods and Gaussians: normalisation, agreement with torch, sampling, KL."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal

from dgmkit.conditional import GaussianHead, StudentTHead
from dgmkit.distributions import (
    BernoulliPixels,
    CategoricalPixels,
    DiscretizedLogisticMixture,
    LogitNormal,
    diagonal_normal,
    kl_per_dimension,
)
from dgmkit.objectives import kl_term
from dgmkit.testing import enumerate_total_probability, kl_monte_carlo, sample_frequencies


def test_bernoulli_matches_torch_and_normalises():
    logits = torch.randn(5, 1, 2, 2, dtype=torch.float64) * 4
    d = BernoulliPixels(logits, event_dims=3)
    x = (torch.rand(5, 1, 2, 2) < 0.5).double()
    ref = Independent(Bernoulli(logits=logits), 3).log_prob(x)
    assert torch.allclose(d.log_prob(x), ref, atol=1e-12)
    total = enumerate_total_probability(d, [2] * 4)
    assert torch.allclose(total, torch.ones(5, dtype=torch.float64), atol=1e-12)


def test_bernoulli_broadcasts_data_over_samples_and_stays_finite():
    logits = torch.tensor([[-200.0, 200.0, 0.0]]).expand(4, 1, 3)  # (S, B, D) with extreme logits
    d = BernoulliPixels(logits, event_dims=1)
    lp = d.log_prob(torch.tensor([[0.0, 1.0, 1.0]]))
    assert lp.shape == (4, 1)
    assert torch.allclose(lp, torch.full((4, 1), -math.log(2)), atol=1e-6)
    assert torch.isfinite(d.log_prob(torch.tensor([[1.0, 0.0, 1.0]]))).all()


def test_bernoulli_log_prob_keeps_float32_precision_at_large_logits():
    # x . l - sum softplus(l) was the difference of two sums of size sum |l|: 0.26 nats off here
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 784, generator=g) * 1e4
    x = (logits > 0).float()
    x[:, :5] = 1 - x[:, :5]  # a few pixels against their logit: log p of size 1e4, not 0
    ref = Independent(Bernoulli(logits=logits.double()), 1).log_prob(x.double())
    got = BernoulliPixels(logits, event_dims=1).log_prob(x)
    torch.testing.assert_close(got.double(), ref, rtol=1e-6, atol=1e-6)


def test_bernoulli_sample_mean():
    d = BernoulliPixels(torch.tensor([[-1.0, 0.0, 2.0]]), event_dims=1)
    freq = d.sample((200_000,)).mean(0)
    assert torch.allclose(freq, d.mean, atol=0.005)  # binomial stderr <= 0.0012


@pytest.mark.parametrize("levels", [2, 5, 17])
def test_categorical_normalises_and_samples_match(levels):
    logits = torch.randn(3, 1, 1, 2, levels, dtype=torch.float64)
    d = CategoricalPixels(logits, event_dims=3)
    total = enumerate_total_probability(d, [levels, levels])
    assert torch.allclose(total, torch.ones(3, dtype=torch.float64), atol=1e-12)
    one = CategoricalPixels(torch.randn(1, levels), event_dims=1)
    freq, probs = sample_frequencies(one, levels, n=200_000)
    assert (freq - probs).abs().max() < 0.006
    expected_mean = (probs * torch.arange(levels)).sum()
    assert torch.allclose(one.mean.double(), expected_mean, atol=1e-5)


@pytest.mark.parametrize("levels", [2, 16, 256])
def test_discretized_logistic_mixture_normalises_even_at_extremes(levels):
    torch.manual_seed(1)
    k = 3
    shape = (4, 1, k)  # batch of 4, event of one pixel
    logit_w = torch.randn(shape, dtype=torch.float64)
    loc = torch.tensor([-1.0, 0.0, 1.0, 0.3], dtype=torch.float64).view(4, 1, 1).expand(shape).clone()
    log_scale = torch.tensor([-7.0, -3.0, 0.0, 2.0], dtype=torch.float64).view(4, 1, 1).expand(shape).clone()
    d = DiscretizedLogisticMixture(logit_w, loc, log_scale, num_levels=levels, event_dims=1)
    total = enumerate_total_probability(d, [levels])
    assert torch.allclose(total, torch.ones(4, dtype=torch.float64), atol=1e-9)
    lp = d.log_prob(torch.arange(levels).view(levels, 1, 1).expand(levels, 4, 1))
    assert torch.isfinite(lp).all()


def test_discretized_logistic_samples_match_log_prob():
    levels = 8
    d = DiscretizedLogisticMixture(
        torch.tensor([[0.0, 1.0]]), torch.tensor([[-0.5, 0.4]]), torch.tensor([[-1.5, -2.0]]), levels, event_dims=1
    )
    freq, probs = sample_frequencies(d, levels, n=200_000)
    assert (freq - probs).abs().max() < 0.006


def test_bernoulli_log_prob_of_a_sure_pixel_is_finite_or_no_probability():
    """A logit of +-inf (a sure pixel, as the entropy takes it; float16 overflow makes one): the pixel
    that agrees has log p = 0, the other none (at most -finfo.max); both were NaN."""
    logits = torch.tensor([[math.inf, -math.inf, 2.0]])
    d = BernoulliPixels(logits, event_dims=1)
    agree, disagree = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 1.0])
    per = d.log_prob_elements(agree)
    assert per[0, 0] == 0 and per[0, 1] == 0 and torch.isclose(per[0, 2], -torch.log1p(torch.exp(torch.tensor(-2.0))))
    assert torch.isclose(d.log_prob(agree), per.sum(-1)).all()
    worst = d.log_prob_elements(disagree)[0, :2]
    assert (worst <= -torch.finfo(torch.float32).max).all() and not torch.isnan(d.log_prob(disagree)).any()


def _level_likelihoods(levels: int) -> list:
    logits = torch.randn(2, 3, levels, dtype=torch.float64)
    p = torch.randn(2, 3, 2, dtype=torch.float64)
    return [CategoricalPixels(logits, event_dims=1), DiscretizedLogisticMixture(p, p.tanh(), p - 2, levels, event_dims=1)]


@pytest.mark.parametrize("which", [0, 1])
def test_level_likelihoods_give_values_outside_their_levels_no_probability(which):
    """A level of L or -1, or a fraction, has probability 0 (log -inf), the in-range entries their
    own; NaN (a missing entry) gives NaN: a categorical raised a raw RuntimeError from its gather,
    the logistic mixture scored L as its top level and 0.5 as a level of its own."""
    torch.manual_seed(0)
    d = _level_likelihoods(5)[which]
    x = torch.tensor([[0, 2, 4], [1, 3, 0]])
    own = d.log_prob_elements(x)
    for bad, at in [(5.0, (0, 1)), (-1.0, (1, 2)), (0.5, (0, 0)), (17.0, (1, 0))]:
        y = x.double()
        y[at] = bad
        per = d.log_prob_elements(y)
        assert per[at] == -math.inf, (bad, per)
        keep = torch.ones_like(per, dtype=torch.bool)
        keep[at] = False
        assert torch.allclose(per[keep], own[keep])
        assert d.log_prob(y)[at[0]] == -math.inf
    y = x.double()
    y[0, 0] = math.nan
    per = d.log_prob_elements(y)
    assert torch.isnan(per[0, 0]) and torch.allclose(per[0, 1:], own[0, 1:])
    level = x.clone()
    level[1, 1] = 5
    assert d.log_prob_elements(level)[1, 1] == -math.inf


def test_gaussian_head_variance_floor_bounds_the_likelihood():
    head = GaussianHead("predicted", min_scale=0.01)
    params = torch.zeros(1, 1, 2, 2, 2)
    params[:, :, 1] = -1e4  # the decoder asks for a vanishing variance
    d = head(params)
    x = torch.zeros(1, 1, 2, 2)
    best = 4 * (-math.log(0.01) - 0.5 * math.log(2 * math.pi))
    assert torch.isfinite(d.log_prob(x)).all()
    assert d.log_prob(x).item() <= best + 1e-4


@pytest.mark.parametrize("variance", ["fixed", "learned", "predicted"])
def test_gaussian_head_log_prob_matches_normal(variance):
    head = GaussianHead(variance, scale=0.2)
    params = torch.randn(3, 1, head.params_per_pixel, 2, 2)
    d = head(params)
    x = torch.rand(3, 1, 2, 2)
    ref = Independent(Normal(d.base_dist.loc, d.base_dist.scale), 3).log_prob(x)
    assert torch.allclose(d.log_prob(x), ref)
    if variance == "fixed":
        assert torch.allclose(d.base_dist.scale, torch.tensor(0.2))


def test_student_t_head_matches_scipy_and_marginalizes_missing_entries():
    """log p(x) against SciPy's t density, the floors on scale and degrees of freedom, the
    mean as the location, and log p(x_o) of a row with a hole = the sum over its observed entries."""
    import scipy.stats

    from dgmkit.distributions import observed_log_prob

    head = StudentTHead(min_scale=1e-3, min_df=3.0)
    params = torch.randn(4, 1, 3, 1, 5, dtype=torch.float64)
    params[0, :, 1:] = -1e4  # the smallest scale and degrees of freedom the head allows
    d = head(params)
    x = torch.randn(4, 1, 1, 5, dtype=torch.float64)
    t = d.base_dist
    assert t.scale.min().item() >= 1e-3 and t.df.min().item() >= 3.0
    ref = scipy.stats.t.logpdf(x.numpy(), t.df.numpy(), t.loc.numpy(), t.scale.numpy()).reshape(4, -1).sum(1)
    assert np.allclose(d.log_prob(x).numpy(), ref)
    assert torch.equal(d.mean, params[:, :, 0])
    holed = x.clone()
    holed[1, 0, 0, 2] = float("nan")
    per = scipy.stats.t.logpdf(x.numpy(), t.df.numpy(), t.loc.numpy(), t.scale.numpy())[1].reshape(-1)
    assert observed_log_prob(d, holed)[1].item() == pytest.approx(per.sum() - per[2])
    with pytest.raises(ValueError, match=r"min_df \(above 1: a mean exists\) must be a finite number > 1, got 1.0$"):
        StudentTHead(min_df=1.0)
    with pytest.raises(ValueError, match="the Student-t head's min_scale must be a finite number > 0, got 0.0$"):
        StudentTHead(min_scale=0.0)


def test_closed_form_kl_matches_monte_carlo():
    torch.manual_seed(3)
    q = diagonal_normal(torch.randn(4, 6, dtype=torch.float64), torch.rand(4, 6, dtype=torch.float64) + 0.2)
    p = diagonal_normal(torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64))
    closed = torch.distributions.kl_divergence(q, p)
    z = q.sample((2,))
    assert torch.equal(kl_term(q, p, q.log_prob(z), p.log_prob(z)), closed)  # closed form where registered
    mc, se = kl_monte_carlo(q, p, n=200_000)
    assert ((closed - mc).abs() < 4 * se + 1e-3).all()
    per_dim = kl_per_dimension(q, p)
    assert torch.allclose(per_dim.sum(-1), closed)


def test_kl_term_falls_back_to_monte_carlo_with_the_same_samples():
    from torch.distributions import Categorical, MixtureSameFamily

    # torch registers no KL against a mixture: kl_term must estimate it with the given z
    q = diagonal_normal(torch.zeros(2, 3), torch.ones(2, 3))
    p = MixtureSameFamily(Categorical(logits=torch.zeros(2)), diagonal_normal(torch.randn(2, 3), torch.ones(2, 3)))
    z = q.sample((5,))
    expected = (q.log_prob(z) - p.log_prob(z)).mean(0)
    assert torch.allclose(kl_term(q, p, q.log_prob(z), p.log_prob(z)), expected)


def test_diagonal_normal_draws_and_their_log_density_are_those_of_the_gaussian():
    loc = torch.tensor([[0.5, -2.0, 1.0]], dtype=torch.float64)
    scale = torch.tensor([[0.3, 2.5, 1.7]], dtype=torch.float64)
    z, log_q = diagonal_normal(loc, scale).rsample_and_log_prob((20000,), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(log_q, Normal(loc, scale).log_prob(z).sum(-1))
    assert torch.allclose(z.mean(0), loc, atol=0.05) and torch.allclose(z.std(0), scale, rtol=0.03)


def test_a_logit_normal_s_draws_far_from_one_half_are_its_own_not_clipped_early():
    """The clip of v = logit(u) keeps u within 1e-6 of the ends (|v| <= 13.8): draws of N(8, 1)
    come back as sigmoid(v) with log q(u) the density at u, not piled up at a lower clip."""
    loc, scale = torch.full((1, 1, 2), 8.0, dtype=torch.float64), torch.ones(1, 1, 2, dtype=torch.float64)
    d = LogitNormal(loc, scale)
    u, log_q = d.rsample_and_log_prob((4000,), generator=torch.Generator().manual_seed(0))
    v = torch.log(u) - torch.log1p(-u)
    assert v.mean().item() == pytest.approx(8.0, abs=0.05) and v.std().item() == pytest.approx(1.0, abs=0.05)
    log_jacobian = (torch.log(u) + torch.log1p(-u)).flatten(-3).sum(-1)  # du/dv = u (1 - u)
    assert torch.allclose(log_q, Normal(loc, scale).log_prob(v).flatten(-3).sum(-1) - log_jacobian, atol=1e-6)
    assert torch.allclose(d.log_prob(u), log_q, atol=1e-6)
    # draws past the clip (sigmoid(40) rounds to 1): u is the clip's, 1 - 1e-6, and log q the density of the
    # draw v itself (an importance weight's), finite, not the density at the clip's u
    far = LogitNormal(torch.full((1, 1, 2), 40.0, dtype=torch.float64), scale)
    u, log_q = far.rsample_and_log_prob((100,), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(u, torch.full_like(u, 1 - 1e-6), rtol=0, atol=1e-12) and torch.isfinite(log_q).all()
    v = 40.0 + torch.randn((100, 1, 1, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    own = Normal(40.0, 1.0).log_prob(v) - torch.nn.functional.logsigmoid(v) - torch.nn.functional.logsigmoid(-v)
    assert torch.allclose(log_q, own.flatten(-3).sum(-1))


def test_diagonal_normal_kl_and_parameters_match_the_generic_rules():
    """The registered KL between two DiagonalNormals is the generic Independent-of-Normal rule's
    number; mean and stddev are the parameters themselves (not sqrt(scale^2)), and a scale of
    another shape still broadcasts."""
    from torch.distributions import Independent, Normal, kl_divergence

    from dgmkit.distributions import diagonal_normal

    g = torch.Generator().manual_seed(3)
    a, b, c, d = torch.randn(4, 6, 5, generator=g).unbind(0)
    q, p = diagonal_normal(a, c.exp()), diagonal_normal(b, 0.1 + d.exp())
    generic = kl_divergence(Independent(Normal(a, c.exp()), 1), Independent(Normal(b, 0.1 + d.exp()), 1))
    assert torch.allclose(kl_divergence(q, p), generic, rtol=1e-5, atol=1e-5)
    assert kl_divergence(q, q).abs().max() < 1e-5
    assert q.stddev is q.base_dist.scale and q.mean is q.base_dist.loc
    assert torch.allclose(q.variance, c.exp() ** 2)
    wide = diagonal_normal(torch.zeros(5), torch.ones(6, 5))
    assert wide.batch_shape == (6,) and wide.mean.shape == (6, 5)
    z = q.rsample()
    assert torch.allclose(q.log_prob(z), Independent(Normal(a, c.exp()), 1).log_prob(z))


def test_pixel_entropies_are_minus_the_expected_log_probability_by_enumeration():
    logits = torch.tensor([[-1.5, 0.3, 2.0]], dtype=torch.float64)
    d = BernoulliPixels(logits, event_dims=1)
    images = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=torch.float64)] * 3)  # all 8 images
    lp = d.log_prob(images[:, None, :])  # (8, 1)
    assert torch.allclose(d.entropy(), -(lp.exp() * lp).sum(0), atol=1e-12)
    c = CategoricalPixels(torch.randn(2, 2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), 1)
    images = torch.cartesian_prod(torch.arange(4), torch.arange(4))  # all 16 two-pixel images
    lp = c.log_prob(images[:, None, :])  # (16, 2)
    assert torch.allclose(c.entropy(), -(lp.exp() * lp).sum(0), atol=1e-12)


def test_a_categorical_level_of_logit_minus_inf_adds_nothing_to_the_entropy():
    """p = 0 adds 0 log 0 = 0 (torch's Categorical's convention); it was 0 * -inf, a NaN entropy,
    where log_prob and the samples were right."""
    logits = torch.tensor([[0.3, -math.inf, -1.0], [-math.inf, -math.inf, 2.0]], dtype=torch.float64, requires_grad=True)
    d = CategoricalPixels(logits, event_dims=1)
    finite = torch.tensor([[0.3, -1.0]], dtype=torch.float64)
    want = CategoricalPixels(finite, event_dims=1).entropy()  # the level left out; the second pixel is certain: H = 0
    torch.testing.assert_close(d.entropy(), want)
    d.entropy().backward()
    assert torch.isfinite(logits.grad).all()
    torch.testing.assert_close(d.entropy(), torch.distributions.Categorical(logits=logits).entropy().sum(-1))


def test_a_bernoulli_pixel_s_entropy_is_exact_at_large_and_infinite_logits():
    """A sure pixel (logit +-inf) adds 0 with a gradient of 0 (softplus(l) - sigmoid(l) l was
    inf - inf and 0 * inf: NaN); large logits keep their tiny entropy (no difference of two
    numbers near l), against the float64 enumeration -p log p - (1-p) log(1-p)."""
    import torch.nn.functional as F

    logits = torch.tensor([[math.inf, -math.inf, 0.0, 1.5]], dtype=torch.float64, requires_grad=True)
    d = BernoulliPixels(logits, event_dims=1)
    torch.testing.assert_close(d.entropy(), BernoulliPixels(logits.detach()[:, 2:], event_dims=1).entropy())
    d.entropy().backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[0, :2] == 0).all()
    big = torch.tensor([[20.0, -20.0, 60.0, -60.0, 1e30]])
    t = big.double()  # H = -p log p - q log q, with log p = -softplus(-t) and log q = -softplus(t) in float64
    exact = torch.sigmoid(t) * F.softplus(-t) + torch.sigmoid(-t) * F.softplus(t)
    got = BernoulliPixels(big.T, event_dims=1).entropy()  # float32, one pixel each
    torch.testing.assert_close(got.double(), exact[0], rtol=1e-5, atol=0)


def test_pixel_distributions_draw_no_samples_as_torch_s_do():
    """sample((0,)) is an empty tensor of the right shape (torch's distributions give one); the
    categorical pixels' raised multinomial's "cannot sample n_sample <= 0 samples"."""
    p = torch.zeros(2, 1, 2, 3, 4)
    for d in (CategoricalPixels(p, event_dims=3), DiscretizedLogisticMixture(p, p, p, 8, event_dims=3)):
        for shape in ((0,), (3, 0)):
            drawn = d.sample(shape)
            assert drawn.shape == (*shape, 2, 1, 2, 3) and drawn.dtype == torch.long


def test_categorical_samples_keep_each_pixel_s_own_distribution():
    probs = torch.tensor([[[0.8, 0.15, 0.05], [0.05, 0.15, 0.8]]])  # one image of two pixels, opposite levels likely
    d = CategoricalPixels(probs.log(), event_dims=1)
    torch.manual_seed(0)
    s = d.sample((20_000,))
    assert s.shape == (20_000, 1, 2)
    freq = torch.stack([(s == k).double().mean(0) for k in range(3)], -1)  # (1, 2, 3)
    assert (freq - probs.double()).abs().max() < 0.015  # binomial stderr <= 0.0029


def test_the_logistic_mixtures_log_scale_is_clamped_at_minus_7():
    """One component just above the edge between levels 1 and 2 of 3 (centres -1, 0, 1; edges
    at +-0.5) with log-scale -20, clamped at -7: level 2 has sigmoid(1e-3 e^7) of the mass, not ~1."""
    p = torch.zeros(1, 1, 1, dtype=torch.float64)
    d = DiscretizedLogisticMixture(p, p + 0.5 + 1e-3, p - 20.0, num_levels=3, event_dims=1)
    log_p2, log_p1 = d.log_prob(torch.tensor([[2], [1]])).tolist()
    assert log_p2 == pytest.approx(-math.log1p(math.exp(-1e-3 * math.exp(7))), abs=1e-9)
    assert math.exp(log_p2) + math.exp(log_p1) == pytest.approx(1.0, abs=1e-9)


def _softplus(t: float) -> float:
    return max(t, 0.0) + math.log1p(math.exp(-abs(t)))


def _logistic_bin_log_mass(k: int, levels: int, loc: float, log_scale: float) -> float:
    """log P(k) of one interior level in float64, the gap between its edges' logits taken exactly."""
    n, s = levels - 1, math.exp(max(log_scale, -7.0))
    a, b = ((2 * k + 1 - n) / n - loc) / s, ((2 * k - 1 - n) / n - loc) / s
    return -_softplus(-a) - _softplus(b) + math.log(-math.expm1(-(2 / n) / s))


@pytest.mark.parametrize(
    "levels, loc, log_scale", [(256, 0.3, 100.0), (256, -1e6, 0.0), (16, 0.0, 500.0), (65536, 0.9, -7.0)]
)
def test_the_logistic_mixtures_levels_stay_finite_in_float32_far_from_the_mixture_or_under_a_very_broad_one(
    levels, loc, log_scale
):
    # (log-scale 100 made the gap of a bin's logits e^-100 * 2/255, 0 in float32, and the edges of a bin 1e6 from the
    # location rounded to one float32: log 0 = -inf on every interior level, a loss of inf)
    shape = (levels, 1)
    d = DiscretizedLogisticMixture(torch.zeros(shape), torch.full(shape, loc), torch.full(shape, log_scale), levels, 0)
    lp = d.log_prob(torch.arange(levels)).double()
    assert torch.isfinite(lp).all()
    assert torch.logsumexp(lp, 0).item() == pytest.approx(0.0, abs=1e-5)
    k = levels // 2 + 1
    assert lp[k].item() == pytest.approx(_logistic_bin_log_mass(k, levels, loc, log_scale), rel=1e-6)


def test_the_logistic_mixtures_level_next_to_a_sharp_location_keeps_float32_s_precision():
    # (the centre 2k/255 - 1 rounded in float32 moved the edge at 0 by 6e-8: at the scale e^-7, 3.2e-5 nats off)
    d = DiscretizedLogisticMixture(torch.zeros(1, 1), torch.zeros(1, 1), torch.full((1, 1), -7.0), 256, 0)
    got = d.log_prob(torch.tensor([128])).item()
    assert got == pytest.approx(_logistic_bin_log_mass(128, 256, 0.0, -7.0), abs=1e-6)


def _seeded(draw, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return draw()


def test_the_unchecked_one_hot_categorical_and_student_t_are_torchs_without_the_checks():
    """Made without torch's checks of the distributions they hold (a read of the values in every
    training step); the same numbers as torch's, draw for draw."""
    import torch.nn.functional as F
    from torch.distributions import OneHotCategorical, StudentT, kl_divergence

    from dgmkit.distributions import one_hot, one_hot_categorical, student_t

    logits = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours, theirs = one_hot_categorical(logits), OneHotCategorical(logits=logits)
    drawn, expected = _seeded(lambda: ours.sample((2,)), 1), _seeded(lambda: theirs.sample((2,)), 1)
    assert torch.equal(drawn, expected) and drawn.dtype == expected.dtype == torch.float64
    assert torch.equal(ours.log_prob(expected), theirs.log_prob(expected))
    assert torch.equal(ours.entropy(), theirs.entropy())
    assert torch.equal(kl_divergence(ours, theirs), kl_divergence(theirs, theirs))
    index = torch.tensor([[0, 4], [2, 1]])
    assert torch.equal(one_hot(index, 5), F.one_hot(index, 5))
    assert torch.equal(one_hot(torch.tensor([5, -1]), 5), torch.zeros(2, 5, dtype=torch.long))  # (outside: zeros)
    df, loc = 3.0 + torch.rand(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    scale = 0.5 + torch.rand(6, dtype=torch.float64)
    ours_t, theirs_t = student_t(df, loc, scale), StudentT(df, loc, scale)
    drawn, expected = _seeded(lambda: ours_t.rsample((3,)), 2), _seeded(lambda: theirs_t.rsample((3,)), 2)
    assert torch.equal(drawn, expected)
    assert torch.allclose(ours_t.log_prob(expected), theirs_t.log_prob(expected), rtol=1e-13, atol=0)  # (a new formula)
    assert torch.equal(ours_t.mean, theirs_t.mean) and torch.equal(ours_t.variance, theirs_t.variance)


def _t_grid(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """df from 0.1 to 1e8 against x in [-10, 10], and SciPy's float64 log density and entropy at
    those values as the dtype holds them."""
    import scipy.stats

    df = torch.logspace(-1, 8, 37, dtype=torch.float64).to(dtype)[:, None]
    x = torch.linspace(-10, 10, 21, dtype=torch.float64).to(dtype)
    return (
        df,
        x,
        scipy.stats.t.logpdf(x.double().numpy(), df.double().numpy()),
        scipy.stats.t.entropy(df[:, 0].double().numpy()),
    )


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 2e-6), (torch.float64, 1e-10)])
def test_student_t_log_density_and_entropy_keep_their_precision_up_to_1e8_degrees_of_freedom(dtype, tolerance):
    """Torch's lgamma((df+1)/2) - lgamma(df/2) cancelled in float32 once df passed ~1e4: 0.005
    nats a dimension at df = 1e4 and 15 at 3e7 (1e-7 in float64); its entropy's digamma
    difference, 9 nats. Both within a few roundings of the float64 reference now, in nats
    relative to the log density's size (its own rounding at x = 10)."""
    from dgmkit.distributions import student_t

    df, x, ref, entropy = _t_grid(dtype)
    d = student_t(df, torch.zeros((), dtype=dtype), torch.ones((), dtype=dtype))
    error = np.abs(d.log_prob(x).double().numpy() - ref) / np.maximum(1.0, np.abs(ref))
    assert error.max() < tolerance
    assert np.abs(d.entropy()[:, 0].double().numpy() - entropy).max() < 5 * tolerance


def test_student_t_is_finite_at_a_tiny_scale_and_reads_nothing_back():
    """(x - mu)/sigma squared overflowed float32 at sigma = 1e-30: a log density of -inf where it
    is -216, and an inf gradient; torch's mean and variance index by df > 1 (a read of the values
    that a CUDA graph cannot hold): ours choose with torch.where, as its log density does."""
    import scipy.stats

    from dgmkit.distributions import student_t
    from op_replay import RecordedCapture

    scale = torch.tensor(1e-30, requires_grad=True)
    d = student_t(torch.tensor([4.0, 4.0, 1e8]), torch.zeros(3), scale)
    x = torch.tensor([1e-5, 1.0, 1e-5])
    ref = scipy.stats.t.logpdf(x.double().numpy(), d.df.double().numpy(), 0.0, scale.item())
    assert np.allclose(d.log_prob(x).detach().double().numpy(), ref, rtol=1e-6)
    d.log_prob(x).sum().backward()
    assert torch.isfinite(scale.grad)
    df = torch.tensor([0.5, 1.5, 3.0, 1e6])
    with RecordedCapture().strict():
        d = student_t(df, torch.ones(4), torch.full((4,), 2.0))
        parts = d.mean, d.variance, d.log_prob(torch.zeros(4)), d.entropy()
    assert torch.equal(parts[0].isnan(), df <= 1) and torch.equal(parts[1].isinf(), (df > 1) & (df <= 2))


def test_student_t_in_float16_is_finite_far_in_its_tails():
    """t^2 overflows float16 (largest 65504) from |t| ~ 256: the log density was -inf and its
    gradient 0 there (the switch to 2 log|t| came at |t| > 1e15, whose product with sigma is inf
    in float16, so never). Now within float16's rounding of the float64 value, gradient too."""
    import scipy.stats

    from dgmkit.distributions import student_t

    x64 = torch.tensor([0.5, 99.0, 101.0, 300.0, 1000.0, 3e4], dtype=torch.float64)
    x = x64.half().requires_grad_()
    d = student_t(torch.tensor(3.0).half(), torch.tensor(0.0).half(), torch.tensor(1.0).half())
    lp = d.log_prob(x)
    lp.sum().backward()
    ref = scipy.stats.t.logpdf(x64.numpy(), 3.0)
    assert np.allclose(lp.detach().double().numpy(), ref, rtol=2e-3)
    assert np.allclose(x.grad.double().numpy(), -4.0 * x64.numpy() / (3.0 + x64.numpy() ** 2), rtol=5e-3)


def test_event_dims_and_a_flow_s_temperature_are_refused_outside_their_range():
    """event_dims of -1 or beyond the tensor's dimensions was clipped by slicing into some other
    split of batch and event (a Bernoulli over (2, 4) with event_dims 5 had event shape (2, 4));
    a flow at temperature 0 or NaN drew every sample at the base's mean (or NaN)."""
    from torch.distributions import Independent, Normal

    import dgmkit.transforms as T
    from dgmkit.distributions import BernoulliPixels, Delta, DiscretizedLogisticMixture, FlowDistribution

    p = torch.zeros(2, 3, 1, 2, 2)
    for build, needle in (
        (lambda: BernoulliPixels(torch.zeros(2, 4), 5), "event_dims must be an integer in 0..2"),
        (lambda: Delta(torch.zeros(2, 4), -1), "event_dims must be an integer in 0..2"),
        (lambda: DiscretizedLogisticMixture(p, p, p, 256, -1), "event_dims must be an integer in 0..4"),
    ):
        with pytest.raises(ValueError, match=needle):
            build()
    base = Independent(Normal(torch.zeros(4), torch.ones(4)), 1)
    for t in (0.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            FlowDistribution(base, T.realnvp(4, [8]), temperature=t)
    assert BernoulliPixels(torch.zeros(2, 4), 2).event_shape == (2, 4) and Delta(torch.zeros(2, 4), 0).event_shape == ()


def test_delta_log_prob_keeps_the_values_dtype():
    from dgmkit.distributions import Delta

    d = Delta(torch.zeros(2, 3, dtype=torch.float64))
    lp = d.log_prob(torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64))
    assert lp.dtype == torch.float64  # (it was float32, torch.where's type of 0.0 and -inf)
    assert lp.tolist() == [0.0, -math.inf]


def test_diagonal_normal_expands():
    q = diagonal_normal(torch.randn(3, 2, dtype=torch.float64), torch.rand(3, 2, dtype=torch.float64) + 0.5)
    big = q.expand((4, 3))  # (it raised NotImplementedError, from Independent.expand)
    assert isinstance(big, type(q)) and big.batch_shape == (4, 3) and big.event_shape == (2,)
    z = torch.randn(4, 3, 2, dtype=torch.float64)
    torch.testing.assert_close(big.log_prob(z), q.log_prob(z))
    torch.testing.assert_close(kl_per_dimension(big, q), torch.zeros(4, 3, 2, dtype=torch.float64))


def test_one_hot_categorical_kl_is_finite_where_a_probability_only_underflows():
    from torch.distributions import OneHotCategorical, kl_divergence

    from dgmkit.distributions import one_hot_categorical

    p, q = torch.zeros(2, 3), torch.tensor([[0.0, -200.0, -1.0], [0.0, -torch.inf, 1.0]])
    got = kl_divergence(one_hot_categorical(p), one_hot_categorical(q))  # (exp(-200) is 0 in float32: it was inf)
    want = kl_divergence(OneHotCategorical(logits=p.double()), OneHotCategorical(logits=q.double()))
    assert torch.isfinite(got[0]) and torch.allclose(got[0].double(), want[0], rtol=1e-6)
    assert got[1] == torch.inf  # (a category of logit -inf, no mass, that p has)
    assert kl_divergence(one_hot_categorical(q), one_hot_categorical(p))[1] < torch.inf  # (one p lacks: a 0 term)
