"""Incomplete data end to end: the MCAR mechanism, NaN through transforms and likelihoods, tables
with a schema and their mixed likelihood, the classical baselines, and `dgm train --missing-rate`
/ `dgm eval` / `dgm impute` (the closed-form checks of the MIWAE bound itself are in
test_miwae.py)."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dgmkit.cli.main import main
from dgmkit.conditional import BernoulliHead, MixedTableHead
from dgmkit.data import DataTransform, from_array, load_dataset
from dgmkit.data.missing import has_missing, missing_count, remove_completely_at_random
from dgmkit.data.table import read_table, write_table
from dgmkit.distributions import element_log_probs, observed_log_prob
from dgmkit.errors import DataError
from dgmkit.evaluation.imputation import baseline_impute, rmse


def test_mcar_removes_about_the_rate_the_same_entries_again_and_keeps_the_rest():
    d = load_dataset("digits")
    a = remove_completely_at_random(d, 0.5, seed=3)
    b = remove_completely_at_random(d, 0.5, seed=3)
    c = remove_completely_at_random(d, 0.5, seed=4)
    share = missing_count(a) / sum(s.x.numel() for s in (d.train, d.valid, d.test))
    assert abs(share - 0.5) < 0.01
    assert torch.equal(a.train.x.isnan(), b.train.x.isnan()) and not torch.equal(a.train.x.isnan(), c.train.x.isnan())
    seen = ~a.train.x.isnan()
    assert torch.equal(a.train.x[seen], d.train.x.float()[seen])
    assert a.num_levels == d.num_levels and a.fingerprint() == b.fingerprint() != d.fingerprint()
    assert (seen.flatten(1).any(1)).all()  # no row left without an observed entry
    assert remove_completely_at_random(d, 0.0) is d and not has_missing(d)


@pytest.mark.parametrize("kind, levels", [("binary", 2), ("dynamic-binarize", 17), ("integers", 17), ("scale", 17)])
def test_transforms_keep_missing_entries_missing(kind, levels):
    x = torch.tensor([[0.0, float("nan"), levels - 1.0, 1.0]])
    if kind == "binary":
        x = torch.tensor([[0.0, float("nan"), 1.0, 1.0]])
    y = DataTransform(kind, levels)(x, torch.Generator().manual_seed(0))
    assert y.isnan().tolist() == [[False, True, False, False]]
    assert y.is_floating_point()


def test_observed_log_prob_is_the_sum_over_the_observed_entries():
    px = BernoulliHead()(torch.randn(3, 1, 1, 2, 2))
    x = px.sample()
    holes = x.clone()
    holes[0, 0, 0, 0] = holes[2, 0, 1, 1] = float("nan")
    per = element_log_probs(px, x)
    want = per.sum((1, 2, 3)) - torch.tensor([per[0, 0, 0, 0], 0.0, per[2, 0, 1, 1]])
    assert torch.allclose(observed_log_prob(px, holes), want)
    assert torch.allclose(observed_log_prob(px, x), px.log_prob(x))


def test_the_mixed_likelihood_normalizes_and_imputes_by_type():
    head = MixedTableHead([0, 3, 0, 2])
    params = torch.randn(5, 1, head.params_per_pixel, 1, 4, dtype=torch.float64)
    px = head(params)
    # categorical columns: probabilities over their own categories sum to one
    for d, k in ((1, 3), (3, 2)):
        values = torch.zeros(5, 1, 1, 4, dtype=torch.float64)
        total = 0
        for v in range(k):
            values[..., d] = v
            total = total + element_log_probs(px, values)[..., d].exp()
        assert torch.allclose(total, torch.ones(5, 1, 1, dtype=torch.float64))
    # numeric columns: a Gaussian density, integrating to one on a grid
    grid = torch.linspace(-40, 40, 40001, dtype=torch.float64)
    values = torch.zeros(len(grid), 5, 1, 1, 4, dtype=torch.float64)
    values[..., 0] = grid.view(-1, 1, 1, 1)
    dens = element_log_probs(px, values)[..., 0].exp()
    assert torch.allclose(torch.trapezoid(dens, grid, dim=0), torch.ones(5, 1, 1, dtype=torch.float64), atol=1e-6)
    s = px.sample((7,))
    assert s.shape == (7, 5, 1, 1, 4) and set(s[..., 1].unique().tolist()) <= {0.0, 1.0, 2.0}
    point = px.imputation_point(px.imputation_statistics())
    assert torch.allclose(point[..., 0], px.loc[..., 0]) and torch.equal(
        point[..., 1], px.logits[..., 1, :3].argmax(-1).double()
    )


def _table(tmp_path, n=60):
    rng = np.random.default_rng(0)
    lines = ["size,colour,weight"]
    for i in range(n):
        colour = ["red", "green", "blue"][i % 3]
        size = i % 3 + rng.normal(0, 0.1)
        lines.append(f"{size:.4f},{colour if i % 7 else ''},{2 * size + rng.normal(0, 0.1):.4f}")
    p = tmp_path / "t.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_a_table_reads_with_an_inferred_or_given_schema_and_writes_back(tmp_path):
    p = _table(tmp_path)
    x, cols = read_table(p)
    assert [c.kind for c in cols] == ["numeric", "categorical", "numeric"] and cols[1].categories == ("blue", "green", "red")
    assert np.isnan(x[0, 1]) and abs(np.nanmean(x[:, 0])) < 1e-9 and abs(np.nanstd(x[:, 0]) - 1) < 1e-9
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"columns": {"size": "categorical", "colour": "categorical", "weight": "numeric"}}))
    _, given_cols = read_table(p, schema)
    assert given_cols[0].kind == "categorical"
    back = tmp_path / "back.csv"
    back.write_text(write_table(x, cols))
    again, _ = read_table(back, columns=cols)
    assert np.allclose(again, x, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("a,b\n1,2\n3\n", "row 3 has 1 cells"),
        ("a,a\n1,2\n", "each once"),
        ("a,b\n,1\n,2\n", "no observed value"),
        ("a\n", "header row and at least one row"),
    ],
)
def test_bad_tables_are_refused(tmp_path, text, problem):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DataError, match=problem):
        read_table(p)


def test_a_schema_must_name_every_column_with_a_known_kind(tmp_path):
    p = _table(tmp_path)
    for spec, problem in (
        ({"columns": {"size": "numeric"}}, "does not match"),
        ({"columns": {"size": "text", "colour": "categorical", "weight": "numeric"}}, "numeric or categorical"),
        ([], "expected"),
    ):
        s = tmp_path / "s.json"
        s.write_text(json.dumps(spec))
        with pytest.raises(DataError, match=problem):
            read_table(p, s)
    s.write_text(json.dumps({"columns": {"size": "numeric", "colour": "numeric", "weight": "numeric"}}))
    with pytest.raises(DataError, match="'colour' is numeric, but holds 'green'"):
        read_table(p, s)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_as_a_csv_end_in_a_table_or_a_clear_error(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("csv") / "f.csv"
    p.write_bytes(data)
    try:
        x, cols = read_table(p)
    except DataError:
        return
    assert x.shape[1] == len(cols) and not np.isinf(x).any()


def test_the_baselines_and_rmse():
    rows = np.array([[1.0, np.nan], [3.0, 4.0], [np.nan, 8.0]])
    filled = baseline_impute(rows, "mean")
    assert np.array_equal(filled, [[1.0, 6.0], [3.0, 4.0], [2.0, 8.0]])
    truth = np.array([[1.0, 5.0], [3.0, 4.0], [4.0, 8.0]])
    assert rmse(filled, truth, np.isnan(rows)) == pytest.approx(math.sqrt((1 + 4) / 2))
    for method in ("knn", "iterative"):
        assert not np.isnan(baseline_impute(rows, method)).any()
    with pytest.raises(ValueError, match="no missing"):
        rmse(filled, truth, np.zeros_like(rows, bool))


def test_from_array_keeps_integers_with_missing_entries_as_levels():
    x = np.tile(np.arange(12.0) % 4, (20, 1))
    x[0, 0] = np.nan
    d = from_array(x)
    assert d.num_levels == 4 and has_missing(d)


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_refuses_incomplete_data_without_miwae(tmp_path, capsys):
    code, _, err = _run(capsys, "train", "--dataset", "iris", "--likelihood", "gaussian", "--missing-rate", "0.3",
                        "--epochs", "1", "--out", tmp_path / "r")  # fmt: skip
    assert code == 1 and "missing entries" in err and "--objective miwae" in err


def test_miwae_end_to_end_on_a_table(tmp_path, capsys):
    p = _table(tmp_path, n=90)
    run = tmp_path / "run"
    code, out, err = _run(capsys, "train", "--dataset", p, "--likelihood", "mixed", "--objective", "miwae", "--iw-k", "5",
                          "--missing-rate", "0.3", "--latent-dim", "2", "--hidden", "16", "--epochs", "3", "--quiet",
                          "--out", run)  # fmt: skip
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["config"]["model"]["table_levels"] == [0, 3, 0]
    code, out, err = _run(capsys, "eval", run, "--iw-samples", "10")
    assert code == 0, err
    assert "observed entries only" in out
    code, out, err = _run(capsys, "impute", run, "--out", tmp_path / "i.npz", "--k", "50", "--draws", "3",
                          "--baselines", "mean", "knn")  # fmt: skip
    assert code == 0, err
    scores = json.loads((run / "impute.json").read_text())
    assert set(scores["rmse"]) == {"MIWAE (k=50)", "mean", "knn"} and set(scores["categorical_error"]) == set(scores["rmse"])
    z = np.load(tmp_path / "i.npz")
    assert z["draws"].shape == (3, *z["x"].shape) and not np.isnan(z["x"]).any()
    # a table with holes, given by path, comes back filled as a table
    holes = tmp_path / "holes.csv"
    holes.write_text("size,colour,weight\n0.1,,0.2\n,red,4.1\n")
    code, out, err = _run(capsys, "impute", run, holes, "--out", tmp_path / "filled.csv", "--k", "50")
    assert code == 0, err
    lines = (tmp_path / "filled.csv").read_text().splitlines()
    assert lines[0] == "size,colour,weight" and all("" not in line.split(",") for line in lines[1:])
    assert lines[1].split(",")[1] in ("red", "green", "blue") and lines[2].split(",")[1] == "red"
    # refusals, each one line
    for args, problem in (
        ([holes, "--out", tmp_path / "x.npy", "--baselines", "mean"], "need the run's own data"),
        (["--out", tmp_path / "x.txt"], "--out must name"),
        (["--out", tmp_path / "x.npy", "--draws", "2"], ".npz"),
        ([tmp_path / "nope.csv", "--out", tmp_path / "y.csv"], "no such data file"),
    ):
        code, _, err = _run(capsys, "impute", run, *args)
        assert code == 1 and problem in err and len(err.strip().splitlines()) == 1


def test_impute_fills_binary_images_and_refuses_complete_data(tmp_path, capsys):
    x = (np.random.default_rng(0).random((80, 16)) < 0.5).astype(np.float32)
    x[:, 8:] = x[:, :8]  # the second half repeats the first: imputable
    p = tmp_path / "b.npy"
    np.save(p, x)
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--dataset", p, "--objective", "miwae", "--missing-rate", "0.25",
                        "--latent-dim", "4", "--hidden", "32", "--epochs", "40", "--batch-size", "16", "--quiet",
                        "--out", run)  # fmt: skip
    assert code == 0, err
    code, out, err = _run(capsys, "impute", run, "--out", tmp_path / "i.npy", "--k", "200", "--baselines", "mean")
    assert code == 0, err
    scores = json.loads((run / "impute.json").read_text())["rmse"]
    assert scores["MIWAE (k=200)"] < scores["mean"]  # the model uses the repeated half; column means cannot
    filled = np.load(tmp_path / "i.npy")
    assert filled.shape == (len(load_run_split(run)), 1, 1, 16) and ((filled >= 0) & (filled <= 1)).all()
    complete = tmp_path / "c.npy"
    np.save(complete, x[:5])
    code, _, err = _run(capsys, "impute", run, complete, "--out", tmp_path / "j.npy")
    assert code == 1 and "no missing entries" in err


def load_run_split(run):
    from dgmkit.cli.common import split_data
    from dgmkit.config import load_run

    return split_data(load_run(run), "train")[0]
