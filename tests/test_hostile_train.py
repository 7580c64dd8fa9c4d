"""What a hostile pass over ``dgm train`` and ``--resume`` found: a second ``dgm train`` into a
folder whose run was still in its first epoch (another process holding the folder's lock) was told
that the run had stopped before its first checkpoint and that ``--resume`` would start it again, and
``--resume`` then said it was starting the run again before it failed on the lock; both now say at
once that the folder is in use by another dgm process. A data file that exists but is not a
regular file (a FIFO, a folder named ``x.npy``) was refused as "no such data file", and is now
named as not a regular file; so is a run's checkpoint.safetensors that is one (a link to
/dev/zero, a dangling link, a FIFO, a folder), which --resume called absent ("holds no
checkpoint.safetensors"). --resume of a run whose config.json was edited to name other data
loaded those data first and refused them for reasons of their own (iris "cannot have a bernoulli
likelihood"); config.json is now compared with the checkpoint's header before any data load. A
config file with a key of a section beside the section tables
(``epochs = 1`` and an ``[optim]`` table) said the known key was unknown, and now says which table
it belongs in. The rest of what was tried (config files of wrong types, NaN, inf, huge numbers,
unknown, duplicate and foreign keys, deep nesting, 100 MB, a FIFO or /dev/zero; --out at a file, a
non-run folder, a run, a dangling link; resuming a run whose checkpoint is truncated, holds NaN,
belongs to another run or family; flags that contradict the run;
SIGINT and SIGKILL mid-epoch and before the first checkpoint, then --resume, which continued the
same metrics without duplicated lines; data of 1 to 5 rows, of NaN or inf, a batch larger than the
data, epochs 0, time budgets that expire at once) was refused in one line or behaved."""

import io
import json
import os
import shutil
import sys

import pytest

from dgm_cli import dgm, refused
from dgmkit import _lock
from dgmkit.cli.main import main
from dgmkit.training.run_writer import LOCK_NAME
from family_variants import family_variants, variant_id

TINY = ["--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--batch-size", "256", "--quiet"]


def test_a_folder_whose_run_is_in_its_first_epoch_is_said_to_be_in_use(tmp_path, capsys):
    """A run that another process is training (it holds the lock) and that has written only its
    config.json is in use, not stopped: neither a fresh run nor --resume calls it stranded."""
    out = tmp_path / "busy"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    (out / "checkpoint.safetensors").unlink()  # what a run in its first epoch has written: config.json alone
    (out / "best.safetensors").unlink()
    (out / "metrics.jsonl").unlink()
    held = _lock.acquire(out / LOCK_NAME, wait=False)  # (another process's, as flock sees it)
    try:
        code, said, err = dgm(capsys, "train", *TINY, "--epochs", "1", "--out", out)
        refused(code, err, "in use by another dgm process")
        assert "stopped before" not in err
        code, said, err = dgm(capsys, "train", "--resume", "--out", out)
        refused(code, err, "in use by another dgm process")
        assert "starting it again" not in said + err
    finally:
        held.release()
    assert sorted(os.listdir(out)) == [LOCK_NAME, "config.json"]


def test_a_non_run_folder_gets_no_lock_file_from_the_check(tmp_path, capsys):
    """The in-use check of a folder that holds other things creates nothing there."""
    out = tmp_path / "notes"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = dgm(capsys, "train", *TINY, "--epochs", "1", "--out", out)
    refused(code, err, "is not empty")
    assert os.listdir(out) == ["notes.txt"]


def test_a_data_path_that_is_not_a_regular_file_is_named_so(tmp_path, capsys):
    fifo, folder = tmp_path / "rows.npy", tmp_path / "dir.npy"
    os.mkfifo(fifo)
    folder.mkdir()
    for path in (fifo, folder):
        code, _, err = dgm(capsys, "train", "--dataset", path, "--epochs", "1", "--out", tmp_path / "run")
        refused(code, err, f"{path} is not a regular file")
        assert not (tmp_path / "run").exists()


def test_a_section_key_beside_the_section_tables_is_named_as_misplaced(tmp_path, capsys):
    config = tmp_path / "mixed.toml"
    config.write_text('epochs = 1\n[optim]\nlr = 0.001\n[model]\nname = "vae"\n')
    code, _, err = dgm(capsys, "train", "--config", config, "--out", tmp_path / "run")
    refused(code, err, "'epochs' is a key of [optim]")
    assert "unknown" not in err


