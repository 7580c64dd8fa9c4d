"""File output that cannot lose data: atomic writes, refusal of existing outputs, all-or-nothing
folders, and JSON that standard parsers accept.

- ``atomic_write_bytes``: a file is either its old self or wholly new, never half-written.
- ``check_new_output``: an output path may not name an existing file unless the user said
  ``--force``, and never one of the command's inputs, a file of any run folder, or anything but
  a regular file (a device, a FIFO).
- ``atomic_folder``: a multi-file output is written into a temporary folder beside its target and
  moved into place only when every file is written; a failure leaves nothing behind.
- ``sigterm_interrupts``: while either writes, a SIGTERM is handled as an interrupt (the partial
  output removed) and then ends the process as the signal does.
- ``to_json``: non-finite numbers become ``null`` and are listed under ``"non_finite"``.
- ``open_regular`` and ``read_regular``: input that is a regular file and nothing else (a FIFO
  would block and ``/dev/zero`` never end), read within a cap.
"""

import contextlib
import errno
import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import stat
import sys
import tempfile
import threading
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeGuard

from dgmkit.errors import DgmError

__all__ = [
    "atomic_write_bytes",
    "append_bytes",
    "remove_empty_folders",
    "atomic_write_json",
    "describe_os_error",
    "check_new_output",
    "atomic_folder",
    "sigterm_interrupts",
    "sigterm_raises",
    "to_json",
    "json_safe",
    "is_own_temporary",
    "remove_stale_temporaries",
    "stale_temporaries",
    "parse_json",
    "shell_path",
]

TMP_SUFFIX = ".tmp"
_OWN_TMP = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")  # what atomic_write_bytes creates
# outputs that check_new_output found free (without --force), until this process writes them: a
# file another program makes there meanwhile (a command works for minutes) is kept, not replaced
_CHECKED_FREE: set[str] = set()
_NAME_MAX = 255  # bytes of one file name on the file systems this runs on


def _tmp_stem(name: str) -> str:
    """The part of ``name`` that its temporary's name (``.STEM.XXXXXXXX.tmp``) holds: all of it,
    or as much as fits in a file name (so that a legal name of up to 255 bytes can be written)."""
    room = _NAME_MAX - len(".") - len(".XXXXXXXX") - len(TMP_SUFFIX)
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) <= room:
        return name
    return raw[:room].decode("utf-8", "ignore")  # (a character cut in two is left out)


def is_text_path(value: object) -> TypeGuard[str | os.PathLike[str]]:
    """Whether ``value`` names a file: a str or an os.PathLike of text (``Path(5)`` is pathlib's
    TypeError, and bytes name no file here)."""
    return isinstance(value, (str, os.PathLike)) and isinstance(os.fspath(value), str)


def describe_os_error(e: OSError, path: os.PathLike | str | None = None, action: str = "access") -> str:
    """One line for an OSError: what could not be done to which file, and why."""
    path = path if path is not None else (e.filename or "a file")
    if e.errno == errno.ENOSPC:
        return f"no space left on the device while writing {path}"
    if e.errno == errno.ENOENT:
        return f"no such file or folder: {path}"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot {action} {path}: permission denied"
    if e.errno == errno.EISDIR:
        return f"cannot {action} {path}: it is a folder"
    if e.errno == errno.ENOTDIR:
        return f"cannot {action} {path}: a part of the path is not a folder"
    if e.errno == errno.EEXIST and os.path.islink(path) and not os.path.exists(path):
        return f"cannot {action} {path}: it is a link to nothing (its target does not exist)"
    return f"cannot {action} {path}: {e.strerror or e}"


