"""What a mutation sweep of conditional/ (likelihood heads, encoders, the decoder, the PixelCNN
decoder) and evaluation/figures.py found unchecked: that each discrete head's pixel pmf (what
sampling and entropy coding use) is normalised, in float64, and is the log-probability its
distribution gives every level; which value a Bernoulli logit favours; the heads' refusals of a
bad variance, scale or floor, their floors, ``discrete`` and ``support``; the order in which
encoders and the decoder read a network's numbers (means before scales, channel then parameter
then row, on non-square colour images) and that they widen half precision; the PixelCNN
decoder's normalisation over every image, its input scale, that a draw inverts each pixel's own
conditional at its own uniform from the global stream and that R draws of B latents keep each
image with its latent; and the figures' pixels (layout, padding, rounding, enlargement, RGBA),
PCA, class colours, diagnosis bars and closing. Guards added: CategoricalEncoder took a network
of the wrong width as a batch of another size, CategoricalHead(0 or 1) and
LogisticMixtureHead(components=0) were built, MixedTableHead's floor was not checked."""

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Normal, StudentT, constraints

from dgmkit.conditional import (
    BernoulliHead,
    CategoricalEncoder,
    CategoricalHead,
    Decoder,
    GaussianEncoder,
    GaussianHead,
    IAFEncoder,
    LogisticMixtureHead,
    MixedTableHead,
    StudentTHead,
)
from dgmkit.conditional.pixelcnn import PixelCNNDecoder
from dgmkit.distributions import DiscretizedLogisticMixture
from dgmkit.distributions.table import TableColumns
from dgmkit.errors import DataError, EvaluationError
from dgmkit.evaluation import figures
from dgmkit.nn.scale import ClippedLogVariance


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_g(seed), dtype=torch.float64)


# ---- heads: discrete ones are distributions over their levels ----

DISCRETE = [
    pytest.param(BernoulliHead(), id="bernoulli"),
    pytest.param(CategoricalHead(7), id="categorical"),
    pytest.param(LogisticMixtureHead(256, 3), id="logistic-256"),
    pytest.param(LogisticMixtureHead(16, 2), id="logistic-16"),
]


@pytest.mark.parametrize("head", DISCRETE)
def test_a_discrete_heads_pixel_pmf_sums_to_one_and_is_its_log_prob_of_every_level(head):
    """pixel_log_pmf (what sampling and entropy coding use) over all L values: float64, sums to 1,
    and at value v equals the log-probability that the head's distribution (what training scores)
    gives v; checked on a non-square image, whose pixels a transpose would misplace."""
    c, h, w, p, L = 1, 2, 3, head.params_per_pixel, head.num_levels
    params = 2 * _randn(4, c, p, h, w)
    log_pmf = head.pixel_log_pmf(params.movedim(-3, -1))  # (4, C, H, W, L)
    assert log_pmf.dtype == torch.float64 and log_pmf.shape == (4, c, h, w, L)
    assert torch.allclose(log_pmf.exp().sum(-1), torch.ones(4, c, h, w, dtype=torch.float64), atol=1e-12)
    dist = head(params)
    assert dist.batch_shape == (4,) and dist.event_shape == (c, h, w)
    for v in range(L):
        x = torch.full((4, c, h, w), float(v), dtype=torch.float64)
        assert torch.allclose(dist.log_prob(x), log_pmf[..., v].sum((-3, -2, -1)), atol=1e-9), v
    assert head.pixel_log_pmf(params.float().movedim(-3, -1)).dtype == torch.float64


def test_the_bernoulli_head_gives_the_logit_to_the_value_one():
    logit = torch.tensor([[2.0]], dtype=torch.float64)
    assert torch.allclose(BernoulliHead().pixel_log_pmf(logit).exp(), torch.sigmoid(torch.tensor([[-2.0, 2.0]])).double())


def test_the_categorical_head_reads_level_l_from_channel_l():
    params = _randn(2, 1, 5, 2, 3)
    x = torch.randint(0, 5, (2, 1, 2, 3), generator=_g(1))
    ref = Categorical(logits=params.movedim(2, -1)).log_prob(x).sum((1, 2, 3))
    assert torch.allclose(CategoricalHead(5)(params).log_prob(x), ref)


def test_the_logistic_heads_parameters_are_logits_then_tanh_locations_then_log_scales():
    """(*, C, 3K, H, W): the K mixture logits, K locations (squashed by tanh into [-1, 1]) and K
    log-scales, over the head's own number of levels."""
    k, L = 2, 16
    params = _randn(3, 1, 3 * k, 2, 3)
    p = params.movedim(-3, -1)
    ref = DiscretizedLogisticMixture(p[..., :k], torch.tanh(p[..., k : 2 * k]), p[..., 2 * k :], L, event_dims=3)
    x = torch.randint(0, L, (3, 1, 2, 3), generator=_g(2))
    assert torch.allclose(LogisticMixtureHead(L, k)(params).log_prob(x), ref.log_prob(x))
    ref_pmf = torch.stack([ref.log_prob_elements(torch.full((3, 1, 2, 3), v)) for v in range(L)], -1)
    assert torch.allclose(LogisticMixtureHead(L, k).pixel_log_pmf(p), ref_pmf)


@pytest.mark.parametrize(
    "head, support",
    [
        (BernoulliHead(), (0, 1)),
        (CategoricalHead(5), (0, 4)),
        (LogisticMixtureHead(256, 2), (0, 255)),
        (GaussianHead(), None),
        (StudentTHead(), None),
    ],
)
def test_a_heads_support_is_its_levels_or_the_real_line_and_discrete_says_which(head, support):
    assert head.discrete == (support is not None) == (head.num_levels is not None)
    if support is None:
        assert head.support is constraints.real
        with pytest.raises(TypeError, match="defines a density"):
            head.pixel_log_pmf(torch.zeros(2, head.params_per_pixel))
    else:
        assert (head.support.lower_bound, head.support.upper_bound) == support
        assert head.num_levels == support[1] + 1
    if isinstance(head, CategoricalHead):
        assert head.params_per_pixel == head.num_levels


