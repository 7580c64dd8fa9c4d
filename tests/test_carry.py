"""benchmarks/carry.py: a folder carried as checked parts (between device sessions). Round trips,
and every refusal leaving nothing behind: damaged, missing, extra or unlisted parts, a
malformed manifest, a crafted archive with a link or a name that leaves the folder, a folder in
use, a destination inside the folder or already used."""

import fcntl
import hashlib
import io
import json
import os
import random
import tarfile
from pathlib import Path

import pytest

from benchmark_scripts import load

carry = load("carry")


def _folder(root: Path) -> Path:
    f = root / "moon"
    (f / "run" / "orders" / "s0").mkdir(parents=True)
    (f / "curve").mkdir()
    (f / "run" / "checkpoint.safetensors").write_bytes(random.Random(0).randbytes(5000))  # (several parts)
    (f / "run" / "config.json").write_text('{"model": "diffusion"}')
    (f / "run" / "orders" / "s0" / "order-0.pt").write_bytes(b"\x00\x01" * 3000)
    (f / "curve" / "points.jsonl").write_text('{"nll": 80.2}\n')
    (f / "run" / ".dgm.lock").write_bytes(b"")
    return f


def _files(f: Path) -> dict:
    return {str(p.relative_to(f)): p.read_bytes() for p in sorted(f.rglob("*")) if p.is_file()}


def test_a_folder_comes_back_file_for_file_without_its_locks(tmp_path):
    f = _folder(tmp_path)
    m = carry.pack(f, tmp_path / "parts", part_bytes=1000)
    parts = sorted((tmp_path / "parts").glob("carry.tgz.part*"))
    assert len(parts) == len(m["parts"]) > 1 and all(p.stat().st_size <= 1000 for p in parts)
    carry.unpack(tmp_path / "parts", tmp_path / "back")
    expected = {k: v for k, v in _files(f).items() if not k.endswith(".lock")}
    assert _files(tmp_path / "back") == expected and "run/orders/s0/order-0.pt" in expected
    (tmp_path / "empty").mkdir()
    carry.unpack(tmp_path / "parts", tmp_path / "empty")  # an empty folder may be named too
    assert _files(tmp_path / "empty") == expected


def test_pack_refuses_a_folder_in_use_a_link_and_a_destination_inside_or_used(tmp_path):
    f = _folder(tmp_path)
    with pytest.raises(carry.CarryError, match="inside"):
        carry.pack(f, f / "parts")
    with (f / "run" / ".dgm.lock").open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(carry.CarryError, match="is held"):
            carry.pack(f, tmp_path / "parts")
    assert not (tmp_path / "parts").exists()
    carry.pack(f, tmp_path / "parts")  # (the lock let go)
    with pytest.raises(carry.CarryError, match="already holds"):
        carry.pack(f, tmp_path / "parts")
    (f / "run" / "elsewhere").symlink_to(tmp_path)
    with pytest.raises(carry.CarryError, match="links"):
        carry.pack(f, tmp_path / "parts2")


def _refused(tmp_path: Path, src: Path, match: str) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(carry.CarryError, match=match):
        carry.unpack(src, tmp_path / "back")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no folder, no temporary one


def _edit(manifest: Path, change) -> None:
    m = json.loads(manifest.read_text())
    change(m)
    manifest.write_text(json.dumps(m))


