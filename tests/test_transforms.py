"""One generic test that every bijection passes (inverse, log|det J| against autograd in
float64, gradients, save/load), and normalisation of every flow's density on a 2-D grid."""

import inspect
import io
import itertools
import math

import pytest
import torch

import dgmkit.transforms as T
from dgmkit.models import FlowModel
from dgmkit.nn import MLP, ConvConditioner
from dgmkit.transforms.base import Bijection


@pytest.fixture(autouse=True, scope="module")
def _float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def _mlp(d_in, d_out):
    return MLP(d_in, [16], d_out, "tanh")


# name -> (factory, event shape, context features); every Bijection subclass appears here
BIJECTIONS = {
    "additive-coupling": (lambda: T.AdditiveCoupling(T.alternating_mask(5), _mlp(3, 2)), (5,), 0),
    "additive-coupling-ctx": (lambda: T.AdditiveCoupling(T.alternating_mask(5, 1), _mlp(2 + 3, 3), 3), (5,), 3),
    "affine-coupling-vector": (lambda: T.AffineCoupling(T.alternating_mask(4), _mlp(2, 4)), (4,), 0),
    "affine-coupling-odd-parity": (lambda: T.AffineCoupling(T.alternating_mask(6, 1), _mlp(3, 6)), (6,), 0),
    "affine-coupling-tail": (lambda: T.AffineCoupling(torch.tensor([0.0, 0, 1, 1, 1]), _mlp(3, 4)), (5,), 0),
    "affine-coupling-scattered": (lambda: T.AffineCoupling(torch.tensor([1.0, 1, 0, 1, 0]), _mlp(3, 4)), (5,), 0),
    "affine-coupling-ctx": (lambda: T.AffineCoupling(T.alternating_mask(4), _mlp(2 + 2, 4), 2), (4,), 2),
    "affine-coupling-checkerboard": (
        lambda: T.AffineCoupling(T.checkerboard_mask(4, 4), ConvConditioner(2, 4, 8)),
        (2, 4, 4),
        0,
    ),
    "affine-coupling-channel": (lambda: T.AffineCoupling(T.channel_mask(4, 1), ConvConditioner(4, 8, 8)), (4, 2, 2), 0),
    "diagonal-scaling": (lambda: T.DiagonalScaling((5,)), (5,), 0),
    "logit": (lambda: T.Logit(0.05), (5,), 0),
    "permutation-random": (lambda: T.Permutation.random(6, torch.Generator().manual_seed(1)), (6,), 0),
    "permutation-reverse-image": (lambda: T.Permutation.reverse(3), (3, 2, 2), 0),
    "actnorm-vector": (lambda: T.ActNorm(4), (4,), 0),
    "actnorm-image": (lambda: T.ActNorm(3), (3, 2, 2), 0),
    "invertible-linear": (lambda: T.InvertibleLinear(4), (4,), 0),
    "invertible-1x1-conv": (lambda: T.InvertibleLinear(3), (3, 2, 2), 0),
    "squeeze": (lambda: T.Squeeze(), (2, 4, 4), 0),
    "maf-layer": (lambda: T.MaskedAffineAutoregressive(5, [20]), (5,), 0),
    "maf-layer-ctx": (lambda: T.MaskedAffineAutoregressive(5, [20], context_features=3), (5,), 3),
    "iaf-layer-ctx": (lambda: T.iaf_layer(5, [20], context_features=3), (5,), 3),
    "compose-nice": (lambda: T.nice(4, [16], 4), (4,), 0),
    "compose-realnvp-ctx": (lambda: T.realnvp(4, [16], 4, context_features=2), (4,), 2),
    "compose-glow": (lambda: T.glow(4, [16], 3), (4,), 0),
    "compose-maf": (lambda: T.maf(4, [16], 3), (4,), 0),
    "compose-iaf-ctx": (lambda: T.iaf(4, [16], 2, context_features=3), (4,), 3),
    "multiscale-realnvp": (lambda: T.realnvp_multiscale((1, 4, 4), hidden=8, layers=2, levels=2), (1, 4, 4), 0),
    "multiscale-glow": (lambda: T.glow_multiscale((1, 4, 4), hidden=8, layers=2, levels=2), (1, 4, 4), 0),
}


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def _build(name, seed=0):
    factory, shape, ctx = BIJECTIONS[name]
    torch.manual_seed(seed)
    f = factory().double()
    g = torch.Generator().manual_seed(seed + 100)
    x = _inputs(name, shape, g)
    c = torch.randn(x.shape[0], ctx, generator=g) if ctx else None
    with torch.no_grad():
        for p in f.parameters():  # move off the identity initialisation (zeroed last layers)
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    f.train()
    f(x, c)  # data-dependent initialisation (ActNorm)
    f.eval()
    return f, x, c


