"""Flows from the command line: train, evaluate (exact NLL, bits/dim), sample, density."""

import json
import math

import numpy as np
import pytest
import torch
from tests.test_cli import PNG, assert_clean_failure, run

SMALL = ["--hidden", "16", "--flow-layers", "2", "--epochs", "2", "--batch-size", "64", "--quiet"]


@pytest.mark.parametrize("flow", ["nice", "realnvp", "glow", "maf"])
def test_each_flow_trains_evaluates_and_samples(tmp_path, capsys, flow):
    out = tmp_path / flow
    code, text, err = run(capsys, "train", "--model", "flow", "--flow", flow, "--dataset", "digits", *SMALL, "--out", out)
    assert code == 0, err
    # of the 17-level integers by one draw of the dequantization noise: a bound, said as dgm eval says it
    assert "best validation log p(x)" in text and "(a one-draw estimate of a lower bound (uniform dequantization))" in text
    code, text, err = run(capsys, "eval", out)
    assert code == 0, err
    assert "NLL (one-draw bound)" in text and "upper bound on the NLL" in text and "ELBO" not in text
    r = json.loads((out / "eval.json").read_text())
    assert r["estimate"] == "exact" and r["elbo"] is None and r["transform"] == "dequantize" and r["num_dims"] == 64
    # bits/dim of the 17-level integer images: below the uniform model's log2(17), above 0
    assert r["bpd"] == pytest.approx(r["nll"] / (64 * math.log(2)))
    assert 0 < r["bpd"] < math.log2(17)
    code, text, err = run(capsys, "sample", out, "--out", tmp_path / "s.png", "-n", "16", "--temperature", "0.8")
    assert code == 0, err
    assert (tmp_path / "s.png").read_bytes().startswith(PNG)


def test_per_epoch_lines_name_a_one_draw_bound_of_dequantized_integers(tmp_path, capsys):
    """A flow's log p(x) of dequantized integers, one draw of the noise a datapoint, is a bound on
    their log-likelihood: the per-epoch lines say so, as the last line and dgm eval do; of
    continuous data (two moons) it is the exact log-density, said plainly."""
    loud = [a for a in SMALL if a != "--quiet"]
    for dataset, bound in (("digits", True), ("two-moons", False)):
        out = tmp_path / dataset
        args = ["--model", "flow", "--flow", "nice", "--dataset", dataset, *loud, "--out", out]
        code, text, err = run(capsys, "train", *args)
        assert code == 0, err
        epochs = [line for line in text.splitlines() if line.startswith("epoch")]
        assert len(epochs) == 2, text
        label = "log p(x) (one-draw bound)" if bound else "log p(x)"
        for line in epochs:
            assert f"train -{label} " in line and f"valid -{label} " in line and ("one-draw" in line) == bound, line


def test_two_dimensional_density_plot(tmp_path, capsys):
    out = tmp_path / "moons"
    code, _, err = run(
        capsys, "train", "--model", "flow", "--flow", "realnvp", "--dataset", "two-moons", *SMALL, "--out", out
    )
    assert code == 0, err
    code, text, err = run(capsys, "density", out, "--out", tmp_path / "d.png", "--grid", "60", "-n", "100")
    assert code == 0, err
    assert (tmp_path / "d.png").read_bytes().startswith(PNG)
    mass = float(text.split("mass in the window ")[1].split(")")[0])
    assert 0.9 < mass <= 1.01 and "of them in the window" in text and "note:" not in text  # (the samples agree)
    code, _, err = run(capsys, "sample", out, "--out", tmp_path / "s.png")
    assert_clean_failure(code, err, "dgm density")