# ---- heads: densities ----


def test_a_fixed_gaussian_head_is_normal_with_its_scale():
    head = GaussianHead("fixed", scale=0.3)
    assert head.params_per_pixel == 1 and float(head.scale) == pytest.approx(0.3)
    params, x = _randn(2, 1, 1, 2, 3), _randn(2, 1, 2, 3, seed=1)
    ref = Normal(params[:, :, 0], 0.3).log_prob(x).sum((1, 2, 3))
    assert torch.allclose(head(params).log_prob(x), ref)


@pytest.mark.parametrize("scale, min_scale", [(0.1, 1e-2), (0.5, 0.2), (1e-3, 1e-4)])
def test_a_learned_gaussian_heads_first_scale_is_the_scale_asked_for(scale, min_scale):
    head = GaussianHead("learned", scale=scale, min_scale=min_scale)
    assert head.params_per_pixel == 1
    assert head(torch.zeros(1, 1, 1, 2, 2)).base_dist.scale.flatten()[0].item() == pytest.approx(scale, rel=1e-5)


def test_a_learned_gaussian_heads_scale_never_falls_below_its_floor():
    head = GaussianHead("learned", scale=0.1, min_scale=0.05)
    with torch.no_grad():
        head.raw_scale.fill_(-200.0)
    assert head(torch.zeros(1, 1, 1, 2, 2)).base_dist.scale.min().item() == pytest.approx(0.05)


def test_a_predicted_gaussian_head_reads_the_mean_then_a_softplus_scale_with_its_floor():
    head = GaussianHead("predicted", min_scale=0.02)
    assert head.params_per_pixel == 2
    params, x = _randn(3, 1, 2, 2, 3), _randn(3, 1, 2, 3, seed=1)
    params[0, 0, 1] = -300.0  # the floor
    d = head(params)
    ref = Normal(params[:, :, 0], F.softplus(params[:, :, 1]) + 0.02).log_prob(x).sum((1, 2, 3))
    assert d.batch_shape == (3,) and d.event_shape == (1, 2, 3)
    assert torch.allclose(d.log_prob(x), ref)
    assert d.base_dist.scale.min().item() == pytest.approx(0.02)