def _inputs(name, shape, g):
    x = torch.randn(7, *shape, generator=g)
    return torch.sigmoid(x) if name == "logit" else x


def test_every_bijection_is_registered():
    covered = set()
    for name in BIJECTIONS:
        f = _build(name)[0]
        covered |= {type(m) for m in f.modules() if isinstance(m, Bijection)}
    missing = {c.__name__ for c in _all_subclasses(Bijection) if not inspect.isabstract(c) and c.__name__[0] != "_"} - {
        c.__name__ for c in covered
    }
    assert not missing, f"bijections without an entry in BIJECTIONS: {missing}"
    # what a bijection written by hand composes from is where the docs and FlowModel's message say
    assert T.sum_except_batch(torch.ones(3, 2, 4)).tolist() == [8.0, 8.0, 8.0]


@pytest.mark.parametrize("name", sorted(BIJECTIONS))
def test_bijection(name):
    f, x, c = _build(name)
    z, ladj = f(x, c)
    assert ladj.shape == (x.shape[0],)
    # inverse round trip and the inverse's log-det
    x2, ladj_inv = f.inverse(z, c)
    torch.testing.assert_close(x2.reshape(x.shape), x, atol=1e-8, rtol=1e-7)
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-8, rtol=1e-7)
    # log|det J| against the autograd Jacobian, example by example
    for i in range(3):
        ci = None if c is None else c[i : i + 1]
        xi = x[i : i + 1]

        def fwd(v, ci=ci, xi=xi):
            return f(v.reshape(xi.shape), ci)[0].reshape(-1)

        jac = torch.autograd.functional.jacobian(fwd, xi.reshape(-1))
        sign, logabsdet = torch.linalg.slogdet(jac)
        assert sign != 0
        torch.testing.assert_close(logabsdet, ladj[i], atol=1e-7, rtol=1e-7)

        def inv(v, ci=ci, zi=z[i : i + 1]):
            return f.inverse(v.reshape(zi.shape), ci)[0].reshape(-1)

        jac_inv = torch.autograd.functional.jacobian(inv, z[i : i + 1].reshape(-1))
        torch.testing.assert_close(torch.linalg.slogdet(jac_inv)[1], ladj_inv[i], atol=1e-7, rtol=1e-7)
    # gradients reach every parameter
    f.zero_grad()
    if any(True for _ in f.parameters()):
        ((z**2).sum() - ladj.sum()).backward()
    for pname, p in f.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient reaches {pname}"
    # save/load: a fresh instance with other initial weights reproduces the outputs
    buf = io.BytesIO()
    torch.save(f.state_dict(), buf)
    g, _, _ = _build(name, seed=1)
    buf.seek(0)
    g.load_state_dict(torch.load(buf))
    g.eval()
    z3, ladj3 = g(x, c)
    torch.testing.assert_close(z3, z)
    torch.testing.assert_close(ladj3, ladj)


@pytest.mark.parametrize("flow", ["nice", "realnvp", "glow", "maf", "iaf"])
def test_flow_density_integrates_to_one(flow):
    torch.manual_seed(0)
    bij = T.VECTOR_FLOWS[flow](2, [32], 4, act="tanh").double()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in bij.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    model = FlowModel(bij, (2,), flatten=True).double().eval()
    lim, n = 12.0, 900
    t = torch.linspace(-lim, lim, n)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        log_p = torch.cat([model.log_prob(chunk) for chunk in grid.split(100000)])
    cell = (t[1] - t[0]) ** 2
    mass = (log_p.exp() * cell).sum().item()
    # the grid holds the mass that samples put inside it (a sample-vs-density check), and ~all of it
    x, _ = model.sample(100000, generator=torch.Generator().manual_seed(0))
    inside = (x.abs() <= lim).all(1).double().mean().item()
    assert abs(mass - inside) < 3e-3, f"{flow}: density integrates to {mass} on the grid, samples put {inside} there"
    assert abs(mass - 1) < 1e-2, f"{flow}: density integrates to {mass}"
    # and the flow is not the identity: the density differs from the base
    base = -0.5 * (grid**2).sum(-1) - math.log(2 * math.pi)
    assert (log_p - base).abs().max() > 0.1


