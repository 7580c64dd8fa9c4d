"""Tests from a hand mutation sweep over the CLI layer of dgm ood, dgm score and dgm impute: each checks
a property that an independent computation (by hand, Pillow's own PNG files, a closed form) pins down.

The sweep flipped the seeds of the subsets, the units, the keys written to ood.json and to the CSV
files, the checks of the inputs and the choices of the complexity score's compressor. Most mutants
were killed by tests/test_ood.py, tests/test_score.py and tests/test_imputation.py. The survivors
were gaps, not bugs: nothing checked that ood.json records each model's own k (the flag's None was
as good, and the background's k could be the run's), the seed, or the OOD subset's seed (the seed
+ 1: the same seed draws the same rows on both sides); that each row of ood-scores.csv names the
split and the index of the input it scores; that the complexity score codes a binarized run's
inputs as the 1-bit PNGs of the binarized images, a dequantized flow's integers at all (256 levels
included) and a run of 2 levels as 1-bit PNGs; that dgm score subtracts the dequantization's log
volume, writes float64 estimates, counts the inputs with missing entries (not the entries) and
refuses several data files and a --data-dir that no table run reads; nor, by hand,
dgm impute's scores: RMSE only over the entries the run removed, the share of categorical
entries wrong as a mean, and the mean baseline's categorical column filled with the most frequent
observed category (missing entries not counted), another baseline's rounded to the nearest one;
nor that dgm impute --limit takes the seeded rows of the split (not its first) and that --seed draws
the multiple imputations. Equivalent: dgm impute's torch.where that keeps the observed entries (the
model's imputation returns them as they are), and dgm score's one-table-file test of several inputs
(a table among several inputs is refused either way).
No bug was found in the code swept.

A second pass ran the mutants the first left: of dgm ood, the background's levels check, the
table's unit of the complexity score, --iw-samples refused where any (not every) model is exact,
an exact model's k taken from the flag, the dequantization's log volume left out of -log p(x),
_same_weights with any tensor equal, and the k, typicality and background-weight parts of
ood.json's protocol key survived; of dgm impute, the --draws cap counting rows (or refusing at the
cap), the draws' reshape, their observed entries, the figure's 8 rows and the transform seeded with
--seed (a dynamically binarized run pins it at no cost). The tests below kill each. Equivalent:
the limit's "(seed N)" in the key (the key ends with the seed again); not reached by a test: the
check that the complete data still match the incomplete ones (run_data has checked the file's
digest just before). Again no bug.
"""

import csv
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dgm_cli import dgm


def _png_bits(image: np.ndarray, one_bit: bool) -> int:
    """The bits of one (H, W) image of integers as a PNG file written by Pillow (optimize=True)."""
    pic = Image.fromarray(image.astype(bool)) if one_bit else Image.fromarray(image.astype(np.uint8), mode="L")
    buf = io.BytesIO()
    pic.save(buf, format="PNG", optimize=True)
    return 8 * len(buf.getvalue())


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _code_lengths(rows):
    """L(x) of each row of ood-scores.csv, from its complexity score S = -log2 p(x) - L(x) and its -log p(x)."""
    return np.array([float(r["nll"]) / math.log(2) - float(r["complexity"]) for r in rows])