def test_the_density_of_a_two_column_table_is_drawn_in_its_own_units(tmp_path, capsys, monkeypatch):
    """Its columns reach the flow standardized; the axes said those values (a price of 1000 drawn
    near 0) and named no column."""
    import dgmkit.cli.density as density

    rng = np.random.default_rng(0)
    rows = "".join(f"{1000 + 10 * a:.3f},{-50 + 2 * b:.3f}\n" for a, b in rng.normal(size=(200, 2)))
    (tmp_path / "t.csv").write_text("price,temperature\n" + rows)
    out = tmp_path / "flow"
    code, _, err = run(capsys, "train", "--model", "flow", "--flow", "realnvp", "--dataset", tmp_path / "t.csv", *SMALL,
                       "--out", out)  # fmt: skip
    assert code == 0, err
    drawn = {}
    real = density.density_png
    monkeypatch.setattr(density, "density_png", lambda *a, **k: drawn.update(args=a) or real(*a, **k))
    code, text, err = run(capsys, "density", out, "--out", tmp_path / "d.png", "--grid", "40", "-n", "50")
    assert code == 0, err
    _, extent, samples, _, names = drawn["args"]
    assert names == ("price", "temperature")
    assert extent[0] < 990 and extent[1] > 1010 and extent[2] < -52 and extent[3] > -48 and extent[1] < 1100
    assert 950 < samples[:, 0].mean() < 1050 and -60 < samples[:, 1].mean() < -40
    assert 0.9 < float(text.split("mass in the window ")[1].split(")")[0]) <= 1.01  # (the same in either units)
    # the heat map's values are a density per unit area of the axes drawn: their sum over the window is its mass
    log_p = drawn["args"][0]
    cell = (extent[1] - extent[0]) / 39 * (extent[3] - extent[2]) / 39
    mass = float(text.split("mass in the window ")[1].split(")")[0])
    assert float(np.exp(log_p)[1:-1, 1:-1].sum()) * cell == pytest.approx(mass, rel=0.1)


def test_each_grid_point_of_the_heat_map_is_drawn_at_the_centre_of_its_pixel(monkeypatch):
    """The window's corners are grid points (10 a side over [0, 9]), but the window was imshow's
    extent: its 10 pixels spread over 9 cells, the point at x = 0 drawn at 0.45 and that at 9 at
    8.55 (half a cell off the samples beside it: 0.42 on a --grid 10 of two moons)."""
    import dgmkit.cli.density as density

    figures = []
    monkeypatch.setattr(density, "figure_png", lambda fig: figures.append(fig) or b"png")
    log_p = np.log(np.full((10, 5), 1 / 36.0))
    density.density_png(log_p, (0.0, 9.0, -1.0, 3.0), np.zeros((3, 2)), "t")
    for ax in figures[0].axes[:2]:  # the heat map and the samples' panel (the colour bar comes after them)
        left, right, bottom, top = ax.images[0].get_extent()
        assert (left, right) == pytest.approx((-0.5, 9.5)) and (bottom, top) == pytest.approx((-1.5, 3.5))
        assert ax.get_xlim() == pytest.approx((0, 9)) and ax.get_ylim() == pytest.approx((-1, 3))


