"""Out-of-distribution metrics equal scikit-learn's on fixed and random inputs (ties included),
and the typicality test's entropy and threshold are right on Gaussian data of known entropy."""

import io
import json
import math
import shutil

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from dgm_cli import dgm as _dgm
from dgm_cli import refused as _refused
from dgmkit.data.mutation import mutate
from dgmkit.errors import ConfigError, DataError, EvaluationError
from dgmkit.evaluation.ood import auprc, auroc, detection_metrics, fpr_at_tpr, typicality_test
from dgmkit.evaluation.ood_scores import ood_scores, png_code_length
from run_records import edit_metadata


def _sklearn(a, b):
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    s = np.r_[a, b]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)  # every threshold: no collinear point dropped
    return roc_auc_score(y, s), average_precision_score(y, s), fpr[np.argmax(tpr >= 0.95 - 1e-12)]


scores = st.lists(st.integers(-5, 5).map(float), min_size=1, max_size=30)  # small integers: many ties


@settings(max_examples=200, deadline=None)
@given(scores, scores)
@example([-1.0, -2.0], [0.0] * 18 + [-1.0, -2.0])  # 95% TPR at a collinear ROC point, which roc_curve drops by default
def test_metrics_equal_scikit_learn(a, b):
    ours = detection_metrics(torch.tensor(a), torch.tensor(b))
    roc, ap, fpr = _sklearn(a, b)
    assert ours["auroc"] == pytest.approx(roc, abs=1e-12)
    assert ours["auprc"] == pytest.approx(ap, abs=1e-12)
    assert ours["fpr_at_95_tpr"] == pytest.approx(fpr, abs=1e-12)


def test_known_values_and_bad_input():
    assert auroc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 1.0
    assert auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 0.0
    assert auroc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5
    assert auprc(torch.tensor([0.0]), torch.tensor([1.0, 2.0])) == 1.0
    # perfect separation with 58 OOD inputs: the recall steps' rounding summed to 1.0000000000000002, which
    # ood.json's check then refused as no metric in [0, 1]
    assert max(auprc(torch.zeros(3), torch.arange(1.0, n + 1)) for n in range(1, 300)) == 1.0
    assert fpr_at_tpr(torch.tensor([0.0, 5.0]), torch.tensor([1.0, 2.0])) == 0.5
    with pytest.raises(ValueError, match="NaN"):
        auroc(torch.tensor([float("nan")]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="at least one"):
        auroc(torch.tensor([]), torch.tensor([1.0]))


def test_typicality_test_on_gaussian_data_of_known_entropy():
    d, m, alpha = 10, 25, 0.05
    g = torch.Generator().manual_seed(0)

    def nll(n):  # the negative log-density of N(0, I_d) draws under N(0, I_d) itself
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        return 0.5 * d * math.log(2 * math.pi) + 0.5 * x.square().sum(1)

    test = typicality_test(nll(20000), nll(20000), batch_size=m, alpha=alpha, bootstraps=20000, generator=g)
    entropy = 0.5 * d * math.log(2 * math.pi * math.e)
    assert test.entropy == pytest.approx(entropy, abs=3 * math.sqrt(d / 2 / 20000))
    # the batch mean of the NLL has standard deviation sqrt(d / 2 / M); the threshold is its two-sided quantile
    assert test.epsilon == pytest.approx(1.959964 * math.sqrt(d / 2 / m), rel=0.08)
    false_alarms = test.flags(nll(m * 4000)).double().mean().item()
    assert false_alarms == pytest.approx(alpha, abs=0.015)
    # a shifted distribution is flagged nearly always
    shifted = 0.5 * d * math.log(2 * math.pi) + 0.5 * (1.5 * torch.randn(m * 200, d, generator=g)).square().sum(1)
    assert test.flags(shifted).double().mean() > 0.99
    # batches of 4000 (dgm ood --typicality-batch on a large split) are bootstrapped in parts (10000 x M indices
    # were drawn at once: GBs at M in the thousands), the same draws as at once
    t, v = nll(20000), nll(20000)
    big = typicality_test(t, v, batch_size=4000, alpha=alpha, bootstraps=3000, generator=torch.Generator().manual_seed(5))
    idx = torch.randint(20000, (3000, 4000), generator=torch.Generator().manual_seed(5))
    assert big.epsilon == float(torch.quantile((v[idx].mean(1) - t.mean()).abs(), 1 - alpha))


def test_the_typicality_test_refuses_a_nan_nll_rather_than_call_it_typical():
    # |NaN - H| > epsilon is False: an input without a likelihood was said to be in the typical set
    test = typicality_test(torch.randn(100), torch.randn(100), batch_size=2, bootstraps=100)
    assert test.flags(torch.tensor([0.0, 0.0, 50.0, 50.0])).tolist() == [False, True]
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="NaN or inf"):
            test.flags(torch.tensor([0.0, bad, 0.0, 0.0]))


# ----------------------------------------------------------------------------- fixed inputs with ties


def test_metrics_equal_scikit_learn_on_fixed_inputs_with_ties():
    a = np.array([0.1, 0.4, 0.4, 0.35, 0.8, 0.2, 0.2, 0.9, 0.5, 0.5])  # in-distribution
    b = np.array([0.4, 0.8, 0.35, 0.9, 0.9, 1.2, 0.5, 0.05, 0.7, 0.4, 0.6])  # OOD: ties across the classes
    ours = detection_metrics(torch.tensor(a), torch.tensor(b))
    roc, ap, fpr = _sklearn(a, b)
    assert (ours["auroc"], ours["auprc"], ours["fpr_at_95_tpr"]) == pytest.approx((roc, ap, fpr), abs=1e-12)
    # and the pair count itself: 74 of the 110 (in, OOD) pairs ranked right, ties counting a half
    pairs = (b[None, :] > a[:, None]) + 0.5 * (b[None, :] == a[:, None])
    assert pairs.sum() == 74 and ours["auroc"] == pytest.approx(74 / 110, abs=1e-12)


# ----------------------------------------------------------------------------- scores