def test_a_section_given_as_a_value_in_a_flat_config_is_named_as_a_table(tmp_path, capsys):
    # `optim = "fast"` with no table beside it was read as the flat form and called an unknown key
    given = (('optim = "fast"', "optim", "str"), ("eval = [1, 2]", "eval", "list"), ("data = 3", "data", "int"))
    for line, section, kind in given:
        config = tmp_path / f"{section}.toml"
        config.write_text(f"epochs = 1\n{line}\n")
        code, _, err = dgm(capsys, "train", "--config", config, "--out", tmp_path / "run")
        refused(code, err, f"[{section}] must be a table of keys, got {kind}")


def test_a_config_json_edited_to_other_data_is_named_before_the_data_load(tmp_path, capsys):
    """config.json edited after training to other settings: --resume says that it no longer
    describes the run's checkpoint, not what is wrong with those settings as the run's. The data's
    place may change (data moved: --resume names the new one and rewrites config.json): other data
    there are refused as such, before any tensor is built or written."""
    out = tmp_path / "edited"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    own = (out / "config.json").read_text()
    for section, key, value, needle in (
        ("data", "dataset", "iris", "the data now differ from those"),
        ("model", "hidden", [4096] * 8, "was config.json edited?"),
    ):
        record = json.loads(own)
        record["config"][section][key] = value
        (out / "config.json").write_text(json.dumps(record))
        before = {n: (out / n).read_bytes() for n in os.listdir(out)}
        code, _, err = dgm(capsys, "train", "--resume", "--epochs", "2", "--out", out)
        refused(code, err, needle)
        assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before


def test_a_setting_deleted_from_config_json_is_named_not_taken_as_its_default(tmp_path, capsys):
    """optim.epochs deleted from config.json: `dgm train --resume` went on to the default 50 epochs
    (the run had 1) without a word; it and `dgm eval` name the missing setting now."""
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    record = json.loads((out / "config.json").read_text())
    del record["config"]["optim"]["epochs"]
    (out / "config.json").write_text(json.dumps(record))
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    for argv in (("train", "--resume", "--out", out), ("eval", out)):
        code, _, err = dgm(capsys, *argv)
        refused(code, err, f"{out / 'config.json'} lacks optim.epochs, which {out}")
        assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    (out / "config.json").unlink()  # (the checkpoint's record, as the message says)
    code, _, err = dgm(capsys, "eval", out)
    assert code == 0, err


def test_an_undecodable_folder_name_is_written_escaped_to_a_strict_stdout(tmp_path, monkeypatch):
    """--out with a byte that is not UTF-8 (a lone surrogate in Python) under a stdout that refuses
    one (PYTHONIOENCODING=utf-8:strict): the run was trained, then its last line was an internal
    error, UnicodeEncodeError. The line says the name with its escape now."""
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", stdout)
    out = os.fsdecode(os.fsencode(tmp_path) + b"/r\x80n")
    assert main(["train", *TINY, "--epochs", "1", "--out", out]) == 0
    stdout.flush()
    text = stdout.buffer.getvalue().decode()
    assert "run folder: " in text and "r\\udc80n" in text, text
    assert (tmp_path / os.fsdecode(b"r\x80n") / "config.json").is_file()


def test_a_checkpoint_that_is_not_a_regular_file_is_named_on_resume(tmp_path, capsys):
    """checkpoint.safetensors replaced by a link to /dev/zero, a dangling link, a FIFO or a folder:
    --resume names it, rather than saying that the folder holds none."""
    run = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    spoilers = {
        "zero": lambda p: p.symlink_to("/dev/zero"),
        "dangling": lambda p: p.symlink_to(tmp_path / "nowhere"),
        "fifo": lambda p: os.mkfifo(p),
        "folder": lambda p: p.mkdir(),
    }
    for name, spoil in spoilers.items():
        out = tmp_path / name
        shutil.copytree(run, out)
        (out / "checkpoint.safetensors").unlink()
        spoil(out / "checkpoint.safetensors")
        code, _, err = dgm(capsys, "train", "--resume", "--epochs", "2", "--out", out)
        refused(code, err, f"{out / 'checkpoint.safetensors'}", "cannot be resumed")
        assert "holds no checkpoint" not in err