def test_the_density_of_dequantized_integers_is_drawn_on_their_support_and_a_discrete_model_is_refused(tmp_path, capsys):
    """A flow of dequantized 2-D integers was drawn on a window 15% beyond [0, 1], where its
    logit gives NaN: "mass in the window nan", exit 0; an autoregressive model of the integers
    (probabilities, not a density) was integrated as a density."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "int2.npy", rng.integers(0, 4, size=(600, 2)).astype(np.uint8))
    flow, arm = tmp_path / "flow", tmp_path / "arm"
    data = ["--dataset", tmp_path / "int2.npy"]
    code, _, err = run(capsys, "train", "--model", "flow", "--flow", "realnvp", *data, *SMALL, "--out", flow)
    assert code == 0, err
    code, text, err = run(capsys, "density", flow, "--out", tmp_path / "d.png", "--grid", "30", "-n", "20")
    assert code == 0, err
    mass = float(text.split("mass in the window ")[1].split(")")[0])
    assert 0.5 < mass <= 1.01  # the window is the support [0, 1]^2
    code, _, err = run(capsys, "train", "--model", "arm", "--arm", "made", "--likelihood", "categorical",
                       "--made-hidden", "16", *data, "--epochs", "1", "--quiet", "--out", arm)  # fmt: skip
    assert code == 0, err
    code, _, err = run(capsys, "density", arm, "--out", tmp_path / "a.png", "--grid", "10")
    assert_clean_failure(code, err, "gives probabilities of discrete values")
    assert not (tmp_path / "a.png").exists()


def test_the_density_of_dequantized_integers_is_named_a_density_of_y_not_of_the_integers(tmp_path, capsys, monkeypatch):
    """A flow of 2-D integers 0..3 is a density of y = (x + u) / 4 on [0, 1]^2: the figure called
    it "density p(x)" with "samples x ~ p(x)" on axes from 0 to 1, where the data x run from 0 to 3."""
    import matplotlib.figure

    import dgmkit.cli.density as density

    rng = np.random.default_rng(0)
    np.save(tmp_path / "int2.npy", rng.integers(0, 4, size=(600, 2)).astype(np.uint8))
    flow = tmp_path / "flow"
    code, _, err = run(capsys, "train", "--model", "flow", "--flow", "realnvp", "--dataset", tmp_path / "int2.npy",
                       *SMALL, "--out", flow)  # fmt: skip
    assert code == 0, err
    words = []
    real = density.figure_png
    monkeypatch.setattr(
        density, "figure_png", lambda fig: words.extend(t.get_text() for t in fig.findobj(matplotlib.text.Text)) or real(fig)
    )
    code, _, err = run(capsys, "density", flow, "--out", tmp_path / "d.png", "--grid", "20", "-n", "20")
    assert code == 0, err
    shown = "\n".join(words)
    assert "p(x)" not in shown and "x ~" not in shown, shown
    assert "density p(y)" in shown and "20 samples y ~ p(y)" in shown and "p(y), per unit area of the axes" in shown
    assert "y = (x + u) / 4: the dequantized data (x the integer levels 0..3" in shown
    assert "y1" in words and "y2" in words


def test_a_density_narrower_than_the_grid_is_said_so_and_its_mass_is_the_samples_share(tmp_path, capsys):
    """A ridge 1e-3 wide (PPCA of two columns that nearly repeat each other): the grid's trapezoid
    sum gave "mass in the window 11.3855", with no word, where the samples' share is 0.9999."""
    rng = np.random.default_rng(1)
    v = rng.normal(size=(3000, 2))
    (tmp_path / "ridge.csv").write_text("a,b\n" + "".join(f"{a:.7f},{a + 1e-3 * b:.7f}\n" for a, b in v))
    out = tmp_path / "ridge"
    code, _, err = run(capsys, "train", "--dataset", tmp_path / "ridge.csv", "--model", "ppca", "--latent-dim", "1",
                       "--quiet", "--out", out)  # fmt: skip
    assert code == 0, err
    code, text, err = run(capsys, "density", out, "--out", tmp_path / "r.png", "-n", "4000")
    assert code == 0, err
    grid = float(text.split("mass in the window ")[1].split(")")[0])
    share = float(text.split("sample")[1].split("(")[1].split(" +-")[0])
    assert abs(grid - 1) > 0.05 and share > 0.99 and "note: the grid's mass in the window" in text, text


def test_vae_with_flow_prior_and_iaf_posterior(tmp_path, capsys):
    out = tmp_path / "vae"
    args = ["--dataset", "digits", "--prior", "flow", "--flow", "maf", "--posterior", "iaf", "--latent-dim", "4"]
    code, _, err = run(capsys, "train", *args, *SMALL, "--out", out)
    assert code == 0, err
    code, text, err = run(capsys, "eval", out, "--iw-samples", "50")
    assert code == 0, err
    r = json.loads((out / "eval.json").read_text())
    assert r["nll"] < -r["elbo"] + 0.01  # the importance-sampled estimate is above the ELBO
    assert r["kl_per_dim"] is None  # a flow prior has no per-dimension KL
    for cmd in ("sample", "reconstruct", "interpolate", "latents"):
        code, _, err = run(capsys, cmd, out, "--out", tmp_path / f"{cmd}.png")
        assert code == 0, (cmd, err)
    # a flow prior takes no temperature: said of it (--temperature was "for flows", and this model has one)
    code, _, err = run(capsys, "sample", out, "--temperature", "0.5", "--out", tmp_path / "t.png")
    assert code == 1 and "--temperature is for flows of the data" in err, err
    assert "the vae model's flow prior over z draws at temperature 1" in err


def test_a_glow_flow_of_a_table_is_loaded_back_by_the_commands(tmp_path, capsys):
    """A vector Glow (iris: 4 values) trained and then failed every command with an internal
    error, in the check of its checkpoint on the meta device."""
    out = tmp_path / "glow"
    code, _, err = run(capsys, "train", "--model", "flow", "--flow", "glow", "--dataset", "iris", *SMALL, "--out", out)
    assert code == 0, err
    code, text, err = run(capsys, "eval", out)
    assert code == 0, err
    assert json.loads((out / "eval.json").read_text())["estimate"] == "exact"


