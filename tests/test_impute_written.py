"""What `dgm impute` writes is what it scores: a .npz holds an archive, whole-number columns and
data stored as levels are imputed as such in every output and scored so, the draws of a model of
binarized levels are refused, and a model that never saw incomplete inputs is said to be one."""

import dataclasses
import json

import numpy as np
import pytest

from dgmkit.cli.common import run_data
from dgmkit.cli.main import main
from dgmkit.config import load_run
from dgmkit.config.inputs import run_dataset
from dgmkit.data.table import read_table
from dgmkit.evaluation.imputation import rmse


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _people(path, n=200):
    """A table of whole-number columns (age, kids), a float one (income) and a categorical one."""
    rng = np.random.default_rng(0)
    lines = ["age,income,kids,colour"]
    for _ in range(n):
        age = int(rng.integers(18, 80))
        lines.append(f"{age},{1000 * age + rng.normal(0, 5000):.2f},{int(rng.integers(0, 5))},{rng.choice(['red', 'blue'])}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    d = tmp_path_factory.mktemp("people")
    table = _people(d / "people.csv")
    run = d / "R"
    code = main(["train", "--dataset", str(table), "--likelihood", "mixed", "--objective", "miwae", "--missing-rate",
                 "0.3", "--latent-dim", "2", "--hidden", "16", "--epochs", "3", "--quiet", "--out", str(run)])  # fmt: skip
    assert code == 0
    return table, run


def test_an_npz_out_without_draws_is_an_archive_of_x(people, tmp_path, capsys):
    _, run = people
    code, _, err = _run(capsys, "impute", run, "--k", "5", "--out", tmp_path / "i.npz")
    assert code == 0, err
    with np.load(tmp_path / "i.npz") as z:  # (was a .npy file under the .npz name: z["x"] failed)
        assert set(z.files) == {"x"} and not np.isnan(z["x"]).any()
    code, _, err = _run(capsys, "impute", run, "--k", "5", "--out", tmp_path / "i.npy")
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "i.npy"), np.load(tmp_path / "i.npz")["x"])


def _split(run, split):
    """A run's split as it imputes it (NaN: removed), the complete one, and its table's columns."""
    r = load_run(run)
    dataset = run_data(r)
    complete = run_dataset(dataclasses.replace(r.cfg.data, missing_rate=0.0), None)
    n = len(dataset.split(split).x)
    rows = (d.split(split).x.double().reshape(n, -1).numpy() for d in (dataset, complete))
    return *rows, dataset.columns


def _whole(v, c):
    """Standardized values of the whole-number column ``c`` rounded to whole numbers in its units."""
    return (np.round(v * c.std + c.mean) - c.mean) / c.std


def test_the_rmse_is_that_of_the_table_as_written_and_the_arrays_hold_the_same(people, tmp_path, capsys):
    _, run = people
    holes, truth, columns = _split(run, "valid")
    code, out, err = _run(capsys, "impute", run, "--k", "50", "--split", "valid", "--baselines", "mean",
                          "--out", tmp_path / "v.csv")  # fmt: skip
    assert code == 0, err
    assert "the imputations of whole-number columns rounded to whole numbers as written" in out
    scores = json.loads((run / "impute.json").read_text())
    assert scores["rounded"] == "to whole numbers in their own units: age, kids"
    written, _ = read_table(tmp_path / "v.csv", columns=columns)
    numeric = np.array([c.kind == "numeric" for c in columns])
    scored = np.isnan(holes) & numeric
    # (the score was of the unrounded means: 1.0851 printed of a CSV whose RMSE was 1.1112)
    assert rmse(written, truth, scored) == pytest.approx(scores["rmse"]["MIWAE (k=50)"], rel=1e-5)
    means = np.where(np.isnan(holes), np.nanmean(holes, 0), holes)  # the column means, rounded as written too
    for j, c in enumerate(columns):
        if c.integer:
            means[:, j] = np.where(np.isnan(holes[:, j]), _whole(means[:, j], c), holes[:, j])
    assert rmse(means, truth, scored) == pytest.approx(scores["rmse"]["mean"], rel=1e-9)
    code, out, err = _run(capsys, "impute", run, "--k", "50", "--split", "valid", "--draws", "3",
                          "--out", tmp_path / "v.npz")  # fmt: skip
    assert code == 0, err
    assert "the imputations of age, kids rounded to whole numbers in them, as the CSV writes them" in out
    with np.load(tmp_path / "v.npz") as z:
        x, draws = z["x"].reshape(len(holes), -1), z["draws"].reshape(-1, *holes.shape)
    assert json.loads((run / "impute.json").read_text())["rmse"]["MIWAE (k=50)"] == scores["rmse"]["MIWAE (k=50)"]
    assert np.allclose(x, written, rtol=1e-6, atol=1e-6)  # (income: printed to float32's digits in the CSV)
    for j, c in enumerate(columns):
        if c.integer:
            for v in (x[:, j], *draws[:, :, j]):
                assert np.array_equal(v, np.where(np.isnan(holes[:, j]), _whole(v, c), holes[:, j]))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """digits (levels 0..16) binarized for a bernoulli likelihood, with entries removed."""
    run = tmp_path_factory.mktemp("digits") / "R"
    code = main(["train", "--dataset", "digits", "--objective", "miwae", "--missing-rate", "0.3", "--latent-dim", "2",
                 "--hidden", "16", "--epochs", "1", "--quiet", "--out", str(run)])  # fmt: skip
    assert code == 0
    return run