def _factorized(x: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """log p(x) of images (N, 1, H, W) under independent pixels of distribution pi."""
    return pi.log()[x.long()].flatten(1).sum(1).double()


def test_the_known_failure_and_the_typicality_fix_on_an_exact_model():
    """Pixels of the in-distribution data come from pi (30% background 0, the rest spread); OOD
    images are 95% background: each of them is *more* likely than typical in-distribution data,
    so -log p(x) ranks them in-distribution (AUROC near 0) while typicality flags them."""
    g = torch.Generator().manual_seed(0)
    pi = torch.tensor([0.3] + [0.7 / 16] * 16)
    draw = lambda n, p: torch.multinomial(p, n * 64, replacement=True, generator=g).reshape(n, 1, 8, 8)  # noqa: E731
    ood_pi = torch.tensor([0.95] + [0.05 / 16] * 16)
    lp = {name: _factorized(draw(n, p), pi) for name, n, p in [("in", 400, pi), ("ood", 300, ood_pi)]}
    fit = _factorized(draw(2000, pi), pi), _factorized(draw(2000, pi), pi)
    r = ood_scores(lp["in"], lp["ood"], num_dims=64, typicality_fit=fit, typicality_batch=10)
    assert r.metrics["nll"]["auroc"] < 0.05
    assert r.metrics["typicality"]["auroc"] > 0.95 and r.metrics["typicality_batch"]["auroc"] > 0.99
    entropy = -64 * (pi * pi.log()).sum().item()
    assert r.typicality.entropy == pytest.approx(entropy, rel=0.01)
    assert r.flagged["typicality"]["in"] < 0.05 and r.flagged["typicality_batch"]["ood"] == 1.0


def test_score_arithmetic():
    lp_in, lp_ood = torch.tensor([-10.0, -12.0, -11.0]), torch.tensor([-8.0, -9.0])
    bg = torch.tensor([-11.0, -11.0, -11.0]), torch.tensor([-4.0, -3.0])
    bits = torch.tensor([10.0, 20.0, 30.0]), torch.tensor([1.0, 2.0])
    r = ood_scores(lp_in, lp_ood, num_dims=4, background=bg, code_bits=bits)
    assert torch.equal(r.scores["nll"][1], torch.tensor([8.0, 9.0], dtype=torch.float64))
    # Ren et al.: LLR = log p - log p_bg, small for OOD; the score is its negative
    assert torch.equal(r.scores["likelihood_ratio"][0], torch.tensor([-1.0, 1.0, 0.0], dtype=torch.float64))
    assert torch.equal(r.scores["likelihood_ratio"][1], torch.tensor([4.0, 6.0], dtype=torch.float64))
    # Serra et al.: S = -log2 p(x) - L(x)
    assert torch.allclose(r.scores["complexity"][0], torch.tensor([10, 12, 11]) / math.log(2) - bits[0].double())
    assert r.metrics["likelihood_ratio"]["auroc"] == 1.0 and r.metrics["nll"]["auroc"] == 0.0
    with pytest.raises(ValueError, match="2 and 2 values"):
        ood_scores(lp_in, lp_ood, num_dims=4, background=(torch.zeros(2), torch.zeros(2)))
    with pytest.raises(EvaluationError, match="NaN"):
        ood_scores(torch.tensor([float("nan")]), lp_ood, num_dims=4)


def test_the_histograms_draw_every_score_in_their_bins(monkeypatch):
    """The bins spanned the 0.1% to 99.9% quantiles and a value outside was left out: of 1 input
    against 1, the figure was empty; of 15 against 15, the extremes were missing."""
    import matplotlib.axes

    from dgmkit.evaluation.ood_scores import histogram_png

    drawn = []
    hist = matplotlib.axes.Axes.hist

    def counted(self, x, bins=None, **kwargs):
        counts, edges, patches = hist(self, x, bins=bins, **kwargs)
        drawn.append((len(x), int(np.histogram(x, bins=edges)[0].sum())))
        return counts, edges, patches

    monkeypatch.setattr(matplotlib.axes.Axes, "hist", counted)
    for n in (1, 15):
        drawn.clear()
        r = ood_scores(-torch.arange(n, dtype=torch.float64), -100 - torch.arange(n, dtype=torch.float64), num_dims=4)
        histogram_png(r)
        assert drawn and all(shown == total for total, shown in drawn), drawn


def test_png_code_length_is_the_size_of_a_lossless_png():
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    noise = torch.randint(256, (3, 1, 28, 28), generator=g, dtype=torch.uint8)
    flat = torch.zeros(3, 1, 28, 28, dtype=torch.uint8)
    bits = png_code_length(torch.cat([noise, flat]))
    buf = io.BytesIO()
    Image.fromarray(noise[0, 0].numpy()).save(buf, format="PNG", optimize=True)
    assert bits[0] == 8 * len(buf.getvalue())
    buf.seek(0)
    assert np.array_equal(np.asarray(Image.open(buf)), noise[0, 0].numpy())  # lossless
    assert bits[:3].min() > 28 * 28 * 8 and bits[3:].max() < 28 * 28  # noise costs >= 8 bits a pixel; flat little
    binary = png_code_length((noise > 127).to(torch.uint8))  # 1-bit PNGs
    assert (binary < bits[:3] / 4).all()
    with pytest.raises(ValueError, match="integer images"):
        png_code_length(torch.rand(2, 1, 4, 4))
    # an image's length does not depend on the images coded with it where the data's kind is given
    bits01 = (noise[:1] > 127).to(torch.uint8)
    alone, beside = png_code_length(bits01, binary=False), png_code_length(torch.cat([bits01, noise[1:2]]), binary=False)
    assert alone[0] == beside[0] and alone[0] > png_code_length(bits01)[0]  # grey, not 1-bit
    with pytest.raises(ValueError, match="binary=True"):
        png_code_length(noise, binary=True)


# ----------------------------------------------------------------------------- mutation (Ren et al.)


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_mutation_changes_about_mu_of_the_pixels_and_is_seeded(rate):
    x = torch.randint(256, (2000, 1, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    y = mutate(x, rate, 256, torch.Generator().manual_seed(5))
    n = x.numel()
    changed = (y != x).double().mean().item()
    expected = rate * (1 - 1 / 256)  # a replacement may draw the value it replaces
    assert changed == pytest.approx(expected, abs=4 * math.sqrt(expected / n))
    assert y.dtype == x.dtype and int(y.max()) <= 255
    assert torch.equal(y, mutate(x, rate, 256, torch.Generator().manual_seed(5)))
    assert not torch.equal(y, mutate(x, rate, 256, torch.Generator().manual_seed(6)))
    # the replacements are uniform over the levels
    new = y[y != x].double()
    assert new.mean().item() == pytest.approx(127.5, abs=4 * 74 / math.sqrt(len(new)))
    assert torch.equal(mutate(x, 0.0, 256), x)
    with pytest.raises(ValueError, match="quantized"):
        mutate(x, 0.1, None)


def test_mutation_leaves_missing_entries_missing():
    """Data with holes (NaN, MIWAE's): a missing entry holds no value to replace. A level drawn
    into it made an observation of nothing, and raised the share of observed values drawn from the
    uniform above the rate asked (0.2 at 30% missing: 0.2 / 0.76, about 0.26)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(256, (4000, 16), generator=g).float()
    holes = torch.rand(x.shape, generator=g) < 0.3
    x[holes] = float("nan")
    y = mutate(x, 1.0, 256, torch.Generator().manual_seed(1))
    assert torch.equal(torch.isnan(y), holes)
    assert torch.isfinite(y[~holes]).all() and int(y[~holes].max()) <= 255 and (y[~holes] == y[~holes].round()).all()
    y = mutate(x, 0.2, 256, torch.Generator().manual_seed(2))
    assert torch.equal(torch.isnan(y), holes)
    changed = (y[~holes] != x[~holes]).double().mean().item()
    n = int((~holes).sum())
    assert changed == pytest.approx(0.2 * (1 - 1 / 256), abs=4 * math.sqrt(0.2 / n))


class _Recording:
    """An objective that records the batches it is given, and otherwise is the one it wraps."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, model, x, beta):
        if model.training:  # not validation
            self.batches.append(x.clone())
        return self.inner(model, x, beta)


def test_training_mutates_training_batches_only():
    from dgmkit.config import RunConfig
    from dgmkit.config.run import build_model, trainer_options
    from dgmkit.data import DataTransform, load_dataset
    from dgmkit.training import Mutation, Trainer

    ds = load_dataset("digits")
    cfg = RunConfig.of(model="arm", likelihood="categorical", channels=4, arm_layers=1, epochs=1, mutation_rate=1.0)
    t = DataTransform("integers", 17)
    objective = _Recording(cfg.model.training_objective())
    trainer = Trainer(
        build_model(cfg, (1, 8, 8), 17), objective, ds.train, t, valid=ds.valid, progress=False, **trainer_options(cfg)
    )
    assert trainer.batches.mutation_rate == 1.0
    trainer.fit()
    seen = torch.cat(objective.batches).double()
    # mu = 1: every pixel is a uniform level (mean 8), where the digits' pixels have mean ~4.9
    assert seen.mean().item() == pytest.approx(8.0, abs=0.1) and ds.train.x.double().mean() < 5.5
    assert torch.equal(trainer._valid_x, t(ds.valid.x))  # held-out inputs as they are
    with pytest.raises(ConfigError, match="quantized"):
        Trainer(
            build_model(cfg, (1, 8, 8), 17), objective, ds.train, DataTransform("continuous", None), parts=[Mutation(0.1)]
        )


# ----------------------------------------------------------------------------- dgm ood and dgm train --mutation-rate


_ARM = ["--model", "arm", "--likelihood", "categorical", "--channels", "8", "--arm-layers", "2", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny PixelCNN on the digits (8x8, 17 levels), its background model, and OOD files."""
    from dgmkit.cli.main import main

    root = tmp_path_factory.mktemp("ood")
    assert main(["train", "--dataset", "digits", *_ARM, "--epochs", "4", "--out", str(root / "model")]) == 0
    bg = ["--mutation-rate", "0.2", "--weight-decay", "1e-4"]
    assert main(["train", "--dataset", "digits", *_ARM, "--epochs", "2", *bg, "--out", str(root / "bg")]) == 0
    rng = np.random.default_rng(0)
    np.save(root / "noise.npy", rng.integers(0, 17, size=(400, 8, 8)))  # 17 levels: uniform noise
    np.save(root / "big.npy", rng.integers(0, 17, size=(100, 10, 10)))
    np.save(root / "bytes.npy", rng.integers(0, 256, size=(100, 8, 8)).astype(np.uint8))  # 256 levels
    return root


def test_ood_end_to_end(runs, tmp_path, capsys):
    hist, out_json = tmp_path / "hist.png", tmp_path / "ood.json"
    argv = ["ood", runs / "model", "--ood", runs / "noise.npy", "--background", runs / "bg", "--typicality-batch", "5"]
    code, out, err = _dgm(capsys, *argv, "--out", hist, "--json", out_json)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["score", "mean"] and "FPR@95%TPR" in lines[0]
    assert "as bits/dim" in out and "typicality, batches of M=5" in out and "L(x) = the bits of each image as a PNG" in out
    assert "typicality of batches: 60 in-distribution and 8 OOD batches from one shuffle of each side" in out  # 300/5, 40/5
    result = json.loads(out_json.read_text())
    assert set(result["scores"]) == {"nll", "likelihood_ratio", "typicality", "typicality_batch", "complexity"}
    assert result["n_in"] == 300 and result["n_ood"] == 40  # the digits' test split; the file's 10% test split
    assert "noise.npy is split as for training (80/10/10, seeded): its test split holds 40 rows of it" in out
    assert result["background_mutation_rate"] == 0.2 and result["typicality_test"]["batch_size"] == 1
    assert "background " + str(runs / "bg") + " (mutation rate 0.2; its log p(x): exact)" in out
    # uniform noise is far less likely than the digits under a model of the digits
    assert result["scores"]["nll"]["auroc"] > 0.95
    nll = result["scores"]["nll"]
    assert result["bits_per_dim"]["in"] == pytest.approx(nll["mean_in"] / (64 * math.log(2)), rel=1e-9)  # nats to bits
    row = next(s for s in lines if s.startswith("-log p(x)"))
    assert f"{nll['auroc']:.4f}" in row and f"{nll['mean_in']:.2f}" in row
    assert hist.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    kept = json.loads((runs / "model" / "ood.json").read_text())["results"]
    assert list(kept.values())[-1]["scores"] == result["scores"]
    import csv

    with open(runs / "model" / "ood-scores.csv") as f:  # every input's scores beside the summary
        rows = list(csv.DictReader(f))
    assert [r["set"] for r in rows] == ["in"] * 300 + ["ood"] * 40
    assert [int(r["index"]) for r in rows[:300]] == list(range(300))
    nll_in = [float(r["nll"]) for r in rows if r["set"] == "in"]
    assert sum(nll_in) / 300 == pytest.approx(result["scores"]["nll"]["mean_in"], rel=1e-9)
    assert {"nll", "likelihood_ratio", "typicality", "complexity"} <= set(rows[0])
    # the same protocol again replaces its result; another --ood split adds one
    assert _dgm(capsys, *argv)[0] == 0
    code, out, _ = _dgm(capsys, *argv, "--ood-split", "valid", "--limit", "30")
    assert code == 0 and "in-sample" not in out and "average precision" in out
    code, out, _ = _dgm(capsys, *argv, "--in", "valid", "--limit", "30")  # the split epsilon is fitted on
    assert code == 0 and "typicality is in-sample here: epsilon was fitted on the valid split" in out
    assert len(json.loads((runs / "model" / "ood.json").read_text())["results"]) == 3
    # existing outputs are not replaced without --force
    _refused(*_dgm(capsys, *argv, "--json", out_json)[::2], "exists")
    assert _dgm(capsys, *argv, "--json", out_json, "--force")[0] == 0


def test_every_row_of_an_ood_file_is_scored_with_ood_split_all(runs, tmp_path, capsys):
    """A file of OOD inputs is split as for training, its test split a tenth of it (said in a
    note); --ood-split all scores every row, in the file's order: an index is the file's row (it
    was the place in the shuffled train, valid and test splits one after the other)."""
    import csv

    from dgmkit.config import load_run
    from dgmkit.data import load_dataset
    from dgmkit.evaluation.ood_scores import log_likelihoods

    model = tmp_path / "model"
    shutil.copytree(runs / "model", model)
    code, out, err = _dgm(capsys, "ood", model, "--ood", runs / "noise.npy", "--limit", "10")
    assert code == 0, err  # (the note counted the --limit subset as the split's rows)
    assert "its test split holds 40 rows of it (--limit scores 10); --ood-split all scores every row" in out
    # the inputs scored are said as a random subset (they were "digits test (10 inputs)", as if the split held 10)
    assert "in: digits test (a random 10 of 300 inputs); OOD: " in out and " test (a random 10 of 40 inputs);" in out
    with open(model / "ood-scores.csv") as f:
        drawn = [r for r in csv.DictReader(f) if r["set"] == "ood"]  # 10 of the test split, by their file row too
    code, out, err = _dgm(capsys, "ood", model, "--ood", runs / "noise.npy", "--ood-split", "all")
    assert code == 0, err
    assert "noise.npy all (400 inputs)" in out and "split as for training" not in out
    with open(model / "ood-scores.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["set"] == "ood"]
    assert [(r["split"], int(r["index"])) for r in rows] == [("all", i) for i in range(400)]
    x = torch.from_numpy(np.load(runs / "noise.npy"))[:, None]  # the file's rows as they stand
    noise = load_dataset(str(runs / "noise.npy"))
    assert torch.equal(noise.test.x, x[noise.test.rows]) and not torch.equal(noise.test.rows, noise.test.rows.sort()[0])
    got = torch.tensor([float(r["nll"]) for r in rows], dtype=torch.float64)
    torch.testing.assert_close(got, -log_likelihoods(load_run(model).model, x).double())
    assert [int(r["file_row"]) for r in rows] == list(range(400))
    assert [int(r["file_row"]) for r in drawn] == [int(noise.test.rows[int(r["index"])]) for r in drawn]
    torch.testing.assert_close(
        torch.tensor([float(r["nll"]) for r in drawn], dtype=torch.float64), got[[int(r["file_row"]) for r in drawn]]
    )


def test_ood_results_are_kept_by_the_content_of_the_ood_file_not_its_name_as_typed(runs, tmp_path, capsys, monkeypatch):
    """ood.json keyed a file's result on --ood as typed: another file of that name in another folder
    replaced the first's result, and one file named two ways made two results. A file of fewer
    levels than the run's (values 0..12 of 17) was refused, though dgm score takes it."""
    model = tmp_path / "model"
    shutil.copytree(runs / "model", model)
    (model / "ood.json").unlink(missing_ok=True)
    rng = np.random.default_rng(1)
    for folder, high in (("a", 17), ("b", 13)):  # b: values 0..12 only
        (tmp_path / folder).mkdir()
        np.save(tmp_path / folder / "x.npy", rng.integers(0, high, size=(60, 8, 8)))
    argv = ["--ood-split", "all", "--typicality-batch", "1"]
    for cwd in ("a", "b", "a"):
        monkeypatch.chdir(tmp_path / cwd)
        code, _, err = _dgm(capsys, "ood", model, "--ood", "x.npy", *argv)
        assert code == 0, err
    code, _, err = _dgm(capsys, "ood", model, "--ood", tmp_path / "a" / "x.npy", *argv)  # the same file, by its full path
    assert code == 0, err
    kept = json.loads((model / "ood.json").read_text())["results"]
    assert len(kept) == 2 and {r["ood_file"] for r in kept.values()} == {str(tmp_path / f / "x.npy") for f in "ab"}
    assert all(len(r["ood_sha256"]) == 64 for r in kept.values())
    np.save(
        tmp_path / "a" / "x.npy", rng.integers(0, 17, size=(60, 8, 8))
    )  # other data at the same place: a result of its own
    assert _dgm(capsys, "ood", model, "--ood", tmp_path / "a" / "x.npy", *argv)[0] == 0
    assert len(json.loads((model / "ood.json").read_text())["results"]) == 3
    # a result that dgm ood could not have written is refused by name, the file left as it is (it was carried on)
    results = json.loads((model / "ood.json").read_text())["results"]
    real = next(iter(results.values()))
    above_1 = {**real, "scores": {**real["scores"], "nll": {**real["scores"]["nll"], "auroc": 1.5}}}
    for forged in ({"scores": {"nll": {"auroc": 0.99}}}, {**real, "seed": None, "limit": None, "subsets": None}, above_1):
        (model / "ood.json").write_text(json.dumps({"results": {**results, "in test | fake": forged}}))
        before = (model / "ood.json").read_bytes()
        code, _, err = _dgm(capsys, "ood", model, "--ood", tmp_path / "a" / "x.npy", *argv)
        _refused(code, err, "not an ood.json of dgmkit", "'in test | fake'")
        assert (model / "ood.json").read_bytes() == before
    (model / "ood.json").write_text(json.dumps({"results": results}))
    np.save(tmp_path / "binary.npy", rng.integers(0, 2, size=(60, 8, 8)))
    code, out, err = _dgm(capsys, "ood", model, "--ood", tmp_path / "binary.npy", *argv)
    assert code == 0 and "holds only the values 0 and 1 of the run's levels 0..16" in out, err
    # all zeros hold no 1 (as dgm score: no note); whole numbers below 0 are no "continuous values"
    np.save(tmp_path / "zeros.npy", np.zeros((60, 8, 8), dtype=np.uint8))
    code, out, err = _dgm(capsys, "ood", model, "--ood", tmp_path / "zeros.npy", *argv)
    assert code == 0 and "holds only the values" not in out, err
    np.save(tmp_path / "negative.npy", rng.integers(-3, 17, size=(60, 8, 8)).astype(np.int16))
    code, _, err = _dgm(capsys, "ood", model, "--ood", tmp_path / "negative.npy", *argv)
    _refused(code, err, "images of shape (1, 8, 8) with values in [-3, 16], but", "with 17 levels")
    code, _, err = _dgm(capsys, "ood", model, "--ood", "mnist", "--ood-data-dir", tmp_path / "nowhere", *argv)
    _refused(code, err, "another --ood-data-dir")
    assert "another --data-dir" not in err


def test_ood_json_and_the_per_input_scores_are_written_as_one_pair_under_the_results_lock(
    runs, tmp_path, monkeypatch, capsys
):
    """Two calls at once could leave ood-scores.csv of one beside ood.json's latest result of the
    other: the scores were written after the lock was let go."""
    import dgmkit.cli.ood as ood
    from dgmkit import _lock

    model = tmp_path / "model"
    shutil.copytree(runs / "model", model)
    held_at_write: list[bool] = []
    write = ood.atomic_write_bytes

    def checked_write(path, data):
        try:
            _lock.acquire(model / ".ood.lock", wait=False).release()
            held_at_write.append(False)
        except _lock.Timeout:
            held_at_write.append(True)
        return write(path, data)

    monkeypatch.setattr(ood, "atomic_write_bytes", checked_write)
    code, out, err = _dgm(capsys, "ood", model, "--ood", runs / "noise.npy", "--limit", "20")
    assert code == 0, err
    assert held_at_write == [True]
    assert "20 in-distribution inputs and 20 OOD inputs: each OOD input carries 1/20 of the AUROC" in out


def test_ood_scores_agree_with_the_python_api(runs, capsys):
    from dgmkit.config import load_run
    from dgmkit.data import load_dataset
    from dgmkit.evaluation.ood_scores import log_likelihoods

    argv = ["ood", runs / "model", "--ood", runs / "noise.npy", "--ood-split", "test", "--json", runs / "api.json"]
    code, _, err = _dgm(capsys, *argv)
    assert code == 0, err
    cli = json.loads((runs / "api.json").read_text())
    run = load_run(runs / "model")
    x_in = run.transform(load_dataset("digits").test.x)
    x_ood = run.transform(load_dataset(str(runs / "noise.npy")).test.x)
    r = ood_scores(log_likelihoods(run.model, x_in), log_likelihoods(run.model, x_ood), num_dims=64)
    assert r.metrics["nll"]["auroc"] == pytest.approx(cli["scores"]["nll"]["auroc"], abs=1e-12)
    assert r.scores["nll"][0].mean().item() == pytest.approx(cli["scores"]["nll"]["mean_in"], rel=1e-9)


def test_the_typicality_test_of_dgm_ood_is_fitted_on_the_training_and_held_out_splits(runs, tmp_path, capsys):
    """H is the mean NLL of the run's training inputs and epsilon is bootstrapped from its held-out
    inputs (the default --fit-limit of 10000 takes the digits' 1197 and 300 whole), not from the
    scored --in split (test) nor with the two swapped: the CLI's tests equal those fitted through
    the Python API on those splits, and the fits on the other splits differ from them."""
    from dgmkit.config import load_run
    from dgmkit.data import load_dataset
    from dgmkit.evaluation.ood_scores import log_likelihoods

    model = tmp_path / "model"
    shutil.copytree(runs / "model", model)  # the run's ood.json keeps the results of the other tests
    argv = ["ood", model, "--ood", runs / "noise.npy", "--ood-split", "test", "--typicality-batch", "5"]
    code, out, err = _dgm(capsys, *argv, "--json", tmp_path / "o.json")
    assert code == 0, err
    cli = json.loads((tmp_path / "o.json").read_text())
    assert cli["in_split"] == "test" and cli["fit_limit"] == 10000
    assert cli["typicality_fit"] == {"train": 1197, "train_of": 1197, "valid": 300, "valid_of": 300}
    assert "nats (mean NLL of 1197 training inputs), epsilon = " in out and "quantile on 300 held-out inputs)" in out
    # a --fit-limit subset is said as one (H was "the mean training NLL" of however few inputs it took)
    code, out, err = _dgm(capsys, *argv, "--limit", "10", "--fit-limit", "3")
    assert code == 0, err
    assert "nats (mean NLL of a random 3 of 1197 training inputs), epsilon = " in out
    assert "quantile on a random 3 of 300 held-out inputs)" in out
    run = load_run(model)
    digits = load_dataset("digits")
    lp = {s: log_likelihoods(run.model, run.transform(digits.split(s).x)) for s in ("train", "valid", "test")}
    lp_ood = log_likelihoods(run.model, run.transform(load_dataset(str(runs / "noise.npy")).test.x))

    def fitted(train: str, valid: str) -> dict:
        r = ood_scores(lp["test"], lp_ood, num_dims=64, typicality_fit=(lp[train], lp[valid]), typicality_batch=5)
        return r.to_dict()

    api = fitted("train", "valid")
    assert api["typicality_test"]["entropy"] == pytest.approx(-lp["train"].double().mean().item(), rel=1e-12)
    for name in ("typicality_test", "typicality_batch_test"):
        for key in ("entropy", "epsilon"):
            assert cli[name][key] == pytest.approx(api[name][key], rel=1e-9), (name, key)
    for train, valid in (("valid", "train"), ("test", "valid"), ("train", "test")):
        other = fitted(train, valid)["typicality_test"]
        assert other != pytest.approx(api["typicality_test"], rel=1e-6), (train, valid)


def test_ood_refusals(runs, tmp_path, capsys):
    from dgmkit.cli.main import main

    model = runs / "model"
    _refused(*_dgm(capsys, "ood", model, "--ood", runs / "big.npy")[::2], "shape (1, 10, 10)", "(1, 8, 8)")
    _refused(*_dgm(capsys, "ood", model, "--ood", runs / "bytes.npy")[::2], "256 levels", "17 levels")
    holes = np.random.default_rng(1).integers(0, 17, size=(50, 8, 8)).astype(np.float32)
    holes[:, 2, 2] = np.nan  # in every row, so in whichever split is scored
    holes[::2, 0] = np.nan  # log p(x_o) of different observed entries are not comparable
    np.save(tmp_path / "holes.npy", holes)
    _refused(*_dgm(capsys, "ood", model, "--ood", tmp_path / "holes.npy")[::2], "inputs have missing entries (NaN)")
    _refused(*_dgm(capsys, "ood", model, "--ood", "digits", "--iw-samples", "5")[::2], "exact log-likelihood")
    _refused(*_dgm(capsys, "ood", model, "--ood", "digits", "--out", tmp_path / "a.jpg")[::2], ".png")
    # the run's own data as --ood: in-distribution inputs that every score would tell apart by chance (AUROC 0.5)
    _refused(*_dgm(capsys, "ood", model, "--ood", "digits")[::2], "holds the data", "name other data")
    ae = tmp_path / "ae"
    assert main(["train", "--dataset", "digits", "--model", "ae", "--epochs", "1", "--quiet", "--out", str(ae)]) == 0
    _refused(*_dgm(capsys, "ood", ae, "--ood", "digits")[::2], "defines no density", "needs a model with a likelihood")
    vq = tmp_path / "vq"  # one code grid per image: k draws are k copies of it
    vq_args = ["--model", "vqvae", "--codes", "8", "--code-dim", "2", "--vq-width", "8", "--epochs", "1", "--quiet"]
    assert main(["train", "--dataset", "digits", *vq_args, "--out", str(vq)]) == 0
    said = _dgm(capsys, "ood", vq, "--ood", runs / "noise.npy", "--iw-samples", "5")[::2]
    _refused(*said, "--iw-samples: the posterior of", "is a point mass", "every draw is the same")
    said = _dgm(capsys, "ood", model, "--ood", runs / "noise.npy", "--background", vq, "--iw-samples", "5")[::2]
    _refused(*said, "--iw-samples: the posterior of", "is a point mass")  # (the exact model has nothing to sample either)
    _refused(*_dgm(capsys, "ood", model, "--ood", "digits", "--background", ae)[::2], "--background", "no density")
    itself = tmp_path / "self-copy"  # the run itself as its background: a ratio of 0 for every input
    shutil.copytree(model, itself)
    _refused(*_dgm(capsys, "ood", model, "--ood", runs / "noise.npy", "--background", itself)[::2], "same weights")
    # the same weights in a file of other bytes (as the same run's other checkpoint file can be)
    edit_metadata(itself / "best.safetensors", lambda m: m.update(note="a copy"))
    _refused(*_dgm(capsys, "ood", model, "--ood", runs / "noise.npy", "--background", itself)[::2], "same weights")
    binary = tmp_path / "binary"
    flags = ["--model", "arm", "--likelihood", "bernoulli", "--binarize", "dynamic", "--channels", "4", "--arm-layers", "1"]
    assert main(["train", "--dataset", "digits", *flags, "--epochs", "1", "--quiet", "--out", str(binary)]) == 0
    _refused(*_dgm(capsys, "ood", model, "--ood", "digits", "--background", binary)[::2], "different inputs")
    other = tmp_path / "other"  # a background model of other data: here of the OOD inputs themselves
    assert main(["train", "--dataset", str(runs / "noise.npy"), *_ARM, "--epochs", "1", "--out", str(other)]) == 0
    _refused(*_dgm(capsys, "ood", model, "--ood", runs / "noise.npy", "--background", other)[::2], "the OOD dataset itself")
    (tmp_path / "b").mkdir()  # other images under the same file name: told apart by content
    np.save(tmp_path / "b" / "noise.npy", np.random.default_rng(2).integers(0, 17, size=(100, 8, 8)))
    argv = ["ood", model, "--ood", tmp_path / "b" / "noise.npy", "--background", other, "--json", tmp_path / "o.json"]
    code, out, _ = _dgm(capsys, *argv)
    assert code == 0 and "trained on other data" in out and "not Ren et al.'s" in out
    assert json.loads((tmp_path / "o.json").read_text())["background_data"] == "noise.npy"
    # a background run from before data digests tells data apart by name alone: that name is refused
    from run_records import rewrite_records

    old = tmp_path / "old"
    shutil.copytree(other, old)
    rewrite_records(old, lambda r: {**r, "data": {k: v for k, v in r["data"].items() if k != "sha256"}})
    argv = ["ood", model, "--ood", tmp_path / "b" / "noise.npy", "--background", old]
    _refused(*_dgm(capsys, *argv)[::2], "trained on noise.npy, the OOD dataset itself")
    # a background model of another space: no likelihood ratio
    big = tmp_path / "big"
    assert main(["train", "--dataset", str(runs / "big.npy"), *_ARM, "--epochs", "1", "--out", str(big)]) == 0
    _refused(*_dgm(capsys, "ood", model, "--ood", "digits", "--background", big)[::2], "[1, 10, 10] with 17", "one space")
    gauss = tmp_path / "gauss"  # of continuous values: said so, not "None levels"
    np.save(tmp_path / "floats.npy", np.random.default_rng(3).random((100, 8, 8)).astype(np.float32))
    flags = ["--likelihood", "gaussian", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet"]
    assert main(["train", "--dataset", str(tmp_path / "floats.npy"), *flags, "--out", str(gauss)]) == 0
    _refused(*_dgm(capsys, "ood", model, "--ood", "digits", "--background", gauss)[::2], "8, 8] with continuous values, but")
    # a foreign ood.json in the run folder is refused before any work, and kept
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    (copy / "ood.json").write_text("my notes")
    _refused(*_dgm(capsys, "ood", copy, "--ood", "digits")[::2], "not an ood.json of dgmkit")
    assert (copy / "ood.json").read_text() == "my notes"


def test_a_shape_refusal_calls_a_table_s_rows_rows_and_images_images(runs, tmp_path, capsys):
    """The words followed the run (a table's run called the digits rows; an image run called iris's rows images)."""
    _refused(*_dgm(capsys, "ood", runs / "model", "--ood", "iris")[::2], "--ood iris: rows of shape (1, 1, 4)")
    run = tmp_path / "iris"
    flags = ["--likelihood", "gaussian", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet"]
    assert _dgm(capsys, "train", "--dataset", "iris", *flags, "--out", run)[0] == 0
    _refused(*_dgm(capsys, "ood", run, "--ood", "digits")[::2], "--ood digits: images of shape (1, 8, 8) with 17 levels")


def test_ood_data_dir_is_refused_where_ood_is_read_from_no_folder(runs, tmp_path, capsys):
    """--ood-data-dir with a data file or a dataset read from no folder was left unread, silently."""
    model = runs / "model"
    for ood, read in ((runs / "noise.npy", "from its path"), ("digits-4x4", "from no folder")):
        code, _, err = _dgm(capsys, "ood", model, "--ood", ood, "--ood-data-dir", tmp_path)
        _refused(code, err, f"--ood {ood} is read {read}: leave out --ood-data-dir")
    assert not (tmp_path / "ood.json").exists()


def test_mutation_rate_is_refused_where_it_does_not_apply(tmp_path, capsys):
    ppca = ["train", "--model", "ppca", "--dataset", "digits", "--mutation-rate", "0.2", "--out", tmp_path / "p"]
    _refused(*_dgm(capsys, *ppca)[::2], "mutation_rate has no meaning")
    flow = ["train", "--model", "flow", "--dataset", "two-moons", "--epochs", "1", "--quiet", "--out", tmp_path / "f"]
    _refused(*_dgm(capsys, *flow, "--mutation-rate", "0.2")[::2], "needs quantized data")
    assert not (tmp_path / "f").exists()
    _refused(*_dgm(capsys, *flow, "--mutation-rate", "1.5")[::2], "mutation_rate")


def test_mutation_training_resumes_where_the_uninterrupted_run_ends(tmp_path, capsys):
    from dgmkit.training.checkpoint import load_checkpoint

    flags = ["train", "--dataset", "digits", *_ARM, "--mutation-rate", "0.3", "--batch-size", "200"]
    assert _dgm(capsys, *flags, "--epochs", "2", "--out", tmp_path / "full")[0] == 0
    assert _dgm(capsys, *flags, "--epochs", "1", "--out", tmp_path / "part")[0] == 0
    assert _dgm(capsys, *flags, "--epochs", "2", "--out", tmp_path / "part", "--resume")[0] == 0
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.safetensors")["model"] for d in ("full", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (
        _dgm(
            capsys, *[f for f in flags if f not in ("--mutation-rate", "0.3")], "--epochs", "2", "--out", tmp_path / "plain"
        )[0]
        == 0
    )
    c = load_checkpoint(tmp_path / "plain" / "checkpoint.safetensors")["model"]
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the mutation changed the training


def test_the_note_says_what_the_background_log_p_is():
    """A ratio against a background whose log p(x) is a one-draw bound (a flow on dequantized
    data) or importance-sampled says so; results kept before the field existed still print."""
    from dgmkit.cli.ood import _notes

    r = {"dataset": "d", "in_split": "test", "n_in": 2, "ood": "o", "ood_split": "test", "n_ood": 2,
         "estimate": "exact", "transform": "integers", "iw_samples": 0, "typicality_batch": 1, "scores": {},
         "complexity_note": "none", "background": "bg", "background_mutation_rate": 0.2}  # fmt: skip
    assert any(n.endswith("(mutation rate 0.2)") for n in _notes(r))
    r |= {"background_estimate": "exact", "background_transform": "dequantize", "background_iw_samples": 0}
    assert any("its log p(x): a one-draw estimate of a lower bound (uniform dequantization))" in n for n in _notes(r))
    r |= {"background_estimate": "importance-sampled", "background_transform": "binary", "background_iw_samples": 50}
    assert any("its log p(x): importance-sampled (k=50))" in n for n in _notes(r))


def test_ood_json_never_replaces_what_the_command_reads_or_its_figure(runs, tmp_path, capsys):
    """--json --force named the --ood file, the background run's config.json or the figure: the
    first two were replaced by the JSON, the last by the figure after it. All are refused before
    any work (--json names a .json file), and a foreign ood-scores.csv in the run folder is
    refused, not replaced."""
    argv = ["ood", runs / "model", "--ood", runs / "noise.npy", "--background", runs / "bg", "--limit", "20"]
    before = {p: p.read_bytes() for p in (runs / "noise.npy", runs / "bg" / "config.json")}
    for target, needle in (
        (runs / "noise.npy", "--json must name a .json file"),
        (runs / "bg" / "config.json", "a file of the run"),
        (tmp_path / "o.txt", "--json must name a .json file"),
    ):
        code, _, err = _dgm(capsys, *argv, "--json", target, "--force")
        _refused(code, err, needle)
    code, _, err = _dgm(capsys, *argv, "--json", tmp_path / "x.png", "--out", tmp_path / "x.png", "--force")
    _refused(code, err, "--json must name a .json file")
    _refused(*_dgm(capsys, *argv, "--force")[::2], "--force replaces --out or --json where they exist, and neither is")
    assert all(p.read_bytes() == b for p, b in before.items()) and not (tmp_path / "x.png").exists()
    assert not (tmp_path / "o.txt").exists()
    scores = runs / "model" / "ood-scores.csv"
    kept = scores.read_bytes() if scores.exists() else None  # (the module's runs are shared)
    try:
        for notes in (b"my,own,notes\n", b"\xff\xfe binary notes"):  # (the second is no text: it raised)
            scores.write_bytes(notes)
            code, _, err = _dgm(capsys, *argv)
            _refused(code, err, "ood-scores.csv of dgmkit", "move it away")
            assert scores.read_bytes() == notes
    finally:
        scores.unlink()
        if kept is not None:
            scores.write_bytes(kept)


def test_ood_rows_of_a_table_are_read_by_the_run_s_columns_not_standardized_by_their_own(tmp_path, capsys):
    """Iris shifted by 2 cm: read by its own means and sds the shift vanished (the CSV's -log p(x)
    178.6 nats against 191.5 for the same rows standardized by iris's statistics)."""
    import csv

    import sklearn.datasets

    from dgmkit.cli.main import main

    run = tmp_path / "ppca"
    assert main(["train", "--dataset", "iris", "--model", "ppca", "--latent-dim", "2", "--quiet", "--out", str(run)]) == 0
    iris = sklearn.datasets.load_iris()
    shifted = iris.data[:100] + 2.0
    with open(tmp_path / "shift.csv", "w", newline="") as f:
        csv.writer(f).writerows([iris.feature_names, *shifted.tolist()])
    np.save(tmp_path / "shift.npy", ((shifted - iris.data.mean(0)) / iris.data.std(0)).astype(np.float32))
    means = []
    for name in ("shift.csv", "shift.npy"):
        capsys.readouterr()
        assert main(["ood", str(run), "--ood", str(tmp_path / name), "--json", str(tmp_path / f"{name}.json")]) == 0
        out = capsys.readouterr().out
        assert ("taken to hold values as the model sees them" in out) == name.endswith(".npy")
        assert "log p(x) of a table: its 4 numeric columns (sepal length (cm), " in out  # (standardized, said)
        means.append(json.loads((tmp_path / f"{name}.json").read_text()))
    a, b = (m["scores"]["nll"]["mean_ood"] for m in means)
    assert a == pytest.approx(b, rel=1e-4)
    assert a > 5 * means[0]["scores"]["nll"]["mean_in"]  # the shift is seen


def test_ood_rows_for_a_table_run_whose_file_moved_are_read_by_its_columns_from_data(tmp_path, capsys):
    """--data names the run's table at its new path: OOD rows from a .csv were refused there ("no
    such data file ..., if it moved, --data PATH", with --data given), and an array was scored
    without the note that says it is taken in the model's encoding."""
    from dgmkit.cli.main import main

    rows = np.random.default_rng(0).normal(size=(120, 3))
    (tmp_path / "t.csv").write_text("a,b,c\n" + "".join(f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f}\n" for r in rows))
    (tmp_path / "o.csv").write_text("a,b,c\n" + "".join(f"{r[0] + 3:.4f},{r[1]:.4f},{r[2]:.4f}\n" for r in rows[:40]))
    np.save(tmp_path / "o.npy", (rows[:40] + 3).astype(np.float32))
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path / "t.csv"), "--model", "ppca", "--latent-dim", "1", "--quiet",
                 "--out", str(run)]) == 0  # fmt: skip
    (tmp_path / "t.csv").rename(tmp_path / "moved.csv")
    for ood in ("o.csv", "o.npy"):
        capsys.readouterr()
        code, out, err = _dgm(capsys, "ood", run, "--ood", tmp_path / ood, "--data", tmp_path / "moved.csv")
        assert code == 0, err
        assert ("taken to hold values as the model sees them" in out and "(a, b, c)" in out) == (ood == "o.npy")
    _refused(*_dgm(capsys, "ood", run, "--ood", tmp_path / "o.csv")[::2], "no such data file", "--data PATH")


def test_the_typicality_test_flags_a_statistic_strictly_above_epsilon():
    from dgmkit.evaluation.ood import TypicalityTest

    one = TypicalityTest(entropy=10.0, epsilon=2.0, batch_size=1, alpha=0.01)
    nll = torch.tensor([12.0, 8.0, 12.5, 10.0, 7.5])
    assert one.flags(nll).tolist() == [False, False, True, False, True]  # |NLL - H| = 2 is inside the typical set
    two = TypicalityTest(entropy=10.0, epsilon=1.0, batch_size=2, alpha=0.01)
    assert two.statistic(nll).tolist() == [0.0, 1.25] and two.flags(nll).tolist() == [False, True]  # 7.5 left over


def test_the_typicality_fit_takes_h_from_training_and_epsilon_from_held_out_nlls():
    """Training NLLs 1, 2, 3 (H = 2) and held-out NLLs all 10: every bootstrap statistic is
    |10 - 2| = 8, so epsilon is 8; ood_scores reads log p, whose negatives are these NLLs."""
    t = typicality_test(torch.tensor([1.0, 2.0, 3.0]), torch.full((4,), 10.0), batch_size=1, bootstraps=50)
    assert (t.entropy, t.epsilon) == (2.0, 8.0)
    lp_in, lp_ood = torch.tensor([-10.0, -12.0, -11.0, -2.0]), torch.tensor([-8.0, -9.0, -30.0])
    fit = (-torch.tensor([1.0, 2.0, 3.0]), torch.full((4,), -10.0))
    r = ood_scores(lp_in, lp_ood, num_dims=4, typicality_fit=fit, typicality_batch=2)
    assert (r.typicality.entropy, r.typicality.epsilon) == (2.0, 8.0)
    assert r.flagged["typicality"] == {"in": 0.5, "ood": pytest.approx(1 / 3)}  # |NLL - 2| > 8: 12, 11; and 30
    assert r.typicality_batch is None and "typicality_batch" not in r.scores  # 3 OOD inputs: not 2 batches of 2
    d = r.to_dict()["scores"]["nll"]
    assert (d["mean_in"], d["mean_ood"], d["n_in"], d["n_ood"]) == (8.75, pytest.approx(47 / 3), 4, 3)
    both = ood_scores(lp_in, torch.cat([lp_ood, lp_ood[:1]]), num_dims=4, typicality_fit=fit, typicality_batch=2)
    assert both.typicality_batch is not None and len(both.scores["typicality_batch"][1]) == 2


def test_ood_limit_is_the_seeded_random_subset_of_dgm_eval_limit():
    """--limit draws a seeded random subset (a split's first rows are not a sample of it), the
    same draw as dgm eval --limit with the same seed."""
    from dgmkit.cli.evaluate import _seeded_subset
    from dgmkit.cli.ood import _subset

    x = torch.arange(100).view(100, 1)
    sub, rec = _subset(x, 10, seed=3)
    assert rec["indices"] == sorted(rec["indices"]) and len(set(rec["indices"])) == 10
    assert rec["indices"] != list(range(10))
    assert torch.equal(sub.flatten(), torch.tensor(rec["indices"]))
    assert _subset(x, 10, seed=3)[1]["indices"] == rec["indices"]
    assert _subset(x, 10, seed=4)[1]["indices"] != rec["indices"]
    assert _seeded_subset(x, None, 10, 3)[2]["indices"] == rec["indices"]


def test_the_batch_typicality_test_forms_random_batches_not_consecutive_inputs():
    """Inputs in an order (sorted by class, by file name) made consecutive batches of unlike
    inputs: batches are drawn after a seeded shuffle. Sorted NLLs 0..99 in batches of 25: random
    batches' means lie within about 15 of 49.5, consecutive ones 37.5 away."""
    nll = torch.arange(100.0)
    r = ood_scores(-nll, -nll, num_dims=4, typicality_fit=(-nll, -nll), typicality_batch=25)
    s_in, s_ood = r.scores["typicality_batch"]
    assert len(s_in) == len(s_ood) == 4
    assert s_in.max() < 20 and s_ood.max() < 20
    assert r.flagged["typicality_batch"]["ood"] <= 0.25  # the same inputs on both sides: in distribution


def test_ood_data_missing_from_the_run_s_data_folder_names_ood_data_dir(tmp_path, capsys, monkeypatch):
    """The OOD set is looked for where the run's data were: where it is not there, the error
    says so and names --ood-data-dir (a folder named by the user's own flag is said as it is).
    (A run on digits records no --no-download: a download is tried, and fails here, as offline.)"""
    import dgmkit.data.registry

    def offline(*args, **kwargs):
        raise DataError("no network here")

    monkeypatch.setattr(dgmkit.data.registry, "fetch", offline)
    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("DGMKIT_DATA", str(empty))
    run = tmp_path / "run"
    flags = ["--dataset", "digits", "--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--quiet"]
    assert _dgm(capsys, "train", *flags, "--out", run)[0] == 0
    _refused(*_dgm(capsys, "ood", run, "--ood", "mnist")[::2], "missing data file", f"default data folder {empty}",
             "--ood-data-dir")  # fmt: skip
    # a folder named; no such name (MNIST: names are spelled in lower case, and no folder helps)
    for flags in (["--ood", "mnist", "--ood-data-dir", empty], ["--ood", "omniglot"], ["--ood", "MNIST"]):
        code, _, err = _dgm(capsys, "ood", run, *flags)
        _refused(code, err, "missing data file" if len(flags) > 2 else "unknown dataset")
        assert "--ood-data-dir)" not in err


def test_an_ood_set_missing_from_the_data_dir_of_a_run_s_own_data_names_ood_data_dir(
    tmp_path, capsys, data_dir, monkeypatch
):
    """--data-dir of a run on MNIST names its own data's folder: where --ood is not there, the loader's
    "name another --data-dir" would lose the run's data; --ood-data-dir is the flag to name."""
    import dgmkit.data.registry

    def offline(*args, **kwargs):
        raise DataError("no network here")

    monkeypatch.setattr(dgmkit.data.registry, "fetch", offline)
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "mnist").symlink_to(data_dir / "mnist")
    run = tmp_path / "run"
    flags = ["--dataset", "mnist", "--data-dir", folder, "--binarize", "dynamic", "--hidden", "8", "--latent-dim", "2"]
    assert _dgm(capsys, "train", *flags, "--epochs", "1", "--time-budget", "1", "--quiet", "--out", run)[0] == 0
    code, _, err = _dgm(capsys, "ood", run, "--ood", "binarized-mnist", "--data-dir", folder, "--limit", "5")
    _refused(code, err, "missing data file", "name another --ood-data-dir")


def test_data_dir_names_the_ood_set_s_folder_for_a_run_on_a_data_file(tmp_path, capsys, data_dir):
    """A named --ood is read from --ood-data-dir, else --data-dir: for a run on a data file of 28x28
    images --data-dir was refused as of the run's own data (read from its path); it is --ood's,
    and refused where it is neither's."""
    x = np.random.default_rng(0).integers(0, 256, (100, 28, 28)).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    run = tmp_path / "run"
    flags = ["--dataset", tmp_path / "x.npy", "--binarize", "dynamic", "--hidden", "8", "--latent-dim", "2", "--quiet"]
    assert _dgm(capsys, "train", *flags, "--epochs", "1", "--out", run)[0] == 0
    ood = ["ood", run, "--ood", "mnist", "--limit", "10", "--iw-samples", "1", "--data-dir", data_dir]
    code, _, err = _dgm(capsys, *ood, "--out", tmp_path / "o.png")
    assert code == 0, err
    code, _, err = _dgm(capsys, *ood, "--ood-data-dir", data_dir, "--out", tmp_path / "p.png")
    _refused(code, err, f"--data-dir is of datasets read from a folder; {run} was trained on {tmp_path / 'x.npy'}")


def test_grey_images_against_a_run_on_binary_images_say_to_binarize_them(tmp_path, capsys):
    """dgm ood of a VAE on binarized MNIST with --ood fashion-mnist said only "OOD inputs must be of
    the run's shape and levels": now how to make them so, binarized into a .npy file, which it reads."""
    from dgmkit.data import load_dataset

    digits = load_dataset("digits").test.x.numpy()  # (300, 1, 8, 8), levels 0..16
    rng = np.random.default_rng(0)
    np.save(tmp_path / "binary.npy", (rng.random(digits.shape) < digits / 16).astype(np.uint8))
    run = tmp_path / "vae"
    code, _, err = _dgm(capsys, "train", "--dataset", tmp_path / "binary.npy", "--hidden", "16", "--latent-dim", "2",
                        "--epochs", "1", "--quiet", "--out", run)  # fmt: skip
    assert code == 0, err
    code, _, err = _dgm(capsys, "ood", run, "--ood", "digits", "--limit", "20")
    _refused(code, err, "images of shape (1, 8, 8) with 17 levels", "models (1, 8, 8) with 2 levels",
             "binarize them as the run's data were (a seeded Bernoulli draw of each pixel's intensity) into a .npy "
             "file of 0/1 and give its path")  # fmt: skip
    np.save(tmp_path / "ood.npy", (rng.random(digits.shape) < digits[:, :, ::-1] / 16).astype(np.uint8))
    code, _, err = _dgm(capsys, "ood", run, "--ood", tmp_path / "ood.npy", "--ood-split", "all", "--limit", "20",
                        "--iw-samples", "10", "--fit-limit", "50")  # fmt: skip
    assert code == 0, err
    np.save(tmp_path / "wide.npy", np.zeros((60, 4, 16), np.uint8) + 3)
    code, _, err = _dgm(capsys, "ood", run, "--ood", tmp_path / "wide.npy", "--ood-split", "all")
    _refused(code, err, "OOD inputs must be of the run's shape and levels")
    assert "binarize" not in err  # (of another shape: binarizing would not make them the run's)


def test_flat_rows_of_the_run_s_images_are_read_as_its_images(runs, tmp_path, capsys):
    """dgm score reads flat rows (N, D) of the run's images; --ood refused them as "images of shape
    (1, 1, 64)". Read as the run's images, they score as the same images given (N, H, W) do; rows
    of as many values in another shape, and flat rows of another length, are still refused."""
    x = np.load(runs / "noise.npy")[:60]
    np.save(tmp_path / "flat.npy", x.reshape(60, 64))
    np.save(tmp_path / "images.npy", x)
    np.save(tmp_path / "long.npy", np.zeros((60, 65), dtype=np.int64))
    np.save(tmp_path / "wide.npy", x.reshape(60, 4, 16))
    scores = {}
    for name in ("flat", "images"):
        argv = ["ood", runs / "model", "--ood", tmp_path / f"{name}.npy", "--ood-split", "all", "--limit", "20"]
        code, _, err = _dgm(capsys, *argv, "--json", tmp_path / f"{name}.json")
        assert code == 0, err
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())["scores"]
    assert scores["flat"] == scores["images"]
    code, _, err = _dgm(capsys, "ood", runs / "model", "--ood", tmp_path / "long.npy", "--ood-split", "all")
    _refused(code, err, "images of shape (1, 1, 65)", "OOD inputs must be of the run's shape and levels")
    code, _, err = _dgm(capsys, "ood", runs / "model", "--ood", tmp_path / "wide.npy", "--ood-split", "all")
    _refused(code, err, "images of shape (1, 4, 16)", "OOD inputs must be of the run's shape and levels")


def test_a_fit_limit_of_every_row_is_the_protocol_of_the_default(runs, tmp_path, capsys):
    """The digits' 1197 training and 300 held-out inputs are fitted whole under the default
    --fit-limit 10000 and under --fit-limit 20000 alike: the same numbers, kept as one protocol in
    ood.json (they were two); a --fit-limit that draws a subset is another."""
    model = tmp_path / "model"
    shutil.copytree(runs / "model", model)  # (the module's run keeps the other tests' results)
    (model / "ood.json").unlink(missing_ok=True)
    (model / "ood-scores.csv").unlink(missing_ok=True)
    argv = ["ood", model, "--ood", runs / "noise.npy", "--limit", "10"]
    for extra, kept in (([], 1), (["--fit-limit", "20000"], 1), (["--fit-limit", "1197"], 1), (["--fit-limit", "50"], 2)):
        code, _, err = _dgm(capsys, *argv, *extra)
        assert code == 0, err
        assert len(json.loads((model / "ood.json").read_text())["results"]) == kept, extra


def test_a_result_kept_under_the_old_key_of_its_protocol_is_replaced(runs, tmp_path, capsys):
    """ood.json written before a fit of every row was keyed as the protocol of none holds the default's
    result under "fit 10000": the same call again replaces it (it was kept beside it, two of one protocol)."""
    model = tmp_path / "model"
    shutil.copytree(runs / "model", model)
    (model / "ood.json").unlink(missing_ok=True)
    (model / "ood-scores.csv").unlink(missing_ok=True)
    argv = ["ood", model, "--ood", runs / "noise.npy", "--limit", "10"]
    assert _dgm(capsys, *argv)[0] == 0
    kept = json.loads((model / "ood.json").read_text())["results"]
    (key,) = kept
    assert "fit None" in key
    old = {"results": {key.replace("fit None", "fit 10000"): kept[key]}}  # (as the run's ood.json was written)
    (model / "ood.json").write_text(json.dumps(old))
    code, _, err = _dgm(capsys, *argv)
    assert code == 0, err
    assert list(json.loads((model / "ood.json").read_text())["results"]) == [key]


def test_a_table_of_categories_is_not_called_continuous_data_beside_its_bits_per_dim(tmp_path, capsys):
    """A table of categorical columns only is scored in probabilities (bits/dim, per column): the
    complexity note called it "continuous data" (its transform's kind) beside those bits/dim."""
    rng = np.random.default_rng(0)
    rows = [(f"a{i}", f"b{j}") for i, j in rng.integers(0, 3, size=(80, 2))]
    (tmp_path / "t.csv").write_text("x,y\n" + "".join(f"{a},{b}\n" for a, b in rows))
    (tmp_path / "o.csv").write_text("x,y\n" + "a0,b0\n" * 20)
    run = tmp_path / "run"
    code, _, err = _dgm(capsys, "train", "--dataset", tmp_path / "t.csv", "--likelihood", "mixed", "--latent-dim", "1",
                        "--hidden", "8", "--epochs", "1", "--quiet", "--out", run)  # fmt: skip
    assert code == 0, err
    code, out, err = _dgm(capsys, "ood", run, "--ood", tmp_path / "o.csv", "--ood-split", "all", "--iw-samples", "2",
                          "--json", tmp_path / "r.json")  # fmt: skip
    assert code == 0, err
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["bits_per_dim"]["ood"] == pytest.approx(r["scores"]["nll"]["mean_ood"] / (2 * math.log(2)))  # per column
    assert "complexity: n/a (no integer images of at most 256 levels (a table's rows of categories))" in out
    assert "continuous data" not in out


def test_a_non_finite_background_or_code_length_is_refused_by_its_name():
    """They were refused only once turned into scores, as "the scores hold NaN or inf", naming
    neither what held the NaN nor that it was not the log-likelihoods."""
    lp_in, lp_ood = torch.tensor([-10.0, -12.0, -11.0]), torch.tensor([-8.0, -9.0])
    for bad in (float("nan"), float("inf"), -float("inf")):
        for name in ("background", "code_bits"):
            pair = (torch.tensor([-1.0, bad, -1.0]), torch.zeros(2))
            with pytest.raises(EvaluationError, match=f"the {name} values hold NaN or inf"):
                ood_scores(lp_in, lp_ood, num_dims=4, **{name: pair})
        with pytest.raises(EvaluationError, match="the log_px values hold NaN or inf"):
            ood_scores(lp_in, torch.tensor([-8.0, bad]), num_dims=4)


@pytest.mark.parametrize("name, bad", [("batch_size", True), ("batch_size", 1.5), ("bootstraps", 2.5)])
def test_the_typicality_test_refuses_a_batch_size_or_bootstraps_that_is_not_a_whole_number(name, bad):
    # (batch_size True was taken as batches of 1; 1.5 was torch.randint's TypeError, naming nothing)
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
        typicality_test(torch.randn(10), torch.randn(10), **{name: bad})


def test_ood_inputs_that_are_the_run_s_own_images_are_named_in_a_note(runs, tmp_path, capsys):
    """A file of the run's own test (or training) images as --ood passed as OOD data: only the whole
    dataset was refused (by its digest), and every score then tells in-distribution inputs from
    themselves (AUROC 0.5) without a word. The images shared with the run's data are counted, by split,
    whatever their dtype in the file."""
    from dgmkit.data import load_dataset

    digits = load_dataset("digits")
    noise = np.load(runs / "noise.npy")[:20]
    mixed = np.concatenate([digits.test.x[:30, 0].numpy(), digits.train.x[:10, 0].numpy(), noise]).astype(np.int64)
    np.save(tmp_path / "mixed.npy", mixed)
    code, out, err = _dgm(capsys, "ood", runs / "model", "--ood", tmp_path / "mixed.npy", "--ood-split", "all")
    assert code == 0, err
    assert "of the 60 OOD inputs of" in out and "the run's own data hold the same values (10 in its train split, " in out
    assert "30 in its test split): in-distribution inputs, which no score can tell apart" in out
    code, out, err = _dgm(capsys, "ood", runs / "model", "--ood", runs / "noise.npy", "--ood-split", "all")
    assert code == 0 and "the same values" not in out, err


def test_the_typicality_threshold_of_more_than_2_to_the_24_bootstraps_is_their_quantile():
    """torch.quantile takes at most 2^24 values: bootstraps=2**24 + 1 met its RuntimeError "quantile() input
    tensor is too large". Of held-out NLLs 0 and 1 about H = 0.5 every statistic is 0.5, and so is epsilon."""
    t = typicality_test(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0]), bootstraps=2**24 + 1)
    assert (t.entropy, t.epsilon) == (0.5, 0.5)


