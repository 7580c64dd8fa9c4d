"""Incomplete data end to end: the MCAR mechanism, NaN through transforms and likelihoods, tables
with a schema and their mixed likelihood, the classical baselines, and `dgm train --missing-rate`
/ `dgm eval` / `dgm impute` (the closed-form checks of the MIWAE bound itself are in
test_miwae.py)."""

import csv
import json
import math
import os
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dgmkit.cli.main import main
from dgmkit.conditional import BernoulliHead, Decoder, GaussianEncoder, MixedTableHead
from dgmkit.config import load_run
from dgmkit.data import DataTransform, from_array, load_dataset
from dgmkit.data.missing import has_missing, missing_count, remove_completely_at_random
from dgmkit.data.table import read_table, write_table
from dgmkit.distributions import MixedColumns, element_log_probs, observed_log_prob
from dgmkit.errors import ConfigError, DataError
from dgmkit.evaluation import imputation
from dgmkit.evaluation.imputation import BASELINES, baseline_impute, from_data_units, rmse, to_data_units
from dgmkit.models import VAE
from dgmkit.nn import MLP, OneHotColumns
from dgmkit.priors import StandardNormalPrior


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
    big = remove_completely_at_random(d, 0.5, seed=2**63)  # beyond int64 (was a raw OverflowError)
    assert torch.equal(big.train.x.isnan(), remove_completely_at_random(d, 0.5, seed=np.uint64(2**63)).train.x.isnan())
    for seed in (-1, 1.5, True, "3"):
        with pytest.raises(ConfigError, match="seed of the removed entries must be an integer >= 0"):
            remove_completely_at_random(d, 0.5, seed=seed)


@pytest.mark.parametrize("rate", ["0.5", True, None, float("nan"), 1.0, -0.1])
def test_mcar_refuses_a_rate_that_is_not_a_number_in_range_by_name(rate):
    d = load_dataset("digits")
    with pytest.raises(ConfigError, match=r"missing_rate must be a number in \[0, 0.99\], got "):
        remove_completely_at_random(d, rate, seed=0)


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


def test_a_tables_categorical_columns_reach_the_encoder_one_hot():
    """Column by column: a numeric value as it is, a category as indicators of its categories
    (its index as a number put category 2 between 1 and 3); a missing category as none."""
    layer = OneHotColumns([0, 3, 0, 2])
    x = torch.tensor([[[[0.5, 2.0, -1.5, 0.0]]], [[[float("nan"), float("nan"), 2.0, 1.0]]]])
    want = [[0.5, 0, 0, 1, -1.5, 1, 0], [0, 0, 0, 0, 2.0, 0, 1]]
    assert layer.width == 7 and layer(x).tolist() == want
    assert layer(x.double()).dtype == torch.float64 and not list(layer.state_dict())  # no weights: old state dicts load
    # between two indices (a VampPrior's pseudo-input) the indicators interpolate, with a gradient
    u = torch.tensor([[0.0, 0.25, 0.0, 0.0]], requires_grad=True)
    out = layer(u)
    assert out[0, 1:4].tolist() == [0.75, 0.25, 0.0]
    out[0, 2].backward()
    assert u.grad is not None and u.grad[0, 1] == 1.0
    with pytest.raises(ValueError, match="rows of 3 values given to the input layer of a table of 4 columns"):
        layer(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="levels must be 0"):
        OneHotColumns([0, -2])


def _first_linear(net: torch.nn.Module) -> torch.nn.Linear:
    return next(m for m in net.modules() if isinstance(m, torch.nn.Linear))


def test_a_mixed_table_model_reads_categories_one_hot_and_a_format_4_run_keeps_its_indices(tmp_path, capsys):
    """The VAE's encoder reads 3 features for a 3-category column (it read 1); a run written before
    format 5 is rebuilt as it was trained, its encoder reading the index."""
    from dgmkit.config import load_run, migrate_record
    from dgmkit.training.checkpoint import save_checkpoint

    p = _table(tmp_path)
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--dataset", p, "--likelihood", "mixed", "--objective", "miwae", "--iw-k", "2",
                        "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet", "--out", run)  # fmt: skip
    assert code == 0, err
    new = load_run(run)
    assert new.cfg.model.table_input == "one-hot" and not new.model.fill_missing
    assert _first_linear(new.model.encoder).in_features == 5  # size, 3 colours, weight
    record = json.loads((run / "config.json").read_text())
    model_keys = {k: v for k, v in record["config"]["model"].items() if k != "table_input"}
    old = {**record, "format": 4, "config": {**record["config"], "model": model_keys}}
    migrated = migrate_record(old, "config.json")
    assert migrated["migrated_from"] == 4 and migrated["config"]["model"]["table_input"] == "index"
    for version in (3, 2):  # (the same holds for every older format)
        assert migrate_record({**old, "format": version}, "config.json")["config"]["model"]["table_input"] == "index"
    crafted = {
        **old,
        "config": {**old["config"], "model": {**model_keys, "table_input": "one-hot"}},
    }  # a key format 4 lacked
    assert migrate_record(crafted, "config.json")["config"]["model"]["table_input"] == "index"
    # the discrete VAE reads a missing category as none too
    from dgmkit.config import RunConfig
    from dgmkit.families.base import DataSpec

    dvae = RunConfig.from_dict({"model": {"name": "dvae", "likelihood": "mixed", "table_levels": [0, 3, 0], "hidden": [4]}})
    assert not dvae.model.model_for(DataSpec.of((1, 1, 3), None)).fill_missing
    gaussian = {**old, "config": {**old["config"], "model": {**model_keys, "likelihood": "gaussian", "table_levels": None}}}
    assert "table_input" not in migrate_record(gaussian, "config.json")["config"]["model"]
    # a folder of format 4 with an encoder of 3 inputs loads and scores as it was trained
    code, _, err = _run(capsys, "train", "--dataset", p, "--likelihood", "mixed", "--objective", "miwae", "--iw-k", "2",
                        "--table-input", "index", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet",
                        "--out", tmp_path / "index")  # fmt: skip
    assert code == 0, err
    index = load_run(tmp_path / "index")
    record = json.loads((tmp_path / "index" / "config.json").read_text())
    index_keys = {k: v for k, v in record["config"]["model"].items() if k != "table_input"}
    old = {**record, "format": 4, "config": {**record["config"], "model": index_keys}}
    (tmp_path / "index" / "config.json").write_text(json.dumps(old))
    for name in ("best.safetensors", "checkpoint.safetensors"):
        (tmp_path / "index" / name).unlink()
    save_checkpoint(tmp_path / "index" / "best.safetensors", index.model, old)
    loaded = load_run(tmp_path / "index")
    assert loaded.cfg.model.table_input == "index" and loaded.model.fill_missing
    assert _first_linear(loaded.model.encoder).in_features == 3
    code, out, err = _run(capsys, "eval", tmp_path / "index", "--iw-samples", "2")
    assert code == 0 and "NLL" in out, err
    code, _, err = _run(capsys, "train", "--dataset", "iris", "--likelihood", "gaussian", "--table-input", "index",
                        "--epochs", "1", "--out", tmp_path / "g")  # fmt: skip
    assert code == 1 and "table_input index needs the mixed likelihood" in err


@pytest.mark.parametrize("bad", [3.0, 7.0, -1.0, 1.4])
def test_a_categorical_column_refuses_a_value_that_is_not_one_of_its_indices(bad):
    """The index was rounded and clamped: 3 and 7 scored as category 2, -1 as 0, 1.4 as 1."""
    head = MixedTableHead([0, 3])
    x = torch.tensor([[[[0.5, 2.0]]], [[[-0.3, bad]]]])
    assert head.support.check(x).tolist() == [[[[True, True]]], [[[True, False]]]]
    px = head(torch.randn(2, 1, head.params_per_pixel, 1, 2))
    assert torch.isfinite(px.log_prob(x[:1])).all()
    with pytest.raises(ValueError, match="not one of its indices"):
        px.log_prob(x)
    encoder = GaussianEncoder(torch.nn.Sequential(torch.nn.Flatten(), MLP(2, [8], 4)), latent_dim=2)
    model = VAE(
        encoder, Decoder(MLP(2, [8], 2 * head.params_per_pixel), head, event_shape=(1, 1, 2)), StandardNormalPrior(2)
    )
    with pytest.raises(DataError, match=r"category indices in categorical ones \(column 1: 0..2\).*1 entries that do not"):
        model.check_data(torch.cat([x, x[:1]]))
    # a row with no observed entry has nothing to score (its bits/dim divided by zero)
    empty = torch.cat([x[:1], torch.full_like(x[:1], float("nan"))])
    with pytest.raises(DataError, match="1 of the 2 datapoints have no observed entry"):
        model.check_data(empty)


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


def test_training_on_a_table_says_how_it_reads_each_column(tmp_path, capsys):
    """Inferred kinds are printed, so that a column read as the wrong kind is seen before the run
    ends; a name that does not print is quoted, a long list cut."""
    p = _table(tmp_path)
    miwae = ["--likelihood", "mixed", "--objective", "miwae", "--iw-k", "2", "--hidden", "4", "--epochs", "1"]
    code, out, err = _run(capsys, "train", "--dataset", p, *miwae, "--out", tmp_path / "r")
    line = (
        "t.csv: 3 columns (kinds inferred; --schema FILE.json names them): size numeric, colour categorical (blue, "
        "green, red), weight numeric"
    )
    assert code == 0 and line in out.splitlines(), out
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"columns": {"size": "numeric", "colour": "categorical", "weight": "numeric"}}))
    code, out, err = _run(capsys, "train", "--dataset", p, "--schema", schema, *miwae, "--out", tmp_path / "s")
    assert code == 0 and "t.csv: 3 columns (kinds from s.json): size numeric" in out, err
    code, out, _ = _run(capsys, "train", "--dataset", p, *miwae, "--quiet", "--out", tmp_path / "q")
    assert code == 0 and "columns" not in out
    from dgmkit.data.table import Column, describe_columns

    cols = [Column("a\x1b[2Jb", "categorical", categories=("x,y", *"pqrstu")), Column("n", "numeric", integer=True)]
    assert describe_columns(cols) == "'a\\x1b[2Jb' categorical ('x,y', p, q, r, s, ... 7 in all), n numeric (whole numbers)"
    assert describe_columns([Column(f"c{i}", "numeric") for i in range(15)], most=2) == "c0 numeric, c1 numeric, and 13 more"


