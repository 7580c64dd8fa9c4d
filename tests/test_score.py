"""dgm score: log p(x) per input of a user's own data, the numbers dgm eval gives for the same data."""

import csv
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from dgmkit.cli.common import run_data
from dgmkit.cli.main import main
from dgmkit.config import load_run
from run_records import rewrite_records


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_scores_per_input_agree_with_dgm_eval_on_the_same_data(tmp_path, capsys):
    run = tmp_path / "vae"
    assert main(["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "2", "--epochs", "2", "--quiet",
                 "--out", str(run)]) == 0  # fmt: skip
    test = run_data(load_run(run)).test.x.numpy()
    np.save(tmp_path / "test.npy", test)
    assert main(["score", str(run), str(tmp_path / "test.npy"), "--k", "50", "--out", str(tmp_path / "s.csv")]) == 0
    rows = _rows(tmp_path / "s.csv")
    assert [r["input"] for r in rows] == [str(i) for i in range(len(test))]
    log_px = np.array([float(r["log_px_nats"]) for r in rows])
    bpd = np.array([float(r["bits_per_dim"]) for r in rows])
    np.testing.assert_allclose(bpd, -log_px / (64 * math.log(2)), rtol=1e-12)
    said = "".join(capsys.readouterr())
    assert f"mean log p(x) {log_px.mean():.3f} nats, {bpd.mean():.4f} bits/dim (importance-sampled, k=50)" in said
    assert main(["eval", str(run), "--iw-samples", "50"]) == 0
    nll = float(next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("NLL")).split()[2])
    assert -log_px.mean() == pytest.approx(nll, abs=1e-3)  # the same transform noise, draws and batches
    holed = test[:40].astype(np.float64)
    holed[::2, 0, :4, :] = np.nan  # every other input misses half its entries
    np.save(tmp_path / "holed.npy", holed)
    assert main(["score", str(run), str(tmp_path / "holed.npy"), "--k", "50", "--out", str(tmp_path / "h.csv")]) == 0
    log_px = np.array([float(r["log_px_nats"]) for r in _rows(tmp_path / "h.csv")])
    seen = np.isfinite(holed).reshape(40, -1).sum(1)
    per_entry = -log_px.sum() / (seen.sum() * math.log(2))  # as dgm eval divides: all entries, not each input's mean
    assert f"{per_entry:.4f} bits/dim" in capsys.readouterr().out
    assert abs(per_entry - np.mean(-log_px / (seen * math.log(2)))) > 1e-3


def test_png_images_of_a_binary_model_are_scored_by_name_and_bad_inputs_refused(tmp_path, capsys):
    run = tmp_path / "arm"
    assert main(["train", "--model", "arm", "--dataset", "digits-4x4", "--channels", "4", "--arm-layers", "1",
                 "--epochs", "1", "--quiet", "--out", str(run)]) == 0  # fmt: skip
    rng = np.random.default_rng(0)
    names = []
    for i in range(3):
        a = (rng.random((4, 4)) > 0.5).astype(np.uint8) * 255
        Image.fromarray(a).save(tmp_path / f"img{i}.png")
        names.append(f"img{i}.png")
    out = tmp_path / "s.csv"
    assert main(["score", str(run), *[str(tmp_path / n) for n in names], "--out", str(out)]) == 0
    rows = _rows(out)
    assert [r["input"] for r in rows] == names
    assert all(float(r["log_px_nats"]) < 0 and float(r["bits_per_dim"]) > 0 for r in rows)  # exact, discrete
    assert main(["score", str(run), str(tmp_path / "img0.png"), "--out", str(out)]) == 1  # exists: not replaced
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.save(tmp_path / "wide.npy", np.zeros((3, 7), np.uint8))
    (tmp_path / "t.csv").write_text("a,b\n1,0\n")
    (tmp_path / "x.txt").write_text("1\n")
    undecodable = tmp_path / os.fsdecode(b"\xff.png")  # a name of a byte that is not UTF-8 (a lone surrogate)
    Image.fromarray(a).save(undecodable)
    flipped = tmp_path / "1gmi\u202egnp.png"  # a right-to-left override: what follows it shows reversed
    Image.fromarray(a).save(flipped)
    for argv, needle in (
        ([str(tmp_path / "grey.png")], "holds grey levels"),
        ([str(tmp_path / "img0.png"), "--k", "5"], "exact log-likelihood"),
        ([str(tmp_path / "img0.png"), "--schema", str(tmp_path / "s.json")], "was trained without a schema"),  # (ignored)
        ([str(tmp_path / "wide.npy")], "wide.npy: rows of 7 values, but the run's data have rows of 16 (shape (1, 4, 4))"),
        ([str(tmp_path / "t.csv")], f"t.csv is a table, but {run} was not trained on one"),
        ([str(tmp_path / "x.txt")], "the data to score must be a .npy, .npz, .csv or .parquet file"),
        *(  # a name that a spreadsheet would run as a formula in the CSV's first column
            ([str(tmp_path / "img0.png"), str(tmp_path / f"{c}HYPERLINK(0).png")], f"begins with {c!r}") for c in "=+-@"
        ),
        ([str(tmp_path / "img0.png"), str(undecodable)], "'\\udcff.png' is not UTF-8 text"),  # (was an internal error)
        ([str(tmp_path / "img0.png"), str(flipped)], "'1gmi\\u202egnp.png' holds the invisible or control character U+202E"),
    ):
        code = main(["score", str(run), *argv, "--out", str(tmp_path / "u.csv")])
        assert code == 1 and needle in capsys.readouterr().err
    assert not (tmp_path / "u.csv").exists()
    assert main(["eval", str(run), "--iw-samples", "5"]) == 1  # the same refusal, by dgm eval's flag
    assert "--iw-samples: " in (err := capsys.readouterr().err) and "exact log-likelihood" in err


