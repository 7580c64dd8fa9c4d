"""Bad input through the real `dgm` entry point, one test per class of defect (issue 10): each
asserts the exit code, a single `dgm: error:` line and the file system before and after
(nothing created, nothing overwritten, nothing deleted). The parsers' own property-based
tests are in test_safety_readers.py and test_safety_coding.py."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dgmkit._io import atomic_folder, check_new_output, to_json
from dgmkit.cli.main import EXIT_BUG, main
from dgmkit.config import RunConfig, load_config_file, load_run, migrate_record
from dgmkit.errors import CheckpointError, ConfigError, DgmError
from dgmkit.training import RunFolder, load_checkpoint, read_metadata, save_checkpoint
from dgmkit.training.checkpoint import VERSION, content_sha256
from family_variants import family_variants, variant_id
from run_records import crafted_checkpoint, edit_metadata, edit_tensors, rewrite_records

TINY = ["--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--batch-size", "256", "--quiet"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code, err, *needles, exit_code=1):
    assert code == exit_code, err
    assert err.startswith("dgm: "), err
    assert err.count("\n") == 1, f"expected one line, got:\n{err}"
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


def snapshot(*folders: Path) -> dict:
    """Every file under ``folders``: its bytes' digest and modification time."""
    out = {}
    for folder in folders:
        if not folder.exists():
            continue
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            else:
                out[str(p)] = "dir"
    return out


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("safety") / "vae"
    assert main(["train", *TINY, "--epochs", "2", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def arm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("safety") / "arm"
    argv = ["train", "--model", "arm", "--dataset", "digits-4x4", "--channels", "4", "--arm-layers", "2"]
    assert main([*argv, "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    return out


@pytest.fixture
def vae_copy(vae_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(vae_run, dst)
    return dst


def test_a_runs_weights_digest_is_of_the_bytes_its_weights_came_from(vae_copy):
    """The digest that evaluations, OOD scores and derived data record names the weights that
    were loaded, not a checkpoint written over them since (a run trained on)."""
    best = vae_copy / "best.safetensors"
    loaded, counters = best.read_bytes(), json.loads(read_metadata(best)["trainer"])
    run = load_run(vae_copy)
    shutil.copy(vae_copy / "checkpoint.safetensors", vae_copy / "newer")
    os.replace(vae_copy / "newer", best)
    assert best.read_bytes() != loaded
    assert run.weights_digest() == hashlib.sha256(loaded).hexdigest()[:16]
    assert run.trainer == counters


# ---------------------------------------------------------------- flags and exit codes
@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--grad-clip", "-1"], "grad_clip must be > 0"),
        (["train", "--patience", "0"], "patience must be >= 1"),
        (["train", "--epochs", "1.5"], "epochs takes int"),
        (["train", "--seed", str(2**70)], "seed must be <="),
        (["train", "--lr", "nan"], "lr must be a finite number"),
        (["train", "--iw-samples", "-1"], "iw_samples must be >= 0"),
        (["train", "--dataset", "digits", "--iw-samples", "0"], "iw_samples 0: the vae model's log p(x) is estimated"),
        (["train", "--model", "vae", "--iw-k", str(10**9)], "iw_k must be <= 5000"),
        (["train", "--model", "arm", "--arm-kernel", "99999"], "arm_kernel must be <= 31"),
        (["train", "--model", "vae", "--hidden", *["8"] * 65], "at most 64 values"),
        (["eval", "RUN", "--iw-samples", "-3"], "--iw-samples must be in 1.."),
        (["eval", "RUN", "--iw-samples", "0"], "--iw-samples must be in 1..1000000000, got 0"),
        (["compress", "RUN", "x.npy", "--out", "x.dgmz", "--batch-size", "0"], "--batch-size must be in 1..10"),
        (["compress", "RUN", "x.npy", "--out", "y.dgmz", "--batch-size", "x"], "--batch-size: expected an integer, got 'x'"),
        (["eval", "RUN", "--seed", str(2**70)], "a seed must be in 0.."),
        (["sample", "RUN", "--out", "x.png", "--nrow", "-3"], "--nrow must be in 1.."),
        (["sample", "RUN", "--out", "x.png", "--temperature", "inf"], "expected a finite number"),
        (["sample", "RUN", "--out", "x.png", "--temperature", "warm"], "expected a number, got 'warm'"),
        (["sample", "RUN", "--out", "x.png", "--temperature", "0"], "must be > 0 and <= 100, got 0"),
        (["sample", "RUN", "--out", "x.png", "--temperature", "9" * 400], "expected a finite number, got '9999"),
        (["eval", "RUN", "--iw-samples", "many"], "expected an integer, got 'many'"),
        (["eval", "RUN", "--seed", "9" * 5000], "a seed must be in 0..4294967295, got an integer of 5000 digits"),
        (
            ["eval", "RUN", "--iw-samples", "9" * 4000],
            "--iw-samples must be in 1..1000000000, got an integer of 4000 digits",
        ),
        (["eval", "RUN", "--iw-samples", "+-5"], "expected an integer, got '+-5'"),
        (["sample", "RUN", "--out", "x.png", "-n", "0"], "-n must be in 1.."),
        (["interpolate", "RUN", "--out", "x.png", "--steps", "1"], "--steps must be in 2.."),
        (["density", "RUN", "--out", "x.png", "--grid", "-5"], "--grid must be in 10.."),
        (["compress", "RUN", "x.npy"], "required"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_bad_flags_are_one_line_user_errors(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if argv[0] == "train":
        argv = [*argv, "--out", "run"]
    code, _, err = run(capsys, *argv)
    assert_one_error_line(code, err, needle)
    assert len(err) < 300, "the error repeats a long argument in full"
    assert list(tmp_path.iterdir()) == [], "a refused command created files"


def test_an_unexpected_exception_is_reported_as_a_bug_with_its_traceback_on_file(capsys, monkeypatch, tmp_path):
    import dgmkit.cli.evaluate as evaluate

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)

    def boom(args):
        raise ZeroDivisionError("deliberate")

    monkeypatch.setattr(evaluate, "run_eval", boom)
    code, _, err = run(capsys, "eval", "somewhere")
    assert_one_error_line(code, err, "internal error", "a bug", "ZeroDivisionError: deliberate", exit_code=EXIT_BUG)
    path = err.strip().rsplit("the traceback is in ", 1)[1]
    assert Path(path).parent == tmp_path and "Traceback" in Path(path).read_text()


def test_a_bug_whose_traceback_cannot_be_saved_is_still_said_in_one_line(capsys, monkeypatch, tmp_path):
    import tempfile

    import dgmkit.cli.evaluate as evaluate

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))

    def boom(args):
        raise ZeroDivisionError("deliberate")

    monkeypatch.setattr(evaluate, "run_eval", boom)
    code, _, err = run(capsys, "eval", "somewhere")
    assert_one_error_line(code, err, "a bug", "ZeroDivisionError: deliberate", "(the traceback could not be saved)",
                          exit_code=EXIT_BUG)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_the_console_script_exit_codes():
    ok = subprocess.run([sys.executable, "-m", "dgmkit.cli.main", "--version"], capture_output=True, text=True)
    assert ok.returncode == 0
    bad = subprocess.run([sys.executable, "-m", "dgmkit.cli.main", "eval"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("dgm: error:")


def test_read_errors_do_not_say_cannot_write(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--config", tmp_path / "missing.toml", "--out", tmp_path / "run")
    assert_one_error_line(code, err, "missing.toml")
    assert "write" not in err
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"dataset = '\xe9t\xe9'\n")
    code, _, err = run(capsys, "train", "--config", bad, "--out", tmp_path / "run")
    assert_one_error_line(code, err, "latin1.toml")
    assert not (tmp_path / "run").exists()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_any_config_file_bytes_load_or_give_a_config_error(tmp_path, data):
    for suffix in (".toml", ".json"):
        path = tmp_path / f"c{suffix}"
        path.write_bytes(data)
        try:
            RunConfig.from_dict(load_config_file(path), str(path))
        except ConfigError:
            pass


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["epochs", "lr", "hidden", "model", "dataset", "binarize", "seed", "grad_clip", "data", "optim"]),
    _json_values,
)
def test_any_config_value_is_accepted_valid_or_refused_with_a_config_error(key, value):
    try:
        cfg = RunConfig.from_dict({key: value}, "test")
    except ConfigError:
        return
    assert RunConfig.from_dict(cfg.to_dict(), "round trip") == cfg


def test_tensorboard_without_its_package_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a))
    code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--tensorboard", "--out", tmp_path / "run")
    assert_one_error_line(code, err, "--tensorboard needs the tensorboard package: pip install tensorboard")
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_without_its_package_is_refused_before_nproc_starts_its_processes(tmp_path, capsys, monkeypatch):
    """dgm train --nproc 2 --tensorboard said "starting 2 processes with torchrun" and started
    them (seconds each) for every rank to refuse the flag alike; --nproc checks the config before."""
    import importlib.util

    import dgmkit.cli.train as train

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a))
    monkeypatch.setattr(train, "_launch", lambda args: pytest.fail("the processes were started"))
    code, out, err = run(capsys, "train", *TINY, "--epochs", "1", "--tensorboard", "--nproc", "2", "--out", tmp_path / "run")
    assert_one_error_line(code, err, "--tensorboard needs the tensorboard package: pip install tensorboard")
    assert "starting" not in out and list(tmp_path.iterdir()) == []


def test_deeply_nested_or_duplicated_config_keys_are_config_errors(tmp_path, capsys):
    for name, text in [
        ("deep.json", "[" * 100_000 + "]" * 100_000),
        ("deep2.json", '{"a":' * 50_000 + "1" + "}" * 50_000),
        ("twice.json", '{"epochs": 1, "epochs": 2}'),
        ("nan.json", '{"lr": NaN}'),
        ("inf.json", '{"lr": 1e999}'),  # (Python reads it as inf)
        ("deep.toml", "a = " + "[" * 100_000 + "]" * 100_000),  # (tomllib raises RecursionError: said as such)
        ("deep2.toml", "a = " + "{b = " * 5_000 + "1" + "}" * 5_000),
        ("list.json", "[1, 2]"),
        ("digits.json", '{"epochs": ' + "9" * 5000 + "}"),  # (said Python's "use sys.set_int_max_str_digits()")
    ]:
        (tmp_path / name).write_text(text)
        code, _, err = run(capsys, "train", "--config", tmp_path / name, "--out", tmp_path / "run")
        assert_one_error_line(code, err, name)
        if name.startswith("deep"):
            assert "nested too deeply" in err, err
        if name == "list.json":
            assert "must hold a table of keys" in err, err
        if name == "inf.json":
            assert "beyond a float's range" in err, err
        if name == "digits.json":
            assert "an integer of 5000 digits" in err and "set_int_max_str_digits" not in err, err
    assert not (tmp_path / "run").exists()