def test_a_run_whose_schema_moved_reads_it_from_its_new_path(tmp_path, capsys):
    """A run folder moved with its table and schema: --data and --schema name their new paths
    (the schema was a dead end: every command stopped at the path the run recorded)."""
    p = _table(tmp_path)
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"columns": {"size": "numeric", "colour": "categorical", "weight": "numeric"}}))
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--dataset", p, "--schema", schema, "--likelihood", "mixed", "--objective",
                        "miwae", "--iw-k", "2", "--hidden", "4", "--epochs", "1", "--quiet", "--out", run)  # fmt: skip
    assert code == 0, err
    moved = tmp_path / "moved.json"
    schema.rename(moved)
    code, _, err = _run(capsys, "eval", run, "--iw-samples", "2")
    assert code == 1 and f"no such schema file: {schema}" in err and "if it moved, --schema PATH" in err
    code, out, err = _run(capsys, "eval", run, "--iw-samples", "2", "--schema", moved)
    assert code == 0 and "NLL" in out, err
    code, _, err = _run(capsys, "impute", run, "--schema", moved, "--k", "4", "--out", tmp_path / "i.csv")
    assert code == 0, err
    code, _, err = _run(capsys, "score", run, p, "--schema", moved, "--k", "2", "--out", tmp_path / "s.csv")
    assert code == 0, err
    other = tmp_path / "other.json"  # other kinds: other columns, refused by the run's pinned data
    other.write_text(json.dumps({"columns": {"size": "categorical", "colour": "categorical", "weight": "numeric"}}))
    code, _, err = _run(capsys, "eval", run, "--iw-samples", "2", "--schema", other)
    assert code == 1 and f"{p} read with the schema {other} now holds other data than" in err
    assert "Point --data at the original file and --schema at the original schema" in err
    code, _, err = _run(capsys, "train", "--dataset", p, "--likelihood", "mixed", "--objective", "miwae", "--iw-k", "2",
                        "--hidden", "4", "--epochs", "1", "--quiet", "--out", tmp_path / "inferred")  # fmt: skip
    assert code == 0, err
    code, _, err = _run(capsys, "eval", tmp_path / "inferred", "--schema", moved)
    assert code == 1 and "was trained without a schema (its columns' kinds inferred)" in err


def test_a_report_or_figure_never_replaces_the_runs_schema_even_with_force(tmp_path, capsys):
    """A schema may have any name: one named as the page or figure to write was read, then
    written over with HTML or PNG, and the run could not be read again."""
    p = _table(tmp_path)
    schema, copy = tmp_path / "s.html", tmp_path / "s.png"
    text = json.dumps({"columns": {"size": "numeric", "colour": "categorical", "weight": "numeric"}})
    schema.write_text(text)
    copy.write_text(text)
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--dataset", p, "--schema", schema, "--likelihood", "mixed", "--objective",
                        "miwae", "--iw-k", "2", "--hidden", "4", "--latent-dim", "2", "--epochs", "1", "--quiet",
                        "--out", run)  # fmt: skip
    assert code == 0, err
    for command in (["report", run, "--out", schema, "--force"],  # the schema the run recorded
                    ["latents", run, "--schema", copy, "--out", copy, "--force"]):  # fmt: skip
        code, _, err = _run(capsys, *command)
        assert code == 1 and "is an input of this command" in err, err
    assert schema.read_text() == text and copy.read_text() == text
    code, _, err = _run(capsys, "latents", run, "--out", tmp_path / "l.png")
    assert code == 0, err


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
    infinite = x.copy()
    infinite[1, 1] = np.inf  # no category's index (round's OverflowError before)
    with pytest.raises(DataError, match="row 1, column 'colour': inf is no index of its 3 categories"):
        write_table(infinite, cols)


