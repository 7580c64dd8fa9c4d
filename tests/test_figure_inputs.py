"""The figure and use commands on data they cannot draw or measure: a split of one row, rows of
values that are not images, result files that dgmkit did not write, an output below a file.
Each is refused in one line before any work (nothing written), or drawn with a true caption."""

import json

import numpy as np
import pytest
import torch

from dgm_cli import dgm as _dgm
from dgm_cli import refused as _refused
from dgmkit.cli.main import main
from dgmkit.evaluation.figures import figure_png, project_2d

VAE = ["--model", "vae", "--hidden", "8", "--latent-dim", "3", "--epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A VAE of 12 images of 8x8 (its test split: 1 image), one of 40 (4), one of 2-D points."""
    root = tmp_path_factory.mktemp("figure-inputs")
    rng = np.random.default_rng(0)
    for name, n in (("one", 12), ("four", 40)):
        np.save(root / f"{name}.npy", rng.integers(0, 2, size=(n, 8, 8)).astype(np.uint8))
        assert main(["train", "--dataset", str(root / f"{name}.npy"), *VAE, "--out", str(root / name)]) == 0
    assert main(["train", "--dataset", "two-moons", "--likelihood", "gaussian", *VAE, "--out", str(root / "moons")]) == 0
    flow = ["--model", "flow", "--flow", "maf", "--hidden", "8", "--flow-layers", "1", "--epochs", "1", "--quiet"]
    assert main(["train", "--dataset", "two-moons", *flow, "--out", str(root / "moons-flow")]) == 0
    return root


def test_a_split_of_one_row_is_refused_where_a_spread_is_needed(runs, tmp_path, capsys):
    one = runs / "one"
    _refused(*_dgm(capsys, "latents", one, "--out", tmp_path / "l.png")[::2], "test split holds 1 row", "at least 2")
    _refused(*_dgm(capsys, "latents", runs / "four", "--limit", "1", "--out", tmp_path / "l.png")[::2], "got 1")
    _refused(*_dgm(capsys, "diagnose", one, "--out", tmp_path / "d.png")[::2], "test split holds 1 row", "at least 2")
    _refused(*_dgm(capsys, "traverse", one, "--out", tmp_path / "t.png")[::2], "test split holds 1 row")
    assert not list(tmp_path.iterdir()) and not (one / "diagnose.json").exists()
    # the report leaves the scatter out and says why
    code, _, err = _dgm(capsys, "report", one, "--out", tmp_path / "r.html")
    assert code == 0, err
    assert "no latent figure: the test split holds 1 row" in (tmp_path / "r.html").read_text()


def test_a_report_captions_the_images_it_shows(runs, tmp_path, capsys):
    assert _dgm(capsys, "report", runs / "four", "--out", tmp_path / "r.html")[0] == 0
    page = (tmp_path / "r.html").read_text()
    assert "4 random test images (left) and their reconstructions" in page and "8 random test images" not in page
    _refused(*_dgm(capsys, "report", runs / "four", "--steps", "5", "--out", tmp_path / "s.html")[::2], "--steps")


@pytest.mark.parametrize(
    "argv",
    [
        ["reconstruct"],
        ["interpolate", "--pairs", "2"],
        ["traverse"],
        ["sample"],
    ],
)
def test_rows_of_values_are_not_drawn_as_images(runs, tmp_path, capsys, argv):
    _refused(*_dgm(capsys, argv[0], runs / "moons", *argv[1:], "--out", tmp_path / "f.png")[::2], "not images")
    assert not (tmp_path / "f.png").exists()


def test_the_refusal_of_rows_as_images_names_a_command_that_takes_the_run(runs, tmp_path, capsys):
    """The hint names what the run can do: a VAE of 2-D points has latents (dgm density would
    refuse it), a 2-D flow's density is drawn (it has no latents)."""
    _refused(*_dgm(capsys, "sample", runs / "moons", "--out", tmp_path / "f.png")[::2], "use dgm latents or dgm eval")
    _refused(*_dgm(capsys, "sample", runs / "moons-flow", "--out", tmp_path / "f.png")[::2], "use dgm density RUN_DIR")


def test_a_latents_seed_that_picks_no_subset_is_refused_not_ignored(runs, tmp_path, capsys):
    """dgm latents draws nothing but a --limit subset: --seed 3 without one (or with a --limit of the
    whole split) drew the very scatter of --seed 0, and said nothing."""
    four, out = runs / "four", tmp_path / "l.png"
    _refused(*_dgm(capsys, "latents", four, "--seed", "3", "--out", out)[::2], "--seed", "all 4 test datapoints")
    _refused(*_dgm(capsys, "latents", four, "--seed", "3", "--limit", "9", "--out", out)[::2], "--limit 9 takes all 4")
    assert not out.exists()
    code, said, err = _dgm(capsys, "latents", four, "--seed", "3", "--limit", "3", "--out", out)
    assert code == 0 and "a random subset of the 4, seed 3" in said, err
    # the split is named with the whole of it too (it was said only of a --limit subset)
    code, said, err = _dgm(capsys, "latents", four, "--split", "valid", "--out", tmp_path / "v.png")
    assert code == 0 and " of valid datapoints (" in said, err


def test_a_traversal_of_a_one_dimensional_code_holds_no_other_dimension_at_an_images_code(
    runs, tmp_path, capsys, monkeypatch
):
    """With M = 1 the sweep replaces the whole code: the line said "the others at one random test
    image's code (seed 0)" of dimensions there are not, as if an image were shown."""
    argv = [*VAE, "--latent-dim", "1", "--dataset", runs / "four.npy", "--out", tmp_path / "m1"]
    assert main(["train", *map(str, argv)]) == 0
    code, said, err = _dgm(capsys, "traverse", tmp_path / "m1", "--split", "train", "--out", tmp_path / "t.png")
    assert code == 0 and "1 code dimension (rows" in said, err
    assert "the others" not in said and "image's code" not in said and "each decoded to the means of p(x|z)" in said
    # so --seed, which picks that image (and the spread's images, of a split of more than 2000), picks nothing shown
    argv = ["--split", "train", "--seed", "3", "--out", tmp_path / "s.png"]
    _refused(*_dgm(capsys, "traverse", tmp_path / "m1", *argv)[::2], "--seed", "all 32 train images", "leave out --seed")
    assert not (tmp_path / "s.png").exists()
    monkeypatch.setattr("dgmkit.cli.disentangle.SPREAD_ROWS", 20)  # (a split of more images: the seed picks those 20)
    code, said, err = _dgm(capsys, "traverse", tmp_path / "m1", *argv)
    assert code == 0 and "by spread over a random 20 of the 32 train images, seed 3: 0)" in said, err


def test_a_traversal_of_a_hierarchical_vae_that_decodes_a_one_dimensional_z1_holds_no_image_s_code(runs, tmp_path, capsys):
    """p(x|z) reads z_1 alone, of one dimension: it is swept whole, as a code of one dimension is,
    so no image's code reaches the picture and --seed over the whole split picks nothing shown (it
    was taken, and the line said "the others at one random train image's code")."""
    argv = ["--model", "hvae", "--latent-sizes", "1", "2", "--decoder-input", "bottom", "--hidden", "8", "--epochs", "1"]
    assert main(["train", *argv, "--quiet", "--dataset", str(runs / "four.npy"), "--out", str(tmp_path / "h")]) == 0
    code, said, err = _dgm(capsys, "traverse", tmp_path / "h", "--split", "train", "--out", tmp_path / "t.png")
    assert code == 0 and "the others" not in said and "image's code" not in said, err
    assert "p(x|z) reads only the first 1 of the 3 code dimensions" in said
    argv = ["--split", "train", "--seed", "3", "--out", tmp_path / "s.png"]
    err = _dgm(capsys, "traverse", tmp_path / "h", *argv)[2]
    _refused(1, err, "the one dimension p(x|z) reads is swept whole", "all 32 train images", "leave out --seed")
    assert not (tmp_path / "s.png").exists()


def test_the_figures_of_a_hierarchical_vae_say_which_dimensions_are_which_layer(runs, tmp_path, capsys):
    """A hierarchy's code is (z_1, z_2) side by side: dgm traverse, latents and interpolate said
    "code dimensions 0, 2" or a "PCA of 3-D codes" without saying that 2 is z_2's (a sweep of the top
    layer with z_1 held, not a draw of z_1 given it); and traverse's sweep, the mean +- R standard
    deviations, said not of what (the spread of the posterior means over the images, not q's or p's)."""
    argv = ["--model", "hvae", "--latent-sizes", "2", "1", "--hidden", "8", "--epochs", "1", "--quiet"]
    assert main(["train", *argv, "--dataset", str(runs / "four.npy"), "--out", str(tmp_path / "h")]) == 0
    layers = "; the code is the layers (z_1, z_2) side by side, dimensions z_1 0-1, z_2 2"
    for command in (["traverse"], ["latents"], ["interpolate", "--pairs", "1"]):
        code, said, err = _dgm(capsys, *command, tmp_path / "h", "--split", "train", "--out", tmp_path / f"{command[0]}.png")
        assert code == 0 and layers in said, (said, err)
        if command == ["traverse"]:
            assert "deviations of its layer-by-layer posterior means (each layer's given the means above) there" in said
    code, said, err = _dgm(capsys, "traverse", runs / "four", "--split", "train", "--out", tmp_path / "v.png")
    assert code == 0 and "standard deviations of its posterior means E[z|x] there" in said and "z_1" not in said, err


def test_a_split_of_one_image_is_said_in_the_singular(runs, tmp_path, capsys):
    _refused(*_dgm(capsys, "reconstruct", runs / "one", "-n", "2", "--out", tmp_path / "r.png")[::2], "the 1 image of")
    code, said, err = _dgm(capsys, "reconstruct", runs / "one", "-n", "1", "--out", tmp_path / "r.png")
    assert code == 0 and "1 random test image (seed 0; left) and its reconstruction (right)" in said, err


def test_density_names_what_it_needs(runs, tmp_path, capsys):
    _refused(*_dgm(capsys, "density", runs / "moons", "--out", tmp_path / "m.png")[::2], "no exact likelihood")
    _refused(*_dgm(capsys, "density", runs / "four", "--out", tmp_path / "m.png")[::2], "draws 2-D data", "(1, 8, 8)")


def test_diagnose_keeps_a_file_it_did_not_write_and_writes_nothing(runs, tmp_path, capsys):
    own = runs / "four" / "diagnose.json"
    own.write_text("my notes")
    _refused(*_dgm(capsys, "diagnose", runs / "four", "--out", tmp_path / "d.png")[::2], "not a diagnose.json of dgmkit")
    assert own.read_text() == "my notes" and not (tmp_path / "d.png").exists()
    own.unlink()
    own.mkdir()
    _refused(*_dgm(capsys, "diagnose", runs / "four", "--out", tmp_path / "d.png")[::2], "not a diagnose.json")
    assert not (tmp_path / "d.png").exists()
    own.rmdir()
    code, _, err = _dgm(capsys, "diagnose", runs / "four", "--holes", "10", "--out", tmp_path / "d.png")
    assert code == 0, err
    assert "estimators" in json.loads(own.read_text())  # its own result is replaced by the next
    assert _dgm(capsys, "diagnose", runs / "four", "--holes", "0", "--out", tmp_path / "d.png", "--force")[0] == 0


def test_an_output_below_a_file_is_refused_before_any_work(runs, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    _refused(*_dgm(capsys, "sample", runs / "four", "--out", tmp_path / "a-file" / "s.png")[::2], "is a file, not a folder")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    _refused(*_dgm(capsys, "sample", runs / "four", "--out", tmp_path / "gone" / "s.png")[::2], "a link to nothing")
    code, _, err = _dgm(capsys, "sample", runs / "four", "-n", "4", "--out", tmp_path / "new" / "deeper" / "s.png")
    assert code == 0 and (tmp_path / "new" / "deeper" / "s.png").is_file(), err  # missing folders are made


def test_a_grid_too_large_to_draw_is_refused_before_the_model_draws_or_reconstructs(runs, tmp_path, capsys, monkeypatch):
    """dgm sample and reconstruct checked the grid after all the work (hours of a diffusion model's
    10000 samples, then "draw fewer images"); they now check it first, as interpolate does."""
    from dgmkit.cli import figures

    def never(*args, **kwargs):
        raise AssertionError("the model was asked to work for a grid that is refused")

    monkeypatch.setattr(figures, "draw_samples", never)
    monkeypatch.setattr(figures, "reconstruction_pairs", never)
    argv = ("sample", runs / "four", "-n", "10000", "--nrow", "1", "--out", tmp_path / "s.png")
    _refused(*_dgm(capsys, *argv)[::2], "more than the 65535 on a side")
    monkeypatch.setattr("dgmkit.evaluation.figures.MAX_GRID_SIDE", 100)
    _refused(*_dgm(capsys, "reconstruct", runs / "four", "-n", "4", "--out", tmp_path / "r.png")[::2], "on a side")


def test_a_projection_of_equal_means_has_no_variance_to_share():
    points, axes, what = project_2d(torch.ones(5, 4))
    assert np.all(points == 0) and "no variance" in axes[0] and "nan" not in what


def test_the_factor_vae_metric_refuses_billions_of_images(runs, capsys):
    _refused(*_dgm(capsys, "disentangle", runs / "four", "--votes", "100000", "--batch", "10000")[::2], "--votes 100000")


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 12])
def test_images_of_any_number_of_channels_are_drawn(channels):
    """1, 3 and 4 channels as grey, RGB and RGBA; others channel by channel in grey, side by side
    (a grid of 12-channel images was an internal error of PIL's)."""
    import io

    from PIL import Image

    from dgmkit.evaluation.figures import image_grid_png

    x = torch.rand(3, channels, 5, 6, generator=torch.Generator().manual_seed(0))
    img = Image.open(io.BytesIO(image_grid_png(x, nrow=3, min_cell=1, pad=0)))
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels, "L")
    width = 3 * 6 * (channels if mode == "L" and channels != 1 else 1)
    assert img.mode == mode and img.size == (width, 5)
    if channels == 12:  # the second channel of the first image sits right of its first
        grey = np.asarray(img)
        assert np.allclose(grey[:, 6:12] / 255, x[0, 1].numpy(), atol=1 / 255)