def test_ood_records_each_models_k_and_the_seeded_subsets_and_codes_binarized_inputs_as_1_bit_pngs(tmp_path, capsys):
    """A VAE of dynamically binarized digits (k = 3) against a background VAE (k = 4): ood.json
    keeps each model's own k (not the flag's None), the seed, and the subsets of --limit drawn with
    the seed (in) and the seed + 1 (OOD); each row of ood-scores.csv names the input it scores (its
    split and index), and
    its L(x) is the 1-bit PNG of the binarized image the model scores (Pillow, by hand here)."""
    from dgmkit.cli.common import run_data
    from dgmkit.config import load_run
    from dgmkit.data import load_dataset
    from dgmkit.training.trainer import VALID_SEED

    vae = ["train", "--dataset", "digits", "--likelihood", "bernoulli", "--hidden", "8", "--latent-dim", "2"]
    vae += ["--epochs", "1", "--quiet"]
    assert dgm(capsys, *vae, "--iw-samples", "3", "--out", tmp_path / "run")[0] == 0
    assert dgm(capsys, *vae, "--iw-samples", "4", "--mutation-rate", "0.2", "--out", tmp_path / "bg")[0] == 0
    noise = tmp_path / "noise.npy"
    np.save(noise, np.random.default_rng(0).integers(0, 17, size=(600, 8, 8)))  # a valid split of 60
    argv = ["ood", tmp_path / "run", "--ood", noise, "--ood-split", "valid", "--background", tmp_path / "bg"]
    argv += ["--limit", "20", "--seed", "5"]
    code, out, err = dgm(capsys, *argv, "--json", tmp_path / "o.json")
    assert code == 0, err
    r = json.loads((tmp_path / "o.json").read_text())
    assert r["transform"] == "dynamic-binarize" and r["seed"] == 5
    assert r["iw_samples"] == 3 and r["background_iw_samples"] == 4
    assert "log p(x): importance-sampled (k=3)" in out and "(k=4))" in out
    run = load_run(tmp_path / "run")
    raws = {"in": run_data(run).test.x, "ood": load_dataset(str(noise)).valid.x}
    rows = _rows(tmp_path / "run" / "ood-scores.csv")
    for which, seed, split in (("in", 5, "test"), ("ood", 6, "valid")):
        sub = r["subsets"][which]
        assert sub["of"] == len(raws[which]) and sub["n"] == 20
        drawn = torch.randperm(sub["of"], generator=torch.Generator().manual_seed(seed))[:20]
        assert sub["indices"] == sorted(drawn.tolist())
        mine = [row for row in rows if row["set"] == which]
        assert [int(row["index"]) for row in mine] == sub["indices"] and {row["split"] for row in mine} == {split}
        binarized = run.transform(raws[which][sub["indices"]], torch.Generator().manual_seed(VALID_SEED))
        assert set(binarized.unique().tolist()) <= {0.0, 1.0}
        bits = [_png_bits(b.reshape(8, 8).numpy(), one_bit=True) for b in binarized]
        np.testing.assert_allclose(_code_lengths(mine), bits, atol=1e-3)


@pytest.mark.parametrize("levels", [256, 2])
def test_ood_of_a_flow_on_dequantized_integers_scores_complexity_by_the_png_of_its_integers(tmp_path, capsys, levels):
    """A flow dequantizes integer images: they are still images to compress. Of 256 levels (at
    most what an 8-bit PNG holds) L(x) is the 8-bit grey PNG of the integers; of 2 levels the 1-bit
    PNG, as for binary data, decided by the run's levels."""
    from dgmkit.data import load_dataset

    g = np.random.default_rng(levels)
    np.save(tmp_path / "train.npy", g.integers(0, levels, size=(100, 1, 4, 4)).astype(np.uint8))
    np.save(tmp_path / "ood.npy", g.integers(0, levels, size=(100, 1, 4, 4)).astype(np.uint8))
    flow = ["--model", "flow", "--flow", "realnvp", "--flow-layers", "2", "--hidden", "8", "--epochs", "1", "--quiet"]
    assert dgm(capsys, "train", "--dataset", tmp_path / "train.npy", *flow, "--out", tmp_path / "run")[0] == 0
    code, out, err = dgm(capsys, "ood", tmp_path / "run", "--ood", tmp_path / "ood.npy", "--json", tmp_path / "o.json")
    assert code == 0, err
    r = json.loads((tmp_path / "o.json").read_text())
    assert r["transform"] == "dequantize" and "complexity" in r["scores"] and r["complexity_note"] is None
    ood = load_dataset(str(tmp_path / "ood.npy")).test.x
    bits = [_png_bits(x.reshape(4, 4).numpy(), one_bit=levels == 2) for x in ood]
    rows = [row for row in _rows(tmp_path / "run" / "ood-scores.csv") if row["set"] == "ood"]
    np.testing.assert_allclose(_code_lengths(rows), bits, atol=1e-3)