def test_a_parquet_table_reads_as_its_csv_does(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    p = _table(tmp_path)
    x, cols = read_table(p)
    header, *rows = [line.split(",") for line in p.read_text().splitlines()]
    values = {h: [r[j] or None for r in rows] for j, h in enumerate(header)}
    typed = {h: [None if v is None else float(v) for v in values[h]] for h in ("size", "weight")}
    columns = {"size": typed["size"], "colour": values["colour"], "weight": typed["weight"]}
    pq.write_table(pa.table(columns), tmp_path / "t.parquet")
    px, pcols = read_table(tmp_path / "t.parquet")
    assert pcols == cols and np.allclose(px, x, equal_nan=True)
    import datetime
    import decimal

    more = {  # SQL and Spark exports: decimals are numbers; dates and string views are categories, as in a CSV
        "price": pa.array([decimal.Decimal("1.25"), decimal.Decimal("2.50"), None], pa.decimal128(3, 2)),
        "day": pa.array([datetime.date(2020, 1, 2), datetime.date(2020, 1, 1), None]),
        "tag": pa.array(["b", "a", "b"], pa.string_view() if hasattr(pa, "string_view") else pa.string()),
    }
    pq.write_table(pa.table(more), tmp_path / "kinds.parquet")
    kx, kcols = read_table(tmp_path / "kinds.parquet")
    assert [(c.kind, c.categories) for c in kcols] == [
        ("numeric", ()), ("categorical", ("2020-01-01", "2020-01-02")), ("categorical", ("a", "b"))
    ]  # fmt: skip
    assert np.allclose(kx, [[-1, 1, 1], [1, 0, 0], [np.nan, np.nan, 1]], equal_nan=True)


def test_a_parquet_tables_names_and_cells_are_stripped_as_a_csv_files_are(tmp_path):
    """A Parquet column named "height " or a category "male " (a fixed-width export) was kept so,
    and no CSV (its cells stripped) could meet it: the run's own samples, written as CSV, were
    refused by dgm score ("columns ['height', 'sex'], but the model's table has ['height ', ...]")."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = {"height ": [150.0, 160.5, 170.0], " sex": ["male ", "female", " male"], "n": [" 1", "2 ", "3"]}
    pq.write_table(pa.table(table), tmp_path / "t.parquet")
    x, cols = read_table(tmp_path / "t.parquet")
    assert [(c.name, c.kind, c.categories) for c in cols] == [
        ("height", "numeric", ()), ("sex", "categorical", ("female", "male")), ("n", "numeric", ())
    ]  # fmt: skip
    (tmp_path / "back.csv").write_text(write_table(x, cols))
    again, _ = read_table(tmp_path / "back.csv", columns=cols)
    assert np.array_equal(again, x)
    # a run that recorded the unstripped names and categories (read before they were stripped) reads both files
    import dataclasses

    recorded = tuple(
        dataclasses.replace(c, name=n, categories=tuple(f"{v} " for v in c.categories))
        for c, n in zip(cols, ["height ", " sex", "n"])
    )
    for f in ("t.parquet", "back.csv"):
        assert np.array_equal(read_table(tmp_path / f, columns=recorded)[0], x)


def test_a_bad_cell_is_placed_by_its_line_in_a_csv_file_and_by_its_row_in_a_parquet_one(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    (tmp_path / "t.csv").write_text("a,b\n1,x\n2,y\n\n3,z\n")  # a blank line: the third row is on line 5
    _, cols = read_table(tmp_path / "t.csv")
    (tmp_path / "new.csv").write_text("a,b\n1,x\n2,y\n3,w\n")
    with pytest.raises(DataError, match=r"new\.csv: line 4, column 'b': 'w' is not one of its categories"):
        read_table(tmp_path / "new.csv", columns=cols)
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "w"]}), tmp_path / "new.parquet")
    with pytest.raises(DataError, match=r"new\.parquet: row 3, column 'b': 'w' is not one of its categories"):
        read_table(tmp_path / "new.parquet", columns=cols)  # (it said "line 4": a Parquet file has no lines)
    pq.write_table(pa.table({"a": [1.0, float("inf")], "b": ["x", "y"]}), tmp_path / "inf.parquet")
    with pytest.raises(DataError, match=r"inf\.parquet: row 2, column 'a' holds 'inf'"):
        read_table(tmp_path / "inf.parquet")


def test_a_parquet_table_that_would_expand_is_refused_before_it_does(tmp_path, monkeypatch):
    """One long value repeated, stored once as a dictionary: a file of a few kB that would be
    gigabytes of Python strings. And columns that are not numbers or text."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    import dgmkit.data.table as table

    pq.write_table(pa.table({"a": ["x" * 1000] * 20000, "b": [1, 2] * 10000}), tmp_path / "bomb.parquet")
    assert (tmp_path / "bomb.parquet").stat().st_size < 100_000
    monkeypatch.setattr(table, "MAX_TABLE_BYTES", 10_000_000)  # the 20 MB of text over a lowered cap
    with pytest.raises(DataError, match=r"its text expands to 20000000 bytes, more than the 10000000"):
        read_table(tmp_path / "bomb.parquet")
    monkeypatch.setattr(table, "MAX_TABLE_CELLS", 39_999)
    with pytest.raises(DataError, match="20000 rows of 2 columns, more than"):
        read_table(tmp_path / "bomb.parquet")
    pq.write_table(pa.table({"a": [[1, 2], [3]], "b": [1, 2]}), tmp_path / "nested.parquet")
    with pytest.raises(DataError, match="column 'a' holds list<.*numbers or text"):
        read_table(tmp_path / "nested.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1" + bytes(100) + b"PAR1")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_table(tmp_path / "junk.parquet")
    (tmp_path / "many.csv").write_text("a,b\n" + "1,2\n" * 20000)
    with pytest.raises(DataError, match="more than the 39999 cells"):
        read_table(tmp_path / "many.csv")
    monkeypatch.setattr(table, "MAX_TABLE_CELLS", 1 << 25)
    monkeypatch.setattr(table, "MAX_TABLE_ROWS", 19_999)  # (rows of one cell: some 270 bytes each, not the cells' 60)
    (tmp_path / "narrow.csv").write_text("a\n" + "1\n" * 20000)
    with pytest.raises(DataError, match="more than the 33554432 cells or 19999 rows a table may have"):
        read_table(tmp_path / "narrow.csv")
    with pytest.raises(DataError, match="20000 rows of 2 columns, .* and 19999 rows a table may have"):
        read_table(tmp_path / "bomb.parquet")
    (tmp_path / "narrow.csv").write_text("a\n" + "1\n" * 19999)
    assert read_table(tmp_path / "narrow.csv")[0].shape == (19999, 1)


def test_tables_past_the_byte_cap_or_without_pyarrow_are_refused_before_they_are_read(tmp_path, monkeypatch):
    import sys

    import dgmkit.data.table as table

    big = tmp_path / "big.csv"
    big.write_text("a,b\n1,2\n")
    os.truncate(big, table.MAX_TABLE_BYTES + 1)  # a sparse file: its size is all that is looked at
    with pytest.raises(
        DataError, match=f"big.csv: {table.MAX_TABLE_BYTES + 1} bytes, more than the {table.MAX_TABLE_BYTES}"
    ):
        read_table(big)
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "wide.parquet"  # 160 kB of doubles, a few hundred bytes compressed
    pq.write_table(pa.table({"a": np.arange(20000) % 3 * 1.0}), path, use_dictionary=False, compression="zstd")
    monkeypatch.setattr(table, "MAX_TABLE_BYTES", 100_000)
    with pytest.raises(DataError, match=r"wide.parquet: 1\d{5} bytes uncompressed, more than the 100000"):
        read_table(path)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    with pytest.raises(DataError, match=r"reading Parquet needs pyarrow \(pip install pyarrow\), or give it as CSV"):
        read_table(path)


def test_rows_read_with_a_models_columns_must_be_of_its_columns_and_categories(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("a,b\n-1,x\n1,y\n0,x\n")  # a of mean 0: its 0 is stored as 0
    x, cols = read_table(p)
    (tmp_path / "swapped.csv").write_text("b,a\nx,1\n")
    with pytest.raises(DataError, match=r"swapped.csv: columns \['b', 'a'\], but the model's table has \['a', 'b'\]"):
        read_table(tmp_path / "swapped.csv", columns=cols)
    (tmp_path / "new.csv").write_text("a,b\n1,x\n\n2,z\n")
    with pytest.raises(DataError, match=r"new.csv: line 4, column 'b': 'z' is not one of its categories \['x', 'y'\]"):
        read_table(tmp_path / "new.csv", columns=cols)
    with pytest.raises(DataError, match="t.csv has 3 rows, the values to write 2"):
        write_table(x[:2], cols, original=p)  # the table's cells and other rows would be paired wrongly
    back = tmp_path / "back.csv"
    back.write_text(write_table(x, cols))  # (a value of exactly 0 has no digits to count: log10(0))
    assert back.read_text().splitlines() == ["a,b", "-1,x", "1,y", "0,x"]
    assert np.array_equal(read_table(back, columns=cols)[0], x)


def test_a_value_too_far_out_for_a_models_column_is_refused_as_data_naming_its_column(tmp_path):
    """A finite but huge cell (1e30 in a column of values near 0) read with a trained model's
    columns was standardized into a value whose square overflows float32: the mixed likelihood's
    Gaussian gave it no finite log-density, and the refusal (a NaN log weight) blamed the model."""
    p = tmp_path / "t.csv"
    p.write_text("a,b\n-1,x\n1,y\n0,x\n")  # a of mean 0, sd 0.816
    _, cols = read_table(p)
    (tmp_path / "far.csv").write_text("a,b\n0.5,x\n1e19,y\n")  # 1.22e19 sd out: its square is float32's
    far, _ = read_table(tmp_path / "far.csv", columns=cols)
    (tmp_path / "huge.csv").write_text("a,b\n0.5,x\n,y\n1e30,x\n")
    with pytest.raises(
        DataError,
        match=r"^huge.csv: line 4, column 'a' holds '1e30', 1\.22e\+30 standard deviations from the column's mean in "
        r"the table the model was trained on \(mean 0, sd 0\.8165\), more than the 1\.84e\+19 whose square float32 "
        r"holds: .*correct the value \(its units\?\) or leave the cell empty \(a missing entry\)$",
    ):
        read_table(tmp_path / "huge.csv", columns=cols)
    # the bound is the likelihood's: the value read scores finitely in float32, one 10 times further out does not
    levels, values = torch.tensor([0, 2]), torch.tensor(far, dtype=torch.float32)[:, None, None, :]
    likelihood = MixedColumns(torch.zeros(1, 1, 2), torch.ones(1, 1, 2), torch.zeros(1, 1, 2, 2), levels)
    assert torch.isfinite(likelihood.log_prob(values)).all()
    assert not torch.isfinite(likelihood.log_prob(values * torch.tensor([10.0, 1.0]))).all()


@pytest.mark.parametrize(
    "text, problem",
    [
        ("a,b\n1,2\n3\n", "line 3 has 1 cells"),
        ("a,b,a\n1,2,3\n", r"names 'a' twice \(columns 1 and 3\)"),
        ("a,b,\n1,2,\n", "the header's column 3 has no name"),  # (a trailing comma)
        # a name printed back (notes, messages) that shows as another, or drives the terminal
        ("a,x\u202ey\n1,2\n", r"column 2, 'x\\u202ey', holds the invisible or control character U\+202E"),
        ("a\x1b[31m,b\n1,2\n", r"column 1, 'a\\x1b\[31m', holds the invisible or control character U\+001B"),
        # another separator: one categorical column of whole lines, a model of nonsense, if read with commas
        ("a;b\n1;2\n3;4\n", r"one column, every line split by semicolons as its header is \('a;b'\)"),
        ("a\tb\nx\t2\n", "split by tabs"),
        # numbers written with symbols, or an identifier: a category each, a new row's value none of them
        ("price,n\n" + "".join(f'"${i},{i % 9}00.50",{i}\n' for i in range(30)), r"'price' holds 30 distinct values in 30"),
        ("a,b\n,1\n,2\n", "no observed value"),
        ("a\n", "header row and at least one row"),
        ("a\n" + "".join(f"w{i}\n" for i in range(257)), "column 'a' has 257 categories, more than 256"),
    ],
)
def test_bad_tables_are_refused(tmp_path, text, problem):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DataError, match=problem):
        read_table(p)


def test_none_and_null_are_values_and_only_plain_decimals_are_numbers(tmp_path):
    """A category named "none" or "null" is a category, not a hole; ``5_0`` (Python's digit
    separator) and Arabic-Indic digits are not numbers (``float`` alone reads them as 50 and 5)."""
    p = tmp_path / "t.csv"
    p.write_text("pet,count,size\nnone,1,5_0\ncat,2,1\nnull,NA,2\ncat,4,?\n", encoding="utf-8")
    x, cols = read_table(p)
    assert cols[0].categories == ("cat", "none", "null") and not np.isnan(x[:, 0]).any()
    assert cols[1].kind == "numeric" and np.isnan(x[2, 1]) and np.isnan(x[3, 2])
    assert cols[2].kind == "categorical" and cols[2].categories == ("1", "2", "5_0")
    for bad in ("5_0", "\u0665", "1e5_0", "0x10", "1,5"):
        q = tmp_path / "n.csv"
        q.write_text(f'a\n1\n"{bad}"\n', encoding="utf-8")
        s = tmp_path / "s.json"
        s.write_text(json.dumps({"columns": {"a": "numeric"}}))
        with pytest.raises(DataError, match="is numeric, but holds"):
            read_table(q, s)
    q.write_text("a\n-1.5\n+2e-3\n.5\n7.\n1E+2\n", encoding="utf-8")
    x, cols = read_table(q)
    assert cols[0].kind == "numeric"
    assert np.allclose(x[:, 0] * cols[0].std + cols[0].mean, [-1.5, 0.002, 0.5, 7.0, 100.0])


def test_a_column_of_numbers_but_for_a_slip_is_refused_unless_a_schema_says_categorical(tmp_path):
    """'4o.2' among 49 ages made the column categorical: each age a category of its own."""
    p = tmp_path / "t.csv"
    ages = [f"{20 + i * 0.7:.1f}" for i in range(50)]
    ages[6] = "4o.2"
    p.write_text("age,pet\n" + "".join(f"{a},{'cat' if i % 2 else 'dog'}\n" for i, a in enumerate(ages)))
    with pytest.raises(DataError, match=r"column 'age' holds numbers but for 1 cell\(s\), the first '4o.2' on line 8"):
        read_table(p)
    s = tmp_path / "s.json"
    s.write_text(json.dumps({"columns": {"age": "categorical", "pet": "categorical"}}))
    assert read_table(p, s)[1][0].levels == 50  # the schema decides
    ages[7] = "old"  # two slips in 50: a column of words and numbers, no slip; but each value once, 50 categories
    p.write_text("age,pet\n" + "".join(f"{a},{'cat' if i % 2 else 'dog'}\n" for i, a in enumerate(ages)))
    with pytest.raises(DataError, match="column 'age' holds 50 distinct values in 50 cells"):
        read_table(p)
    p.write_text("age,pet\n" + "".join(f"{a},{'cat' if i % 2 else 'dog'}\n" for i, a in enumerate(ages[:20] * 3)))
    assert read_table(p)[1][0].kind == "categorical"  # words and numbers, each seen thrice: categorical, as inferred
    rating = [str(i % 5 + 1) for i in range(80)]  # a few codes and one word: categorical, as inferred
    rating[3] = "unsure"
    p.write_text("rating\n" + "".join(f"{r}\n" for r in rating))
    assert read_table(p)[1][0].categories == ("1", "2", "3", "4", "5", "unsure")


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
    s.write_text('{"columns": {"size": "numeric",}}')
    with pytest.raises(DataError, match=f"schema {s}: not a readable JSON file"):
        read_table(p, s)
    # a key beside "columns" (a misspelt one: its kinds would have been inferred instead) is refused, not left unread
    s.write_text(json.dumps({"columns": {"size": "numeric", "colour": "categorical", "weight": "numeric"}, "colums": {}}))
    with pytest.raises(DataError, match=r"""holds keys other than "columns", which a schema does not read: \['colums'\]"""):
        read_table(p, s)
    hidden = tmp_path / "s\x1b[2J.json"  # a control character in the name is shown escaped
    with pytest.raises(DataError, match=r"schema .*s\\x1b\[2J\.json: not a file"):
        read_table(p, hidden)


def test_a_schema_is_read_as_a_config_file_is_a_byte_order_mark_allowed_and_its_size_capped(tmp_path, monkeypatch):
    """A schema saved with a byte-order mark (Windows' Notepad) reads as without one, as a CSV file
    and a config file do (it was "not a readable JSON file"); a file beyond the cap is refused unread."""
    import dgmkit.data.table as table

    p = _table(tmp_path)
    s = tmp_path / "s.json"
    spec = json.dumps({"columns": {"size": "numeric", "colour": "categorical", "weight": "numeric"}})
    s.write_bytes(b"\xef\xbb\xbf" + spec.encode())
    assert [c.kind for c in read_table(p, s)[1]] == ["numeric", "categorical", "numeric"]
    monkeypatch.setattr(table, "MAX_SCHEMA_BYTES", len(spec) + 2)
    with pytest.raises(DataError, match=f"schema {s}: more than {len(spec) + 2} bytes"):
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
    for method in ("knn", "iterative", "missforest"):
        assert not np.isnan(baseline_impute(rows, method)).any()
    with pytest.raises(ValueError, match="no missing"):
        rmse(filled, truth, np.zeros_like(rows, bool))
    assert rmse(filled, truth, np.isnan(rows).astype(np.float32)) == rmse(filled, truth, torch.tensor(np.isnan(rows)))
    for mask in (np.where(np.isnan(rows), 0.5, 0.0), np.where(np.isnan(rows), np.nan, 0.0), np.isnan(rows) * 2):
        with pytest.raises(ValueError, match="mask of missing entries must be boolean"):  # (each was taken as a mask)
            rmse(filled, truth, mask)
    with pytest.raises(ValueError, match=r"holds NaN or inf on a missing entry"):  # never a NaN score
        rmse(rows, truth, np.isnan(rows))
    with pytest.raises(ValueError, match=r"shapes differ: imputed \(3, 2\), truth \(2, 2\)"):
        rmse(filled, truth[:2], np.isnan(rows))
    for method, x, problem in (("median", rows, "unknown baseline 'median'"), ("mean", rows[0], "rows \\(N, D\\)")):
        with pytest.raises((ConfigError, DataError), match=problem):
            baseline_impute(x, method)


def test_every_baseline_refuses_an_infinite_observed_value_by_name():
    """The column means took an inf in as a value and imputed inf (or NaN, of inf and -inf) in its
    column, where the other imputers refused it in scikit-learn's words."""
    rows = np.array([[1.0, np.nan], [np.inf, 4.0], [np.nan, 8.0], [2.0, -np.inf]])
    for method in BASELINES:
        with pytest.raises(DataError, match=r"2 infinite observed values \(inf or -inf\), e.g. in row 1"):
            baseline_impute(rows, method)


def test_every_baseline_refuses_a_seed_out_of_range_by_its_name():
    """A seed of -1, 1.5 or 2**32 met scikit-learn's "'random_state' parameter of RandomForestRegressor
    (or IterativeImputer) must be an int in the range [0, 4294967295]", naming no seed; the chained
    MICE of a mixed table, which draws nothing, took them silently. 2**32 - 1 is scikit-learn's last."""
    rows = np.array([[0.1, 0.0], [0.5, 1.0], [np.nan, 1.0], [0.3, np.nan], [0.2, 0.0]])
    for categories in (None, [0, 2]):
        for method in BASELINES:
            for seed in (-1, 1.5, 2**32, True):
                with pytest.raises(ValueError, match="^seed must be an integer"):
                    baseline_impute(rows, method, seed, categories)
    assert not np.isnan(baseline_impute(rows, "missforest", 2**32 - 1, [0, 2])).any()


def test_the_baselines_fill_a_categorical_column_with_a_category_not_an_averaged_index():
    """Categories 0 and 2 go with x = 0, category 1 with x = 5: the neighbours of a row at x = 0
    hold 0s and 2s, whose mean index rounded to category 1, a category no such row has. Given as
    indicators, the neighbours fill 0 or 2 there and 1 at x = 5; the column means fill the most
    frequent category, 0 (not the mean index 0.9). The chained imputers fit a classifier to the
    column (they rounded a regression of the index: category 1 at x = 0 too)."""
    rng = np.random.default_rng(0)
    cat = np.repeat([0.0, 2.0, 1.0], [80, 60, 60])
    x = np.where(cat == 1, 5.0, 0.0) + 0.01 * rng.standard_normal(200)
    rows = np.stack([x, cat], 1)
    gone = rng.random(200) < 0.3
    rows[gone, 1] = np.nan
    for method in BASELINES:
        filled = baseline_impute(rows, method, seed=0, categories=[0, 3])
        assert np.array_equal(filled[~gone], rows[~gone]) and set(np.unique(filled[:, 1])) <= {0.0, 1.0, 2.0}
        if method == "mean":
            assert (filled[gone, 1] == 0).all()
            continue
        at_zero = gone & (x < 2.5)
        assert np.isin(filled[at_zero, 1], (0.0, 2.0)).all(), (method, filled[at_zero, 1])
        assert (filled[gone & (x > 2.5), 1] == 1).all(), method
    assert np.isin(np.round(baseline_impute(rows, "knn")[gone & (x < 2.5), 1]), 1).any()  # (as numbers: 1 too)
    for categories, problem in (([3], "one category count per column: 2 columns, got 1"),
                                ([0, 2], "column 1 is categorical with 2 categories: its entries must be indices 0..1"),
                                ([0, -1], "column 1's category count must be an integer >= 0")):  # fmt: skip
        with pytest.raises((DataError, ValueError), match=re.escape(problem)):
            baseline_impute(rows, "knn", categories=categories)


def _mixed_table(n=150, seed=0):
    """x0 in {0, 1, 2}; c1 a category of x0 in a scrambled order (0, 2, 1); c2 = x0 at x0 = 1 and,
    at x0 = 0 or 2, x0 with probability 0.7 and 2 - x0 else. 30% of c1 and c2 missing."""
    rng = np.random.default_rng(seed)
    x0 = rng.integers(0, 3, n).astype(float)
    c1 = np.array([0.0, 2.0, 1.0])[x0.astype(int)]
    c2 = np.where((x0 == 1) | (rng.random(n) < 0.7), x0, 2 - x0)
    truth = np.stack([x0, c1, c2], 1)
    gone = rng.random(truth.shape) < 0.3
    gone[:, 0] = False
    return np.where(gone, np.nan, truth), truth, gone


def test_the_chained_imputers_fill_a_categorical_column_by_a_classifier_not_a_rounded_index():
    """MICE fits a multinomial logistic regression to a categorical column and missForest a random
    forest classifier; they regressed the index as a number and rounded it. The scrambled c1 is not
    a line in x0 (the rounded ridge regression got 42% of it right, the logistic one 100%); c2's
    mean index at x0 = 0 is 0.6 and at x0 = 2 1.4, both rounding to 1, the category those rows never
    have (33% right by either regression, the rows at x0 = 1; 71% by either classifier, which fills
    the most frequent category, right about 1/3 + 2/3 0.7 = 80% of the time)."""
    rows, truth, gone = _mixed_table()
    for method in ("iterative", "missforest"):
        filled = baseline_impute(rows, method, seed=0, categories=[0, 3, 3])
        as_index = np.clip(np.round(baseline_impute(rows, method, seed=0)), 0, 2)
        assert np.array_equal(filled[~gone], rows[~gone]) and np.isin(filled[:, 1:], (0.0, 1.0, 2.0)).all()
        right = [(filled[gone[:, j], j] == truth[gone[:, j], j]).mean() for j in (1, 2)]
        right_by_index = [(as_index[gone[:, j], j] == truth[gone[:, j], j]).mean() for j in (1, 2)]
        assert right[1] > 0.65 and right_by_index[1] < 0.4, (method, right, right_by_index)
        if method == "iterative":
            assert right[0] > 0.95 and right_by_index[0] < 0.5, (right, right_by_index)
    assert np.array_equal(baseline_impute(rows, "missforest", seed=0, categories=[0, 3, 3]), filled)  # seeded


def test_missforest_on_a_mixed_table_stops_by_its_rule_and_mice_runs_10_rounds(monkeypatch):
    """missForest stops after the first round whose change (numeric: sum of squared changes over
    sum of squares; categorical: share changed) decreased for neither kind, returning the round
    before. Here the changes are (0.14, 0.23), (0.007, 0), (0, 0) and (0, 0): the fourth decreased
    for neither, so 4 rounds of the 3 incomplete columns (fewest missing first); MICE runs all 10."""
    rows, _, gone = _mixed_table(n=60)
    rows[gone[:, 2], 0] = np.nan  # (a numeric column to regress too)
    fits = []
    predict = imputation._predict_column
    monkeypatch.setattr(imputation, "_predict_column", lambda *a: fits.append(a[1]) or predict(*a))
    baseline_impute(rows, "missforest", seed=0, categories=[0, 3, 3])
    assert fits == [1, 0, 2] * 4, fits  # (11, 23 and 23 missing)
    fits.clear()
    baseline_impute(rows, "iterative", seed=0, categories=[0, 3, 3])
    assert fits == [1, 0, 2] * 10, fits


def test_missforest_imputes_a_nonlinear_column_that_the_linear_chain_cannot():
    """x2 = x1^2: a linear regression on x1 sees no relation (the mean), a forest does."""
    rng = np.random.default_rng(0)
    x1 = rng.uniform(-2, 2, 400)
    truth = np.stack([x1, x1**2], 1)
    rows = truth.copy()
    rows[rng.random(400) < 0.3, 1] = np.nan
    missing = np.isnan(rows)
    forest = rmse(baseline_impute(rows, "missforest"), truth, missing)
    linear = rmse(baseline_impute(rows, "iterative"), truth, missing)
    assert forest < 0.2 < 0.8 < linear


def test_from_array_keeps_integers_with_missing_entries_as_levels():
    x = np.tile(np.arange(12.0) % 4, (20, 1))
    x[0, 0] = np.nan
    d = from_array(x)
    assert d.num_levels == 4 and has_missing(d)


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_split_or_file_with_nothing_to_impute_says_how_to_give_missing_entries(tmp_path, capsys):
    """dgm impute of a VAE trained on complete data, without an input file, said only that its split
    "has no missing entries (NaN) to impute": now what to give instead, a file of inputs with NaN or a
    run trained with --missing-rate; of a complete input file, that its entries to fill are NaN."""
    run = tmp_path / "vae"
    code, _, err = _run(capsys, "train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "2", "--epochs", "1",
                        "--quiet", "--out", run)  # fmt: skip
    assert code == 0, err
    code, _, err = _run(capsys, "impute", run, "--split", "test", "--out", tmp_path / "x.npy")
    assert code == 1 and err.count("\n") == 1, err
    assert "the test split of digits has no missing entries (NaN) to impute: name a file of inputs" in err, err
    assert "after the run folder, or impute the splits of a run trained with --missing-rate R" in err, err
    np.save(tmp_path / "complete.npy", np.zeros((3, 1, 8, 8), np.float32))
    code, _, err = _run(capsys, "impute", run, tmp_path / "complete.npy", "--out", tmp_path / "y.npy")
    assert code == 1 and "has no missing entries (NaN) to impute: mark the entries to fill as NaN" in err, err
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "y.npy").exists()


