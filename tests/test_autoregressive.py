"""Autoregressive models: the autoregressive property through input gradients (both PixelCNN
stacks), exact normalisation by enumeration, cached = naive generation, samples match log_prob."""

import itertools
import math

import pytest
import torch

from dgmkit.conditional import BernoulliHead, CategoricalHead, LogisticMixtureHead
from dgmkit.models.autoregressive import MADEARM, CausalConvARM, GatedPixelCNN


@pytest.fixture(autouse=True)
def _float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


ARMS = {
    "causal-conv": lambda head, shape: CausalConvARM(head, shape, channels=8, layers=5, kernel=3),
    "made": lambda head, shape: MADEARM(head, shape, hidden=[64, 64]),
    "made-direct": lambda head, shape: MADEARM(head, shape, hidden=[32], direct=True),
    "made-mixture": lambda head, shape: MADEARM(head, shape, hidden=[64], masks=3, random_order=True),
    "pixelcnn": lambda head, shape: GatedPixelCNN(head, shape, channels=8, layers=5, kernel=3),
}


def _build(name, head, shape, seed=0):
    torch.manual_seed(seed)
    m = ARMS[name](head, shape)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m.eval()


def _dependencies(f, x: torch.Tensor) -> torch.Tensor:
    """dep[d, e] = output d (summed over its parameters) depends on input e, from gradients."""
    n = x[0].numel()
    dep = torch.zeros(n, n, dtype=torch.bool)
    for d in range(n):
        xi = x.clone().requires_grad_(True)
        out = f(xi).reshape(x.shape[0], -1, n)[..., d].sum()
        (g,) = torch.autograd.grad(out, xi)
        dep[d] = g.abs().sum(0).flatten() > 0
    return dep


@pytest.mark.parametrize("name", ["causal-conv", "made", "made-direct", "pixelcnn"])
def test_output_depends_only_on_earlier_pixels(name):
    shape = (1, 4, 4)
    m = _build(name, CategoricalHead(3), shape)
    x = torch.rand(3, *shape)
    dep = _dependencies(lambda v: m.params(v).sum(2), x)
    pos = torch.empty(16, dtype=torch.long)
    pos[m.order()] = torch.arange(16)  # generation position of each pixel
    earlier = pos[None, :] < pos[:, None]
    assert not (dep & ~earlier).any(), f"{name}: outputs see the current or later pixels"
    if name != "made":  # deep enough (or directly connected) to see every earlier pixel: no blind spot
        assert (dep == earlier).all(), f"{name}: a blind spot: {(earlier & ~dep).nonzero().tolist()}"


def test_narrow_made_still_sees_every_input():
    """With fewer hidden units than inputs, the last output still depends on all earlier inputs."""
    narrow = MADEARM(BernoulliHead(), (1, 4, 4), hidden=[6])
    dep = _dependencies(lambda v: narrow.params(v).sum(2), torch.rand(2, 1, 4, 4))
    assert dep[15, :15].all()


def test_a_resampled_made_is_autoregressive_in_its_new_order():
    """``MADE.resample`` (order-agnostic training) draws a new order and new hidden degrees:
    each output then depends on exactly the inputs before it in that order (with direct
    connections, on all of them), by input gradients."""
    from dgmkit.nn import MADE

    torch.manual_seed(0)
    made = MADE(6, [16, 16], 2, direct=True)
    g = torch.Generator().manual_seed(3)
    orders = []
    for _ in range(3):
        made.resample(g)
        order = made.order.clone()
        orders.append(order.tolist())
        assert sorted(order.tolist()) == list(range(6))
        dep = _dependencies(lambda v: made(v.flatten(1)).sum(1), torch.rand(2, 1, 1, 6))
        assert torch.equal(dep, order[None, :] < order[:, None])
    assert len({tuple(o) for o in orders}) > 1 and orders[0] != list(range(6))