def test_a_run_whose_data_moved_resumes_from_their_new_place_and_other_data_there_are_refused(tmp_path, capsys):
    """The data folder or file moved (another machine, another folder): --resume said "no such data
    file", and refused --dataset or --data-dir at the new place as contradicting the run. The
    content digest the run recorded pins its data, not their place or file name."""
    import numpy as np

    import dgmkit

    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    np.save(tmp_path / "a" / "one.npy", rng.integers(0, 2, (200, 4, 4)).astype(np.uint8))
    out = tmp_path / "run"
    argv = ["--hidden", "8", "--latent-dim", "2", "--quiet", "--out", str(out)]
    assert main(["train", "--dataset", str(tmp_path / "a" / "one.npy"), "--epochs", "1", *argv]) == 0
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "one.npy").rename(tmp_path / "b" / "two.npy")
    code, _, err = dgm(capsys, "train", "--resume", "--epochs", "2", "--out", out)
    refused(code, err, "no such data file")
    code, _, err = dgm(capsys, "train", "--resume", "--epochs", "2", "--dataset", tmp_path / "b" / "two.npy", "--out", out)
    assert code == 0, err
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["data"]["dataset"] == str(tmp_path / "b" / "two.npy") and record["data"]["name"] == "two.npy"
    assert dgmkit.evaluate(out, iw_samples=2).n == 20  # read from the new place (config.json's; best may be older)
    # other data at a new place: refused, of another shape before anything is built, of the same by their digest
    np.save(tmp_path / "b" / "other.npy", rng.integers(0, 2, (200, 4, 4)).astype(np.uint8))
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    for dataset, needle in ((tmp_path / "b" / "other.npy", "content SHA-256"), ("digits", "digits names other data")):
        code, _, err = dgm(capsys, "train", "--resume", "--epochs", "3", "--dataset", dataset, "--out", out)
        refused(code, err, "the data now differ from those", needle)
        assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    # from Python too; still the same run, with its epochs
    run = dgmkit.train(out, resume=True, epochs=3, dataset=tmp_path / "b" / "two.npy")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3] and run.cfg.data.dataset == str(tmp_path / "b" / "two.npy")
    # moved again, with nothing left to train: config.json names the new place, newer than every checkpoint's
    (tmp_path / "b" / "two.npy").rename(tmp_path / "three.npy")
    code, _, err = dgm(capsys, "train", "--resume", "--epochs", "3", "--dataset", tmp_path / "three.npy", "--out", out)
    assert code == 0, err
    assert dgmkit.load(out).cfg.data.dataset == str(tmp_path / "three.npy") and dgmkit.evaluate(out, iw_samples=2).n == 20
    # a run that recorded no content digest (an older dgmkit's) cannot tell its data at a new place: said so
    from run_records import rewrite_records

    def no_digest(record):
        record["data"].pop("sha256", None)
        return record

    old = tmp_path / "old"
    assert main(["train", "--dataset", str(tmp_path / "three.npy"), "--epochs", "1", *argv[:-1], str(old)]) == 0
    rewrite_records(old, no_digest)
    (tmp_path / "four.npy").write_bytes((tmp_path / "three.npy").read_bytes())
    code, _, err = dgm(capsys, "train", "--resume", "--epochs", "4", "--dataset", tmp_path / "four.npy", "--out", old)
    refused(code, err, "recorded no content digest of its data (it was written by an older dgmkit)", "put them back")
    # a new place named relative to the working folder is recorded in full, as a fresh run's
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert dgm(capsys, "train", "--resume", "--epochs", "4", "--dataset", "four.npy", "--out", out)[0] == 0
    finally:
        os.chdir(cwd)
    assert json.loads((out / "config.json").read_text())["config"]["data"]["dataset"] == str(tmp_path / "four.npy")