def test_a_limit_draw_without_holes_of_a_split_with_them_is_said_so(tmp_path, capsys):
    """dgm impute --limit 1 of a run trained with --missing-rate, where the one datapoint drawn was
    complete, said that the split had no missing entries and to train with --missing-rate R."""
    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    x[1:, 0] = np.nan  # every row but the first has a hole: a draw of row 0 alone holds none
    np.save(tmp_path / "h.npy", x)
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--dataset", tmp_path / "h.npy", "--objective", "miwae", "--likelihood",
                        "gaussian", "--latent-dim", "1", "--hidden", "4", "--epochs", "1", "--quiet",
                        "--out", run)  # fmt: skip
    assert code == 0, err
    from dgmkit.cli.common import seeded_rows
    from dgmkit.config.inputs import run_dataset

    train = run_dataset(load_run(run).cfg.data, None).split("train").x.reshape(-1, 6)
    seed = next(s for s in range(200) if not torch.isnan(train[seeded_rows(len(train), 1, s)]).any())
    code, _, err = _run(capsys, "impute", run, "--limit", "1", "--seed", seed, "--out", tmp_path / "x.npy")
    assert code == 1 and "--missing-rate R" not in err and "the split of" not in err, err
    assert f"the 1 datapoint that --limit 1 drew (--seed {seed}) from the train split of h.npy holds no missing" in err
    assert "though the split does: draw more (a larger --limit, or none) or others (another --seed)" in err, err


def test_train_refuses_incomplete_data_without_miwae(tmp_path, capsys):
    code, _, err = _run(capsys, "train", "--dataset", "iris", "--likelihood", "gaussian", "--missing-rate", "0.3",
                        "--epochs", "1", "--out", tmp_path / "r")  # fmt: skip
    assert code == 1 and "missing entries (NaN, with --missing-rate 0.3)" in err and "--objective miwae" in err
    assert "or leave out --missing-rate" in err  # (not: fill them in first; they are not the data's own)


