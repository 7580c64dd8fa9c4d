"""A hand mutation sweep over the CLI layer of the figure and analysis commands (``dgm sample``,
``reconstruct``, ``interpolate``, ``latents``, ``traverse``, ``cluster``, ``density``,
``disentangle``, ``diagnose``), the figure helpers of ``cli.common`` they call (``to_display``,
``data_to_display``, ``split_data``, ``decoded_means``, ``enough_rows``, ``shows_images``), the
picks of ``cli.figures`` and the label of ``dgm report``'s score. No bug was found in the code; of
52 mutants tried, 32 survived the earlier tests, which mostly checked that the figures were written,
not what they show. ``dgm traverse`` was pinned by nothing: the dimensions sorted by least spread,
the sweep about the dimension's base value or over 0..R only, the traversed image's code replaced by
the mean, a spread over 2 images and a grid of --dims a row all passed. Nor were the layouts and
contents of the other grids: reconstructions after all the images instead of beside each one, or
left of them, 7 pairs a row, an interpolation from an image to itself, its ends swapped or a row one
cell short; ``dgm sample``'s floor(sqrt n) a row and a --nrow wider than -n; the --limit subset of
``dgm latents`` never drawn or drawn with seed 0; ``dgm density``'s heat map transposed (x along y)
or its samples drawn with seed 0; ``dgm diagnose``'s subset order, its figure's holes drawn from the
typical latents and ``samples`` recorded for a model of one layer; ``cluster.json``'s ``components``
as the clusters used; disentangle.json's best dimension and gap of every factor taken from the
first, and its ``latent_dim`` the number of images; the integers' display scale by L instead of L -
1, missing entries drawn black, the held-out noise seed of the figures' split, -n equal to the
split's size refused, and a flow's log p(x) on continuous data labelled a "one-draw bound" by ``dgm
report``. Each is now checked against an independent computation: the PNG grids read back cell by
cell and compared with the decoder's means at posterior means taken by hand, interpolation points (1
- w) z_a + w z_b, traversal latents and spreads by NumPy, the latents scatter against NumPy's SVD,
the heat map against log p at the grid's points, cluster components as the argmax of log pi_k + log
N(z; mu_k, sigma_k). Equivalent or harmless: the unbiased against the biased standard deviation of a
traversal (pinned all the same), clamping to [0, 1] in ``to_display`` (``image_grid_png`` clamps
too; pinned as a unit), ``args.n <= total`` in ``dgm diagnose`` (by reading, not run: -n of all the
rows: the same rows, called a random subset of them), and the seed of ``picked_pairs`` shifted by
one (other images, still seeded; pinned by the interpolation test). ``project_2d``'s centring and
axes were already pinned (test_sweep_conditional); ``dgm latents`` is now checked to draw them."""

import io
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dgm_cli import dgm as _dgm
from dgmkit.cli.common import data_to_display, split_data, to_display
from dgmkit.cli.main import main
from dgmkit.config import load_run