@pytest.mark.parametrize("head", [GaussianHead("predicted"), GaussianHead("learned"), StudentTHead()])
def test_half_precision_head_parameters_give_a_float32_distribution(head):
    params = torch.zeros(2, 1, head.params_per_pixel, 2, 2, dtype=torch.float16)
    assert head(params).mean.dtype == torch.float32


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: GaussianHead("per-pixel"), "variance must be fixed, learned or predicted"),
        (lambda: GaussianHead("fixed", scale=0.0), "scale must be a finite number > 0"),
        (lambda: GaussianHead(min_scale=0.0), "min_scale must be a finite number > 0"),
        (lambda: StudentTHead(min_scale=0.0), "min_scale must be a finite number > 0"),
        (lambda: StudentTHead(min_df=1.0), r"min_df \(above 1: a mean exists\) must be a finite number > 1"),
        (lambda: StudentTHead(min_df=0.5), "min_df"),
        (lambda: MixedTableHead([0, -1]), "levels: one per column"),
        (lambda: MixedTableHead([]), "levels: one per column"),
        (lambda: MixedTableHead([0, 2.5]), "levels: one per column"),
        (lambda: MixedTableHead([0, 3.0]), "levels: one per column"),
        (lambda: MixedTableHead([float("nan")]), "levels: one per column"),
    ],
)
def test_a_head_refuses_settings_that_leave_its_likelihood_unbounded_or_undefined(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_student_t_head_is_torchs_student_t_with_floored_scale_and_degrees_of_freedom():
    head = StudentTHead(min_scale=1e-2, min_df=2.5)
    params, x = _randn(3, 1, 3, 2, 3), _randn(3, 1, 2, 3, seed=1)
    params[0, 0, 1:] = -300.0  # both floors
    d = head(params)
    df, scale = F.softplus(params[:, :, 2]) + 2.5, F.softplus(params[:, :, 1]) + 1e-2
    ref = StudentT(df, params[:, :, 0], scale).log_prob(x).sum((1, 2, 3))
    assert d.batch_shape == (3,) and d.event_shape == (1, 2, 3)
    assert torch.allclose(d.log_prob(x), ref)
    assert d.base_dist.df.min().item() == pytest.approx(2.5) and d.base_dist.scale.min().item() == pytest.approx(1e-2)
    assert torch.equal(d.mean, params[:, :, 0])


def test_the_mixed_table_head_is_gaussian_and_categorical_by_column_with_a_floored_scale():
    levels = [0, 3, 0, 2]
    head = MixedTableHead(levels, min_scale=0.05)
    assert head.params_per_pixel == 3 and isinstance(head.support, TableColumns)
    assert not head.discrete and head.num_levels is None  # a density in its numeric columns
    params = _randn(2, 1, 3, 1, 4)
    params[0, 0, 1, 0, 2] = -300.0  # the floor
    x = torch.tensor([[[[0.3, 2.0, -1.0, 1.0]]], [[[1.2, 0.0, 0.5, 0.0]]]], dtype=torch.float64)
    loc, scale = params[:, 0, 0, 0], F.softplus(params[:, 0, 1, 0]) + 0.05
    ref = torch.zeros(2, dtype=torch.float64)
    for d, n in enumerate(levels):
        if n == 0:
            ref += Normal(loc[:, d], scale[:, d]).log_prob(x[:, 0, 0, d])
        else:
            ref += Categorical(logits=params[:, 0, :n, 0, d]).log_prob(x[:, 0, 0, d].long())
    assert torch.allclose(head(params).log_prob(x), ref)
    assert MixedTableHead([0, 0]).params_per_pixel == 2  # a mean and a scale, even with no categories
    with torch.no_grad():
        assert head(params).scale.min().item() == pytest.approx(0.05)


def test_gaussian_heads_and_a_layer_prior_keep_float32_precision_at_a_floor_below_1e_19():
    """torch's Normal divided (x - mu)^2 by sigma^2, which float32 holds as a subnormal below
    sigma ~ 1e-19 and as 0 below ~4e-23: a fixed scale or a floor of 1e-22 (both legal) gave
    1 nat of error at x - mu = 10 sigma, and 1e-30 gave NaN; the same for a layer's prior and
    for the missing-data path (element_log_probs)."""
    from dgmkit.distributions.pixels import element_log_probs
    from dgmkit.priors import GaussianLayerPrior

    for s in (1e-22, 1e-30):
        x = torch.tensor([10 * s, 0.0, -3 * s]).view(1, 1, 3)
        ref = Normal(torch.zeros(3, dtype=torch.float64), torch.tensor(s).double()).log_prob(x.double().flatten())
        fixed = GaussianHead("fixed", scale=s)(torch.zeros(1, 1, 1, 1, 3))
        params = torch.tensor([0.0, -300.0]).view(1, 1, 2, 1, 1).expand(1, 1, 2, 1, 3)  # the floor
        floored = GaussianHead("predicted", min_scale=s)(params)
        for px in (fixed, floored):
            torch.testing.assert_close(element_log_probs(px, x)[0, 0, 0].double(), ref, rtol=1e-6, atol=1e-5)
            torch.testing.assert_close(px.log_prob(x).double(), ref.sum().view(1), rtol=1e-6, atol=1e-5)
        net = nn.Linear(1, 6)
        with torch.no_grad():
            net.weight.zero_(), net.bias.copy_(torch.tensor([0.0, 0.0, 0.0, -300.0, -300.0, -300.0]))
        prior = GaussianLayerPrior(net, 3, min_scale=s)(torch.zeros(1, 1))
        torch.testing.assert_close(prior.log_prob(x[0]).double(), ref.sum().view(1), rtol=1e-6, atol=1e-5)


def test_a_learned_gaussian_head_and_a_mixture_prior_start_at_a_scale_of_a_thousand():
    """The inverse softplus was log(expm1(scale)), which overflowed from scale ~ 710: an initial
    scale of 1000 (legal: finite and above the floor) raised OverflowError."""
    from dgmkit.priors import MixtureOfGaussiansPrior

    head = GaussianHead("learned", scale=1000.0, min_scale=0.5)
    assert head(torch.zeros(1, 1, 1, 1, 1)).base_dist.scale.item() == pytest.approx(1000.0, rel=1e-6)
    prior = MixtureOfGaussiansPrior(2, components=2, init_scale=1000.0, min_scale=1e-3)
    torch.testing.assert_close(prior().scale, torch.full((2, 2), 1000.0))


@pytest.mark.parametrize("levels", [2, 5])
def test_a_logistic_heads_levels_are_the_mixture_masses_of_bins_at_2k_over_l_minus_1_with_the_tails_at_the_ends(levels):
    """Level k is the bin [x_k - h, x_k + h] around x_k = 2k/(L-1) - 1, h = 1/(L-1), of the
    mixture sum_j w_j Logistic(tanh(m_j), e^(log s_j)); level 0 takes (-inf, x_0 + h] and level
    L-1 takes [x_{L-1} - h, inf). Written here from the logistic CDF in float64 (centres or
    widths shifted together would still sum to one)."""
    k = 2
    params = (1.5 * _randn(1, 1, 3 * k, 1, 3, seed=7)).double()
    params[0, 0, 2 * k :, 0, 2] = -9.0  # below the clamp of the log-scale at -7
    logits, loc, log_s = params[0, 0].movedim(0, -1).split(k, -1)  # (1, 3, K) each
    w, m, s = torch.softmax(logits, -1), torch.tanh(loc), log_s.clamp(min=-7).exp()
    edges = torch.tensor([-math.inf, *(2 * j / (levels - 1) - 1 - 1 / (levels - 1) for j in range(1, levels)), math.inf])
    cdf = (w[..., None] * torch.sigmoid((edges.double() - m[..., None]) / s[..., None])).sum(-2)  # (1, 3, L + 1)
    want = cdf[..., 1:] - cdf[..., :-1]  # (1, 3, L)
    got = torch.stack(
        [LogisticMixtureHead(levels, k)(params).log_prob_elements(torch.full((1, 1, 1, 3), v)) for v in range(levels)], -1
    )
    torch.testing.assert_close(got[0, 0].exp(), want, rtol=1e-9, atol=1e-12)


# ---- encoders ----


def test_a_gaussian_encoder_reads_the_means_then_the_raw_scales_and_keeps_its_floor():
    m = 3
    h = _randn(4, 2 * m)
    h[0, m:] = -300.0  # the floor
    q = GaussianEncoder(nn.Identity(), m, min_scale=0.01)(h)
    assert q.batch_shape == (4,) and q.event_shape == (m,)
    assert torch.equal(q.mean, h[:, :m])
    assert torch.allclose(q.stddev, F.softplus(h[:, m:]) + 0.01) and q.stddev.min().item() == pytest.approx(0.01)
    z = _randn(4, m, seed=1)
    assert torch.allclose(q.log_prob(z), Normal(h[:, :m], F.softplus(h[:, m:]) + 0.01).log_prob(z).sum(-1))


def test_a_gaussian_encoders_scale_map_replaces_the_softplus():
    h = _randn(4, 4)
    q = GaussianEncoder(nn.Identity(), 2, min_scale=0.5, scale_map=ClippedLogVariance(-6.0, 2.0))(h)
    assert torch.allclose(q.stddev, torch.exp(h[:, 2:].clamp(-6, 2) / 2))


def test_a_gaussian_encoders_draws_are_reparameterized():
    enc = GaussianEncoder(nn.Linear(3, 4), 2).double()
    enc(_randn(5, 3)).rsample().sum().backward()
    assert enc.net.weight.grad is not None and enc.net.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_encoders_widen_half_precision_network_outputs_to_float32(dtype):
    h = torch.zeros(2, 2 * 2 + 1, dtype=dtype)
    assert GaussianEncoder(nn.Identity(), 2)(h[:, :4]).mean.dtype == torch.float32
    assert CategoricalEncoder(nn.Identity(), 2, 2)(h[:, :4]).mean.dtype == torch.float32
    iaf = IAFEncoder(nn.Identity(), 2, 1, _iaf(2, 1).float())
    assert iaf(h).base.mean.dtype == torch.float32


@pytest.mark.parametrize("width", [3, 5])
def test_a_gaussian_encoder_refuses_a_network_of_the_wrong_width(width):
    with pytest.raises(ValueError, match="needs 2 \\* 2 = 4"):
        GaussianEncoder(nn.Identity(), 2)(torch.zeros(2, width))


def test_a_gaussian_encoder_of_no_latent_dimension_is_refused():
    with pytest.raises(ValueError, match="latent_dim must be an integer >= 1"):
        GaussianEncoder(nn.Identity(), 0)


def test_a_categorical_encoders_logits_are_the_rows_of_its_network_output():
    """V * K numbers per datapoint, variable by variable: variable v's logits are h[v K:(v + 1) K]."""
    h = _randn(4, 2 * 3)
    q = CategoricalEncoder(nn.Identity(), 2, 3)(h)
    assert q.batch_shape == (4,) and q.event_shape == (2, 3)
    assert torch.allclose(q.base_dist.probs, F.softmax(h.view(4, 2, 3), -1))


def test_a_categorical_encoder_keeps_the_leading_dimensions_of_its_input():
    """x of shape (S, B, D) gives batch shape (S, B), as a GaussianEncoder's (a view(-1, V, K) gave (S * B,))."""
    h = _randn(5, 4, 2 * 3)
    q = CategoricalEncoder(nn.Identity(), 2, 3)(h)
    assert q.batch_shape == (5, 4) and q.event_shape == (2, 3)
    assert torch.allclose(q.base_dist.probs, F.softmax(h.view(5, 4, 2, 3), -1))
    z = q.sample()
    assert z.shape == (5, 4, 2, 3) and q.log_prob(z).shape == (5, 4)


def _iaf(m: int, c: int):
    from dgmkit import transforms as T

    torch.manual_seed(0)
    return T.iaf(m, [8], 2, context_features=c).double()


def test_an_iaf_encoders_base_is_its_mean_then_raw_scale_and_the_rest_is_the_flows_context():
    m, c = 2, 3
    h = _randn(4, 2 * m + c)
    h[0, m : 2 * m] = -300.0
    q = IAFEncoder(nn.Identity(), m, c, _iaf(m, c), min_scale=0.01)(h)
    assert torch.equal(q.base.mean, h[:, :m])
    assert torch.allclose(q.base.stddev, F.softplus(h[:, m : 2 * m]) + 0.01)
    assert torch.equal(q.context, h[:, 2 * m :])
    scaled = IAFEncoder(nn.Identity(), m, c, _iaf(m, c), scale_map=ClippedLogVariance())(h)
    assert torch.allclose(scaled.base.stddev, torch.exp(h[:, m : 2 * m].clamp(-6, 2) / 2))


def test_an_iaf_encoders_draws_depend_on_its_context():
    m, c = 2, 3
    flow = _iaf(m, c)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=_g(4), dtype=p.dtype))
    h = _randn(3, 2 * m + c)
    other = h.clone()
    other[:, 2 * m :] += 1.0  # the same base, another context
    enc = IAFEncoder(nn.Identity(), m, c, flow)
    z, _ = enc(h).rsample_and_log_prob(generator=_g(5))
    z_same, _ = enc(h).rsample_and_log_prob(generator=_g(5))
    z_other, _ = enc(other).rsample_and_log_prob(generator=_g(5))
    assert torch.equal(z, z_same) and not torch.allclose(z, z_other)


