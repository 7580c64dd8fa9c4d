"""What a mutation sweep of the models (M2, hybrid, WAE, dequantization, schedules, terms, VAE,
autoencoder, Helmholtz machine), the conditional distributions and nn (MADE, scales, MLP) found
unchecked: each test checks a property against an independent computation."""

import itertools
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, Normal

from dgmkit.conditional import BernoulliHead, CategoricalHead, Decoder, GaussianEncoder
from dgmkit.config import RunConfig, build_model
from dgmkit.priors import StandardNormalPrior
from linear_gaussian import make
from pathwise import check_directional_derivative


# --- models/m2.py ------------------------------------------------------------------------------
def _m2(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(RunConfig.of(model="m2", hidden=[8], latent_dim=2, classes=3), (1, 4, 4), 2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


@torch.no_grad()
def test_m2_elbo_split_weighs_each_class_kl_by_q_y_and_adds_the_kl_of_y():
    """elbo_terms: kl = sum_y q(y|x) KL(q(z|x,y) || p(z)) + KL(q(y|x) || uniform), and
    recon - kl is U(x) of the same draws."""
    model = _m2()
    x = torch.randint(0, 2, (5, 1, 4, 4), generator=torch.Generator().manual_seed(1)).double()
    torch.manual_seed(3)
    t = model.enumerate(x)
    torch.manual_seed(3)
    got = model.elbo_terms(x)
    qy = t.log_qy.exp()
    kl_y = (qy * (t.log_qy + math.log(3))).sum(-1)
    torch.testing.assert_close(got["kl"], (qy * t.kl_z).sum(-1) + kl_y)
    torch.testing.assert_close(got["elbo"], t.unlabelled())


@torch.no_grad()
def test_m2_samples_take_the_classes_in_turn():
    """sample(n): draw i has class i mod K; with a decoder blind to z, p(x|y,z) is a function of y."""
    model = _m2()
    first = [m for m in model.decoder.net.modules() if isinstance(m, nn.Linear)][0]
    first.weight[:, :2] = 0.0  # the columns that read z
    _, means = model.sample(7, generator=torch.Generator().manual_seed(0))
    z0 = torch.zeros(3, 2, dtype=torch.float64)
    per_class = model.decoder(torch.cat([z0, torch.eye(3, dtype=torch.float64)], -1)).mean
    torch.testing.assert_close(means, per_class[torch.arange(7) % 3])


# --- models/classifier.py ----------------------------------------------------------------------
@torch.no_grad()
def test_predict_is_each_rows_most_probable_class_in_batches_and_eval_s_accuracy_its_share():
    model = _m2()
    x = torch.randint(0, 2, (7, 1, 4, 4), generator=torch.Generator().manual_seed(2)).double()
    want = torch.stack([model.class_log_probs(x[i : i + 1])[0].argmax() for i in range(7)])
    assert len(set(want.tolist())) > 1  # (not vacuous: the rows differ)
    assert torch.equal(model.predict(x, batch_size=3), want)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    acc = model.evaluation_terms(x, y, {}, 3)["accuracy"]
    torch.testing.assert_close(acc.values, (want == y).double())


# --- models/hybrid.py --------------------------------------------------------------------------
def test_hybrid_classifier_gradient_reaches_the_flow():
    """log p(y|x) depends on the flow's parameters through z = T(x): its gradient is autograd's."""
    from dgmkit.models import HybridFlow
    from dgmkit.models.flow import FlowModel
    from dgmkit.transforms import realnvp

    torch.manual_seed(0)
    model = HybridFlow(FlowModel(realnvp(4, [8]), (4,), flatten=True), num_classes=3).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    params = list(model.flow.parameters())
    check_directional_derivative(lambda: model.joint(x).log_py_x[:, 0].sum(), params)


# --- models/wae.py -----------------------------------------------------------------------------
def _wae(encoder: str = "gaussian"):
    torch.manual_seed(0)
    cfg = RunConfig.of(model="wae", dataset="digits", hidden=[16], latent_dim=3, wae_encoder=encoder)
    return build_model(cfg, (1, 8, 8), 2).double().eval()


def _imq_mmd2(z: torch.Tensor, zp: torch.Tensor, variance: float = 1.0) -> float:
    """Unbiased MMD^2 under sum_s C_s / (C_s + |x - y|^2), C_s = 2 M variance s, written out."""
    from dgmkit.distributions.mmd import IMQ_SCALES

    n, m = z.shape

    def k(a, b):
        d2 = ((a[:, None] - b[None]) ** 2).sum(-1)
        return sum(2 * m * variance * s / (2 * m * variance * s + d2) for s in IMQ_SCALES)

    off = 1 - torch.eye(n, dtype=z.dtype)
    return ((k(z, z) * off).sum() / (n * (n - 1)) + (k(zp, zp) * off).sum() / (n * (n - 1)) - 2 * k(z, zp).mean()).item()


@torch.no_grad()
def test_wae_eval_mmd_compares_one_draw_of_q_with_prior_draws_under_the_imq_kernel():
    model = _wae("gaussian")
    x = (torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.4).double()
    torch.manual_seed(5)
    got = model.evaluation_terms(x, None, {}, 6)["mmd"].values
    torch.manual_seed(5)
    z = model.posterior(x).sample()
    zp = model.prior().sample((6,))
    assert got.tolist() == pytest.approx([_imq_mmd2(z, zp)] * 6, rel=1e-9)


def test_wae_trains_and_reports_its_mmd_under_one_kernel_scaled_by_the_prior_s_variance():
    """C_s = 2 M sigma^2 s with sigma^2 the prior's variance (4 here), in the training objective
    and in evaluation alike: the objective once had its own kernel, fixed at variance 1 whatever
    the prior, beside the evaluation's."""
    from dgmkit.distributions.mmd import IMQ_SCALES, InverseMultiquadric
    from dgmkit.models import WassersteinAutoencoder
    from dgmkit.objectives import WAEObjective
    from dgmkit.priors import StandardNormalPrior

    wide = StandardNormalPrior(3).double()
    wide.scale.fill_(2.0)
    base = _wae("deterministic")
    model = WassersteinAutoencoder(base.encoder, base.decoder, wide, deterministic=True).double()
    assert model.kernel == InverseMultiquadric(4.0, IMQ_SCALES)  # made once, at construction
    assert pickle.loads(pickle.dumps(model)).kernel == model.kernel  # (an object, not a closure: the model pickles)
    x = (torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.4).double()
    with torch.no_grad():
        z = model.posterior(x).sample()
        torch.manual_seed(3)
        trained = WAEObjective(mmd_weight=1.0)(model, x).mmd
        torch.manual_seed(3)
        reported = model.evaluation_terms(x, None, {}, 6)["mmd"].values
        torch.manual_seed(3)
        zp = model.prior().sample((6,))
    want = _imq_mmd2(z, zp, variance=4.0)
    assert abs(want - _imq_mmd2(z, zp)) > 1e-3  # (not vacuous: the variance matters)
    assert trained.tolist() == pytest.approx([want] * 6, rel=1e-9)
    assert reported.tolist() == pytest.approx([want] * 6, rel=1e-9)
    # a prior without a closed-form variance (a flow) needs a kernel named
    from dgmkit.priors import FlowPrior
    from dgmkit.transforms import realnvp

    with pytest.raises(ValueError, match="no closed-form variance"):
        WassersteinAutoencoder(base.encoder, base.decoder, FlowPrior(3, realnvp(3, [8])))


@torch.no_grad()
def test_wae_reconstructs_from_the_code_s_location_and_samples_from_the_prior():
    model = _wae("gaussian")
    x = (torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.4).double()
    torch.testing.assert_close(model.reconstruct(x), model.decoder(model.posterior(x).mean).mean)
    # draws x ~ p(x|z), z ~ p(z): the means of a large sample average those of prior draws
    _, means = model.sample(4000, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    by_hand = model.decoder(torch.randn(4000, 3, dtype=torch.float64)).mean
    assert (means.mean(0) - by_hand.mean(0)).abs().max() < 0.03
    assert (means.std(0) - by_hand.std(0)).abs().max() < 0.03 and means.std(0).max() > 0.1


# --- models/dequantization.py ------------------------------------------------------------------
def _dequantized_flow():
    from dgmkit.models import VariationallyDequantizedFlow
    from dgmkit.models.dequantization import LogitNormalDequantizer
    from dgmkit.models.flow import FlowModel
    from dgmkit.transforms import Compose, Logit, realnvp

    torch.manual_seed(0)
    flow = FlowModel(Compose([Logit(0.05), realnvp(2, [16], 2)]), (1, 1, 2), flatten=True).double().eval()
    return VariationallyDequantizedFlow(flow, LogitNormalDequantizer(1, 3, hidden=8).double()).eval()


@torch.no_grad()
def test_dequantized_flow_support_scale_floor_and_temperature():
    model = _dequantized_flow()
    assert model.data_support.check(torch.tensor([0.0, 2.0, 3.0, -1.0])).tolist() == [True, True, False, False]
    # q(u|k)'s scale is floored at 1e-3 however negative the network's raw output
    last = model.dequantizer.net[-1]
    last.weight.zero_()
    last.bias.copy_(torch.tensor([0.0, -100.0]))
    q = model.posterior(torch.zeros(2, 1, 1, 2))
    torch.testing.assert_close(q.scale, torch.full_like(q.scale, 1e-3))
    # temperature near 0: every draw is the level of the flow's mode (y = 1/2, level 1); at 1 they spread
    cold, _ = model.sample(200, torch.Generator().manual_seed(0), temperature=1e-6)
    warm, _ = model.sample(200, torch.Generator().manual_seed(0), temperature=1.0)
    assert len(cold.view(200, 2).unique(dim=0)) == 1 and len(warm.view(200, 2).unique(dim=0)) > 3


# --- models/noise_schedule.py ------------------------------------------------------------------
def test_variance_gradient_scales_the_gradients_of_the_shape_and_its_derivative_per_example():
    from dgmkit.models.noise_schedule import variance_gradient

    shape = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64, requires_grad=True)
    dshape = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    (s, ds), holder = variance_gradient(shape, dshape)
    assert torch.equal(s, shape) and torch.equal(ds, dshape)
    factor = torch.tensor([0.5, 2.0, -1.0], dtype=torch.float64)
    holder.append(factor)
    a, b = torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 4.0, 0.5], dtype=torch.float64)
    (a * s + b * ds).sum().backward()
    torch.testing.assert_close(shape.grad, a * factor)
    torch.testing.assert_close(dshape.grad, b * factor)