def test_a_config_file_larger_than_16_mib_is_refused_unparsed(tmp_path, capsys):
    path = tmp_path / "big.toml"
    path.write_bytes(b"epochs = 1\n" + b"#" * (16 << 20))
    code, _, err = run(capsys, "train", "--config", path, "--out", tmp_path / "run")
    assert_one_error_line(code, err, "big.toml", "larger than 16 MiB")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.toml"]


# ---------------------------------------------------------------- run folders
def test_a_fresh_run_refuses_a_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--out", out)
    assert_one_error_line(code, err, "is not empty", "metrics.jsonl")
    assert snapshot(out) == before


def test_a_failed_fresh_run_leaves_nothing(tmp_path, capsys, monkeypatch):
    from dgmkit.training import trainer

    def diverge(self):
        raise DgmError("stop in the first epoch")

    monkeypatch.setattr(trainer.Trainer, "_train_epoch", diverge)
    code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--out", tmp_path / "new" / "run")
    assert_one_error_line(code, err, "stop in the first epoch")
    assert list(tmp_path.iterdir()) == []


def test_two_trainings_cannot_share_a_folder(tmp_path, capsys):
    out = tmp_path / "run"
    with RunFolder(out, fresh=True):  # another process holds the folder
        code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--out", out)
        assert_one_error_line(code, err, "in use by another dgm process")
        assert sorted(p.name for p in out.iterdir()) == [".dgm.lock"]