def test_a_flow_of_data_of_one_dimension_is_a_maf_and_coupling_flows_are_refused_by_name(tmp_path, capsys):
    """Couplings split the data's dimensions in two, which one dimension cannot be: a NICE,
    RealNVP or Glow flow of it was an internal error (the coupling mask's ValueError). MAF models
    one dimension; at its start (the identity map) its density is the standard normal base's."""
    from dgmkit.families import FAMILIES

    data = tmp_path / "one.npy"
    np.save(data, np.random.default_rng(0).normal(size=(100, 1)).astype(np.float32))
    for model, flow in (("flow", "nice"), ("flow", "realnvp"), ("flow", "glow"), ("hybrid", "realnvp")):
        code, _, err = run(capsys, "train", "--dataset", data, "--model", model, "--flow", flow, "--out", tmp_path / flow)
        assert_clean_failure(code, err, f"a {flow} flow's couplings", "a single dimension: use --flow maf")
        assert not (tmp_path / flow).exists()
    maf_args = ["--model", "flow", "--flow", "maf"]
    code, _, err = run(capsys, "train", "--dataset", data, *maf_args, *SMALL, "--out", tmp_path / "m")
    assert code == 0, err
    x = torch.linspace(-3, 3, 7).unsqueeze(1)
    maf = FAMILIES["flow"](flow="maf").build((1,), None)
    assert torch.allclose(maf.log_prob(x), torch.distributions.Normal(0.0, 1.0).log_prob(x[:, 0]))


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--model", "flow", "--prior", "mog"], "--prior is a setting of the vae, hvae and pixelvae models, not of flow"),
        (["--model", "ae", "--posterior", "iaf"], "--posterior is a setting of the vae, hvae and pixelvae models"),
        (["--model", "flow", "--logit-alpha", "0.7"], "logit_alpha"),
        (["--model", "flow", "--flow", "ffjord"], "unknown flow"),
    ],
)
def test_bad_flow_configs_fail_cleanly(tmp_path, capsys, argv, needle):
    code, _, err = run(capsys, "train", "--dataset", "digits", *argv, "--out", tmp_path / "x")
    assert_clean_failure(code, err, needle)


def test_variational_dequantization_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "vd"
    argv = ["train", "--model", "flow", "--flow", "realnvp", "--dataset", "digits", "--dequantization", "variational"]
    code, text, err = run(capsys, *argv, *SMALL, "--out", out)
    assert code == 0, err
    assert "best validation dequantization bound" in text
    code, text, err = run(capsys, "eval", out, "--iw-samples", "8")
    assert code == 0, err
    r = json.loads((out / "eval.json").read_text())
    assert r["iw_samples"] == 8 and r["nll"] <= -r["elbo"] + 0.05
    assert r["bpd"] == pytest.approx(r["nll"] / (64 * math.log(2)))
    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 17, (3, 8, 8)))  # digits: 17 levels
    code, text, err = run(capsys, "score", out, tmp_path / "x.npy", "--k", "2", "--out", tmp_path / "s.csv")
    assert code == 0, err  # each row's bound depends on the draws of q(u|x) over the file: said
    assert "over all the inputs together (the dequantization samples; seeded" in text
    code, _, err = run(capsys, "train", "--dataset", "digits", "--dequantization", "variational", "--out", tmp_path / "x")
    assert_clean_failure(code, err, "a setting of the flow and hybrid models")


def test_variational_dequantization_of_continuous_data_is_refused(tmp_path, capsys):
    argv = ["train", "--model", "flow", "--dataset", "two-moons", "--dequantization", "variational"]
    code, _, err = run(capsys, *argv, "--out", tmp_path / "x")
    assert_clean_failure(
        code, err, "dequantization = 'variational' is read only with quantized data (integer levels), which this flow run"
    )
    assert not (tmp_path / "x").exists()
    code, _, err = run(capsys, "train", "--model", "flow", "--dataset", "two-moons", "--dequantization-samples", "4",
                       "--out", tmp_path / "x")  # fmt: skip
    # (it advised --dequantization variational alone, which these data then refused)
    assert_clean_failure(code, err, "choose --dequantization variational (of integer data)")