def test_score_of_a_flow_on_dequantized_integers_is_its_density_less_the_log_volume_of_the_dequantization(tmp_path, capsys):
    """A flow models y = (k + u) / L of integer digits (L = 17 levels, D = 64): dgm score's log P(k)
    is log p(y) - D log L, each row's estimate in float64 (not rounded to float32) with its bits/dim.
    Several data files are refused, not the first scored alone, and --data-dir, which says where a
    table run's table is, for a run of images."""
    from dgmkit.cli.common import run_data
    from dgmkit.config import load_run
    from dgmkit.evaluation.estimates import log_likelihoods
    from dgmkit.training.trainer import VALID_SEED

    flow = ["--model", "flow", "--flow", "realnvp", "--flow-layers", "2", "--hidden", "8", "--epochs", "1", "--quiet"]
    assert dgm(capsys, "train", "--dataset", "digits", *flow, "--out", tmp_path / "run")[0] == 0
    run = load_run(tmp_path / "run")
    x = run_data(run).test.x[:10]
    np.save(tmp_path / "x.npy", x.numpy())
    code, out, err = dgm(capsys, "score", tmp_path / "run", tmp_path / "x.npy", "--out", tmp_path / "s.csv")
    assert code == 0, err
    rows = _rows(tmp_path / "s.csv")
    log_px = np.array([float(r["log_px_nats"]) for r in rows])
    density = log_likelihoods(run.model, run.transform(x, torch.Generator().manual_seed(VALID_SEED))).numpy()
    np.testing.assert_allclose(log_px, density - 64 * math.log(17), rtol=0, atol=1e-6)
    np.testing.assert_allclose([float(r["bits_per_dim"]) for r in rows], -log_px / (64 * math.log(2)), rtol=1e-12)
    assert any(float(np.float32(v)) != v for v in log_px)
    two = [tmp_path / "x.npy", tmp_path / "x.npy"]
    code, _, err = dgm(capsys, "score", tmp_path / "run", *two, "--out", tmp_path / "t.csv")
    assert code == 1 and "give one .npy file or PNG files" in err and not (tmp_path / "t.csv").exists()
    code, _, err = dgm(capsys, "score", tmp_path / "run", two[0], "--out", tmp_path / "t.csv", "--data-dir", tmp_path)
    assert code == 1 and "--data and --data-dir say where a table run's table is" in err


