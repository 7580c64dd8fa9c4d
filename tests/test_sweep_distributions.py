"""What a mutation sweep over the distributions, priors and likelihood heads found unchecked."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, Normal

from dgmkit.conditional import GaussianEncoder, GaussianHead
from dgmkit.conditional.heads import MixedTableHead
from dgmkit.distributions import (
    BernoulliPixels,
    CategoricalPixels,
    DiagonalNormal,
    DiscretizedLogisticMixture,
    diagonal_normal,
    observed_log_prob,
)
from dgmkit.distributions.flow import FlowDistribution
from dgmkit.distributions.mmd import IMQ_SCALES, imq_kernel, mmd2_unbiased
from dgmkit.distributions.normal import closed_form_kl
from dgmkit.distributions.pixels import element_log_probs
from dgmkit.distributions.sampling import inverse_cdf, rsample_and_log_prob
from dgmkit.distributions.table import MixedColumns, TableColumns
from dgmkit.priors import FlowPrior, MixtureOfGaussiansPrior, StandardNormalPrior, VampPrior
from dgmkit.priors.conditional import GaussianLayerPrior


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- the discretized logistic mixture ----


def test_logistic_mixture_gradients_match_finite_differences():
    """d log P(k) / d(weights, locations, log-scales) at the first, an interior and the last level."""
    w, loc = torch.randn(3, 2, generator=_g(0)), torch.randn(3, 2, generator=_g(1)) * 0.5
    log_s = torch.rand(3, 2, generator=_g(2)) - 2.5  # above the clamp at -7
    k = torch.tensor([0, 4, 7])

    def f(w, loc, log_s):
        return DiscretizedLogisticMixture(w, loc, log_s, num_levels=8, event_dims=1).log_prob(k)

    leaves = [t.double().requires_grad_() for t in (w, loc, log_s)]
    assert torch.autograd.gradcheck(f, leaves)


def test_logistic_mixture_samples_pick_among_three_components_by_their_weights():
    """Three narrow components, one on each of 3 levels: the level frequencies are the softmax of
    the weights (with two components a reversed Gumbel draw gives the same frequencies; with three not)."""
    d = DiscretizedLogisticMixture(
        torch.tensor([[0.0, 1.0, 2.5]]), torch.tensor([[-1.0, 0.0, 1.0]]), torch.full((1, 3), -5.0), 3, event_dims=1
    )
    p = d.log_prob(torch.arange(3).view(3, 1)).exp()
    assert torch.allclose(p, F.softmax(torch.tensor([0.0, 1.0, 2.5]), -1), atol=1e-3)
    torch.manual_seed(0)
    n = 40_000
    freq = torch.bincount(d.sample((n,)).reshape(-1), minlength=3).double() / n
    se = (p.double() * (1 - p.double()) / n).sqrt()
    assert ((freq - p.double()).abs() <= 5 * se).all(), (freq, p)


def test_logistic_mixtures_first_level_keeps_a_finite_gradient_with_the_mixture_far_above():
    """Level 0 is the mass below its upper edge; the unused interior branch must not leak NaN
    into the gradient where its two edges round to the same logit (float32, location 1e6)."""
    loc, log_s, w = (torch.full((1, 1), v, requires_grad=True) for v in (1e6, 0.0, 0.0))
    lp = DiscretizedLogisticMixture(w, loc, log_s, num_levels=256, event_dims=0).log_prob(torch.tensor([0]))
    lp.sum().backward()
    assert torch.isfinite(lp).all() and torch.isfinite(loc.grad).all() and torch.isfinite(log_s.grad).all()
    assert loc.grad.item() == pytest.approx(-1.0)  # d/dloc logsigmoid((x + h - loc) / s) -> -1


def test_level_pixels_support_is_the_levels_and_no_more():
    for d in (
        CategoricalPixels(torch.zeros(1, 5), event_dims=1),
        DiscretizedLogisticMixture(*torch.zeros(3, 1, 1, 2), num_levels=5, event_dims=1),
    ):
        assert d.support.check(torch.tensor([0, 4, 5, -1])).tolist() == [True, True, False, False]


# ---- tables ----


def test_table_columns_refuse_nan_as_a_number_of_a_numeric_column():
    check = TableColumns(torch.tensor([0, 3])).check
    assert check(torch.tensor([[math.nan, 1.0], [0.5, math.nan]])).tolist() == [[False, True], [True, False]]


def _mixed_columns():
    head = MixedTableHead([0, 3], min_scale=0.01)
    params = torch.zeros(2, 1, head.params_per_pixel, 1, 2, dtype=torch.float64)
    params[:, 0, 0, 0, 0] = torch.tensor([2.0, -1.0])  # the numeric column's means
    params[:, 0, 1, 0, 0] = torch.tensor([0.0, -1.0])  # its raw scales
    params[:, 0, :, 0, 1] = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]])  # the categorical column's logits
    return head, params, head(params)


def test_mixed_table_head_reads_each_column_s_parameters_from_its_own_channels():
    _, params, px = _mixed_columns()
    x = torch.tensor([[[[2.3, 2.0]]], [[[-0.5, 1.0]]]], dtype=torch.float64)
    scale = F.softplus(params[:, 0, 1, 0, 0]) + 0.01
    gauss = Normal(params[:, 0, 0, 0, 0], scale).log_prob(x[:, 0, 0, 0])
    cat = F.log_softmax(params[:, 0, :, 0, 1], -1)[[0, 1], [2, 1]]
    torch.testing.assert_close(px.log_prob(x), gauss + cat)
    # the mean: a numeric column's location, a categorical column's most probable category
    assert px.mean[:, 0, 0].tolist() == [[2.0, 2.0], [-1.0, 0.0]]


def test_mixed_table_samples_follow_each_column_s_law():
    _, params, px = _mixed_columns()
    torch.manual_seed(0)
    n = 20_000
    s = px.sample((n,))[:, :, 0, 0]  # (n, 2, D)
    scale = F.softplus(params[:, 0, 1, 0, 0]) + 0.01
    assert ((s[..., 0].mean(0) - params[:, 0, 0, 0, 0]).abs() <= 5 * scale / math.sqrt(n)).all()
    assert torch.allclose(s[..., 0].std(0), scale, rtol=0.03)
    freq = torch.stack([(s[..., 1] == k).double().mean(0) for k in range(3)], -1)
    assert (freq - F.softmax(params[:, 0, :, 0, 1], -1)).abs().max() < 0.015


def test_the_mixed_likelihood_of_a_row_with_a_missing_category_is_that_of_its_other_entries():
    _, _, px = _mixed_columns()
    x = torch.tensor([[[[2.3, 2.0]]], [[[-0.5, 1.0]]]], dtype=torch.float64)
    holed = x.clone()
    holed[1, 0, 0, 1] = math.nan
    per = element_log_probs(px, x)[:, 0, 0]
    torch.testing.assert_close(observed_log_prob(px, holed), torch.stack([per[0].sum(), per[1, 0]]))


def test_the_mixed_likelihood_s_gaussian_columns_keep_float32_precision_at_tiny_scales():
    """The numeric columns' density divided (x - mu)^2 by sigma^2, which float32 holds as a
    subnormal below sigma ~ 1e-19 and as 0 below ~4e-23: 1 nat off at sigma = 1e-22 and NaN at
    x = mu at 1e-30 (a floor of min_scale > 0 allows both); (x - mu)/sigma has neither problem."""
    scale = torch.tensor([1e-3, 1e-22, 1e-30, 1e-30])
    x = scale * torch.tensor([2.0, 10.0, 0.0, 3.0])
    px = MixedColumns(torch.zeros(1, 1, 4), scale.view(1, 1, 4), torch.zeros(1, 1, 4, 1), torch.zeros(4, dtype=torch.long))
    ref = Normal(torch.zeros(4, dtype=torch.float64), scale.double()).log_prob(x.double())
    torch.testing.assert_close(element_log_probs(px, x.view(1, 1, 4))[0, 0].double(), ref, rtol=1e-6, atol=1e-5)


# ---- MMD, Gaussians, Bernoulli pixels ----


def test_the_imq_kernel_of_points_far_from_zero_stays_within_its_bounds_in_float32():
    """Each scale's C / (C + |x - y|^2) lies in (0, 1]: the squared distance rounded below 0
    (|x|^2 + |y|^2 - 2 x.y of nearby points far from 0) must be clamped."""
    x = 1000.0 + torch.randn(16, 4, generator=_g(0))
    k = imq_kernel()(x, x + 1e-3 * torch.randn(16, 4, generator=_g(1)))
    assert torch.isfinite(k).all() and (k > 0).all() and (k <= len(IMQ_SCALES) * (1 + 1e-6)).all()
    assert torch.isfinite(mmd2_unbiased(x, x.flip(0), imq_kernel()))


def test_closed_form_kl_of_events_of_different_shapes_is_none():
    q = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    p = Independent(Normal(torch.zeros(1), torch.ones(1)), 1)
    assert closed_form_kl(q, p) is None


def test_bernoulli_elements_sum_to_log_prob_and_match_torch_and_the_mode_is_the_likelier_value():
    logits = torch.tensor([[-3.0, -0.2, 0.4, 5.0]], dtype=torch.float64)
    d = BernoulliPixels(logits, event_dims=1)
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    per = d.log_prob_elements(x)
    torch.testing.assert_close(per, torch.distributions.Bernoulli(logits=logits).log_prob(x))
    torch.testing.assert_close(per.sum(-1), d.log_prob(x))
    assert d.mode.tolist() == [[0.0, 0.0, 1.0, 1.0]]
    single = BernoulliPixels(logits[0], event_dims=0)  # no event: one value per logit
    torch.testing.assert_close(single.log_prob(x[0]), per[0])


# ---- flows and the joint draw ----


def test_a_conditional_flow_scores_a_value_broadcast_over_its_batch_as_the_value_repeated():
    from dgmkit.transforms import iaf

    torch.manual_seed(1)
    bij = iaf(2, [8], 2, context_features=3).double()
    base = DiagonalNormal(torch.randn(2, 2, dtype=torch.float64), 0.5 + torch.rand(2, 2, dtype=torch.float64))
    d = FlowDistribution(base, bij, context=torch.randn(2, 3, dtype=torch.float64))
    x = torch.randn(5, 1, 2, dtype=torch.float64)
    torch.testing.assert_close(d.log_prob(x), d.log_prob(x.expand(5, 2, 2).clone()))


def test_rsample_and_log_prob_reparameterizes_exactly_when_asked():
    loc, scale = torch.zeros(3, requires_grad=True), torch.ones(3, requires_grad=True)
    for q in (diagonal_normal(loc, scale), Independent(Normal(loc, scale), 1)):
        z, log_q = rsample_and_log_prob(q, (4,), _g(0))
        assert z.requires_grad and log_q.requires_grad
        z, log_q = rsample_and_log_prob(q, (4,), _g(0), reparameterized=False)
        assert not z.requires_grad and log_q.requires_grad  # the score function's log q(z) keeps its gradient


def test_inverse_cdf_takes_the_pmf_up_to_its_normalizer():
    log_w = torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64).log().expand(5, 3)
    u = torch.tensor([0.1, 0.3, 0.49, 0.51, 0.99], dtype=torch.float64)
    assert inverse_cdf(log_w, u).tolist() == [0, 1, 1, 2, 2]


def test_inverse_cdf_never_chooses_a_value_of_no_mass():
    log_pmf = torch.tensor([0.0, 0.5, 0.0, 0.5], dtype=torch.float64).log().expand(3, 4)
    u = torch.tensor([0.0, 0.5, 1 - 2**-53], dtype=torch.float64)
    assert inverse_cdf(log_pmf, u).tolist() == [1, 3, 3]  # (u = 0 chose 0, of probability 0)


# ---- priors ----


def test_a_layer_prior_floors_its_scale_at_its_own_min_scale_and_needs_the_layer_above():
    net = nn.Linear(3, 4)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([0.5, -0.5, -1e4, 0.0]))
    prior = GaussianLayerPrior(net, 2, min_scale=0.1)
    p = prior(torch.zeros(1, 3))
    assert torch.allclose(p.mean, torch.tensor([[0.5, -0.5]]))
    assert torch.allclose(p.stddev, torch.tensor([[0.1, math.log(2) + 0.1]]))
    with pytest.raises(TypeError, match="latent variable above"):
        prior()


def test_a_flow_prior_draws_in_the_module_s_dtype():
    from dgmkit.transforms import maf

    torch.manual_seed(0)
    p = FlowPrior(2, maf(2, [8], 2)).double()()
    assert p.base.mean.dtype == torch.float64 and p.sample((3,)).dtype == torch.float64


def test_a_mixture_prior_s_components_start_apart():
    """Components that start equal get equal gradients and never separate: one Gaussian."""
    torch.manual_seed(0)
    means = MixtureOfGaussiansPrior(3, components=6).means.detach()
    gaps = torch.cdist(means, means) + torch.eye(6) * 1e9
    assert gaps.min() > 0.05
    assert abs(means.std().item() - 1.0) < 0.5  # drawn N(0, I)


def _vamp():
    torch.manual_seed(0)
    encoder = GaussianEncoder(nn.Sequential(nn.Flatten(), nn.Linear(4, 4)), 2)
    prior = VampPrior(2, (1, 2, 2), components=3, init=torch.rand(3, 1, 2, 2, generator=_g(3)))
    with torch.no_grad():
        prior.pseudo_inputs.copy_(torch.tensor([-0.5, 0.3, 1.7, 0.9]).repeat(3, 1).view(3, 1, 2, 2) * torch.rand(3, 1, 1, 1))
        prior.pseudo_inputs[0, 0, 0, 0] = 1.4  # outside [0, 1]: clipped
    return prior, encoder


def test_the_vampprior_is_the_average_of_the_encoders_posteriors_at_the_clipped_pseudo_inputs_with_its_gradients():
    prior, encoder = _vamp()
    z = torch.randn(6, 2, generator=_g(4))
    got = prior(encoder).log_prob(z)
    q = encoder(prior.pseudo_inputs.clamp(0, 1))  # batch (K,)
    want = torch.logsumexp(q.log_prob(z[:, None, :]), -1) - math.log(3)
    torch.testing.assert_close(got, want)
    params = [*encoder.parameters(), prior.pseudo_inputs]
    for a, b in zip(torch.autograd.grad(got.sum(), params), torch.autograd.grad(want.sum(), params), strict=True):
        torch.testing.assert_close(a, b)


def test_vampprior_random_pseudo_inputs_have_the_asked_mean_and_spread():
    torch.manual_seed(0)
    u = VampPrior(2, (1, 10, 10), components=50, mean=0.3, std=0.05).pseudo_inputs.detach()
    assert abs(u.mean().item() - 0.3) < 0.005 and abs(u.std().item() - 0.05) < 0.005


def test_a_prior_s_latent_dim_must_be_an_integer():
    with pytest.raises(TypeError, match="latent_dim must be an integer"):
        StandardNormalPrior(2.5)
    assert StandardNormalPrior(np.int64(3)).latent_dim == 3


# ---- Gaussian heads ----


def test_the_gaussian_head_s_scales_are_softplus_plus_the_floor_and_the_learned_one_starts_at_scale():
    params = torch.randn(2, 1, 2, 2, 2, generator=_g(5))
    params[0, 0, 1, 0, 0] = -1e4
    d = GaussianHead("predicted", min_scale=0.01)(params)
    assert torch.equal(d.base_dist.loc, params[:, :, 0])
    torch.testing.assert_close(d.base_dist.scale, F.softplus(params[:, :, 1]) + 0.01)
    assert d.base_dist.scale[0, 0, 0, 0].item() == pytest.approx(0.01)
    learned = GaussianHead("learned", scale=0.2, min_scale=0.01)
    assert torch.allclose(learned(params[:, :, :1]).base_dist.scale, torch.tensor(0.2))
    with torch.no_grad():
        learned.raw_scale.fill_(-1e4)
    assert torch.allclose(learned(params[:, :, :1]).base_dist.scale, torch.tensor(0.01))


def test_logistic_mixtures_last_level_keeps_a_finite_gradient_with_the_mixture_far_below():
    """The mirror of the first level's case: the last level's unused interior branch is guarded too."""
    loc, log_s, w = (torch.full((1, 1), v, requires_grad=True) for v in (-1e6, 0.0, 0.0))
    lp = DiscretizedLogisticMixture(w, loc, log_s, num_levels=256, event_dims=0).log_prob(torch.tensor([255]))
    lp.sum().backward()
    assert torch.isfinite(lp).all() and torch.isfinite(loc.grad).all() and torch.isfinite(log_s.grad).all()
    assert loc.grad.item() == pytest.approx(1.0)


def test_a_conditional_flow_scores_an_unbatched_value_against_every_member_of_its_batch():
    from dgmkit.transforms import iaf

    torch.manual_seed(1)
    bij = iaf(2, [8], 2, context_features=3).double()
    base = DiagonalNormal(torch.randn(2, 2, dtype=torch.float64), 0.5 + torch.rand(2, 2, dtype=torch.float64))
    d = FlowDistribution(base, bij, context=torch.randn(2, 3, dtype=torch.float64))
    x = torch.randn(2, dtype=torch.float64)
    torch.testing.assert_close(d.log_prob(x), d.log_prob(x.expand(2, 2).clone()))