def test_a_two_dimensional_density_has_a_colour_bar_and_a_report_of_its_run_shows_it(tmp_path, capsys, monkeypatch):
    """The heat map had no scale (a brighter colour was no number), and dgm report of a 2-D flow
    showed no figure at all (it has no images to sample, no latents to plot)."""
    import dgmkit.cli.density as density

    out = tmp_path / "moons"
    code, _, err = run(capsys, "train", "--model", "flow", "--flow", "realnvp", "--dataset", "two-moons", *SMALL,
                       "--out", out)  # fmt: skip
    assert code == 0, err
    figures = []
    real = density.figure_png
    monkeypatch.setattr(density, "figure_png", lambda fig: figures.append(fig) or real(fig))
    code, text, err = run(capsys, "report", out, "--out", tmp_path / "r.html")
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "density p(x) on a 200x200 grid around the test data" in page and "1000 samples x ~ p(x), seed 0" in page
    (fig,) = figures
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "p(x), per unit area of the axes"]
    assert len(fig.axes) == 3 and len(bars) == 1
    digits = tmp_path / "digits"
    code, _, err = run(capsys, "train", "--model", "flow", "--flow", "nice", "--dataset", "digits", *SMALL, "--out", digits)
    assert code == 0, err
    code, _, err = run(capsys, "report", digits, "--out", tmp_path / "d.html")
    assert code == 0, err
    assert "density p(x) on a" not in (tmp_path / "d.html").read_text() and len(figures) == 1


def test_a_density_of_nan_at_grid_points_is_a_note_of_the_report_not_its_failure(tmp_path, capsys, monkeypatch):
    """One NaN log-density on the report's 200x200 grid failed the whole page (every run's), where
    before the density figure the run's page was written: the figure is left out, said in a note."""
    import dgmkit.cli.density as density

    out = tmp_path / "moons"
    code, _, err = run(capsys, "train", "--model", "flow", "--flow", "realnvp", "--dataset", "two-moons", *SMALL,
                       "--out", out)  # fmt: skip
    assert code == 0, err
    real = density._density_model

    def with_a_nan(run_):
        model = real(run_)
        log_prob = model.log_prob
        model.log_prob = lambda x: log_prob(x).index_fill(0, torch.tensor([0], device=x.device), float("nan"))
        return model

    monkeypatch.setattr(density, "_density_model", with_a_nan)
    code, _, err = run(capsys, "report", out, "--out", tmp_path / "r.html")
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "no density figure: the model gives NaN log-densities at 1 of the 40000 grid points" in page
    assert "density p(x) on a 200x200 grid" not in page


def test_a_flow_whose_inverse_overflows_says_to_sample_at_a_lower_temperature(tmp_path, capsys, monkeypatch):
    """A Glow trained one epoch on MNIST drew a third of its values at temperature 1 as NaN (its
    coupling's inverse scale, 1 / sigmoid, overflowed): dgm sample said "its weights may be too
    large", and dgm report of it and of every other run given with it wrote nothing. Now dgm sample
    says to draw at a lower --temperature, and the report leaves out that run's samples in a note."""
    from dgmkit.transforms.coupling import AffineCoupling

    out = tmp_path / "glow"
    code, _, err = run(capsys, "train", "--model", "flow", "--flow", "glow", "--dataset", "digits", *SMALL, "--out", out)
    assert code == 0, err
    real = AffineCoupling._transform

    def overflowing(self, x, params, inverse, where):  # raw log-scales far below what sigmoid(raw + 2) keeps above 0
        return real(self, x, (params[0] - 400.0, params[1]) if inverse else params, inverse, where)

    monkeypatch.setattr(AffineCoupling, "_transform", overflowing)
    for name in ("s.png", "s.npy"):
        code, _, err = run(capsys, "sample", out, "-n", "4", "--out", tmp_path / name)
        assert_clean_failure(code, err)
        assert "the flow drew" in err and "at temperature 1 that are not finite numbers" in err, err
        assert "draw at a lower --temperature, 0.7 say, or train it longer" in err, err
        assert not (tmp_path / name).exists()
    code, _, err = run(capsys, "report", out, "--out", tmp_path / "r.html")
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "no samples: the flow drew" in page and "--temperature 0.7, say" in page, page
    assert "samples x ~ p(x)" not in page