def test_resuming_with_the_config_file_that_sets_other_epochs_says_so(tmp_path, capsys):
    """A preset's epochs (3000 in m2-mnist-100) replaced the run's own (--epochs 2) without a word."""
    (tmp_path / "c.toml").write_text('dataset = "digits"\nhidden = [8]\nlatent_dim = 2\nepochs = 2\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--resume", "--quiet", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"note: {tmp_path / 'c.toml'} sets epochs = 2 (the run had 1): the resumed run goes on with it" in said
    assert json.loads((out / "config.json").read_text())["config"]["optim"]["epochs"] == 2
    assert (
        main(["train", "--config", str(tmp_path / "c.toml"), "--resume", "--epochs", "3", "--quiet", "--out", str(out)]) == 0
    )
    assert "note:" not in capsys.readouterr().out  # (a flag says it itself)
    # fewer epochs than the run trained (3), or none: refused, and no note that the run goes on with them first
    for epochs, needle in ((1, "has trained 3 epochs, more than the 1 asked for"), (0, "epochs")):
        (tmp_path / "c.toml").write_text(f'dataset = "digits"\nhidden = [8]\nlatent_dim = 2\nepochs = {epochs}\n')
        assert main(["train", "--config", str(tmp_path / "c.toml"), "--resume", "--quiet", "--out", str(out)]) == 1
        said, err = capsys.readouterr()
        assert "note:" not in said and needle in err, (said, err)


def test_a_config_file_given_to_a_resume_is_checked_whole_and_named_as_a_new_runs_is(tmp_path, capsys):
    """A new run's --config file is checked whole, flags or not, and a wrong value named with the file; a
    resume's took epochs = "3" where --epochs 2 overrode it (and trained), and without the flag refused it
    naming no file ("epochs has the wrong type: '3' (expected int)")."""
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    path = tmp_path / "c.toml"
    path.write_text('epochs = "3"\nhidden = [8]\n')
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    for flags in (["--epochs", "2"], []):
        assert main(["train", "--resume", "--config", str(path), *flags, "--quiet", "--out", str(out)]) == 1
        assert f"dgm: error: {path}: epochs has the wrong type: '3' (expected int)" in capsys.readouterr().err
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before


def test_a_run_whose_config_json_was_deleted_resumes_from_its_checkpoints_record(tmp_path, capsys):
    """config.json deleted by hand: --resume said "no such file or folder" though
    checkpoint.safetensors holds the run's record; it now goes on from that record, says so and
    writes config.json again (from Python too). A config.json that is there but unreadable is still
    refused: only a missing one is taken from the checkpoint."""
    import dgmkit

    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    was = json.loads((out / "config.json").read_text())
    (out / "config.json").unlink()
    code, said, err = dgm(capsys, "train", "--resume", "--epochs", "2", "--quiet", "--out", out)
    assert code == 0, err
    assert f"note: {out / 'config.json'} was missing; written again from the record in checkpoint.safetensors" in said
    now = json.loads((out / "config.json").read_text())
    assert now["run_id"] == was["run_id"] and now["config"]["optim"]["epochs"] == 2
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    (out / "config.json").unlink()
    run = dgmkit.train(out, resume=True, epochs=3)
    assert run.cfg.optim.epochs == 3 and json.loads((out / "config.json").read_text())["run_id"] == was["run_id"]
    (out / "config.json").unlink()
    (out / "config.json").symlink_to(tmp_path / "nowhere")
    code, _, err = dgm(capsys, "train", "--resume", "--epochs", "4", "--out", out)
    refused(code, err, "config.json")


def test_settings_of_a_model_too_large_to_hold_are_refused_before_any_weight_is_allocated(tmp_path, capsys):
    # eight layers of 16384 units, each in range: 3.8 billion weights (14 GiB), which the build allocated and
    # wrote layer by layer until the machine's memory ran out (the OOM killer, no message); counted on the meta
    # device now, and refused by name
    config = tmp_path / "huge.toml"
    config.write_text(f"hidden = {[16384] * 8}\nepochs = 1\n")
    code, _, err = dgm(capsys, "train", "--config", config, "--out", tmp_path / "run", "--dataset", "digits")
    refused(code, err, "3,762,028,672 weights", "at most 1,073,741,824")
    assert not (tmp_path / "run" / "config.json").exists()


def test_the_weight_limit_counts_the_model_that_would_be_built(tmp_path, capsys, monkeypatch):
    from dgmkit.config import RunConfig, build_model, run

    cfg = RunConfig.from_dict({"dataset": "digits", "hidden": [8], "latent_dim": 2})
    size = sum(p.numel() for p in build_model(cfg, (1, 8, 8), 17).parameters())
    monkeypatch.setattr(run, "MAX_PARAMETERS", size - 1)
    code, _, err = dgm(capsys, "train", "--out", tmp_path / "run", *TINY, "--epochs", "1")
    refused(code, err, f"would hold {size:,} weights")
    monkeypatch.setattr(run, "MAX_PARAMETERS", size)
    assert dgm(capsys, "train", "--out", tmp_path / "run", *TINY, "--epochs", "1")[0] == 0


@pytest.mark.parametrize(
    "name,change", [pytest.param(n, c, marks=[pytest.mark.slow] if c else []) for n, c in family_variants()], ids=variant_id
)
def test_every_family_is_counted_on_the_meta_device_as_it_is_built(name, change):
    """The weight limit is only a limit where the meta-device build runs: a family whose build fails
    there (a CPU tensor met on the way, an op without a meta kernel) is built unchecked, as the check
    must allow for data-reading builds. Every variant that builds for the digits counts on the meta
    device the weights it is built with (a coupling mask made on the CPU made the flows' meta build
    fail, and their size unchecked, unseen)."""
    import torch

    from dgmkit.config import RunConfig, build_model
    from dgmkit.errors import ConfigError

    try:
        cfg = RunConfig.from_dict({"dataset": "digits", "model": name, **change})
        real = sum(p.numel() for p in build_model(cfg, (1, 8, 8), 17).parameters())
    except ConfigError:  # (a variant of other data: a table's likelihood, a conflicting pair's half)
        pytest.skip("not a model of the digits")
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        meta = cfg.model.build((1, 8, 8), 17, None, cfg.optim.seed)
    assert sum(p.numel() for p in meta.parameters()) == real
