"""What a mutation sweep of the priors (priors/) and the numerical parts of nn/ (made.py,
causal.py, pixelcnn.py, quantize.py, data_init.py, scale.py) found unchecked: that only a
mixture prior has components to assign z to, the uniform categorical prior against K^-V, the
flow prior's dtype and change-of-variables density, a new mixture's equal weights and the ends
of its scale range, the VampPrior's init (its shape, the clamp into [0.01, 0.99], a copy of free
inputs) and its refusal without an encoder, that fixed priors save nothing; MADE's exact
connectivity without direct connections (fixed and random hidden degrees over 1..D-1), its
context (which reaches every output, the first in the order through the hidden units of degree
0) and refusals; the causal net's receptive field set and kernel refusal; PixelCNN kernels
without a centre, each half of the condition map, and whole values back from generation at an
inexact input scale; the quantizer's perplexity formula, setting ranges, initial codebook,
lookup refusals, k-means start (distinct vectors, empty clusters kept, counts and sums),
dead-code restarts at the threshold, evaluation and reloaded states; the scale maps against
their formulas. A training pass of the quantizer on a map of no positions (the CPU's path) drew
from an empty batch and failed; it now changes no code, as the GPU's path did."""

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from dgmkit.config import RunConfig, build_model
from dgmkit.priors import FlowPrior, MixtureOfGaussiansPrior, StandardNormalPrior, UniformCategoricalPrior, VampPrior


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- priors ------------------------------------------------------------------------------------


def test_only_a_mixture_prior_has_components_to_assign_z_to():
    """A VAE clusters (``num_components``, ``assign_components``) only with a mixture prior; a
    standard normal or a VampPrior (whose K pseudo-inputs are no clusters) refuse by name."""
    z = torch.randn(4, 3)
    for prior in (StandardNormalPrior(3), VampPrior(3, (1, 2, 2), components=5)):
        assert not prior.has_components
        with pytest.raises(TypeError, match="is not a mixture"):
            prior.assign(z)
    model = build_model(RunConfig.of(hidden=[8], latent_dim=3), (1, 2, 2), 2)
    assert model.num_components is None
    mog = MixtureOfGaussiansPrior(3, components=4)
    assert mog.has_components and mog.components == 4 and mog.assign(z).shape == (4,)


def test_the_uniform_categorical_prior_is_uniform_over_one_hot_vectors():
    """p(z) = K^-V on each of the K^V one-hot configurations, event shape (V, K)."""
    prior = UniformCategoricalPrior(2, 3)
    assert (prior.latent_dim, prior.num_classes) == (2, 3)
    p = prior()
    assert tuple(p.event_shape) == (2, 3) and tuple(p.batch_shape) == ()
    eye = torch.eye(3)
    z = torch.stack([torch.stack([eye[i], eye[j]]) for i in range(3) for j in range(3)])  # (9, 2, 3)
    assert torch.allclose(p.log_prob(z), torch.full((9,), -2 * math.log(3)))
    s = p.sample((500,))
    assert s.shape == (500, 2, 3) and torch.equal(s.sum(-1), torch.ones(500, 2))


@pytest.mark.parametrize("classes", [1, 0, 2.5])
def test_the_uniform_categorical_prior_needs_two_classes_or_more(classes):
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        UniformCategoricalPrior(2, classes)


def test_a_flow_prior_is_in_its_module_s_dtype_and_is_the_change_of_variables_density():
    """p(z) = N(T(z); 0, I) |det dT/dz|, in float32 as built (and float64 once cast)."""
    from dgmkit.transforms import maf

    torch.manual_seed(0)
    prior = FlowPrior(2, maf(2, [8], 2))
    p = prior()
    z = torch.randn(5, 2)
    assert p.sample((3,)).dtype == torch.float32 and p.log_prob(z).dtype == torch.float32
    u, logdet = prior.bijection(z)
    expected = Independent(Normal(torch.zeros(2), torch.ones(2)), 1).log_prob(u) + logdet
    assert torch.allclose(p.log_prob(z), expected, atol=1e-5)