# --- models/terms.py ---------------------------------------------------------------------------
def test_terms_refuse_infinities_and_bad_settings_and_show_their_level_and_n_a():
    from dgmkit.errors import EvaluationError
    from dgmkit.models.terms import Term, format_term, refuse_non_finite

    with pytest.raises(EvaluationError, match=r"non-finite log-likelihood \(inf\) to 1 of 3"):
        refuse_non_finite("log-likelihood", torch.tensor([0.0, math.inf, 1.0]))
    with pytest.raises(EvaluationError, match=r"non-finite x \(-inf\)"):
        Term("x", torch.tensor([1.0, -math.inf])).mean()
    for digits in (-1, 9):
        with pytest.raises(ValueError, match="digits must be in 0..8"):
            Term("x", torch.zeros(2), digits=digits)
    Term("x", torch.zeros(2), digits=8)
    for level in (-1, 3):
        with pytest.raises(ValueError, match="level must be one of"):
            Term("x", torch.zeros(2), level=level)
    record = {"label": "KL z1", "value": 1.5, "unit": "nats", "note": "", "level": 2, "digits": 2}
    assert format_term(record) == ("    KL z1", "1.50 nats")
    assert format_term({**record, "value": math.nan, "note": "too few"}) == ("    KL z1", "n/a: too few")
    assert format_term({**record, "value": math.inf, "note": ""}) == ("    KL z1", "n/a")
    # the default reason is "n/a" itself, and an eval.json of before 2026-12-02 kept an accuracy's as "n/a: ...":
    # each was shown "n/a: n/a..."
    undefined = Term("x", torch.tensor([math.nan]), partial=True).record("x")
    assert format_term(undefined) == ("x", "n/a")
    assert format_term({**record, "value": None, "note": "n/a: all 20 labels are hidden"})[1] == (
        "n/a: all 20 labels are hidden"
    )
    # a value past 1e15 in exponent form: 1e308 in fixed point was 309 digits in dgm eval's line and the report's cell
    assert format_term({**record, "value": 1e308}) == ("    KL z1", "1.000e+308 nats")
    assert format_term({**record, "value": -2.5e15, "digits": 4}) == ("    KL z1", "-2.5000e+15 nats")