def test_an_iaf_encoder_keeps_the_leading_dimensions_of_its_input():
    """x of shape (S, B, D) gives batch shape (S, B), as a GaussianEncoder's, each row under its own
    context (its draws, their density and its location raised "shape '[6, 3, 3]' is invalid")."""
    m, c = 2, 3
    flow = _iaf(m, c)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=_g(4), dtype=p.dtype))
    enc = IAFEncoder(nn.Identity(), m, c, flow)
    h = _randn(2, 3, 2 * m + c)
    q = enc(h)
    z, log_q = q.rsample_and_log_prob((4,))
    assert q.batch_shape == (2, 3) and z.shape == (4, 2, 3, m) and log_q.shape == (4, 2, 3)
    assert q.log_prob(z.clone()).shape == (4, 2, 3) and q.location().shape == (2, 3, m)
    for s in range(2):  # each row of S as a (B, D) input of its own
        assert torch.allclose(enc(h[s]).log_prob(z[:, s].clone()), log_q[:, s])
        assert torch.allclose(enc(h[s]).location(), q.location()[s])


@pytest.mark.parametrize("width", [6, 8])
def test_an_iaf_encoder_refuses_a_network_of_the_wrong_width(width):
    with pytest.raises(ValueError, match=r"needs 2 \* 2 \+ 3 = 7: the means, the raw scales, the context"):
        IAFEncoder(nn.Identity(), 2, 3, _iaf(2, 3))(_randn(4, width))


