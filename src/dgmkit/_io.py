"""Atomic file writes: a file is either its old self or wholly new, never half-written."""

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from dgmkit.errors import DgmError

__all__ = ["atomic_write_bytes", "atomic_write_json", "describe_os_error"]


def describe_os_error(e: OSError, path: os.PathLike | str) -> str:
    if e.errno == errno.ENOSPC:
        return f"no space left on the device while writing {path}"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: permission denied"
    return f"cannot write {path}: {e.strerror or e}"


def atomic_write_bytes(path: os.PathLike | str, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, and rename it into place.
    On failure the temporary file is removed and a DgmError names the problem."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600; give the file its usual mode
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise DgmError(describe_os_error(e, path)) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _file_mode(path: Path) -> int:
    """The existing file's mode, else 0666 less the process umask (as open() would give)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_json(path: os.PathLike | str, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