def test_data_stored_as_levels_are_imputed_with_levels_that_the_run_scores_again(digits, tmp_path, capsys):
    holes, truth, _ = _split(digits, "test")
    code, out, err = _run(capsys, "impute", digits, "--k", "10", "--split", "test", "--baselines", "mean",
                          "--out", tmp_path / "i.npy")  # fmt: skip
    assert code == 0, err
    assert "in the data's levels 0..16, each imputation rounded to the nearest level as written" in out
    assert "i.npy holds each imputation rounded to the nearest of the data's levels 0..16" in out
    x = np.load(tmp_path / "i.npy")
    rows = x.reshape(len(x), -1)
    assert np.array_equal(rows, np.round(rows)) and rows.min() >= 0 and rows.max() <= 16  # (was 3.2055, ...)
    scores = json.loads((digits / "impute.json").read_text())
    assert scores["rounded"] == "to the nearest of the levels 0..16"
    assert rmse(rows, truth, np.isnan(holes)) == pytest.approx(scores["rmse"]["MIWAE (k=10)"], rel=1e-12)
    means = np.where(np.isnan(holes), np.round(np.nanmean(holes, 0)), holes)
    assert rmse(means, truth, np.isnan(holes)) == pytest.approx(scores["rmse"]["mean"], rel=1e-12)
    code, _, err = _run(capsys, "score", digits, tmp_path / "i.npy", "--out", tmp_path / "s.csv", "--k", "2")
    assert code == 0, err  # the run scores its own imputations (they were refused: not whole numbers)


def test_draws_of_a_model_of_binarized_levels_are_refused(digits, tmp_path, capsys):
    code, _, err = _run(capsys, "impute", digits, "--k", "10", "--split", "test", "--draws", "2",
                        "--out", tmp_path / "d.npz")  # fmt: skip
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "models binarized versions of the data's levels 0..16" in err and "leave out --draws" in err
    assert not (tmp_path / "d.npz").exists()


def test_a_model_that_never_saw_an_incomplete_input_is_said_to_be_one(people, tmp_path, capsys):
    table, miwae = people
    holes = tmp_path / "holes.csv"
    holes.write_text("age,income,kids,colour\n41,,2,red\n,30000.5,1,\n")
    elbo = tmp_path / "elbo"
    code, _, err = _run(capsys, "train", "--dataset", table, "--likelihood", "mixed", "--latent-dim", "2", "--hidden",
                        "16", "--epochs", "1", "--quiet", "--out", elbo)  # fmt: skip
    assert code == 0, err
    code, out, err = _run(capsys, "impute", elbo, holes, "--k", "5", "--out", tmp_path / "e.csv")
    assert code == 0, err
    assert f"note: {elbo} was trained on complete data (by its ELBO): nothing fitted its encoder" in out
    code, out, err = _run(capsys, "impute", miwae, holes, "--k", "5", "--out", tmp_path / "m.csv")
    assert code == 0 and "trained on complete data" not in out, err


HELP_WORDS = [(["--help"], "or with a VAE trained on complete data (by the ELBO"),
              (["impute", "--help"], "or a VAE trained on complete data by the ELBO")]  # fmt: skip


@pytest.mark.parametrize(("argv", "words"), HELP_WORDS)
def test_the_help_names_both_kinds_of_run_that_impute(argv, words, capsys):
    # a VAE trained on complete data imputes a file of inputs with NaN (above); the help named only --objective miwae
    assert main(argv) == 0
    assert words in " ".join(capsys.readouterr().out.split())


