"""Each part reads what it should and each printed number is its own: conditioning inputs, gates,
skip and residual connections, code grids, stop-gradients and the fields a command prints. Every
test here was written against a mutation that the rest of the suite let through (a decoder that
ignored z, a U-Net without its skips, a printed value from another field): a wiring error of this
kind leaves shapes, normalisation and round trips as they were."""

import csv
import math
import re

import numpy as np
import pytest
import torch
from torch import nn


def _perturb(module, scale=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


# --- cli/evaluate.py: every printed number is its own record field --------------------------
def test_eval_report_prints_each_number_from_its_own_field():
    from dgmkit.cli.evaluate import format_report

    r = {
        "split": "test",
        "n": 2,
        "subset": None,
        "estimate": "importance-sampled",
        "elbo": -3.0,
        "elbo_stderr": 0.25,
        "elbo_bpd": 0.7,
        "recon": -2.5,
        "kl": 1.25,
        "nll": 2.875,
        "nll_stderr": 0.125,
        "bpd": 0.6,
        "iw_samples": 10,
        "seconds": 0.1,
    }
    out = format_report(r)
    assert re.search(r"\nELBO +-3\.000 \+- 0\.250 nats  \(0\.7000 bits/dim\)\n", out), out
    assert re.search(r"\n  reconstruction +-2\.500 nats\n", out)
    assert re.search(r"\n  KL +1\.250 nats\n", out)
    assert re.search(r"\nNLL \(k=10\) +2\.875 \+- 0\.125 nats\n", out), out
    assert re.search(r"\nbits/dim +0\.6000\n", out), out


# --- cli/score.py: an incomplete input's bits/dim is per its own observed entries -----------
def test_score_bits_per_dim_of_each_input_counts_its_own_observed_entries(tmp_path):
    from dgmkit.cli.common import run_data
    from dgmkit.cli.main import main
    from dgmkit.config import load_run

    run = tmp_path / "vae"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--hidden",
                "16",
                "--latent-dim",
                "2",
                "--epochs",
                "1",
                "--quiet",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    test = run_data(load_run(run)).test.x.numpy()[:20].astype(np.float64)
    test[::2, 0, :4, :] = np.nan  # every other input misses half its entries
    np.save(tmp_path / "h.npy", test)
    assert main(["score", str(run), str(tmp_path / "h.npy"), "--k", "5", "--out", str(tmp_path / "h.csv")]) == 0
    with open(tmp_path / "h.csv") as f:
        rows = list(csv.DictReader(f))
    log_px = np.array([float(r["log_px_nats"]) for r in rows])
    bpd = np.array([float(r["bits_per_dim"]) for r in rows])
    seen = np.isfinite(test).reshape(20, -1).sum(1)
    np.testing.assert_allclose(bpd, -log_px / (seen * math.log(2)), rtol=1e-9)


# --- cli/compress.py: the printed payload rate is the payload's bits per pixel --------------
def test_compress_prints_the_payload_in_bits_per_dim(tmp_path, capsys):
    from dgmkit.cli.main import main
    from dgmkit.coding.container import read_container
    from dgmkit.data import load_dataset

    argv = ["train", "--model", "arm", "--arm", "pixelcnn", "--dataset", "digits-4x4", "--channels", "8"]
    assert main([*argv, "--arm-layers", "3", "--epochs", "1", "--seed", "0", "--quiet", "--out", str(tmp_path / "a")]) == 0
    x = load_dataset("digits-4x4").test.x[:, 0].numpy()
    np.save(tmp_path / "x.npy", x)
    capsys.readouterr()
    out_file = tmp_path / "x.dgmz"
    assert main(["compress", str(tmp_path / "a"), str(tmp_path / "x.npy"), "--out", str(out_file)]) == 0
    out = capsys.readouterr().out
    said = re.search(r"payload ([0-9.]+)\)", out)
    assert said is not None, out
    words = read_container(out_file.read_bytes()).payload
    assert float(said.group(1)) == pytest.approx(32 * len(words) / x.size, abs=5e-5)
    # the model's NLL beside it is in bits/dim too
    from dgmkit.coding.arm_coder import sequential_nll
    from dgmkit.config import load_run

    model = load_run(tmp_path / "a").model.eval()
    nll = sequential_nll(model, torch.from_numpy(x).long().view(len(x), 1, 4, 4)).sum().item()
    ref = re.search(r"\(([^:()]+): ([0-9.]+) bits/dim; payload", out)
    assert ref is not None, out
    assert float(ref.group(2)) == pytest.approx(nll / (x.size * math.log(2)), abs=2e-4)


# --- models/vqvae.py: the code grid of an image is the grid the training pass quantized -----
def test_vqvae_codes_are_the_quantized_grid_in_its_own_orientation():
    from dgmkit.config import RunConfig, build_model

    cfg = RunConfig.of(model="vqvae", dataset="digits-4x4", codes=5, code_dim=3, vq_width=8, downsample=1, res_blocks=1)
    model = build_model(cfg, (1, 4, 4), 2).eval()
    x = (torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    with torch.no_grad():  # codes that the encoder's own vectors pick: every position a different one
        z_e = model.encoder(x)  # (B, D, 2, 2)
        picked = [z_e[0, :, 0, 0], z_e[0, :, 0, 1], z_e[0, :, 1, 0], z_e[1, :, 1, 1], z_e[2, :, 0, 1]]
        model.quantizer.embedding.copy_(torch.stack(picked))
        codes = model.codes(x)
        q = model.quantize(x)
    assert codes.shape == (64, 2, 2)
    assert torch.equal(codes, q.indices.reshape(codes.shape))
    assert not torch.equal(codes, codes.transpose(-1, -2))  # (the data are rich enough to tell)


# --- models/vqvae2.py: the decoder reads the top codes, and both levels commit ---------------
def _two_level_vqvae():
    """A VQ-VAE-2 of 4x4 images with perturbed weights (float64), and 6 images."""
    from dgmkit.config import RunConfig, build_model

    cfg = RunConfig.of(
        model="vqvae", dataset="digits-4x4", codes=3, code_dim=2, vq_width=8, downsample=1, res_blocks=1, vq_levels=2
    )
    model = build_model(cfg, (1, 4, 4), 2).double().eval()
    _perturb(model, 0.5, 0)
    return model, (torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.5).double()


def test_two_level_vqvae_likelihood_depends_on_the_top_codes():
    model, x = _two_level_vqvae()
    codes = torch.zeros(6, 1, 5, dtype=torch.long)
    other = codes.clone()
    other[..., 0] = 2  # the top code alone changes
    with torch.no_grad():
        a, b = model.likelihood(codes).log_prob(x), model.likelihood(other).log_prob(x)
    assert (a - b).abs().max() > 1e-3


@torch.no_grad()
def test_two_level_commitment_is_the_sum_of_both_levels():
    model, x = _two_level_vqvae()
    top, bottom = model._levels(x, train=False)
    q = model.quantize(x)
    assert top.commitment.abs().sum() > 0
    torch.testing.assert_close(q.commitment, top.commitment + bottom.commitment)


def test_two_level_straight_through_passes_the_reconstruction_gradient_to_both_encoders():
    """z_q = z_e + sg(e - z_e) at each level (Razavi et al. 2019): the reconstruction term's
    gradient of every weight is that of the module's equations with each level's e - z_e held
    constant, so the top encoder learns from the reconstruction (through the bottom level's merge
    and through top_up), not from its commitment alone."""
    model, x = _two_level_vqvae()
    top, bottom = model._levels(x, train=False)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    px, _ = model.train_pass(x)
    got = torch.autograd.grad(px.log_prob(x).sum(), params, allow_unused=True)
    h_b = model.encoder(model._input(x))
    z_e = model.top_encoder(h_b)
    z_t = z_e + (model.top_quantizer.lookup(top.indices) - z_e).detach()
    z_e = model.merge(torch.cat([h_b, model.top_decoder(z_t)], 1))
    z_b = z_e + (model.quantizer.lookup(bottom.indices) - z_e).detach()
    want = torch.autograd.grad(model._decode_pair(z_t, z_b).log_prob(x).sum(), params, allow_unused=True)
    for (name, _), g, w in zip(named, got, want):
        assert (g is None) == (w is None), name
        if w is not None:
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=name)
    assert all(g is not None and g.abs().sum() > 0 for (n, _), g in zip(named, got) if n.startswith("top_encoder."))


# --- nn/conv.py: the residual stack adds each block to its input -----------------------------
def test_residual_stack_is_the_identity_plus_blocks():
    from dgmkit.nn.conv import ResidualStack

    torch.manual_seed(0)
    st = ResidualStack(4, 2, 2).double()
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        for block in st.blocks:
            block[-1].weight.zero_()
            block[-1].bias.zero_()
    torch.testing.assert_close(st(x), torch.relu(x))  # zero blocks: relu of the input itself
    with torch.no_grad():
        h = x
        _perturb(st, 0.3, 1)
        for block in st.blocks:
            h = h + block(h)
    torch.testing.assert_close(st(x), torch.relu(h))


# --- nn/gated.py ------------------------------------------------------------------------------
def test_gated_conv_is_the_linear_half_times_the_sigmoid_of_the_gate():
    from dgmkit.nn.gated import GatedConv2d

    torch.manual_seed(0)
    g = GatedConv2d(2, 3, 3, padding=1).double()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    a = g.conv(x)
    torch.testing.assert_close(g(x), a[:, :3] * torch.sigmoid(a[:, 3:]))


def test_gated_branches_partial_passes_the_gradient_to_its_first_branch():
    from dgmkit.nn.gated import GatedBranches

    torch.manual_seed(0)
    net = GatedBranches([5, 3], 7, 4).double()
    a, b = torch.randn(2, 5, dtype=torch.float64), torch.randn(6, 2, 3, dtype=torch.float64)
    first = list(net.branches[0].parameters())
    g1 = torch.autograd.grad(net.partial(a)(b).square().sum(), first)
    g2 = torch.autograd.grad(net(torch.cat([a.expand(6, 2, 5), b], -1)).square().sum(), first)
    for u, v in zip(g1, g2):
        torch.testing.assert_close(u, v)


# --- nn/scale.py ------------------------------------------------------------------------------
def test_scale_map_floors_softplus_at_the_given_min_scale():
    from dgmkit.nn.scale import scale_map

    for floor in (1e-4, 1e-2):
        m = scale_map("softplus", min_scale=floor)
        assert m(torch.tensor([-60.0], dtype=torch.float64)).item() == pytest.approx(floor, rel=1e-9)


# --- nn/pixelcnn.py and conditional/pixelcnn.py ---------------------------------------------
def test_pixelcnn_gate_is_tanh_times_sigmoid():
    from dgmkit.nn.pixelcnn import GatedPixelCNNLayer

    torch.manual_seed(0)
    layer = GatedPixelCNNLayer(3, 3, 3, first=False).double()
    _perturb(layer, 0.5, 0)
    h = torch.randn(1, 3, 1, 4, dtype=torch.float64)
    v_pre = torch.randn(1, 6, 1, 4, dtype=torch.float64)
    with torch.no_grad():
        layer.h_conv.weight.zero_()
        layer.h_conv.bias.zero_()
    a = layer.v_to_h(v_pre)
    want = h + layer.h_out(torch.tanh(a[:, :3]) * torch.sigmoid(a[:, 3:]))
    torch.testing.assert_close(layer.horizontal(h, v_pre), want)


def test_the_condition_reaches_later_rows_through_the_vertical_stack():
    """Output (r, 0) sees the condition of the rows above it (the vertical stack's term), not only
    that of its own row up to its column."""
    from dgmkit.nn.pixelcnn import GatedPixelCNNNet

    torch.manual_seed(0)
    net = GatedPixelCNNNet(1, 2, channels=6, layers=3, kernel=3, cond_channels=2).double()
    _perturb(net, 0.3, 1)
    x = torch.rand(1, 1, 4, 5, dtype=torch.float64)
    s = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    (gs,) = torch.autograd.grad(net(x, s)[0, :, 2, 0].sum(), s)
    assert gs[0, :, :2].abs().sum() > 0  # rows 0 and 1 of the condition


def test_the_pixelcnn_decoder_depends_on_z():
    from test_pixelvae import _decoder

    d = _decoder(3)
    z = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.randint(0, 3, (1, 1, 3, 4)).double()
    with torch.no_grad():
        lp = d(z).log_prob(x)
    assert (lp[0] - lp[1]).abs() > 1e-3


# --- nn/unet.py -------------------------------------------------------------------------------
def test_timestep_embedding_is_sine_and_cosine_pairs():
    from dgmkit.nn.unet import timestep_embedding

    s = torch.tensor([0.0, 3.0, 250.0, 999.0], dtype=torch.float64)
    e = timestep_embedding(s, 16)
    torch.testing.assert_close(e[:, :8].square() + e[:, 8:].square(), torch.ones(4, 8, dtype=torch.float64))
    torch.testing.assert_close(e[0], torch.cat([torch.zeros(8), torch.ones(8)]).double())


def test_unet_up_blocks_receive_the_skip_connections():
    from dgmkit.nn.unet import ResBlock, UNet

    torch.manual_seed(0)
    net = UNet(1, 1, [4, 8], blocks=1, attention=False).double()
    _perturb(net, 0.3, 0)
    up = [m for lvl in net.up for m in lvl if isinstance(m, ResBlock)]
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[0])) for m in up]
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    net(x, torch.tensor([10.0, 500.0], dtype=torch.float64))
    for h in hooks:
        h.remove()
    assert len(seen) == len(up) > 0
    for m, inp in zip(up, seen):
        previous = inp.shape[1] - _skip_width(net, m)
        assert inp[:, previous:].abs().sum() > 0, "the skip half of an up block's input is all zero"


