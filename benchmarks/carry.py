"""A folder (a run, and what a GPU script wrote beside it) carried to another machine as parts of
at most 15 MiB, with a manifest of their sizes and SHA-256 and the whole archive's, so that a
device session's few, small files can bring a run back and take it to the next session.

    python benchmarks/carry.py pack FOLDER DEST      # DEST/carry.json and DEST/carry.tgz.part00, 01, ...
    python benchmarks/carry.py unpack SRC FOLDER     # FOLDER (new, or empty) from SRC's parts

``pack`` refuses a folder in use (a held ``*.lock``: a training or evaluation writing to it;
pack holds every lock while it reads, so none starts meanwhile), one that holds links or special
files (a hard-linked file is carried as a plain one), a file that changes while it is read, and
a DEST inside FOLDER or already holding a manifest or parts; ``unpack`` checks every part and the
whole archive against the manifest before it writes anything, refuses parts it does not list and
archive members that are links, would land outside FOLDER, stand twice, are nested deeper or
named longer than a run folder's, or expand over 200 times the archive, and extracts into a
temporary folder beside FOLDER that takes FOLDER's name (and a new folder's usual permissions,
or the empty FOLDER's own) only once complete. Either leaves nothing of its own behind when it
fails (a killed unpack leaves its ``.FOLDER.unpacking-*`` folder, which a later one does not
remove). Lock files are not carried.
"""

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

PART_BYTES = 15 * 2**20
MANIFEST = "carry.json"
PART_NAME = re.compile(r"carry\.tgz\.part\d{2,4}")
MAX_PARTS = 1000
MAX_NAME, MAX_DEPTH = 1024, 64  # of an archive member's name: a run folder's are a few levels of short names
MAX_EXPANSION = 200  # the files' bytes per archive byte (gzip gives a run folder's weights about 1.1, text 5 to 20)
__all__ = ["pack", "unpack", "CarryError"]


class CarryError(Exception):
    """A folder that cannot be packed, or parts that cannot be unpacked; the message says why."""


@contextlib.contextmanager
def _holding(locks: list[Path], folder: Path) -> Iterator[None]:
    """Every lock of ``locks`` held (as dgm's commands take them) for the duration, or CarryError
    naming one that a command holds."""
    with contextlib.ExitStack() as stack:
        for lock in locks:
            f = stack.enter_context(lock.open("rb"))
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CarryError(f"{lock} is held: a command is still writing to {folder}; pack it when that ends") from None
            stack.callback(fcntl.flock, f, fcntl.LOCK_UN)
        yield


