"""What a mutation sweep of the file output (_io.py), the lock (_lock.py), the flags' types
(cli/argtypes.py, cli/flags.py), the commands' shared helpers (cli/common.py) and dgm's error
handling (cli/main.py) found unchecked: the words of each common OSError; a rename that fails
(the old file kept, no temporary); which stale temporaries are removed (only those of the named
files, never a link or a folder of such a name); the umask's mode; that emptying folders never
removes one that holds a file; an output that is an input through a hard or symbolic link, or a
run's file not written yet; outputs at or under a link to nothing; atomic_folder's clash with a
dangling link, its message (three names and a count), a failed move with --force (the replaced
file kept as written, only the new ones taken back), a wrong set of files, a temporary folder that
cannot be made, and names refused before the block runs; the 255-byte and hidden-name bounds of a
base name; "non_finite" only where a value was; JSON nested too deeply; a FIFO refused without
blocking and its descriptor closed; read_regular's one byte past the limit; the lock's wait and
no-wait; every bound of count, real, the seed, given_count and given_real, at its value and one
past; "none" for optional settings only, the comma hint, '%' in a help, skipped fields and a
foreign setting's families; --split, --seed, --limit's least, empty paths from Python, enough_rows,
positive_count, a PNG of any case, a result file's size bound, a dangling link or marker-less file
in a run folder, a result table's columns, the results lock, black-to-white integer images, what
counts as images, an input file's top level, batched decoding and posterior means, --input's form;
dgm's exit codes 2 and 130, --help's 0, one-line errors, an OSError as a user error and a default
said once in a help.

A bug it found (fixed): check_new_output compared paths as written, so a run's file not written
yet (eval.json, a results lock) was taken as --out when named through a link to the run folder or
with '..' in the path; they are compared resolved now."""

import argparse
import errno
import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from dgm_cli import refused
from dgmkit import _io, _lock
from dgmkit._io import (
    atomic_folder,
    atomic_write_bytes,
    check_base_name,
    check_new_output,
    describe_os_error,
    open_regular,
    parse_json,
    read_regular,
    remove_empty_folders,
    remove_stale_temporaries,
    to_json,
)
from dgmkit.cli import argtypes, common
from dgmkit.cli.flags import add_settings_flags, given_values, reject_foreign
from dgmkit.cli.main import main
from dgmkit.errors import ConfigError, DataError, DgmError


def _tree(folder) -> dict:
    """Every path under ``folder`` with its bytes (None for a folder, the target for a link)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        out[key] = ("link", os.readlink(p)) if p.is_symlink() else None if p.is_dir() else p.read_bytes()
    return out


# --- _io: messages, atomic writes, temporaries --------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, said",
    [
        (errno.ENOSPC, "no space left on the device while writing f.png"),
        (errno.ENOENT, "no such file or folder: f.png"),
        (errno.EACCES, "cannot write f.png: permission denied"),
        (errno.EPERM, "cannot write f.png: permission denied"),
        (errno.EROFS, "cannot write f.png: permission denied"),
        (errno.EISDIR, "cannot write f.png: it is a folder"),
        (errno.ENOTDIR, "cannot write f.png: a part of the path is not a folder"),
    ],
)
def test_each_common_os_error_is_said_in_words(code, said):
    assert describe_os_error(OSError(code, os.strerror(code)), "f.png", "write") == said


def test_a_write_whose_rename_fails_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"old bytes")

    def refused_rename(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(_io.os, "replace", refused_rename)
    with pytest.raises(DgmError, match="cannot write .*out.png"):
        atomic_write_bytes(target, b"new bytes")
    assert _tree(tmp_path) == {"out.png": b"old bytes"}


def test_stale_temporaries_are_only_those_of_the_named_files(tmp_path):
    """remove_stale_temporaries removes ``.NAME.XXXXXXXX.tmp`` of the names given, and nothing
    else: not another file's temporary, not a folder or a link of such a name."""
    (tmp_path / ".a.json.abcd1234.tmp").write_bytes(b"")
    (tmp_path / ".b.json.abcd1234.tmp").write_bytes(b"keep: another file's")
    (tmp_path / ".a.json.abc1234.tmp").write_bytes(b"keep: 7 characters, not ours")
    (tmp_path / "target").write_bytes(b"keep: a link's target")
    (tmp_path / ".a.json.link1234.tmp").symlink_to(tmp_path / "target")
    (tmp_path / ".a.json.fold1234.tmp").mkdir()
    before = _tree(tmp_path)
    assert remove_stale_temporaries(tmp_path, ["a.json"]) == [".a.json.abcd1234.tmp"]
    del before[".a.json.abcd1234.tmp"]
    assert _tree(tmp_path) == before