def test_impute_scores_only_the_removed_entries_numeric_by_rmse_and_categorical_by_the_share_wrong():
    """dgm impute's scores on six rows of a table (numeric, categorical of 3 categories, numeric),
    worked by hand: of the 5 missing entries, (4, 0) was missing in the file too (its truth is NaN)
    and is not scored; the model's RMSE is over (0, 0) and (2, 2) (errors 1 and 3: sqrt 5) and its
    share of categorical entries wrong is 1 of 2. The column-mean baseline fills each numeric column
    with its observed mean (6.5 and 7.2: errors 5.5 and 1.2) and the categorical column with its most
    frequent observed category (2, twice among 2, 2, 0, 1, the missing entries not counted: both
    right; the rounded mean 5/4 would be 1, both wrong). KNN (5 neighbours, of 4 donors) fills it
    with the donors' most frequent category, 2 (their mean index 5/4 filled 1, a category that only
    one of them has)."""
    from types import SimpleNamespace

    from dgmkit.cli.impute import _baseline, _scores

    nan = float("nan")
    truth = torch.tensor([[1, 2, 2], [3, 2, 4], [5, 2, 6], [7, 2, 8], [nan, 0, 10], [11, 1, 12]], dtype=torch.float32)
    data = truth.clone()
    for i, j in ((0, 0), (1, 1), (2, 2), (3, 1), (4, 0)):
        data[i, j] = nan
    missing = torch.isnan(data)
    single = torch.where(missing, torch.zeros(()), data).double()
    single[0, 0], single[2, 2], single[1, 1], single[3, 1], single[4, 0] = 2, 9, 2, 0, 100
    columns = tuple(
        SimpleNamespace(kind=k, integer=False, categories=("a", "b", "c")) for k in ("numeric", "categorical", "numeric")
    )
    args = SimpleNamespace(k=50, baselines=["mean"], seed=7, split="train", limit=None)
    cfg = SimpleNamespace(data=SimpleNamespace(missing_rate=0.3, missing_seed=11, seed=3))
    run = SimpleNamespace(cfg=cfg, checkpoint=SimpleNamespace(name="best.safetensors"), weights_digest=lambda: "w",
                          record={"run_id": "r"}, model=SimpleNamespace(exact_imputation=False))  # fmt: skip
    s = _scores(args, run, data, truth, single, missing, columns)
    assert (s["weights"], s["run_id"], s["limit"]) == ("w", "r", None)
    assert s["rmse"] == pytest.approx({"MIWAE (k=50)": math.sqrt(5), "mean": math.sqrt((5.5**2 + 1.2**2) / 2)}, abs=1e-12)
    assert s["categorical_error"] == {"MIWAE (k=50)": 0.5, "mean": 0.0}
    assert (s["n"], s["missing"], s["scored"], s["k"], s["seed"]) == (6, 5, 4, 50, 7)
    assert (s["missing_rate"], s["missing_seed"], s["split"]) == (0.3, 11, "train")
    assert _baseline(data.double().numpy(), "knn", 0, columns, run)[[1, 3], 1].tolist() == [2.0, 2.0]


def test_score_counts_the_inputs_with_missing_entries_not_the_entries(tmp_path, capsys):
    """Three inputs, the first missing 2 of its 16 entries and the second 1: 2 of 3 inputs hold
    missing entries (not 3 entries of 3), each scored per its own observed entries (14, 15, 16)."""
    x = (np.random.default_rng(0).random((60, 16)) < 0.5).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    holes = x[:3].copy()
    holes[0, [2, 5]] = np.nan
    holes[1, 7] = np.nan
    np.save(tmp_path / "holes.npy", holes)
    vae = ["--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet"]
    assert dgm(capsys, "train", "--dataset", tmp_path / "x.npy", *vae, "--out", tmp_path / "vae")[0] == 0
    code, out, err = dgm(capsys, "score", tmp_path / "vae", tmp_path / "holes.npy", "--out", tmp_path / "s.csv", "--k", "4")
    assert code == 0, err
    assert "note: 2 of 3 inputs hold missing entries" in out
    for row, seen in zip(_rows(tmp_path / "s.csv"), (14, 15, 16), strict=True):
        assert float(row["bits_per_dim"]) == pytest.approx(-float(row["log_px_nats"]) / (seen * math.log(2)), rel=1e-9)


def test_impute_limit_takes_the_seeded_rows_of_the_split_and_the_seed_draws_the_imputations(tmp_path, capsys):
    """--limit 5 --seed 1 imputes the rows torch.randperm(N, seed 1)[:5] of the split, in order (their
    observed entries are those rows'), not its first 5; and --seed draws the multiple imputations."""
    from dgmkit.cli.common import run_data
    from dgmkit.config import load_run

    x = (np.random.default_rng(0).random((60, 16)) < 0.5).astype(np.float32)
    np.save(tmp_path / "b.npy", x)
    run = tmp_path / "run"
    miwae = ["--objective", "miwae", "--missing-rate", "0.25", "--latent-dim", "2", "--hidden", "8", "--epochs", "1"]
    assert dgm(capsys, "train", "--dataset", tmp_path / "b.npy", *miwae, "--quiet", "--out", run)[0] == 0
    split = run_data(load_run(run)).train.x.reshape(-1, 16).numpy()
    code, _, err = dgm(capsys, "impute", run, "--out", tmp_path / "l.npy", "--k", "5", "--limit", "5", "--seed", "1")
    assert code == 0, err
    rows = torch.randperm(len(split), generator=torch.Generator().manual_seed(1))[:5].sort().values.numpy()
    filled, want = np.load(tmp_path / "l.npy").reshape(5, 16), split[rows]
    seen = ~np.isnan(want)
    assert rows.tolist() != list(range(5)) and np.array_equal(filled[seen], want[seen])
    draws = []
    for seed in ("1", "2"):
        argv = ["impute", run, "--out", tmp_path / f"d{seed}.npz", "--k", "5", "--draws", "3", "--seed", seed]
        assert dgm(capsys, *argv)[0] == 0
        draws.append(np.load(tmp_path / f"d{seed}.npz")["draws"])
    assert not np.array_equal(draws[0], draws[1])