@pytest.mark.parametrize("latent_dim, context", [(0, 3), (2, -1), (2.5, 3)])
def test_an_iaf_encoder_of_no_latent_dimension_or_a_negative_context_is_refused(latent_dim, context):
    with pytest.raises(ValueError, match="latent_dim|context_features"):
        IAFEncoder(nn.Identity(), latent_dim, context, _iaf(2, 3))


# ---- the decoder ----


def test_a_decoders_output_is_read_channel_then_parameter_then_row_then_column():
    """The network's numbers per latent are (C, P, H, W), row-major: on a non-square colour
    image with two parameters per pixel, parameter p of pixel (c, i, j) is out[c, p, i, j]."""
    c, h, w = 2, 2, 3
    head = GaussianHead("predicted", min_scale=1e-3)
    out = _randn(5, c * 2 * h * w)
    dist = Decoder(nn.Identity(), head, (c, h, w))(out)
    assert dist.batch_shape == (5,) and dist.event_shape == (c, h, w)
    params = out.view(5, c, 2, h, w)
    assert torch.equal(dist.mean, params[:, :, 0])
    assert torch.allclose(dist.base_dist.scale, F.softplus(params[:, :, 1]) + 1e-3)


def test_a_decoders_pixel_pmf_is_the_heads_pmf_at_each_pixel():
    c, h, w, L = 1, 2, 3, 4
    out = _randn(3, c * L * h * w)
    dec = Decoder(nn.Identity(), CategoricalHead(L), (c, h, w))
    log_pmf = dec.pixel_log_pmf(out)
    assert log_pmf.shape == (3, c, h, w, L)
    assert torch.allclose(log_pmf, F.log_softmax(out.view(3, c, L, h, w).movedim(2, -1), -1))


def test_a_decoder_passes_its_network_a_matrix_of_latents_and_keeps_the_sample_dimensions():
    class Flat(nn.Module):  # a network of (N, M) rows only, as a conv net's first layer would need
        def forward(self, z):
            assert z.dim() == 2, z.shape
            return z.repeat(1, 2)

    dec = Decoder(Flat(), BernoulliHead(), (1, 1, 6))
    z = _randn(4, 5, 3)
    dist = dec(z)
    assert dist.batch_shape == (4, 5) and torch.equal(dist.logits[..., 0, 0, :], z.repeat(1, 1, 2))


def test_a_decoder_is_trained_through_its_likelihood():
    dec = Decoder(nn.Linear(2, 4), BernoulliHead(), (1, 2, 2))
    dec(torch.randn(3, 2)).log_prob(torch.ones(3, 1, 2, 2)).sum().backward()
    assert dec.net.weight.grad is not None and dec.net.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(1, 4), (1, 1, 1, 4), (0, 2, 2), (1, 2.5, 2), ("1", 2, 2), 4])
def test_a_decoder_refuses_an_event_shape_that_is_not_an_images(shape):
    with pytest.raises(ValueError, match="three positive integers"):
        Decoder(nn.Identity(), BernoulliHead(), shape)


@pytest.mark.parametrize("width", [3, 5])
def test_a_decoder_refuses_a_network_of_the_wrong_width_either_way(width):
    with pytest.raises(ValueError, match="= 4 numbers per latent"):
        Decoder(nn.Identity(), BernoulliHead(), (1, 2, 2))(torch.zeros(2, width))


# ---- the PixelCNN decoder ----


def _pixel_decoder(levels: int = 2, shape=(1, 2, 3), cond: int = 2, input_scale: float = 1.0) -> PixelCNNDecoder:
    torch.manual_seed(0)
    head = BernoulliHead() if levels == 2 else CategoricalHead(levels)
    net = nn.Linear(3, cond * math.prod(shape))
    d = PixelCNNDecoder(net, head, shape, cond, channels=6, layers=2, input_scale=input_scale).double()
    with torch.no_grad():
        for p in d.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=_g(1), dtype=p.dtype))
    return d


@pytest.mark.parametrize("width", [6, 18])
def test_a_pixelcnn_decoder_refuses_a_network_of_the_wrong_width_and_takes_its_map_flat_or_shaped(width):
    d = _pixel_decoder()  # 2 condition channels on 2 x 3 images: 12 numbers per latent
    d.net = nn.Linear(3, width).double()
    with pytest.raises(ValueError, match=rf"gave {width} numbers per latent.*needs 2 \* 2 \* 3 = 12"):
        d.condition(_randn(4, 3))
    d.net = nn.Sequential(nn.Linear(3, 12), nn.Unflatten(1, (2, 2, 3))).double()
    assert d.condition(_randn(4, 3)).shape == (4, 2, 2, 3)


def test_the_pixelcnn_decoder_normalises_over_every_image():
    """The probabilities of all 3^6 images of a 2 x 3 image of 3 levels, under each of two
    latents, sum to 1 (the decoder's log p(x|z) is the product of its conditionals)."""
    d = _pixel_decoder(3, input_scale=0.5)
    z = _randn(2, 3)
    images = torch.cartesian_prod(*[torch.arange(3.0, dtype=torch.float64)] * 6).view(-1, 1, 1, 2, 3)
    with torch.no_grad():
        log_p = d(z).log_prob(images)  # (729, 2): each image under each latent
    assert log_p.shape == (729, 2)
    assert torch.allclose(log_p.logsumexp(0), torch.zeros(2, dtype=torch.float64), atol=1e-10)