def test_miwae_end_to_end_on_a_table(tmp_path, capsys, monkeypatch):
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
    # the numbers are of the standardized numeric columns, and say so (they said: of the values as given)
    assert "2 numeric columns (size, weight) are scored standardized" in out and "as given" not in out
    assert json.loads((run / "eval.json").read_text())["table_note"].startswith("a table: its 2 numeric columns")
    code, out, err = _run(capsys, "impute", run, "--out", tmp_path / "i.npz", "--k", "50", "--draws", "3",
                          "--baselines", "mean", "knn")  # fmt: skip
    assert code == 0, err
    assert "i.npz holds the rows of the train split, a seeded share of t.csv's rows in a seeded order\n" in out
    scores = json.loads((run / "impute.json").read_text())
    assert set(scores["rmse"]) == {"MIWAE (k=50)", "mean", "knn"} and set(scores["categorical_error"]) == set(scores["rmse"])
    z = np.load(tmp_path / "i.npz")
    assert z["draws"].shape == (3, *z["x"].shape) and not np.isnan(z["x"]).any()
    assert scores["checkpoint"] == "best.safetensors" and scores["weights"] == load_run(run).weights_digest()
    code, out, err = _run(capsys, "impute", run, "--out", tmp_path / "j.npz", "--limit", "7", "--seed", "3")
    assert code == 0, err  # (it said "the rows of the train split" of the 7 drawn from it)
    assert "j.npz holds 7 of the 72 rows, drawn with --seed 3, of the train split, a seeded share of t.csv's" in out
    code, out, err = _run(capsys, "impute", run, "--out", tmp_path / "last.npy", "--k", "50", "--weights", "last")
    assert code == 0, err  # MIWAE's in-sample protocol: the weights at the end of training
    assert "last.npy holds the rows as the model sees them, each numeric column standardized" in out  # (not its units)
    last = json.loads((run / "impute.json").read_text())
    assert last["checkpoint"] == "checkpoint.safetensors" and last["weights"] == load_run(run, which="last").weights_digest()
    # a table with holes, given by path, comes back filled as a table
    holes = tmp_path / "holes.csv"
    holes.write_text("size,colour,weight\n0.1,,0.2\n,red,4.1\n")
    code, out, err = _run(capsys, "impute", run, holes, "--out", tmp_path / "filled.csv", "--k", "50")
    assert code == 0, err
    lines = (tmp_path / "filled.csv").read_text().splitlines()
    assert lines[0] == "size,colour,weight" and all("" not in line.split(",") for line in lines[1:])
    assert lines[1].split(",")[1] in ("red", "green", "blue") and lines[2].split(",")[1] == "red"
    # the observed cells come back character for character; only the empty ones are filled
    assert lines[1].split(",")[0::2] == ["0.1", "0.2"] and lines[2].split(",")[1:] == ["red", "4.1"]
    # --limit of a file: its first rows, row for row, observed cells still as written (they were re-printed
    # from float32, "5.123456789012345" as "5.1234568", the rows a seeded draw that nothing named)
    holes.write_text("size,colour,weight\n5.123456789012345,,0.2\n,red,4.1\n0.3,blue,\n")
    code, out, err = _run(capsys, "impute", run, holes, "--limit", "2", "--out", tmp_path / "two.csv", "--k", "20")
    assert code == 0, err
    two = (tmp_path / "two.csv").read_text().splitlines()
    assert len(two) == 3 and two[1].startswith("5.123456789012345,") and two[2].split(",")[1:] == ["red", "4.1"]
    # a float file's observed values come back bit for bit (they were cast to float32 on the way)
    rows = np.array([[0.123456789012345, np.nan, 1.0000000001], [np.nan, 2.0, -0.3]])
    np.save(tmp_path / "rows.npy", rows)
    code, out, err = _run(capsys, "impute", run, tmp_path / "rows.npy", "--out", tmp_path / "rows-out.npy", "--k", "20")
    assert code == 0, err
    back = np.load(tmp_path / "rows-out.npy")
    assert np.array_equal(back[~np.isnan(rows)], rows[~np.isnan(rows)]) and not np.isnan(back).any()
    # --limit beyond the file's rows: all of them, said as the file (not "the first 2 rows")
    code, out, err = _run(capsys, "impute", run, tmp_path / "rows.npy", "--limit", "5", "--out", tmp_path / "all.npy")
    assert code == 0 and f"of 2 datapoints ({tmp_path / 'rows.npy'})" in out, err
    from dgmkit.cli import impute as impute_command  # a file of more values than one call takes: refused before a copy

    monkeypatch.setattr(impute_command, "MAX_IMPUTE_VALUES", 5)
    code, _, err = _run(capsys, "impute", run, tmp_path / "rows.npy", "--out", tmp_path / "rows-2.npy", "--force")
    assert code == 1 and "dgm impute takes at most 1 such rows (5 values) in one call" in err, err
    # --limit takes the first rows before they are counted; their own holes, or none, are said of them
    code, out, err = _run(capsys, "impute", run, tmp_path / "rows.npy", "--limit", "1", "--out", tmp_path / "one.npy")
    assert code == 0 and f"of 1 datapoint (the first 1 row of {tmp_path / 'rows.npy'})" in out, err
    np.save(tmp_path / "complete-first.npy", np.array([[0.1, 1.0, 0.2], [np.nan, 2.0, -0.3]]))
    code, _, err = _run(capsys, "impute", run, tmp_path / "complete-first.npy", "--limit", "1", "--out", tmp_path / "c.npy")
    assert code == 1 and "the first 1 row of" in err and "has no missing entries" in err, err
    # refusals, each one line
    for args, problem in (
        ([holes, "--out", tmp_path / "x.npy", "--baselines", "mean"], "need the run's own data"),
        ([holes, "--out", tmp_path / "x.npy", "--split", "test"], "not a split of the run's own data: leave out --split"),
        (["--out", tmp_path / "x.txt"], "--out must name"),
        (["--out", tmp_path / "x.npy", "--draws", "2"], ".npz"),
        ([tmp_path / "nope.csv", "--out", tmp_path / "y.csv"], "no such data file"),
    ):
        code, _, err = _run(capsys, "impute", run, *args)
        assert code == 1 and problem in err and len(err.strip().splitlines()) == 1
    # the run's own table is an input of every command on it, never an output (even with --force)
    table = p.read_bytes()
    code, _, err = _run(capsys, "score", run, holes, "--out", p, "--force", "--k", "2")
    assert code == 1 and "an input of this command" in err and p.read_bytes() == table
    code, out, err = _run(capsys, "score", run, holes, "--out", tmp_path / "s.csv", "--k", "2")
    assert code == 0 and "are scored standardized" in out, err
    # a result file of the run folder that dgmkit did not write is refused, not replaced
    for command, name in ((["impute", run, "--out", tmp_path / "z.npy", "--k", "5"], "impute.json"),
                          (["eval", run, "--iw-samples", "2"], "eval.json")):  # fmt: skip
        (run / name).write_text("my notes\n")
        code, _, err = _run(capsys, *command)
        assert code == 1 and f"not an {name} of dgmkit" in err and (run / name).read_text() == "my notes\n"


def test_impute_fills_binary_images_and_refuses_complete_data(tmp_path, capsys):
    x = (np.random.default_rng(0).random((80, 16)) < 0.5).astype(np.float32)
    x[:, 8:] = x[:, :8]  # the second half repeats the first: imputable
    p = tmp_path / "b.npy"
    np.save(p, x)
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--dataset", p, "--objective", "miwae", "--missing-rate", "0.25",
                        "--latent-dim", "4", "--hidden", "32", "--epochs", "100", "--batch-size", "16", "--quiet",
                        "--out", run)  # fmt: skip
    assert code == 0, err
    code, out, err = _run(capsys, "impute", run, "--out", tmp_path / "i.npy", "--k", "200", "--baselines", "mean",
                          "--weights", "last")  # fmt: skip
    assert code == 0, err
    scores = json.loads((run / "impute.json").read_text())["rmse"]
    # the model uses the repeated half; column means cannot (both rounded to 0 or 1, as written)
    assert scores["MIWAE (k=200)"] < scores["mean"]
    assert "RMSE on the missing entries, in the data's levels 0..1, each imputation rounded to the nearest level" in out
    filled = np.load(tmp_path / "i.npy")
    assert filled.shape == (len(load_run_split(run)), 1, 1, 16) and np.isin(filled, (0, 1)).all()
    complete = tmp_path / "c.npy"
    np.save(complete, x[:5])
    code, _, err = _run(capsys, "impute", run, complete, "--out", tmp_path / "j.npy")
    assert code == 1 and "no missing entries" in err
    (tmp_path / "t.csv").write_text("a,b\n1,\n2,3\n")  # a table given to a run on images: the input is named
    code, _, err = _run(capsys, "impute", run, tmp_path / "t.csv", "--out", tmp_path / "u.csv")
    assert code == 1 and "t.csv is a table, and" in err and "trained on images" in err
    code, _, err = _run(capsys, "impute", run, "--out", tmp_path / "u.csv")
    assert code == 1 and "--out .csv writes a table, and" in err and "name a .npy file" in err


def test_baselines_without_a_name_is_refused_not_read_as_none(tmp_path, capsys):
    """``--baselines`` with no name scored no baseline, silently (nargs="*" read it as the default)."""
    code, _, err = _run(capsys, "impute", tmp_path / "run", "--baselines", "--out", tmp_path / "i.npy")
    assert code == 1 and err.startswith("dgm: error: argument --baselines: expected at least one argument"), err


def test_impute_names_a_model_that_cannot_impute_before_what_its_data_are(tmp_path, capsys):
    """A flow run given incomplete images was told "imputation of dequantized data is not
    supported: train with a discrete likelihood", which no flow can be; that the model cannot
    impute comes first, by name, as for a PixelCNN. A VAE of dequantized data is refused for them."""
    holes = np.random.default_rng(0).integers(0, 17, (5, 1, 8, 8)).astype(np.float32)
    holes[:, 0, 0, 0] = np.nan
    np.save(tmp_path / "h.npy", holes)
    for name, flags, needles in (
        (
            "flow",
            ["--model", "flow", "--flow", "maf", "--hidden", "8", "--flow-layers", "1"],
            ["needs a latent variable model", "FlowModel, is not one"],
        ),
        (
            "arm",
            ["--model", "arm", "--likelihood", "categorical", "--channels", "4", "--arm-layers", "1"],
            ["needs a latent variable model", "GatedPixelCNN, is not one"],
        ),
        ("vae", ["--likelihood", "gaussian", "--hidden", "8", "--latent-dim", "2"], ["dequantized data", "discrete"]),
    ):
        run = tmp_path / name
        code, _, err = _run(capsys, "train", "--dataset", "digits", *flags, "--epochs", "1", "--quiet", "--out", run)
        assert code == 0, err
        code, _, err = _run(capsys, "impute", run, tmp_path / "h.npy", "--out", tmp_path / f"{name}.npy")
        assert code == 1 and all(n in err for n in needles) and len(err.strip().splitlines()) == 1, err
        assert "discrete" not in err or name == "vae"
        assert not (tmp_path / f"{name}.npy").exists()


def load_run_split(run):
    from dgmkit.cli.common import split_data
    from dgmkit.config import load_run

    return split_data(load_run(run), "train")[0]


def test_csv_quoting_line_numbers_and_numbers_out_of_range(tmp_path):
    p = tmp_path / "q.csv"
    p.write_text('a,b\n1,"x\ny"\n2,"p\x0cq"\n\n3,z\n,\n')  # a quoted line break; \f is no row break; a blank line
    with pytest.raises(DataError, match="line 7 holds no observed value"):  # (a row of empty cells: not dropped)
        read_table(p)
    p.write_text('a,b\n1,"x\ny"\n2,"p\x0cq"\n\n3,z\n')
    x, cols = read_table(p)
    assert cols[1].categories == ("p\x0cq", "x\ny", "z") and x.shape == (3, 2)
    again = tmp_path / "again.csv"
    again.write_text(write_table(x, cols))
    assert np.allclose(read_table(again, columns=cols)[0], x)
    for text, problem in (
        ('a,b\n1,"x\n2,y\n', "not a readable CSV"),  # an unclosed quote must not swallow the rows after it
        ("a,b\n\n1,x\n1,2,3\n", "line 4 has 3 cells"),  # the file's line, blank lines counted
        ("a,b\n1e400,x\n2,y\n", "'1e400': a numeric column's values must be finite"),  # not silently categorical
        ("a,b\ninf,x\n2,y\n", "'inf'"),
        ("a,b\n1e308,x\n1e308,y\n", "'1e308'"),  # its mean would overflow: a column of NaN
        ("a,b\n" + "9" * 5000 + ",x\n2,y\n", r"holds '9{40}'\.\.\. \(5000 characters\): a numeric"),  # not all of it
    ):
        p.write_text(text)
        with pytest.raises(DataError, match=problem):
            read_table(p)
    p.write_text("a,b\n1,x\n2,y\n")
    fifo = tmp_path / "s.json"
    os.mkfifo(fifo)  # reading it would block forever
    for schema in (fifo, tmp_path):
        with pytest.raises(DataError, match="not a file"):
            read_table(p, schema)