def test_unpack_checks_every_part_and_the_whole_before_it_writes(tmp_path):
    f = _folder(tmp_path)
    src = tmp_path / "parts"
    carry.pack(f, src, part_bytes=1000)
    last = sorted(src.glob("carry.tgz.part*"))[-1]
    good = last.read_bytes()
    last.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    _refused(tmp_path, src, "damaged")
    last.write_bytes(good[:-1])
    _refused(tmp_path, src, "missing or not of")
    last.write_bytes(good)
    (src / "carry.tgz.part99").write_bytes(b"x")
    _refused(tmp_path, src, "does not list")
    (src / "carry.tgz.part99").unlink()
    saved = (src / "carry.json").read_text()

    def drop_last(m):  # a tail gone from the manifest and the folder alike
        gone = m["parts"].pop()
        m["bytes"] -= gone["bytes"]

    _edit(src / "carry.json", drop_last)
    last.unlink()
    _refused(tmp_path, src, "do not make the archive")
    (src / "carry.json").write_text(saved)
    last.write_bytes(good)
    (tmp_path / "back").mkdir()
    (tmp_path / "back" / "kept").write_text("mine")
    with pytest.raises(carry.CarryError, match="not an empty folder"):
        carry.unpack(src, tmp_path / "back")
    assert (tmp_path / "back" / "kept").read_text() == "mine"


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update(format=2),
        lambda m: m.update(parts=[]),
        lambda m: m["parts"][0].update(name="../carry.tgz.part00"),
        lambda m: m["parts"][0].update(bytes=-1),
        lambda m: m["parts"][0].update(bytes=True),
        lambda m: m["parts"][0].update(sha256="zz"),
        lambda m: m.update(bytes=m["bytes"] + 1),
        lambda m: m["parts"].reverse(),
        lambda m: m.clear(),
        lambda m: m.update(format=True),
    ],
)
def test_a_malformed_manifest_is_refused(tmp_path, change):
    carry.pack(_folder(tmp_path), tmp_path / "parts", part_bytes=1000)
    _edit(tmp_path / "parts" / "carry.json", change)
    _refused(tmp_path, tmp_path / "parts", "malformed|of format 2; this carry.py reads format 1")


@pytest.mark.parametrize("text", ['{"bytes": 1' + "0" * 5000 + "}", "[" * 200_000, '{"format": 1'])
def test_a_manifest_that_is_no_json_of_ours_is_refused_by_name(tmp_path, text):
    carry.pack(_folder(tmp_path), tmp_path / "parts", part_bytes=1000)
    (tmp_path / "parts" / "carry.json").write_text(text)
    _refused(tmp_path, tmp_path / "parts", "is not a manifest")