def test_the_lock_is_exclusive_across_processes(tmp_path):
    out = tmp_path / "run"
    script = (
        "import time; from dgmkit.training import RunFolder\n"
        f"with RunFolder({str(out)!r}, fresh=True):\n    print('held', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DgmError, match="in use"), RunFolder(out, fresh=False):
            pass
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with RunFolder(out, fresh=False):  # released when its holder dies
        pass


def test_resume_refuses_a_checkpoint_of_another_run(vae_run, tmp_path, capsys):
    # two runs with the same settings: the same architecture, but not the same run
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert run(capsys, "train", *TINY, "--epochs", "1", "--out", out)[0] == 0
    for name in ("checkpoint.safetensors", "best.safetensors"):
        shutil.copy(b / name, a / name)
    before = snapshot(a)
    code, _, err = run(capsys, "train", "--resume", "--epochs", "2", "--quiet", "--out", a)
    assert_one_error_line(code, err, "belongs to another run")
    assert snapshot(a) == before
    # and the commands that read a run refuse it too
    code, _, err = run(capsys, "eval", a, "--iw-samples", "1")
    assert_one_error_line(code, err, "belongs to another run")


def test_resume_refuses_a_checkpoint_of_another_architecture(vae_copy, tmp_path, capsys):
    other = tmp_path / "other"
    assert run(capsys, "train", *TINY, "--latent-dim", "3", "--epochs", "1", "--out", other)[0] == 0
    shutil.copy(other / "checkpoint.safetensors", vae_copy / "checkpoint.safetensors")
    before = snapshot(vae_copy)
    code, _, err = run(capsys, "train", "--resume", "--epochs", "3", "--quiet", "--out", vae_copy)
    assert_one_error_line(code, err)
    assert snapshot(vae_copy) == before


def test_resume_refuses_an_edited_config(vae_copy, capsys):
    record = json.loads((vae_copy / "config.json").read_text())
    record["config"]["model"]["latent_dim"] = 3
    (vae_copy / "config.json").write_text(json.dumps(record))
    before = snapshot(vae_copy)
    code, _, err = run(capsys, "train", "--resume", "--epochs", "3", "--quiet", "--out", vae_copy)
    assert_one_error_line(code, err, "config.json")
    assert snapshot(vae_copy) == before
    (vae_copy / "config.json").write_text("{not json")
    code, _, err = run(capsys, "train", "--resume", "--epochs", "3", "--quiet", "--out", vae_copy)
    assert_one_error_line(code, err, "config.json")


@pytest.mark.parametrize(
    "text", ["epochs = 3\n", "[optim]\nepochs = 3\npatience = 2\n", 'model = "vae"\n[optim]\nepochs = 3\n']
)
def test_resume_with_a_config_file_of_free_keys_only(vae_copy, tmp_path, capsys, text):
    """A config file given with --resume sets only its own keys (not the defaults of the rest)."""
    (tmp_path / "more.toml").write_text(text)
    code, _, err = run(capsys, "train", "--resume", "--config", tmp_path / "more.toml", "--quiet", "--out", vae_copy)
    assert code == 0, err
    assert json.loads((vae_copy / "config.json").read_text())["config"]["optim"]["epochs"] == 3
    (tmp_path / "lr.toml").write_text("lr = 0.3\n")
    code, _, err = run(capsys, "train", "--resume", "--config", tmp_path / "lr.toml", "--quiet", "--out", vae_copy)
    assert_one_error_line(code, err, "lr = 0.3", "contradict")
    assert "hidden" not in err


def _edit_metadata(path: Path, key: str, edit) -> None:
    """The JSON value under ``key`` of a checkpoint's metadata replaced by ``edit(value)``."""
    edit_metadata(path, lambda meta: meta.update({key: json.dumps(edit(json.loads(meta[key])))}))


@pytest.mark.parametrize(
    "key, edit, needle",
    [
        ("trainer", lambda t: {k: v for k, v in t.items() if k != "epoch"}, "counter epoch"),
        ("trainer", lambda t: {**t, "best_epoch": 99}, "contradict each other"),
        ("trainer", lambda t: {**t, "best_valid": "high"}, "best_valid"),
        ("trainer", lambda t: {**t, "best_valid": 1e308}, "best_valid = 1e+308 is no score of a datapoint (beyond +-1e+12"),
        ("trainer", lambda t: [t], "its trainer metadata is not a dict"),  # (refused by load_checkpoint)
        ("trainer", lambda t: {**t, "scaler": [1.0]}, "the gradient scaler state is not a table"),
        ("trainer", lambda t: {**t, "recent_grad_norms": [1.0, -2.0]}, "recent_grad_norms is not a list"),
        ("trainer", lambda t: {**t, "recent_grad_norms": [1.0] * 101}, "at most 100 finite gradient norms"),
        ("trainer", lambda t: {**t, "cpu_threads": 0}, "cpu_threads = '0' is not a number of threads"),
        ("trainer", lambda t: {**t, "cpu_threads": "2"}, "cpu_threads = '2' is not a number of threads"),
        ("optimizer", lambda o: {**o, "param_groups": "all"}, "optimizer state"),
        ("optimizer", lambda o: {**o, "scalars": {"0/step": 1}}, "optimizer"),
        # an index no state entry names: load_state_dict dropped parameter 0's moments without a word
        (
            "optimizer",
            lambda o: {
                **o,
                "param_groups": [{**o["param_groups"][0], "params": [10**20, *o["param_groups"][0]["params"][1:]]}],
            },
            "parameter indices are not 0..",
        ),
    ],
)
def test_crafted_trainer_state_is_refused_and_changes_nothing(vae_copy, capsys, key, edit, needle):
    _edit_metadata(vae_copy / "checkpoint.safetensors", key, edit)
    before = snapshot(vae_copy)
    code, _, err = run(capsys, "train", "--resume", "--epochs", "3", "--quiet", "--out", vae_copy)
    assert_one_error_line(code, err, needle)
    assert snapshot(vae_copy) == before


@pytest.mark.parametrize("entry", ["step", "exp_avg_sq"])
def test_an_optimizer_state_adam_never_writes_is_refused(vae_copy, capsys, entry):
    """A negative step count or second moment made every update NaN, and the run was then told
    to lower its learning rate."""
    from safetensors import safe_open

    path = vae_copy / "checkpoint.safetensors"
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    keys = [k for k in tensors if k.startswith("optim/") and k.endswith(f"/{entry}")]
    assert keys, sorted(tensors)[:8]
    tensors[keys[0]] = -tensors[keys[0]].abs() - 1
    path.write_bytes(crafted_checkpoint(tensors, read_metadata(path)))
    before = snapshot(vae_copy)
    code, _, err = run(capsys, "train", "--resume", "--epochs", "3", "--quiet", "--out", vae_copy)
    assert_one_error_line(code, err, entry, "negative")
    assert snapshot(vae_copy) == before


def test_adam_moments_of_another_dtype_than_floating_point_are_refused(vae_copy, capsys):
    """Adam's first moments' float bits labelled int32 were converted to the parameters' float32 by
    load_state_dict as the integers they read as (some 1e9): the resume went on and diverged, and the run was
    told to lower its learning rate."""
    edit_tensors(
        vae_copy / "checkpoint.safetensors",
        lambda t: t.update({k: v.view(torch.int32) for k, v in t.items() if k.endswith("/exp_avg")}),
    )
    before = snapshot(vae_copy)
    code, _, err = run(capsys, "train", "--resume", "--epochs", "3", "--quiet", "--out", vae_copy)
    assert_one_error_line(code, err, "malformed optimizer state", "floating-point tensors only")
    assert snapshot(vae_copy) == before


def test_a_checkpoint_with_no_adam_state_after_its_steps_is_refused(vae_copy, capsys):
    """A checkpoint after an epoch's steps whose optimizer holds no Adam moments was resumed without
    a word: Adam restarted from zero moments, and the run did not go on as it was."""
    edit_tensors(vae_copy / "checkpoint.safetensors", lambda t: [t.pop(k) for k in list(t) if k.startswith("optim/")])
    before = snapshot(vae_copy)
    code, _, err = run(capsys, "train", "--resume", "--epochs", "3", "--quiet", "--out", vae_copy)
    assert_one_error_line(code, err, "holds no Adam state for any parameter, after 10 updates")
    assert snapshot(vae_copy) == before


def test_a_parameter_that_a_model_of_ones_own_leaves_unused_needs_no_adam_state():
    """Adam never steps a parameter that gets no gradient: its state is none, and an optimizer
    holding the others' is one a run wrote (a model of one's own may leave one unused)."""
    from dgmkit.training.trainer import _adam, _check_optimizer_state

    used, unused = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    adam = _adam([used, unused], lr=1e-3)
    _check_optimizer_state(adam, taken=0)  # (no update yet: none is due)
    (used * used).sum().backward()
    adam.step()
    _check_optimizer_state(adam, taken=1)
    adam.state[used]["step"] += 1  # (one update more than were taken: Adam's bias correction would change)
    with pytest.raises(ValueError, match="step counts 2 updates, after 1 update taken"):
        _check_optimizer_state(adam, taken=1)
    _check_optimizer_state(adam, taken=2)
    adam.state.clear()
    with pytest.raises(ValueError, match="^it holds no Adam state for any parameter, after 1 update$"):
        _check_optimizer_state(adam, taken=1)


def _rename(tensors: dict, old: str, new: str) -> None:
    tensors[new] = tensors.pop(old)


@pytest.mark.parametrize(
    "edit, needle",
    [
        # the weights to evaluate, copied over the last checkpoint: no optimizer or random states
        (lambda run: shutil.copy(run / "best.safetensors", run / "checkpoint.safetensors"), "holds no training state"),
        (
            lambda run: edit_tensors(
                run / "checkpoint.safetensors", lambda t: t.update({"rng/torch": t["rng/torch"].float()})
            ),
            "holds no valid random generator states",
        ),
        (
            lambda run: edit_tensors(run / "checkpoint.safetensors", lambda t: t.pop("rng/data")),
            "holds no valid random generator states",
        ),
        (
            lambda run: edit_tensors(
                run / "checkpoint.safetensors", lambda t: t.update({"optim/0/exp_avg": torch.zeros(3)})
            ),
            "the optimizer's exp_avg does not match a parameter of shape",
        ),
        # parameter 0's moments filed under an index no group has: load_state_dict would drop them without a word
        (
            lambda run: edit_tensors(
                run / "checkpoint.safetensors",
                lambda t: [_rename(t, f"optim/0/{k}", f"optim/99/{k}") for k in ("exp_avg", "exp_avg_sq", "step")],
            ),
            "holds state for parameter 99, which none of its groups has",
        ),
        (
            lambda run: (run / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n'),
            "metrics.jsonl line 2 is not a metrics",
        ),
        (lambda run: (run / "metrics.jsonl").write_text('{"epoch": true}\n'), "metrics.jsonl line 1 is not a metrics"),
        # (17 MiB of nested empty lists took 27 times that to parse: a line over 16 MiB is refused unparsed)
        (
            lambda run: (run / "metrics.jsonl").write_text('{"epoch": 1, "x": [' + "[]," * ((17 << 20) // 3) + "[]]}\n"),
            "metrics.jsonl line 1 is not a metrics record of dgmkit (17,825,",
        ),
    ],
    ids=[
        "best-as-checkpoint",
        "rng-of-floats",
        "no-data-order",
        "moment-of-another-shape",
        "stray-index",
        "metrics-line",
        "metrics-epoch",
        "metrics-long-line",
    ],
)
def test_a_checkpoint_or_metrics_file_that_cannot_be_resumed_is_refused_and_changes_nothing(vae_copy, capsys, edit, needle):
    edit(vae_copy)
    before = snapshot(vae_copy)
    code, _, err = run(capsys, "train", "--resume", "--epochs", "3", "--quiet", "--out", vae_copy)
    assert_one_error_line(code, err, needle)
    assert snapshot(vae_copy) == before


def test_a_resume_with_other_cpu_threads_or_compiled_says_it_goes_on_up_to_rounding(vae_copy, capsys):
    """The CPU's kernels add in another order with another number of threads (weights 1e-7 apart
    after an epoch), and a compiled run's resumed first step is eager: no bit-for-bit promise. A
    run with nothing left to train says that, and none of these notes (of steps it does not take)."""
    trained = json.loads(read_metadata(vae_copy / "checkpoint.safetensors")["trainer"])["cpu_threads"]
    assert trained == torch.get_num_threads()
    code, said, err = run(capsys, "train", "--resume", "--epochs", "3", "--quiet", "--out", vae_copy)
    assert code == 0 and "note" not in said, err
    _edit_metadata(vae_copy / "checkpoint.safetensors", "trainer", lambda t: {**t, "cpu_threads": trained + 3})
    code, said, err = run(capsys, "train", "--resume", "--epochs", "4", "--quiet", "--out", vae_copy)
    assert code == 0, err
    assert f"note: the run trained with {trained + 3} CPU threads and goes on with {trained}" in said
    assert f"OMP_NUM_THREADS={trained + 3}" in said and "compiled" not in said and "processes" not in said
    # trained by two data-parallel processes, resumed in one: its ranks' draws and sums are not this one's
    both = {"processes": 2, "cpu_threads": trained + 3}
    _edit_metadata(vae_copy / "checkpoint.safetensors", "trainer", lambda t: {**t, **both})
    code, said, err = run(capsys, "train", "--resume", "--epochs", "5", "--quiet", "--out", vae_copy)
    assert code == 0 and "note: the run trained in 2 processes and goes on in 1" in said and "--nproc 2" in said, err
    # (its threads still differ too: each note names both remedies, neither of which is enough alone)
    assert f"(resume with --nproc 2 with OMP_NUM_THREADS={trained + 3} to continue exactly)" in said
    assert f"torch.set_num_threads({trained + 3}) and resume with --nproc 2 to continue exactly)" in said

    # a run compiled until now, resumed without --compile, is not bit for bit either
    def compiled(r: dict) -> dict:
        return {**r, "config": {**r["config"], "optim": {**r["config"]["optim"], "compile": True}}}

    rewrite_records(vae_copy, compiled)
    code, said, err = run(capsys, "train", "--resume", "--epochs", "6", "--no-compile", "--quiet", "--out", vae_copy)
    assert code == 0 and "a compiled run resumes with an eager first step" in said, err
    # config.json deleted (written again, with this resume's settings, before the notes): the checkpoint says it
    rewrite_records(vae_copy, compiled)
    (vae_copy / "config.json").unlink()
    code, said, err = run(capsys, "train", "--resume", "--epochs", "7", "--no-compile", "--quiet", "--out", vae_copy)
    assert code == 0 and "was missing" in said and "a compiled run resumes with an eager first step" in said, err
    # all 7 epochs trained: resumed again (its checkpoint of 2 processes, compiled), it trains none, and says so alone
    _edit_metadata(vae_copy / "checkpoint.safetensors", "trainer", lambda t: {**t, "processes": 2})
    rewrite_records(vae_copy, compiled)
    code, said, err = run(capsys, "train", "--resume", "--no-compile", "--quiet", "--out", vae_copy)
    assert code == 0 and "note: the run has trained all its 7 epochs: a larger --epochs extends it" in said, err
    assert "processes" not in said and "compiled" not in said


def test_a_resume_with_nothing_left_to_train_says_what_would_go_on(vae_copy, capsys):
    """Stopped early after its last epoch, a larger --epochs alone trains none (its patience is spent); stopped
    within an epoch beyond the --epochs given, the run trains none either (it had said nothing, and the notes on
    the steps to come)."""
    _edit_metadata(vae_copy / "checkpoint.safetensors", "trainer", lambda t: {**t, "best_epoch": 1, "bad_epochs": 1})
    code, said, err = run(capsys, "train", "--resume", "--patience", "1", "--quiet", "--out", vae_copy)
    assert code == 0 and "note: the run stopped early after epoch 2 (1 without improvement, its patience 1)" in said, err
    assert "a larger --patience with a larger --epochs lets it go on" in said and "a larger --epochs extends" not in said
    # within epoch 3 (its time budget spent after a step), resumed with --epochs 2
    _edit_metadata(vae_copy / "checkpoint.safetensors", "trainer", lambda t: {**t, "best_epoch": 2, "bad_epochs": 0})
    code, said, err = run(capsys, "train", "--resume", "--epochs", "3", "--time-budget", "1e-6", "--out", vae_copy)
    assert code == 0 and "in epoch 3 after step 1" in said, err
    _edit_metadata(vae_copy / "checkpoint.safetensors", "trainer", lambda t: {**t, "cpu_threads": 99})
    code, said, err = run(capsys, "train", "--resume", "--epochs", "2", "--out", vae_copy)
    assert code == 0 and "note: the run stopped within epoch 3, beyond its 2 epochs: it trains none" in said, err
    assert "--epochs 3 or more finishes that epoch" in said and "CPU thread" not in said


def test_a_resume_on_another_kind_of_device_says_so_and_goes_on_alike_every_time(vae_copy, tmp_path, capsys):
    """A data-order stream drawn on CUDA (16 bytes of state) cannot go on on the CPU: the run goes
    on from a stream derived from its seed and epoch, said even with --quiet, the same on every
    resume of that checkpoint."""
    edit_tensors(vae_copy / "checkpoint.safetensors", lambda t: t.update({"rng/data": torch.arange(16, dtype=torch.uint8)}))
    again = tmp_path / "again"
    shutil.copytree(vae_copy, again)
    for out in (vae_copy, again):
        code, said, err = run(capsys, "train", "--resume", "--epochs", "3", "--quiet", "--out", out)
        assert code == 0, err
        assert "note: the run's random streams were drawn on another kind of device than cpu" in said
    lines = [[json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()] for out in (vae_copy, again)]
    assert [m["epoch"] for m in lines[0]] == [1, 2, 3]
    drop = ("time_s", "images_per_s")
    assert [{k: v for k, v in m.items() if k not in drop} for m in lines[0]] == [
        {k: v for k, v in m.items() if k not in drop} for m in lines[1]
    ]


@pytest.mark.parametrize("key, value, needle", [("epochs", 2.0, "wrong type"), ("batch_size", 10**9, "must be <=")])
def test_a_bad_value_in_config_json_is_named_as_the_files(vae_copy, capsys, key, value, needle):
    """The user can tell their flag from the run's file: the error names config.json."""
    record = json.loads((vae_copy / "config.json").read_text())
    record["config"]["optim"][key] = value
    (vae_copy / "config.json").write_text(json.dumps(record))
    code, _, err = run(capsys, "train", "--resume", "--epochs", "3", "--quiet", "--out", vae_copy)
    assert_one_error_line(code, err, "config.json", needle)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("latnet_dim = 3\n", "unknown key(s) 'latnet_dim' (did you mean 'latent_dim'?)"),
        ("arm_layers = 3\n", "'arm_layers' is a key of the arm model, not of vae"),
        ("[optim]\nepochs = 3\n[extra]\na = 1\n", "unknown key(s) 'extra'"),
        ('data = "digits"\n[optim]\nepochs = 3\n', "[data] must be a table of keys, got str"),
    ],
)
def test_resume_with_a_config_file_of_keys_no_run_has_is_refused_by_name(vae_copy, tmp_path, capsys, text, needle):
    (tmp_path / "c.toml").write_text(text)
    before = snapshot(vae_copy)
    code, _, err = run(capsys, "train", "--resume", "--config", tmp_path / "c.toml", "--quiet", "--out", vae_copy)
    assert_one_error_line(code, err, "c.toml", needle)
    assert snapshot(vae_copy) == before


@pytest.mark.parametrize("text", ["seed = 0.0\n", "[model]\nbeta = true\n"])
def test_resume_with_a_config_value_of_the_wrong_type_is_refused(vae_copy, tmp_path, capsys, text):
    """A value that equals the run's in Python (0.0 == 0, True == 1) but that a fresh run would
    refuse for its type is refused on resume too."""
    (tmp_path / "c.toml").write_text(text)
    code, _, err = run(capsys, "train", "--resume", "--config", tmp_path / "c.toml", "--quiet", "--out", vae_copy)
    assert_one_error_line(code, err, text.split()[-3])


@pytest.mark.parametrize(
    "edit",
    [
        lambda o: {**o, "param_groups": [{**o["param_groups"][0], "betas": [2, 2, 2]}]},
        lambda o: {**o, "param_groups": [{**o["param_groups"][0], "lr": "abc", "eps": -1.0}]},
    ],
)
def test_the_checkpoints_hyper_parameters_are_not_trusted(vae_copy, capsys, edit):
    """Adam's settings come from the run's config, not from the checkpoint's metadata."""
    _edit_metadata(vae_copy / "checkpoint.safetensors", "optimizer", edit)
    code, _, err = run(capsys, "train", "--resume", "--epochs", "3", "--quiet", "--out", vae_copy)
    assert code == 0, err
    assert load_checkpoint(vae_copy / "checkpoint.safetensors")["optimizer"]["param_groups"][0]["betas"] == [0.9, 0.999]


def test_a_resume_that_fails_leaves_config_json_as_it_was(vae_copy, capsys, monkeypatch):
    from dgmkit.training import trainer

    def diverge(self):
        raise DgmError("diverged at once")

    monkeypatch.setattr(trainer.Trainer, "_train_epoch", diverge)
    before = (vae_copy / "config.json").read_bytes()
    code, _, err = run(capsys, "train", "--resume", "--epochs", "5", "--quiet", "--out", vae_copy)
    assert_one_error_line(code, err, "diverged at once")
    assert (vae_copy / "config.json").read_bytes() == before


def test_resume_with_more_epochs_records_them_and_stays_loadable(vae_copy, capsys):
    metrics = vae_copy / "metrics.jsonl"
    metrics.write_text("\n" + metrics.read_text() + "  \n")  # blank lines (an editor's): left out, not refused
    code, _, err = run(capsys, "train", "--resume", "--epochs", "3", "--quiet", "--out", vae_copy)
    assert code == 0, err
    assert [json.loads(line)["epoch"] for line in metrics.read_text().split("\n")[:-1]] == [1, 2, 3]
    assert json.loads((vae_copy / "config.json").read_text())["config"]["optim"]["epochs"] == 3
    code, _, err = run(capsys, "eval", vae_copy, "--iw-samples", "2")
    assert code == 0, err


def test_stale_temporaries_of_a_killed_write_are_removed_at_the_next_start(vae_copy, capsys):
    stale = vae_copy / ".checkpoint.safetensors.k9x2ab_q.tmp"
    stale.write_bytes(b"half a checkpoint")
    mine = vae_copy / ".notes.tmp"
    mine.write_text("not dgm's")
    code, _, err = run(capsys, "train", "--resume", "--epochs", "3", "--quiet", "--out", vae_copy)
    assert code == 0, err
    assert not stale.exists() and mine.read_text() == "not dgm's"


_KILL_DURING_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    from dgmkit import _io
    from dgmkit.cli.main import main
    seen = [0]
    real_replace = os.replace
    def replace(src, dst):
        if os.path.basename(dst) == "checkpoint.safetensors":
            seen[0] += 1
            if seen[0] == int(sys.argv[1]):
                os.kill(os.getpid(), signal.SIGKILL)  # the bytes are written and synced, not yet renamed
        real_replace(src, dst)
    _io.os.replace = replace
    main(sys.argv[2:])
    """
)


def test_sigkill_during_a_checkpoint_write_then_resume(tmp_path):
    """Killed in the middle of writing epoch 2's checkpoint: the folder holds epoch 1's whole
    checkpoint and a stale temporary; --resume removes it and ends where an uninterrupted run ends."""
    argv = [*TINY, "--epochs", "3", "--seed", "5"]
    out, straight = tmp_path / "killed", tmp_path / "straight"
    p = subprocess.run([sys.executable, "-c", _KILL_DURING_WRITE, "2", "train", *argv, "--out", str(out)])
    assert p.returncode == -signal.SIGKILL
    names = sorted(os.listdir(out))
    assert any(n.startswith(".checkpoint.safetensors.") and n.endswith(".tmp") for n in names), names
    assert load_checkpoint(out / "checkpoint.safetensors")["trainer"]["epoch"] == 1
    assert main(["train", "--resume", "--quiet", "--out", str(out)]) == 0
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    assert main(["train", *argv, "--out", str(straight)]) == 0
    a = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(s) for s in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in a] == [1, 2, 3]
    for x, y in zip(a, b):
        assert x["valid_elbo"] == pytest.approx(y["valid_elbo"], rel=1e-6)


def test_sigkill_before_the_first_checkpoint_then_resume_starts_the_run_again(tmp_path, capsys):
    """Killed while writing epoch 1's checkpoint: no checkpoint exists. The same command says what
    the folder holds and how to go on; --resume starts the run again from its beginning (removing
    the orphan temporary) and ends where an uninterrupted run ends; a folder with anything else
    in it is still refused."""
    argv = [*TINY, "--epochs", "2", "--seed", "5"]
    out, straight = tmp_path / "killed", tmp_path / "straight"
    p = subprocess.run([sys.executable, "-c", _KILL_DURING_WRITE, "1", "train", *argv, "--out", str(out)])
    assert p.returncode == -signal.SIGKILL
    assert not (out / "checkpoint.safetensors").exists() and (out / "config.json").is_file()
    code, _, err = run(capsys, "train", *argv, "--out", out)
    assert_one_error_line(
        code, err, f"stopped before its first checkpoint was written: `dgm train --resume --out {out}` starts that run again"
    )
    code, said, err = run(capsys, "train", "--resume", "--quiet", "--out", out)
    assert code == 0, err
    assert "starting it again from its beginning" in said + err
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    assert main(["train", *argv, "--out", str(straight)]) == 0
    a = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(s) for s in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in a] == [1, 2]
    for x, y in zip(a, b):
        assert x["valid_elbo"] == pytest.approx(y["valid_elbo"], rel=1e-6)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text((out / "config.json").read_text())
    (other / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "train", "--resume", "--out", other)
    assert_one_error_line(code, err, "nothing to resume")
    assert (other / "config.json").is_file() and (other / "notes.txt").read_text() == "mine"
    # a run interrupted in its first epoch removes its folder: the refusal says what to do
    code, _, err = run(capsys, "train", "--resume", "--out", tmp_path / "gone")
    assert_one_error_line(code, err, "there is no run folder")
    assert "again without --resume" in err and not (tmp_path / "gone").exists()


def test_resume_of_a_run_whose_checkpoint_is_gone_after_epoch_one_is_refused(tmp_path, capsys):
    """A run of three epochs whose checkpoint.safetensors was removed (a folder kept only to
    evaluate, say) did not stop before its first checkpoint: --resume refuses it instead of
    starting it again, which removed its best weights and its metrics."""
    out = tmp_path / "kept"
    assert main(["train", *TINY, "--epochs", "3", "--out", str(out)]) == 0
    (out / "checkpoint.safetensors").unlink()
    best, metrics = (out / "best.safetensors").read_bytes(), (out / "metrics.jsonl").read_bytes()
    assert not RunFolder(out, fresh=False).stranded_start()
    code, _, err = run(capsys, "train", "--resume", "--epochs", "1", "--out", out)
    assert_one_error_line(code, err, "nothing to resume")
    assert (out / "best.safetensors").read_bytes() == best and (out / "metrics.jsonl").read_bytes() == metrics
    lines = metrics.decode().splitlines()
    (out / "metrics.jsonl").write_text(lines[0] + "\n")  # one epoch's line, but a best of a later epoch
    assert not RunFolder(out, fresh=False).stranded_start()


@pytest.mark.parametrize(
    "spoil",
    [
        lambda run, best: (run / "config.json").write_text("{not json"),
        lambda run, best: (run / "config.json").write_text("[]"),
        lambda run, best: (run / "best.safetensors").write_bytes(best),
        lambda run, best: (run / "best.safetensors").write_bytes(b"\0" * 64),
    ],
    ids=["config-not-json", "config-not-a-record", "best-of-the-run", "best-not-a-checkpoint"],
)
def test_a_folder_that_only_looks_stranded_is_neither_restarted_nor_changed(vae_copy, capsys, spoil):
    """--resume of a run stopped before its first checkpoint starts it again, removing its
    metrics.jsonl: only where config.json is a run's record and the folder holds no best weights
    (written after a checkpoint: a run that had one, removed since, would lose them). A folder
    that is not such a start is refused, untouched."""
    (vae_copy / "checkpoint.safetensors").unlink()
    first = (vae_copy / "metrics.jsonl").read_text().splitlines()[0]
    (vae_copy / "metrics.jsonl").write_text(first + "\n")
    best = (vae_copy / "best.safetensors").read_bytes()
    (vae_copy / "best.safetensors").unlink()
    assert RunFolder(vae_copy, fresh=False).stranded_start()  # what a run killed in its first checkpoint's write leaves
    spoil(vae_copy, best)
    before = snapshot(vae_copy)
    code, _, err = run(capsys, "train", "--resume", "--quiet", "--out", vae_copy)
    assert_one_error_line(code, err, "nothing to resume", "holds no checkpoint.safetensors")
    code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--out", vae_copy)
    assert_one_error_line(code, err, "is not empty")
    assert "starts that run again" not in err
    assert snapshot(vae_copy) == before


def test_an_out_that_is_a_file_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("mine")
    code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--out", out)
    assert_one_error_line(code, err, f"--out {out} is a file, not a folder")
    code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--out", out / "run")
    assert_one_error_line(code, err, f"{out / 'run'}: a part of the path is not a folder")
    code, _, err = run(capsys, "train", "--resume", "--out", out)
    assert_one_error_line(code, err, f"nothing to resume: --out {out} is a file, not a run folder")
    assert out.read_text() == "mine" and sorted(tmp_path.iterdir()) == [out]


def test_a_run_folder_or_source_run_that_is_a_loop_of_links_is_refused_in_one_line(tmp_path, capsys):
    """Path.resolve() raises RuntimeError on a loop of symbolic links (Python < 3.13): dgm report and
    dgm train --codes-of named such a path with an internal error."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    code, _, err = run(capsys, "report", tmp_path / "a", "--out", tmp_path / "r.html")
    assert_one_error_line(code, err, "no run folder at")
    code, _, err = run(capsys, "train", "--model", "arm", "--codes-of", tmp_path / "a", "--out", tmp_path / "r")
    assert_one_error_line(code, err, "codes_of: no run folder at")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_config_and_run_files_that_are_no_regular_files_are_refused(tmp_path, capsys):
    """A config file, a run's config.json or metrics.jsonl that is a FIFO (reading would block)
    or a link to /dev/zero (reading would never end) is refused by name, before any work."""
    os.mkfifo(tmp_path / "fifo.toml")
    (tmp_path / "zero.toml").symlink_to("/dev/zero")
    for name in ("fifo.toml", "zero.toml"):
        with pytest.raises(ConfigError, match="not a regular file"):
            load_config_file(tmp_path / name)
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").symlink_to("/dev/zero")
    code, _, err = run(capsys, "train", "--resume", "--epochs", "2", "--out", out)
    assert_one_error_line(code, err, "metrics.jsonl", "not a regular file")
    record = (out / "config.json").read_bytes()
    (out / "config.json").unlink()
    os.mkfifo(out / "config.json")
    for argv in (["train", "--resume", "--epochs", "2", "--out", out], ["eval", out, "--iw-samples", "2"]):
        code, _, err = run(capsys, *argv)
        assert_one_error_line(code, err, "config.json", "not a regular file")
    (out / "config.json").unlink()
    (out / "config.json").write_bytes(record + b" " * (16 << 20))
    code, _, err = run(capsys, "eval", out, "--iw-samples", "2")
    assert_one_error_line(code, err, "config.json", "larger than 16 MiB")


@pytest.mark.parametrize("model", ['model = ["vae"]', "[model]\nname = {a = 1}", "model = 3"])
def test_a_config_file_naming_the_model_by_no_string_is_one_error_line(tmp_path, capsys, model):
    """The family is read off the command line before the parse (to offer its flags): a list
    or table there was a TypeError with a traceback."""
    (tmp_path / "c.toml").write_text(model + "\n")
    code, _, err = run(capsys, "train", "--config", tmp_path / "c.toml", "--out", tmp_path / "o")
    assert_one_error_line(code, err, "must be named by a string")
    assert not (tmp_path / "o").exists()


def test_a_first_checkpoint_that_fails_to_write_leaves_nothing_and_a_failed_restart_stays_restartable(
    tmp_path, capsys, monkeypatch
):
    """The first checkpoint was written just after the best weights: a full disk there left a
    folder holding best.safetensors that neither a new run nor --resume would take. A restart
    (--resume of a run stopped before its first checkpoint) interrupted in its first epoch removed
    config.json, and the run could no longer be restarted. An empty folder says what to do."""
    import errno

    from dgmkit.training import trainer as trainer_module
    from dgmkit.training.run_writer import RunWriter

    write = RunWriter.checkpoint

    def full_disk(self, model, name="checkpoint.safetensors", *args, **kwargs):
        if name == "checkpoint.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(self, model, name, *args, **kwargs)

    out = tmp_path / "runs" / "first"
    with monkeypatch.context() as m:
        m.setattr(RunWriter, "checkpoint", full_disk)
        code, _, err = run(capsys, "train", *TINY, "--epochs", "2", "--out", out)
    assert_one_error_line(code, err, "no space left")
    assert not (tmp_path / "runs").exists()  # the folders this call made, and all it wrote there, are gone

    out = tmp_path / "stranded"  # what a run killed while writing its first checkpoint leaves
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    (out / "checkpoint.safetensors").unlink()
    (out / "best.safetensors").unlink()  # (written after the checkpoint)
    record = json.loads((out / "config.json").read_text())
    assert RunFolder(out, fresh=False).stranded_start()

    def interrupted(self):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(trainer_module.Trainer, "_train_epoch", interrupted)
        code, _, _ = run(capsys, "train", "--resume", "--out", out)
    assert code == 130
    assert (out / "config.json").is_file() and json.loads((out / "config.json").read_text())["config"] == record["config"]
    assert RunFolder(out, fresh=False).stranded_start()
    code, said, err = run(capsys, "train", "--resume", "--quiet", "--out", out)
    assert code == 0 and "starting it again" in said + err, err

    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "train", "--resume", "--out", tmp_path / "empty")
    assert_one_error_line(code, err, "holds no run", "without --resume")


def _blow_up(run_dir) -> None:
    """Scale every weight of both checkpoints by 1e20: finite, but the network's outputs overflow."""
    from safetensors import safe_open

    for name in ("best.safetensors", "checkpoint.safetensors"):
        path = run_dir / name
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        for k, t in tensors.items():
            if k.startswith("model/") and t.is_floating_point() and t.dim() >= 2:
                tensors[k] = t * 1e20
        path.write_bytes(crafted_checkpoint(tensors, meta))


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "{run}"],
        ["diagnose", "{run}", "--out", "{out}.png"],
        ["traverse", "{run}", "--out", "{out}.png"],
        ["reconstruct", "{run}", "--out", "{out}.png"],
        ["interpolate", "{run}", "--out", "{out}.png"],
        ["latents", "{run}", "--out", "{out}.png"],
        ["report", "{run}", "--out", "{out}.html"],
    ],
)
def test_finite_but_huge_weights_give_one_error_and_no_output(vae_copy, tmp_path, capsys, argv):
    """Every command refuses a model whose outputs overflow (dgm diagnose printed a table of nan,
    dgm traverse drew a NaN picture, dgm report failed in an SVD), and writes nothing."""
    _blow_up(vae_copy)
    before = snapshot(vae_copy)
    out = tmp_path / "figure"
    code, _, err = run(capsys, *[a.format(run=vae_copy, out=out) for a in argv])
    assert_one_error_line(code, err, "non-finite")
    assert not list(tmp_path.glob("figure*"))
    assert snapshot(vae_copy) == before