def atomic_write_bytes(path: os.PathLike | str, data: bytes | memoryview, replace: bool = True) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, and rename it into place
    (with ``replace`` False, or where ``check_new_output`` found nothing at ``path`` and this
    process has not written it since, link it there: a file that appeared at ``path`` since the
    caller checked it is kept, and a DgmError says so). On failure (an OSError, which a DgmError then
    names, or an interrupt) the temporary file and the folders this call made for ``path`` are
    removed; a SIGTERM as an interrupt (``sigterm_interrupts``)."""
    with sigterm_interrupts():
        _write_bytes(Path(path), data, replace)


def _place_new(tmp: str, path: Path) -> None:
    """The written file ``tmp`` at ``path`` where nothing is there: linked, which never replaces
    a file (a rename would, made there by another program while the caller worked)."""
    made = (
        f"{path} was made by another program while this one worked: it is kept, not replaced "
        "(choose another name, or add --force to replace it)"
    )
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise DgmError(made) from None
    except OSError:  # a file system without hard links: a rename, where nothing is there now
        if os.path.lexists(path):
            raise DgmError(made) from None
        os.replace(tmp, path)
        return
    with contextlib.suppress(OSError):  # (the file is in place; a temporary left is named by the next write)
        os.unlink(tmp)


def _write_bytes(path: Path, data: bytes | memoryview, replace: bool = True) -> None:
    tmp = None
    made = [p for p in path.parents if not p.exists()]  # folders this call creates (deepest first)
    done = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{_tmp_stem(path.name)}.", suffix=TMP_SUFFIX)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600; give the file its usual mode
        key = os.path.abspath(path)
        if replace and key not in _CHECKED_FREE:
            os.replace(tmp, path)
        else:
            _place_new(tmp, path)
        _CHECKED_FREE.discard(key)  # (this process's own file now: a later write replaces it)
        done = True
    except OSError as e:
        raise DgmError(describe_os_error(e, path, "write")) from None
    finally:
        if not done:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            remove_empty_folders(made)


def append_bytes(path: os.PathLike | str, data: bytes) -> None:
    """Append ``data`` to the regular file ``path`` and fsync it (a file that is not there is
    written as ``atomic_write_bytes`` writes one): the file grows by all of ``data`` or, on an
    error part way (a disk that fills: a DgmError names it) or an interrupt, is cut back to what
    it held. Each call writes as many bytes as it appends, where a rewrite would write the whole
    file. A link or anything but a regular file at ``path`` is refused (DgmError)."""
    path = Path(path)
    with sigterm_interrupts():
        if not os.path.lexists(path):
            _write_bytes(path, data)
            return
        flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:  # (without blocking: a FIFO with no reader would hold the open for ever; ENXIO instead)
            fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
        except OSError as e:
            if e.errno == errno.ENXIO:
                raise DgmError(f"cannot write {path}: it is not a regular file") from None
            raise DgmError(describe_os_error(e, path, "write")) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise DgmError(f"cannot write {path}: it is not a regular file")
            if hasattr(os, "set_blocking"):
                os.set_blocking(fd, True)
            _append_all(fd, data, st.st_size, path)
        finally:
            os.close(fd)


def _append_all(fd: int, data: bytes, size: int, path: Path) -> None:
    """``data`` written at the end of ``fd`` (of ``size`` bytes) and synced, or the file cut back."""
    try:
        view = memoryview(data)
        while view:  # (a write may take part of it: the rest follows, or the error)
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        if isinstance(e, OSError):
            raise DgmError(describe_os_error(e, path, "write")) from None
        raise


class Terminated(BaseException):
    """A SIGTERM that came while ``sigterm_interrupts`` was in force: raised where the process
    was, so that the writes under way remove what they left, as an interrupt does."""


# the handler that ``sigterm_interrupts`` installed, while it is SIGTERM's (one at a time: it is installed
# only over the default action)
_INTERRUPTING: dict[str, object] = {"handler": None}


def sigterm_raises() -> bool:
    """Whether SIGTERM's handler now is the one of ``sigterm_interrupts`` (which raises Terminated
    where the main thread is): a fit that defers the signal (``Trainer.fit``, under torchrun)
    takes it over and raises Terminated itself once its checkpoint is written."""
    handler = _INTERRUPTING["handler"]
    return handler is not None and signal.getsignal(signal.SIGTERM) is handler


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """A SIGTERM that comes within the block raises Terminated there (the ``finally`` blocks of
    the writes remove their temporaries) and then ends the process as the signal would have
    (its status says SIGTERM). Only where SIGTERM has its default action, in the main thread:
    a handler of the caller's, or the one of a fit that defers the signal (``Trainer.fit``,
    whose checkpoints are written meanwhile), is left as it is. The
    default is back when the block ends, and in a process forked meanwhile the signal ends it
    at once."""
    own = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if not own:
        yield
        return
    pid = os.getpid()

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (a second one ends the process at once)
        if os.getpid() != pid:  # a forked child's: the default, now
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated

    signal.signal(signal.SIGTERM, interrupt)
    _INTERRUPTING["handler"] = interrupt
    try:
        yield
    except Terminated:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()  # (what was printed is written before the process ends)
        os.kill(os.getpid(), signal.SIGTERM)
        raise  # (reached only where the signal is held back)
    finally:
        _INTERRUPTING["handler"] = None
        if signal.getsignal(signal.SIGTERM) is interrupt:  # (one installed meanwhile stays)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def is_own_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of ``atomic_write_bytes`` (``.NAME.XXXXXXXX.tmp``)."""
    return _OWN_TMP.match(name) is not None