def test_a_column_of_tiny_numbers_is_standardized_by_its_own_spread(tmp_path):
    """Values of 1e-200 (squared: 0 in float64) keep their spread, not a constant column of 0."""
    p = tmp_path / "t.csv"
    p.write_text("a,b\n" + "".join(f"{(i % 7) * 1e-200},{i}\n" for i in range(14)))
    x, cols = read_table(p)
    assert cols[0].std == pytest.approx(2e-200) and np.allclose(np.nanstd(x[:, 0]), 1) and np.allclose(x[:, 0].mean(), 0)


def test_write_table_keeps_the_digits_of_a_column_far_from_zero(tmp_path):
    p = tmp_path / "t.csv"
    values = [1700000000 + 1234 * i for i in range(10)]  # timestamps: mean large against the spread
    p.write_text("t,c\n" + "".join(f"{v},{'ab'[i % 2]}\n" for i, v in enumerate(values)))
    x, cols = read_table(p)
    text = write_table(x.astype(np.float32), cols)  # stored rows are float32
    back = [float(line.split(",")[0]) for line in text.splitlines()[1:]]
    assert np.allclose(back, values, rtol=0, atol=1.0)


def test_write_table_writes_a_value_at_float32s_largest_within_its_range(tmp_path):
    """The largest float32, 3.4028234663852886e+38, was written as the shorter 3.4028235e+38,
    beyond float32's range, which read_table refuses: the rows written could not be read back."""
    p = tmp_path / "t.csv"
    p.write_text("a\n0\n3.4028234663852886e+38\n")
    x, cols = read_table(p)
    (tmp_path / "back.csv").write_text(write_table(x.astype(np.float32), cols))
    again, _ = read_table(tmp_path / "back.csv", columns=cols)
    assert np.array_equal(again.astype(np.float32), x.astype(np.float32))


def test_write_table_writes_a_files_own_values_as_it_had_them_and_reads_back_the_same(tmp_path):
    """A value stored as float32 after standardization (40 as 39.9999997) is written as the
    shortest decimal that reads back as the same stored value: the file's own 40, 0 and 1.764
    (observed cells of rows written without their file, as dgm impute --limit writes them), not
    39.9999997, -5e-08 and 1.764000004; a value of the model's keeps the digits it needs."""
    p = tmp_path / "t.csv"
    p.write_text("age,label,height,income\n" + "".join(
        f"{a},{i % 3},{1.5 + 0.037 * (i % 11):.3f},{52098 + 1234.56 * i:.2f}\n" for i, a in enumerate(range(18, 78, 3))
    ))  # fmt: skip
    x, cols = read_table(p)
    stored = x.astype(np.float32)
    text = write_table(stored, cols)
    assert [[float(v) for v in r.split(",")] for r in text.splitlines()[1:]] == [
        [float(v) for v in r.split(",")] for r in p.read_text().splitlines()[1:]
    ]
    assert text.splitlines()[1] == "18,0,1.5,52098" and "e-0" not in text and "99999" not in text
    drawn = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    again = tmp_path / "again.csv"
    again.write_text(write_table(drawn, cols))
    back = read_table(again, columns=cols)[0]
    assert [c.integer for c in cols] == [True, True, False, False]  # age and label hold whole numbers only
    assert np.array_equal(back[:, 2:].astype(np.float32), drawn[:, 2:])  # the others' values read back as they were
    in_units = [back[:, j] * cols[j].std + cols[j].mean for j in (0, 1)]  # a whole number's column writes whole numbers
    for j, values in enumerate(in_units):
        assert np.allclose(values, np.round(values), atol=1e-9)
        assert np.allclose(values, np.round(drawn[:, j].astype(np.float64) * cols[j].std + cols[j].mean), atol=1e-9)


def test_mcar_keeps_an_observed_entry_in_rows_with_missing_entries_already():
    x = (np.random.default_rng(0).random((40, 6)) < 0.5).astype(np.float32)
    x[:, :3] = np.nan  # the first entries of every row are missing in the data already
    d = remove_completely_at_random(from_array(x), 0.99, seed=1)
    for s in (d.train, d.valid, d.test):
        assert (~s.x.isnan()).flatten(1).any(1).all()


def test_training_reports_bits_per_observed_entry(tmp_path, capsys):
    x = (np.random.default_rng(0).random((60, 16)) < 0.5).astype(np.float32)
    x[:, :8] = np.nan
    p = tmp_path / "half.npy"
    np.save(p, x)
    code, out, err = _run(capsys, "train", "--dataset", p, "--objective", "miwae", "--latent-dim", "2", "--hidden", "8",
                          "--epochs", "1", "--out", tmp_path / "r")  # fmt: skip
    assert code == 0, err
    line = next(line for line in out.splitlines() if "bits/dim" in line)
    nats, bpd = float(line.split("valid -MIWAE bound")[1].split()[0]), float(line.split("(")[1].split()[0])
    assert bpd == pytest.approx(nats / (8 * math.log(2)), abs=1e-3)  # 8 observed entries per row, not 16


def test_impute_of_a_run_without_missing_rate_fills_only_the_holes_of_its_own_data(tmp_path, capsys, monkeypatch):
    """A run trained on images with holes of their own (no --missing-rate): ``dgm impute RUN``
    fills exactly those holes of its split and keeps every observed value; no value is known to
    score --baselines against, which is refused by name, and --figure draws no row of truth."""
    import dgmkit.cli.impute as impute_cli

    x = (np.random.default_rng(0).random((60, 16)) < 0.5).astype(np.float32)
    x[::2, :4] = np.nan
    p = tmp_path / "holes.npy"
    np.save(p, x)
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--dataset", p, "--image-shape", "4", "4", "--objective", "miwae",
                        "--latent-dim", "2", "--hidden", "8", "--epochs", "1", "--quiet", "--out", run)  # fmt: skip
    assert code == 0, err
    code, out, err = _run(capsys, "impute", run, "--out", tmp_path / "i.npy", "--k", "5")
    assert code == 0, err
    split = load_run_split(run).numpy()
    holes = np.isnan(split)
    filled = np.load(tmp_path / "i.npy")
    assert filled.shape == split.shape and np.array_equal(filled[~holes], split[~holes])
    assert not np.isnan(filled).any() and np.isin(filled[holes], (0, 1)).all()  # E[x_m | x_o], rounded: 0 or 1
    assert f"imputed {holes.sum()} missing entries of {len(split)} datapoints (the train split of holes.npy)" in out
    code, _, err = _run(capsys, "impute", run, "--out", tmp_path / "b.npy", "--baselines", "mean")
    assert code == 1 and "has no such entries (the run's --missing-rate is 0.0)" in err and not (tmp_path / "b.npy").exists()
    grids = []
    monkeypatch.setattr(impute_cli, "image_grid_png", lambda images, nrow: grids.append(images) or b"png")
    code, _, err = _run(capsys, "impute", run, "--out", tmp_path / "f.npy", "--k", "5", "--limit", "3",
                        "--figure", tmp_path / "f.png")  # fmt: skip
    assert code == 0, err
    assert len(grids[0]) == 2 * 3  # the observed images and the imputations; the complete data are unknown


def test_impute_figure_of_rows_that_are_not_images_is_refused_before_any_work(tmp_path, capsys):
    """Rows of values (a data file of flat rows, no --image-shape) are not pictures: --figure is
    refused by name, as dgm reconstruct and the other figures refuse them (it drew strips one
    pixel high), and neither --out nor the figure is written."""
    x = (np.random.default_rng(0).random((40, 16)) < 0.5).astype(np.float32)
    x[::2, :4] = np.nan
    p = tmp_path / "rows.npy"
    np.save(p, x)
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--dataset", p, "--objective", "miwae", "--latent-dim", "2", "--hidden", "8",
                        "--epochs", "1", "--quiet", "--out", run)  # fmt: skip
    assert code == 0, err
    code, _, err = _run(capsys, "impute", run, "--out", tmp_path / "i.npy", "--k", "5", "--figure", tmp_path / "f.png")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "--figure shows images; the run's data are rows of 16 values (1, 1, 16), not images: leave it out" in err
    assert not (tmp_path / "i.npy").exists() and not (tmp_path / "f.png").exists()


def test_impute_refusals_and_scores_on_a_table_with_holes_of_its_own(tmp_path, capsys, monkeypatch):
    p = _table(tmp_path, n=60)  # the colour column has empty cells of its own; --missing-rate removes more
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--dataset", p, "--likelihood", "mixed", "--objective", "miwae", "--iw-k", "2",
                        "--missing-rate", "0.3", "--latent-dim", "2", "--hidden", "8", "--epochs", "1", "--quiet",
                        "--out", run)  # fmt: skip
    assert code == 0, err
    code, _, err = _run(capsys, "impute", run, "--out", tmp_path / "i.npy", "--k", "5", "--baselines", "mean")
    assert code == 0, err  # the file's own holes have no known value: not scored (they crashed the RMSE)
    scores = json.loads((run / "impute.json").read_text())
    assert 0 < scores["scored"] < scores["missing"] and scores["units"].startswith("standardized")
    rows = tmp_path / "rows.npy"
    np.save(rows, np.array([[0.0, 7.0, np.nan], [0.5, np.nan, 1.0]]))  # colour has 3 categories: 7 is none
    holes = tmp_path / "holes.csv"
    holes.write_text("size,colour,weight\n0.1,,0.2\n,,\n")  # a row of empty cells: refused, not dropped
    before = p.read_bytes()
    monkeypatch.setattr("dgmkit.cli.impute.MAX_DRAWN_VALUES", 100)
    for args, problem in (
        ([rows, "--out", tmp_path / "o.npy"], "indices 0..2"),
        ([holes, "--out", tmp_path / "o.csv"], "line 3 holds no observed value"),
        (["--out", tmp_path / "o.npy", "--figure", tmp_path / "f.png"], "--figure shows images"),
        (["--out", tmp_path / "o.npy", "--figure", tmp_path / "f.jpg"], "--figure must name a .png file"),
        (["--out", p, "--force"], "is an input of this command"),  # the run's own data file
        (["--out", tmp_path / "o.npz", "--draws", "10"], "draw fewer"),
        (["--out", tmp_path / "i.npy"], "--out "),
    ):
        code, _, err = _run(capsys, "impute", run, *args)
        assert code == 1 and problem in err and len(err.strip().splitlines()) == 1, err
    assert p.read_bytes() == before
    # rows given as an array are taken in the model's own encoding, and the command says so
    np.save(rows, np.array([[0.0, 2.0, np.nan], [0.5, np.nan, 1.0]]))
    code, out, err = _run(capsys, "impute", run, rows, "--out", tmp_path / "o.npy", "--k", "5")
    assert code == 0, err
    assert f"note: {rows} is taken to hold values as the model sees them" in out and "(size, colour, weight)" in out
    assert not np.isnan(np.load(tmp_path / "o.npy")).any()


