"""What a mutation sweep over the transforms, the flow, autoregressive and diffusion models and
nn/ (causal, table, resnet) found unchecked: the scale bounds of couplings and MAF layers, the
masks' layouts, the rotation a 1x1 convolution starts at, ActNorm on a constant channel, the
squeeze's 2x2 blocks, the architectures' published shapes, and the terms of the diffusion bounds."""

import math

import pytest
import torch

import dgmkit.transforms as T
from dgmkit.transforms.coupling import AdditiveCoupling, AffineCoupling, soft_clamp
from dgmkit.transforms.elementwise import DiagonalScaling


# ------------------------------------------------------------------------------------------ couplings
def test_soft_clamp_is_the_identity_near_zero_and_bounded_by_its_bound():
    raw = torch.tensor([-1e4, -30.0, -1e-3, 0.0, 1e-3, 30.0, 1e4], dtype=torch.float64)
    out = soft_clamp(raw, 3.0)
    torch.testing.assert_close(out, 3.0 * torch.tanh(raw / 3.0))
    assert out.abs().max() <= 3.0 and out[-1] > 2.99 and out[0] < -2.99
    torch.testing.assert_close(out[2:5], raw[2:5], atol=1e-9, rtol=1e-6)  # slope 1 at 0


def test_an_affine_coupling_s_log_scale_stays_within_its_bound_for_a_huge_conditioner_output():
    class Huge(torch.nn.Module):
        def forward(self, h):
            return torch.full((len(h), 4), 50.0, dtype=h.dtype)

    layer = AffineCoupling(T.alternating_mask(4), Huge(), scale_bound=2.0).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    z, ladj = layer(x)
    # two moved entries, each scaled by exp(2 tanh(25)) ~ exp(2)
    torch.testing.assert_close(ladj, torch.full((3,), 4 * math.tanh(25.0), dtype=torch.float64))
    torch.testing.assert_close(z[:, 1::2], x[:, 1::2] * math.exp(2 * math.tanh(25.0)) + 50.0)


def test_a_maf_layer_s_log_scale_stays_within_its_bound_for_a_huge_made_output():
    layer = T.MaskedAffineAutoregressive(3, [8], scale_bound=1.5).double()
    with torch.no_grad():
        layer.made.output_layer.bias.fill_(40.0)  # mu = alpha_raw = 40 everywhere
    x = torch.randn(5, 3, dtype=torch.float64)
    z, ladj = layer(x)
    torch.testing.assert_close(ladj, torch.full((5,), -3 * 1.5 * math.tanh(40 / 1.5), dtype=torch.float64))
    x2, _ = layer.inverse(z)
    torch.testing.assert_close(x2, x)


def test_a_checkerboard_mask_alternates_along_rows_and_columns():
    m = T.checkerboard_mask(4, 6)[0]
    assert m[0, 0] == 1
    assert (m[:, 1:] != m[:, :-1]).all() and (m[1:, :] != m[:-1, :]).all()