def test_samples_as_an_array_are_the_data_as_stored_and_dgm_score_reads_them_back(tmp_path, capsys):
    """dgm sample drew only pictures (and tables' rows): a 2-D flow's samples were refused ("not
    images"), with no way to have them as numbers. --out FILE.npy writes draws as the data are
    stored: rows (N, D) of a 2-D flow; levels 0..L-1 as uint8 of a dequantized flow's density (the
    bin each draw falls in) and of a categorical autoregressive model; data seen binarized at random
    or as a table are refused."""
    moons = tmp_path / "moons"
    code, _, err = run(capsys, "train", "--model", "flow", "--flow", "realnvp", "--dataset", "two-moons", *SMALL,
                       "--out", moons)  # fmt: skip
    assert code == 0, err
    code, text, err = run(capsys, "sample", moons, "--out", tmp_path / "m.npy", "-n", "400", "--seed", "3")
    assert code == 0, err
    drawn = np.load(tmp_path / "m.npy")
    assert drawn.shape == (400, 2) and drawn.dtype == np.float32 and "as an array (400, 2) of float32 (rows)" in text
    code, _, err = run(capsys, "sample", moons, "--out", tmp_path / "again.npy", "-n", "400", "--seed", "3")
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "again.npy"), drawn)
    code, text, err = run(capsys, "score", moons, tmp_path / "m.npy", "--out", tmp_path / "m.csv")
    assert code == 0, err
    import dgmkit

    model = dgmkit.load(moons).model
    with torch.no_grad():
        own = model.log_prob(torch.from_numpy(drawn).reshape(400, 1, 1, 2)).mean().item()
    assert f"mean log p(x) {own:.3f} nats" in text
    code, _, err = run(capsys, "sample", moons, "--out", tmp_path / "m.png")
    assert_clean_failure(code, err, "not images: --out FILE.npy writes its samples as an array of rows")

    flow = tmp_path / "flow"  # a density of dequantized 17-level digits
    code, _, err = run(capsys, "train", "--model", "flow", "--flow", "realnvp", "--dataset", "digits", *SMALL, "--out", flow)
    assert code == 0, err
    code, text, err = run(capsys, "sample", flow, "--out", tmp_path / "f.npy", "-n", "50", "--temperature", "0.7")
    assert code == 0, err
    levels = np.load(tmp_path / "f.npy")
    assert levels.shape == (50, 1, 8, 8) and levels.dtype == np.uint8 and 0 <= levels.min() and levels.max() <= 16
    assert "the data's levels 0..16" in text and len(np.unique(levels)) > 5
    with torch.no_grad():  # the bin each draw falls in: the same draws, seeded
        y, _ = dgmkit.load(flow).model.sample(50, generator=torch.Generator().manual_seed(0), temperature=0.7)
    assert np.array_equal(levels, (y.double() * 17).floor().clamp(0, 16).to(torch.uint8).numpy())
    outside = (y < 0) | (y >= 1)  # (the logit's margin: mass that no level holds, written as the nearest level)
    assert outside.any()
    note = f"{int(outside.sum())} entries of {int(outside.flatten(1).any(1).sum())} draws fell outside [0, 1)"
    assert note in text and "written as the nearest level, 0 or 16" in text
    code, _, err = run(capsys, "score", flow, tmp_path / "f.npy", "--out", tmp_path / "f.csv")
    assert code == 0, err

    arm, binarized = tmp_path / "arm", tmp_path / "binarized"
    made = ["--model", "arm", "--arm", "made", "--made-hidden", "16", "--dataset", "digits", "--epochs", "1", "--quiet"]
    code, _, err = run(capsys, "train", *made, "--likelihood", "categorical", "--out", arm)
    assert code == 0, err
    code, _, err = run(capsys, "sample", arm, "--out", tmp_path / "a.npy", "-n", "20", "--naive")
    assert code == 0, err
    codes = np.load(tmp_path / "a.npy")
    assert codes.shape == (20, 1, 8, 8) and codes.dtype == np.uint8 and codes.max() <= 16
    code, _, err = run(capsys, "train", *made, "--out", binarized)
    assert code == 0, err
    code, _, err = run(capsys, "sample", binarized, "--out", tmp_path / "b.npy")
    assert_clean_failure(code, err, "sees its data binarized at random")
    assert not (tmp_path / "b.npy").exists()
    code, _, err = run(capsys, "sample", moons, "--out", tmp_path / "m.npy", "--draw")
    assert_clean_failure(code, err, "--draw shapes a picture")