def test_ood_keeps_an_exact_backgrounds_k_at_0_and_keeps_results_of_other_k_apart(tmp_path, capsys):
    """--iw-samples is the k of the importance-sampled model only: a VAE (k = 5) against an exact
    PixelCNN background (k = 0, not 5) is scored, not refused as if both were exact; and results of
    k = 5 and k = 6 are two protocols in ood.json (the same k again replaces its own)."""
    vae = ["train", "--dataset", "digits", "--likelihood", "categorical", "--hidden", "8", "--latent-dim", "2"]
    assert dgm(capsys, *vae, "--epochs", "1", "--quiet", "--out", tmp_path / "run")[0] == 0
    arm = ["train", "--dataset", "digits", "--model", "arm", "--likelihood", "categorical", "--channels", "4"]
    arm += ["--arm-layers", "1", "--mutation-rate", "0.2", "--epochs", "1", "--quiet", "--out", tmp_path / "bg"]
    assert dgm(capsys, *arm)[0] == 0
    np.save(tmp_path / "noise.npy", np.random.default_rng(0).integers(0, 17, size=(100, 8, 8)))
    argv = ["ood", tmp_path / "run", "--ood", tmp_path / "noise.npy", "--background", tmp_path / "bg"]
    argv += ["--limit", "10", "--fit-limit", "20", "--typicality-batch", "1"]
    for k, kept in (("5", 1), ("6", 2), ("5", 2)):
        code, out, err = dgm(capsys, *argv, "--iw-samples", k, "--json", tmp_path / f"o{k}.json", "--force")
        assert code == 0, err
        r = json.loads((tmp_path / f"o{k}.json").read_text())
        assert (r["estimate"], r["iw_samples"]) == ("importance-sampled", int(k))
        assert (r["background_estimate"], r["background_iw_samples"]) == ("exact", 0)
        assert f"(k={k})" in out and "its log p(x): exact)" in out
        assert len(json.loads((tmp_path / "run" / "ood.json").read_text())["results"]) == kept