def test_actnorm_initialises_from_its_first_training_batch_once_and_reads_its_flag_only_until_then():
    """The first training pass sets zero mean and unit variance per channel; later passes leave
    the parameters to the optimizer and do not read the flag (a wait for a GPU in every step);
    a loaded state is read again, and a loaded initialised one is not initialised anew."""
    x = torch.randn(64, 3, 2, 2, generator=torch.Generator().manual_seed(0)) * 5 + 2
    norm = T.ActNorm(3).train()
    z, _ = norm(x)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    fitted = {k: v.clone() for k, v in norm.state_dict().items()}
    norm.initialized.fill_(False)  # behind its back: a pass that read the flag would initialise again
    norm(x * 3)
    assert torch.equal(norm.bias, fitted["bias"])
    norm.load_state_dict({**fitted, "initialized": torch.tensor(False)})  # a state never initialised
    norm(x * 3)
    assert not torch.equal(norm.bias, fitted["bias"]) and bool(norm.initialized)
    fresh = T.ActNorm(3).train()
    fresh.load_state_dict(fitted)  # an initialised state: kept as loaded
    fresh(x * 3)
    assert torch.equal(fresh.bias, fitted["bias"])


def test_a_glow_coupling_starts_by_scaling_its_moved_entries_by_sigmoid_2():
    """scale "sigmoid": exp(s) = sigmoid(raw + 2), so at the conditioner's zero start each moved
    entry is multiplied by sigmoid(2) and log|det J| is their count times log sigmoid(2)."""

    class Zero(torch.nn.Module):
        def forward(self, h):
            return torch.zeros(len(h), 4)

    layer = T.AffineCoupling(T.alternating_mask(4), Zero(), scale="sigmoid")
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    z, ladj = layer(x)
    s = torch.sigmoid(torch.tensor(2.0))
    assert torch.allclose(z, torch.tensor([[1.0, 2.0 * s, 3.0, 4.0 * s]]))
    assert torch.allclose(ladj, 2 * torch.log(s).reshape(1))


# ------------------------------------------------- what makes a stack of layers transform every entry
def test_mask_parities_are_complements():
    torch.testing.assert_close(T.checkerboard_mask(4, 6, 1), 1 - T.checkerboard_mask(4, 6, 0))
    torch.testing.assert_close(T.channel_mask(8, 1), 1 - T.channel_mask(8, 0))
    torch.testing.assert_close(T.alternating_mask(5, 1), 1 - T.alternating_mask(5, 0))


def test_realnvp_multiscale_alternates_the_masks_of_consecutive_couplings():
    """Consecutive checkerboard (and channel) couplings of a level take complementary masks
    (Dinh et al. 2017), so that every entry is transformed: a fixed parity is still a bijection
    with the right log-determinant, and leaves half the entries as they came."""
    from dgmkit.transforms.coupling import AffineCoupling

    flow = T.realnvp_multiscale((1, 4, 4), hidden=8, layers=3, levels=2)
    pairs = 0
    for level in flow.levels:
        couplings = [m for m in level.modules() if isinstance(m, AffineCoupling)]
        for a, b in zip(couplings, couplings[1:]):
            if a.mask.shape == b.mask.shape:
                torch.testing.assert_close(a.mask + b.mask, torch.ones_like(a.mask))
                pairs += 1
    assert pairs >= 4


@pytest.mark.parametrize("flow", ["maf", "iaf"])
def test_stacked_autoregressive_layers_reverse_their_order(flow):
    """MAF and IAF reverse the order between layers (Papamakarios et al. 2017): through two layers
    each output depends on inputs on both sides; without the reversal the Jacobian stays triangular."""
    torch.manual_seed(0)
    bij = T.VECTOR_FLOWS[flow](4, [16], 2, act="tanh").double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in bij.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    x = torch.randn(4, generator=g, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: bij(v.unsqueeze(0))[0][0], x)
    assert jac.triu(1).abs().max() > 1e-3 and jac.tril(-1).abs().max() > 1e-3, jac