def _relabel_a_weight_as_int32(path) -> str:
    """Declare one float32 weight of a checkpoint I32 (the bytes unchanged, the header's checksum
    recomputed to agree); its name."""
    from safetensors.torch import load as st_load

    tensors = st_load(path.read_bytes())
    name = next(k for k, v in tensors.items() if k.startswith("model/") and v.dtype == torch.float32)
    tensors[name] = tensors[name].view(torch.int32)
    path.write_bytes(crafted_checkpoint(tensors, read_metadata(path)))
    return name.removeprefix("model/")


def test_a_checkpoint_with_float_weights_relabelled_as_int32_is_refused(vae_copy, capsys):
    """The bytes of a float32 weight declared I32 in the header: loading would convert the
    integers silently into other weights; every loader (eval's, and --resume's) refuses it."""
    name = _relabel_a_weight_as_int32(vae_copy / "best.safetensors")
    code, _, err = run(capsys, "eval", vae_copy)
    assert_one_error_line(code, err, "of another dtype than the model's", name, "torch.int32")
    name = _relabel_a_weight_as_int32(vae_copy / "checkpoint.safetensors")
    code, _, err = run(capsys, "train", "--resume", "--epochs", "3", "--quiet", "--out", vae_copy)
    assert_one_error_line(code, err, "of another dtype than the model's", name)