def test_a_new_file_gets_the_umasks_mode(tmp_path):
    umask = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "new.bin", b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o640


def test_remove_empty_folders_never_removes_a_folder_that_holds_something(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "kept.txt").write_bytes(b"kept")
    (tmp_path / "empty").mkdir()
    remove_empty_folders([tmp_path / "empty", tmp_path / "full", tmp_path / "absent"])
    assert _tree(tmp_path) == {"full": None, "full/kept.txt": b"kept"}


# --- check_new_output --------------------------------------------------------------------------------------------


def test_an_output_that_is_an_input_under_another_name_is_refused_even_with_force(tmp_path):
    data = tmp_path / "data.npy"
    data.write_bytes(b"the data")
    (tmp_path / "hard.npy").hardlink_to(data)
    (tmp_path / "soft.npy").symlink_to(data)
    for alias in ("hard.npy", "soft.npy"):
        with pytest.raises(DgmError, match=f"--out {tmp_path / alias} is an input of this command"):
            check_new_output(tmp_path / alias, force=True, inputs=[data])
    assert data.read_bytes() == b"the data"


def test_a_run_file_not_written_yet_is_still_no_output(tmp_path):
    """A run's eval.json that does not exist yet may not be an --out either: the command would
    write over it (or the run later)."""
    with pytest.raises(DgmError, match=r"is a file of the run; write the output elsewhere"):
        check_new_output(tmp_path / "run" / "eval.json", force=True, protected=[tmp_path / "run" / "eval.json"])


def test_a_run_file_not_written_yet_is_no_output_through_a_link_or_dot_dot_either(tmp_path):
    """A run's eval.json not written yet was taken as --out when named through a link to the run
    folder or with a '..' in the path (only paths equal as written were compared)."""
    run, other = tmp_path / "run", tmp_path / "other"
    run.mkdir()
    other.mkdir()
    (tmp_path / "link").symlink_to(run)
    for alias in (tmp_path / "link" / "eval.json", other / ".." / "run" / "eval.json", run / "sub" / ".." / "eval.json"):
        with pytest.raises(DgmError, match="is a file of the run; write the output elsewhere"):
            check_new_output(alias, force=True, protected=[run / "eval.json"])
    assert check_new_output(other / "eval.json", protected=[run / "eval.json"]) == other / "eval.json"
    assert _tree(tmp_path) == {"link": ("link", str(run)), "other": None, "run": None}


def test_an_output_under_a_link_to_nothing_is_named(tmp_path):
    (tmp_path / "gone").symlink_to(tmp_path / "no-such-folder")
    with pytest.raises(DgmError, match="gone is a link to nothing, not a folder"):
        check_new_output(tmp_path / "gone" / "sub" / "x.png")
    with pytest.raises(DgmError, match="file is a file, not a folder"):
        (tmp_path / "file").write_bytes(b"")
        check_new_output(tmp_path / "file" / "x.png")