def test_a_model_without_a_density_has_nothing_to_score(tmp_path, capsys):
    run = tmp_path / "ae"
    assert main(["train", "--model", "ae", "--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--epochs", "1",
                 "--quiet", "--out", str(run)]) == 0  # fmt: skip
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8), dtype=np.uint8))
    assert main(["score", str(run), str(tmp_path / "x.npy"), "--out", str(tmp_path / "s.csv")]) == 1
    assert "no log p(x) to score" in capsys.readouterr().err


def test_a_sampled_bound_is_drawn_from_the_seed_alone_and_agrees_with_dgm_eval(tmp_path, capsys):
    """A diffusion bound draws its noise from torch's global RNG: the score of one seed is the same
    whatever that RNG's state, the caller's state is left as it was, and dgm eval agrees."""
    import torch

    from dgmkit.cli.score import score_inputs

    run_dir = tmp_path / "diffusion"
    args = ["train", "--model", "diffusion", "--dataset", "digits", "--epochs", "1", "--unet-channels", "8", "8"]
    assert main([*args, "--out", str(run_dir), "--quiet"]) == 0
    run = load_run(run_dir)
    x = run_data(run).test.x
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first, _ = score_inputs(run, x, k=2, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched
    torch.manual_seed(2)
    again, _ = score_inputs(run, x, k=2, seed=3)
    other, _ = score_inputs(run, x, k=2, seed=4)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3  # the seed does draw the noise
    np.save(tmp_path / "x.npy", x[:3].numpy().astype(np.uint8))
    capsys.readouterr()
    for k, noted in ((4, True), (1000, False)):  # a row of a few times is noisy, and said to be
        csv_out = str(tmp_path / f"{k}.csv")
        assert main(["score", str(run_dir), str(tmp_path / "x.npy"), "--k", str(k), "--out", csv_out]) == 0
        out = capsys.readouterr().out
        assert ("unbiased, but for one input noisy" in out) == noted
        assert ("each row is the bound at 4 times" in out) == noted
    assert main(["eval", str(run_dir), "--time-samples", "2", "--seed", "3"]) == 0
    nll = json.loads((run_dir / "eval.json").read_text())["nll"]
    assert -first.mean() == pytest.approx(nll, abs=1e-6)  # the same data, times and noise


def test_a_run_that_sets_zero_importance_samples_is_not_scored_by_its_elbo_as_log_px(tmp_path, capsys):
    """dgm score once wrote a run's ELBO as log p(x) where the run's iw_samples was 0 (and dgm ood
    scored it with k = 1); it is refused, as dgm eval refuses it, naming the setting and the flag
    that overrides it."""
    run = tmp_path / "vae0"
    assert main(["train", "--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--iw-samples", "1",
                 "--quiet", "--out", str(run)]) == 0  # fmt: skip
    # (dgm train refuses iw_samples 0 for such a model now; a run trained before holds it)
    rewrite_records(run, lambda r: {**r, "config": {**r["config"], "eval": {**r["config"]["eval"], "iw_samples": 0}}})
    np.save(tmp_path / "x.npy", run_data(load_run(run)).test.x.numpy()[:4])
    for argv, flag in ((["score", str(run), str(tmp_path / "x.npy"), "--out", str(tmp_path / "s.csv")], "--k"),
                       (["eval", str(run)], "--iw-samples"),
                       (["ood", str(run), "--ood", str(tmp_path / "x.npy")], "--iw-samples")):  # fmt: skip
        assert main(argv) == 1
        assert f"the run's iw_samples is 0: give {flag} >= 1" in capsys.readouterr().err
    assert main(["score", str(run), str(tmp_path / "x.npy"), "--k", "3", "--out", str(tmp_path / "s.csv")]) == 0
    said = capsys.readouterr().out  # a row's number depends on the draws over the file: said
    assert "over all the inputs together (the binarization and the importance samples; seeded" in said
    np.save(tmp_path / "one.npy", run_data(load_run(run)).test.x.numpy()[:1])
    assert main(["score", str(run), str(tmp_path / "one.npy"), "--k", "3", "--out", str(tmp_path / "o.csv")]) == 0
    assert "random draws" not in capsys.readouterr().out  # (one input alone: no other row to move)


def test_an_exact_density_of_dequantized_integers_is_called_a_one_draw_bound(tmp_path, capsys):
    """A flow on integer digits models y = (k + u) / L: its log p(y) - D log L at one draw of u is a
    lower bound on log P(k) in expectation, not the exact log P(k); dgm score and dgm ood say so
    as dgm eval does, and a model on binary data stays exact."""
    from dgmkit.cli.common import estimate_words

    assert estimate_words("exact", "dequantize") == "a one-draw estimate of a lower bound (uniform dequantization)"
    assert estimate_words("exact", "binary") == "exact"
    assert estimate_words("importance-sampled", "dequantize") == "importance-sampled"
    run = tmp_path / "flow"
    assert main(["train", "--dataset", "digits", "--model", "flow", "--flow", "realnvp", "--flow-layers", "2",
                 "--hidden", "8", "--epochs", "1", "--quiet", "--out", str(run)]) == 0  # fmt: skip
    assert load_run(run).transform.kind == "dequantize"
    test = run_data(load_run(run)).test.x[:20].numpy()
    np.save(tmp_path / "some.npy", test)
    capsys.readouterr()
    assert main(["score", str(run), str(tmp_path / "some.npy"), "--out", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr().out
    assert "(a one-draw estimate of a lower bound (uniform dequantization))" in out and "(exact)" not in out
    assert "note: each row's number is of random draws made over all the inputs together (the dequantization noise;" in out
    assert main(["ood", str(run), "--ood", str(tmp_path / "some.npy"), "--json", str(tmp_path / "o.json")]) == 0
    assert "log p(x): a one-draw estimate of a lower bound (uniform dequantization)" in capsys.readouterr().out
    assert json.loads((tmp_path / "o.json").read_text())["transform"] == "dequantize"


def test_images_scaled_to_one_given_to_a_run_of_integer_levels_get_the_scale_named(tmp_path, capsys):
    x = np.random.default_rng(0).integers(0, 17, (60, 1, 4, 4)).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "scaled.npy", x[:4].astype(np.float32) / 16)
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path / "x.npy"), "--likelihood", "categorical", "--hidden", "8",
                 "--latent-dim", "2", "--epochs", "1", "--quiet", "--out", str(run)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["score", str(run), str(tmp_path / "scaled.npy"), "--out", str(tmp_path / "s.csv")]) == 1
    err = capsys.readouterr().err
    assert "integers 0..16; the file holds values in [0, 1], not all whole numbers" in err
    assert "multiply by 16 and round" in err and not (tmp_path / "s.csv").exists()