def test_a_ppca_run_imputes_and_scores_a_file_of_incomplete_rows_exactly(tmp_path, capsys):
    """PPCA (trained on complete data; on incomplete data, by EM) imputes E[x_m | x_o] in closed form and
    scores log p(x_o), each equal to Gaussian conditioning on the observed columns by brute force
    (it refused incomplete data: only a VAE could impute, and its fit was asked for an objective)."""
    import torch
    from torch.distributions import MultivariateNormal

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2)) @ rng.normal(size=(2, 5)) + 0.3 * rng.normal(size=(300, 5)) + np.arange(5)
    (tmp_path / "t.csv").write_text("a,b,c,d,e\n" + "\n".join(",".join(f"{v:.4f}" for v in r) for r in x) + "\n")
    truth = np.round(x[:30], 4)
    holes = np.where(rng.random(truth.shape) < 0.3, np.nan, truth)
    holes[np.isnan(holes).all(1), 0] = truth[np.isnan(holes).all(1), 0]
    cells = (",".join("" if np.isnan(v) else f"{v:.4f}" for v in r) for r in holes)
    (tmp_path / "h.csv").write_text("a,b,c,d,e\n" + "\n".join(cells) + "\n")
    run = tmp_path / "R"
    train = ["train", "--dataset", tmp_path / "t.csv", "--model", "ppca", "--latent-dim", "2", "--quiet", "--out"]
    # trained on incomplete data (it was refused: "cannot be fitted (closed-form) to incomplete data"), by EM
    code, out, err = _run(capsys, *train[:-2], "--out", tmp_path / "M", "--missing-rate", "0.2")
    assert code == 0 and "fitted PPCA (M = 2) by EM on the observed entries (" in out, err
    metrics = json.loads((tmp_path / "M" / "metrics.jsonl").read_text().splitlines()[-1])
    holed = load_run(tmp_path / "M")
    x = run_data(holed).train.x
    assert bool(x.isnan().any()) and metrics["em_converged"] and metrics["em_iterations"] > 1
    assert metrics["train_log_px"] == pytest.approx(holed.model.log_prob(x).mean().item(), rel=1e-6)
    code, out, err = _run(capsys, "impute", tmp_path / "M", "--out", tmp_path / "m.csv", "--baselines", "mean")
    assert code == 0 and "  PPCA (M = 2), exact " in out and "MIWAE" not in out, out + err  # (it said "MIWAE (k=10000)")
    scores = json.loads((tmp_path / "M" / "impute.json").read_text())["rmse"]
    assert scores["PPCA (M = 2), exact"] < 0.7 * scores["mean"], scores
    assert _run(capsys, *train, run)[0] == 0
    code, out, err = _run(capsys, "impute", run, tmp_path / "h.csv", "--out", tmp_path / "i.csv")
    assert code == 0 and "by the exact E[x_m | x_o]" in out and "trained on complete data" not in out, err
    imputed = np.loadtxt(tmp_path / "i.csv", delimiter=",", skiprows=1)  # (in the table's units)
    model, columns = load_run(run).model, run_data(load_run(run)).columns
    shift, scale = np.array([c.mean for c in columns]), np.array([c.std for c in columns])
    C, mu = model.marginal().covariance_matrix.double().detach(), model.mu.double().detach()
    s = torch.as_tensor((holes - shift) / scale)
    exact = s.clone()
    log_p = []
    for i in range(len(s)):
        o, h = ~s[i].isnan(), s[i].isnan()
        exact[i, h] = mu[h] + C[h][:, o] @ torch.linalg.solve(C[o][:, o], s[i, o] - mu[o])
        log_p.append(MultivariateNormal(mu[o], C[o][:, o]).log_prob(s[i, o]).item())
    exact = exact.numpy() * scale + shift
    assert np.allclose(imputed, exact, rtol=1e-5, atol=1e-5)
    missing = np.isnan(holes)
    assert rmse(imputed, truth, missing) == pytest.approx(rmse(exact, truth, missing), rel=1e-5)
    assert rmse(imputed, truth, missing) < 0.5 * rmse(np.where(missing, np.nanmean(holes, 0), holes), truth, missing)
    code, _, err = _run(capsys, "score", run, tmp_path / "h.csv", "--out", tmp_path / "s.csv")
    assert code == 0, err
    scored = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1, usecols=1)
    assert np.allclose(scored, log_p, rtol=1e-5, atol=1e-5)


def test_a_ppca_run_on_dequantized_images_is_refused_without_asking_for_a_likelihood(tmp_path, capsys):
    """PPCA of the digits (dequantized levels) cannot impute them; the refusal told it to 'train with
    a discrete likelihood', a setting PPCA does not have."""
    run = tmp_path / "R"
    assert (
        _run(capsys, "train", "--dataset", "digits", "--model", "ppca", "--latent-dim", "3", "--quiet", "--out", run)[0] == 0
    )
    holes = np.full((2, 1, 8, 8), 4.0)
    holes[:, 0, 0, :3] = np.nan
    np.save(tmp_path / "h.npy", holes)
    code, _, err = _run(capsys, "impute", run, tmp_path / "h.npy", "--out", tmp_path / "i.npy")
    assert code == 1 and "dequantized data is not supported: PPCA (M = 3) has no discrete likelihood" in err, err
    assert "train with a discrete likelihood" not in err