def test_demo_never_deletes_what_it_did_not_create(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "checkpoint.safetensors").write_bytes(b"x")
    (tmp_path / "thesis.tex").write_text("years of work")
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "demo", "--out", ".", "--epochs", "1")
    assert_one_error_line(code, err, "is not empty")
    assert snapshot(tmp_path) == before


def test_demo_without_out_picks_a_free_folder(tmp_path, monkeypatch):
    from dgmkit.cli.demo import _free_folder

    monkeypatch.chdir(tmp_path)
    assert _free_folder(Path("runs/demo")) == Path("runs/demo")
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    assert _free_folder(Path("runs/demo")) == Path("runs/demo")  # empty: usable
    (tmp_path / "runs" / "demo" / "config.json").write_text("{}")
    assert _free_folder(Path("runs/demo")) == Path("runs/demo-2")


def test_a_demo_without_out_passes_over_a_folder_another_demo_has_just_taken(tmp_path, monkeypatch):
    """A second dgm demo started while the first had locked runs/demo but written nothing yet
    chose runs/demo too, and was refused as "in use by another dgm process" (the README: run
    again, it writes into runs/demo-2)."""
    from dgmkit import _lock
    from dgmkit.cli.demo import _free_folder
    from dgmkit.training.run_writer import LOCK_NAME

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    held = _lock.acquire(tmp_path / "runs" / "demo" / LOCK_NAME, wait=False)
    try:
        assert _free_folder(Path("runs/demo")) == Path("runs/demo-2")
    finally:
        held.release()
    assert _free_folder(Path("runs/demo")) == Path("runs/demo")