def test_both_pixelcnn_stacks_are_causal():
    shape = (1, 5, 5)
    m = _build("pixelcnn", BernoulliHead(), shape)
    x = torch.rand(2, *shape)
    rows = torch.arange(25) // 5
    v_dep = _dependencies(lambda v: m.net.vertical_stack(v)[-1].sum(1), x)
    assert not (v_dep & ~(rows[None, :] < rows[:, None])).any(), "the vertical stack sees its own row"
    assert v_dep[rows == 4][:, rows < 4].any()
    h_dep = _dependencies(lambda v: m.net.horizontal_stack(v, m.net.vertical_stack(v)).sum(1), x)
    idx = torch.arange(25)
    assert not (h_dep & ~(idx[None, :] < idx[:, None])).any(), "the horizontal stack sees the current or later pixels"
    assert (h_dep == (idx[None, :] < idx[:, None])).all()  # 5 layers cover a 5x5 image


@pytest.mark.parametrize("shape, layers, kernel", [((2, 6, 9), 2, 3), ((3, 7, 11), 2, 5)])
def test_the_gated_stacks_see_exactly_their_blind_spot_free_field(shape, layers, kernel):
    """On images wider than the field, with several input channels and a kernel of 5: the
    horizontal stack's output at (r, c) depends on every channel of the pixels of rows r - 1 - L k
    .. r - 1 within L k columns of c, and of row r's L k + 1 pixels left of c (k = kernel // 2),
    and on nothing else: no later pixel, and no blind spot to the upper right."""
    from dgmkit.nn.pixelcnn import GatedPixelCNNNet

    torch.manual_seed(0)
    net = GatedPixelCNNNet(shape[0], 2, channels=4, layers=layers, kernel=kernel)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    reach = layers * (kernel // 2)
    _, h, w = shape
    r, c = torch.arange(h * w) // w, torch.arange(h * w) % w
    above = (r[None, :] < r[:, None]) & (r[None, :] >= r[:, None] - 1 - reach) & ((c[None, :] - c[:, None]).abs() <= reach)
    left = (r[None, :] == r[:, None]) & (c[None, :] < c[:, None]) & (c[None, :] >= c[:, None] - 1 - reach)
    x = torch.rand(2, *shape, requires_grad=True)
    out = net.horizontal_stack(x, net.vertical_stack(x))
    for d in range(h * w):
        (g,) = torch.autograd.grad(out[:, :, r[d], c[d]].sum(), x, retain_graph=True)
        seen = g.abs().sum(0).flatten(1) > 0  # (channels, pixels)
        assert torch.equal(seen, (above | left)[d].expand_as(seen)), f"pixel {d}"


def _all_images(levels: int, shape) -> torch.Tensor:
    n = math.prod(shape)
    return torch.tensor(list(itertools.product(range(levels), repeat=n)), dtype=torch.float64).view(-1, *shape)


@pytest.mark.parametrize("name", sorted(ARMS))
def test_ten_binary_pixels_normalise_by_enumeration(name):
    shape = (1, 2, 5)
    m = _build(name, BernoulliHead(), shape)
    with torch.no_grad():
        total = torch.logsumexp(m.log_prob(_all_images(2, shape)), 0)
    assert abs(total.item()) < 1e-9


@pytest.mark.parametrize("head", [CategoricalHead(3), LogisticMixtureHead(3, 2)], ids=["categorical", "logistic"])
@pytest.mark.parametrize("name", ["causal-conv", "made", "pixelcnn"])
def test_multilevel_heads_normalise(name, head):
    shape = (1, 2, 3)
    m = _build(name, head, shape)
    m.input_scale = 0.5
    with torch.no_grad():
        total = torch.logsumexp(m.log_prob(_all_images(3, shape)), 0)
    assert abs(total.item()) < 1e-9


@pytest.mark.parametrize("name", sorted(ARMS))
def test_cached_generation_equals_naive(name):
    shape = (1, 4, 5)
    for head in (BernoulliHead(), CategoricalHead(4)):
        m = _build(name, head, shape)
        if isinstance(head, CategoricalHead):
            m.input_scale = 1 / 3
        u = torch.rand(40, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        naive, cached = m.sample_from_noise(u, cached=False), m.sample_from_noise(u, cached=True)
        assert torch.equal(naive, cached)
        assert naive.unique().numel() > 1


def test_the_gated_pixelcnn_s_cached_pass_in_parts_of_the_batch_equals_the_whole_and_bounds_its_memory(monkeypatch):
    """The coder's cached pass (run_cached) takes the vertical stack through a row's rows for at most
    PASS_BYTES of images at a time: the same values as one pass of the whole batch (and the naive
    path); what a batch holds per image is the row's cache alone (coding_bytes_per_image), so that
    the images a coded file may hold in a batch are not bounded by the pass (its caches kept every
    layer's pre-activation on all the rows it sees: 0.63 GB for 500 MNIST images, where it said 0.18)."""
    torch.manual_seed(0)
    m = GatedPixelCNN(CategoricalHead(4), (1, 6, 5), channels=8, layers=3).double().eval()
    u = torch.rand(7, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    whole = m.sample_from_noise(u, cached=True)
    monkeypatch.setattr(GatedPixelCNN, "PASS_BYTES", 1)  # one image a pass
    assert m._pass_images() == 1
    assert torch.equal(m.sample_from_noise(u, cached=True), whole)
    assert torch.equal(m.sample_from_noise(u, cached=False), whole) and whole.unique().numel() > 1
    assert m.coding_bytes_per_image() == (3 * 30 + 4) * 8 + 3 * 3 * 8 * 5 * 8  # image x3, head, 3p a layer


@pytest.mark.parametrize("name", sorted(ARMS))
def test_samples_follow_the_density(name):
    shape = (1, 2, 2)
    m = _build(name, BernoulliHead(), shape)
    images = _all_images(2, shape)
    with torch.no_grad():
        p = m.log_prob(images).exp()
    x, _ = m.sample(20000, generator=torch.Generator().manual_seed(0))
    codes = (x.flatten(1) * torch.tensor([8.0, 4, 2, 1])).sum(1).long()
    freq = torch.bincount(codes, minlength=16).double() / len(codes)
    se = (p * (1 - p) / len(codes)).sqrt()
    assert ((freq - p).abs() <= 5 * se + 1e-4).all(), f"{name}: empirical {freq.tolist()} vs model {p.tolist()}"


def test_made_mixture_is_the_average_of_its_connectivities():
    shape = (1, 2, 3)
    m = _build("made-mixture", BernoulliHead(), shape)
    x = _all_images(2, shape)
    with torch.no_grad():
        mixture = m.log_prob(x)
        per = []
        for k in range(3):
            m.use_mask(k)
            per.append(m.head(m.params(x)).log_prob(x))
    torch.testing.assert_close(mixture, torch.logsumexp(torch.stack(per), 0) - math.log(3))
    assert not torch.allclose(per[0], per[1])  # the connectivities really differ
    m.train()
    seen = set()
    for _ in range(20):
        m.log_prob(x[:2])
        seen.add(m.made.order.tolist().__repr__())
    assert len(seen) > 1  # training resamples the connectivity


@pytest.mark.parametrize("head", [BernoulliHead(), CategoricalHead(5), LogisticMixtureHead(5, 3)], ids=["b", "c", "l"])
def test_pixel_pmf_agrees_with_the_heads_distribution(head):
    """What sampling and coding use (pixel_log_pmf) is the head's own log_prob, value by value."""
    params = torch.randn(7, head.params_per_pixel)
    pmf = head.pixel_log_pmf(params)  # (7, L)
    dist = head(params.view(7, 1, head.params_per_pixel, 1, 1))  # one-pixel images
    for v in range(pmf.shape[-1]):
        torch.testing.assert_close(pmf[:, v], dist.log_prob(torch.full((7, 1, 1, 1), float(v))))
    torch.testing.assert_close(pmf.exp().sum(-1), torch.ones(7))


@pytest.mark.parametrize("arm, change", [("pixelcnn", {}), ("causal-conv", {}), ("made", {}), ("made", {"made_masks": 2})])
def test_a_model_cast_to_float64_draws_the_images_of_its_float32_self(arm, change):
    """Generation started from float32 zeros whatever the model's precision: a float64 model failed
    at its first layer. Both precisions draw the same images from the same generator."""
    from dgmkit.config import RunConfig, build_model

    model = build_model(RunConfig.of(model="arm", arm=arm, **change), (1, 8, 8), 2)
    for cached in (True, False):
        single = model.float().sample(6, torch.Generator().manual_seed(0), cached=cached)[0]
        double = model.double().sample(6, torch.Generator().manual_seed(0), cached=cached)[0]
        assert double.dtype == torch.float64 and torch.equal(single.double(), double)


@pytest.mark.parametrize("u", [torch.rand(2, 3), torch.rand(4), torch.full((2, 4), float("nan")), torch.full((2, 4), 1.5)])
def test_noise_of_another_shape_or_outside_the_unit_interval_is_refused(u):
    m = _build("made", CategoricalHead(3), (1, 2, 2))
    with pytest.raises(ValueError, match=r"^u must "):
        m.sample_from_noise(u.double())


@pytest.mark.parametrize("seed", [1.5, -1, True, 2**62])
def test_a_made_seed_that_is_not_a_whole_number_is_refused_by_name(seed):
    with pytest.raises(ValueError, match=r"^seed must be an integer in 0\.\.4294967295"):
        MADEARM(CategoricalHead(3), (1, 2, 2), hidden=[4], masks=2, seed=seed)


def test_a_conditional_gated_net_refuses_a_missing_or_misshapen_condition_map():
    """A conditional GatedPixelCNNNet given no s scored p(x) without the condition, silently; an s of
    another size met torch's "the size of tensor a (4) must match the size of tensor b (3)"."""
    from dgmkit.nn.pixelcnn import GatedPixelCNNNet

    net = GatedPixelCNNNet(1, 2, channels=4, layers=2, kernel=3, cond_channels=2)
    x = torch.zeros(3, 1, 4, 4)
    assert net(x, torch.zeros(3, 2, 4, 4)).shape == (3, 2, 4, 4)
    with pytest.raises(ValueError, match="conditional: pass a condition map"):
        net(x)
    with pytest.raises(ValueError, match="conditional: pass a condition map"):
        net.generate(x.clone(), lambda t, params: params[:, 0] > 0)
    for s in (torch.zeros(3, 2, 3, 3), torch.zeros(3, 3, 4, 4), torch.zeros(1, 2, 4, 4)):
        with pytest.raises(ValueError, match=r"must be \(B, cond_channels, H, W\) = \(3, 2, 4, 4\)"):
            net(x, s)


def test_made_names_inputs_or_a_context_of_another_width():
    """x or a context of another width than the MADE's met torch's "mat1 and mat2 shapes cannot be multiplied"."""
    from dgmkit.nn import MADE

    made = MADE(5, [8], 2, context_features=3)
    assert made(torch.zeros(4, 5), torch.zeros(4, 3)).shape == (4, 2, 5)
    with pytest.raises(ValueError, match=r"MADE of 5 inputs takes x \(\.\.\., 5\), got \(4, 4\)"):
        made(torch.zeros(4, 4), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"MADE of 3 context features takes a context \(\.\.\., 3\), got \(4, 2\)"):
        made(torch.zeros(4, 5), torch.zeros(4, 2))


def test_a_deep_causal_conv_leaves_out_the_taps_that_reach_past_the_start():
    """40 layers (dilations up to 2**38, ``arm_layers`` allows 64) padded a 5-pixel sequence with 2**39
    zeros: torch's "can't allocate memory". The full pass equals the per-position steps, which never pad."""
    from dgmkit.nn.causal import CausalConvNet

    torch.manual_seed(0)
    net = CausalConvNet(1, 2, channels=3, layers=40, kernel=3)
    x = torch.rand(2, 1, 5)
    cache = [torch.zeros(2, 3, 5) for _ in net.convs]
    steps = torch.stack([net.step(cache, x, t) for t in range(5)], -1)
    torch.testing.assert_close(net(x), steps)