def test_interpolations_of_discrete_latents_say_what_lies_between_the_codes(tmp_path, capsys):
    run = tmp_path / "dvae"
    assert main(["train", "--model", "dvae", "--dataset", "digits", "--epochs", "1", "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["interpolate", str(run), "--pairs", "2", "--out", str(tmp_path / "i.png")]) == 0
    assert "the latents are discrete" in capsys.readouterr().out


NAMES = ("costs_$1_$2.csv", "US$ and CA$.csv", r"a\$b$")  # mathtext that fails to parse; that loses its $; escapes


def _texts_drawn(monkeypatch, module) -> list[tuple[str, bool]]:
    """Every text of the figures that ``module`` turns into PNGs: (as shown, whether as mathtext)."""
    from matplotlib.text import Text

    seen: list[tuple[str, bool]] = []

    def spy(fig):
        seen.extend(t._preprocess_math(t.get_text()) for t in fig.findobj(Text))
        return figure_png(fig)

    monkeypatch.setattr(module, "figure_png", spy)
    return seen


@pytest.mark.parametrize("name", NAMES)
def test_names_in_figures_are_shown_letter_for_letter(monkeypatch, name):
    """A data path with ``$`` in a figure's title (dgm report, dgm latents) failed as matplotlib
    mathtext (an internal error) or lost its dollar signs: every figure shows the names it is
    given as they are."""
    import dgmkit.cli.density as density
    import dgmkit.evaluation.figures as figures
    import dgmkit.evaluation.ood_scores as ood
    import dgmkit.reporting.page as page

    points = np.random.default_rng(0).normal(size=(20, 2))
    metrics = [{"epoch": 1, "train_elbo": -3.0}, {"epoch": 2, "train_elbo": -2.0}]
    layer = {
        "name": name,
        "mean_variance": [1.0, 0.0],
        "kl_per_dim": None,
        "mutual_info": None,
        "kl": 1.0,
        "active_units": 1,
    }
    scores = ood.OODScores(4, {"nll": (torch.arange(4.0), torch.arange(4.0) + 1)}, {"nll": {"auroc": 0.5}})
    for module, draw in (
        (figures, lambda: figures.scatter_png(points, np.arange(20) % 3, f"{name} test", (name, name))),
        (page, lambda: page.curves_png(metrics, name, "elbo")),
        (density, lambda: density.density_png(np.zeros((4, 4)), (0, 1, 0, 1), points, name, (name, name))),
        (figures, lambda: figures.diagnosis_png({"layers": [layer]}, None, None, name)),
        (ood, lambda: ood.histogram_png(scores, (name, name), name)),
    ):
        seen = _texts_drawn(monkeypatch, module)
        assert draw().startswith(b"\x89PNG")
        assert not any(math for _, math in seen), seen
        assert any(name in shown for shown, _ in seen), seen


def test_the_image_grid_refuses_what_it_cannot_draw_before_drawing():
    """The image grid from Python: images not (N, C, H, W), a row of no images, and a grid of
    more pixels than Pillow opens (dgm interpolate's 1000 pairs of 100 steps of 64x64 sprites:
    444 megapixels) are refused by name; the check reads no pixel (an expanded tensor of 100,000
    images)."""
    from dgmkit.errors import DataError
    from dgmkit.evaluation.figures import MAX_GRID_PIXELS, image_grid_png

    with pytest.raises(DataError, match=r"\(N, C, H, W\).*\(3, 8, 8\)"):
        image_grid_png(torch.rand(3, 8, 8), nrow=2)
    with pytest.raises(ValueError, match="nrow"):
        image_grid_png(torch.rand(3, 1, 8, 8), nrow=0)
    huge = torch.full((), float("nan")).expand(1000 * 102, 3, 64, 64)  # (NaN: a read of it would be refused otherwise)
    with pytest.raises(DataError, match=r"6734 x 66002 pixels \(444 megapixels\).*draw fewer"):
        image_grid_png(huge, nrow=102)
    with pytest.raises(DataError, match=r"13262 x 66002 pixels"):  # 2 channels: shown side by side
        image_grid_png(huge[:, :2], nrow=102)
    side = int(MAX_GRID_PIXELS**0.5) // 30  # a square grid of 28 + 2 pixel cells just inside the limit
    assert len(image_grid_png(torch.zeros(1).expand(side * side, 1, 28, 28), nrow=side)) > 0
    # within the pixels, past a side that viewers open (dgm sample -n 10000 --nrow 1: 32 x 300002)
    with pytest.raises(
        DataError,
        match=r"32 x 300002 pixels, more than the 65535 on a side.*draw fewer images \(or, with --nrow, more in a row\)",
    ):
        image_grid_png(torch.zeros(1).expand(10000, 1, 28, 28), nrow=1)
    with pytest.raises(DataError, match=r"300002 x 32 pixels.*fewer images in a row"):
        image_grid_png(torch.zeros(1).expand(10000, 1, 28, 28), nrow=10000)


def test_a_scatter_of_latent_means_takes_them_as_rows():
    from dgmkit.errors import DataError

    with pytest.raises(DataError, match=r"\(N, M\), got \(5,\)"):
        project_2d(torch.randn(5))


def test_a_scatter_refuses_points_and_labels_it_cannot_draw_truly():
    """From Python: points not (N, 2) or not finite, labels of another length, fractional or
    negative labels (a colour scale from -1 would give the first class another's colour) are
    refused by name; whole-number labels of any integer type are drawn."""
    from dgmkit.errors import DataError, EvaluationError
    from dgmkit.evaluation.figures import scatter_png

    points = np.zeros((4, 2))
    with pytest.raises(DataError, match=r"\(N, 2\), got float64 \(4, 3\)"):
        scatter_png(np.zeros((4, 3)), None, "t", ("a", "b"))
    with pytest.raises(EvaluationError, match="non-finite points to scatter"):
        scatter_png(np.array([[0.0, np.nan]] * 4), None, "t", ("a", "b"))
    with pytest.raises(DataError, match="4 points takes 4 labels, got shape \\(3,\\)"):
        scatter_png(points, np.arange(3), "t", ("a", "b"))
    with pytest.raises(DataError, match="whole numbers, got float64 labels"):
        scatter_png(points, np.array([0.0, 0.5, 1.0, 2.0]), "t", ("a", "b"))
    with pytest.raises(DataError, match=r"\(-1: hidden\), got label -2"):
        scatter_png(points, np.array([-2, 0, 1, 2]), "t", ("a", "b"))
    assert scatter_png(points, np.arange(4, dtype=np.uint8), "t", ("a", "b")).startswith(b"\x89PNG")


def test_a_scatter_draws_hidden_labels_as_crosses_beneath_the_classes(monkeypatch):
    """A partly labelled data file's hidden labels (-1): dgm latents refused the run's split ("whole
    numbers >= 0"). They are drawn as black crosses (grey is tab10's class 7), said in a legend, and
    the classes keep their colours."""
    import matplotlib.axes

    from dgmkit.evaluation.figures import scatter_png

    drawn = []
    real = matplotlib.axes.Axes.scatter
    monkeypatch.setattr(
        matplotlib.axes.Axes, "scatter", lambda ax, x, y, **kw: drawn.append((len(x), kw)) or real(ax, x, y, **kw)
    )
    labels = np.array([-1, 0, 1, 2, -1, 1])
    assert scatter_png(np.random.default_rng(0).normal(size=(6, 2)), labels, "t", ("a", "b")).startswith(b"\x89PNG")
    (grey, kw_grey), (shown, kw) = drawn
    assert (grey, kw_grey["c"], kw_grey["marker"], kw_grey["label"]) == (2, "black", "x", "label hidden (2)")
    assert shown == 4 and list(kw["c"]) == [0, 1, 2, 1] and (kw["vmin"], kw["vmax"]) == (-0.5, 2.5)
    drawn.clear()
    assert scatter_png(np.zeros((3, 2)), np.full(3, -1), "t", ("a", "b")).startswith(b"\x89PNG")  # (all hidden)
    assert [n for n, _ in drawn] == [3]


def test_a_long_scatter_title_is_drawn_whole_within_the_figure(monkeypatch):
    """dgm latents' title of a hierarchical VAE's codes (or of a --limit subset of the sprites) ran
    past both edges of the figure in one line: "ts test: layer-by-layer ..." lost the dataset's
    name. It is wrapped, every letter inside the picture."""
    from matplotlib.text import Text

    import dgmkit.evaluation.figures as figures

    title = "digits test: layer-by-layer posterior means (each layer's given the means above) (n=300)"
    inside = []

    def spy(fig):
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        for t in fig.findobj(Text):
            if t.get_text():
                e = t.get_window_extent(renderer)
                inside.append((t.get_text(), e.x0 >= box.x0 and e.x1 <= box.x1))
        return figure_png(fig)

    monkeypatch.setattr(figures, "figure_png", spy)
    assert figures.scatter_png(np.random.default_rng(0).normal(size=(20, 2)), np.arange(20) % 3, title, ("a", "b"))
    drawn = [(t, ok) for t, ok in inside if "digits test" in t]
    assert drawn and all(ok for _, ok in drawn), drawn
    assert " ".join(drawn[0][0].split()) == title  # wrapped at spaces: the same words


def test_continuous_images_beyond_0_and_1_are_drawn_over_their_recorded_range(tmp_path, capsys):
    """Images of values in [-1, 1] (a Gaussian VAE's data file): every figure clipped them to
    [0, 1], the lower half black. The run records its data's range (beside "data": a dgmkit
    before 2026-11-29 compares that whole, and would not resume the run); the figures draw the
    lower of 0 and the lowest value black and the higher of 1 and the highest white. A run
    recorded without it draws [0, 1] as before, and records it once resumed (its best checkpoint
    from before the resume draws as config.json says); a range of no numbers is refused."""
    import json

    from dgmkit.cli.common import to_display
    from dgmkit.config import load_run
    from run_records import rewrite_records

    x = np.random.default_rng(0).uniform(-1, 1, (60, 8, 8)).astype(np.float32)
    x[0, 0, 0], x[0, 0, 1] = -1.0, 1.0
    np.save(tmp_path / "pm1.npy", x)
    run = tmp_path / "run"
    argv = ["train", "--dataset", str(tmp_path / "pm1.npy"), "--likelihood", "gaussian", *VAE, "--out", str(run)]
    assert main(argv) == 0
    record = json.loads((run / "config.json").read_text())
    assert record["value_range"] == [-1.0, 1.0] and "value_range" not in record["data"]
    loaded = load_run(run)
    shown = to_display(torch.tensor([-1.0, 0.0, 0.5, 1.0, 3.0]), loaded)
    assert torch.allclose(shown, torch.tensor([0.0, 0.5, 0.75, 1.0, 1.0]))
    assert main(["reconstruct", str(run), "-n", "2", "--out", str(tmp_path / "r.png")]) == 0

    def without(record):
        record.pop("value_range")
        return record

    rewrite_records(run, without)
    assert torch.equal(to_display(torch.tensor([-1.0, 0.5, 3.0]), load_run(run)), torch.tensor([0.0, 0.5, 1.0]))
    assert main(["train", "--resume", "--epochs", "2", "--quiet", "--out", str(run)]) == 0
    for which in ("best", "last"):
        assert torch.equal(to_display(torch.tensor([-1.0, 0.0]), load_run(run, which=which)), torch.tensor([0.0, 0.5]))
    for bad in ([1.0, -1.0], [0.0, True], ["a", 1.0], [0.0], [0, 1], [0.0, 10**400]):
        rewrite_records(run, lambda r, bad=bad: {**r, "value_range": bad})
        _refused(*_dgm(capsys, "reconstruct", run, "--out", tmp_path / "x.png")[::2], "value_range")


def test_a_scatter_of_k_classes_has_k_bands_each_the_colour_of_its_points(monkeypatch):
    """With 3 classes the colour bar showed all ten of tab10's bands, the points coloured by
    entries 1, 5 and 8 of them and the tick of class 1 on a border between two."""
    import matplotlib.pyplot as plt

    from dgmkit.evaluation import figures

    kept = []
    monkeypatch.setattr(figures, "figure_png", lambda fig: kept.append(fig) or b"")
    for classes, palette in ((3, "tab10"), (10, "tab10"), (13, "tab20")):
        labels = np.arange(40) % classes
        figures.scatter_png(np.random.default_rng(0).normal(size=(40, 2)), labels, "t", ("a", "b"))
        kept[-1].canvas.draw()  # (the points' colours are mapped when drawn)
        sc = kept[-1].axes[0].collections[0]
        assert sc.get_cmap().N == classes
        colours = plt.get_cmap(palette).colors
        for k in range(classes):
            got = sc.get_facecolors()[np.flatnonzero(labels == k)[0]][:3]
            assert np.allclose(got, colours[k]), (classes, k)
        plt.close(kept[-1])