def test_flow_parts_refuse_sizes_and_bounds_that_build_an_identity_or_nan_by_name():
    """Built by hand: realnvp(..., layers=0) (or a negative count) was the identity flow, an
    ActNorm or 1x1 convolution of 0 channels and a mask of 0 features were built, parity 2 made
    the mask of parity 0, a scale bound of 0 or NaN gave NaN log-determinants, and a permutation
    of floats was rounded into one. A coupling flow of one feature failed as "MLP's out_features must be
    an integer >= 1, got 0"."""
    import math

    import dgmkit.transforms as T

    for build, needle in (
        (lambda: T.realnvp(4, [8], layers=0), "layers must be an integer >= 1, got 0"),
        (lambda: T.maf(4, [8], layers=-1), "layers must be an integer >= 1, got -1"),
        (lambda: T.glow(0, [8]), "features must be an integer >= 1, got 0"),
        (lambda: T.realnvp(1, [8]), "a coupling flow transforms some features given the others: it needs features >= 2"),
        (lambda: T.nice(1, [8]), "it needs features >= 2, got 1 (maf, an autoregressive flow, models one)"),
        (lambda: T.glow(1, [8]), "it needs features >= 2, got 1"),
        (lambda: T.realnvp_multiscale((1, 8, 8), levels=0), "levels must be an integer >= 1, got 0"),
        (lambda: T.glow_multiscale((1, 8, 8), blocks=-1), "blocks must be an integer >= 0, got -1"),
        (lambda: T.ActNorm(0), "channels must be an integer >= 1, got 0"),
        (lambda: T.InvertibleLinear(0), "channels must be an integer >= 1, got 0"),
        (lambda: T.alternating_mask(4, parity=2), "parity must be 0 or 1, got 2"),
        (lambda: T.checkerboard_mask(0, 3), "height must be an integer >= 1, got 0"),
        (lambda: T.AffineCoupling(T.alternating_mask(4), torch.nn.Linear(2, 4), scale_bound=0.0), "scale_bound must"),
        (lambda: T.MaskedAffineAutoregressive(4, [8], scale_bound=math.nan), "scale_bound must be a finite number > 0"),
        (lambda: T.Permutation(torch.tensor([0.5, 1.2])), "perm must be a 1-D tensor of integers"),
    ):
        with pytest.raises(ValueError) as e:
            build()
        assert needle in str(e.value)


def test_a_coupling_network_of_the_wrong_output_width_is_named():
    """A network giving 4 channels to an AffineCoupling of a 1-channel image broadcast x into them:
    z came out (B, 2, 8, 8), twice the data's entries; on vectors unflatten said it in torch's words."""
    x = torch.rand(3, 1, 8, 8)
    wide = torch.nn.Conv2d(1, 4, 3, padding=1)
    said = r"AffineCoupling's network gave output of shape \(3, 4, 8, 8\); it needs \(3, 2, 8, 8\): a log-scale and a shift "
    with pytest.raises(ValueError, match=said + r"for each channel it transforms, 2 \* 1 channel of the image = 2"):
        T.AffineCoupling(T.checkerboard_mask(8, 8), wide)(x)
    said = r"AdditiveCoupling's network gave output of shape \(3, 3\); it needs \(3, 2\): a shift for each entry it "
    with pytest.raises(ValueError, match=said + r"transforms, 1 \* 2 entries = 2"):
        T.AdditiveCoupling(T.alternating_mask(5), _mlp(3, 3))(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"gave output of shape \(3, 3\); it needs \(3, 4\).* 2 \* 2 entries = 4"):
        T.AffineCoupling(T.alternating_mask(5), _mlp(3, 3)).inverse(torch.randn(3, 5))
    z, _ = T.AffineCoupling(T.checkerboard_mask(8, 8), torch.nn.Conv2d(1, 2, 3, padding=1))(x)  # the width it needs
    assert z.shape == x.shape


def test_a_permutation_or_coupling_refuses_a_vector_of_another_width_by_name():
    """Permutation.reverse(3) of x (2, 5) gave z (2, 3), the last two entries lost, and a coupling of the
    mask [1, 0, 0, 1, 1, 0] gave z (2, 6) of x (2, 7), with log|det J| as if nothing were amiss."""
    perm = T.Permutation.reverse(3)
    coupling = T.AffineCoupling(torch.tensor([1.0, 0, 0, 1, 1, 0]), _mlp(3, 6))
    for step, x in ((perm, torch.randn(2, 5)), (perm, torch.randn(2, 2)), (coupling, torch.randn(2, 7))):
        for direction in (step, step.inverse):
            with pytest.raises(ValueError, match=r"of \d features \(dim 1\) was given x of shape \(2, \d\); it takes"):
                direction(x)
    assert perm(torch.randn(2, 3, 4, 4))[0].shape == (2, 3, 4, 4) and coupling(torch.randn(2, 6))[0].shape == (2, 6)


def test_squeeze_refuses_what_is_no_squeezable_image_by_name():
    """A (B, H, W) image failed with "not enough values to unpack", and an inverse of 6 channels with
    "shape '[2, 1, 2, 2, 2, 2]' is invalid for input of size 48"."""
    with pytest.raises(ValueError, match=r"squeeze takes images \(B, C, H, W\), got shape \(3, 4, 4\)"):
        T.Squeeze()(torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match="inverse needs a number of channels divisible by 4, got 6"):
        T.Squeeze().inverse(torch.randn(2, 6, 2, 2))