def test_levels_that_do_not_divide_the_images_sides_say_that_a_vector_flow_is_trained(tmp_path, capsys):
    """--flow-levels 5 on 8x8 digits trained the vector flow (documented) without a word, and
    recorded flow_levels 5 that nothing read."""
    argv = ["train", "--model", "flow", "--flow", "glow", "--hidden", "8", "--flow-layers", "1", "--dataset", "digits",
            "--epochs", "1"]  # fmt: skip
    code, text, err = run(capsys, *argv, "--flow-levels", "5", "--out", tmp_path / "five")
    assert code == 0, err
    assert "note: the multi-scale glow flow's 5 levels need image sides divisible by 32; the images of digits" in text
    assert "are 8x8: " in text
    assert "the vector glow flow over the 64 values is trained" in text
    code, text, err = run(capsys, *argv, "--out", tmp_path / "two")  # 2 levels: 8 / 4 = 2, the image flow
    assert code == 0 and "note:" not in text, err


def test_levels_that_no_number_of_levels_fits_are_refused_and_the_note_does_not_advise_fewer(tmp_path, capsys):
    """--flow-levels 5 --flow-blocks 3 on two-moons (points, no image) trained the vector flow without a
    word; Glow on 5x7 images (no level count halves odd sides) was advised "fewer --flow-levels keep the
    image flow", which at --flow-levels 1 it said again."""
    from dgmkit.data.registry import from_array
    from dgmkit.families.flow import FlowConfig

    argv = ["train", "--model", "flow", "--hidden", "8", "--flow-layers", "1", "--epochs", "1", "--quiet"]
    code, _, err = run(capsys, *argv, "--dataset", "two-moons", "--flow-levels", "5", "--out", tmp_path / "moons")
    assert_clean_failure(code, err, "flow_levels = 5 is read only with images (C, H, W) of sides 2 or more")
    images = tmp_path / "odd.npy"
    np.save(images, np.random.default_rng(0).integers(0, 4, size=(20, 1, 5, 7)).astype(np.uint8))
    code, _, err = run(capsys, *argv, "--flow", "glow", "--dataset", images, "--flow-levels", "1", "--out", tmp_path / "g")
    assert_clean_failure(code, err, "flow_levels = 1 is read only with images (C, H, W) of even sides")
    odd = from_array(np.zeros((20, 1, 5, 7), np.uint8), name="odd")
    (note,) = FlowConfig(flow="glow").data_notes(odd)
    assert note.endswith("(flow_levels and flow_blocks unread; no number of levels fits odd sides)")
    assert "flow_levels" not in FlowConfig(flow="realnvp").data_inert_settings((1, 5, 7), 4)  # one level fits


def test_the_latents_of_a_model_of_codes_are_titled_by_them(tmp_path, capsys, monkeypatch):
    """A VAE on another VAE's 4-D codes: its scatter was titled "digits test", the data those codes
    came from, as dgm density's was."""
    import dgmkit.cli.figures as figures

    source, vae = tmp_path / "source", tmp_path / "vae"
    flags = ["--hidden", "8", "--epochs", "1", "--quiet"]
    code, _, err = run(capsys, "train", "--dataset", "digits", *flags, "--latent-dim", "4", "--out", source)
    assert code == 0, err
    code, _, err = run(capsys, "train", "--codes-of", source, "--likelihood", "gaussian", *flags, "--latent-dim", "2",
                       "--out", vae)  # fmt: skip
    assert code == 0, err
    titles = []
    monkeypatch.setattr(figures, "scatter_png", lambda *a: titles.append(a[2]) or b"png")
    code, _, err = run(capsys, "latents", vae, "--out", tmp_path / "l.png")
    assert code == 0, err
    assert titles[0].startswith(f"the codes of {source} test: "), titles


def test_the_density_of_a_model_of_codes_is_titled_by_them(tmp_path, capsys, monkeypatch):
    """A flow on a VAE's 2-D codes was titled "on digits", the data those codes came from."""
    import dgmkit.cli.density as density

    vae, flow = tmp_path / "vae", tmp_path / "flow"
    code, _, err = run(capsys, "train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "2", "--epochs", "1",
                       "--quiet", "--out", vae)  # fmt: skip
    assert code == 0, err
    code, _, err = run(capsys, "train", "--model", "flow", "--flow", "realnvp", "--codes-of", vae, *SMALL, "--out", flow)
    assert code == 0, err
    titles = []
    real = density.density_png
    monkeypatch.setattr(density, "density_png", lambda *a, **k: titles.append(a[3]) or real(*a, **k))
    code, _, err = run(capsys, "density", flow, "--out", tmp_path / "d.png", "--grid", "20", "-n", "50")
    assert code == 0, err
    assert f"on the codes of {vae}: probability mass" in titles[0], titles