@pytest.mark.parametrize("scales", [(1.0, 0.0), (1e-3, 1e-3), (math.inf, 1e-3)])
def test_a_mixture_prior_refuses_scales_at_the_ends_of_its_range_by_name(scales):
    """A floor of 0 (scales may underflow to 0), an initial scale equal to its floor (math's
    "domain error" otherwise) and an infinite initial scale (infinite scales) are refused."""
    init_scale, min_scale = scales
    with pytest.raises(ValueError, match="need 0 < min_scale < init_scale"):
        MixtureOfGaussiansPrior(2, init_scale=init_scale, min_scale=min_scale)


def test_a_new_mixture_prior_weighs_its_components_equally():
    """At the start, p(z) = (1/K) sum_k N(z; mu_k, init_scale^2 I): log K normalises the sum."""
    torch.manual_seed(0)
    prior = MixtureOfGaussiansPrior(2, components=5, init_scale=0.7)
    z = torch.randn(6, 2)
    per_k = Independent(Normal(prior.means.detach()[:, None], 0.7), 1).log_prob(z)  # (K, 6)
    assert torch.allclose(prior().log_prob(z), torch.logsumexp(per_k, 0) - math.log(5), atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 1, 2, 2), (3, 4), (3, 2, 2)])
def test_vampprior_refuses_initial_pseudo_inputs_of_another_shape(shape):
    """K pseudo-inputs of the encoder's input shape, no other (not even with as many numbers)."""
    with pytest.raises(ValueError, match=r"init must have shape \(3, 1, 2, 2\)"):
        VampPrior(2, (1, 2, 2), components=3, init=torch.rand(shape))


def test_vampprior_maps_bounded_initial_inputs_into_the_open_unit_interval_and_copies_free_ones():
    """Bounded: any value is clamped to [0, 1], then mapped to 0.01 + 0.98 u (inside hardtanh's
    gradient). Free: the values as given, copied, so training the prior leaves the caller's tensor alone."""
    init = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0]).view(5, 1)
    bounded = VampPrior(2, (1,), components=5, init=init)
    assert torch.allclose(bounded.pseudo_inputs.detach().flatten(), torch.tensor([0.01, 0.01, 0.5, 0.99, 0.99]))
    kept = init.clone()
    free = VampPrior(2, (1,), components=5, init=init, bounded=False)
    assert torch.equal(free.pseudo_input_values().detach(), init)
    free.pseudo_inputs.sum().backward()
    torch.optim.SGD(free.parameters(), lr=0.5).step()
    assert torch.equal(init, kept) and torch.equal(free.pseudo_inputs.detach(), init - 0.5)


def test_a_float64_vampprior_weighs_its_components_in_float64():
    """Its equal weights, log 1/K, in the precision of the encoder's means (float32 zeros made
    every log p(z) of a float64 model carry log K rounded to float32)."""
    from torch import nn

    from dgmkit.conditional import GaussianEncoder

    encoder = GaussianEncoder(nn.Sequential(nn.Flatten(), nn.Linear(4, 4)), 2).double()
    prior = VampPrior(2, (1, 2, 2), components=3).double()
    p = prior(encoder)
    assert p.logits.dtype == torch.float64 and p.loc.dtype == torch.float64
    z = torch.randn(5, 2, dtype=torch.float64)
    q_u = encoder(prior.pseudo_input_values())
    per_k = Independent(Normal(q_u.mean[:, None], q_u.stddev[:, None]), 1).log_prob(z)  # (K, 5)
    assert torch.allclose(p.log_prob(z), torch.logsumexp(per_k, 0) - math.log(3), rtol=0, atol=1e-12)


def test_vampprior_without_its_encoder_says_so():
    with pytest.raises(TypeError, match="call it with the encoder"):
        VampPrior(2, (1, 2, 2), components=3)()


def test_fixed_priors_save_nothing():
    """The standard normal's and the uniform categorical's buffers (and the flow prior's dtype
    marker) are not in the state dict: a checkpoint holds only what was learnt."""
    from dgmkit.transforms import maf

    assert StandardNormalPrior(3).state_dict() == {} and UniformCategoricalPrior(2, 3).state_dict() == {}
    assert not [k for k in FlowPrior(2, maf(2, [4], 1)).state_dict() if "_zero" in k]
    model = build_model(RunConfig.of(hidden=[8], latent_dim=3), (1, 2, 2), 2)
    assert not [k for k in model.state_dict() if k.startswith("prior")]