# --- models/vae.py -----------------------------------------------------------------------------
@torch.no_grad()
def test_vae_scales_its_input_and_fills_missing_entries_only_where_told():
    model, _ = make()
    seen = []
    model.encoder.net.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    x = torch.tensor([[[[2.0, math.nan, -1.0, 4.0]]]], dtype=torch.float64)
    model.input_scale = 0.5
    q = model.posterior(x)
    assert seen[-1].tolist() == [[[[1.0, 0.0, -0.5, 2.0]]]]
    torch.testing.assert_close(q.mean, model.encoder(seen[-1]).mean)
    model.fill_missing = False  # (an encoder that reads NaN as no value)
    model.posterior(x)
    assert math.isnan(seen[-1][0, 0, 0, 1]) and seen[-1][0, 0, 0, 0] == 1.0


class _PlainNormalPrior(StandardNormalPrior):
    """N(0, I) as torch's Independent Normal: a prior that draws by ``sample`` alone."""

    def forward(self, context: None = None) -> Independent:
        return Independent(Normal(self.loc.double(), self.scale.double()), 1)


@pytest.mark.parametrize("plain", [False, True], ids=["joint-sampler", "plain"])
@torch.no_grad()
def test_vae_samples_follow_the_linear_gaussian_marginal(plain):
    """x ~ p(x) = N(b, W W^T + s^2 I): draws of z from the prior and of x from p(x|z), not means."""
    model, marginal = make()
    if plain:
        model.prior_module = _PlainNormalPrior(model.latent_dim)
    xs, means = model.sample(20_000, generator=torch.Generator().manual_seed(0))
    flat = xs.view(20_000, -1)
    assert (flat.mean(0) - marginal.mean).abs().max() < 0.05
    assert (torch.cov(flat.T) - marginal.covariance_matrix).abs().max() < 0.1
    assert not torch.equal(xs, means)


