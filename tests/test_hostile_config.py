"""Hostile configs and run records, each through the place where it enters: a config key set to an
empty path, a --resume config file with keys in the wrong table, a run record whose data have no
name, an empty --out. Each is refused in one `dgm: error:` line, before anything is written."""

import shutil

import pytest

from dgmkit.cli.main import main
from dgmkit.config import RunConfig
from dgmkit.errors import ConfigError
from run_records import rewrite_records
from test_safety_cli import assert_one_error_line, run, snapshot

TINY = ["--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--batch-size", "256", "--quiet"]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "vae"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture
def vae_copy(vae_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(vae_run, dst)
    return dst


@pytest.mark.parametrize("key", ["codes_of", "data_dir", "schema", "data_key"])
def test_an_empty_path_setting_is_refused_not_read_as_none_or_the_working_folder(key):
    """``codes_of = ""`` trained on --dataset (recorded as a run on another run's data), and
    ``data_dir = ""`` became the working folder: an empty value is refused, none is the default."""
    with pytest.raises(ConfigError, match=f"{key} is empty"):
        RunConfig.of(**{key: ""})
    assert getattr(RunConfig.of(**{key: None}).data, key) is None


def test_train_with_an_empty_codes_of_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "arm", "--likelihood", "categorical", *TINY[:2], "--epochs", "1", "--quiet"]
    code, _, err = run(capsys, *argv, "--codes-of", "", "--out", out)
    assert_one_error_line(code, err, "codes_of is empty")
    assert not out.exists()


def test_train_with_an_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    """(``Path("")`` is the working folder: a run would be written, or resumed, there.)"""
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--out", "")
    assert_one_error_line(code, err, "--out is empty")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "table, needle",
    [
        ({"data": {"epochs": 2}}, "c.toml (data): unknown key(s) 'epochs'"),
        ({"eval": {"latent_dim": 2}}, "c.toml (eval): unknown key(s) 'latent_dim'"),
        ({"model": {"name": "vae", "epochs": 2}}, "c.toml (model): 'epochs' is a key of [optim], not of the model"),
    ],
)
def test_given_keys_refuse_a_key_in_the_wrong_table(table, needle):
    """What --resume and dgmkit.train read of a config file: a key in another table than its own
    is refused as a fresh run's config refuses it, not moved to its own."""
    with pytest.raises(ConfigError) as e:
        RunConfig.given_keys(table, "c.toml")
    assert needle in str(e.value)
    with pytest.raises(ConfigError):
        RunConfig.from_dict(table, "c.toml")


def test_resume_refuses_a_config_file_with_a_key_in_the_wrong_table(vae_copy, tmp_path, capsys):
    config = tmp_path / "more.toml"
    config.write_text("[data]\nepochs = 2\n")
    before = snapshot(vae_copy)
    code, _, err = run(capsys, "train", "--resume", "--out", vae_copy, "--config", config)
    assert_one_error_line(code, err, "(data): unknown key(s) 'epochs'")
    assert snapshot(vae_copy) == before


@pytest.mark.parametrize("name", [None, 5, ""], ids=["missing", "int", "empty"])
def test_a_record_whose_data_have_no_name_is_refused_in_one_line(vae_copy, capsys, name):
    """dgm eval read the record's data name unchecked: a KeyError (a bug report) where it was
    missing, an eval.json of a dataset 5 (which dgm report then refused) where it was a number."""

    def edit(r: dict) -> dict:
        data = {k: v for k, v in r["data"].items() if k != "name"}
        return {**r, "data": data if name is None else {**data, "name": name}}

    rewrite_records(vae_copy, edit)
    before = snapshot(vae_copy)
    code, _, err = run(capsys, "eval", vae_copy, "--iw-samples", "1")
    assert_one_error_line(code, err, "the data's name")
    assert snapshot(vae_copy) == before


@pytest.mark.parametrize("flag", ["--data-dir", "--data", "--schema"])
def test_eval_with_an_empty_data_path_is_refused_by_its_flag(vae_copy, capsys, flag):
    """``--data ""`` was taken for a moved data file ("points at a moved data file"), and
    ``--data-dir ""`` for no flag at all: an empty path is refused by the flag's name."""
    before = snapshot(vae_copy)
    code, _, err = run(capsys, "eval", vae_copy, "--iw-samples", "1", flag, "")
    assert_one_error_line(code, err, f"{flag} is empty")
    assert snapshot(vae_copy) == before


def test_train_out_at_a_link_to_nothing_is_said_so(tmp_path, capsys):
    """(The system's words were "File exists", for a name that does not show as a file.)"""
    link = tmp_path / "run"
    link.symlink_to(tmp_path / "nowhere")
    code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--out", link)
    assert_one_error_line(code, err, "it is a link to nothing")
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()