def remove_stale_temporaries(folder: os.PathLike[str] | str, names: Iterable[str]) -> list[str]:
    """Remove the temporaries that an interrupted write of one of ``names`` left in ``folder``
    (call only while no other process writes there: under the run folder's lock)."""
    wanted = {_tmp_stem(n) for n in names}
    removed: list[str] = []
    try:
        with os.scandir(folder) as it:  # (closed even where reading the folder fails midway)
            entries = list(it)
    except OSError:
        return removed
    for entry in entries:
        m = _OWN_TMP.match(entry.name)
        if m and m["name"] in wanted and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(entry.name)
    return removed


def stale_temporaries(path: os.PathLike[str] | str) -> list[Path]:
    """The temporaries (``.NAME.XXXXXXXX.tmp``: a file of ``atomic_write_bytes``, a folder of
    ``atomic_folder``) that writes of ``path`` left beside it without finishing, oldest first: a
    process killed by SIGKILL (or a power cut) has no chance to remove them, and the next write
    makes one of another name. Named only, never removed: one may be the file of a write under
    way now, and none is this call's."""
    path = Path(path)
    stem = _tmp_stem(path.name)
    try:
        with os.scandir(path.parent) as it:
            found = [e for e in it if (m := _OWN_TMP.match(e.name)) and m["name"] == stem and not e.is_symlink()]
        return sorted((Path(e.path) for e in found), key=lambda p: (p.lstat().st_mtime, p.name))
    except OSError:  # (a folder that cannot be listed, or a temporary renamed meanwhile: nothing to say)
        return []


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _file_mode(path: Path) -> int:
    """The existing file's mode, else 0666 less the process umask (as open() would give)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_new_output(
    path: os.PathLike | str,
    force: bool = False,
    inputs: Iterable[os.PathLike | str] = (),
    protected: Iterable[os.PathLike | str] = (),
    what: str = "--out",
) -> Path:
    """``path`` as a Path, if a command may write it: refused if it names one of ``inputs`` or
    ``protected`` files, a file of any run folder (``_run_folder_of``), a folder or anything else
    but a regular file (a device, a FIFO: replacing ``/dev/null`` would break the system), all
    even with ``force``, or an existing file without ``force``; and a name that ends in a path
    separator (``x.html/``, which ``Path`` would read as ``x.html``): it names a folder. A path
    found free without ``force`` is written by ``atomic_write_bytes`` without replacing a file
    that another program makes there in the meantime."""
    _check_names_a_file(path, what)
    path = Path(path)
    for other in [*inputs, *protected]:
        other = Path(other)
        if _same_file(path, other) or os.path.realpath(path) == os.path.realpath(other):  # (also one not written yet)
            kind = "an input of this command" if other in [Path(p) for p in inputs] else "a file of the run"
            raise DgmError(f"{what} {path} is {kind}; write the output elsewhere")
    folder = _run_folder_of(path)
    if folder is not None:
        raise DgmError(f"{what} {path} is a file of the run in {folder}; write the output elsewhere")
    if path.is_dir():
        raise DgmError(f"{what} {path} is a folder; name a file")
    if path.exists() and not path.is_file():
        raise DgmError(f"{what} {path} is not a regular file (a device, a pipe or a socket); name a file")
    folder = path.absolute().parent
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:  # made below it on writing
        folder = folder.parent
    if not folder.is_dir():
        kind = "a link to nothing" if folder.is_symlink() and not folder.exists() else "a file"
        raise DgmError(f"{what} {path}: {folder} is {kind}, not a folder")
    there = path.exists() or path.is_symlink()
    if there and not force:
        raise DgmError(f"{what} {path} exists; choose another name or add --force to replace it")
    if there or force:
        _CHECKED_FREE.discard(os.path.abspath(path))
    else:
        _CHECKED_FREE.add(os.path.abspath(path))
    return path


def _check_names_a_file(path: os.PathLike | str, what: str) -> None:
    """Refuses an output name that ends in a separator (``x.html/``, ``x.html/.``): it names a
    folder, and a command that writes one file would write ``x.html`` in its place."""
    text = name = os.fspath(path)
    seps = tuple(s for s in (os.sep, os.altsep) if s)
    while name.endswith(seps) or (name.endswith(".") and name[:-1].endswith(seps)):
        name = name[:-1]
    if name != text:
        instead = f": name the file itself ({name})" if name.strip("".join(seps) + ".") else ""
        tail = text[len(name) :]
        raise DgmError(f"{what} {text} ends in {tail!r}, which names a folder, and this writes one file{instead}")


def _run_folder_of(path: Path) -> Path | None:
    """The run folder of which ``path`` (as named, or where its links lead) is one of the own
    files (``run_files``), or None: a folder that holds ``config.json`` and a checkpoint or a
    run's lock."""
    from dgmkit.training.run_writer import LOCK_NAME, run_files

    own = {p.name for p in run_files(".")}
    for named in dict.fromkeys([path.absolute(), Path(os.path.realpath(path))]):
        folder = named.parent
        if named.name not in own or not (folder / "config.json").is_file():
            continue
        if any((folder / n).is_file() for n in ("checkpoint.safetensors", "best.safetensors", LOCK_NAME)):
            return folder
    return None