# --- models/autoencoder.py ---------------------------------------------------------------------
@torch.no_grad()
def test_autoencoder_scales_its_input_and_reconstructs_the_decoder_s_mean():
    from dgmkit.models import Autoencoder

    torch.manual_seed(0)
    enc = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).double()
    dec = Decoder(nn.Linear(2, 4), BernoulliHead(), (1, 1, 4)).double()
    ae = Autoencoder(enc, dec, 2, input_scale=0.25)
    x = torch.tensor([[[[4.0, 0.0, 8.0, 2.0]]]], dtype=torch.float64)
    code = enc(x * 0.25)
    torch.testing.assert_close(ae.posterior(x).mean, code)
    torch.testing.assert_close(ae.reconstruct(x), torch.sigmoid(dec.net(code)).view(1, 1, 1, 4))


# --- models/helmholtz.py -----------------------------------------------------------------------
def _helmholtz():
    from dgmkit.models import HelmholtzMachine

    torch.manual_seed(0)
    m = HelmholtzMachine((1, 1, 3), [2, 3])
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3)
    return m


@torch.no_grad()
def test_helmholtz_likelihood_reads_the_bottom_layer_and_the_summaries_are_the_mean_field():
    m = _helmholtz()
    h = torch.tensor(list(itertools.product([0.0, 1.0], repeat=5)))  # (32, 2 + 3)
    x = torch.tensor([[[[1.0, 0.0, 1.0]]]])
    logits = m.generative[0].weight @ h[:, :2].T + m.generative[0].bias[:, None]  # (3, 32)
    by_hand = (x.view(3, 1) * logits - F.softplus(logits)).sum(0)
    torch.testing.assert_close(m.likelihood(h).log_prob(x), by_hand)
    p1 = torch.sigmoid(m.recognition[0](x.flatten(1)))
    p2 = torch.sigmoid(m.recognition[1](p1))
    torch.testing.assert_close(m.posterior(x).mean, torch.cat([p1, p2], -1))
    want = torch.sigmoid(m.generative[0]((p1 > 0.5).float())).view(1, 1, 1, 3)
    torch.testing.assert_close(m.reconstruct(x), want)


@torch.no_grad()
def test_helmholtz_samples_are_binary_draws_of_p_x():
    m = _helmholtz()
    xs, means = m.sample(50_000, generator=torch.Generator().manual_seed(0))
    assert set(xs.unique().tolist()) <= {0.0, 1.0} and not torch.equal(xs, means)
    h = torch.tensor(list(itertools.product([0.0, 1.0], repeat=5)))
    grid = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3))).view(8, 1, 1, 3)
    log_px = torch.logsumexp(m.likelihood(h[:, None]).log_prob(grid) + m.prior().log_prob(h)[:, None], 0)
    codes = (xs.view(-1, 3) * torch.tensor([4.0, 2.0, 1.0])).sum(-1).long()
    freq = torch.bincount(codes, minlength=8).double() / 50_000
    assert (freq - log_px.exp().double()).abs().max() < 0.01


# --- nn/made.py --------------------------------------------------------------------------------
def _connections(made) -> torch.Tensor:
    """Which input reaches which output (D, D) through the masks' product."""
    reach = made.hidden_layers[0].mask
    for layer in list(made.hidden_layers)[1:]:
        reach = layer.mask @ reach
    return (made.output_layer.mask @ reach)[: made.features] > 0