def test_a_conditional_step_takes_a_context_row_for_each_datapoint():
    """A MAF layer broadcast a context of 1 row over x of 3, and from x of 1 row and a context of 3 made z
    of 3 rows and 3 log-determinants; couplings failed in torch's words ("Sizes of tensors must match",
    "mat1 and mat2 shapes cannot be multiplied")."""
    maf, nvp = T.maf(4, [8], 2, context_features=2), T.realnvp(4, [8], 2, context_features=2)
    for flow, (rows, c) in itertools.product((maf, nvp), ((3, (1, 2)), (1, (3, 2)), (3, (3, 3)), (3, (3,)))):
        x, context = torch.randn(rows, 4), torch.randn(*c)
        for direction in (flow, flow.inverse):
            with pytest.raises(ValueError, match=r"of 2 context features was given a context of shape .* it takes one row"):
                direction(x, context)
        with pytest.raises(ValueError, match="is conditional: pass a context"):
            flow(x)
    assert maf(torch.randn(3, 4), torch.randn(3, 2))[0].shape == nvp(torch.randn(3, 4), torch.randn(3, 2))[0].shape == (3, 4)


@pytest.mark.parametrize("flow", ["maf", "iaf"])
@pytest.mark.parametrize("hidden, needle", [([8.5], r"hidden\[0\]"), ([8, 2.5], r"hidden\[1\]")])
def test_an_autoregressive_flow_refuses_a_hidden_size_that_is_no_whole_number(flow, hidden, needle):
    with pytest.raises(ValueError, match=needle):
        T.VECTOR_FLOWS[flow](3, hidden, layers=1)


@pytest.mark.parametrize("flow", sorted(T.IMAGE_FLOWS))
@pytest.mark.parametrize(
    "shape, needle", [((4, 4), r"\(C, H, W\)"), ((0, 4, 4), "event_shape.s channels"), ((1, 4, 4.0), "event_shape.s width")]
)
def test_an_image_flow_refuses_an_event_shape_that_is_no_image_by_name(flow, shape, needle):
    with pytest.raises(ValueError, match=needle):
        T.IMAGE_FLOWS[flow](shape, hidden=4, layers=1, levels=1)


def test_a_multiscale_flow_refuses_images_and_base_variables_of_another_shape_by_name():
    flow = T.realnvp_multiscale((1, 4, 4), hidden=4, layers=1, levels=2)
    for x in (torch.zeros(2, 1, 8, 8), torch.zeros(2, 2, 4, 4), torch.zeros(2, 16)):
        with pytest.raises(ValueError, match=r"takes images x of shape \(B, 1, 4, 4\)"):
            flow(x)
    for width in (12, 19):
        with pytest.raises(ValueError, match=r"takes base variables z of shape \(B, 16\)"):
            flow.inverse(torch.zeros(2, width))


@pytest.mark.parametrize("coupling", [T.AffineCoupling, T.AdditiveCoupling])
@pytest.mark.parametrize(
    "mask, x",
    [
        (T.checkerboard_mask(4, 4), torch.zeros(2, 1, 8, 8)),
        (T.checkerboard_mask(4, 4), torch.zeros(2, 16)),
        (T.channel_mask(4), torch.zeros(2, 2, 4, 4)),
        (T.channel_mask(2), torch.zeros(2, 4, 4, 4)),
    ],
)
def test_an_image_coupling_refuses_images_its_mask_does_not_fit_by_name(coupling, mask, x):
    channels = x.shape[1] if x.dim() == 4 else 1
    layer = coupling(mask, ConvConditioner(channels, coupling.n_params * channels, 4, 0))
    for direction in (layer, layer.inverse):
        with pytest.raises(ValueError, match="of an image mask of shape"):
            direction(x)


@pytest.mark.parametrize(
    "make", [lambda: T.ActNorm(3), lambda: T.InvertibleLinear(3), lambda: T.DiagonalScaling((3,)), lambda: T.maf(3, [4])]
)
@pytest.mark.parametrize("shape", [(2, 4), (2, 2), (2, 1, 3, 3)])
def test_a_bijection_of_three_features_refuses_data_of_another_width_by_name(make, shape):
    # (an image of 1 channel broadcast silently into ActNorm's, InvertibleLinear's or DiagonalScaling's 3, with
    # log|det J| of the wrong number of entries; other widths met torch's words, a MAF's an IndexError)
    layer = make().eval()
    for direction in (layer, layer.inverse):
        with pytest.raises(ValueError, match=r"\(B, 3"):
            direction(torch.zeros(shape))