def test_an_interrupted_demo_says_what_it_left_in_its_folder(tmp_path, capsys, monkeypatch):
    """Ctrl-C in a demo's training or its evaluation said "dgm: interrupted" alone, and left a
    half-done demo (a run trained to some epoch, no eval.json, no figures) with no word of it."""
    import dgmkit.cli.figures as figures
    from dgmkit.training.trainer import Trainer

    real_epoch = Trainer._train_epoch

    def epoch(self):
        if self.epoch == 2:  # (in the third epoch: two checkpointed)
            raise KeyboardInterrupt
        return real_epoch(self)

    monkeypatch.setattr(Trainer, "_train_epoch", epoch)
    out = tmp_path / "demo"
    code, _, err = run(capsys, "demo", "--out", out, "--epochs", "5", "--quiet")
    assert code == 130
    assert err.startswith("dgm: interrupted; ") and err.count("\n") == 1, err
    assert f"{out} holds the demo's run, not finished, its last checkpoint after epoch 2" in err
    assert f"dgm train --resume --out {out}" in err and "remove" in err
    monkeypatch.setattr(Trainer, "_train_epoch", real_epoch)

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(figures, "reconstruct", interrupted)
    out = tmp_path / "demo2"
    code, _, err = run(capsys, "demo", "--out", out, "--epochs", "1", "--quiet")
    assert code == 130 and (out / "samples.png").is_file() and not (out / "reconstructions.png").exists()
    assert f"{out} holds the demo's trained run; its reconstructions.png, interpolations.png, latents.png were not" in err

    def at_once(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_train_epoch", at_once)
    code, _, err = run(capsys, "demo", "--out", tmp_path / "demo3", "--epochs", "1", "--quiet")
    assert code == 130 and "nothing of it was kept" in err and not (tmp_path / "demo3").exists()


# ---------------------------------------------------------------- divergence and non-finite numbers
def test_divergence_never_reaches_a_checkpoint(tmp_path, capsys, monkeypatch):
    from dgmkit.training import trainer

    real = trainer.Trainer.validate

    def poisoned(self):
        out = real(self)
        if self.epoch == 1:  # the second epoch's validation
            out["valid_elbo"] = float("nan")
        return out

    monkeypatch.setattr(trainer.Trainer, "validate", poisoned)
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", *TINY, "--epochs", "3", "--out", out)
    assert_one_error_line(code, err, "diverged in epoch 2", "valid_elbo = nan", "epoch 1 is kept")
    assert load_checkpoint(out / "checkpoint.safetensors")["trainer"]["epoch"] == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_inf_in_adams_state_is_never_saved(tmp_path, capsys, monkeypatch):
    from dgmkit.training import trainer

    real = trainer.Trainer._train_epoch

    def poisoned(self):
        out = real(self)
        state = next(iter(self.optimizer.state.values()))
        state["exp_avg_sq"].view(-1)[0] = float("inf")
        return out

    monkeypatch.setattr(trainer.Trainer, "_train_epoch", poisoned)
    code, _, err = run(capsys, "train", *TINY, "--epochs", "2", "--out", tmp_path / "run")
    assert_one_error_line(code, err, "diverged in epoch 1", "exp_avg_sq")
    assert list(tmp_path.iterdir()) == []


def _poison_checkpoint(path: Path, suffix: str) -> None:
    """Put an inf into the first tensor whose name ends with ``suffix``, keeping the metadata."""
    from safetensors.torch import load as st_load

    tensors = st_load(path.read_bytes())
    name = next(k for k in tensors if k.endswith(suffix) and tensors[k].is_floating_point())
    tensors[name].view(-1)[0] = float("inf")
    path.write_bytes(crafted_checkpoint(tensors, read_metadata(path)))


def test_eval_of_non_finite_weights_is_refused(vae_copy, capsys):
    _poison_checkpoint(vae_copy / "best.safetensors", "weight")
    before = snapshot(vae_copy)
    code, _, err = run(capsys, "eval", vae_copy, "--iw-samples", "2")
    assert_one_error_line(code, err, "NaN or inf")
    assert snapshot(vae_copy) == before


def test_resume_from_inf_in_adams_state_is_refused(vae_copy, capsys):
    _poison_checkpoint(vae_copy / "checkpoint.safetensors", "exp_avg_sq")
    before = snapshot(vae_copy)
    code, _, err = run(capsys, "train", "--resume", "--epochs", "3", "--quiet", "--out", vae_copy)
    assert_one_error_line(code, err, "NaN or inf")
    assert snapshot(vae_copy) == before


def test_eval_refuses_zero_importance_samples_for_a_sampled_estimate(vae_run, capsys):
    before = snapshot(vae_run)
    code, _, err = run(capsys, "eval", vae_run, "--iw-samples", "0")
    assert_one_error_line(code, err, "--iw-samples must be in 1..1000000000, got 0")
    assert snapshot(vae_run) == before


def test_eval_that_cannot_take_its_results_lock_says_so_before_any_work_and_writes_nothing(
    vae_copy, tmp_path, capsys, monkeypatch
):
    """A .evals.lock that cannot be opened (a link planted there: a lock never follows one) was
    found only after the evaluation (hours, at k = 5000), with the report printed and eval.json
    replaced but evals.json not: the lock is taken before any work, and eval.json is written
    with evals.json, under it."""
    import dgmkit.cli.evaluate as evaluate

    assert run(capsys, "eval", vae_copy, "--iw-samples", "2")[0] == 0
    outside = tmp_path / "outside"
    outside.write_text("kept\n")
    (vae_copy / ".evals.lock").unlink()
    (vae_copy / ".evals.lock").symlink_to(outside)
    before = snapshot(vae_copy)
    monkeypatch.setattr(evaluate, "evaluate_run", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("evaluated")))
    code, said, err = run(capsys, "eval", vae_copy, "--iw-samples", "3")
    assert_one_error_line(code, err, ".evals.lock")
    assert said == "" and snapshot(vae_copy) == before and outside.read_text() == "kept\n"


def test_eval_refuses_a_non_finite_result(vae_copy, capsys, monkeypatch):
    from dgmkit.evaluation import estimates

    real = estimates._importance_sampled

    def poisoned(*a, **k):
        est = real(*a, **k)
        est.log_px[0] = float("-inf")
        return est

    monkeypatch.setitem(estimates.ESTIMATORS, "importance-sampled", poisoned)
    before = snapshot(vae_copy)
    code, _, err = run(capsys, "eval", vae_copy, "--iw-samples", "2")
    assert_one_error_line(code, err, "non-finite log-likelihood", "no result")
    assert snapshot(vae_copy) == before


def test_every_json_file_of_a_run_is_strict_json(vae_copy, capsys):
    assert run(capsys, "eval", vae_copy, "--iw-samples", "2", "--limit", "1")[0] == 0

    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    for name in ("config.json", "eval.json"):
        json.loads((vae_copy / name).read_text(), parse_constant=refuse)
    for line in (vae_copy / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=refuse)
    assert json.loads((vae_copy / "eval.json").read_text())["nll_stderr"] is None  # one datapoint: no spread


def test_non_finite_values_are_written_as_null_and_named():
    text = to_json({"a": float("nan"), "b": [1.0, float("-inf")], "c": 2})
    assert json.loads(text, parse_constant=lambda t: 1 / 0) == {
        "a": None,
        "b": [1.0, None],
        "c": 2,
        "non_finite": {"a": "nan", "b[1]": "-inf"},
    }


def test_importance_sampling_streams_its_log_weights():
    """Memory stays that of one chunk for any k: the weights are reduced as they come, and the
    streamed estimate equals the one-shot log-mean-exp."""
    from dgmkit.objectives import importance
    from dgmkit.objectives.importance import log_mean_exp

    model = RunConfig.of(model="vae", hidden=[8], latent_dim=2, dataset="digits").model.build((1, 8, 8), 2).eval()
    x = torch.randint(0, 2, (5, 1, 8, 8)).float()
    seen = []
    real = importance.log_importance_weights

    def spy(model, x, k, **kw):
        seen.append(k)
        return real(model, x, k, **kw)

    importance.log_importance_weights = spy
    try:
        g = torch.Generator().manual_seed(0)
        streamed = importance.importance_sampled_log_likelihood(model, x, k=1000, chunk_size=50, generator=g)
    finally:
        importance.log_importance_weights = real
    assert max(seen) == 10 and sum(seen) == 1000  # 50 rows of 5 datapoints per chunk
    g = torch.Generator().manual_seed(0)
    q = model.posterior(x)
    prior = model.prior()
    w = torch.cat([real(model, x, 10, q=q, prior=prior, generator=g).log_w for _ in range(100)])
    torch.testing.assert_close(streamed.double(), log_mean_exp(w.double()), rtol=1e-6, atol=1e-4)


# ---------------------------------------------------------------- figures and outputs
def test_figures_refuse_to_overwrite_without_force(vae_run, tmp_path, capsys):
    target = tmp_path / "mine.png"
    target.write_bytes(b"precious")
    code, _, err = run(capsys, "sample", vae_run, "-n", "4", "--out", target)
    assert_one_error_line(code, err, "exists", "--force")
    assert target.read_bytes() == b"precious"
    code, _, err = run(capsys, "sample", vae_run, "-n", "4", "--out", target, "--force")
    assert code == 0 and target.read_bytes().startswith(b"\x89PNG"), err


def test_figures_never_write_over_the_runs_own_files(vae_copy, capsys):
    (vae_copy / "eval.png").write_bytes(b"")
    before = snapshot(vae_copy)
    code, _, err = run(capsys, "sample", vae_copy, "--out", vae_copy / "config.json", "--force")
    assert_one_error_line(code, err, ".png")
    assert snapshot(vae_copy) == before


def test_check_new_output_guards_inputs_and_run_files(tmp_path):
    (tmp_path / "in.npy").write_bytes(b"x")
    with pytest.raises(DgmError, match="input"):
        check_new_output(tmp_path / "in.npy", force=True, inputs=[tmp_path / "in.npy"])
    with pytest.raises(DgmError, match="file of the run"):
        check_new_output(tmp_path / "best.safetensors", force=True, protected=[tmp_path / "best.safetensors"])
    with pytest.raises(DgmError, match="--force"):
        check_new_output(tmp_path / "in.npy")
    assert check_new_output(tmp_path / "new.bin") == tmp_path / "new.bin"


def test_a_failed_write_removes_the_folders_it_made(tmp_path, monkeypatch):
    from dgmkit import _io

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_io.os, "fsync", full)
    with pytest.raises(DgmError, match="no space left"):
        _io.atomic_write_bytes(tmp_path / "a" / "b" / "x.png", b"data")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_write_removes_its_temporary_and_the_folders_it_made(tmp_path, monkeypatch):
    """A Ctrl-C while the file was written removed the temporary file but left the folders made
    for it (an OSError removed both)."""
    from dgmkit import _io

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(_io.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _io.atomic_write_bytes(tmp_path / "a" / "b" / "x.png", b"data")
    assert list(tmp_path.iterdir()) == []


def test_writes_onto_or_under_what_is_no_folder_are_one_error_naming_it_and_change_nothing(tmp_path):
    from dgmkit import _io

    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "kept.txt").write_text("kept")
    (tmp_path / "file").write_text("file")
    target = tmp_path / "out"
    target.mkdir()
    (target / "b.png").mkdir()  # where a file is to go, a folder with a file in it
    (target / "b.png" / "inner.txt").write_text("inner")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(DgmError, match=f"^cannot write {tmp_path / 'folder'}: it is a folder$"):
        _io.atomic_write_bytes(tmp_path / "folder", b"data")
    with pytest.raises(DgmError, match=f"^--out {tmp_path / 'folder'} is a folder; name a file$"):
        check_new_output(tmp_path / "folder", force=True)
    with (
        pytest.raises(DgmError, match=f"^{tmp_path / 'file'} is a file, not a folder$"),
        atomic_folder(tmp_path / "file", ["a.png"]),
    ):
        pass
    under_a_file = tmp_path / "file" / "sub" / "out"
    with pytest.raises(DgmError, match=f"^cannot write {under_a_file}: a part of the path is not a folder$"):
        with atomic_folder(under_a_file, ["a.png"]):
            pass
    with pytest.raises(DgmError, match=f"^cannot write {target / 'b.png'}: it is a folder$"):
        with atomic_folder(target, ["a.png", "b.png"], force=True) as tmp:
            for n in ("a.png", "b.png"):
                (tmp / n).write_bytes(n.encode())
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # a.png, moved first, taken back


def test_atomic_folder_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "new" / "deeper" / "out", ["a.png"]):
        raise RuntimeError("failed before the first file")
    assert list(tmp_path.iterdir()) == [], "a failed call left the folders it created"
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_folder(target, ["a.png", "b.png"]) as tmp:
        (tmp / "a.png").write_bytes(b"1")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(target, ["a.png", "b.png"]) as tmp:
        for n in ("a.png", "b.png"):
            (tmp / n).write_bytes(n.encode())
    assert sorted(p.name for p in target.iterdir()) == ["a.png", "b.png"]
    with pytest.raises(DgmError, match="--force"), atomic_folder(target, ["a.png"]):
        pass
    for bad in ("../x.png", "/etc/x.png", "a/b.png", ".hidden.png", "nul\0.png", "..", ""):
        with pytest.raises(DgmError), atomic_folder(target, [bad]):
            pass


