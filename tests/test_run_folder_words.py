"""What a run folder that lost files, or is in use, is told. ``dgm eval`` of a folder that holds a
run's config.json and no checkpoint told the user to "train with `dgm train --out` FOLDER", which
refuses the folder as not empty; a run whose best.safetensors was removed was read from its last
checkpoint without a word; ``dgm train --resume --nproc 2`` of a run that another process was
training started its processes before refusing the folder."""

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