@contextlib.contextmanager
def atomic_folder(target: os.PathLike | str, names: Iterable[str], force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder in which to write the files ``names``; when the block ends
    without an error they are moved into ``target`` (created if missing), else the temporary
    folder is removed and ``target`` is as it was.

    Existing files of ``target`` with one of ``names`` are refused unless ``force``; other
    files there are left alone. Into a folder that exists the files move one by one: an error or
    an interrupt while they move takes back those that were new (the ones replaced with ``force``
    are replaced; a killed process can leave part of them). The names must be plain base names
    (see ``check_base_name``). A SIGTERM meanwhile is an interrupt (``sigterm_interrupts``)."""
    with sigterm_interrupts(), _folder_in_place(Path(target), list(names), force) as tmp:
        yield tmp


@contextlib.contextmanager
def _folder_in_place(target: Path, names: list[str], force: bool) -> Iterator[Path]:
    for name in names:
        check_base_name(name)
    if target.exists() and not target.is_dir():
        raise DgmError(f"{target} is a file, not a folder")
    clash = [n for n in names if (target / n).exists() or (target / n).is_symlink()]
    if clash and not force:
        shown = ", ".join(clash[:3]) + (f" and {len(clash) - 3} more" if len(clash) > 3 else "")
        raise DgmError(f"{target} already holds {shown}; choose another folder or add --force to replace them")
    parent = target if target.is_dir() else target.parent
    made = [p for p in [parent, *parent.parents] if not p.exists()]  # folders this call creates
    tmp = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{_tmp_stem(target.name)}.", suffix=TMP_SUFFIX))
    except OSError as e:
        remove_empty_folders(made)
        raise DgmError(describe_os_error(e, target, "write")) from None
    done = False
    try:
        yield tmp
        written = {p.name for p in tmp.iterdir()}
        if written != set(names):
            raise DgmError(f"internal: the files written ({len(written)}) are not the ones announced ({len(names)})")
        if not target.exists():
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder its usual mode
            os.rename(tmp, target)  # one step: the whole folder appears at once
            tmp = None
        else:
            _move_into(tmp, target, names, new=set(names) - set(clash))
        done = True
    except OSError as e:  # a rename names the file it could not write second
        raise DgmError(describe_os_error(e, getattr(e, "filename2", None) or target, "write")) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            remove_empty_folders(made)


def _move_into(tmp: Path, target: Path, names: list[str], new: set[str]) -> None:
    """The files ``names`` moved from ``tmp`` into the existing folder ``target`` one by one; on
    an error or an interrupt, those of them that were ``new`` there and already moved go again."""
    moved: list[str] = []
    try:
        for n in names:
            os.replace(tmp / n, target / n)
            moved.append(n)
    except BaseException:
        for n in moved:
            if n in new:
                with contextlib.suppress(OSError):
                    os.unlink(target / n)
        raise


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove the folders (deepest first) that are empty: those a failed call created."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


_BAD_NAME_CHARS = re.compile(r"[\x00-\x1f/\\:]")
# Unicode categories never allowed in a name: controls (C0, DEL, C1), format characters (bidi
# overrides and isolates, zero widths, the BOM), surrogates, line and paragraph separators
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def full_path(path: os.PathLike[str] | str) -> Path:
    """``Path(path).expanduser().resolve()``, but a loop of symbolic links is left as it is for whoever
    opens the path to refuse (Python before 3.13 raises RuntimeError there: a user's path named no run
    or file). ``~`` is the home folder, as in the data paths (a config file's ``codes_of = "~/runs/vq"``)."""
    return Path(os.path.realpath(os.path.expanduser(path)))


def shell_path(path: os.PathLike[str] | str) -> str:
    """``path`` as one word of a command that dgm is shown to take: quoted for the shell, and a
    relative path that begins with ``-`` as ``./-name`` (as itself, argparse takes it for a flag:
    ``--out -run`` is refused with "expected one argument")."""
    text = os.fspath(path)
    return shlex.quote(f"./{text}" if text.startswith("-") else text)


def shown_text(text: str) -> str:
    """``text`` to show to a person: each invisible or control character (a bidi override, a zero
    width, C0 and C1 controls, a lone surrogate of an undecodable file name) written as its
    escape, ``\\u202e``, so that no name shows as another; any other character as it is."""
    if text.isprintable():  # (the common case: nothing to escape; a space is printable)
        return text
    return "".join(ascii(c)[1:-1] if unicodedata.category(c) in _INVISIBLE_CATEGORIES else c for c in text)


_CONTROL_NAMES = {"\n": "a line break", "\r": "a carriage return", "\t": "a tab", "\x1b": "an escape", "\x00": "NUL"}


def control_character(text: str) -> str | None:
    """The first control character of ``text`` (C0, DEL, C1: a line break, an escape, ...),
    named for a message, ``"U+000A (a line break)"``, or None. No path, name or value that dgm
    reads, from a command's arguments or a settings file, takes one: printed back, as a run
    folder's name is, it would forge lines of the output or drive the terminal."""
    c = next((c for c in text if unicodedata.category(c) == "Cc"), None)
    return None if c is None else f"U+{ord(c):04X} ({_CONTROL_NAMES.get(c, 'a control character')})"


def invisible_character(text: str) -> str | None:
    """The first invisible or control character of ``text`` (those ``shown_text`` escapes: a bidi
    override, a zero width, a control, a lone surrogate), or None."""
    return next((c for c in text if unicodedata.category(c) in _INVISIBLE_CATEGORIES), None)


def check_base_name(name: object, what: str = "file name") -> str:
    """``name`` if it is a plain, harmless base name: a non-empty string without path
    separators, control characters or NUL, not ``.``/``..`` and not hidden."""
    if not isinstance(name, str):
        raise DgmError(f"{what} {name!r} is not a string")
    if not name or len(name.encode("utf-8", "surrogatepass")) > 255:
        raise DgmError(f"{what} {name[:40]!r} is empty or longer than 255 bytes")
    if _BAD_NAME_CHARS.search(name) or name in (".", "..") or name.startswith(".") or name != name.strip():
        raise DgmError(f"{what} {name!r} is not a plain base name (no folders, no control characters, not hidden)")
    hidden = invisible_character(name)
    if hidden is not None:  # a name that shows as another: right-to-left overrides, zero widths, C1 controls
        raise DgmError(
            f"{what} {name!r} holds the invisible or control character U+{ord(hidden):04X} "
            f"({unicodedata.name(hidden, 'unnamed')}), which can make a name show as another"
        )
    return name


def json_safe(obj: Any, path: str = "", found: dict | None = None) -> Any:
    """``obj`` with every NaN or infinite float replaced by None; ``found`` collects where."""
    if isinstance(obj, float) and not math.isfinite(obj):
        if found is not None:
            found[path or "value"] = repr(obj)
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v, f"{path}.{k}" if path else str(k), found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, f"{path}[{i}]", found) for i, v in enumerate(obj)]
    return obj