def test_the_pixelcnn_decoder_scores_each_image_under_its_own_latent():
    d = _pixel_decoder()
    z, x = _randn(3, 3), torch.randint(0, 2, (3, 1, 2, 3), generator=_g(2)).double()
    with torch.no_grad():
        batch = d(z).log_prob(x)
        alone = torch.stack([d(z[i : i + 1]).log_prob(x[i : i + 1])[0] for i in range(3)])
        assert torch.allclose(batch, alone)
        many = d(z.expand(4, 3, 3)).log_prob(x)  # (S, B, M) latents: batch (S, B)
        assert many.shape == (4, 3) and torch.allclose(many, batch.expand(4, 3))
        assert d(z.expand(4, 3, 3)).batch_shape == (4, 3)


def test_the_pixelcnn_decoder_reads_the_images_times_its_input_scale():
    d = _pixel_decoder(3, input_scale=0.5)
    x, s = torch.randint(0, 3, (2, 1, 2, 3), generator=_g(2)).double(), _randn(2, 2, 2, 3)
    assert torch.allclose(d.params(x, s), d.pixelcnn(0.5 * x, s).unsqueeze(1))


def test_the_pixelcnn_decoders_condition_map_is_its_network_output_as_channels_rows_and_columns():
    d = _pixel_decoder(shape=(1, 2, 3))
    z = _randn(4, 3)
    assert torch.equal(d.condition(z), d.net(z).view(4, 2, 2, 3))


def test_the_pixelcnn_decoder_refuses_images_of_another_shape():
    with pytest.raises(ValueError, match=r"expected images of shape \(\.\.\., 1, 2, 3\)"):
        _pixel_decoder()(_randn(2, 3)).log_prob(torch.zeros(2, 1, 3, 2))


@pytest.mark.parametrize(
    "shape, head, message",
    [((2, 2, 3), BernoulliHead(), "single-channel"), ((1, 2, 3), GaussianHead(), "discrete likelihood")],
)
def test_the_pixelcnn_decoder_refuses_what_it_cannot_draw_pixel_by_pixel(shape, head, message):
    with pytest.raises(ValueError, match=message):
        PixelCNNDecoder(nn.Identity(), head, shape, 1, channels=4, layers=1)


def test_a_pixelcnn_draw_inverts_each_pixels_cdf_at_its_own_uniform_from_the_global_stream():
    d = _pixel_decoder(3, input_scale=0.5)
    px = d(_randn(5, 3))
    torch.manual_seed(7)
    drawn = px.sample()
    torch.manual_seed(7)
    u = torch.rand(5, 6, dtype=torch.float64)
    assert torch.equal(drawn, px.sample_from_noise(u))


@pytest.mark.parametrize("levels, input_scale", [(2, 1.0), (3, 0.5)])
def test_pixelcnn_draws_and_the_greedy_decode_follow_the_conditionals_that_log_prob_scores(levels, input_scale):
    """Pixel t of a draw inverts, at u[:, t], the CDF of p(x_t | x_<t, z) as the one-pass network
    (log_prob's) gives it for the drawn image; the greedy decode takes each such pmf's argmax."""
    from dgmkit.distributions.sampling import inverse_cdf

    d = _pixel_decoder(levels, input_scale=input_scale)
    z = _randn(6, 3)
    px = d(z)
    u = torch.rand(6, 6, dtype=torch.float64, generator=_g(3))
    for x, choose in ((px.sample_from_noise(u), lambda t, pmf: inverse_cdf(pmf, u[:, t])), (px.location(), None)):
        with torch.no_grad():
            log_pmf = d.head.pixel_log_pmf(d.params(x, d.condition(z)).squeeze(1).permute(0, 2, 3, 1).reshape(6, 6, -1))
        assert log_pmf.shape == (6, 6, levels)
        want = [choose(t, log_pmf[:, t]) if choose else log_pmf[:, t].argmax(-1) for t in range(6)]
        assert torch.equal(torch.stack(want, 1).to(x.dtype), x.flatten(1))


@pytest.mark.parametrize("reps", [2, 3])
def test_a_pixelcnn_draw_of_many_images_gives_each_its_own_latents_condition(monkeypatch, reps):
    """sample((R,)) with a batch of B latents: image [r, b] is drawn given z_b."""
    d = _pixel_decoder()
    z = _randn(2, 3)
    cond = d.condition(z)

    def generate(s, choose, cached=True):  # each image filled with the index of the latent its condition came from
        index = [next(i for i in range(2) if torch.equal(row, cond[i])) for row in s]
        return torch.tensor(index, dtype=torch.float64).view(-1, 1, 1, 1).expand(-1, 1, 2, 3)

    monkeypatch.setattr(d, "generate", generate)
    drawn = d(z).sample((reps,))
    assert drawn.shape == (reps, 2, 1, 2, 3)
    assert torch.equal(drawn[:, :, 0, 0, 0], torch.tensor([[0.0, 1.0]] * reps, dtype=torch.float64))


def test_the_pixelcnn_decoders_memory_estimate_is_near_the_one_measured():
    """bytes_per_image's docstring: 11 MB measured for 64 channels, 8 layers, 28 x 28."""
    d = PixelCNNDecoder(nn.Identity(), BernoulliHead(), (1, 28, 28), 1, channels=64, layers=8)
    assert 10e6 <= d.bytes_per_image() <= 12.5e6


# ---- figures ----


def _grid(images: torch.Tensor, nrow: int, **kw) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(figures.image_grid_png(images, nrow, **kw))))


