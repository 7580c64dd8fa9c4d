"""What a run folder that lost files, or is in use, is told. ``dgm eval`` of a folder that holds a
run's config.json and no checkpoint told the user to "train with `dgm train --out` FOLDER", which
refuses the folder as not empty; a run whose best.safetensors was removed was read from its last
checkpoint without a word; ``dgm train --resume --nproc 2`` of a run that another process was
training started its processes before refusing the folder."""

import json
import logging
import shlex

import dgmkit
from dgm_cli import dgm, refused
from dgmkit import _lock
from dgmkit.cli import train as train_cli
from dgmkit.cli.main import main
from dgmkit.training.run_writer import LOCK_NAME

TINY = ["--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--batch-size", "256", "--quiet"]


def _run(tmp_path, name="run", epochs=2):
    out = tmp_path / name
    assert main(["train", *TINY, "--epochs", str(epochs), "--out", str(out)]) == 0
    return out


def test_a_folder_with_config_json_and_no_checkpoint_is_told_how_to_start_it_again(tmp_path, capsys):
    out = _run(tmp_path, "has space", epochs=1)
    for name in ("checkpoint.safetensors", "best.safetensors", "metrics.jsonl"):
        (out / name).unlink()
    code, _, err = dgm(capsys, "eval", out)
    refused(code, err, "holds a run's config.json but no checkpoint", f"dgm train --resume --out {shlex.quote(str(out))}")
    assert "train a run there" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = dgm(capsys, "eval", empty)
    refused(code, err, "holds no checkpoint", f"train a run there with `dgm train --out {empty}`")