def test_ood_of_a_dequantized_flow_scores_log_p_of_the_integers_and_refuses_a_background_of_other_levels(tmp_path, capsys):
    """A flow on the digits (17 levels, D = 64) scores y = (k + u) / 17: each input's -log P(k) in
    ood-scores.csv is -log p(y) + 64 log 17 (u drawn with the held-out seed), the table's complexity
    row is in bits and -log p(x)'s in nats. A background flow of 8x8 images of 256 levels (one shape,
    both dequantized) models other inputs: refused."""
    from dgmkit.cli.common import run_data
    from dgmkit.config import load_run
    from dgmkit.evaluation.estimates import log_likelihoods
    from dgmkit.evaluation.ood_scores import SCORES
    from dgmkit.training.trainer import VALID_SEED

    flow = ["--model", "flow", "--flow", "realnvp", "--flow-layers", "2", "--hidden", "8", "--epochs", "1", "--quiet"]
    assert dgm(capsys, "train", "--dataset", "digits", *flow, "--out", tmp_path / "run")[0] == 0
    g = np.random.default_rng(0)
    np.save(tmp_path / "noise.npy", g.integers(0, 17, size=(100, 8, 8)))
    np.save(tmp_path / "bytes.npy", g.integers(0, 256, size=(100, 8, 8)).astype(np.uint8))
    argv = ["ood", tmp_path / "run", "--ood", tmp_path / "noise.npy", "--limit", "10", "--fit-limit", "20"]
    code, out, err = dgm(capsys, *argv, "--json", tmp_path / "o.json")
    assert code == 0, err
    r = json.loads((tmp_path / "o.json").read_text())
    run = load_run(tmp_path / "run")
    x = run_data(run).test.x[r["subsets"]["in"]["indices"]]
    density = log_likelihoods(run.model, run.transform(x, torch.Generator().manual_seed(VALID_SEED))).numpy()
    rows = [row for row in _rows(tmp_path / "run" / "ood-scores.csv") if row["set"] == "in"]
    np.testing.assert_allclose([float(row["nll"]) for row in rows], -density + 64 * math.log(17), rtol=0, atol=1e-6)
    lines = out.splitlines()
    assert any(line.startswith(SCORES["complexity"] + " (bits)") for line in lines)
    assert any(line.startswith(SCORES["nll"] + " (nats)") for line in lines)
    assert dgm(capsys, "train", "--dataset", tmp_path / "bytes.npy", *flow, "--out", tmp_path / "bg")[0] == 0
    code, _, err = dgm(capsys, *argv, "--background", tmp_path / "bg")
    assert code == 1 and "with 256 levels" in err and "with 17 levels" in err and "one space" in err


def test_same_weights_needs_every_tensor_equal_not_one():
    """Two models are the same weights only if every tensor is equal: a background that shares one
    tensor with the run (an untrained bias, a buffer) and differs in another is another model."""
    from types import SimpleNamespace

    from dgmkit.cli.ood import _same_weights

    def run(model, digest):
        return SimpleNamespace(model=model, weights_digest=lambda: digest)

    a = torch.nn.Linear(3, 2)
    same, other = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    same.load_state_dict(a.state_dict())
    other.load_state_dict({"weight": a.weight.detach() + 1, "bias": a.bias.detach()})  # the bias shared
    assert _same_weights(run(a, "x"), run(same, "y")) and _same_weights(run(a, "x"), run(other, "x"))
    assert not _same_weights(run(a, "x"), run(other, "y"))


def test_ood_keeps_results_of_every_other_protocol_apart():
    """ood.json keys each result by what it depends on: a result that differs in any of k, the
    typicality test's M or fit limit, --limit's seed, the background's weights or the run's own
    weights (a retrained model under the same path) is kept beside the others, not over one."""
    from dgmkit.cli.ood import _protocol

    base = {"subsets": {"in": {"n": 10}, "ood": None}, "limit": 10, "seed": 0, "in_split": "test", "ood": "noise.npy"}
    base |= {"ood_split": "test", "iw_samples": 5, "typicality_batch": 25, "fit_limit": 100}
    base |= {"background": "bg", "background_weights": "b1", "weights": "w1"}
    changes = [{"iw_samples": 6}, {"typicality_batch": 1}, {"fit_limit": 200}, {"seed": 1}, {"background_weights": "b2"}]
    changes += [{"weights": "w2"}, {"background": None}, {"limit": 20}, {"ood_split": "valid"}]
    keys = {_protocol(base)} | {_protocol(base | change) for change in changes}
    assert len(keys) == 1 + len(changes)