def test_made_hidden_units_each_see_an_input_and_outputs_see_every_earlier_input():
    """Hidden degrees lie in [1, D-1]: no unit is blind to every input, and output d is reached by
    every input before it, for the evenly spread degrees and for random ones."""
    from dgmkit.nn.made import MADE

    made = MADE(4, [16, 16], 1)
    made.set_order(torch.tensor([2, 0, 3, 1]))
    for m in [made, MADE(4, [64, 64], 1)]:
        if m is not made:
            m.resample(torch.Generator().manual_seed(0))
        assert (m.hidden_layers[0].mask.sum(1) > 0).all()
        order = m.order
        earlier = order[None, :] < order[:, None]  # [d, j]: input j comes before output d
        assert torch.equal(_connections(m), earlier)


# --- nn/mlp.py ---------------------------------------------------------------------------------
def test_mlp_is_affine_layers_with_the_activation_between_them():
    from dgmkit.nn import MLP

    torch.manual_seed(0)
    for act, fn in [("relu", torch.relu), ("tanh", torch.tanh), ("elu", F.elu), ("silu", F.silu), ("gelu", F.gelu)]:
        mlp = MLP(3, [5], 2, act=act).double()
        x = torch.randn(4, 3, dtype=torch.float64)
        torch.testing.assert_close(mlp(x), mlp[-1](fn(mlp[0](x))))


# --- conditional/encoder.py, iaf_encoder.py, categorical_encoder.py, decoder.py ----------------
def test_gaussian_encoder_draws_are_pathwise_in_the_mean_and_the_scale():
    torch.manual_seed(0)
    enc = GaussianEncoder(nn.Linear(3, 4), 2).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    check_directional_derivative(lambda: enc(x).rsample().pow(2).sum(), list(enc.parameters()))


def test_iaf_encoder_draws_are_pathwise_in_the_base_mean_and_scale():
    from dgmkit import transforms as T
    from dgmkit.conditional import IAFEncoder

    torch.manual_seed(0)
    enc = IAFEncoder(nn.Linear(3, 2 * 2 + 2), 2, 2, T.iaf(2, [8], 2, context_features=2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    check_directional_derivative(lambda: enc(x).rsample().pow(2).sum(), list(enc.net.parameters()))


@torch.no_grad()
def test_categorical_encoder_is_the_softmax_of_the_network_s_logits():
    from dgmkit.conditional import CategoricalEncoder

    torch.manual_seed(0)
    net = nn.Linear(4, 2 * 3).double()
    values = torch.stack([F.one_hot(torch.tensor(c), 3) for c in itertools.product(range(3), repeat=2)]).double()
    inp = torch.randn(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    q = CategoricalEncoder(net, 2, 3)(inp)
    ls = F.log_softmax(net(inp).view(2, 3), -1)
    want = torch.stack([ls[0, a] + ls[1, b] for a, b in itertools.product(range(3), repeat=2)])
    torch.testing.assert_close(q.log_prob(values[:, None]).squeeze(-1), want)


def test_categorical_vae_baseline_reads_scaled_input_and_is_trained():
    from dgmkit.conditional import CategoricalEncoder
    from dgmkit.models import CategoricalVAE
    from dgmkit.priors import UniformCategoricalPrior

    torch.manual_seed(0)
    enc = CategoricalEncoder(nn.Sequential(nn.Flatten(), nn.Linear(4, 6)), 2, 3)
    dec = Decoder(nn.Linear(6, 4), BernoulliHead(), (1, 1, 4))
    base = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
    model = CategoricalVAE(enc, dec, UniformCategoricalPrior(2, 3), baseline=base, input_scale=0.5).double()
    x = torch.tensor([[[[2.0, 0.0, 4.0, 2.0]]]], dtype=torch.float64)
    b = model.baseline_value(x)
    torch.testing.assert_close(b, base(x * 0.5).squeeze(-1))
    b.sum().backward()
    torch.testing.assert_close(base[1].weight.grad, (x * 0.5).view(1, 4))


@torch.no_grad()
def test_decoder_pixel_log_pmf_is_the_likelihood_of_each_pixel_value():
    torch.manual_seed(0)
    dec = Decoder(nn.Linear(2, 2 * 4 * 2 * 3), CategoricalHead(4), (2, 2, 3)).double()
    z = torch.randn(5, 2, dtype=torch.float64)
    x = torch.randint(0, 4, (5, 2, 2, 3)).double()
    pmf = dec.pixel_log_pmf(z)  # (5, 2, 2, 3, 4)
    picked = pmf.gather(-1, x.long()[..., None]).squeeze(-1).flatten(1).sum(-1)
    torch.testing.assert_close(picked, dec(z).log_prob(x))
    torch.testing.assert_close(pmf.exp().sum(-1), torch.ones(5, 2, 2, 3, dtype=torch.float64))