def test_a_run_without_its_best_weights_says_it_is_read_from_its_last(tmp_path, caplog):
    out = _run(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert dgmkit.load(out).checkpoint.name == "best.safetensors"
    assert "no best.safetensors" not in caplog.text
    (out / "best.safetensors").unlink()
    with caplog.at_level(logging.WARNING):
        run = dgmkit.load(out)
        assert dgmkit.load(out, which="last").checkpoint.name == "checkpoint.safetensors"
    assert run.checkpoint.name == "checkpoint.safetensors"
    said = [r.getMessage() for r in caplog.records if "no best.safetensors" in r.getMessage()]
    assert len(said) == 1 and "its last epoch (2)" in said[0], caplog.text  # (which="last" asked for those)


def test_resume_with_nproc_of_a_run_in_use_is_refused_before_processes_start(tmp_path, capsys, monkeypatch):
    out = _run(tmp_path, epochs=1)

    def started(_args):
        raise AssertionError("processes were started")

    monkeypatch.setattr(train_cli, "_launch", started)
    held = _lock.acquire(out / LOCK_NAME, wait=False)  # (another process's, as flock sees it)
    try:
        code, said, err = dgm(capsys, "train", "--resume", "--nproc", "2", "--epochs", "2", "--out", out)
        refused(code, err, "in use by another dgm process")
        assert "starting" not in said
    finally:
        held.release()


def test_a_run_stopped_between_its_checkpoint_and_its_best_weights_gets_them_again_on_resume(tmp_path, capsys, caplog):
    """An epoch's end writes checkpoint.safetensors, then best.safetensors where the epoch is the
    best: a run killed between the two has a checkpoint that ends on its best epoch and a best file of
    an earlier epoch (or none). --resume writes the best weights again from the checkpoint; before,
    best.safetensors was written first, and a kill between left the best weights of an epoch that
    the resumed run trained again (its earlier best lost)."""
    import torch

    from dgmkit.training import load_checkpoint

    out = tmp_path / "run"  # (with a moving average of the weights: best.safetensors holds it, not the weights)
    assert main(["train", *TINY, "--ema", "0.9", "--epochs", "1", "--out", str(out)]) == 0
    first = (out / "best.safetensors").read_bytes()
    assert main(["train", "--resume", "--epochs", "2", "--quiet", "--out", str(out)]) == 0
    record = lambda name: load_checkpoint(out / name)  # noqa: E731
    assert record("checkpoint.safetensors")["trainer"]["best_epoch"] == 2  # (the run improves in its second epoch)
    best = record("best.safetensors")
    for stale in (first, None):  # the epoch before's best weights, or none at all
        if stale is None:
            (out / "best.safetensors").unlink()
        else:
            (out / "best.safetensors").write_bytes(stale)
        capsys.readouterr()
        with caplog.at_level(logging.WARNING):
            assert main(["train", "--resume", "--epochs", "2", "--quiet", "--out", str(out)]) == 0
        assert "did not hold the best epoch (2)" in caplog.text
        caplog.clear()
        again = record("best.safetensors")
        assert again["trainer"]["epoch"] == 2
        assert all(torch.equal(again["model"][k], v) for k, v in best["model"].items())
        raw = record("checkpoint.safetensors")["model"]  # (the weights trained; the best file holds their average)
        assert not all(torch.equal(again["model"][k], v) for k, v in raw.items())
    before = (out / "best.safetensors").stat().st_mtime_ns
    with caplog.at_level(logging.WARNING):  # (a best file that holds the best epoch is left as it is)
        assert main(["train", "--resume", "--epochs", "2", "--quiet", "--out", str(out)]) == 0
    assert "did not hold" not in caplog.text and (out / "best.safetensors").stat().st_mtime_ns == before


def test_an_epoch_writes_its_checkpoint_before_its_best_weights(tmp_path, monkeypatch):
    from dgmkit.training.run_writer import RunWriter

    written = []
    own = RunWriter.checkpoint

    def checkpoint(self, model, name="checkpoint.safetensors", **kwargs):
        written.append(name)
        return own(self, model, name, **kwargs)

    monkeypatch.setattr(RunWriter, "checkpoint", checkpoint)
    _run(tmp_path, epochs=2)
    assert written[:2] == ["checkpoint.safetensors", "best.safetensors"] and written.count("checkpoint.safetensors") == 2


def test_resume_of_a_one_epoch_run_whose_checkpoint_was_removed_keeps_its_best_weights(tmp_path, capsys):
    """An epoch's end writes its best weights after its checkpoint: a folder with best weights and
    no checkpoint had one, removed since (to keep the best alone, say). --resume took such a run of
    one epoch for one stopped before its first checkpoint and started it again, removing its best
    weights and metrics."""
    out = _run(tmp_path, epochs=1)
    (out / "checkpoint.safetensors").unlink()
    kept = {name: (out / name).read_bytes() for name in ("best.safetensors", "metrics.jsonl", "config.json")}
    code, said, err = dgm(capsys, "train", "--resume", "--out", out)
    refused(code, err, "nothing to resume", "its best.safetensors is kept")
    assert "starting it again" not in said
    assert {name: (out / name).read_bytes() for name in kept} == kept
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    code, _, err = dgm(capsys, "train", "--resume", "--out", afile)
    refused(code, err, "is a file, not a run folder")


def test_resume_with_another_named_dataset_is_refused_before_it_is_loaded(tmp_path, capsys, monkeypatch):
    """--resume --dataset binarized-mnist of a run trained on digits loaded (or downloaded) those data
    before it refused them by their shape; a named dataset is the same data under its name alone."""
    from dgmkit.data import registry

    out = _run(tmp_path, epochs=1)

    def loaded(*args, **kwargs):
        raise AssertionError("the data were loaded")

    monkeypatch.setattr(registry, "load_dataset", loaded)
    monkeypatch.setitem(registry.DATASETS, "binarized-mnist", loaded)
    code, _, err = dgm(capsys, "train", "--resume", "--epochs", "2", "--dataset", "binarized-mnist", "--out", out)
    refused(code, err, "was trained on (digits)", "--dataset binarized-mnist names other data")


def test_resume_of_a_run_that_stopped_early_says_why_it_trains_no_more(tmp_path, capsys):
    out = tmp_path / "early"
    argv = ["train", *TINY, "--lr", "0.3", "--patience", "1", "--epochs", "12", "--out", str(out)]
    assert main(argv) == 0
    done = len((out / "metrics.jsonl").read_text().splitlines())
    assert done < 12  # (it stopped early)
    capsys.readouterr()
    code, said, err = dgm(capsys, "train", "--resume", "--epochs", "20", "--out", out)
    assert code == 0, err
    assert f"stopped early after epoch {done}" in said and "a larger --patience lets it go on" in said
    assert len((out / "metrics.jsonl").read_text().splitlines()) == done
    code, said, _ = dgm(capsys, "train", "--resume", "--epochs", "20", "--patience", "50", "--out", out)
    assert code == 0 and "stopped early" not in said


def test_python_resume_of_a_run_stopped_before_its_first_checkpoint_starts_it_again(tmp_path, capsys):
    """dgm train --resume starts such a run again from its beginning; dgmkit.train(resume=True) said
    "no checkpoint at .../checkpoint.safetensors", and of a folder that is not there, that it had no
    config.json."""
    import pytest

    from dgmkit.errors import DgmError

    out = _run(tmp_path, epochs=2)
    straight = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    for name in ("checkpoint.safetensors", "best.safetensors", "metrics.jsonl"):
        (out / name).unlink()
    capsys.readouterr()
    run = dgmkit.train(out, resume=True, quiet=False)
    assert "starting it again from its beginning" in capsys.readouterr().out
    again = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert run.trainer["epoch"] == 2 and again["valid_elbo"] == straight["valid_elbo"]
    with pytest.raises(DgmError, match="nothing to resume: there is no run folder"):
        dgmkit.train(tmp_path / "nowhere", resume=True)


def test_class_conditional_samples_say_their_classes_and_put_one_in_each_column(tmp_path, capsys, monkeypatch):
    """M2 draws its classes in turn (y = i mod K): the line said "20 means of p(x|z), z ~ p(z)", and
    the default grid of 4 a row put the classes askew."""
    from dgmkit.cli import figures

    m2 = tmp_path / "m2"
    argv = ["train", "--model", "m2", "--dataset", "digits", "--labels", "50", "--hidden", "16", "--latent-dim", "2"]
    assert main([*argv, "--epochs", "1", "--quiet", "--out", str(m2)]) == 0
    rows = []
    grid = figures.image_grid_png
    monkeypatch.setattr(figures, "image_grid_png", lambda x, nrow: rows.append(nrow) or grid(x, nrow=nrow))
    capsys.readouterr()
    code, said, err = dgm(capsys, "sample", m2, "-n", "20", "--out", tmp_path / "m2.png")
    assert code == 0, err
    assert "y = i mod 10 of the i-th" in said and rows == [10]
    code, said, err = dgm(capsys, "sample", m2, "-n", "20", "--nrow", "4", "--out", tmp_path / "m4.png")
    assert code == 0 and rows == [10, 4]  # (a --nrow given is kept, and said: it was silent)
    assert said.rstrip().endswith("m4.png (4 a row, not a multiple of the 10 classes: a column holds several classes)")
    # fewer samples than classes: one row of them (it was a square grid, 2 a row for 5, classes askew), a multiple: no note
    for n, nrow, row in (("5", [], 5), ("20", ["--nrow", "20"], 20)):
        code, said, err = dgm(capsys, "sample", m2, "-n", n, *nrow, "--out", tmp_path / f"m{n}.png")
        assert code == 0 and rows[-1] == row and "a column holds" not in said


def test_python_resume_refuses_what_dgm_train_resume_refuses_in_its_own_words(tmp_path, capsys):
    """dgmkit.train(resume=True) and dgm train --resume judge a folder by one rule (RunFolder.
    starts_again): Python's call said "no config.json" of an empty folder, and of a folder whose
    checkpoint had gone but whose best weights stayed, "no checkpoint at ..." without that they are kept."""
    import os

    import pytest

    from dgmkit.errors import CheckpointError, ConfigError

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"holds no run .*run it again without resume=True"):
        dgmkit.train(empty, resume=True)
    out = _run(tmp_path, epochs=1)
    (out / "checkpoint.safetensors").unlink()
    with pytest.raises(ConfigError, match="holds no checkpoint.safetensors: its best.safetensors is kept"):
        dgmkit.train(out, resume=True)
    os.symlink(tmp_path / "elsewhere", out / "checkpoint.safetensors")
    with pytest.raises(CheckpointError, match="names no file: the run cannot be resumed from it"):
        dgmkit.train(out, resume=True)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a run folder"):
        dgmkit.train(a_file, resume=True)
    capsys.readouterr()
    code, _, err = dgm(capsys, "train", "--resume", "--out", empty)
    refused(code, err, "holds no run", "without --resume")