def test_a_channel_mask_holds_exactly_half_the_channels():
    for c in (2, 4, 6, 8):
        m = T.channel_mask(c).flatten()
        torch.testing.assert_close(m, (torch.arange(c) < c // 2).float())


# ----------------------------------------------------------------------------- linear, actnorm, squeeze
@pytest.mark.parametrize("channels", [3, 4, 6])
def test_an_invertible_linear_map_starts_at_a_rotation(channels):
    """Glow initialises W at a random rotation: its LU factors give back an orthogonal matrix
    (both the sign of s and the strictly upper factor count), whose log|det| is 0."""
    layer = T.InvertibleLinear(channels, generator=torch.Generator().manual_seed(channels)).double()
    w = layer.weight()
    torch.testing.assert_close(w @ w.T, torch.eye(channels, dtype=torch.float64), atol=1e-6, rtol=0)  # (float32 factors)
    assert abs(float(layer.log_s.detach().sum())) < 1e-6
    # and its upper factor is a full upper triangle: W is not a permuted lower-triangular matrix
    assert (layer.p.T @ w).triu(1).abs().max() > 1e-3


def test_actnorm_on_a_constant_channel_stays_finite():
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[:, 1] = 2.5
    norm = T.ActNorm(3).double().train()
    z, ladj = norm(x)
    assert torch.isfinite(z).all() and torch.isfinite(ladj).all()
    torch.testing.assert_close(z[:, 1], torch.zeros(16, dtype=torch.float64))
    torch.testing.assert_close(norm.log_scale[1], torch.tensor(-math.log(1e-6), dtype=torch.float64))


def test_squeeze_makes_each_2x2_block_of_pixels_the_channels_of_one_pixel():
    x = torch.arange(2 * 4 * 6, dtype=torch.float64).view(1, 2, 4, 6)
    z, _ = T.Squeeze()(x)
    assert z.shape == (1, 8, 2, 3)
    for i in range(2):
        for j in range(3):
            block = x[0, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].flatten()
            assert sorted(z[0, :, i, j].tolist()) == sorted(block.tolist())
            # each input channel's block lies in its own four output channels
            torch.testing.assert_close(z[0, :4, i, j].sort().values, x[0, 0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].flatten())


def test_logit_defaults_to_realnvp_s_margin_of_0_05():
    layer = T.Logit()
    assert layer.alpha == 0.05
    z, ladj = layer(torch.full((1, 2), 0.5, dtype=torch.float64))
    torch.testing.assert_close(z, torch.zeros(1, 2, dtype=torch.float64))
    torch.testing.assert_close(ladj, torch.tensor([2 * (math.log(0.9) + 2 * math.log(2))], dtype=torch.float64))


# ------------------------------------------------------------------------------------- architectures
def test_a_multiscale_flow_is_left_in_training_mode_by_its_shape_pass():
    for flow in (T.realnvp_multiscale((1, 4, 4), hidden=4, layers=1), T.glow_multiscale((1, 4, 4), hidden=4, layers=1)):
        assert all(m.training for m in flow.modules())
    flow = T.glow_multiscale((1, 4, 4), hidden=4, layers=1)
    x = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 3 + 1
    z, _ = flow(x)  # the first training pass initialises ActNorm: the first level's output is standardised
    first = flow.levels[0].steps[1]
    assert isinstance(first, T.ActNorm) and bool(first.initialized)


def test_a_multiscale_flow_of_levels_on_another_device_finds_its_shapes_there():
    """The shape pass drew its zero image on the CPU: levels already on a GPU failed with torch's
    "Expected all tensors to be on the same device" (the meta device stands for one here)."""
    levels = T.realnvp_multiscale((1, 4, 4), hidden=4, layers=1, levels=2).levels
    on_cpu = T.MultiScale(list(levels), (1, 4, 4))
    elsewhere = T.MultiScale([level.to("meta") for level in levels], (1, 4, 4))
    assert elsewhere.shapes == on_cpu.shapes == [(2, 2, 2), (2, 2, 2)]


def test_nice_ends_with_a_diagonal_scaling_that_carries_its_whole_log_det():
    torch.manual_seed(0)
    flow = T.nice(4, [8], 4).double()
    assert isinstance(flow.steps[-1], DiagonalScaling)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    _, ladj = flow(torch.randn(3, 4, dtype=torch.float64))
    torch.testing.assert_close(ladj, flow.steps[-1].log_scale.sum().expand(3))
    assert ladj.abs().min() > 1e-3


def test_nice_s_consecutive_couplings_take_complementary_masks():
    flow = T.nice(5, [8], 4)
    couplings = [s for s in flow.steps if isinstance(s, AdditiveCoupling)]
    assert len(couplings) == 4
    for a, b in zip(couplings, couplings[1:]):
        torch.testing.assert_close(a.mask + b.mask, torch.ones(5))


def test_glow_multiscale_couplings_scale_by_a_sigmoid_and_realnvp_s_last_level_has_one_more_coupling():
    glow = T.glow_multiscale((1, 4, 4), hidden=4, layers=2)
    scales = [m.scale for m in glow.modules() if isinstance(m, AffineCoupling)]
    assert scales == ["sigmoid"] * 4
    realnvp = T.realnvp_multiscale((1, 4, 4), hidden=4, layers=3, levels=2)
    per_level = [sum(isinstance(m, AffineCoupling) for m in level.modules()) for level in realnvp.levels]
    assert per_level == [6, 4]  # 3 checkerboard + 3 channel couplings, then 3 + 1 checkerboard ones


# ------------------------------------------------------------------------------------------ diffusion
class _Spy(torch.nn.Module):
    """An affine eps-predictor that keeps the z_t it was given."""

    def forward(self, z, s):
        self.z = z
        return 0.5 * z + 0.05


def _vdm(steps, levels=16, event=(1, 2, 2)):
    from dgmkit.models import GaussianDiffusion, LinearSchedule

    return GaussianDiffusion(_Spy(), LinearSchedule(-6.0, 4.0), event, levels, steps).double()


def _alpha_sigma(gamma):
    return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()


@pytest.mark.parametrize("steps", [1, 4, 50])
def test_the_discrete_diffusion_term_is_t_times_the_gaussian_kl_of_one_step(steps):
    """T KL(q(z_s | z_t, x) || p(z_s | z_t)) with s = t - 1/T, t = i/T the end of the step that the
    sampled time falls in, and p(z_s | z_t) = q(z_s | z_t, x_hat), x_hat = (z_t - sigma_t eps_hat) / alpha_t:
    written with the posterior's mean and variance (VDM, appendix), not with the SNR difference."""
    torch.manual_seed(0)
    model = _vdm(steps)
    x = torch.randint(0, 16, (2 * steps, 1, 2, 2))
    i = torch.arange(1, steps + 1, dtype=torch.float64).repeat(2)
    terms = model.bound_terms(x, (i - 0.5) / steps)  # a time inside step i: its end is i / T
    z = model.net.z.double()
    t, s = i / steps, (i - 1) / steps
    g_t, g_s = (-6.0 + 10.0 * t).view(-1, 1, 1, 1), (-6.0 + 10.0 * s).view(-1, 1, 1, 1)
    (a_t, s_t), (a_s, s_s) = _alpha_sigma(g_t), _alpha_sigma(g_s)
    var_ts = s_t**2 - (a_t / a_s) ** 2 * s_s**2  # q(z_t | z_s)'s variance
    var_q = var_ts * s_s**2 / s_t**2
    xs = model.scale(x).double()
    x_hat = (z - s_t * (0.5 * z + 0.05)) / a_t
    mean_gap = a_s * var_ts / s_t**2 * (xs - x_hat)  # the two means differ in their x term only
    kl = (mean_gap.square() / (2 * var_q)).flatten(1).sum(1)
    torch.testing.assert_close(terms["diffusion"], steps * kl, rtol=1e-6, atol=1e-9)


def test_the_continuous_diffusion_term_is_the_limit_of_the_discrete_one():
    """0.5 gamma'(t) ||eps - eps_hat||^2 (and ``mse`` its mean square), and T/2 expm1(gamma(t) - gamma(t - 1/T)) per unit of
    ||eps - eps_hat||^2 tends to it as T grows (here gamma' = 10)."""
    torch.manual_seed(0)
    x = torch.randint(0, 16, (6, 1, 2, 2))
    u = torch.rand(6, dtype=torch.float64)
    for steps, tol in ((0, 1e-9), (100_000, 1e-3)):
        model = _vdm(steps)
        terms = model.bound_terms(x, u)
        z = model.net.z.double()
        t = u if not steps else (torch.floor(u * steps) + 1) / steps
        a_t, s_t = _alpha_sigma((-6.0 + 10.0 * t).view(-1, 1, 1, 1))
        eps = (z - a_t * model.scale(x).double()) / s_t
        err = (eps - (0.5 * z + 0.05)).square().flatten(1).sum(1)
        torch.testing.assert_close(terms["diffusion"], 0.5 * 10.0 * err, rtol=tol, atol=1e-9)
        torch.testing.assert_close(terms["mse"], err / 4, rtol=1e-9, atol=1e-12)  # DDPM's loss: a mean over the entries


class _Conv1x1(torch.nn.Module):
    def __init__(self, levels):
        super().__init__()
        self.conv = torch.nn.Conv2d(levels + 1, levels, 1)

    def forward(self, h, t):
        return self.conv(h)


def test_masked_training_times_are_uniform_on_0_1_excluding_0():
    """Continuous-time training reads u in [0, 1) as t = 1 - u in (0, 1]: u = 0 is t = 1, every
    entry masked, not t = 0 with nothing masked and the weight 1/t infinite."""
    from dgmkit.models import MaskedDiffusion

    torch.manual_seed(0)
    model = MaskedDiffusion(_Conv1x1(2), (1, 1, 3), 2, 0).double()
    x = torch.tensor([[[[0, 1, 1]]]]).expand(4, 1, 1, 3)
    out = model.bound_terms(x, torch.zeros(4, dtype=torch.float64), train=True)["diffusion"]
    z = torch.full_like(x, 2)
    logp = torch.log_softmax(model.logits(z, torch.ones(4, dtype=torch.float64)), -1)
    want = -logp.gather(-1, x.unsqueeze(-1)).flatten(1).sum(1)
    torch.testing.assert_close(out, want)


# ------------------------------------------------------------------------------------- flow sampling
def test_a_flow_model_draws_at_a_temperature_by_scaling_its_base_draws():
    """For a linear flow x = f^-1(z), draws from the same generator at temperature tau are tau
    times those at 1: z ~ N(0, tau^2 I), a standard deviation of tau (not tau^2)."""
    from dgmkit.models import FlowModel

    scaling = DiagonalScaling((3,)).double()
    with torch.no_grad():
        scaling.log_scale.copy_(torch.tensor([0.3, -0.2, 0.5]))
    model = FlowModel(scaling, (3,)).double()
    one, _ = model.sample(50, generator=torch.Generator().manual_seed(4))
    half, _ = model.sample(50, generator=torch.Generator().manual_seed(4), temperature=0.5)
    torch.testing.assert_close(half, 0.5 * one)


# ---------------------------------------------------------------------------------------------- nn/
def test_the_causal_net_sees_exactly_its_receptive_field_of_257_previous_positions():
    """k = 3, 8 layers, dilations 1, 1, 2, ..., 64 (the module docstring): output t depends on
    x_{t-257} .. x_{t-1} and on nothing earlier (nor on x_t)."""
    from dgmkit.nn.causal import CausalConvNet

    torch.manual_seed(0)
    net = CausalConvNet(1, 1, channels=4, layers=8, kernel=3).double()
    assert net.dilations == [1, 1, 2, 4, 8, 16, 32, 64] and net.receptive_field == 257
    x = torch.randn(1, 1, 300, dtype=torch.float64, requires_grad=True)
    net(x)[0, 0, 299].backward()
    seen = (x.grad[0, 0] != 0).nonzero().flatten()
    assert seen.min().item() == 299 - 257 and seen.max().item() == 298


def test_the_causal_net_s_later_layers_add_to_their_input():
    """Layers after the first are residual: with their 1x1 mixes at zero, the net is its first
    (gated) layer and head alone."""
    from dgmkit.nn.causal import CausalConvNet

    torch.manual_seed(0)
    deep = CausalConvNet(1, 2, channels=4, layers=3, kernel=2).double()
    shallow = CausalConvNet(1, 2, channels=4, layers=1, kernel=2).double()
    with torch.no_grad():
        for mix in deep.mix[1:]:
            mix.weight.zero_()
            mix.bias.zero_()
    shallow.load_state_dict(
        {k: v for k, v in deep.state_dict().items() if not k.startswith(("convs.1", "convs.2", "mix.1", "mix.2"))}
    )
    x = torch.randn(2, 1, 12, dtype=torch.float64)
    torch.testing.assert_close(deep(x), shallow(x))
    # and the first layer is WaveNet's gate, tanh(filter) * sigmoid(gate), on x shifted right by one
    a = shallow.convs[0](torch.nn.functional.pad(x, (2, -1)))
    f, g = a.chunk(2, dim=1)
    torch.testing.assert_close(shallow(x), shallow.head(shallow.mix[0](torch.tanh(f) * torch.sigmoid(g))))


def test_a_conditioner_s_residual_block_is_the_identity_plus_its_branch_and_the_conditioner_starts_at_zero():
    from dgmkit.nn import ConvConditioner
    from dgmkit.nn.resnet import _ResidualBlock

    torch.manual_seed(0)
    block = _ResidualBlock(3).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(block(x), x + block.net(x))
    with torch.no_grad():
        block.net[-1].weight.zero_()
        block.net[-1].bias.zero_()
    torch.testing.assert_close(block(x), x)
    net = ConvConditioner(3, 4, hidden=8).double()
    assert isinstance(net[-2], torch.nn.ReLU)  # conv3x3 -> blocks -> ReLU -> zero conv3x3
    torch.testing.assert_close(net(x), torch.zeros(2, 4, 4, 4, dtype=torch.float64))  # a coupling starts as the identity