VAE = ["--model", "vae", "--hidden", "8", "--latent-dim", "3", "--prior", "mog", "--prior-components", "4"]
CELL = 34  # an 8x8 image drawn at 4x (image_grid_png's 28-pixel minimum) and a 2-pixel gap


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    """A VAE of 3 latent dimensions with a mixture prior of 4 components, on digits."""
    out = tmp_path_factory.mktemp("sweep-figures") / "vae"
    assert main(["train", "--dataset", "digits", *VAE, "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """A RealNVP flow on two moons."""
    out = tmp_path_factory.mktemp("sweep-density") / "flow"
    flags = ["--model", "flow", "--flow", "realnvp", "--hidden", "8", "--flow-layers", "2", "--epochs", "1", "--quiet"]
    assert main(["train", "--dataset", "two-moons", *flags, "--out", str(out)]) == 0
    return out


def _cells(path, rows: int, cols: int) -> np.ndarray:
    """A PNG grid of 8x8 images read back: (rows, cols, 8, 8) in [0, 1]; its size must be that of
    rows x cols cells."""
    from PIL import Image

    arr = np.asarray(Image.open(io.BytesIO(path.read_bytes())), dtype=np.float64) / 255
    assert arr.shape == (rows * CELL + 2, cols * CELL + 2), arr.shape
    top = [2 + r * CELL for r in range(rows)]
    left = [2 + c * CELL for c in range(cols)]
    return np.stack([[arr[t : t + 32 : 4, u : u + 32 : 4] for u in left] for t in top])  # (each 4x4 block's corner)


def _pick(n_total: int, seed: int) -> torch.Tensor:
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _decode(run, z: torch.Tensor) -> np.ndarray:
    """Bernoulli means of p(x|z), by the decoder's logits: sigmoid(decoder(z))."""
    return run.model.likelihood(z).mean.reshape(len(z), 8, 8).double().numpy()


@torch.no_grad()
def _means(run, x: torch.Tensor) -> torch.Tensor:
    return run.model.posterior(x).mean


def test_reconstruct_draws_each_picked_image_left_of_its_reconstruction(vae, tmp_path, capsys):
    """Each of the -n images picked with --seed (a seeded permutation of the split) beside its
    reconstruction, the decoded mean of p(x|z) at the posterior mean, 8 pairs a row: laid out
    image by image (not all images, then all reconstructions) and never more pairs a row than 8."""
    run = load_run(vae)
    x = split_data(run, "test")[0]
    for n, rows, cols in ((3, 1, 6), (9, 2, 16)):  # two columns an image, at most 8 pairs a row
        code, out, err = _dgm(capsys, "reconstruct", vae, "-n", n, "--seed", 5, "--out", tmp_path / f"{n}.png")
        assert code == 0 and f"wrote {n} random test images (seed 5; left) and their reconstructions (right)" in out, err
        cells = _cells(tmp_path / f"{n}.png", rows, cols).reshape(-1, 8, 8)
        picked = x[_pick(len(x), 5)[:n]]
        want = np.stack([picked.reshape(n, 8, 8).numpy(), _decode(run, _means(run, picked))], 1).reshape(-1, 8, 8)
        assert np.abs(cells[: 2 * n] - want).max() <= 0.5 / 255 + 1e-9


def test_interpolate_rows_run_from_one_image_through_decoded_steps_to_the_other(vae, tmp_path, capsys):
    """A row per pair: image a, the decoded means at (1 - w) z_a + w z_b for w = 0, 1/2, 1 (z: the
    posterior means), image b; the pairs are the first 2 and next 2 of the seeded permutation."""
    run = load_run(vae)
    x = split_data(run, "test")[0]
    code, out, err = _dgm(capsys, "interpolate", vae, "--pairs", 2, "--steps", 3, "--seed", 1, "--out", tmp_path / "i.png")
    assert code == 0 and "wrote 2 latent interpolations between random pairs of test images, seed 1 (" in out, err
    cells = _cells(tmp_path / "i.png", 2, 5)
    idx = _pick(len(x), 1)[:4]
    a, b = x[idx[:2]], x[idx[2:]]
    za, zb = _means(run, a), _means(run, b)
    for k, w in enumerate((0.0, 0.5, 1.0)):  # 3 steps: both ends and the midpoint
        assert np.abs(cells[:, k + 1] - _decode(run, (1 - w) * za + w * zb)).max() <= 0.5 / 255 + 1e-6, k
    assert np.array_equal(cells[:, 0], a.reshape(2, 8, 8).numpy())  # the data images themselves at the ends
    assert np.array_equal(cells[:, 4], b.reshape(2, 8, 8).numpy())


def test_display_maps_integers_by_their_top_level_and_clamps_the_rest():
    """Integer levels 0..L-1 map to [0, 1] by L - 1 (the top level is white), other data are
    clamped to [0, 1], and a data image's missing entries are mid-grey."""
    ints = SimpleNamespace(record={"data": {"transform": "integers", "num_levels": 17}})
    assert torch.equal(to_display(torch.tensor([0, 8, 16]), ints), torch.tensor([0.0, 0.5, 1.0]))
    other = SimpleNamespace(record={"data": {"transform": "dequantize", "num_levels": 17}})
    assert torch.equal(to_display(torch.tensor([-0.5, 0.25, 3.0]), other), torch.tensor([0.0, 0.25, 1.0]))
    assert torch.equal(data_to_display(torch.tensor([float("nan"), 16.0]), ints), torch.tensor([0.5, 1.0]))


def _pca(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The centred points on the two leading principal axes (NumPy's SVD) and the variance shares."""
    zc = z - z.mean(0)
    _, s, vt = np.linalg.svd(zc, full_matrices=False)
    return zc @ vt[:2].T, s**2 / (s**2).sum()


def _same_up_to_sign(p: np.ndarray, q: np.ndarray) -> bool:
    return all(np.allclose(p[:, k], q[:, k], atol=1e-8) or np.allclose(p[:, k], -q[:, k], atol=1e-8) for k in (0, 1))


def test_latents_scatters_the_pca_of_a_seeded_subset_coloured_by_its_own_labels(vae, tmp_path, capsys, monkeypatch):
    """--limit 40 --seed 3: the first 40 of the seeded permutation, their posterior means on their
    first two principal axes, each coloured by its own label."""
    import dgmkit.cli.figures as figures

    seen = []
    monkeypatch.setattr(figures, "scatter_png", lambda *a: seen.append(a) or b"png")
    run = load_run(vae)
    x, y = split_data(run, "test")
    code, out, err = _dgm(capsys, "latents", vae, "--limit", 40, "--seed", 3, "--out", tmp_path / "l.png")
    assert code == 0, err
    points, labels, title, _ = seen[0]
    idx = _pick(len(x), 3)[:40]
    want, _ = _pca(_means(run, x[idx]).double().numpy())
    assert _same_up_to_sign(points, want) and np.array_equal(labels, y[idx].numpy())
    assert "(n=40, " in title and "40 latent means" in out


def test_latents_says_its_limit_is_a_seeded_random_subset_of_the_split(vae, tmp_path, capsys, monkeypatch):
    """--limit 40 --seed 3 scatters a random subset, and the line and the title say so, with the
    seed and the split's size (both said only n=40, as if of the first 40 or of all there were);
    a --limit of the whole split draws all of it and says no subset."""
    import dgmkit.cli.figures as figures

    seen = []
    monkeypatch.setattr(figures, "scatter_png", lambda *a: seen.append(a) or b"png")
    code, out, err = _dgm(capsys, "latents", vae, "--limit", 40, "--seed", 3, "--out", tmp_path / "l.png")
    assert code == 0, err
    said = "a random subset of the 300, seed 3"
    assert said in seen[0][2] and f"40 latent means of test datapoints ({said})" in out
    code, out, err = _dgm(capsys, "latents", vae, "--limit", 300, "--out", tmp_path / "all.png")
    assert code == 0, err
    assert "subset" not in seen[1][2] + out and "(n=300)" in seen[1][2]


def test_traverse_sweeps_the_dimensions_of_largest_spread_about_one_images_code(vae, tmp_path, capsys, monkeypatch):
    """The latents decoded: a row per dimension of largest standard deviation (over the split's
    posterior means, by NumPy), each the traversed image's code with that dimension set to its mean
    + (-R, 0, R) standard deviations; the PNG is those decodings, --steps a row."""
    import dgmkit.cli.disentangle as disentangle

    seen = []
    decoded_means = disentangle.decoded_means
    monkeypatch.setattr(disentangle, "decoded_means", lambda run, z: seen.append(z.clone()) or decoded_means(run, z))
    run = load_run(vae)
    x = split_data(run, "test")[0]
    argv = ["--dims", 2, "--steps", 3, "--range", 2, "--seed", 4, "--out", tmp_path / "t.png"]
    code, out, err = _dgm(capsys, "traverse", vae, *argv)
    assert code == 0, err
    codes = _means(run, x).double().numpy()  # the split holds fewer than 2000 images: all of them
    mean, std = codes.mean(0), codes.std(0, ddof=1)
    dims = np.argsort(-std)[:2]
    base = codes[_pick(len(x), 4)[0]]
    z = seen[0].double().numpy().reshape(2, 3, 3)
    for row, d in enumerate(dims):
        want = np.tile(base, (3, 1))
        want[:, d] = mean[d] + np.array([-2.0, 0.0, 2.0]) * std[d]
        assert np.allclose(z[row], want, atol=1e-5), (row, d)
    assert f"by spread over the data: {dims[0]}, {dims[1]})" in out
    assert "the others at one random test image's code (seed 4)" in out
    cells = _cells(tmp_path / "t.png", 2, 3)
    assert np.abs(cells.reshape(-1, 8, 8) - _decode(run, seen[0])).max() <= 0.5 / 255 + 1e-6
    monkeypatch.setattr(disentangle, "SPREAD_ROWS", 100)  # a split of more images: the spread of a random subset, said
    code, out, err = _dgm(capsys, "traverse", vae, *argv, "--force")
    assert code == 0 and "by spread over a random 100 of the 300 test images: " in out, err
    code, out, err = _dgm(capsys, "traverse", vae, "--dims", 10, "--steps", 3, "--out", tmp_path / "all.png")
    assert code == 0, err  # more dimensions asked than the code has: all 3, said so
    assert "traversal of 3 code dimensions, every one p(x|z) reads: --dims 10 asked for more (rows" in out
    for given in (["--dims", 3], []):  # as many as it has, or the default's 10 "at most": unsaid
        out = _dgm(capsys, "traverse", vae, *given, "--out", tmp_path / f"{len(given)}.png")[1]
        assert "traversal of 3 code dimensions (rows" in out


def test_cluster_writes_each_label_and_the_component_of_largest_responsibility(vae, capsys):
    """cluster-assignments.csv: index, label, then the argmax over k of log pi_k + log N(z; mu_k,
    sigma_k) at the posterior mean, computed with SciPy; cluster.json's counts and majority accuracy
    recomputed from those assignments."""
    import csv
    import json

    run = load_run(vae)
    x, y = split_data(run, "test")
    code, _, err = _dgm(capsys, "cluster", vae)
    assert code == 0, err
    with open(vae / "cluster-assignments.csv") as f:
        rows = list(csv.DictReader(f))
    prior = run.model.prior_module
    with torch.no_grad():
        logits, mu = prior.logits.double().numpy(), prior.means.double().numpy()
        sd = (torch.nn.functional.softplus(prior.raw_scales) + prior.min_scale).double().numpy()
    z = _means(run, x).double().numpy()
    log_normal = -0.5 * ((z[:, None, :] - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)
    log_joint = logits - np.logaddexp.reduce(logits) + log_normal.sum(-1)
    component = log_joint.argmax(1)
    assert [int(r["index"]) for r in rows] == list(range(len(x))) and {r["file_row"] for r in rows} == {""}  # (fixed splits)
    assert [int(r["label"]) for r in rows] == y.tolist() and [int(r["component"]) for r in rows] == component.tolist()
    scores = json.loads((vae / "cluster.json").read_text())
    majority = sum(np.bincount(y.numpy()[component == k]).max() for k in np.unique(component)) / len(x)
    assert scores["accuracy_majority"] == pytest.approx(majority)
    assert (scores["n"], scores["components"], scores["clusters_used"], scores["split"]) == (
        len(x),
        4,
        len(np.unique(component)),
        "test",
    )
    assert math.isfinite(scores["nmi"])
    # posterior locations that are not finite (weights blown up) are refused, not all put in component 0
    from dgmkit.errors import EvaluationError
    from dgmkit.evaluation.clustering import cluster_assignments

    with torch.no_grad():
        for p in run.model.encoder.parameters():
            p.mul_(1e30)
    with pytest.raises(EvaluationError, match=r"non-finite posterior locations \(\d+ of \d+ values"):
        cluster_assignments(run.model, x)


def test_the_reports_score_of_continuous_data_is_log_p_x_not_a_one_draw_bound(flow, tmp_path, monkeypatch):
    """dgm report calls an exact log p(x) a "one-draw bound" only where it scores dequantized
    integers: a flow on two moons (continuous) is plain "log p(x)". Removing the dequantization
    condition labelled every exact density a bound, and no test saw it."""
    import dgmkit.reporting.page as page

    labels = []
    monkeypatch.setattr(page, "curves_png", lambda metrics, label, *a: labels.append(label) or None)
    assert main(["report", str(flow), "--no-figures", "--out", str(tmp_path / "r.html")]) == 0
    assert labels == ["log p(x)"]


def test_a_pick_may_take_every_image_of_the_split_and_no_more():
    """-n as many as the split holds (or --pairs half as many) is a permutation of it; one more is
    refused."""
    from dgmkit.cli.figures import picked_images, picked_pairs
    from dgmkit.errors import ConfigError

    x = torch.arange(6.0)[:, None]
    assert sorted(picked_images(x, 6, 0, "test")[:, 0].tolist()) == list(range(6))
    a, b = picked_pairs(x, 3, 0, "test")
    assert sorted(torch.cat([a, b])[:, 0].tolist()) == list(range(6))
    with pytest.raises(ConfigError, match="-n 7 is more than the 6 datapoints of the test split"):
        picked_images(x, 7, 0, "test")
    with pytest.raises(ConfigError, match="--pairs 4 needs 8 datapoints; the test split has 6"):
        picked_pairs(x, 4, 0, "test")


def test_density_maps_log_p_over_the_padded_window_of_the_test_split_x_along_x(flow, tmp_path, capsys, monkeypatch):
    """The heat map's entry (i, j) is log p at (x_i, y_j) of the grid over the test split's range
    padded by 15% a side (the picture draws it transposed, x across), and its samples are those
    of --seed."""
    import dgmkit.cli.density as density

    seen = []
    monkeypatch.setattr(density, "density_png", lambda *a, **k: seen.append(a) or b"png")
    code, _, err = _dgm(capsys, "density", flow, "--grid", 12, "-n", 5, "--seed", 3, "--out", tmp_path / "d.png")
    assert code == 0, err
    log_p, extent, points, _, names = seen[0]
    run = load_run(flow)
    pts = split_data(run, "test")[0].reshape(-1, 2).double().numpy()
    lo, hi = pts.min(0), pts.max(0)
    lo, hi = lo - 0.15 * (hi - lo), hi + 0.15 * (hi - lo)
    assert np.allclose(extent, (lo[0], hi[0], lo[1], hi[1]), atol=1e-5) and names is None
    tx, ty = np.linspace(lo[0], hi[0], 12), np.linspace(lo[1], hi[1], 12)
    shape = tuple(run.record["data"]["event_shape"])
    with torch.no_grad():
        for i, j in ((0, 11), (3, 7), (11, 0), (5, 5)):
            want = run.model.log_prob(torch.tensor([tx[i], ty[j]], dtype=torch.float32).reshape(1, *shape))
            assert log_p[i, j] == pytest.approx(float(want), abs=1e-3), (i, j)
        drawn = run.model.sample(5, generator=torch.Generator().manual_seed(3))[0]
    assert np.allclose(points, drawn.reshape(-1, 2).numpy())


def test_diagnose_scores_a_seeded_sorted_subset_and_draws_the_holes_decoded(vae, tmp_path, capsys, monkeypatch):
    """-n 50 --seed 2: the first 50 of the seeded permutation, in the split's order; one latent
    layer: no posterior draws recorded; the figure's holes and typical images are the decoded means
    of the diagnosis's hole and typical latents, each in its place."""
    import json

    import dgmkit.cli.diagnose as cli_diagnose

    calls, figure = [], []
    diagnose = cli_diagnose.diagnose
    monkeypatch.setattr(cli_diagnose, "diagnose", lambda model, x, **kw: calls.append((x, diagnose(model, x, **kw)))
                        or calls[-1][1])  # fmt: skip
    monkeypatch.setattr(cli_diagnose, "diagnosis_png", lambda *a: figure.append(a) or b"png")
    run = load_run(vae)
    x = split_data(run, "test")[0]
    code, out, err = _dgm(capsys, "diagnose", vae, "-n", 50, "--holes", 20, "--seed", 2, "--out", tmp_path / "d.png")
    assert code == 0, err
    ((given, d),), ((_, holes, typical, _, decoded),) = calls, figure
    assert decoded == "means of p(x|z)"  # (a VAE: what the figure names its decoded draws)
    assert torch.equal(given, x[_pick(len(x), 2)[:50].sort().values])
    record = json.loads((vae / "diagnose.json").read_text())
    assert record["subset"] == f"random subset of {len(x)}, seed 2" and record["samples"] is None and record["n"] == 50
    assert np.allclose(holes.reshape(-1, 8, 8).numpy(), _decode(run, d.hole_z), atol=1e-6)
    assert np.allclose(typical.reshape(-1, 8, 8).numpy(), _decode(run, d.typical_z), atol=1e-6)


def test_sample_draws_a_square_grid_or_nrow_a_row_but_never_more_columns_than_samples(vae, tmp_path, capsys):
    """round(sqrt(n)) a row by default (3 samples: 2 a row), --nrow a row, but never more columns
    than samples; the cells are the samples dgmkit.sample draws with the seed, the rest grey."""
    import dgmkit

    run = load_run(vae)
    for n, extra, rows, cols in ((3, [], 2, 2), (8, [], 3, 3), (3, ["--nrow", 5], 1, 3), (5, ["--nrow", 2], 3, 2)):
        code, _, err = _dgm(capsys, "sample", vae, "-n", n, "--seed", 6, *extra, "--out", tmp_path / f"{n}{extra}.png")
        assert code == 0, err
        cells = _cells(tmp_path / f"{n}{extra}.png", rows, cols).reshape(-1, 8, 8)
        means = dgmkit.sample(run, n, seed=6)[0].reshape(n, 8, 8).double().numpy()
        assert np.abs(cells[:n] - means).max() <= 0.5 / 255 + 1e-6 and np.all(cells[n:] == 128 / 255)  # (grey: no image)


def test_the_figures_split_is_binarized_with_the_held_out_noise_the_trainer_validates_with(vae):
    """The figures' split is dynamically binarized with VALID_SEED's noise, as the trainer's
    validation data are: another seed makes other images."""
    from dgmkit.cli.common import run_data
    from dgmkit.training.trainer import VALID_SEED

    run = load_run(vae)
    raw = run_data(run).split("valid").x
    assert torch.equal(split_data(run, "valid")[0], run.transform(raw, torch.Generator().manual_seed(VALID_SEED)))
    assert not torch.equal(split_data(run, "valid")[0], run.transform(raw, torch.Generator().manual_seed(VALID_SEED + 1)))


def test_disentangle_json_records_each_factors_own_best_dimension_and_gap(tmp_path, monkeypatch):
    """disentangle.json's entry of factor k holds MIG's entropy, best dimension and gap of factor k
    (the estimate taken from mutual_information_gap as it ran): an entry took factor 0's and no
    test saw it."""
    import json

    import dgmkit.cli.disentangle as disentangle

    out = tmp_path / "sprites"
    argv = ["--latent-dim", "3", "--hidden", "8", "--epochs", "1", "--batch-size", "512", "--quiet"]
    assert main(["train", "--dataset", "sprites", *argv, "--out", str(out)]) == 0
    seen = []
    mig = disentangle.mutual_information_gap
    monkeypatch.setattr(disentangle, "mutual_information_gap", lambda *a, **k: seen.append(mig(*a, **k)) or seen[-1])
    assert main(["disentangle", str(out), "--votes", "2", "--batch", "2", "--bins", "5"]) == 0
    r, (m,) = json.loads((out / "disentangle.json").read_text()), seen
    assert [f["best_dim"] for f in r["factors"]] == [int(b) for b in m.best]
    assert [f["gap"] for f in r["factors"]] == pytest.approx([float(g) for g in m.gaps])
    assert [f["entropy"] for f in r["factors"]] == pytest.approx([float(h) for h in m.entropy])
    assert len(set(f["gap"] for f in r["factors"])) > 1 and r["latent_dim"] == 3  # (factors of different gaps)