def test_results_of_another_k_of_a_sampled_background_are_kept_apart():
    """--iw-samples k of an exact run's sampled background (a VAE) changes the likelihood ratio (AUROC 0.5115 at
    k=10, 0.5035 at k=20 of the digits against their flips), and the key held only the run's own k (0): the k=20
    result replaced k=10's. An exact background (k 0) keeps the key it had."""
    from dgmkit.cli.ood import _protocol

    r = {"subsets": {"in": None, "ood": None}, "limit": None, "seed": 0, "in_split": "test", "ood": "flip.npy"}
    r |= {"ood_split": "all", "iw_samples": 0, "typicality_batch": 25, "fit_limit": 50, "weights": "w"}
    r |= {"background": "bg", "background_weights": "b", "background_iw_samples": 10}
    assert _protocol(r) != _protocol(r | {"background_iw_samples": 20})
    exact = r | {"background_iw_samples": 0}
    assert _protocol(exact) == _protocol({k: v for k, v in exact.items() if k != "background_iw_samples"})


def test_a_non_finite_log_likelihood_names_the_model_that_gave_it_and_the_inputs(runs, capsys, monkeypatch):
    """Of the run and its --background, the refusal of a non-finite log p(x) says which model gave it,
    and of which inputs ("the model gives a non-finite log-likelihood" named neither)."""
    import dgmkit.cli.ood as ood
    from dgmkit.models.terms import refuse_non_finite

    loaded, real = {}, ood._likelihood_run
    monkeypatch.setattr(ood, "_likelihood_run", lambda path, what, device: loaded.setdefault(what, real(path, what, device)))
    scored, background_calls = ood.log_likelihoods, []

    def broken_background(model, x, **options):
        log_px = scored(model, x, **options)
        background_calls.extend([x] if model is loaded["--background"].model else [])
        if len(background_calls) == 2:  # (its second inputs: the --ood file's)
            refuse_non_finite("log-likelihood", log_px.index_fill(0, torch.tensor([3]), math.nan))
        return log_px

    monkeypatch.setattr(ood, "log_likelihoods", broken_background)
    said = _dgm(capsys, "ood", runs / "model", "--ood", runs / "noise.npy", "--background", runs / "bg")[::2]
    _refused(*said, f"the background model {runs / 'bg'}, scoring the --ood inputs: the model gives a non-finite")