def _archive(files: list[Path], folder: Path) -> bytes:
    """The gzipped tar of ``files`` (below ``folder``; no lock file): folders, and files as plain
    files whatever links they have."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for p in files:
            name = str(p.relative_to(folder))
            if p.is_dir():
                tar.add(p, arcname=name, recursive=False)
                continue
            info = tar.gettarinfo(p, arcname=name)
            with p.open("rb") as f:
                before = os.fstat(f.fileno())
                info.type, info.linkname, info.size = tarfile.REGTYPE, "", before.st_size  # (a hard link: its content)
                try:
                    tar.addfile(info, f)
                except OSError as e:  # (tarfile's "unexpected end of data": it shrank)
                    raise CarryError(
                        f"{p} changed while it was packed ({e}): pack again once nothing writes to it"
                    ) from None
                after = os.fstat(f.fileno())
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise CarryError(f"{p} changed while it was packed: pack again once nothing writes to it")
    return buffer.getvalue()


def pack(folder: str | Path, dest: str | Path, part_bytes: int = PART_BYTES) -> dict:
    """Writes FOLDER as DEST/carry.tgz.partNN and DEST/carry.json; returns the manifest."""
    folder, dest = Path(folder).resolve(), Path(dest).resolve()
    if not folder.is_dir():
        raise CarryError(f"{folder} is not a folder")
    if dest == folder or folder in dest.parents:
        raise CarryError(f"{dest} lies inside {folder}: the parts would pack themselves")
    files = sorted(folder.rglob("*"))
    links = [p for p in files if p.is_symlink()]
    if links:
        raise CarryError(f"{folder} holds links ({links[0].relative_to(folder)}), which are not carried")
    odd = [p for p in files if not (p.is_file() or p.is_dir())]
    if odd:
        raise CarryError(f"{folder} holds special files ({odd[0].relative_to(folder)}: a pipe, socket or device), "
                         "which are not carried")  # fmt: skip
    if dest.exists() and any(p.name == MANIFEST or PART_NAME.fullmatch(p.name) for p in dest.iterdir()):
        raise CarryError(f"{dest} already holds a packed folder: name an empty one")
    locks = [p for p in files if p.suffix == ".lock" and p.is_file()]
    with _holding(locks, folder):
        data = _archive([p for p in files if p.suffix != ".lock"], folder)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:  # what unpack will check: refused here, not there
        problem = _members_problem(tar.getmembers(), len(data))
    if problem:
        raise CarryError(f"{folder} cannot be carried: {problem}")
    pieces = [data[i : i + part_bytes] for i in range(0, len(data), part_bytes)]
    if len(pieces) > MAX_PARTS:
        raise CarryError(f"{folder} makes {len(pieces)} parts, more than {MAX_PARTS}")
    made = [d for d in (dest, *dest.parents) if not d.exists()]  # removed again on failure
    written: list[Path] = []
    try:
        dest.mkdir(parents=True, exist_ok=True)
        parts = []
        for i, piece in enumerate(pieces):
            path = dest / f"carry.tgz.part{i:02d}"
            written.append(path)
            path.write_bytes(piece)
            parts.append({"name": path.name, "bytes": len(piece), "sha256": hashlib.sha256(piece).hexdigest()})
        manifest = {"format": 1, "parts": parts, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        written.append(dest / MANIFEST)
        (dest / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        _remove_if_empty(made)
        raise
    return manifest


def _remove_if_empty(made: list[Path]) -> None:
    """The folders a failed call made (innermost first), each removed where it is still empty."""
    for d in made:
        with contextlib.suppress(OSError):
            d.rmdir()


def _checked_manifest(src: Path) -> dict:
    path = src / MANIFEST
    if not path.is_file() or path.stat().st_size > 2**20:
        raise CarryError(f"no manifest {path} (or not one that pack wrote)")
    try:
        m = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # (JSONDecodeError, a 5000-digit number, [[[...)
        raise CarryError(f"{path} is not a manifest: {type(e).__name__}: {str(e)[:200]}") from None
    digest = re.compile(r"[0-9a-f]{64}")
    ok = (
        isinstance(m, dict)
        and type(m.get("format")) is int
        and m["format"] == 1
        and isinstance(m.get("parts"), list)
        and 0 < len(m["parts"]) <= MAX_PARTS
        and all(
            isinstance(p, dict)
            and isinstance(p.get("name"), str)
            and PART_NAME.fullmatch(p["name"])
            and type(p.get("bytes")) is int
            and 0 < p["bytes"] <= 2**31
            and isinstance(p.get("sha256"), str)
            and digest.fullmatch(p["sha256"])
            for p in m["parts"]
        )
        and [p["name"] for p in m["parts"]] == [f"carry.tgz.part{i:02d}" for i in range(len(m["parts"]))]
        and type(m.get("bytes")) is int
        and isinstance(m.get("sha256"), str)
        and digest.fullmatch(m["sha256"])
    )
    if isinstance(m, dict) and type(m.get("format")) is int and m["format"] != 1:
        raise CarryError(f"{path} is of format {m.get('format')!r}; this carry.py reads format 1")
    if not ok:
        raise CarryError(f"{path} is malformed")
    if m["bytes"] != sum(p["bytes"] for p in m["parts"]):
        raise CarryError(f"{path} is malformed: its bytes, {m['bytes']}, are not the sum of its parts' bytes")
    return m


def unpack(src: str | Path, folder: str | Path) -> None:
    """FOLDER (which must not exist, or be empty) from the parts in SRC, all checked first."""
    if not hasattr(tarfile, "data_filter"):
        raise CarryError("unpacking needs tarfile's extraction filters: Python 3.10.12, 3.11.4 or later")
    if Path(folder).is_symlink():
        raise CarryError(f"{folder} is a link: unpack into a new folder")
    src, folder = Path(src).resolve(), Path(folder).resolve()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise CarryError(f"{folder} exists and is not an empty folder: unpack into a new one")
    m = _checked_manifest(src)
    listed = {p["name"] for p in m["parts"]}
    extra = sorted(p.name for p in src.iterdir() if PART_NAME.fullmatch(p.name) and p.name not in listed)
    if extra:
        raise CarryError(f"{src} holds parts that {MANIFEST} does not list ({', '.join(extra)})")
    pieces = []
    for p in m["parts"]:
        path = src / p["name"]
        if not path.is_file() or path.stat().st_size != p["bytes"]:
            raise CarryError(f"{path} is missing or not of the {p['bytes']} bytes {MANIFEST} gives")
        piece = path.read_bytes()
        if hashlib.sha256(piece).hexdigest() != p["sha256"]:
            raise CarryError(
                f"{path} is damaged, or {MANIFEST} is another pack's: its SHA-256 is not the one {MANIFEST} gives"
            )
        pieces.append(piece)
    data = b"".join(pieces)
    if hashlib.sha256(data).hexdigest() != m["sha256"]:
        raise CarryError(f"the parts in {src} do not make the archive {MANIFEST} describes")
    made = [d for d in (folder.parent, *folder.parent.parents) if not d.exists()]  # removed again on failure
    mode = folder.stat().st_mode & 0o7777 if folder.exists() else 0o777 & ~_umask()
    tmp = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name[:64]}.unpacking-", dir=folder.parent))
        except OSError as e:
            raise CarryError(f"cannot make a folder beside {folder} to unpack into: {e.strerror or e}") from None
        _extract(data, tmp)
        tmp.chmod(mode)
        if folder.exists():
            folder.rmdir()  # (empty: checked above)
        tmp.rename(folder)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_if_empty(made)
        raise


def _extract(data: bytes, into: Path) -> None:
    """The gzipped tar ``data`` into the empty folder ``into``: plain files and folders under it
    only, else CarryError."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = tar.getmembers()
            odd = [t.name for t in members if not (t.isfile() or t.isdir())]
            if odd:
                raise CarryError(f"the archive holds links or special files ({odd[0]}), which pack never writes")
            outside = [t.name for t in members if t.name.startswith("/") or ".." in Path(t.name).parts]
            if outside:
                raise CarryError(f"the archive holds a name outside the folder ({outside[0]}), which pack never writes")
            problem = _members_problem(members, len(data))
            if problem:
                raise CarryError(f"the archive holds {problem}, which pack never writes")
            tar.extractall(into, filter="data")  # (refuses names that would leave ``into`` as well)
    except tarfile.FilterError as e:
        raise CarryError(f"the archive holds a member that pack never writes: {e}") from None
    except (EOFError, zlib.error, tarfile.TarError) as e:
        raise CarryError(f"the archive is truncated or corrupt: {e}") from None
    except OSError as e:
        if e.errno is not None:  # the disk's (full, read-only): as it is
            raise
        raise CarryError(f"the archive is truncated or corrupt: {e}") from None  # (tarfile's "unexpected end of data")