def test_atomic_folder_into_an_existing_folder_takes_back_the_new_files_it_moved(tmp_path, monkeypatch):
    """Into a folder that exists the files move one by one: an interrupt after the first left it
    in the folder, and the same command was then refused (the file exists)."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "mine.txt").write_text("mine")
    replace, calls = os.replace, []

    def interrupted_after_one(src, dst):
        if calls:
            raise KeyboardInterrupt
        calls.append(dst)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", interrupted_after_one)
    with pytest.raises(KeyboardInterrupt), atomic_folder(target, ["a.png", "b.png", "c.png"]) as tmp:
        for n in ("a.png", "b.png", "c.png"):
            (tmp / n).write_bytes(n.encode())
    assert len(calls) == 1
    assert sorted(os.listdir(target)) == ["mine.txt"] and sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.parametrize("command", ["reconstruct", "interpolate", "latents"])
def test_latent_commands_on_a_model_without_latents(arm_run, tmp_path, capsys, command):
    code, _, err = run(capsys, command, arm_run, "--out", tmp_path / "x.png")
    assert_one_error_line(code, err, "has no latent space q(z|x)")
    assert list(tmp_path.iterdir()) == []


def test_counts_larger_than_the_split_are_refused(vae_run, tmp_path, capsys):
    code, _, err = run(capsys, "reconstruct", vae_run, "-n", "1000", "--out", tmp_path / "r.png")
    assert_one_error_line(code, err, "-n 1000 is more than the 300 images")
    code, _, err = run(capsys, "interpolate", vae_run, "--pairs", "200", "--out", tmp_path / "i.png")
    assert_one_error_line(code, err, "--pairs 200 needs 400 images")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- checkpoints as hostile files
def _valid_checkpoint(tmp_path: Path) -> Path:
    model = torch.nn.Linear(2, 2)
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, {"format": 2}, trainer={"epoch": 1})
    return path


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_any_bytes_as_a_checkpoint_give_a_checkpoint_error(tmp_path, data):
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["format", "version", "config", "trainer", "optimizer", "content_sha256", "__metadata__", "header"]),
    _json_values,
)
def test_hostile_checkpoint_metadata_gives_a_checkpoint_error(tmp_path, field, value):
    path = _valid_checkpoint(tmp_path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    if field == "header":
        header = value
    elif field == "__metadata__":
        header["__metadata__"] = value
    else:
        header["__metadata__"][field] = value if isinstance(value, str) else json.dumps(value)
    head = json.dumps(header).encode()
    path.write_bytes(len(head).to_bytes(8, "little") + head + raw[8 + n :])
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError:
        return
    assert isinstance(ckpt["config"], dict)


def test_a_checkpoint_header_claiming_more_than_the_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes((2**62).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match="claims"):
        read_metadata(path)


def test_a_checkpoint_whose_tensors_or_metadata_changed_after_it_was_written_is_refused(tmp_path):
    """A flipped bit in a weight, or a counter changed in the header's JSON, still leaves a
    well-formed safetensors file: the SHA-256 in the header (over the tensors' names, dtypes,
    shapes and bytes and over the rest of the metadata) is what refuses it."""
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    path = _valid_checkpoint(tmp_path)
    raw = path.read_bytes()
    meta = read_metadata(path)
    assert meta["version"] == "2" and len(meta["content_sha256"]) == 64
    flipped = bytearray(raw)
    flipped[-1] ^= 0x01  # the last byte of the last tensor's data
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="is corrupt: its tensors or metadata do not match the SHA-256"):
        load_checkpoint(path)
    tensors = st_load(raw)
    for changed in (
        {("model/" + k[6:].replace("weight", "wight") if k == "model/weight" else k): v for k, v in tensors.items()},
        {k: v.reshape(-1) if k == "model/weight" else v for k, v in tensors.items()},  # same bytes, another shape
        {k: v.view(torch.int32) if k == "model/weight" else v for k, v in tensors.items()},  # same bytes, another dtype
    ):
        path.write_bytes(st_save(changed, metadata=meta))
        with pytest.raises(CheckpointError, match="do not match the SHA-256"):
            load_checkpoint(path)
    for edited in (
        {**meta, "trainer": json.dumps({"epoch": 3})},  # a counter of the header's JSON
        {**meta, "note": "added"},  # a key added
        {k: v for k, v in meta.items() if k != "trainer"},  # a key dropped
        {**meta, "version": "1"},  # (a version-2 checksum read as version 1's, over the tensors alone)
    ):
        path.write_bytes(st_save(tensors, metadata=edited))
        with pytest.raises(CheckpointError, match="do not match the SHA-256"):
            load_checkpoint(path)
    path.write_bytes(st_save(tensors, metadata={k: v for k, v in meta.items() if k != "content_sha256"}))
    with pytest.raises(CheckpointError, match="records no SHA-256 [(]format version 2 has one[)]"):
        load_checkpoint(path)
    path.write_bytes(raw)
    assert load_checkpoint(path)["trainer"] == {"epoch": 1}  # (the file as written loads)


def test_a_version_1_checkpoint_is_checked_as_far_as_it_recorded(tmp_path):
    """Format version 1 recorded the SHA-256 over the tensors alone, and its earliest files none:
    both still load; its tensors are still checked where it recorded one."""
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    path = _valid_checkpoint(tmp_path)
    tensors = st_load(path.read_bytes())
    meta = {**{k: v for k, v in read_metadata(path).items() if k != "content_sha256"}, "version": "1"}
    for recorded in ({}, {"content_sha256": content_sha256(tensors)}):
        path.write_bytes(st_save(tensors, metadata={**meta, **recorded, "trainer": json.dumps({"epoch": 4})}))
        ckpt = load_checkpoint(path)
        assert ckpt["trainer"] == {"epoch": 4}
        assert all(torch.equal(ckpt["model"][k[6:]], v) for k, v in tensors.items() if k.startswith("model/"))
    changed = {k: v + 1 if k == "model/weight" else v for k, v in tensors.items()}
    path.write_bytes(st_save(changed, metadata={**meta, "content_sha256": content_sha256(tensors)}))
    with pytest.raises(CheckpointError, match="is corrupt: its tensors do not match the SHA-256"):
        load_checkpoint(path)


def test_mismatched_checkpoint_is_one_line(vae_copy, tmp_path, capsys):
    ckpt = load_checkpoint(vae_copy / "best.safetensors")
    tensors = {f"model/{k}": v for k, v in ckpt["model"].items()}
    tensors.pop(next(iter(tensors)))
    tensors["model/extra.weight"] = torch.zeros(3)
    meta = read_metadata(vae_copy / "best.safetensors")
    (vae_copy / "best.safetensors").write_bytes(crafted_checkpoint(tensors, meta))
    code, _, err = run(capsys, "eval", vae_copy)
    assert_one_error_line(code, err, "1 tensors missing", "1 tensors unexpected")


@pytest.mark.parametrize(
    "edit, needle",
    [
        (
            lambda p: edit_metadata(p, lambda m: m.update(version=str(VERSION + 1))),
            f"newer dgmkit (format version {VERSION + 1})",
        ),
        (lambda p: edit_metadata(p, lambda m: m.pop("config")), "holds no run record"),
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "is corrupt"),  # a whole header, its tensors cut short
    ],
    ids=["newer", "no-record", "cut-short"],
)
def test_a_checkpoint_of_a_newer_dgmkit_without_a_record_or_cut_short_is_one_line(vae_copy, tmp_path, capsys, edit, needle):
    edit(vae_copy / "best.safetensors")
    before = snapshot(vae_copy)
    for argv in (["eval", vae_copy, "--iw-samples", "1"], ["sample", vae_copy, "--out", tmp_path / "s.png"]):
        code, _, err = run(capsys, *argv)
        assert_one_error_line(code, err, "best.safetensors", needle)
    assert snapshot(vae_copy) == before and not (tmp_path / "s.png").exists()


def _config_json_with_a_rejected_latent_dim(folder: Path) -> None:
    record = json.loads((folder / "config.json").read_text())
    record["config"]["model"]["latent_dim"] = "wide"
    (folder / "config.json").write_text(json.dumps(record))


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda p: (p / "config.json").write_text("[1]"), "config.json does not hold a JSON object"),
        (_config_json_with_a_rejected_latent_dim, "config.json holds a config this dgmkit rejects: latent_dim"),
        (
            lambda p: rewrite_records(p, lambda r: {**r, "data": {**r["data"], "transform": "magic"}}),
            "does not describe a model this dgmkit can build: unknown data transform 'magic'",
        ),
    ],
    ids=["not-an-object", "rejected-config", "unknown-transform"],
)
def test_a_run_record_that_cannot_describe_a_model_is_named_in_one_line(vae_copy, capsys, edit, needle):
    edit(vae_copy)
    before = snapshot(vae_copy)
    for argv in (["eval", vae_copy, "--iw-samples", "1"], ["train", "--resume", "--epochs", "3", "--out", vae_copy]):
        code, _, err = run(capsys, *argv)
        assert_one_error_line(code, err)
        if argv[0] == "eval":
            assert needle in err, err
    assert snapshot(vae_copy) == before


@pytest.mark.parametrize("kind", ["integers", "dequantize"])
def test_a_record_whose_data_transform_is_not_its_models_is_refused(vae_copy, capsys, kind):
    """The transform is recorded, and the model's family chooses it from the data: a record edited
    to another (both files alike) scored integers by a Bernoulli, a positive log-likelihood."""

    def edited(record: dict) -> dict:
        assert record["data"]["transform"] == "dynamic-binarize"
        record["data"]["transform"] = kind
        return record

    rewrite_records(vae_copy, edited)
    for command in (["eval", vae_copy, "--iw-samples", "2"], ["ood", vae_copy, "--ood", "digits", "--limit", "5"]):
        code, _, err = run(capsys, *command)  # (every command that reads the run's data: checked where they enter)
        assert_one_error_line(code, err, f"records its data transformed as '{kind}'", "'dynamic-binarize'")


def _spy_builds(monkeypatch) -> list[str]:
    """The device of every model dgmkit builds from a run record from now on."""
    from dgmkit.config import run as run_module

    devices, build = [], run_module.build_model

    def spy(*args, **kwargs):
        model = build(*args, **kwargs)
        devices.append(next(model.parameters()).device.type)
        return model

    monkeypatch.setattr(run_module, "build_model", spy)
    monkeypatch.setattr("dgmkit.cli.train.build_model", spy)
    return devices


def test_a_record_describing_a_model_its_checkpoint_does_not_hold_is_refused_before_building_it(
    vae_copy, capsys, monkeypatch
):
    """Hidden sizes edited in both records describe a model of tens of GB: it is checked against
    the checkpoint's tensors on the meta device and refused, never built in memory. (Edited in
    config.json alone, --resume refuses it by the checkpoint's header before that:
    tests/test_hostile_train.py.)"""

    def edited(record: dict) -> dict:
        record["config"]["model"]["hidden"] = [4096] * 8
        return record

    resumed = vae_copy.parent / "resumed"
    rewrite_records(vae_copy, edited)
    shutil.copytree(vae_copy, resumed)
    devices = _spy_builds(monkeypatch)
    code, _, err = run(capsys, "eval", vae_copy, "--iw-samples", "2")
    assert_one_error_line(code, err, "best.safetensors does not fit the model its record describes", "of another shape")
    code, _, err = run(capsys, "train", "--resume", "--epochs", "9", "--out", resumed)
    assert_one_error_line(code, err, "checkpoint.safetensors does not fit the model", "config.json describes")
    assert devices == ["meta", "meta"]


def test_a_record_of_datapoints_too_large_to_draw_is_refused():
    from dgmkit.config.migrate import check_record

    record = migrate_record(
        json.loads((Path(__file__).parent / "data" / "runs_v0_1" / "vae" / "config.json").read_text()), "x"
    )
    for shape, ok in (([1, 4096, 4096], True), ([1, 65536, 65536], False), ([3, 4096, 4096], False)):
        bad = {**record, "data": {**record["data"], "event_shape": shape}}
        if ok:
            check_record(bad, "x.json")
        else:
            with pytest.raises(CheckpointError, match="more than 16777216 values"):
                check_record(bad, "x.json")


@pytest.mark.parametrize("length", [200, 241, 242, 251, 255])
def test_a_legal_name_of_up_to_255_bytes_is_written_and_its_temporary_found(tmp_path, length):
    """The temporary beside the file (.NAME.XXXXXXXX.tmp) holds as much of the name as fits: a
    name of 242 to 255 bytes failed with "File name too long" before."""
    from dgmkit import _io

    name = "\u00e9" * ((length - 4) // 2) + "x" * ((length - 4) % 2) + ".png"  # two-byte characters: cuts between
    assert len(name.encode()) == length
    _io.atomic_write_bytes(tmp_path / name, b"data")
    assert (tmp_path / name).read_bytes() == b"data" and os.listdir(tmp_path) == [name]
    with _io.atomic_folder(tmp_path / "out", [name]) as tmp:
        (tmp / name).write_bytes(b"x")
    assert (tmp_path / "out" / name).read_bytes() == b"x"
    stem = _io._tmp_stem(name)
    stale = tmp_path / f".{stem}.abcd1234.tmp"
    stale.write_bytes(b"")
    assert len(stale.name.encode()) <= 255
    assert _io.remove_stale_temporaries(tmp_path, [name]) == [stale.name] and not stale.exists()


def test_an_interruption_is_said_once_under_torchrun(monkeypatch, capsys):
    """Ctrl-C reaches every rank: rank 0 alone says so (each rank printed the line)."""
    from dgmkit.cli.main import _status

    def interrupted():
        raise KeyboardInterrupt

    for rank, said in (("0", True), ("1", False), ("", True)):
        monkeypatch.setenv("RANK", rank)
        assert _status(interrupted) == 130
        assert ("dgm: interrupted" in capsys.readouterr().err) == said


def test_pytorchs_failure_to_allocate_is_said_as_out_of_memory_not_as_a_bug(capsys, monkeypatch, tmp_path):
    """The CPU allocator's RuntimeError (a record or flags asking for too much) and CUDA's
    OutOfMemoryError are the user's sizes, said in one line with what was asked for."""
    import tempfile

    from dgmkit.cli.main import _status

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the one bug report below is written here, not in /tmp

    def cuda_out_of_memory() -> int:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB (GPU 0; 79.11 GiB total)")

    for attempt, needle in ((lambda: torch.empty(2**44).numel(), "65536.0 GiB asked for at once"),
                            (cuda_out_of_memory, "80.00 GiB asked for at once on the GPU"),
                            (lambda: len(bytearray(2**62)), "need more memory than this machine has")):  # fmt: skip
        assert _status(attempt) == 1  # (the last: Python's own MemoryError)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "out of memory" in err and needle in err, err
    assert _status(lambda: torch.ones(2) @ torch.ones(3)) == EXIT_BUG  # other RuntimeErrors stay bugs
    assert "internal error" in capsys.readouterr().err and len(list(tmp_path.glob("dgm-bug-*.txt"))) == 1