def to_json(obj: Any, indent: int | None = None) -> str:
    """Strict JSON (RFC 8259): a NaN or infinity is written as null, and a dict gains a
    ``"non_finite"`` entry saying which values they were."""
    found: dict[str, str] = {}
    safe = json_safe(obj, found=found)
    if found and isinstance(safe, dict):
        safe["non_finite"] = found
    return json.dumps(safe, indent=indent, sort_keys=indent is not None, allow_nan=False)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the key {k!r} appears twice")
        out[k] = v
    return out


def _no_constant(token: str) -> None:
    raise ValueError(f"{token} is not standard JSON (dgmkit writes a non-finite number as null)")


class NotRegularFile(OSError):
    """What ``open_regular`` raises for a path that exists but is no regular file."""


def open_regular(path: os.PathLike | str) -> io.BufferedReader:
    """``path`` opened for reading if it is a regular file; anything else (a FIFO, which would
    block, a device such as ``/dev/zero``, which never ends, a folder) raises NotRegularFile.
    Opened without blocking and checked on the open file: no window between a check and the
    open."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", os.fspath(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: os.PathLike | str, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the regular file ``path`` (the caller refuses more than
    ``limit``), asked for only as many as the file holds, since Python reserves a read's whole
    size at once; OSError as ``open_regular``."""
    with open_regular(path) as f:
        return f.read(min(os.fstat(f.fileno()).st_size, limit) + 1)


def parse_json(text: str | bytes) -> Any:
    """Strict JSON of an untrusted source: a key that appears twice, ``NaN``/``Infinity``, a number
    beyond a float's range (``1e999``, which Python reads as inf), an integer of more digits than
    Python converts and nesting too deep to parse raise ValueError (never RecursionError); a
    shorter huge integer is left to the checks of the field that holds it, which name it."""
    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
            parse_int=_short_int,
        )
    except RecursionError:
        raise ValueError("it is nested too deeply") from None


def _short_int(text: str) -> int:
    """An integer of at most 4300 digits, Python's limit, refused in words beyond it (Python's own
    message says to raise sys.set_int_max_str_digits)."""
    if len(text.lstrip("-")) > 4300:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits is beyond any value this file holds")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is beyond a float's range")
    return value


def atomic_write_json(path: os.PathLike | str, obj: Any) -> None:
    atomic_write_bytes(path, (to_json(obj, indent=2) + "\n").encode())