def test_a_categorical_column_of_one_category_is_modelled(tmp_path, capsys):
    p = tmp_path / "one.csv"
    p.write_text("a,b\n" + "".join(f"{i * 0.37 % 1:.3f},x\n" for i in range(30)))
    code, _, err = _run(capsys, "train", "--dataset", p, "--likelihood", "mixed", "--objective", "miwae",
                        "--missing-rate", "0.3", "--latent-dim", "2", "--hidden", "8", "--epochs", "1", "--quiet",
                        "--out", tmp_path / "r")  # fmt: skip
    assert code == 0, err  # was an internal error (levels [0, 1])
    code, _, err = _run(capsys, "impute", tmp_path / "r", "--out", tmp_path / "i.csv", "--k", "5")
    assert code == 0, err
    assert {line.split(",")[1] for line in (tmp_path / "i.csv").read_text().splitlines()[1:]} == {"x"}


def test_figures_of_a_run_on_incomplete_images_draw_the_holes_grey(tmp_path, capsys):
    """``dgm reconstruct`` and ``dgm interpolate`` of a run trained with missing entries draw the
    data images' holes at mid-grey (as ``dgm impute`` does) and say so; they are not taken for a
    model's non-finite output."""
    from dgmkit.cli.figures import reconstruction_pairs
    from dgmkit.config import load_run

    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--dataset", "digits", "--objective", "miwae", "--missing-rate", "0.2",
                        "--prior", "mog", "--prior-components", "3", "--latent-dim", "2", "--hidden", "16", "--epochs",
                        "1", "--quiet", "--out", run)  # fmt: skip
    assert code == 0, err
    for command, count in (("reconstruct", ["-n", "4"]), ("interpolate", ["--pairs", "2"])):
        code, out, err = _run(capsys, command, run, *count, "--out", tmp_path / f"{command}.png")
        assert code == 0, err
        assert "missing entries of the data images at mid-grey" in out
    # the latent means, the clusters and a traversal's spreads and code: of inputs with holes, which the encoder
    # sees as 0 (said; they were not, and dgm traverse said nothing of them after the others did)
    traverse = ["--out", tmp_path / "traverse.png"]
    for command, out_flag in (("latents", ["--out", tmp_path / "latents.png"]), ("cluster", []), ("traverse", traverse)):
        code, out, err = _run(capsys, command, run, *out_flag)
        assert code == 0 and re.search(r"\(\d+ missing entries in the inputs, which the encoder sees as 0\)", out), out + err
    r = load_run(run)
    x = r.transform(load_dataset("digits").test.x[:6], torch.Generator().manual_seed(0))
    holes = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.2
    x = x.masked_fill(holes, float("nan"))
    shown = reconstruction_pairs(r, x)
    data, recon = shown[0::2], shown[1::2]
    assert torch.isfinite(shown).all()
    assert (data[holes] == 0.5).all() and torch.equal(data[~holes], x[~holes].float().clamp(0, 1))
    assert torch.equal(recon, r.model.reconstruct(x).float().clamp(0, 1))
    # dgm impute's figure: the observed images, imputations and truth, each in the data's own units
    # (0..16 here, which the run binarizes at random: k / 16 is the model's value), holes at mid-grey
    import dgmkit.cli.impute as impute_cli

    assert r.transform.kind == "dynamic-binarize"
    raw = load_dataset("digits").test.x[:6].float()
    grids = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(impute_cli, "image_grid_png", lambda images, nrow: grids.append(images) or b"png")
        impute_cli._figure(tmp_path / "f.png", r, raw.masked_fill(holes, float("nan")), raw.double(), raw)
    observed_row, imputed_row, true_row = grids[0].split(6)
    assert (observed_row[holes] == 0.5).all() and torch.equal(observed_row[~holes], raw[~holes] / 16)
    assert torch.equal(imputed_row, raw / 16) and torch.equal(true_row, raw / 16)


@pytest.mark.parametrize("kind", ["binary", "dynamic-binarize", "scale", "integers", "continuous"])
def test_data_units_and_the_models_values_convert_both_ways(kind):
    """to_data_units (the imputations written) and from_data_units (dgm impute's figure) are inverses;
    probabilities of k / 16 (dynamic-binarize) and scaled values are 16 times larger in data units."""
    t = DataTransform(kind, None if kind in ("binary", "continuous") else 17)
    values = torch.tensor([0.0, 4.0, 16.0, math.nan] if kind == "integers" else [0.0, 0.25, 1.0, math.nan])
    data = to_data_units(values, t)
    scale = 16 if kind in ("dynamic-binarize", "scale") else 1
    assert torch.equal(data[:3], values[:3].double() * scale)
    back = from_data_units(data, t)
    assert torch.equal(back[:3], values[:3].double()) and torch.isnan(back[3])


@pytest.mark.parametrize(
    "argv, what",
    [
        (["--likelihood", "gaussian"], "a gaussian likelihood"),
        (["--likelihood", "bernoulli"], "a bernoulli likelihood"),
        (["--model", "flow", "--flow", "maf"], "a density of continuous values"),
    ],
)
def test_a_table_with_categorical_columns_is_refused_for_densities_of_numbers(tmp_path, capsys, argv, what):
    """Its category indices (0, 1, 2) would be scored as numbers, and the NLL printed as the table's."""
    p = tmp_path / "t.csv"
    p.write_text("size,colour\n" + "".join(f"{i % 5 / 2},{['red', 'blue'][i % 2]}\n" for i in range(40)))
    code, _, err = _run(capsys, "train", "--dataset", p, *argv, "--epochs", "1", "--out", tmp_path / "r")
    assert code == 1 and "colour are categorical" in err and what in err and "--likelihood mixed" in err, err
    assert not (tmp_path / "r").exists()


def test_score_refuses_missing_entries_a_model_cannot_score_and_notes_those_it_can(tmp_path, capsys):
    x = (np.random.default_rng(0).random((60, 16)) < 0.5).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    holes = x[:3].copy()
    holes[0, 2] = np.nan
    np.save(tmp_path / "holes.npy", holes)
    for name, argv in (("vae", ["--hidden", "8", "--latent-dim", "2"]), ("arm", ["--model", "arm", "--arm", "made"])):
        code, _, err = _run(capsys, "train", "--dataset", tmp_path / "x.npy", *argv, "--epochs", "1", "--quiet",
                            "--out", tmp_path / name)  # fmt: skip
        assert code == 0, err
    code, out, err = _run(capsys, "score", tmp_path / "vae", tmp_path / "holes.npy", "--out", tmp_path / "v.csv", "--k", "4")
    assert code == 0 and "note: 1 of 3 inputs hold missing entries" in out and "log p(x_o)" in out, err
    rows = list(csv.DictReader((tmp_path / "v.csv").read_text().splitlines()))  # bits/dim per own observed entries
    for row, seen in zip(rows, (15, 16, 16), strict=True):
        assert float(row["bits_per_dim"]) == pytest.approx(-float(row["log_px_nats"]) / (seen * math.log(2)), rel=1e-6)
    code, _, err = _run(capsys, "score", tmp_path / "arm", tmp_path / "holes.npy", "--out", tmp_path / "a.csv")
    assert code == 1 and "1 missing entries (NaN)" in err and "cannot score incomplete data" in err, err
    assert "internal error" not in err and not (tmp_path / "a.csv").exists()


def test_a_table_runs_samples_are_rows_of_its_table(tmp_path, capsys):
    p = _table(tmp_path, n=90)
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--dataset", p, "--likelihood", "mixed", "--objective", "miwae", "--iw-k", "2",
                        "--latent-dim", "2", "--hidden", "8", "--epochs", "2", "--quiet", "--out", run)  # fmt: skip
    assert code == 0, err
    code, out, err = _run(capsys, "sample", run, "-n", "7", "--seed", "3", "--out", tmp_path / "s.csv")
    assert code == 0 and "7 draws x ~ p(x|z), z ~ p(z), as rows of t.csv's columns" in out, err
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "size,colour,weight" and len(lines) == 8
    for line in lines[1:]:
        size, colour, weight = line.split(",")
        assert colour in ("red", "green", "blue") and math.isfinite(float(size)) and math.isfinite(float(weight))
    code, _, _ = _run(capsys, "sample", run, "-n", "7", "--seed", "3", "--out", tmp_path / "again.csv")
    assert code == 0 and (tmp_path / "again.csv").read_text() == (tmp_path / "s.csv").read_text()  # seeded
    code, _, err = _run(capsys, "sample", run, "--draw", "--out", tmp_path / "d.csv")
    assert code == 1 and "--draw shapes a picture; a table's rows are draws x ~ p(x) already" in err  # (no --nrow given)
    # a draw that is no number is refused, as in an array (a NaN was written as an empty cell, a missing value)
    from dgmkit.cli import figures

    drawn = figures.draw_samples

    def one_nan(*args, **kwargs):
        x, what = drawn(*args, **kwargs)
        x = x.clone()
        x.view(len(x), -1)[0, 0] = math.nan
        return x, what

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figures, "draw_samples", one_nan)
        code, _, err = _run(capsys, "sample", run, "-n", "3", "--out", tmp_path / "nan.csv")
    assert code == 1 and "the model drew 1 values that are not finite numbers; nothing was written" in err, err
    assert not (tmp_path / "nan.csv").exists()
    code, _, err = _run(capsys, "sample", run, "--out", tmp_path / "s.npy")  # (an array: rows in its own units are a CSV's)
    assert code == 1 and "models a table: its samples are rows, written to --out FILE.csv" in err
    code, _, err = _run(capsys, "sample", run, "--out", tmp_path / "s.txt")
    assert code == 1 and "--out must name a .png file (a grid of images), a .csv file (a run on a table) or a .npy" in err
    x = (np.random.default_rng(0).random((40, 16)) < 0.5).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, _, err = _run(capsys, "train", "--dataset", tmp_path / "x.npy", "--hidden", "8", "--latent-dim", "2",
                        "--epochs", "1", "--quiet", "--out", tmp_path / "images")  # fmt: skip
    assert code == 0, err
    code, _, err = _run(capsys, "sample", tmp_path / "images", "--out", tmp_path / "i.csv")
    assert code == 1 and "was not trained on one: name a .png file" in err and not (tmp_path / "i.csv").exists()