def _skip_width(net, block) -> int:
    """The up blocks read [h, skip]: h of the previous up block's width (or the middle's)."""
    from dgmkit.nn.unet import ResBlock

    up = [m for lvl in net.up for m in lvl if isinstance(m, ResBlock)]
    i = up.index(block)
    previous = net.mid2.conv2.out_channels if i == 0 else up[i - 1].conv2.out_channels
    return block.conv1.in_channels - previous


# --- models/hybrid.py -------------------------------------------------------------------------
def test_hybrid_flow_samples_at_the_given_temperature():
    from dgmkit.config import RunConfig, build_model

    torch.manual_seed(0)
    cfg = RunConfig.of(model="hybrid", hidden=[8], flow_layers=2, flow_levels=1, classes=3)
    model = build_model(cfg, (1, 4, 4), 4).double()
    a, _ = model.sample(4, generator=torch.Generator().manual_seed(1), temperature=0.5)
    b, _ = model.flow.sample(4, generator=torch.Generator().manual_seed(1), temperature=0.5)
    c, _ = model.sample(4, generator=torch.Generator().manual_seed(1), temperature=1.0)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


# --- models/wae.py: eval's MMD compares the codes with draws of the prior ---------------------
def test_wae_eval_mmd_is_large_for_codes_far_from_the_prior():
    from dgmkit.config import RunConfig, build_model

    torch.manual_seed(0)
    cfg = RunConfig.of(model="wae", dataset="digits", hidden=[32], latent_dim=3)
    model = build_model(cfg, (1, 8, 8), 2).eval()
    last = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.bias.add_(10.0)  # every code about 10 prior scales away
    x = (torch.rand(100, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    with torch.no_grad():
        mmd = model.evaluation_terms(x, None, {}, 50)["mmd"]
    v = mmd.values.double()
    assert v.nanmean() > 0.1, v


# --- models/helmholtz.py: prior draws follow the prior's own top-layer probabilities ------------
@torch.no_grad()
def test_helmholtz_prior_draws_follow_a_biased_top_layer():
    import itertools

    from dgmkit.models.helmholtz import HelmholtzMachine

    torch.manual_seed(0)
    m = HelmholtzMachine((1, 1, 3), [2, 2])
    m.top_logits.copy_(torch.tensor([2.0, -1.5]))
    h = m.prior().sample((100_000,))
    codes = (h * torch.tensor([8.0, 4.0, 2.0, 1.0])).sum(-1).long()
    freq = torch.bincount(codes, minlength=16).double() / 100_000
    grid = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))
    probs = m.prior().log_prob(grid).exp().double()
    assert (freq - probs).abs().max() < 0.006


# --- nn/unet.py: attention is residual (its zero-initialised output adds nothing at first) ----
def test_unet_attention_starts_as_the_identity_and_adds_to_its_input():
    from dgmkit.nn.unet import Attention

    torch.manual_seed(0)
    att = Attention(8).double()
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(att(x), x)


# --- models/wae.py: the encoder reads x scaled as the other families' do ------------------------
@torch.no_grad()
def test_wae_encoder_reads_the_scaled_input():
    from dgmkit.config import RunConfig, build_model
    from dgmkit.distributions import location

    torch.manual_seed(0)
    cfg = RunConfig.of(model="wae", dataset="digits", hidden=[32], latent_dim=3)
    model = build_model(cfg, (1, 8, 8), 2).eval()
    model.input_scale = 1 / 255  # (as a model of 256-level images has it)
    x = torch.randint(0, 256, (5, 1, 8, 8)).float()
    torch.testing.assert_close(location(model.posterior(x)), model.encoder(x / 255))