# -- made.py -----------------------------------------------------------------------------------


def _made_dependencies(made, d: int, context: torch.Tensor | None = None) -> torch.Tensor:
    x = torch.randn(3, d, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: made(v, context).sum(0), x)  # (P, D, 3, D)
    return jac.abs().sum((0, 2)) > 0  # (D out, D in)


@pytest.mark.parametrize("order", [None, [3, 0, 4, 1, 2]])
def test_a_wide_made_output_sees_exactly_the_inputs_before_it(order):
    """Without direct connections, output d depends on every input earlier in the order (hidden
    degrees cover 1..D-1, each hidden unit sees the inputs of degree <= its own) and on no other."""
    torch.manual_seed(0)
    from dgmkit.nn import MADE

    made = MADE(5, [40, 40], 2, order=None if order is None else torch.tensor(order)).double()
    pos = made.order
    assert order is None or made.order.tolist() == order
    assert torch.equal(_made_dependencies(made, 5), pos[None, :] < pos[:, None])


def test_a_resampled_made_without_direct_connections_still_sees_every_earlier_input():
    """Random hidden degrees are drawn from 1..D-1, both ends included: the input in position D-2
    reaches the last output, and every hidden unit sees some input and is seen by some output."""
    from dgmkit.nn import MADE

    torch.manual_seed(0)
    made = MADE(4, [48, 48], 1).double()
    g = _g(5)
    for _ in range(4):
        made.resample(g)
        pos = made.order
        assert torch.equal(_made_dependencies(made, 4), pos[None, :] < pos[:, None])
        first = made.hidden_layers[0].mask
        assert (first.sum(1) > 0).all() and (made.output_layer.mask.sum(0) > 0).all()


def test_made_hidden_degrees_are_spread_evenly_over_one_to_d_minus_one():
    """Evenly (no generator): no hidden unit of degree 0 (a constant, seeing no input) nor of degree
    >= D (seen by no output); the first hidden layer's mask counts each unit's degree."""
    from dgmkit.nn import MADE

    made = MADE(5, [9], 1)
    assert made.hidden_layers[0].mask.sum(1).tolist() == [1, 1, 2, 2, 2, 3, 3, 4, 4]
    gen = MADE(5, [200], 1)
    gen.resample(_g(0))
    degrees = gen.hidden_layers[0].mask.sum(1)
    assert degrees.min() == 1 and degrees.max() == 4
    assert len(set(degrees.tolist())) == 4 and not torch.equal(degrees, torch.sort(degrees).values)


def _context_reach(made) -> torch.Tensor:
    c = torch.randn(3, 2, dtype=torch.float64)
    x = torch.randn(3, 3, dtype=torch.float64)
    return torch.autograd.functional.jacobian(lambda v: made(x, v).sum(0), c).abs().sum((0, 2, 3)) > 0  # (D,)


def test_a_conditional_made_reads_its_context_and_needs_it():
    """The context enters the first hidden layer unmasked (no bias of its own: that layer has one),
    so every output that sees a hidden unit sees it; a conditional MADE called without it says so."""
    from dgmkit.nn import MADE

    torch.manual_seed(0)
    made = MADE(3, [16], 2, context_features=2).double()
    assert _context_reach(made)[1:].all()
    one = MADE(1, [8], 2, context_features=2).double()  # a single input: its degree-0 hidden units carry c
    c = torch.randn(3, 2, dtype=torch.float64)
    assert torch.autograd.functional.jacobian(lambda v: one(torch.zeros(3, 1, dtype=torch.float64), v), c).abs().sum() > 0
    with pytest.raises(ValueError, match="this MADE is conditional: pass a context"):
        made(torch.zeros(1, 3, dtype=torch.float64))
    assert made.context.bias is None


