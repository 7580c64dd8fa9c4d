"""Advisory exclusive locks on a file, on every platform: the ``filelock`` package (``flock`` on
POSIX, ``LockFileEx`` on Windows), so that importing dgmkit needs no POSIX-only module."""

import os

from filelock import FileLock, Timeout

__all__ = ["FileLock", "acquire", "Timeout"]


def acquire(path: str | os.PathLike, wait: bool) -> FileLock:
    """An exclusive lock on the file ``path`` (created if absent; never removed), held until
    ``release()``. ``wait=False``: ``Timeout`` at once if another process holds it."""
    lock = FileLock(os.fspath(path))
    lock.acquire(timeout=-1 if wait else 0)
    return lock
