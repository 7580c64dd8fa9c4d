"""What a hostile pass over the figure and use commands (sample, reconstruct, interpolate, latents,
traverse, density, cluster, impute, diagnose, disentangle, ood) found: ``dgm density``'s "mass in
the window" summed the density over the grid's points as whole cells, half a cell beyond every
edge of the window (on a 10x10 grid 0.98 where the window holds 0.96; a uniform density's window
(G / (G - 1))^2 > 1), and is now the trapezoid rule over the window itself; ``interpolate`` and
``traverse`` decoded every latent at once and ``reconstruct`` every image (1000 sprites pairs of
100 steps through a conv decoder: about 40 GB, killed without a word), and now decode and
reconstruct in batches of ``DECODE_BATCH``; ``dgm ood --json F --out F`` was refused as "a file
of the run", and now says that --json names a .json file (so never --out's .png). The rest of what was tried (counts,
seeds and temperatures out of range, NaN, inf, '' and 1e400, existing, linked and misplaced
outputs, wrong suffixes, run folders of the wrong family or half written, data files of NaN, inf,
other shapes and dtypes) was refused in one line before any work."""

import math

import pytest
import torch

from dgm_cli import dgm as _dgm
from dgm_cli import refused as _refused
from dgmkit.cli.common import split_data
from dgmkit.cli.main import main
from dgmkit.config import load_run
from dgmkit.models import VAE

VAE_FLAGS = ["--model", "vae", "--hidden", "8", "--latent-dim", "30", "--epochs", "1", "--quiet"]
FLOW_FLAGS = ["--model", "flow", "--flow", "realnvp", "--hidden", "16", "--flow-layers", "2", "--epochs", "2", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A VAE of 30 latent dimensions on digits, and a flow on two moons."""
    root = tmp_path_factory.mktemp("hostile-uses")
    assert main(["train", "--dataset", "digits", *VAE_FLAGS, "--out", str(root / "vae")]) == 0
    assert main(["train", "--dataset", "two-moons", *FLOW_FLAGS, "--out", str(root / "flow")]) == 0
    return root


def _reference_mass(run_dir, n: int = 1001) -> float:
    """The density's mass in dgm density's window (the test split's range, padded by 15% of it on
    each side), by the trapezoid rule on an n x n grid."""
    run = load_run(run_dir)
    pts = split_data(run, "test")[0].reshape(-1, 2).double()
    lo, hi = pts.min(0).values, pts.max(0).values
    lo, hi = lo - 0.15 * (hi - lo), hi + 0.15 * (hi - lo)
    tx, ty = (torch.linspace(float(lo[i]), float(hi[i]), n, dtype=torch.float64) for i in (0, 1))
    grid = torch.stack(torch.meshgrid(tx, ty, indexing="ij"), -1).reshape(-1, 1, 1, 2).float()
    with torch.no_grad():
        p = torch.cat([run.model.log_prob(c) for c in grid.split(100_000)]).double().exp().reshape(n, n)
    w = torch.ones(n, dtype=torch.float64)
    w[[0, -1]] = 0.5
    return float((p * w[:, None] * w[None, :]).sum()) * float(tx[1] - tx[0]) * float(ty[1] - ty[0])


def test_density_says_the_mass_in_its_window_not_half_a_cell_beyond_each_edge(runs, tmp_path, capsys):
    """A coarse grid's plain sum counted a band of half a cell around the window (0.02 too much on
    a 10x10 grid, 0.011 on 20x20); the trapezoid rule's error is that of the density's curvature
    alone."""
    want = _reference_mass(runs / "flow")
    for grid, error in ((20, 0.004), (40, 0.002)):  # (the plain sum: off by 0.011 and 0.0055)
        code, out, err = _dgm(capsys, "density", runs / "flow", "--grid", grid, "-n", 10, "--out", tmp_path / f"{grid}.png")
        assert code == 0, err
        mass = float(out.split("mass in the window ")[1].split(")")[0])
        assert mass == pytest.approx(want, abs=error), (grid, mass, want)


@pytest.fixture
def decoded_batches(monkeypatch):
    """The numbers of latents the VAE's decoder is given at once, call by call."""
    seen: list[int] = []
    likelihood = VAE.likelihood

    def counted(self, z):
        seen.append(math.prod(z.shape[:-1]))
        return likelihood(self, z)

    monkeypatch.setattr(VAE, "likelihood", counted)
    return seen


@pytest.mark.parametrize(
    "argv, decoded",
    [
        (["interpolate", "--pairs", "11", "--steps", "100"], 11 * 100),  # 1100 latents
        (["traverse", "--dims", "30", "--steps", "40"], 30 * 40),  # 1200 latents
        (["reconstruct", "--split", "train", "-n", "1100"], 1100),
    ],
)
def test_figures_decode_their_latents_in_batches(runs, tmp_path, capsys, decoded_batches, argv, decoded):
    """The decoder's memory is that of one batch of DECODE_BATCH (1000), whatever the flags ask."""
    code, _, err = _dgm(capsys, argv[0], runs / "vae", *argv[1:], "--out", tmp_path / "f.png")
    assert code == 0, err
    assert (tmp_path / "f.png").is_file()
    assert sum(decoded_batches) == decoded and max(decoded_batches) <= 1000, decoded_batches


def test_ood_names_json_and_out_that_are_one_file(runs, tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "ood.npy", np.random.default_rng(0).integers(0, 17, (200, 1, 8, 8)))
    code, _, err = _dgm(capsys, "ood", runs / "vae", "--ood", tmp_path / "ood.npy", "--json", tmp_path / "o.png",
                        "--out", tmp_path / "o.png", "--iw-samples", 1)  # fmt: skip
    _refused(code, err, "--json must name a .json file")  # (so never --out's figure)
    assert not (tmp_path / "o.png").exists() and not (runs / "vae" / "ood.json").exists()


def test_latents_refuses_a_limit_below_two_points_before_any_work(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("dgmkit.cli.common.load_run", lambda *a, **k: pytest.fail("a run was loaded"))
    code, _, err = _dgm(capsys, "latents", runs / "vae", "--out", tmp_path / "l.png", "--limit", 1)
    _refused(code, err, "--limit", "2..")
    assert not (tmp_path / "l.png").exists()
    monkeypatch.undo()
    assert _dgm(capsys, "latents", runs / "vae", "--out", tmp_path / "l.png", "--limit", 2)[0] == 0


@pytest.mark.parametrize(
    "argv, grid",
    [
        (["interpolate", "--pairs", "11", "--steps", "100"], "3470 x 376 pixels"),  # 11 rows of 102 cells of 34
        (["traverse", "--dims", "30", "--steps", "40"], "1362 x 1022 pixels"),  # 30 rows of 40 (8x8 shown at 32 + 2)
    ],
)
def test_a_grid_too_large_to_open_is_refused_before_its_latents_are_decoded(runs, tmp_path, capsys, monkeypatch,
                                                                               argv, grid):  # fmt: skip
    monkeypatch.setattr("dgmkit.evaluation.figures.MAX_GRID_PIXELS", 10**5)
    monkeypatch.setattr(VAE, "likelihood", lambda *a: pytest.fail("latents were decoded"))
    code, _, err = _dgm(capsys, argv[0], runs / "vae", *argv[1:], "--out", tmp_path / "f.png")
    _refused(code, err, grid, "draw fewer images")
    assert not (tmp_path / "f.png").exists()