def test_a_table_without_a_header_line_is_refused_unless_a_schema_names_its_columns(tmp_path):
    """Its first row of values became the column names, silently."""
    p = tmp_path / "t.csv"
    p.write_text("".join(f"{i + 5},{i * 2.5},{i % 3}\n" for i in range(30)))
    with pytest.raises(DataError, match=r"first line holds numbers only \('5', '0.0', '0'\): a table needs a header"):
        read_table(p)
    s = tmp_path / "s.json"
    q = tmp_path / "years.csv"
    q.write_text("2019,2020\n" + "".join(f"{i},{i + 1}\n" for i in range(30)))
    s.write_text(json.dumps({"columns": {"2019": "numeric", "2020": "numeric"}}))
    assert [c.name for c in read_table(q, s)[1]] == ["2019", "2020"]  # the schema says they are names
    iris = tmp_path / "iris.csv"  # a first line with a category among numbers: read as a header, silently
    iris.write_text("5.1,3.5,setosa\n4.9,3.0,setosa\n6.3,3.3,virginica\n5.8,2.7,virginica\n")
    with pytest.raises(DataError, match=r"first line's 'setosa' \(column 3\) is also a value of that column below"):
        read_table(iris)
    named = tmp_path / "named.csv"  # a name that is no value of its column is a header, years among them
    named.write_text("2019,2020,species\n5.1,3.5,setosa\n4.9,3.0,setosa\n")
    assert [c.name for c in read_table(named)[1]] == ["2019", "2020", "species"]
    smoker = tmp_path / "smoker.csv"  # a word among its column's values, beside names that are words
    smoker.write_text("age,smoker,bmi\n40,smoker,22.5\n35,non-smoker,24.1\n")
    assert [c.name for c in read_table(smoker)[1]] == ["age", "smoker", "bmi"]
    pandas = tmp_path / "pandas.csv"  # DataFrame(array).to_csv(index=False): numbers that name the columns
    pandas.write_text("0,1,label\n0,3.5,a\n1,0,b\n")
    assert [c.name for c in read_table(pandas)[1]] == ["0", "1", "label"]
    years = tmp_path / "years-smoker.csv"  # a word among its values beside a number and another word
    years.write_text("id,2019,smoker\n1,3.2,smoker\n2,4.1,non-smoker\n")
    assert [c.name for c in read_table(years)[1]] == ["id", "2019", "smoker"]
    colours = tmp_path / "colours.csv"  # words that are each a value of their column: a row of data
    colours.write_text("red,small\nblue,small\nred,large\n")
    with pytest.raises(DataError, match=r"first line's 'red' \(column 1\) is also a value of that column below"):
        read_table(colours)


def test_mcar_at_the_highest_rate_keeps_each_row_s_first_observed_entry_and_draws_each_split_anew():
    """Rows [NaN, 1, 2, 3] (the first entry missing already) at the highest rate: every row keeps an
    observed entry, and a row that lost all its observed ones gets back its first observed entry,
    the second; splits of the same shape are not given the same removals."""
    from dgmkit.data import Dataset, Split
    from dgmkit.data.missing import MAX_MISSING_RATE

    row = torch.tensor([float("nan"), 1.0, 2.0, 3.0]).view(1, 1, 1, 4)
    split = Split(row.repeat(400, 1, 1, 1))
    d = Dataset("rows", split, split, split, num_levels=4)
    out = remove_completely_at_random(d, MAX_MISSING_RATE, seed=0)
    for s in (out.train, out.valid, out.test):
        seen = ~s.x.flatten(1).isnan()
        assert seen.any(1).all() and not seen[:, 0].any()
        first_only = (seen.sum(1) == 1) & seen[:, 1]
        assert first_only.sum() > 350  # about 0.99^3 of the rows lost all three: each gets the second entry back
    big = remove_completely_at_random(d, 0.5, seed=0)
    assert not torch.equal(big.train.x.isnan(), big.valid.x.isnan())
    assert not torch.equal(big.valid.x.isnan(), big.test.x.isnan())
    assert missing_count(big) == sum(int(s.x.isnan().sum()) for s in (big.train, big.valid, big.test))


def test_the_baseline_imputers_follow_their_protocols():
    x = np.array([[1.0, np.nan], [2.0, 4.0], [6.0, 5.0], [np.nan, 9.0]])
    assert baseline_impute(x, "mean").tolist() == [[1.0, 6.0], [2.0, 4.0], [6.0, 5.0], [3.0, 9.0]]  # means, not medians
    # KNN: 5 neighbours by distance on the observed column: rows 1..5 for row 0, whose mean is 30
    knn = np.stack([np.arange(8.0), np.r_[np.nan, 10.0 * np.arange(1, 8)]], 1)
    assert baseline_impute(knn, "knn")[0, 1] == pytest.approx(30.0)
    # MICE: 10 rounds of chained Bayesian ridge regressions (these data still move after the first)
    import warnings

    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    rng = np.random.default_rng(0)
    x0 = rng.normal(size=40)
    full = np.stack([x0, 2 * x0 + 1, -3 * x0 + 2], 1)
    hide = rng.random(full.shape) < 0.4
    hide[hide.all(1)] = [False, True, True]
    data = np.where(hide, np.nan, full)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rounds = [IterativeImputer(max_iter=r, random_state=0).fit_transform(data) for r in (1, 10)]
    assert not np.allclose(rounds[0], rounds[1])
    assert np.allclose(baseline_impute(data, "iterative", seed=0), rounds[1])


@torch.no_grad()
def test_eval_of_incomplete_data_gives_bits_per_observed_entry():
    from dgmkit.evaluation import evaluate

    torch.manual_seed(0)
    encoder = GaussianEncoder(torch.nn.Sequential(torch.nn.Flatten(), MLP(4, [8], 4)), latent_dim=2)
    model = VAE(encoder, Decoder(MLP(2, [8], 4), BernoulliHead(), event_shape=(1, 2, 2)), StandardNormalPrior(2))
    x = torch.bernoulli(torch.full((6, 1, 2, 2), 0.5), generator=torch.Generator().manual_seed(0))
    x[0, 0, 0, 0] = x[1, 0, 0, :] = x[2, 0, 1, 1] = float("nan")  # 20 of 24 entries observed
    r = evaluate(model, x, iw_samples=5)
    assert r.observed_dims == pytest.approx(20 / 6) and r.num_dims == 4
    assert r.bpd == pytest.approx(r.nll / (20 / 6 * math.log(2)), rel=1e-12)


def test_a_table_of_categorical_columns_only_is_scored_in_probabilities_with_bits_per_column(tmp_path, capsys):
    """Its mixed likelihood is a categorical per column: log-probabilities, not log-densities of
    continuous values, so bits/dim (per column) is reported and no note of continuous data."""
    p = tmp_path / "cats.csv"
    p.write_text("colour,size\n" + "".join(f"{'rgb'[i % 3]},{'SML'[i * 7 % 3]}\n" for i in range(30)))
    code, out, err = _run(capsys, "train", "--dataset", p, "--likelihood", "mixed", "--hidden", "4", "--latent-dim", "1",
                          "--epochs", "1", "--quiet", "--out", tmp_path / "r")  # fmt: skip
    assert code == 0 and "continuous" not in out, err
    code, out, err = _run(capsys, "eval", tmp_path / "r", "--iw-samples", "2")
    assert code == 0, err
    assert "a table's rows of categories" in out and "continuous" not in out
    record = json.loads((tmp_path / "r" / "eval.json").read_text())
    assert record["density_of"] == "discrete" and record["bpd"] == pytest.approx(record["nll"] / (2 * math.log(2)))
    code, out, err = _run(capsys, "score", tmp_path / "r", p, "--k", "2", "--out", tmp_path / "s.csv")
    rows = [r.split(",") for r in (tmp_path / "s.csv").read_text().splitlines()[1:]]
    assert code == 0 and all(float(b) == pytest.approx(-float(lp) / (2 * math.log(2))) for _, lp, b in rows), err
    code, _, err = _run(capsys, "sample", tmp_path / "r", "--out", tmp_path / "s.png")  # a table's rows are no picture
    assert code == 1 and "models a table: its samples are rows, written to --out FILE.csv" in err
    assert not (tmp_path / "s.png").exists()
    code, _, err = _run(capsys, "train", "--model", "m2", "--dataset", p, "--likelihood", "mixed", "--epochs", "1",
                        "--out", tmp_path / "m2")  # fmt: skip
    assert code == 1 and "cats.csv is a table: every column is a feature that the model scores, none a label" in err
    code, _, err = _run(capsys, "train", "--model", "vqvae", "--dataset", p, "--likelihood", "mixed", "--epochs", "1",
                        "--out", tmp_path / "vq")  # fmt: skip
    assert code == 1 and "the VQ-VAE's networks are convolutional: it needs images, not rows of 2 values" in err


def test_a_constant_numeric_column_is_refused_for_training(tmp_path, capsys):
    """A flow's density on it grows without bound (its NLL fell below that of the same table
    without the column, on and on): the numbers would be of no data."""
    p = tmp_path / "t.csv"
    p.write_text("a,b,c\n" + "".join(f"{i % 7},5,{i % 3}\n" for i in range(30)))
    for family in (["--model", "flow"], ["--likelihood", "gaussian"]):
        code, _, err = _run(capsys, "train", "--dataset", p, *family, "--epochs", "1", "--out", tmp_path / "r")
        assert code == 1 and "column 'b' holds one value, 5, in every row" in err and not (tmp_path / "r").exists()


def test_both_bits_per_dim_of_incomplete_data_are_per_observed_entry():
    """With missing entries, the NLL's and the ELBO's bits/dim are both over the observed entries
    (the ELBO's was over all of them: on another scale than the NLL's beside it)."""
    from dgmkit.config import RunConfig, build_model
    from dgmkit.evaluation import evaluate

    torch.manual_seed(0)
    model = build_model(RunConfig.of(dataset="digits-4x4", hidden=[8], latent_dim=2), (1, 4, 4), 2).eval()
    x = (torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    x[:, :, :2] = float("nan")  # half the entries of every image
    r = evaluate(model, x, iw_samples=5)
    assert r.observed_dims == 8
    assert r.bpd == pytest.approx(r.nll / (8 * math.log(2)), rel=1e-12)
    assert r.elbo_bpd == pytest.approx(-r.elbo / (8 * math.log(2)), rel=1e-12)


def test_the_rmse_of_binarized_grey_images_says_its_units_and_what_each_imputer_read(tmp_path, capsys):
    """digits (levels 0..16) binarized for the model: its imputations and the baselines' are in the
    levels, but the model read the observed pixels binarized and the baselines their grey levels."""
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--dataset", "digits", "--objective", "miwae", "--missing-rate", "0.3",
                        "--latent-dim", "2", "--hidden", "16", "--epochs", "1", "--quiet", "--out", run)  # fmt: skip
    assert code == 0, err
    code, out, err = _run(capsys, "impute", run, "--out", tmp_path / "i.npy", "--k", "10", "--baselines", "mean")
    assert code == 0, err
    assert "in the data's levels 0..16, each imputation rounded to the nearest level as written (the model reads the" in out
    code, out, err = _run(capsys, "impute", run, "--out", tmp_path / "j.npy", "--k", "10")
    assert code == 0 and "the model reads" not in out and "rounded to the nearest level as written (removed by" in out


def test_a_parquet_table_whose_column_names_are_numbers_is_read(tmp_path):
    """pandas writes columns without names as "0", "1", ...: a Parquet file's names are its
    metadata, never a row of data, and were refused as "a first line of numbers only"."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    pq.write_table(pa.table({"0": rng.random(30), "1": rng.random(30)}), tmp_path / "nc.parquet")
    x, cols = read_table(tmp_path / "nc.parquet")
    assert [c.name for c in cols] == ["0", "1"] and x.shape == (30, 2)
    (tmp_path / "nc.csv").write_text("0,1\n" + "".join(f"{a},{b}\n" for a, b in rng.random((30, 2))))
    with pytest.raises(DataError, match="first line holds numbers only"):  # (a CSV's first line may be data)
        read_table(tmp_path / "nc.csv")


def test_a_table_line_without_an_observed_value_is_named_by_its_line(tmp_path):
    """A spreadsheet's blank line (",") was refused as "1 row holds no observed value", with no line."""
    rows = "".join(f"{i},{i % 3}\n" for i in range(12))
    (tmp_path / "t.csv").write_text("a,b\n1,2\n,\n" + rows + "NA,?\n")
    with pytest.raises(DataError, match=r"t\.csv: line 3, line 16 hold no observed value"):
        read_table(tmp_path / "t.csv")