def test_an_image_grid_lays_out_cells_padding_and_a_grey_background_pixel_for_pixel():
    """Two rows of three cells for four images (the last two cells of background grey), each
    cell after ``pad`` pixels, values clamped to [0, 1] and rounded to the nearest of 0..255."""
    x = torch.rand(4, 1, 2, 3, generator=_g(0))
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 1.7, -0.4
    grey = _grid(x, nrow=3, min_cell=1, pad=1)
    assert grey.shape == (2 * 3 + 1, 3 * 4 + 1)
    want = np.full(grey.shape, 128, dtype=np.uint8)  # 0.5 * 255 = 127.5 rounds to 128
    for i in range(4):
        r, c = divmod(i, 3)
        want[1 + 3 * r : 3 + 3 * r, 1 + 4 * c : 4 + 4 * c] = np.round(x[i, 0].clamp(0, 1).numpy() * 255)
    assert np.array_equal(grey, want)
    assert _grid(x[:3], nrow=3, min_cell=1, pad=1).shape == (4, 13)  # one row for a full row of images


def test_an_image_grid_of_four_channels_is_rgba_and_of_two_is_each_channel_in_grey():
    from PIL import Image

    x = torch.rand(2, 4, 2, 3, generator=_g(0))
    rgba = Image.open(io.BytesIO(figures.image_grid_png(x, nrow=2, min_cell=1, pad=0)))
    assert rgba.mode == "RGBA" and np.array_equal(np.asarray(rgba)[:, :3], np.round(x[0].permute(1, 2, 0).numpy() * 255))
    grey = _grid(x[:, :2], nrow=2, min_cell=1, pad=0)  # image 0's two channels, then image 1's
    assert grey.shape == (2, 12) and np.array_equal(grey[:, 3:6], np.round(x[0, 1].numpy() * 255))


def test_small_images_are_enlarged_pixel_by_pixel_to_the_least_cell_size():
    x = torch.rand(2, 1, 2, 3, generator=_g(0))
    big = _grid(x, nrow=2, min_cell=7, pad=0)  # 7 / 3 pixels: each pixel a 3 x 3 block
    assert big.shape == (6, 18)
    assert np.array_equal(big[:, :9], np.round(x[0, 0].numpy() * 255).astype(np.uint8).repeat(3, 0).repeat(3, 1))
    assert _grid(x, nrow=2, min_cell=0, pad=0).shape == (2, 6)  # never shrunk


def test_an_image_grid_of_non_finite_values_is_refused():
    x = torch.zeros(2, 1, 2, 2)
    x[1, 0, 1, 1] = float("nan")
    with pytest.raises(EvaluationError, match=r"^the images to draw hold non-finite pixel values \(1 of 8 values") as e:
        figures.image_grid_png(x, nrow=2)
    assert "missing entries: map them to a grey first, torch.nan_to_num(x, nan=0.5)" in str(e.value)
    with pytest.raises(EvaluationError, match=r"\(2 of 3 values"):
        figures.check_finite(torch.tensor([1.0, float("inf"), float("nan")]), "x")
    figures.check_finite(torch.tensor([1, 2]), "integers")


def test_a_projection_of_many_dimensions_is_on_the_centred_principal_components():
    """Points spread 3 : 1 along two known directions of 4-D space (and offset): PC 1 and PC 2
    are their coordinates along them (up to sign), with 90% and 10% of the variance."""
    a = torch.tensor([3.0, -3.0, 3.0, -3.0] * 25, dtype=torch.float64)
    b = torch.tensor([1.0, 1.0, -1.0, -1.0] * 25, dtype=torch.float64)
    u = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64) / 2
    v = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64) / 2
    z = 5.0 + a[:, None] * u + b[:, None] * v
    points, axes, what = figures.project_2d(z)
    assert np.allclose(np.abs(points[:, 0]), np.abs(a.numpy())) and np.allclose(np.abs(points[:, 1]), np.abs(b.numpy()))
    assert np.allclose(points.mean(0), 0)
    assert axes == ("PC 1 (90% of variance)", "PC 2 (10% of variance)") and what == "PCA of 4-D means (100% of variance)"


def test_a_projection_of_equal_means_is_the_origin_with_no_variance_to_share():
    points, axes, what = figures.project_2d(torch.full((4, 3), 2.0))
    assert np.array_equal(points, np.zeros((4, 2))) and axes[0] == "PC 1 (no variance)" and "nan" not in what


def test_a_figures_texts_are_shown_letter_for_letter(monkeypatch):
    """``$`` is no mathtext and an invisible character is shown escaped, in every text drawn."""
    assert figures.literal("US$ 5\u202e") == "US\\$ 5\\u202e"
    fig = _drawn(monkeypatch, lambda: figures.scatter_png(np.zeros((3, 2)), None, "a $1$", ("$x$", "y")))
    assert fig.axes[0].get_title() == r"a \$1\$" and fig.axes[0].get_xlabel() == r"\$x\$"


def test_a_one_dimensional_projection_jitters_around_zero_and_one_point_is_refused():
    points, _, _ = figures.project_2d(torch.randn(400, 1))
    assert -0.5 <= points[:, 1].min() and points[:, 1].max() < 0.5 and abs(points[:, 1].mean()) < 0.05
    with pytest.raises(DataError, match="at least 2 points, got 1"):
        figures.project_2d(torch.randn(1, 3))


def _drawn(monkeypatch, draw):
    """The matplotlib figure ``draw`` makes, closed in pyplot as ``figure_png`` closes it (it stays
    readable: its axes and ticks), so that the figures of many tests do not pile up in one process."""
    import matplotlib.pyplot as plt

    made = []

    def keep(fig):
        made.append(fig)
        return b"png"

    monkeypatch.setattr(figures, "figure_png", keep)
    draw()
    plt.close(made[0])
    return made[0]


