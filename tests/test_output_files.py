"""The output-file promises of docs/safety.md where the review of ``dgm compress`` and ``dgm
decompress`` found them broken: no device or FIFO is replaced, not even with --force; no file of
any run folder is an output; a SIGTERM during a write leaves nothing behind; a new PNG folder
gets the usual mode; a PNG's transparency is refused, not lost."""

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tests.dgm_cli import dgm, refused

from dgmkit._io import atomic_folder, atomic_write_bytes, check_new_output
from dgmkit.cli.main import main
from dgmkit.errors import DgmError

REPO = Path(__file__).resolve().parents[1]
N_PNG = 4


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny ARM run on digits-4x4, a copy of it (another run), a .npy of images, 1-bit PNG
    files and the compressed files of the PNGs and of the .npy."""
    import shutil

    from PIL import Image

    from dgmkit.data import load_dataset

    root = tmp_path_factory.mktemp("outputs")
    run_dir = root / "run"
    argv = ["train", "--model", "arm", "--arm", "pixelcnn", "--dataset", "digits-4x4", "--channels", "4"]
    assert main([*argv, "--arm-layers", "2", "--epochs", "1", "--quiet", "--out", str(run_dir)]) == 0
    shutil.copytree(run_dir, root / "other")
    x = load_dataset("digits-4x4").test.x[:N_PNG, 0].numpy()  # (N, 4, 4) uint8 0/1
    np.save(root / "x.npy", x)
    (root / "png").mkdir()
    pngs = [root / "png" / f"img{i}.png" for i in range(N_PNG)]
    for img, path in zip(x, pngs, strict=True):
        Image.fromarray(img.astype(bool)).save(path)
    assert main(["compress", str(run_dir), *map(str, pngs), "--out", str(root / "p.dgmz")]) == 0
    assert main(["compress", str(run_dir), str(root / "x.npy"), "--out", str(root / "n.dgmz")]) == 0
    return SimpleNamespace(
        root=root, run=run_dir, other=root / "other", x=x, npy=root / "x.npy", pz=root / "p.dgmz", nz=root / "n.dgmz"
    )


def _compress(env, out, *extra):
    return ["compress", env.run, env.npy, "--out", out, *extra]


# -- what is never an output ---------------------------------------------------------------------


def test_a_fifo_is_no_output_even_with_force(env, capsys, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    refused(*dgm(capsys, *_compress(env, fifo, "--force"))[::2], str(fifo), "not a regular file")
    assert not fifo.is_file() and fifo.exists()  # (still the FIFO)


def test_a_device_is_no_output_even_with_force():
    with pytest.raises(DgmError, match="not a regular file"):  # (checked only: nothing is written)
        check_new_output(os.devnull, force=True)


def test_a_link_to_a_regular_file_is_replaced_with_force(env, capsys, tmp_path):
    (tmp_path / "old.dgmz").write_bytes(b"old")
    (tmp_path / "link.dgmz").symlink_to(tmp_path / "old.dgmz")
    code, _, err = dgm(capsys, *_compress(env, tmp_path / "link.dgmz", "--force"))
    assert code == 0, err


@pytest.mark.parametrize("name", ["config.json", "checkpoint.safetensors", "metrics.jsonl", "eval.json", ".dgm.lock"])
def test_another_run_s_files_are_no_outputs_even_with_force(env, capsys, name):
    target = env.other / name
    before = target.read_bytes() if target.exists() else None
    refused(*dgm(capsys, *_compress(env, target, "--force"))[::2], str(target), f"a file of the run in {env.other}")
    assert (target.read_bytes() if target.exists() else None) == before


def test_a_link_to_another_run_s_file_is_no_output(env, capsys, tmp_path):
    link = tmp_path / "link.dgmz"
    link.symlink_to(env.other / "config.json")
    before = (env.other / "config.json").read_bytes()
    refused(*dgm(capsys, *_compress(env, link, "--force"))[::2], str(link), "a file of the run")
    assert (env.other / "config.json").read_bytes() == before and link.is_symlink()


def test_a_folder_that_holds_no_run_may_receive_a_file_of_a_run_s_name(env, capsys, tmp_path):
    (tmp_path / "ood-scores.csv").write_text("x\n")  # (another program's: no run beside it)
    code, _, err = dgm(capsys, "score", env.run, env.npy, "--out", tmp_path / "ood-scores.csv", "--force")
    assert code == 0, err
    assert (tmp_path / "ood-scores.csv").read_text().startswith("input,log_px_nats")


@pytest.mark.parametrize(
    "argv, name",
    [
        (lambda e: ["compress", e.run, e.npy], "c.dgmz"),
        (lambda e: ["decompress", e.nz, "--run", e.run], "x.npy"),  # (a file; PNG sources go into a folder)
        (lambda e: ["score", e.run, e.npy], "s.csv"),
        (lambda e: ["sample", e.run, "-n", "2"], "s.png"),
        (lambda e: ["report", e.run, "--no-figures"], "r.html"),
        (lambda e: ["ood", e.run, "--ood", e.npy, "--json"], "o.json"),
    ],
)
@pytest.mark.parametrize("tail", ["/", "/.", "//"])
def test_an_output_name_ending_in_a_slash_names_a_folder_and_is_refused_where_one_file_is_written(
    env, capsys, tmp_path, argv, name, tail
):
    flag = [] if argv(env)[-1] == "--json" else ["--out"]
    code, _, err = dgm(capsys, *argv(env), *flag, f"{tmp_path / name}{tail}")
    refused(code, err, f"{name}{tail} ends in '{tail}', which names a folder, and this writes one file: name the file")
    assert list(tmp_path.iterdir()) == []  # (nothing written: not the file, not a folder)


def test_a_png_folder_may_be_named_with_a_trailing_slash_and_check_new_output_refuses_one(env, capsys, tmp_path):
    code, _, err = dgm(capsys, "decompress", env.pz, "--run", env.run, "--out", f"{tmp_path / 'pngs'}/")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == [f"img{i}.png" for i in range(N_PNG)]
    with pytest.raises(DgmError, match=r"--json a\.json/ ends in '/', which names a folder.*\(a\.json\)"):
        check_new_output("a.json/", what="--json")
    assert check_new_output("a/.json") == Path("a/.json")  # (a name that begins with a dot is a file's)


# -- a SIGTERM while writing ---------------------------------------------------------------------


def _killed(script: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)


def test_a_sigterm_during_png_decompression_leaves_no_folder_and_ends_the_process_by_the_signal(env, tmp_path):
    out = tmp_path / "pngs"
    script = (
        "import os, signal\nfrom PIL import Image\nfrom dgmkit.cli.main import main\n"
        "save, saved = Image.Image.save, []\n"
        "def save_then_kill(self, *a, **k):\n"
        "    save(self, *a, **k)\n    saved.append(1)\n"
        "    if len(saved) == 2:\n        os.kill(os.getpid(), signal.SIGTERM)\n"
        "Image.Image.save = save_then_kill\n"
        f"main(['decompress', {str(env.pz)!r}, '--run', {str(env.run)!r}, '--out', {str(out)!r}])\n"
        "print('returned')\n"
    )
    proc = _killed(script)
    assert proc.returncode == -signal.SIGTERM, proc.stdout + proc.stderr
    assert "returned" not in proc.stdout
    assert list(tmp_path.iterdir()) == []  # (neither the folder nor its hidden temporary)


def test_a_sigterm_during_a_file_s_write_leaves_no_temporary(tmp_path):
    script = (
        "import os, signal\nfrom dgmkit import _io\n"
        "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGTERM)\n"
        f"_io.atomic_write_bytes({str(tmp_path / 'x.bin')!r}, b'data')\nprint('returned')\n"
    )
    proc = _killed(script)
    assert proc.returncode == -signal.SIGTERM and "returned" not in proc.stdout, proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_sigterm_handlers_are_as_they_were_after_a_write_and_a_caller_s_is_kept(tmp_path):
    atomic_write_bytes(tmp_path / "a", b"a")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with atomic_folder(tmp_path / "f", ["x"]) as tmp:
            assert signal.getsignal(signal.SIGTERM) is mine
            (tmp / "x").write_bytes(b"x")
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- a SIGKILL while writing: what it leaves is named by the next write, never removed ------------------------------


def _killed_at_rename(env, argv: list, rename: str) -> None:
    """``dgm ARGV`` in a process killed by SIGKILL where it would rename its temporary into place
    (``os.link`` of a file found free when checked, ``os.replace`` of one replaced with --force,
    ``os.rename`` of a new folder): nothing can remove the temporary."""
    script = (
        "import os, signal\nfrom dgmkit.cli.main import main\n"
        f"real = os.{rename}\n"
        "def kill(a, b, **k):\n"
        "    if str(a).endswith('.tmp'):\n        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(a, b, **k)\n"
        f"os.{rename} = kill\nmain({[str(a) for a in argv]!r})\n"
    )
    proc = _killed(script)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr


def test_a_temporary_that_a_killed_compress_left_is_named_by_the_next_write_of_that_file_and_kept(env, capsys, tmp_path):
    out = tmp_path / "c.dgmz"
    _killed_at_rename(env, _compress(env, out), "link")  # (a new output is linked into place: never over another's)
    (stale,) = tmp_path.iterdir()  # .c.dgmz.XXXXXXXX.tmp, whole: only its rename was missing
    assert stale.name.startswith(".c.dgmz.") and stale.name.endswith(".tmp") and stale.is_file()
    code, said, err = dgm(capsys, *_compress(env, tmp_path / "other.dgmz"))  # (another file's write: not its business)
    assert code == 0 and "note" not in said, err
    code, said, err = dgm(capsys, *_compress(env, out))
    assert code == 0, err
    assert f"note: {stale} is left from a write of c.dgmz that did not finish" in said
    assert f"it can be deleted: rm {stale}\n" in said
    assert stale.is_file() and out.is_file()  # (named, not removed: this call did not make it)


def test_a_temporary_folder_that_a_killed_png_decompression_left_is_named_by_the_next_one(env, capsys, tmp_path):
    out = tmp_path / "pngs"
    _killed_at_rename(env, ["decompress", env.pz, "--run", env.run, "--out", out], "rename")
    (stale,) = tmp_path.iterdir()
    assert stale.name.startswith(".pngs.") and stale.is_dir()
    code, said, err = dgm(capsys, "decompress", env.pz, "--run", env.run, "--out", out)
    assert code == 0, err
    assert f"note: {stale} is left from a write of pngs" in said and f"deleted: rm -r {stale}\n" in said
    assert stale.is_dir() and len(list(out.iterdir())) == N_PNG


# -- the mode of a new folder, and what a PNG holds ----------------------------------------------


def test_a_new_png_folder_has_the_mode_that_the_umask_gives(env, capsys, tmp_path):
    old = os.umask(0o027)
    try:
        code, _, err = dgm(capsys, "decompress", env.pz, "--run", env.run, "--out", tmp_path / "pngs")
    finally:
        os.umask(old)
    assert code == 0, err
    assert (tmp_path / "pngs").stat().st_mode & 0o777 == 0o750
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "pngs").iterdir()} == {0o640}


@pytest.mark.parametrize("mode", ["1", "L"])
def test_a_png_with_transparency_is_refused_by_name(env, capsys, tmp_path, mode):
    from PIL import Image

    img = env.x[0].astype(bool) if mode == "1" else env.x[0].astype(np.uint8)
    png = tmp_path / "clear.png"
    Image.fromarray(img).save(png, transparency=0)
    refused(*dgm(capsys, "compress", env.run, png, "--out", tmp_path / "c.dgmz")[::2], str(png), "transparency")
    assert not (tmp_path / "c.dgmz").exists()