def test_binary_arrays_given_to_a_run_of_more_levels_are_scored_as_stored_with_a_note(tmp_path, capsys):
    """Images binarized to 0/1 (as dgm compress takes them) are levels 0 and 1 of 0..16 for a
    dgm score of a digits run: nearly black images, said in a note; their 0/16 form gets none."""
    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet",
                 "--out", str(run)]) == 0  # fmt: skip
    binary = (run_data(load_run(run)).test.x[:20].numpy() >= 8).astype(np.uint8)
    for name, x, noted in (("b01.npy", binary, True), ("b16.npy", binary * 16, False), ("b00.npy", binary * 0, False)):
        np.save(tmp_path / name, x)
        capsys.readouterr()
        assert main(["score", str(run), str(tmp_path / name), "--out", str(tmp_path / f"{name}.csv")]) == 0
        out = capsys.readouterr().out
        assert (f"note: {name} holds only the values 0 and 1 of the run's levels 0..16" in out) == noted, out
        assert ("multiply them by 16" in out) == noted
    binary_run = tmp_path / "binary-run"  # a run of binary data: 0 and 1 are its levels, said nothing of
    assert main(["train", "--dataset", str(tmp_path / "b01.npy"), "--hidden", "8", "--latent-dim", "2", "--epochs", "1",
                 "--quiet", "--out", str(binary_run)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["score", str(binary_run), str(tmp_path / "b01.npy"), "--out", str(tmp_path / "bb.csv")]) == 0
    assert "holds only the values 0 and 1" not in capsys.readouterr().out
    # a bool array is black and white, as a 1-bit PNG and dgm compress read it: True the highest level
    np.save(tmp_path / "bool.npy", binary.astype(bool))
    assert main(["score", str(run), str(tmp_path / "bool.npy"), "--out", str(tmp_path / "bool.csv")]) == 0
    assert "holds only the values 0 and 1" not in capsys.readouterr().out
    assert (tmp_path / "bool.csv").read_text() == (tmp_path / "b16.npy.csv").read_text()


def test_more_inputs_than_one_call_scores_and_files_that_are_not_files_are_refused(tmp_path, capsys, monkeypatch):
    """A 65 kB .npz of a million blank images held 5.6 GB while it was scored: the data cap counts
    stored bytes, scoring holds tens of bytes a value. A folder or a pipe named .npy was "no such file"."""
    import dgmkit.cli.score as score

    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet",
                 "--out", str(run)]) == 0  # fmt: skip
    assert score.MAX_SCORE_VALUES == 2**26  # (MNIST's training split, 47M values, in one call)
    monkeypatch.setattr(score, "MAX_SCORE_VALUES", 2**12)
    np.savez_compressed(tmp_path / "many.npz", x=np.zeros((65, 8, 8), np.uint8))  # 2^12 values and a row
    capsys.readouterr()
    assert main(["score", str(run), str(tmp_path / "many.npz"), "--out", str(tmp_path / "m.csv")]) == 1
    assert "many.npz holds 65 rows of 64 values; dgm score takes at most 64 such rows" in capsys.readouterr().err
    monkeypatch.setattr(score, "MAX_SCORE_VALUES", 128)  # (PNG files: counted before any is read)
    pngs = [str(tmp_path / f"{i}.png") for i in range(3)]
    assert main(["score", str(run), *pngs, "--out", str(tmp_path / "p.csv")]) == 1
    assert "3 images of 64 pixels; dgm score takes at most 2 in one call" in capsys.readouterr().err
    (tmp_path / "folder.npy").mkdir()
    os.mkfifo(tmp_path / "pipe.npy")
    for name in ("folder.npy", "pipe.npy"):
        assert main(["score", str(run), str(tmp_path / name), "--out", str(tmp_path / "f.csv")]) == 1
        assert f"{name} is not a regular file" in capsys.readouterr().err
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "p.csv").exists() and not (tmp_path / "f.csv").exists()


