"""The VAE with an autoregressive decoder (PixelVAE / PixelHVAE): the conditional PixelCNN is
autoregressive, its cached and naive sampling agree, and the model's bounds are ordered
against its exact log p(x), computed by quadrature over a one-dimensional latent."""

import itertools
import math

import pytest
import torch

from dgmkit.cli.main import main
from dgmkit.conditional import BernoulliHead, CategoricalHead
from dgmkit.conditional.pixelcnn import AutoregressivePixels, PixelCNNDecoder
from dgmkit.config import RunConfig, load_config_file
from dgmkit.distributions import observed_log_prob
from dgmkit.families.pixelvae import PixelVAEConfig
from dgmkit.models.pixelvae import PixelVAE
from dgmkit.nn.pixelcnn import GatedPixelCNNNet
from dgmkit.objectives import log_importance_weights


def _perturb(module: torch.nn.Module, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _decoder(levels: int = 2, shape=(1, 3, 4), cond: int = 2, seed: int = 0) -> PixelCNNDecoder:
    torch.manual_seed(seed)
    head = BernoulliHead() if levels == 2 else CategoricalHead(levels)
    net = torch.nn.Linear(3, cond * math.prod(shape))
    d = PixelCNNDecoder(net, head, shape, cond, channels=8, layers=3, input_scale=1.0 / (levels - 1)).double()
    _perturb(d, 0.5, seed)
    return d


def test_the_conditional_pixelcnn_sees_only_earlier_pixels_and_all_of_the_condition():
    torch.manual_seed(0)
    net = GatedPixelCNNNet(1, 2, channels=6, layers=3, kernel=3, cond_channels=2).double()
    _perturb(net, 0.3, 1)
    h, w = 4, 5
    x = torch.rand(1, 1, h, w, dtype=torch.float64, requires_grad=True)
    s = torch.randn(1, 2, h, w, dtype=torch.float64, requires_grad=True)
    out = net(x, s)
    for d in range(h * w):
        r, c = divmod(d, w)
        gx, gs = torch.autograd.grad(out[0, :, r, c].sum(), (x, s), retain_graph=True)
        later = gx.flatten()[d:]
        assert (later == 0).all(), f"output {d} depends on pixel(s) {d + later.nonzero().flatten().tolist()}"
        assert gx.flatten()[:d].abs().sum() > 0 or d == 0
        assert gs[0, :, r, c].abs().sum() > 0, "the condition at the pixel itself reaches its output"


@pytest.mark.parametrize("levels", [2, 3])
def test_cached_and_naive_generation_draw_the_same_images(levels):
    d = _decoder(levels)
    px = d(torch.randn(5, 3, dtype=torch.float64))
    u = torch.rand(5, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    cached, naive = px.sample_from_noise(u, cached=True), px.sample_from_noise(u, cached=False)
    assert cached.shape == (5, 1, 3, 4)
    assert torch.equal(cached, naive)
    assert set(cached.unique().tolist()) <= set(range(levels))


@pytest.mark.parametrize("cached", [True, False])
def test_no_latents_decode_to_no_images(cached):
    """The greedy decode, or draws, of a batch of no latents (a PixelVAE's reconstruction of no
    images) are an empty batch: the cached path stepped through the images 0 at a time, Python's
    "range() arg 3 must not be zero"."""
    d = _decoder(3)
    px = d(torch.randn(0, 3, dtype=torch.float64))
    assert px.sample_from_noise(torch.rand(0, 12, dtype=torch.float64), cached=cached).shape == (0, 1, 3, 4)
    assert px.location().shape == (0, 1, 3, 4)


def test_uniforms_of_another_shape_than_one_per_pixel_of_each_image_are_refused():
    """Uniforms for too few pixels were an IndexError from the last pixel's draw; for another number
    of images, a broadcast's error."""
    px = _decoder(2)(torch.randn(5, 3, dtype=torch.float64))
    for u in (torch.rand(5, 11), torch.rand(4, 12), torch.rand(6, 12)):
        with pytest.raises(ValueError, match=r"expected uniforms of shape \(5, 12\)"):
            px.sample_from_noise(u.double())


def test_the_greedy_decode_takes_each_pixels_most_probable_value():
    d = _decoder(3)
    z = torch.randn(4, 3, dtype=torch.float64)
    px = d(z)
    x = px.location()
    log_pmf = d.head.pixel_log_pmf(d.params(x, d.condition(z)).squeeze(1).permute(0, 2, 3, 1).reshape(-1, 3))
    assert torch.equal(log_pmf.argmax(-1).reshape(4, -1).to(x.dtype), x.flatten(1))
    with pytest.raises(NotImplementedError, match="no closed-form mean"):
        _ = px.mean


def test_missing_entries_are_refused_not_scored_as_if_the_pixels_were_independent():
    px = _decoder()(torch.randn(2, 3, dtype=torch.float64))
    x = torch.zeros(2, 1, 3, 4, dtype=torch.float64)
    x[0, 0, 1, 1] = float("nan")
    with pytest.raises(
        ValueError, match=r"missing entries need a likelihood that factorizes over the entries, and p\(x\|z\) is a"
    ):
        observed_log_prob(px, x)


def _tiny_pixelvae(layers: list[int], seed: int = 0) -> PixelVAE:
    torch.manual_seed(seed)
    cfg = PixelVAEConfig(latent_sizes=layers, hidden=[8], pixelcnn_layers=2, pixelcnn_channels=4, cond_channels=1)
    cfg.validate()
    m = cfg.build((1, 2, 2), None).double()
    _perturb(m, 0.4, seed)
    assert isinstance(m, PixelVAE) and isinstance(m.likelihood(torch.zeros(1, sum(layers))), AutoregressivePixels)
    return m.eval()


def _exact_log_px(m: PixelVAE, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log of the integral of p(z) p(x|z) over a 1-D z, by the trapezoid rule."""
    z = torch.linspace(-9, 9, 3001, dtype=torch.float64)
    log_pz = m.prior().log_prob(z[:, None])  # (G,)
    log_px_z = m.likelihood(z[:, None, None].expand(-1, len(x), 1)).log_prob(x)  # (G, B)
    f = log_pz[:, None] + log_px_z
    step = z[1] - z[0]
    return torch.logsumexp(f, 0) + step.log()


def test_the_model_normalises_and_its_bounds_are_ordered_against_the_exact_likelihood():
    m = _tiny_pixelvae([1])
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64).view(16, 1, 2, 2)
    # a few ELBO steps on some images, so that q(z|x) is a proposal worth the name (random weights
    # give a narrow, misplaced q whose importance weights are heavy-tailed)
    data = images[torch.randint(16, (64,), generator=torch.Generator().manual_seed(2))]
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        (-log_importance_weights(m, data, k=1).log_w.mean()).backward()
        opt.step()
    with torch.no_grad():
        exact = _exact_log_px(m, images)
        torch.testing.assert_close(torch.logsumexp(exact, 0), torch.zeros((), dtype=torch.float64), atol=1e-6, rtol=0)
        g = torch.Generator().manual_seed(0)
        w = log_importance_weights(m, images, k=4000, generator=g).log_w  # (k, B)
    elbo = w.mean(0)
    iwae = torch.logsumexp(w, 0) - math.log(w.shape[0])
    assert (elbo <= iwae + 1e-9).all()
    assert (iwae <= exact + 0.01).all(), (iwae - exact).max()  # a lower bound in expectation, k = 4000: tight
    assert (exact - iwae).mean() < 0.01
    assert (exact - elbo).mean() > 1e-3  # the ELBO's gap is real


def test_two_layers_build_a_pixelhvae_whose_samples_are_cached_or_naive_alike():
    m = _tiny_pixelvae([2, 1], seed=1)
    assert m.num_layers == 2 and not m.sample_means and m.sample_cached and not m.can_impute
    a, _ = m.sample(6, generator=torch.Generator().manual_seed(4), cached=True)
    b, _ = m.sample(6, generator=torch.Generator().manual_seed(4), cached=False)
    assert torch.equal(a, b) and a.shape == (6, 1, 2, 2)
    assert m.reconstruct(a).shape == a.shape


def test_the_family_refuses_what_the_decoder_cannot_model():
    from dgmkit.errors import ConfigError

    with pytest.raises(ConfigError, match="odd"):
        PixelVAEConfig(pixelcnn_kernel=4).validate()
    with pytest.raises(ConfigError, match="single-channel"):
        PixelVAEConfig(hidden=[8], latent_sizes=[2]).build((3, 4, 4), None)


@pytest.mark.parametrize(("shape", "kernel", "layers"), [((9, 4), 3, 2), ((11, 3), 5, 1), ((8, 5), 5, 2)])
def test_cached_generation_with_a_condition_crops_rows_exactly(shape, kernel, layers):
    # images tall enough that row r's vertical stack starts below row 0 (top > 0): every head
    # output of the cached path equals the one-pass output on the finished image
    h, w = shape
    torch.manual_seed(0)
    net = GatedPixelCNNNet(1, 3, channels=5, layers=layers, kernel=kernel, cond_channels=2).double()
    _perturb(net, 0.5, 3)
    assert h - 1 - layers * (kernel // 2) - 1 > 0
    s = torch.randn(2, 2, h, w, dtype=torch.float64)
    seen, g = {}, torch.Generator().manual_seed(0)

    def choose(t, params):
        seen[t] = params.clone()
        return torch.randint(0, 4, (params.shape[0],), generator=g).double()

    x = net.generate(torch.zeros(2, 1, h, w, dtype=torch.float64), choose, 1 / 3, s)
    one_pass = net(x / 3, s)
    for t, params in seen.items():
        torch.testing.assert_close(params, one_pass[:, :, t // w, t % w], rtol=0, atol=1e-12)


def test_importance_sampling_chunks_fit_the_pixelcnn_in_memory(monkeypatch):
    from dgmkit.objectives import importance

    # the paper preset's decoder: 64 channels, 8 layers on 28x28, about 11 MB a row in one pass,
    # so the GPU default of 65536 rows a chunk would need hundreds of GB
    big = PixelCNNDecoder(torch.nn.Linear(80, 4 * 784), BernoulliHead(), (1, 28, 28), 4, channels=64, layers=8)
    assert 10e6 < big.bytes_per_image() < 13e6
    assert importance.GPU_CHUNK_BYTES // big.bytes_per_image() < importance.GPU_CHUNK // 50
    m = _tiny_pixelvae([1])
    rows = m.importance_rows(10 * m.decoder.bytes_per_image(torch.float64))
    assert rows == 10
    monkeypatch.setattr(importance, "CPU_CHUNK_BYTES", 10 * m.decoder.bytes_per_image(torch.float64))
    sizes = []
    params = m.decoder.params
    monkeypatch.setattr(m.decoder, "params", lambda x, s: sizes.append(len(x)) or params(x, s))
    x = torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=torch.float64).view(1, 1, 2, 2).repeat(4, 1, 1, 1)
    with torch.no_grad():
        est = importance.importance_sampled_log_likelihood(m, x, k=7, generator=torch.Generator().manual_seed(0))
    assert est.shape == (4,) and torch.isfinite(est).all()
    assert max(sizes) <= 10 and sum(sizes) == 7 * 4


def test_the_continuous_likelihoods_settings_are_not_offered(tmp_path, capsys):
    """The decoder's likelihood is a discrete one: the Gaussian and Student's t settings of the
    shared likelihood part are neither flags of this family nor accepted from a config file."""
    assert main(["train", "--model", "pixelvae", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "--pixelcnn-layers" in shown
    assert all(f"--{name.replace('_', '-')}" not in shown for name in PixelVAEConfig.unused_settings)
    assert main(["train", "--model", "pixelvae", "--gaussian-scale", "0.2", "--out", str(tmp_path / "a")]) == 1
    assert "not of pixelvae" in capsys.readouterr().err
    config = tmp_path / "pv.toml"
    config.write_text('model = "pixelvae"\ngaussian_scale = 0.3\n')
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "b")]) == 1
    assert "does not use this setting" in capsys.readouterr().err
    config.write_text('model = "pixelvae"\nlatent_sizes = [2]\npixelcnn_layers = 1\n')  # the defaults stay accepted
    assert RunConfig.from_dict(load_config_file(config)).model.gaussian_scale == 0.1


def test_traverse_and_interpolate_say_a_pixelvae_decodes_greedily_not_to_means(tmp_path, capsys, monkeypatch):
    """A PixelVAE's p(x|z) has no mean: ``dgm traverse`` and ``dgm interpolate`` show its greedy
    decode (each pixel its most probable value in turn), and say so; both said "decoded to the
    means of p(x|z)", which it has none of. A VAE's still say means."""
    tiny = ["--hidden", "8", "--dataset", "digits", "--epochs", "1", "--quiet"]
    pixel = ["--model", "pixelvae", "--latent-sizes", "2", "--pixelcnn-layers", "1", "--pixelcnn-channels", "4"]
    pv, vae = tmp_path / "pv", tmp_path / "vae"
    assert main(["train", *pixel, *tiny, "--out", str(pv)]) == 0
    assert main(["train", "--latent-dim", "2", *tiny, "--out", str(vae)]) == 0
    capsys.readouterr()
    for run, shown in ((pv, "greedy decode of p(x|z)"), (vae, "means of p(x|z)")):
        for command in ("traverse", "interpolate"):
            argv = [command, str(run), "--steps", "2", "--out", str(tmp_path / f"{run.name}-{command}.png")]
            assert main([*argv, *(["--dims", "1"] if command == "traverse" else ["--pairs", "1"])]) == 0
            out = capsys.readouterr().out
            assert f"decoded to the {shown}" in out, out
            assert run == vae or "means of p(x|z)" not in out, out
    # dgm diagnose's figure of decoded prior draws (holes and typical) names them alike
    import dgmkit.cli.diagnose as diagnose

    said, figure = [], diagnose.diagnosis_png
    monkeypatch.setattr(diagnose, "diagnosis_png", lambda *a: said.append(a[-1]) or figure(*a))
    for run in (pv, vae):
        argv = ["diagnose", str(run), "--holes", "20", "--out", str(tmp_path / f"{run.name}-d.png")]
        assert main(argv) == 0, capsys.readouterr().err
    assert said == [PixelVAE.decoded_name, "means of p(x|z)"] and PixelVAE.decoded_name.startswith("greedy decode"), said


@pytest.mark.parametrize("family", ["pixelvae", "hvae"])
def test_latents_of_another_size_are_refused_by_name(family):
    """p(x|z) of latents of another size than the layers' sum was a matmul's RuntimeError (from the
    PixelVAE's condition network only when scored: its p(x|z) makes s(z) lazily)."""
    from dgmkit.config import build_model

    kw = {"pixelcnn_layers": 1, "pixelcnn_channels": 4} if family == "pixelvae" else {}
    cfg = RunConfig.of(model=family, dataset="digits", hidden=[8], latent_sizes=[4, 2], **kw)
    model = build_model(cfg, (1, 8, 8), 2).eval()
    x = torch.zeros(3, 1, 8, 8)
    assert model.likelihood(torch.randn(3, 6)).log_prob(x).shape == (3,)
    for z in (torch.randn(3, 5), torch.randn(3, 7), torch.tensor(0.5)):
        with pytest.raises(ValueError, match=r"6 dimensions \(its layers' \[4, 2\] concatenated\)"):
            model.likelihood(z).log_prob(x)