def _crafted(src: Path, members: list[tarfile.TarInfo], data: bytes = b"x") -> None:
    """Parts and a manifest, consistent, for an archive that pack would never write."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for t in members:
            tar.addfile(t, io.BytesIO(data) if t.isfile() else None)
    blob = buffer.getvalue()
    src.mkdir()
    (src / "carry.tgz.part00").write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    part = {"name": "carry.tgz.part00", "bytes": len(blob), "sha256": digest}
    (src / "carry.json").write_text(json.dumps({"format": 1, "parts": [part], "bytes": len(blob), "sha256": digest}))


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type, t.linkname, t.size = kind, target, 1 if kind == tarfile.REGTYPE else 0
    return t


def test_a_crafted_archive_with_a_link_or_a_name_outside_the_folder_writes_nothing(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    _crafted(tmp_path / "a", [_member("run", tarfile.SYMTYPE, str(victim)), _member("run/f")])
    _refused(tmp_path, tmp_path / "a", "links")
    for i, name in enumerate(["../escaped", str(tmp_path / "absolute")]):
        _crafted(tmp_path / f"b{i}", [_member(name)])
        _refused(tmp_path, tmp_path / f"b{i}", "a name outside the folder")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "absolute").exists()
    assert not any(victim.iterdir())


def test_a_crafted_archive_with_a_name_twice_a_deep_name_or_a_bomb_writes_nothing(tmp_path):
    _crafted(tmp_path / "a", [_member("run/f"), _member("run/f")])
    _refused(tmp_path, tmp_path / "a", "a name twice")
    _crafted(tmp_path / "b", [_member("d/" * 3000 + "f")])
    _refused(tmp_path, tmp_path / "b", "deeper or longer")
    bomb = _member("zeros")
    bomb.size = 20 << 20
    _crafted(tmp_path / "c", [bomb], data=bytes(bomb.size))  # (about 20 kB gzipped)
    _refused(tmp_path, tmp_path / "c", "over 200 times")


def test_a_file_that_changes_while_it_is_packed_is_refused_and_pack_leaves_no_folder(tmp_path, monkeypatch):
    f = _folder(tmp_path)
    addfile = tarfile.TarFile.addfile

    def grows_meanwhile(self, info, fileobj=None, **kw):
        out = addfile(self, info, fileobj, **kw)
        if info.name == "curve/points.jsonl":
            with (f / "curve" / "points.jsonl").open("a") as w:
                w.write('{"nll": 80.1}\n')
        return out

    monkeypatch.setattr(tarfile.TarFile, "addfile", grows_meanwhile)
    with pytest.raises(carry.CarryError, match="points.jsonl changed while it was packed"):
        carry.pack(f, tmp_path / "new" / "parts")
    assert not (tmp_path / "new").exists()


def test_a_truncated_archive_is_refused_by_name_and_a_failed_unpack_removes_the_folders_it_made(tmp_path):
    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w:gz") as tar:
        info = tarfile.TarInfo("big")
        info.size = 300_000
        tar.addfile(info, io.BytesIO(random.Random(1).randbytes(300_000)))
    src = tmp_path / "t"
    src.mkdir()
    cut = blob.getvalue()[:150_000]  # consistent with its manifest, and not a whole gzip stream
    (src / "carry.tgz.part00").write_bytes(cut)
    digest = hashlib.sha256(cut).hexdigest()
    part = {"name": "carry.tgz.part00", "bytes": len(cut), "sha256": digest}
    (src / "carry.json").write_text(json.dumps({"format": 1, "parts": [part], "bytes": len(cut), "sha256": digest}))
    with pytest.raises(carry.CarryError, match="truncated or corrupt"):
        carry.unpack(src, tmp_path / "new1" / "new2" / "out")
    assert not (tmp_path / "new1").exists()


def test_hard_links_travel_as_files_special_files_are_refused_and_pack_holds_the_locks_while_it_reads(tmp_path, monkeypatch):
    f = _folder(tmp_path)
    (f / "curve" / "again.jsonl").hardlink_to(f / "curve" / "points.jsonl")
    archive = carry._archive

    def read_while_locked(files, folder):  # a command that starts now finds the lock taken
        with (f / "run" / ".dgm.lock").open("rb") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return archive(files, folder)

    monkeypatch.setattr(carry, "_archive", read_while_locked)
    carry.pack(f, tmp_path / "parts")
    carry.unpack(tmp_path / "parts", tmp_path / "back")
    assert (tmp_path / "back" / "curve" / "again.jsonl").read_text() == '{"nll": 80.2}\n'
    os.mkfifo(f / "curve" / "pipe")
    with pytest.raises(carry.CarryError, match="special files"):
        carry.pack(f, tmp_path / "parts2")


def test_unpack_refuses_a_link_and_gives_the_folder_a_new_folders_permissions(tmp_path):
    carry.pack(_folder(tmp_path), tmp_path / "parts")
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(carry.CarryError, match="is a link"):
        carry.unpack(tmp_path / "parts", tmp_path / "link")
    assert (tmp_path / "target").is_dir() and not any((tmp_path / "target").iterdir())
    mask = os.umask(0o022)
    try:
        carry.unpack(tmp_path / "parts", tmp_path / "new")
        (tmp_path / "mine").mkdir(mode=0o750)
        carry.unpack(tmp_path / "parts", tmp_path / "mine")
    finally:
        os.umask(mask)
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "mine").stat().st_mode & 0o777 == 0o750


def test_a_pack_that_fails_while_it_writes_removes_its_parts_and_the_folders_it_made(tmp_path, monkeypatch):
    f = _folder(tmp_path)
    write = Path.write_bytes

    def disk_full_at_the_second_part(self, data):
        if self.name == "carry.tgz.part01":
            raise OSError(27, "File too large")
        return write(self, data)

    monkeypatch.setattr(Path, "write_bytes", disk_full_at_the_second_part)
    with pytest.raises(OSError, match="File too large"):
        carry.pack(f, tmp_path / "new" / "parts", part_bytes=1000)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()  # a folder it did not make stays, empty or not
    with pytest.raises(OSError, match="File too large"):
        carry.pack(f, tmp_path / "kept", part_bytes=1000)
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())


def test_pack_refuses_a_folder_that_unpack_would_refuse(tmp_path):
    f = _folder(tmp_path)
    (f / "run" / "zeros.bin").write_bytes(bytes(20 << 20))  # gzip: about 20 kB, over 200 times smaller
    with pytest.raises(carry.CarryError, match="cannot be carried: files of .* over 200 times"):
        carry.pack(f, tmp_path / "parts")
    assert not (tmp_path / "parts").exists()