def _members_problem(members: list[tarfile.TarInfo], archive_bytes: int) -> str | None:
    """What pack refuses to write and unpack to read, in an archive's members (None: nothing)."""
    names = [t.name.rstrip("/") for t in members]
    if len(set(names)) != len(names):
        return "a name twice"
    deep = [n for n in names if len(n) > MAX_NAME or n.count("/") >= MAX_DEPTH]
    if deep:
        return f"a name deeper or longer than a run folder's ({deep[0][:80]}...)"
    size = sum(t.size for t in members)
    if size > MAX_EXPANSION * archive_bytes:
        return f"files of {size} bytes, over {MAX_EXPANSION} times the archive's {archive_bytes}"
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main(argv: list[str]) -> int:
    usage = "usage: carry.py pack FOLDER DEST | carry.py unpack SRC FOLDER"
    if len(argv) != 3 or argv[0] not in ("pack", "unpack"):
        print(usage, file=sys.stderr)
        return 2
    try:
        if argv[0] == "pack":
            m = pack(argv[1], argv[2])
            files, mib = len(m["parts"]) + 1, m["bytes"] / 2**20
            print(f"packed {argv[1]} into {len(m['parts'])} parts, {mib:.1f} MiB, in {argv[2]}")
            if files > 8 or mib > 63:
                print(f"warning: {files} files and {mib:.1f} MiB: more than a device session gives back "
                      "(8 files, 64 MiB)", file=sys.stderr)  # fmt: skip
        else:
            unpack(argv[1], argv[2])
            print(f"unpacked {argv[1]} into {argv[2]}")
    except (CarryError, OSError, tarfile.TarError) as e:
        print(f"carry.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