def test_the_note_says_how_the_fpr_at_95_tpr_is_read_off_the_roc_curve():
    """FPR@95%TPR has conventions (which threshold, interpolated or not): the note names the one
    ``fpr_at_tpr`` computes, the strictest threshold flagging >= 95% of the OOD inputs, as scikit-learn's
    roc_curve reads it, with no interpolation."""
    from sklearn.metrics import roc_curve

    from dgmkit.cli.ood import _notes
    from dgmkit.evaluation.ood import fpr_at_tpr

    r = {"dataset": "d", "in_split": "test", "n_in": 2, "ood": "o", "ood_split": "test", "n_ood": 2,
         "estimate": "exact", "transform": "integers", "iw_samples": 0, "typicality_batch": 1, "scores": {},
         "complexity_note": "none"}  # fmt: skip
    assert any("strictest threshold that flags at least 95% of the OOD ones" in n and "no interpolation" in n
               for n in _notes(r))  # fmt: skip
    a, b = torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([1.0, 2.5, 4.0])  # 95% of 3: all three, at >= 1
    fpr, tpr, _ = roc_curve([0] * 4 + [1] * 3, torch.cat([a, b]).numpy())
    assert fpr_at_tpr(a, b) == fpr[(tpr >= 0.95).argmax()] == 0.75


def test_scores_given_as_python_floats_are_read_in_float64_not_rounded_to_float32():
    # 1e8 + 1 and 1e8 + 2 are one float32: the OOD input's higher score was a tie
    a, b = [1e8 + 1, 0.0], [1e8 + 2]
    assert auroc(a, b) == 1.0 and auprc(a, b) == 1.0 and fpr_at_tpr(a, b) == 0.0
    t = typicality_test([1e8 + 0.25] * 4, [1e8 + 0.25] * 4)
    assert t.entropy == 1e8 + 0.25 and t.epsilon == 0.0
    assert t.statistic([1e8 + 1.25]).tolist() == [1.0]
    r = ood_scores([-1e8 - 1], [-1e8 - 2], num_dims=1, background=([0.0], [0.0]))
    assert r.metrics["nll"]["auroc"] == 1.0 and r.metrics["likelihood_ratio"]["auroc"] == 1.0