def test_a_resampled_conditional_made_still_takes_the_context_to_every_output():
    """Random hidden degrees (``resample``, ``set_order`` with a generator) keep a unit of degree 0 in
    every layer, the only path from c to the first output in the order: drawn from 0..D-1 alone, none
    was drawn in 13% of these connectivities (51% for D = 784 and 500 units), and p(x_1 | c) was p(x_1)."""
    from dgmkit.nn import MADE

    torch.manual_seed(0)
    made = MADE(7, [20, 15], 1, context_features=2, act="tanh").double()  # (tanh: no unit is dead at a point)
    g = _g(3)
    x, c = torch.randn(2, 7, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    for _ in range(30):
        made.resample(g)
        reach = torch.autograd.functional.jacobian(lambda v: made(x, v).sum(0), c).abs().sum((0, 2, 3)) > 0  # (D,)
        assert reach.all(), f"outputs {torch.nonzero(~reach).flatten().tolist()} ignore c in order {made.order.tolist()}"
        pos = made.order
        assert not (_made_dependencies(made, 7, c[:1].expand(3, 2)) & ~(pos[None, :] < pos[:, None])).any()


def test_the_first_output_of_a_conditional_made_depends_on_the_context():
    """p(x_1 | c) of one conditional MAF/IAF step depends on c: the first output in the order
    sees no input, but it sees the hidden units of degree 0, which carry the context (nflows PR
    #85 fixed the same gap); the outputs stay autoregressive in x, and a MADE without a context
    keeps its hidden degrees from 1 (a unit of degree 0 would be a constant)."""
    from dgmkit.nn import MADE

    torch.manual_seed(0)
    made = MADE(3, [16, 16], 2, context_features=2).double()
    assert _context_reach(made).all()
    x = torch.randn(3, dtype=torch.float64)
    c = torch.randn(1, 2, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: made(v[None], c)[0], x)  # (P, D, D)
    assert (jac.abs().sum(0) > 0).equal(torch.ones(3, 3).tril(-1).bool())  # output d sees exactly x_{<d}
    assert min(MADE(3, [16], 2).hidden_layers[0].mask.sum(1)) >= 1  # unconditional: every hidden unit sees an input


def test_made_direct_connections_are_masked_and_used():
    """The direct input -> output map adds x_{<d} linearly (no bias of its own): through it alone
    (hidden path zeroed), output d is a linear function of exactly the earlier inputs."""
    from dgmkit.nn import MADE

    torch.manual_seed(0)
    made = MADE(4, [8], 2, direct=True).double()
    assert made.direct.bias is None
    with torch.no_grad():
        made.output_layer.weight.zero_()
        made.output_layer.bias.zero_()
    x = torch.randn(2, 4, dtype=torch.float64)
    w = (made.direct.weight * made.direct.mask).unflatten(0, (2, 4))  # (P, D, D)
    assert torch.allclose(made(x), torch.einsum("pde,be->bpd", w, x))
    pos = made.order
    assert torch.equal(_made_dependencies(made, 4), pos[None, :] < pos[:, None])


@pytest.mark.parametrize("bad", [[0, 0, 1], [0, 1, 3], [0, 1]])
def test_made_refuses_an_order_that_is_no_permutation(bad):
    from dgmkit.nn import MADE

    with pytest.raises(ValueError, match=r"order must be a permutation of range\(3\)"):
        MADE(3, [8], 1, order=torch.tensor(bad))


@pytest.mark.parametrize(
    "args, needle",
    [((0, [8], 1), "features >= 1"), ((3, [8, 0], 1), "positive hidden sizes"), ((3, [], 1), "positive hidden sizes")],
)
def test_made_refuses_sizes_that_build_nothing(args, needle):
    from dgmkit.nn import MADE

    with pytest.raises(ValueError, match=needle):
        MADE(*args)
    with pytest.raises(ValueError, match="context_features"):
        MADE(3, [8], 1, context_features=-1)


# -- causal.py, pixelcnn.py ----------------------------------------------------------------------


def test_a_causal_conv_net_sees_exactly_its_receptive_field_before_t():
    """k = 2 and 3 layers (dilations 1, 1, 2): output t depends on x_{t-5} .. x_{t-1} and on nothing
    else, and ``receptive_field`` says 5; k = 3 and 8 layers see 257 positions (the docstring's)."""
    from dgmkit.nn.causal import CausalConvNet

    torch.manual_seed(0)
    net = CausalConvNet(1, 2, channels=4, layers=3, kernel=2).double()
    assert net.dilations == [1, 1, 2] and net.receptive_field == 5
    x = torch.randn(2, 1, 12, dtype=torch.float64)
    dep = torch.autograd.functional.jacobian(lambda v: net(v).sum((0, 1)), x).abs().sum((1, 2)) > 0  # (T out, T in)
    t = torch.arange(12)
    assert torch.equal(dep, (t[None, :] < t[:, None]) & (t[None, :] >= t[:, None] - 5))
    assert CausalConvNet(1, 1, layers=8, kernel=3).receptive_field == 257
    with pytest.raises(ValueError, match="kernel must be >= 2, got 1"):
        CausalConvNet(1, 1, kernel=1)


def _conv_refusals():
    from dgmkit.nn.causal import CausalConvNet
    from dgmkit.nn.conv import ConvDecoderNet, ConvEncoderNet, DownsamplingEncoder, UpsamplingDecoder
    from dgmkit.nn.pixelcnn import GatedPixelCNNNet

    return [
        (lambda: CausalConvNet(1, 2, 4, layers=0), "CausalConvNet's layers must be an integer >= 1, got 0"),
        (lambda: GatedPixelCNNNet(1, 2, 4, layers=0), "GatedPixelCNNNet's layers must be an integer >= 1, got 0"),
        (lambda: GatedPixelCNNNet(1, 2, 0), "GatedPixelCNNNet's channels must be an integer >= 1, got 0"),
        (lambda: ConvEncoderNet((1, 0, 4), 3), r"positive sizes, got \(1, 0, 4\)"),
        (lambda: ConvDecoderNet(3, (0, 4, 4), 1), r"positive sizes, got \(0, 4, 4\)"),
        (lambda: UpsamplingDecoder(2, 1, 4, 0), "at least one doubling, got 0"),
        (lambda: DownsamplingEncoder(1, 2, 4, 1)(torch.zeros(1, 1, 7, 7)), "1 halving needs .* divisible by 2, got 7x7"),
        (lambda: DownsamplingEncoder(1, 2, 4, 2)(torch.zeros(1, 1, 28, 6)), "divisible by 4, got 28x6"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_conv_networks_refuse_sizes_they_cannot_build_by_name(case):
    """Each was built or run without a word, or failed in other words: a causal net of 0 layers had
    one, an upsampling decoder of 0 doublings gave ``width`` channels, a 7x7 image went 7 -> 3 -> 6
    through a downsampling encoder and its mirror; the rest failed in torch's words or divided by 0."""
    make, message = _conv_refusals()[case]
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("kernel", [1, 2, 4])
def test_a_pixelcnn_layer_refuses_a_kernel_without_a_centre(kernel):
    from dgmkit.nn.pixelcnn import GatedPixelCNNLayer

    with pytest.raises(ValueError, match=f"kernel must be odd and >= 3, got {kernel}"):
        GatedPixelCNNLayer(1, 4, kernel, first=True)


def test_the_pixelcnn_condition_enters_both_stacks_and_is_refused_where_none_was_built():
    """Either half of the condition's 1x1 map alone (the vertical's, the horizontal's) reaches the
    output at a pixel; a net built without a condition refuses one by name."""
    from dgmkit.nn.pixelcnn import GatedPixelCNNNet

    torch.manual_seed(0)
    net = GatedPixelCNNNet(1, 2, channels=4, layers=2, cond_channels=3).double()
    x = torch.rand(1, 1, 3, 3, dtype=torch.float64)
    s = torch.randn(1, 3, 3, 3, dtype=torch.float64)
    for half in (0, 1):
        for layer in net.stack:
            w = layer.cond.weight.detach().clone()
            with torch.no_grad():
                layer.cond.weight[half * 8 : (half + 1) * 8] = 0
                layer.cond.bias.zero_()
            layer.saved = w
        jac = torch.autograd.functional.jacobian(lambda v: net(x, v)[0, :, 2, 2].sum(), s)
        assert jac.abs().sum() > 0, f"only the {'horizontal' if half == 0 else 'vertical'} half: no effect"
        for layer in net.stack:
            with torch.no_grad():
                layer.cond.weight.copy_(layer.saved)
    plain = GatedPixelCNNNet(1, 2, channels=4, layers=2).double()
    with pytest.raises(ValueError, match="built without a condition"):
        plain(x, s)


# -- quantize.py, data_init.py -------------------------------------------------------------------


def _vq(**kw):
    from dgmkit.nn.quantize import VectorQuantizer

    torch.manual_seed(0)
    return VectorQuantizer(**{"num_codes": 6, "dim": 3, "kmeans_init": False, "channel_dim": -1, **kw})


def test_perplexity_is_the_exponentiated_entropy_of_the_code_frequencies():
    from dgmkit.nn.quantize import perplexity

    counts = torch.tensor([3, 0, 1, 6])
    p = torch.tensor([0.3, 0.1, 0.6], dtype=torch.float64)
    assert perplexity(counts).item() == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    assert perplexity(torch.zeros(5, dtype=torch.long)).item() == 1.0  # no code used (an empty batch): 1, not NaN


@pytest.mark.parametrize(
    "bad",
    [
        {"num_codes": 1},
        {"dim": 0},
        {"decay": 0.0},
        {"decay": 1.0},
        {"commitment": -0.5},
        {"eps": 0.0},
        {"dead_threshold": -1.0},
        {"kmeans_iters": -1},
    ],
)
def test_the_quantizer_refuses_settings_outside_their_ranges(bad):
    with pytest.raises(ValueError, match="need"):
        _vq(**bad)


def test_a_new_ema_codebook_is_its_sums_over_unit_counts_at_scale_one_over_root_d():
    """e = m / N from the start (N = 1, m = e), codes drawn N(0, I / D): a code no vector picks in
    the first update stays where it was, up to the decay of both statistics and the smoothing."""
    from dgmkit.nn.quantize import VectorQuantizer

    torch.manual_seed(0)
    big = VectorQuantizer(2000, 16, kmeans_init=False)
    assert big.embedding.std().item() == pytest.approx(0.25, rel=0.05)
    vq = _vq(decay=0.5, restart_dead=False)
    assert torch.equal(vq.cluster_size, torch.ones(6)) and torch.equal(vq.embed_sum, vq.embedding)
    e0 = vq.embedding.clone()
    z = e0[:1] + 1e-3 * torch.randn(10, 3)  # every vector picks code 0
    vq.train()(z)
    n = torch.tensor([5.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    smoothed = (n + 1e-5) / (n.sum() + 6e-5) * n.sum()
    torch.testing.assert_close(vq.embedding[1:], (0.5 * e0[1:]) / smoothed[1:, None])


def test_the_quantizer_refuses_maps_whose_vectors_are_not_its_dimension_and_bad_codes():
    """A (2, 2, 3, 3) map of 3-vectors in dimension 1 has 36 numbers, 12 vectors' worth: still
    refused. Indices: integers in 0..K-1, no negative (Python's from-the-end) nor float ones."""
    vq = _vq(channel_dim=1)
    with pytest.raises(ValueError, match="dimension 3 in dimension 1"):
        vq(torch.randn(2, 2, 3, 3))
    for bad in (torch.tensor([-1]), torch.tensor([1.0]), torch.tensor([6])):
        with pytest.raises(ValueError, match=r"0\.\.5"):
            vq.lookup(bad)
    idx = torch.tensor([[[0, 5], [2, 3]]])  # (B, H, W)
    assert torch.equal(vq.lookup(idx), vq.embedding[idx].movedim(-1, 1))  # (B, D, H, W)


def test_kmeans_starts_from_distinct_vectors_of_the_batch_and_keeps_empty_clusters_in_place():
    """K vectors for K codes and no iteration: the codebook is the batch itself (distinct vectors,
    not a draw with replacement). Fewer vectors than codes: repeated, jittered apart. A centre that
    loses its vectors (two starts on one value) stays where it was, not at the origin."""
    from dgmkit.nn.data_init import initialisation_pass

    flat = torch.randn(6, 3, generator=_g(1))
    vq = _vq(kmeans_init=True, kmeans_iters=0).train()
    with initialisation_pass(vq):
        vq(flat)
    assert torch.equal(torch.sort(vq.embedding, 0).values, torch.sort(flat, 0).values)
    few = _vq(kmeans_init=True, kmeans_iters=0).train()
    with initialisation_pass(few):
        few(flat[:2])
    assert torch.pdist(few.embedding).min() > 0
    a, b = torch.tensor([3.0, 0, 0]), torch.tensor([-3.0, 0, 0])
    twins = _vq(num_codes=3, kmeans_init=True, kmeans_iters=2).train()
    with initialisation_pass(twins):
        twins(torch.stack([a, a, a, b, b, b]))
    assert all(torch.equal(e, a) or torch.equal(e, b) for e in twins.embedding)


def test_a_kmeans_start_gives_each_code_its_count_and_sum_at_least_one():
    """After the start (within an initialisation pass: no moving-average step), N_k = max(1, n_k)
    and m_k = N_k e_k, so that the first update starts from e_k = m_k / N_k."""
    from dgmkit.nn.data_init import initialisation_pass

    z = torch.cat([torch.full((5, 3), 2.0), torch.full((1, 3), -2.0), torch.randn(2, 3, generator=_g(2)) * 0.01])
    vq = _vq(num_codes=4, kmeans_init=True, kmeans_iters=3).train()
    with initialisation_pass(vq):
        vq(z)
    k = torch.cdist(z, vq.embedding).argmin(1)
    counts = torch.bincount(k, minlength=4).float().clamp_min(1)
    assert torch.equal(vq.cluster_size, counts)
    torch.testing.assert_close(vq.embed_sum, vq.embedding * counts[:, None])


def test_dead_codes_restart_on_a_vector_of_the_batch_with_a_count_of_one():
    """After the moving-average step, a code whose count is below the threshold (not at it) is set
    to a vector of the batch, its sum to that vector and its count to 1 (on the CPU's path)."""
    vq = _vq(decay=0.5, dead_threshold=0.5).train()
    with torch.no_grad():
        vq.cluster_size.copy_(torch.tensor([0.1, 2.0, 0.3, 5.0, 1.0, 0.0]))
        vq.embed_sum.copy_(vq.embedding * vq.cluster_size[:, None])
    z = vq.embedding[3] + 1e-3 * torch.randn(50, 3, generator=_g(1))  # every vector picks code 3
    vq(z)
    # counts after the step: [0.05, 1.0, 0.15, 25.5, 0.5, 0.0]: codes 0, 2, 5 are dead, code 4 is at the threshold
    assert vq.cluster_size.tolist() == pytest.approx([1.0, 1.0, 1.0, 27.5, 0.5, 1.0])
    for j in (0, 2, 5):
        assert any(torch.equal(vq.embedding[j], v) for v in z) and torch.equal(vq.embed_sum[j], vq.embedding[j])
    assert not any(torch.equal(vq.embedding[4], v) for v in z)


def test_an_evaluation_pass_neither_initialises_nor_updates_the_codebook():
    vq = _vq(kmeans_init=True).eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(20, 3))
    assert not bool(vq.initialized) and all(torch.equal(v, before[k]) for k, v in vq.state_dict().items())


def test_a_loaded_state_is_read_again_so_an_uninitialised_one_initialises():
    """The host's copy of the ``initialized`` flag is dropped on a load: a module that had been
    initialised, loaded with an uninitialised state, starts from k-means at its next training pass."""
    fresh = _vq(kmeans_init=True).state_dict()
    vq = _vq(kmeans_init=True).train()
    vq(torch.randn(20, 3))
    assert bool(vq.initialized)
    vq.load_state_dict(fresh)
    assert vq.needs_initialising()
    vq(torch.randn(20, 3) + 10.0)
    assert bool(vq.initialized) and (vq.embedding[:, 0] > 5).all()


# -- scale.py ----------------------------------------------------------------------------------


def test_the_scale_maps_against_their_formulas_and_their_refusals():
    """softplus(raw) + min_scale; exp(clamp(raw, -6, 2) / 2) (0.0498 <= sigma <= 2.718), and the
    setting's name picks one, passing min_scale on."""
    from dgmkit.nn.scale import ClippedLogVariance, SoftplusScale, scale_map

    raw = torch.tensor([-50.0, -7.0, -1.0, 0.0, 1.5, 3.0], dtype=torch.float64)
    torch.testing.assert_close(SoftplusScale(0.01)(raw), torch.log1p(raw.exp()) + 0.01)
    torch.testing.assert_close(ClippedLogVariance()(raw), torch.exp(raw.clamp(-6, 2) / 2))
    assert ClippedLogVariance()(raw).min().item() == pytest.approx(math.exp(-3))
    assert scale_map("softplus", 0.2)(torch.tensor([-100.0])).item() == pytest.approx(0.2)
    assert isinstance(scale_map("clipped-log-variance"), ClippedLogVariance)
    with pytest.raises(ValueError, match="unknown scale parametrisation 'exp'"):
        scale_map("exp")  # type: ignore[arg-type]
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="min_scale must be a positive number"):
            SoftplusScale(bad)
    for low, high in ((1.0, 1.0), (2.0, -6.0), (-math.inf, 2.0), (-6.0, math.nan)):
        with pytest.raises(ValueError, match="need finite bounds low < high"):
            ClippedLogVariance(low, high)


@pytest.mark.parametrize("cached", [True, False])
def test_pixelcnn_generation_returns_the_chosen_whole_values_at_an_inexact_input_scale(cached):
    """The network reads value * input_scale; the values given back are the chosen integers exactly
    (rounded back from the scaled image: 3 * 0.1 / 0.1 is not 3 in floating point)."""
    from dgmkit.nn.pixelcnn import GatedPixelCNNNet

    torch.manual_seed(0)
    net = GatedPixelCNNNet(1, 2, channels=4, layers=2)
    values = torch.tensor([13.0, 21, 26, 31, 42, 47, 52, 57, 62])
    out = net.generate(torch.zeros(2, 1, 3, 3), lambda t, p: values[t].expand(len(p)), input_scale=0.1, cached=cached)
    assert torch.equal(out, values.view(1, 1, 3, 3).expand(2, 1, 3, 3))


@pytest.mark.parametrize("free_reads", [True, False])
def test_a_training_pass_on_a_map_of_no_positions_changes_no_code(monkeypatch, free_reads):
    """No vector to start k-means from nor to restart a dead code at (the CPU's path drew from an
    empty batch: "random_ expects 'from' to be less than 'to'"; the GPU's returned): the codes stay."""
    from dgmkit.nn import quantize

    monkeypatch.setattr(quantize, "reads_are_free", lambda t: free_reads)
    for kmeans in (False, True):
        vq = _vq(channel_dim=1, kmeans_init=kmeans, dead_threshold=2.0).train()
        before = vq.embedding.clone()
        out = vq(torch.zeros(2, 3, 0, 4))
        assert out.z_q.shape == (2, 3, 0, 4) and out.indices.shape == (2, 0, 4)
        assert torch.equal(out.commitment, torch.zeros(2))
        assert torch.allclose(vq.embedding, before, atol=1e-5) and bool(vq.initialized) != kmeans


def test_a_layer_prior_takes_2m_numbers_per_draw_above_and_refuses_other_widths_by_name():
    """p(z_l | z_above) = N(loc, softplus(raw) + min_scale) from the net's 2M numbers; a net of 2M + 1
    made a prior whose one raw scale was shared by every dimension (the M + 1 numbers after the
    means broadcast), with no word said."""
    from torch import nn

    from dgmkit.priors import GaussianLayerPrior

    torch.manual_seed(0)
    above = torch.randn(5, 3, dtype=torch.float64)
    net = nn.Linear(3, 8).double()
    prior = GaussianLayerPrior(net, 4, min_scale=0.01)
    h = net(above)
    z = torch.randn(5, 4, dtype=torch.float64)
    want = Independent(Normal(h[:, :4], torch.nn.functional.softplus(h[:, 4:]) + 0.01), 1).log_prob(z)
    torch.testing.assert_close(prior(above).log_prob(z), want)
    for width in (5, 7, 9):
        wrong = GaussianLayerPrior(nn.Linear(3, width).double(), 4)
        said = rf"prior network gave {width} numbers per draw of the layer above.*needs 2 \* 4 = 8"
        with pytest.raises(ValueError, match=said):
            wrong(above)