@pytest.mark.parametrize("classes, cmap", [(10, "tab10"), (11, "tab20"), (20, "tab20"), (21, "viridis")])
def test_a_scatter_gives_each_of_up_to_20_classes_its_own_colour(monkeypatch, classes, cmap):
    labels = np.arange(40) % classes
    fig = _drawn(monkeypatch, lambda: figures.scatter_png(np.zeros((40, 2)), labels, "t", ("a", "b")))
    dots = fig.axes[0].collections[0]
    assert dots.get_cmap().name == cmap
    if classes <= 20:
        assert (dots.norm.vmin, dots.norm.vmax) == (-0.5, classes - 0.5)
        assert list(fig.axes[1].get_yticks()) == list(range(classes))


def _layer(**kw) -> dict:
    layer = {"name": "z", "mean_variance": [0.5, 0.005, 0.02], "kl_per_dim": [1.0, 0.1, 0.2], "mutual_info": None}
    return layer | {"kl": 1.3, "active_units": 2} | kw


def test_a_diagnosis_draws_each_dimensions_kl_darker_where_the_unit_is_active(monkeypatch):
    fig = _drawn(monkeypatch, lambda: figures.diagnosis_png({"layers": [_layer()]}, None, None, "t"))
    assert len(fig.axes) == 1
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars] == [1.0, 0.1, 0.2]
    blue, grey = (0.12156862745098039, 0.4666666666666667, 0.7058823529411765, 1.0), (0.827, 0.827, 0.827, 1.0)
    assert np.allclose([b.get_facecolor() for b in bars], [blue, grey, blue], atol=1e-3)
    assert fig.axes[0].get_title().startswith("z: E_x KL(q(z|x) || p(z)) 1.30 nats, active 2/3")


def test_a_diagnosis_without_a_kl_per_variable_draws_the_posterior_means_variance(monkeypatch):
    layers = [_layer(kl_per_dim=[1.0, 2.0]), _layer(name="y", kl_per_dim=None)]  # (one KL per K classes)
    fig = _drawn(monkeypatch, lambda: figures.diagnosis_png({"layers": layers}, None, None, "t"))
    assert [[b.get_height() for b in ax.patches] for ax in fig.axes] == [[0.5, 0.005, 0.02]] * 2
    assert "KL(q(y|.) || p(y|.))" in fig.axes[1].get_title()


def test_a_diagnosis_shows_prior_holes_above_typical_draws(monkeypatch):
    holes, typical = torch.zeros(4, 1, 28, 28), torch.ones(4, 1, 28, 28)
    fig = _drawn(monkeypatch, lambda: figures.diagnosis_png({"layers": [_layer()]}, holes, typical, "a " * 100))
    shown = fig.axes[1].images[0].get_array()
    assert len(fig.axes) == 2 and shown.shape[:2] == (2 + 2 * 30, 2 + 4 * 30)
    assert shown[2:30, 2:30].max() == 0 and shown[32:60, 2:30].min() == 255  # top row holes, bottom row typical
    assert fig._suptitle.get_text().count("\n") == 1  # a long title wrapped


def test_a_figure_is_closed_once_it_is_drawn():
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    figures.scatter_png(np.zeros((3, 2)), None, "t", ("a", "b"))
    assert len(plt.get_fignums()) == before


# ---- guards added by the sweep ----


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: CategoricalHead(1), "the categorical head's num_levels must be an integer >= 2, got 1"),
        (lambda: CategoricalHead(0), "num_levels must be an integer >= 2"),
        (lambda: CategoricalHead(True), "num_levels must be an integer >= 2"),
        (lambda: LogisticMixtureHead(1), "the logistic head's num_levels must be an integer >= 2"),
        (lambda: LogisticMixtureHead(256, 0), "the logistic head's components must be an integer >= 1, got 0"),
        (lambda: MixedTableHead([0, 2], min_scale=0.0), "the mixed head's min_scale must be a finite number > 0"),
        (lambda: MixedTableHead([0, 2], min_scale=-0.1), "min_scale must be a finite number > 0"),
    ],
)
def test_a_head_refuses_an_alphabet_or_floor_it_cannot_model(make, message):
    """CategoricalHead(0 or 1) and LogisticMixtureHead(components=0) were built (no parameters per
    pixel, a failure at the first pass or a constant), MixedTableHead(min_scale=0) an unbounded
    likelihood: the other heads' floors were checked, its own was not."""
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("width", [5, 12])
def test_a_categorical_encoder_refuses_a_network_of_the_wrong_width(width):
    """12 numbers per datapoint for 2 variables of 3 classes were taken as two datapoints' logits:
    a batch of 4 gave a posterior of batch 8."""
    with pytest.raises(ValueError, match=r"needs 2 \* 3 = 6 logits"):
        CategoricalEncoder(nn.Identity(), 2, 3)(torch.zeros(4, width))


@pytest.mark.parametrize("dims", [1, 2, 3, 40])
def test_a_diagnosis_ticks_its_latent_dimensions_at_whole_numbers(monkeypatch, dims):
    """A 1-D latent's one bar was ticked -0.4, -0.2, 0.0, 0.2, 0.4: no dimension is numbered 0.2."""
    layer = _layer(mean_variance=[0.5] * dims, kl_per_dim=[1.0] * dims)
    ax = _drawn(monkeypatch, lambda: figures.diagnosis_png({"layers": [layer]}, None, None, "t")).axes[0]
    lo, hi = ax.get_xlim()
    shown = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert shown and all(t == round(t) for t in shown) and 0 in shown