def test_an_output_at_a_link_to_nothing_is_not_replaced_without_force(tmp_path):
    (tmp_path / "out.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(DgmError, match="out.png exists; choose another name or add --force"):
        check_new_output(tmp_path / "out.png")
    assert check_new_output(tmp_path / "out.png", force=True) == tmp_path / "out.png"


# --- atomic_folder -------------------------------------------------------------------------------------------------


def test_a_link_to_nothing_with_one_of_the_names_is_a_clash(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "a.png").symlink_to(tmp_path / "nowhere")
    before = _tree(tmp_path)
    with pytest.raises(DgmError, match="already holds a.png"), atomic_folder(target, ["a.png", "b.png"]):
        pass
    assert _tree(tmp_path) == before


def test_a_clash_names_three_files_and_counts_the_rest(tmp_path):
    names = [f"{c}.png" for c in "abcde"]
    for n in names:
        (tmp_path / n).write_bytes(b"kept")
    with pytest.raises(DgmError, match=r"already holds a.png, b.png, c.png and 2 more; choose another folder"):
        with atomic_folder(tmp_path, names):
            pass
    with pytest.raises(DgmError, match=r"already holds a.png, b.png, c.png; choose"), atomic_folder(tmp_path, names[:3]):
        pass


def test_a_failed_move_with_force_keeps_the_replaced_files_as_written_and_takes_back_the_new(tmp_path, monkeypatch):
    """With --force a file that existed is replaced; a failure after it moved takes back only the
    new files, so the replaced one is the new version, not gone."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "a.png").write_bytes(b"old a")
    replace, calls = os.replace, []

    def fails_on_the_second(src, dst):
        if calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        calls.append(dst)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", fails_on_the_second)
    with pytest.raises(DgmError, match="no space left"):
        with atomic_folder(target, ["a.png", "b.png", "c.png"], force=True) as tmp:
            for n in ("a.png", "b.png", "c.png"):
                (tmp / n).write_bytes(b"new " + n.encode())
    assert _tree(tmp_path) == {"out": None, "out/a.png": b"new a.png"}


def test_a_folder_moved_into_place_leaves_no_temporary_and_a_wrong_set_of_files_is_refused(tmp_path):
    with atomic_folder(tmp_path / "out", ["a.png"]) as tmp:
        (tmp / "a.png").write_bytes(b"a")
    assert _tree(tmp_path) == {"out": None, "out/a.png": b"a"}
    with pytest.raises(DgmError, match="not the ones announced"), atomic_folder(tmp_path / "two", ["a.png"]) as tmp:
        (tmp / "a.png").write_bytes(b"a")
        (tmp / "b.png").write_bytes(b"b")
    assert _tree(tmp_path) == {"out": None, "out/a.png": b"a"}


def test_a_folder_that_cannot_be_made_leaves_none_of_the_folders_above_it(tmp_path, monkeypatch):
    def no_temporary(**kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_io.tempfile, "mkdtemp", no_temporary)
    with pytest.raises(DgmError, match="no space left"), atomic_folder(tmp_path / "a" / "b" / "out", ["x.png"]):
        pass
    assert list(tmp_path.iterdir()) == []


# --- names, JSON, regular files --------------------------------------------------------------------------------------


def test_a_base_name_of_255_bytes_is_taken_and_one_of_256_refused():
    assert check_base_name("x" * 255) == "x" * 255
    with pytest.raises(DgmError, match="longer than 255 bytes"):
        check_base_name("x" * 256)


@pytest.mark.parametrize("name", [" a.png", "a.png ", "a\u202egnp.exe", "a\u200b.png", "\ufeffa.png", ".a.png"])
def test_names_that_show_as_others_or_hide_are_refused(name):
    with pytest.raises(DgmError, match="not a plain base name|invisible or control character"):
        check_base_name(name)


def test_shown_text_escapes_invisible_characters():
    assert _io.shown_text("a\u202eb") == "a\\u202eb"


def test_json_of_finite_numbers_has_no_non_finite_entry_and_infinities_are_null():
    assert json.loads(to_json({"a": 1.0})) == {"a": 1.0}
    assert json.loads(to_json({"a": float("inf"), "b": [float("-inf")]})) == {
        "a": None,
        "b": [None],
        "non_finite": {"a": "inf", "b[0]": "-inf"},
    }


@pytest.mark.parametrize("text", ['{"a": 1, "a": 2}', '{"a": 1e999}', '{"a": -1e999}', "[" * 100_000 + "]" * 100_000])
def test_parse_json_refuses_what_standard_json_does_not_say_once(text):
    with pytest.raises(ValueError):
        parse_json(text)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_what_is_no_regular_file_is_refused_at_once_and_its_descriptor_closed(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result: list = []

    def read():
        try:
            open_regular(fifo)
        except OSError as e:
            result.append(e)

    before = _open_fds()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # (unblock the thread before failing)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("opening a FIFO blocked")
    assert isinstance(result[0], _io.NotRegularFile)
    for _ in range(20):
        with pytest.raises(_io.NotRegularFile):
            open_regular(tmp_path)
    assert _open_fds() == before


def test_read_regular_reads_one_byte_past_the_limit_so_that_a_larger_file_shows(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 10)
    assert read_regular(tmp_path / "f", 9) == b"x" * 10
    assert read_regular(tmp_path / "f", 10) == b"x" * 10
    assert read_regular(tmp_path / "f", 100) == b"x" * 10


# --- the lock --------------------------------------------------------------------------------------------------------


def test_a_held_lock_refuses_at_once_without_wait_and_is_waited_for_with_it(tmp_path):
    path = tmp_path / ".dgm.lock"
    held = _lock.acquire(path, wait=False)
    t = time.monotonic()
    with pytest.raises(_lock.Timeout):
        _lock.acquire(path, wait=False)
    assert time.monotonic() - t < 2
    got, done = [], threading.Event()

    def wait_for_it():
        lock = _lock.acquire(path, wait=True)
        got.append(True)
        done.wait(10)
        lock.release()

    waiter = threading.Thread(target=wait_for_it, daemon=True)
    waiter.start()
    waiter.join(0.5)
    assert not got, "a second lock was taken while the first was held"
    held.release()
    for _ in range(100):
        if got:
            break
        time.sleep(0.05)
    assert got, "the waiting lock was not taken once the first was released"
    with pytest.raises(_lock.Timeout):  # the waiter holds it now
        _lock.acquire(path, wait=False)
    done.set()
    waiter.join(5)


# --- argtypes ------------------------------------------------------------------------------------------------------


def _parser(flag: str, type) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(exit_on_error=False)
    p.add_argument(flag, type=type)
    return p


def _refusal(p: argparse.ArgumentParser, *argv: str) -> str:
    with pytest.raises(argparse.ArgumentError) as e:
        p.parse_args(list(argv))
    return str(e.value)


def test_a_count_flag_takes_its_bounds_and_refuses_one_past_naming_the_flag():
    p = argparse.ArgumentParser(exit_on_error=False)
    common.add_count_flag(p, "--steps", 2, 50)
    assert p.parse_args(["--steps", "2"]).steps == 2 and p.parse_args(["--steps", "50"]).steps == 50
    assert "--steps must be in 2..50, got 1" in _refusal(p, "--steps", "1")
    assert "--steps must be in 2..50, got 51" in _refusal(p, "--steps", "51")
    assert "--steps must be in 2..50, got an integer of 5000 digits" in _refusal(p, "--steps", "9" * 5000)


def test_a_seed_is_0_to_2_to_the_32_less_1_the_bits_that_torchs_cpu_generator_reads():
    """Seeds up to 2**62 were taken, and PyTorch's CPU generator reads the low 32 bits of a seed:
    --seed 4294967296 drew what --seed 0 does. Every seed, flag or setting, now ends below 2**32."""
    import torch

    from dgmkit.config import RunConfig
    from dgmkit.errors import ConfigError

    def draws(seed: int) -> torch.Tensor:
        return torch.rand(3, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draws(2**32 + 5), draws(5))  # (why: the generator's 32 bits)
    p = _parser("--seed", argtypes.SEED)
    assert p.parse_args(["--seed", "0"]).seed == 0 and p.parse_args(["--seed", str(2**32 - 1)]).seed == 2**32 - 1
    assert "a seed must be in 0..4294967295, got -1" in _refusal(p, "--seed", "-1")
    assert "got 4294967296" in _refusal(p, "--seed", str(2**32))
    labelled = {"model": "m2", "labels": 10}
    for key, needs in (("seed", {}), ("missing_seed", {"missing_rate": 0.1}), ("labels_seed", labelled)):
        assert RunConfig.of(dataset="digits", **needs, **{key: 2**32 - 1}).flat()[key] == 2**32 - 1
        with pytest.raises(ConfigError, match=key):
            RunConfig.of(dataset="digits", **needs, **{key: 2**32})


def test_a_real_flag_takes_its_closed_bounds_and_refuses_its_open_one():
    p = _parser("--t", argtypes.real(gt=0.0, hi=10.0))
    assert p.parse_args(["--t", "10"]).t == 10.0 and p.parse_args(["--t", "1e-300"]).t == 1e-300
    assert "must be > 0 and <= 10, got 0" in _refusal(p, "--t", "0")
    assert "got 10.0001" in _refusal(p, "--t", "10.0001")
    q = _parser("--w", argtypes.real(lo=0.0))
    assert q.parse_args(["--w", "0"]).w == 0.0
    assert "must be >= 0, got -1e-09" in _refusal(q, "--w=-1e-9")
    for bad in ("inf", "nan", "-inf"):
        assert "expected a finite number" in _refusal(q, f"--w={bad}")


def test_the_python_checks_of_the_flags_take_their_bounds_and_refuse_a_bool():
    assert argtypes.given_count(10, 1, 10, "n") == 10 and argtypes.given_count(1, 1, 10, "n") == 1
    for bad in (0, 11, True):
        with pytest.raises(ConfigError, match=r"^n must be an integer in 1..10"):
            argtypes.given_count(bad, 1, 10, "n")
    assert argtypes.given_real(2.0, 0.0, 2.0, "t") == 2.0
    for bad in (0.0, 2.0000001, True, float("nan")):
        with pytest.raises(ConfigError, match=r"^t must be a finite number > 0 and <= 2"):
            argtypes.given_real(bad, 0.0, 2.0, "t")


# --- flags ---------------------------------------------------------------------------------------------------------


def _settings_parser():
    import dataclasses

    @dataclasses.dataclass
    class S:
        width: int = dataclasses.field(default=4, metadata={"help": "a width of 50%"})
        scale: float | None = dataclasses.field(default=None, metadata={"help": "a scale"})
        sizes: list[int] = dataclasses.field(default_factory=lambda: [1], metadata={"help": "sizes"})
        hidden: int = dataclasses.field(default=1, metadata={"help": "not a flag"})

    p = argparse.ArgumentParser(exit_on_error=False)
    dests = add_settings_flags(p, S, skip=("hidden",))
    return p, dests


def test_none_switches_off_an_optional_setting_only():
    p, dests = _settings_parser()
    assert dests == ["width", "scale", "sizes"] and "--hidden" not in p.format_help()
    for word in ("none", "None", "NULL", "off"):
        # given as none: None, told apart from a flag left out (it overrides a config file's value)
        assert given_values(p.parse_args(["--scale", word]), dests) == {"scale": None}
    assert given_values(p.parse_args([]), dests) == {}
    assert given_values(p.parse_args(["--width", "3"]), dests) == {"width": 3}
    assert "width takes int, got 'none'" in _refusal(p, "--width", "none")
    assert "values are separated by spaces: 1 2" in _refusal(p, "--sizes", "1,2")
    assert "a width of 50%" in p.format_help()


def test_a_flag_value_that_is_not_of_its_kind_is_shown_cut_and_an_integer_too_long_to_read_by_its_size():
    """--epochs of 5000 digits (more than int() reads) or 5000 letters was echoed whole: a line of 5000 characters."""
    p, _ = _settings_parser()
    assert "width takes int, got an integer of 5000 digits, beyond its range" in _refusal(p, "--width", "9" * 5000)
    assert "width takes int, got 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa..." in _refusal(p, "--width", "a" * 5000)
    assert len(_refusal(p, "--sizes", "1," * 3000)) < 200
    assert "values are separated by spaces: 1 2" in _refusal(p, "--sizes", "1,2")


def test_a_foreign_setting_names_its_family_or_families():
    one = argparse.Namespace(_foreign_beta=1.0)
    with pytest.raises(ConfigError, match=r"^--beta is a setting of the vae model, not of flow"):
        reject_foreign(one, {"beta": ["vae"]}, "flow")
    with pytest.raises(ConfigError, match=r"^--beta is a setting of the vae, iwae and wae models, not of flow"):
        reject_foreign(one, {"beta": ["vae", "iwae", "wae"]}, "flow")


# --- common --------------------------------------------------------------------------------------------------------


def test_the_split_and_seed_flags_refuse_what_no_command_reads():
    p = argparse.ArgumentParser(exit_on_error=False)
    common.add_split_flag(p)
    common.add_seeded_data_flags(p)
    assert p.parse_args([]).split == "test" and p.parse_args([]).seed == 0
    assert "invalid choice" in _refusal(p, "--split", "everything")
    assert "a seed must be in 0.." in _refusal(p, "--seed", "-1")


@pytest.mark.parametrize("key, flag", [("data_dir", "--data-dir"), ("data", "--data"), ("schema", "--schema")])
def test_an_empty_data_path_from_python_is_refused_by_its_flag_before_the_run_is_read(key, flag):
    """The CLI refuses an empty argument first; from Python ``run_data`` itself must say so."""
    with pytest.raises(ConfigError, match=f"^{flag} is empty: name a path"):
        common.run_data(None, **{key: ""})  # type: ignore[arg-type]  # (None: nothing of the run is read)


def test_limit_takes_the_commands_least_and_refuses_one_below_naming_the_flag():
    p = argparse.ArgumentParser(exit_on_error=False)
    common.add_limit_flag(p, low=2)
    assert p.parse_args(["--limit", "2"]).limit == 2
    assert "--limit must be in 2..1000000000, got 1" in _refusal(p, "--limit", "1")


def test_enough_rows_and_positive_count_at_their_bounds():
    common.enough_rows(torch.zeros(3, 2), "test", 3)
    with pytest.raises(ConfigError, match=r"the test split holds 2 rows; this needs at least 3"):
        common.enough_rows(torch.zeros(2, 2), "test", 3)
    assert common.positive_count(1) and not common.positive_count(0) and not common.positive_count(True)


def test_png_output_takes_any_case_of_png_and_never_a_runs_own_file(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    args = argparse.Namespace(out=str(tmp_path / "A.PNG"), force=False, run_dir=str(tmp_path))
    assert common.png_output(args) == tmp_path / "A.PNG"
    with pytest.raises(DataError, match="--out must name a .png file"):
        common.png_output(argparse.Namespace(out=str(tmp_path / "a.jpg"), force=True, run_dir=str(tmp_path)))
    (tmp_path / "b.png").write_bytes(b"kept")
    with pytest.raises(DgmError, match="exists; choose another name or add --force"):
        common.png_output(argparse.Namespace(out=str(tmp_path / "b.png"), force=False, run_dir=str(tmp_path)))
    assert (tmp_path / "b.png").read_bytes() == b"kept"


def test_a_result_file_at_its_size_limit_is_read_and_one_byte_over_refused(tmp_path):
    path = tmp_path / "eval.json"
    body = b'{"protocol": 1}'
    path.write_bytes(body + b" " * (64 - len(body)))
    assert common.own_result(path, "protocol", "run it again", max_bytes=64) == {"protocol": 1}
    path.write_bytes(body + b" " * (65 - len(body)))
    with pytest.raises(DataError, match="is larger than"):
        common.own_result(path, "protocol", "run it again", max_bytes=64)
    assert len(path.read_bytes()) == 65


@pytest.mark.parametrize("kind", ["dangling link", "folder", "no marker"])
def test_a_result_file_dgmkit_did_not_write_is_refused_and_kept(tmp_path, kind):
    path = tmp_path / "eval.json"
    if kind == "dangling link":
        path.symlink_to(tmp_path / "nowhere.json")
    elif kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(b'{"other": 1}')
    before = _tree(tmp_path)
    with pytest.raises(DataError, match="is not an eval.json of dgmkit"):
        common.own_result_file(path, "protocol", "run it again")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"protocol": 1e400}', r"not strict JSON: the number 1e400 is beyond a float's range"),
        (b'{"protocol": 1, "protocol": 2}', r"not strict JSON: the key 'protocol' appears twice"),
        (b'{"protocol": NaN}', r"not strict JSON: NaN is not standard JSON"),
        (b"my notes", r"not JSON: Expecting value"),
    ],
)
def test_a_result_file_that_is_not_strict_json_is_refused_saying_why(tmp_path, body, why):
    """A result file that strict JSON refuses says why (a number beyond a float's range said
    only 'not an eval.json of dgmkit', where a metrics file's line names it)."""
    path = tmp_path / "eval.json"
    path.write_bytes(body)
    with pytest.raises(DataError, match=r"is not an eval.json of dgmkit \(" + why):
        common.own_result(path, "protocol", "run it again")
    assert path.read_bytes() == body


def test_a_result_table_is_ours_only_with_dgmkits_columns(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_bytes(b"index,score\n0,1.0\n")
    assert common.own_result_table(path, "index,score", "again") == path
    path.write_bytes(b"index,score,extra\n")
    with pytest.raises(DataError, match="not a scores.csv of dgmkit"):
        common.own_result_table(path, "index,score", "again")
    assert common.own_result_table(path, "index", "again", named_columns=True) == path
    path.write_bytes(b"index,Score\n")
    with pytest.raises(DataError, match="not a scores.csv of dgmkit"):
        common.own_result_table(path, "index", "again", named_columns=True)


def test_a_results_file_of_results_without_the_marker_is_refused(tmp_path):
    results = common.ResultsFile("evals.json", "nll", "run it again", protocol=lambda r: "p")
    (tmp_path / "evals.json").write_text(json.dumps({"results": {"p": {"nll": 1.0}}}))
    assert results.kept(tmp_path) == {"p": {"nll": 1.0}}
    (tmp_path / "evals.json").write_text(json.dumps({"results": {"p": {"other": 1.0}}}))
    with pytest.raises(DataError, match="not an evals.json of dgmkit"):
        results.kept(tmp_path)


def test_results_are_kept_under_a_lock_that_another_writer_waits_for(tmp_path):
    from dgmkit.training.run_writer import results_lock

    results = common.ResultsFile("evals.json", "nll", "run it again", protocol=lambda r: r["p"])
    held = _lock.acquire(tmp_path / results_lock("evals.json"), wait=False)
    writer = threading.Thread(target=lambda: results.keep(tmp_path, {"p": "a", "nll": 1.0}), daemon=True)
    writer.start()
    writer.join(0.5)
    assert not (tmp_path / "evals.json").exists(), "written while another held the lock"
    held.release()
    writer.join(10)
    assert results.keep(tmp_path, {"p": "b", "nll": 2.0}) == 2  # (the lock was released after the first)


def test_integer_images_span_black_to_white_and_only_two_dimensional_pictures_are_images():
    run = argparse.Namespace(record={"data": {"transform": "integers", "num_levels": 4, "event_shape": [1, 28, 28]}})
    shown = common.to_display(torch.tensor([0, 1, 2, 3]), run)  # type: ignore[arg-type]
    assert shown.tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert common.shows_images(run)  # type: ignore[arg-type]
    for shape in ([1, 1, 784], [1, 784, 1], [784]):
        run.record["data"]["event_shape"] = shape
        assert not common.shows_images(run), shape  # type: ignore[arg-type]


def test_an_input_file_of_integers_takes_the_top_level_and_refuses_one_past_it(tmp_path):
    import numpy as np

    run = argparse.Namespace(path=tmp_path, record={"data": {"event_shape": [1, 2, 2], "num_levels": 4}})
    np.save(tmp_path / "top.npy", np.full((2, 1, 2, 2), 3, dtype=np.uint8))
    x, shape = common.read_input_file(str(tmp_path / "top.npy"), run, (), "score")  # type: ignore[arg-type]
    assert shape == (2, 1, 2, 2) and x.max().item() == 3
    np.save(tmp_path / "past.npy", np.full((2, 1, 2, 2), 4, dtype=np.uint8))
    with pytest.raises(DataError, match=r"past.npy: the run's data are integers 0..3"):
        common.read_input_file(str(tmp_path / "past.npy"), run, (), "score")  # type: ignore[arg-type]
    (tmp_path / "folder.npy").mkdir()
    with pytest.raises(DataError, match="folder.npy is not a regular file"):
        common.read_input_file(str(tmp_path / "folder.npy"), run, (), "score")  # type: ignore[arg-type]


def test_latents_are_decoded_in_batches_of_at_most_the_batch_size():
    class Decoder:
        sizes: list = []

        def likelihood(self, z):
            self.sizes.append(len(z))
            return torch.distributions.Normal(z, torch.ones_like(z))

    run = argparse.Namespace(model=Decoder())
    z = torch.arange(7.0).reshape(7, 1)
    assert torch.equal(common.decoded_means(run, z, batch_size=3), z)  # type: ignore[arg-type]
    assert run.model.sizes == [3, 3, 1]


@pytest.mark.parametrize("item", ["code-prior=", "=run", "code-prior"])
def test_an_input_flag_without_a_role_or_a_run_is_refused_by_its_form(item):
    args = argparse.Namespace(input=[item], code_prior=None)
    with pytest.raises(ConfigError, match=r"^--input takes ROLE=RUN_DIR, got"):
        common.attach_inputs(None, args)  # type: ignore[arg-type]  # (None: refused before any run is read)


def test_posterior_means_cover_every_row_in_batches():
    class Identity:
        def posterior(self, x):
            return torch.distributions.Normal(x, torch.ones_like(x))

    run = argparse.Namespace(model=Identity())
    x = torch.arange(7.0).reshape(7, 1)
    assert torch.equal(common.posterior_means(run, x, batch_size=3), x)  # type: ignore[arg-type]


# --- main: exit codes and one-line errors --------------------------------------------------------------------------


def test_help_and_version_exit_0(capsys):
    assert main(["--help"]) == 0 and "usage: dgm" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert main(["train", "--help"]) == 0  # (every help text formats: a '%' in one would raise)


def test_a_help_that_says_its_default_is_not_given_it_twice():
    from dgmkit.cli.main import _Parser

    p = _Parser(prog="dgm x")
    p.add_argument("--steps", default=8, help="points on each line (default: 8, both ends included)")
    p.add_argument("--grid", default=10, help="cells on a side")
    p.add_argument("--baselines", nargs="*", default=[], help="imputers to score")  # (no default: not "(default: )")
    text = " ".join(p.format_help().split())
    assert text.count("default: 8") == 1 and "cells on a side (default: 10)" in text
    assert "imputers to score" in text and "(default: )" not in text


def test_a_usage_error_exits_1_in_one_line(capsys):
    code = main(["sample"])
    refused(code, capsys.readouterr().err, "the following arguments are required")


def test_an_error_of_several_lines_is_said_on_one(capsys, monkeypatch):
    from dgmkit.cli import main as main_module

    def fails():
        raise DgmError("first line\nsecond line")

    assert main_module._status(fails) == 1
    assert capsys.readouterr().err == "dgm: error: first line second line\n"


@pytest.mark.parametrize("error, said", [(OSError(errno.ENOSPC, "full", "x.png"), "no space left"),
                                         (MemoryError(), "out of memory")])  # fmt: skip
def test_an_os_or_memory_error_is_a_user_error_not_a_bug(capsys, error, said):
    from dgmkit.cli.main import _status

    def fails():
        raise error

    assert _status(fails) == 1
    refused(1, capsys.readouterr().err, said)


def test_an_interrupt_exits_130(capsys, monkeypatch):
    from dgmkit.cli.main import _status

    monkeypatch.delenv("RANK", raising=False)

    def interrupted():
        raise KeyboardInterrupt

    assert _status(interrupted) == 130
    assert capsys.readouterr().err == "dgm: interrupted\n"


def test_a_long_bug_message_is_cut_and_said_on_one_line(capsys, monkeypatch, tmp_path):
    import tempfile

    from dgmkit.cli.main import EXIT_BUG, _status

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def bug():
        raise ZeroDivisionError("x\n" + "y" * 1000)

    assert _status(bug) == EXIT_BUG == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ZeroDivisionError: x yyy" in err and "y" * 400 not in err


@pytest.mark.parametrize("name", ["../escape.png", "sub/a.png", ".hidden.png", "a\u202egnp.exe"])
def test_a_name_that_is_no_plain_base_name_is_refused_before_the_block_runs(tmp_path, name):
    ran = []
    with pytest.raises(DgmError, match="not a plain base name|invisible"), atomic_folder(tmp_path / "out", [name]) as tmp:
        ran.append(tmp)
    assert ran == [] and list(tmp_path.iterdir()) == []


def test_a_role_named_twice_is_refused_before_any_run_is_read():
    args = argparse.Namespace(input=["code-prior=a"], code_prior="b")
    with pytest.raises(ConfigError, match=r"^--input code-prior is named twice"):
        common.attach_inputs(None, args)  # type: ignore[arg-type]


def test_command_output_refuses_the_files_of_every_run_a_command_reads_and_what_they_read(tmp_path, monkeypatch):
    """``command_output`` gathers, for any command, what its output may not replace: the files of
    the run (or ``runs``) and of the runs --input, --code-prior and --background name, the data
    each of those reads (the first with --data and --schema), the command's own inputs and what
    it writes besides."""
    import argparse

    import dgmkit.cli.common as common

    seen = []

    def recorded(run_dir, data=None, schema=None):
        seen.append((Path(run_dir).name, data, schema))
        return [Path(run_dir).parent / f"{Path(run_dir).name}-data.npy"]

    monkeypatch.setattr(common, "recorded_inputs", recorded)
    args = argparse.Namespace(run_dir=str(tmp_path / "main"), data="d.npy", schema=None, force=True,
                              input=["code-prior=" + str(tmp_path / "prior"), "broken"], code_prior=str(tmp_path / "cp"),
                              background=str(tmp_path / "bg"))  # fmt: skip
    refused = {
        "main-data.npy": "is an input of this command", "prior-data.npy": "is an input of this command",
        "cp-data.npy": "is an input of this command", "bg-data.npy": "is an input of this command",
        "mine.npy": "is an input of this command", "figure.png": "is a file of the run",
        "main/eval.json": "is a file of the run", "prior/config.json": "is a file of the run",
        "cp/.dgm.lock": "is a file of the run", "bg/ood.json": "is a file of the run",
    }  # fmt: skip
    for name, why in refused.items():
        with pytest.raises(DgmError, match=f"--json {tmp_path / name} {why}"):
            common.command_output(args, tmp_path / name, reads=[tmp_path / "mine.npy"], written=[tmp_path / "figure.png"],
                                  what="--json")  # fmt: skip
    assert seen[:4] == [("main", "d.npy", None), ("prior", None, None), ("cp", None, None), ("bg", None, None)]
    assert common.command_output(args, tmp_path / "new.npy") == tmp_path / "new.npy"
    # runs= in place of run_dir (dgm report's several runs, decompress's --run)
    with pytest.raises(DgmError, match="is an input of this command"):
        common.command_output(args, tmp_path / "other-data.npy", runs=[tmp_path / "x", tmp_path / "other"])
    assert common.command_output(args, tmp_path / "main-data.npy", runs=[tmp_path / "x"]) == tmp_path / "main-data.npy"