def test_impute_binarizes_the_observed_entries_with_the_held_out_seed_not_the_seed_of_the_draws(
    tmp_path, capsys, monkeypatch
):
    """A MIWAE of dynamically binarized digits conditions on a Bernoulli draw of each observed
    entry: that draw is the fixed held-out seed's (as dgm score, ood and eval draw it), whatever
    --seed draws the importance samples; dgm impute --seed 1 is the model's imputation of the rows
    binarized with VALID_SEED, its probabilities times 16 (the digits' top level) rounded to the
    nearest level. Its --draws, binary pixels, are refused. Of a categorical likelihood of the
    levels, --draws 2 of 6 images of 64 entries hold 2 x 384 = 768 values: refused past a cap of 767
    values (not rows), written at 768 as (2, 6, 1, 8, 8), the images' shape, each draw keeping the
    observed entries. --figure of 10 rows draws 8 of them."""
    from dgmkit.cli.common import run_data
    from dgmkit.config import load_run
    from dgmkit.evaluation.imputation import impute_batched
    from dgmkit.training.trainer import VALID_SEED

    miwae = ["--objective", "miwae", "--missing-rate", "0.25", "--likelihood", "bernoulli", "--binarize", "dynamic"]
    miwae += ["--latent-dim", "2", "--hidden", "8", "--epochs", "1", "--quiet"]
    assert dgm(capsys, "train", "--dataset", "digits", *miwae, "--out", tmp_path / "run")[0] == 0
    run = load_run(tmp_path / "run")
    assert run.transform.kind == "dynamic-binarize" and run.transform.num_levels == 17
    code, _, err = dgm(
        capsys, "impute", tmp_path / "run", "--out", tmp_path / "i.npy", "--k", "5", "--limit", "6", "--seed", "1"
    )
    assert code == 0, err
    split = run_data(run).train.x
    rows = torch.randperm(len(split), generator=torch.Generator().manual_seed(1))[:6].sort().values
    data = split[rows]
    missing = torch.isnan(data)
    binarized = run.transform(data, torch.Generator().manual_seed(VALID_SEED))
    single, _ = impute_batched(run.model, binarized, k=5, seed=1)
    filled = np.load(tmp_path / "i.npy")
    assert np.array_equal(filled[missing.numpy()], np.round(16 * single.double()[missing].numpy()))
    assert np.array_equal(filled[~missing.numpy()], data[~missing].numpy())
    argv = ["impute", tmp_path / "run", "--k", "5", "--limit", "6", "--seed", "1", "--draws", "2"]
    code, _, err = dgm(capsys, *argv, "--out", tmp_path / "d.npz")
    assert code == 1 and "its draws are binary pixels" in err and not (tmp_path / "d.npz").exists()
    levels = ["--objective", "miwae", "--missing-rate", "0.25", "--likelihood", "categorical", *miwae[8:]]
    assert dgm(capsys, "train", "--dataset", "digits", *levels, "--out", tmp_path / "cat")[0] == 0
    argv[1] = tmp_path / "cat"
    monkeypatch.setattr("dgmkit.cli.impute.MAX_DRAWN_VALUES", 767)
    code, _, err = dgm(capsys, *argv, "--out", tmp_path / "d.npz")
    assert code == 1 and "would hold 768 values" in err and not (tmp_path / "d.npz").exists()
    monkeypatch.setattr("dgmkit.cli.impute.MAX_DRAWN_VALUES", 768)
    assert dgm(capsys, *argv, "--out", tmp_path / "d.npz")[0] == 0
    z = np.load(tmp_path / "d.npz")
    assert z["x"].shape == tuple(data.shape) == (6, 1, 8, 8) and z["draws"].shape == (2, 6, 1, 8, 8)
    seen = ~missing.numpy()
    assert all(np.array_equal(d[seen], data.numpy()[seen]) for d in z["draws"])
    assert set(np.unique(z["draws"][:, ~seen])) <= set(range(17))  # draws of the levels
    grids = []
    monkeypatch.setattr("dgmkit.cli.impute.image_grid_png", lambda images, nrow: grids.append((len(images), nrow)) or b"png")
    argv = [
        "impute",
        tmp_path / "run",
        "--k",
        "5",
        "--limit",
        "10",
        "--out",
        tmp_path / "f.npy",
        "--figure",
        tmp_path / "f.png",
    ]
    assert dgm(capsys, *argv)[0] == 0
    assert grids == [(3 * 8, 8)]  # of 10 rows the first 8: observed, imputed and complete, a row each