def test_an_interrupt_while_the_commands_load_is_said_in_one_line(capsys, monkeypatch):
    """Ctrl-C while the parser and the commands' modules load printed a traceback and ended by
    the signal; it is 'dgm: interrupted' and exit 130, as later."""
    from dgmkit.cli import main as main_module

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(main_module, "build_parser", interrupted)
    assert main(["eval", "somewhere"]) == 130
    assert capsys.readouterr().err == "dgm: interrupted\n"


@pytest.mark.parametrize("flow", ["nice", "realnvp", "glow"])
def test_a_vector_coupling_flow_of_any_size_builds_on_the_meta_device(flow):
    """A coupling's layout compared its CPU mask with a range made on the default device, the meta
    device in the check of a checkpoint: a vector NICE or RealNVP of an odd size, or a Glow of more
    than 2 values (a flow of iris, of 5x7 images), trained, and then no command could load it."""
    from dgmkit.config.run import build_model, check_weights_fit

    cfg = RunConfig.from_dict({"model": {"name": "flow", "flow": flow}}, "x")
    for shape, levels in (((1, 1, 3), None), ((1, 1, 4), None), ((1, 1, 5), None), ((1, 5, 7), 17)):
        real = build_model(cfg, shape, levels)
        check_weights_fit(cfg, shape, levels, real.state_dict(), Path("x"))
        with torch.device("meta"):
            probe = build_model(cfg, shape, levels)
        layouts = [m.layout for m in real.modules() if hasattr(m, "layout")]
        assert layouts and layouts == [m.layout for m in probe.modules() if hasattr(m, "layout")]


@pytest.mark.parametrize("name, change", family_variants(), ids=variant_id)
def test_every_family_builds_on_the_meta_device_to_check_a_checkpoint(name, change):
    """The check of a checkpoint against its record builds the model on the meta device first
    (no memory): every family and variant must build there, and its own weights must fit. (MADE's
    masks, couplings' masks, permutations and PPCA's variance check read values at build time and
    failed there; the check was skipped for them, and an edited record built the model for real.)"""
    from dgmkit.config.run import build_model, check_weights_fit

    table = {"table_levels": [0, 3, 0]} if change.get("likelihood") == "mixed" else {}  # a table's columns
    try:
        cfg = RunConfig.from_dict({"model": {"name": name, **change, **table}}, "x")
    except ConfigError as e:  # a choice that needs another beside it
        pytest.skip(str(e))
    for shape, levels in (((1, 8, 8), 17), ((1, 8, 8), 2), ((1, 1, 3), None), ((1, 28, 28), 2)):
        try:
            real = build_model(cfg, shape, levels)
        except (ConfigError, DgmError, ValueError):
            continue  # this variant takes other data
        check_weights_fit(cfg, shape, levels, real.state_dict(), Path("x"))
        bigger = {k: torch.zeros(2, *v.shape, dtype=v.dtype) if v.dim() else v for k, v in real.state_dict().items()}
        if bigger:
            with pytest.raises(CheckpointError, match="of another shape"):
                check_weights_fit(cfg, shape, levels, bigger, Path("x"))
        return
    pytest.fail(f"{name} {change} built for none of the data tried")


# ---- configs and run records: empty paths, keys in the wrong table, a record whose data have no name


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
    assert_one_error_line(code, err, "--codes-of is empty")
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
    for read in (RunConfig.given_keys, RunConfig.from_dict):  # (one parser, one message)
        with pytest.raises(ConfigError) as e:
            read(table, "c.toml")
        assert needle in str(e.value)


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


@pytest.mark.parametrize("arg", ["r\nrun folder: elsewhere", "r\x1b[2Jx", "r\rx", "r\tx", "r\x85x"])
def test_an_argument_with_a_control_character_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch, arg):
    """A run folder named with a line break was printed back raw ("run folder: r" and a forged
    line); an escape would drive the terminal. Every argument is checked once, where it enters."""
    monkeypatch.chdir(tmp_path)
    for argv in (("train", *TINY, "--epochs", "1", "--out", arg), ("eval", arg), ("report", "r", "--title", arg)):
        code, out, err = run(capsys, *argv)
        assert_one_error_line(code, err, f"holds U+{ord(arg[1]):04X}")
        assert "\n" not in err.rstrip("\n") and "\x1b" not in err and "\r" not in err and out == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv, needle",
    [
        (("ood", "r", "--ood", "digits", "--ood-data-dir", ""), "--ood-data-dir is empty"),  # (read as not given)
        (("report", "r", "--out", "p.html", "--title", ""), "--title is empty"),
        (("eval", "r", "--data-dir="), "--data-dir is empty"),
        (("eval", ""), "an argument is empty"),
        (
            ("sample", "r", "--draw", ""),
            "an argument is empty ('', after --draw, which takes no value)",
        ),  # (not "--draw is empty")
        (("-v", "sample", "r", "--temperature", ""), "--temperature is empty"),
    ],
)
def test_an_empty_argument_is_refused_by_its_flag_before_anything_runs(tmp_path, capsys, monkeypatch, argv, needle):
    """``--ood-data-dir ""`` fell through to --data-dir (``"" or ...``): every flag's empty value
    is refused where arguments enter, as --out's and --data-dir's were by their commands."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert_one_error_line(code, err, needle)
    assert out == "" and list(tmp_path.iterdir()) == []


def test_an_error_line_shows_an_invisible_character_of_a_file_name_as_its_escape(tmp_path, capsys):
    """Whichever message names the file (here the table reader's, of a row too short), the error
    line shows a bidi override in its name as \\u202e: raw, 'x<U+202E>gpj.csv' shows as 'xcsv.jpg'."""
    from dgm_cli import dgm, refused

    table = tmp_path / "x\u202egpj.csv"
    table.write_text("a,b\n1\n")
    code, _, err = dgm(capsys, "train", "--dataset", table, "--out", tmp_path / "run")
    refused(code, err, "x\\u202egpj.csv: line 2 has 1 cells, the header 2")
    assert "\u202e" not in err