def test_channels_last_inputs_for_a_run_of_channels_first_images_are_refused_not_reshaped(tmp_path, capsys):
    x = np.random.default_rng(0).integers(0, 2, (40, 3, 6, 5)).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "last.npy", x[:4].transpose(0, 2, 3, 1))  # the same images, (N, H, W, C)
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path / "x.npy"), "--hidden", "8", "--latent-dim", "2", "--epochs", "1",
                 "--quiet", "--out", str(run)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["score", str(run), str(tmp_path / "last.npy"), "--out", str(tmp_path / "s.csv")]) == 1
    err = capsys.readouterr().err
    assert "images of shape (6, 5, 3) are the run's (3, 6, 5) channels-last" in err and "transpose" in err
    # other shapes of as many values are other data: refused, not reshaped; flat rows are the run's rows
    for shape in ((4, 5, 6, 3), (4, 9, 2, 5), (4, 10, 9)):
        np.save(tmp_path / "other.npy", x[:4].reshape(shape))
        assert main(["score", str(run), str(tmp_path / "other.npy"), "--out", str(tmp_path / "s.csv")]) == 1
        err = capsys.readouterr().err
        assert f"rows of shape {shape[1:]}, but the run's data are (3, 6, 5): give rows of shape (3, 6, 5) or (90,)" in err
    np.save(tmp_path / "flat.npy", x[:4].reshape(4, 90))
    np.save(tmp_path / "same.npy", x[:4])
    assert main(["score", str(run), str(tmp_path / "flat.npy"), "--out", str(tmp_path / "flat.csv")]) == 0
    assert main(["score", str(run), str(tmp_path / "same.npy"), "--out", str(tmp_path / "same.csv")]) == 0
    assert (tmp_path / "flat.csv").read_text() == (tmp_path / "same.csv").read_text()
    np.savez(tmp_path / "two.npz", a=x[:4], b=x[:4])  # which array: said in terms this command takes
    assert main(["score", str(run), str(tmp_path / "two.npz"), "--out", str(tmp_path / "two.csv")]) == 1
    assert "name the data x (numpy.savez(FILE, x=...))" in capsys.readouterr().err


def test_a_png_that_is_a_pipe_is_refused_not_waited_on(tmp_path):
    from types import SimpleNamespace

    from dgmkit.cli.score import _inputs
    from dgmkit.errors import DataError

    os.mkfifo(tmp_path / "pipe.png")
    run = SimpleNamespace(record={"data": {"event_shape": [1, 4, 4], "num_levels": 2}})
    with pytest.raises(DataError, match="pipe.png is not a regular file"):
        _inputs([str(tmp_path / "pipe.png")], run)


def test_a_bundled_table_is_scored_in_its_own_units_from_a_csv_and_as_the_model_sees_it_from_an_array(tmp_path, capsys):
    # iris is standardized as it is read: its numbers are of standardized values, and say so (they said "as stored")
    run = tmp_path / "ppca"
    assert main(["train", "--dataset", "iris", "--model", "ppca", "--latent-dim", "2", "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "iris, a table's rows, numeric columns standardized" in out and "as stored" not in out
    assert "(sepal length (cm), sepal width (cm), petal length (cm), petal width (cm)) are scored standardized" in out
    table = run_data(load_run(run))
    std = table.test.x.reshape(len(table.test.x), -1).numpy().astype(np.float64)
    cols = table.columns
    raw = std * np.array([c.std for c in cols]) + np.array([c.mean for c in cols])
    assert 4.0 < raw[:, 0].min() and raw[:, 0].max() < 8.0  # sepal lengths in centimetres
    with open(tmp_path / "raw.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([c.name for c in cols])
        w.writerows(raw.tolist())
    np.save(tmp_path / "std.npy", std.astype(np.float32))
    assert main(["score", str(run), str(tmp_path / "raw.csv"), "--out", str(tmp_path / "a.csv")]) == 0
    assert "taken to hold values as the model sees them" not in capsys.readouterr().out
    assert main(["score", str(run), str(tmp_path / "std.npy"), "--out", str(tmp_path / "b.csv")]) == 0
    assert "std.npy is taken to hold values as the model sees them" in capsys.readouterr().out
    a = [float(r["log_px_nats"]) for r in _rows(tmp_path / "a.csv")]
    b = [float(r["log_px_nats"]) for r in _rows(tmp_path / "b.csv")]
    np.testing.assert_allclose(a, b, atol=1e-4)  # the CSV's centimetres standardized by the columns the run read
    assert main(["sample", str(run), "-n", "3", "--out", str(tmp_path / "rows.csv")]) == 0
    assert list(_rows(tmp_path / "rows.csv")[0]) == [c.name for c in cols]


def test_png_inputs_are_read_as_the_runs_values_whatever_its_levels(tmp_path, capsys):
    """A 1-bit PNG reads as 0 and 1 for a binary run, as an 8-bit PNG of black and white (each
    image by its own values, 0/255 or 0/1); for a run of 17 levels as 0 and 16. 8-bit grey PNGs
    need a run of 256 levels (read as they are); a run of continuous values takes no PNG (their
    scale is the run's data's, which a PNG does not carry: x / 255 scored a run of 0..255 values
    some 22 million nats off); PNGs need a run of single-channel images, and --out a .csv name."""
    from types import SimpleNamespace

    from dgmkit.cli.score import _inputs
    from dgmkit.errors import DataError

    def runs(levels, event=(1, 4, 4)):
        return SimpleNamespace(record={"data": {"event_shape": list(event), "num_levels": levels}})

    white = np.eye(4, dtype=bool)
    Image.fromarray(white).save(tmp_path / "bw.png")
    Image.fromarray(white.astype(np.uint8) * 255).save(tmp_path / "grey.png")
    Image.fromarray(white.astype(np.uint8)).save(tmp_path / "grey01.png")  # black and white stored as 0 and 1
    one_bit, _ = _inputs([str(tmp_path / "bw.png")], runs(2))
    eight_bit, _ = _inputs([str(tmp_path / "grey.png"), str(tmp_path / "grey01.png")], runs(2))
    assert one_bit.dtype == torch.float32 and torch.equal(one_bit[0, 0], torch.eye(4))
    assert torch.equal(eight_bit, torch.cat([one_bit, one_bit]))
    for png in ("bw.png", "grey.png"):
        with pytest.raises(DataError, match="models continuous values, in the scale of its own data"):
            _inputs([str(tmp_path / png)], runs(None))
    assert torch.equal(_inputs([str(tmp_path / "bw.png")], runs(17))[0][0, 0], 16 * torch.eye(4))
    ramp = np.arange(0, 256, 17, dtype=np.uint8).reshape(4, 4)  # a run of 256 levels reads 8-bit grey as it is
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    assert torch.equal(_inputs([str(tmp_path / "ramp.png")], runs(256))[0][0, 0], torch.from_numpy(ramp).float())
    with pytest.raises(
        DataError, match="the run models 17 levels per pixel, 0..16; the 8-bit PNG grey.png holds values up to 255"
    ):
        _inputs([str(tmp_path / "grey.png"), str(tmp_path / "grey01.png")], runs(17))
    # grey values that are the levels themselves, as dgm decompress writes a digits run's images: read as they are
    levels = np.arange(16, dtype=np.uint8).reshape(4, 4)
    Image.fromarray(levels).save(tmp_path / "levels.png")
    assert torch.equal(_inputs([str(tmp_path / "levels.png")], runs(17))[0][0, 0], torch.from_numpy(levels).float())
    with pytest.raises(DataError, match="the run models 4096 levels per pixel; 8-bit PNGs hold 256"):
        _inputs([str(tmp_path / "levels.png")], runs(4096))  # (its values would all pass as levels)
    with pytest.raises(DataError, match=r"PNG images are single-channel pictures; the run's data have shape \(3, 4, 4\)"):
        _inputs([str(tmp_path / "bw.png")], runs(2, (3, 4, 4)))
    # the names only label the rows (not written back, as dgm decompress writes them): a hidden name, one name in two
    # folders (labelled by the paths as given), 1-bit and 8-bit images together, each read by its own mode
    (tmp_path / "other").mkdir()
    Image.fromarray(levels).save(tmp_path / "other" / "levels.png")
    Image.fromarray(white).save(tmp_path / ".hidden.png")
    given = [str(tmp_path / "levels.png"), str(tmp_path / "other" / "levels.png"), str(tmp_path / ".hidden.png")]
    x, names = _inputs(given, runs(17))
    assert (
        names == given and torch.equal(x[2, 0], 16 * torch.eye(4)) and torch.equal(x[1, 0], torch.from_numpy(levels).float())
    )
    assert _inputs([str(tmp_path / ".hidden.png"), str(tmp_path / "grey01.png")], runs(2))[1] == [
        ".hidden.png",
        "grey01.png",
    ]
    capsys.readouterr()
    # 8-bit images of only 0 and 1 for a run of 17 levels: nearly black, noted (as for a .npy of them)
    assert torch.equal(_inputs([str(tmp_path / "grey01.png")], runs(17))[0][0, 0], torch.eye(4))
    assert (
        "note: the 8-bit PNG grey01.png holds only the values 0 and 1 of the run's levels 0..16" in capsys.readouterr().out
    )
    _inputs([str(tmp_path / "bw.png"), str(tmp_path / "levels.png")], runs(17))  # (1-bit ones are black and white)
    assert "note:" not in capsys.readouterr().out
    # each image by its own values: a 0/1 image beside one of other levels is noted too, and it alone
    _inputs([str(tmp_path / "levels.png"), str(tmp_path / "grey01.png")], runs(17))
    assert "note: the 8-bit PNG grey01.png holds only the values 0 and 1" in capsys.readouterr().out
    assert main(["score", str(tmp_path / "no-run"), str(tmp_path / "bw.png"), "--out", str(tmp_path / "s.txt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dgm: error: --out must name a .csv file, got ") and err.count("\n") == 1


def test_a_table_run_whose_file_moved_scores_a_csv_read_from_data(tmp_path, capsys):
    """A .csv input is encoded by the columns of the run's own table: where that file moved, the
    refusal says --data PATH, and with --data the scores equal those before the move."""
    rows = np.random.default_rng(0).normal(size=(60, 3))
    text = "a,b,c\n" + "".join(f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f}\n" for r in rows)
    (tmp_path / "t.csv").write_text(text)
    (tmp_path / "in.csv").write_text("a,b,c\n" + "".join(text.splitlines(keepends=True)[1:11]))
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path / "t.csv"), "--model", "ppca", "--latent-dim", "1", "--quiet",
                 "--out", str(run)]) == 0  # fmt: skip
    assert main(["score", str(run), str(tmp_path / "in.csv"), "--out", str(tmp_path / "a.csv")]) == 0
    (tmp_path / "t.csv").rename(tmp_path / "moved.csv")
    capsys.readouterr()
    assert main(["score", str(run), str(tmp_path / "in.csv"), "--out", str(tmp_path / "b.csv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dgm: error: ") and "no such data file" in err and "--data PATH" in err, err
    assert not (tmp_path / "b.csv").exists()
    args = [
        "score",
        str(run),
        str(tmp_path / "in.csv"),
        "--data",
        str(tmp_path / "moved.csv"),
        "--out",
        str(tmp_path / "b.csv"),
    ]
    assert main(args) == 0
    assert (tmp_path / "b.csv").read_text() == (tmp_path / "a.csv").read_text()
    capsys.readouterr()  # the data file at its new path is an input: never the output, even with --force
    assert main([*args[:-1], str(tmp_path / "moved.csv"), "--force"]) == 1
    assert "moved.csv" in capsys.readouterr().err and (tmp_path / "moved.csv").read_text() == text
    np.save(tmp_path / "in.npy", np.zeros((2, 3), np.float32))
    for given in (["--data", str(tmp_path / "nowhere.csv")], ["--data", str(tmp_path / "in.npy")]):  # not dropped
        capsys.readouterr()
        assert main(["score", str(run), str(tmp_path / "in.npy"), *given, "--out", str(tmp_path / "c.csv")]) == 1
        assert capsys.readouterr().err.startswith("dgm: error: ") and not (tmp_path / "c.csv").exists()
    digits = tmp_path / "digits"
    assert (
        main(["train", "--dataset", "digits", "--model", "ppca", "--latent-dim", "2", "--quiet", "--out", str(digits)]) == 0
    )
    np.save(tmp_path / "img.npy", np.zeros((2, 1, 8, 8), np.float32))
    capsys.readouterr()
    given = ["--data", str(tmp_path / "moved.csv"), "--out", str(tmp_path / "c.csv")]
    assert main(["score", str(digits), str(tmp_path / "img.npy"), *given]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dgm: error: --data and --data-dir say where a table run's table is"), err


def test_one_channel_images_channels_last_are_the_same_values_and_scored_as_such(tmp_path, capsys):
    """(N, H, W, 1) holds a one-channel run's (N, 1, H, W) in the same order: dgm score and dgm
    compress take it (compress had taken it; the shared check of rows' shapes refused it)."""
    x = np.random.default_rng(0).integers(0, 2, (40, 1, 4, 4)).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "last.npy", x[:4].transpose(0, 2, 3, 1))
    np.save(tmp_path / "same.npy", x[:4])
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path / "x.npy"), "--model", "arm", "--arm", "made", "--made-hidden", "8",
                 "--epochs", "1", "--quiet", "--out", str(run)]) == 0  # fmt: skip
    for name in ("last", "same"):
        assert main(["score", str(run), str(tmp_path / f"{name}.npy"), "--out", str(tmp_path / f"{name}.csv")]) == 0
        assert main(["compress", str(run), str(tmp_path / f"{name}.npy"), "--out", str(tmp_path / f"{name}.dgmz")]) == 0
    assert (tmp_path / "last.csv").read_text() == (tmp_path / "same.csv").read_text()


def test_a_seed_that_draws_nothing_is_refused_by_eval_and_score(tmp_path, capsys):
    """An exact log-likelihood of the whole split draws nothing: ``--seed 3`` scored what seed 0
    does (the same numbers, kept by dgm eval as another protocol) and said nothing. A --limit
    subset is drawn with it (where it is fewer than the split), and an estimate's samples are."""
    run = tmp_path / "ppca"
    assert main(["train", "--model", "ppca", "--latent-dim", "2", "--quiet", "--out", str(run)]) == 0
    for argv in (["--seed", "3"], ["--seed", "3", "--limit", "300"]):  # (300: the whole test split)
        assert main(["eval", str(run), *argv]) == 1
        err = capsys.readouterr().err
        assert "seed 3: the seed draws a --limit subset and an estimate's samples" in err and "is exact" in err
    assert not (run / "eval.json").exists()
    assert main(["eval", str(run), "--seed", "3", "--limit", "299"]) == 0
    assert json.loads((run / "eval.json").read_text())["subset"]["seed"] == 3
    np.save(tmp_path / "x.npy", run_data(load_run(run)).test.x.numpy()[:5])
    score = ["score", str(run), str(tmp_path / "x.npy"), "--out", str(tmp_path / "s.csv")]
    assert main([*score, "--seed", "3"]) == 1
    assert "--seed draws an estimate's samples; the log-likelihood of" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists() and main(score) == 0
    vae = tmp_path / "vae"  # (an estimate that draws: the seed is taken)
    assert main(["train", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet", "--out", str(vae)]) == 0
    scored = ["score", str(vae), str(tmp_path / "x.npy"), "--k", "2", "--seed", "3"]
    assert main([*scored, "--out", str(tmp_path / "v.csv")]) == 0
    assert main(["eval", str(vae), "--iw-samples", "2", "--seed", "3"]) == 0


def test_a_seed_or_more_draws_for_an_evaluation_that_draws_nothing_are_refused(tmp_path, capsys):
    """A VQ-VAE's bound is of each image's one code grid (a point-mass posterior) and an
    autoencoder's reconstruction score is deterministic: ``--seed 7`` gave seed 0's numbers, field
    for field, and ``--iw-samples 5`` of a VQ-VAE five identical draws; both are refused where they
    are given (eval, score, the run's settings). A WAE's evaluation draws its MMD's samples: its
    seed is taken."""
    vq, ae, wae = (tmp_path / name for name in ("vq", "ae", "wae"))
    small = ["--dataset", "digits", "--epochs", "1", "--quiet"]
    assert (
        main(["train", "--model", "vqvae", "--codes", "8", "--code-dim", "2", "--vq-width", "8", *small, "--out", str(vq)])
        == 0
    )
    for model, out in (("ae", ae), ("wae", wae)):
        assert main(["train", "--model", model, "--hidden", "8", "--latent-dim", "2", *small, "--out", str(out)]) == 0
    for run, said in ((vq, "its posterior is a point mass"), (ae, "reconstruction score of an autoencoder")):
        assert main(["eval", str(run), "--seed", "7"]) == 1
        err = capsys.readouterr().err
        assert "seed 7: the seed draws a --limit subset" in err and said in err and "nothing is drawn" in err
        assert not (run / "eval.json").exists()
    assert main(["eval", str(vq), "--iw-samples", "5"]) == 1
    assert "a point mass (one code grid per datapoint): every draw is the same" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", run_data(load_run(vq)).test.x.numpy()[:3])
    score = ["score", str(vq), str(tmp_path / "x.npy"), "--out", str(tmp_path / "s.csv")]
    for argv, said in ((["--seed", "7"], "--seed draws an estimate's samples; the bound of"), (["--k", "5"], "--k: the")):
        assert main([*score, *argv]) == 1
        assert said in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists() and main(score) == 0
    again = ["train", "--model", "vqvae", "--iw-samples", "5", *small, "--out", str(tmp_path / "vq5")]
    assert main(again) == 1 and "posterior is a point mass" in capsys.readouterr().err
    assert main(["eval", str(vq), "--seed", "7", "--limit", "20"]) == 0  # (a drawn subset takes it)
    assert main(["eval", str(wae), "--seed", "7"]) == 0
    assert json.loads((wae / "eval.json").read_text())["seed"] == 7
