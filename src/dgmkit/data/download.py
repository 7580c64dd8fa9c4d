"""Checksummed, atomic downloads of canonical data files."""

import contextlib
import hashlib
import http.client
import logging
import os
import secrets
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from dgmkit.data.formats import MAX_BYTES_ENV, max_data_bytes
from dgmkit.errors import DataError

__all__ = ["download", "file_digest"]

log = logging.getLogger(__name__)


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the folders this call created
    (outermost first): only those may be removed again."""
    missing = []
    for p in [folder, *folder.parents]:
        if p.is_dir():
            break
        missing.append(p)
    created = []
    try:
        for p in reversed(missing):
            try:
                p.mkdir()
            except FileExistsError:
                if not p.is_dir():
                    raise
                continue  # made by someone else meanwhile: not ours
            created.append(p)
    except OSError:
        _remove_folders(created)
        raise
    return created


def _remove_folders(created: list[Path]) -> None:
    """Remove the folders of ``created`` that are still empty, innermost first (never a
    folder that now holds anything)."""
    for p in reversed(created):
        with contextlib.suppress(OSError):
            p.rmdir()


def _stream(url: str, out: BinaryIO, h: "hashlib._Hash", limit: int, timeout: float) -> bytes:
    """The bytes at ``url`` into ``out`` and the hash ``h``, in blocks of 1 MiB, stopped past
    ``limit`` bytes; returns the first of them (to say what a refused file is). A transfer cut
    short of the length that the server announced is refused: urllib's reads end quietly there."""
    size, head = 0, b""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        announced = _announced_length(resp)
        for block in iter(lambda: resp.read(1 << 20), b""):
            size += len(block)
            if size > limit:
                raise DataError(f"download of {url} exceeds {limit} bytes, the limit (set {MAX_BYTES_ENV} to raise it)")
            head = head or block[:64]
            h.update(block)
            out.write(block)
    if announced is not None and size < announced:
        raise DataError(f"download of {url} ended after {size} of the {announced} bytes its server announced; try again")
    return head


def _announced_length(resp: object) -> int | None:
    """The response's Content-Length, where it has a valid one (ASCII digits: "²" is a digit to
    str.isdigit, and int() raised on it)."""
    value = getattr(resp, "headers", {}).get("Content-Length")
    text = value.strip() if isinstance(value, str) else ""
    return int(text) if text.isascii() and text.isdigit() else None


def _web_page(head: bytes) -> str:
    """A note for a refused download whose first bytes are a web page's (after a UTF-8 byte-order
    mark, as some servers write one, and white space)."""
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip()[:14].lower()
    if start.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return " (it is a web page, HTML, not the data file: a proxy's, a login or an error page?)"
    return ""


def _temporary(folder: Path, name: str) -> tuple[int, str]:
    """A new, hidden file in ``folder`` to download into, made as any new file is (0666 less the
    umask): mkstemp's 0600 would keep the file, once in place, from the other users of a shared
    data folder."""
    path = folder / f".{name}.{secrets.token_hex(8)}.part"
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), str(path)


def _place(tmp: str, dest: Path) -> None:
    """The checked file ``tmp`` at ``dest``, unless a file appeared there meanwhile (another
    process's download of it, or a copy put there by hand): that one is kept, not overwritten."""
    try:
        os.link(tmp, dest)  # (fails where dest exists: never overwrites)
    except FileExistsError:
        log.info("%s appeared during the download: kept", dest)
    except OSError:  # a file system without hard links
        if not os.path.lexists(dest):
            os.replace(tmp, dest)
            return
    os.unlink(tmp)


def _check_download(
    url: str, tmp: Path, h: "hashlib._Hash", checksum: str | None, verify: Callable[[Path], object] | None, head: bytes
) -> None:
    """The downloaded file ``tmp`` (hashed into ``h``; ``head``: its first bytes) against the
    ``checksum`` or by ``verify``: DataError where it is refused, saying so if it is a web page."""
    if checksum is not None and h.hexdigest() != checksum:
        raise DataError(f"download of {url} has {h.name} {h.hexdigest()}, expected {checksum}{_web_page(head)}")
    if verify is not None:
        try:
            verify(tmp)
        except DataError as e:
            raise DataError(f"{e}{_web_page(head)}") from None


def download(
    url: str,
    dest: Path,
    checksum: str | None,
    algorithm: str = "sha256",
    timeout: float = 60.0,
    verify: Callable[[Path], object] | None = None,
) -> Path:
    """Download ``url`` to ``dest``: streamed into a temporary file beside it, checked against
    ``checksum`` and only then put in place (linked, so that a file that appeared at ``dest``
    meanwhile is kept, never overwritten), so ``dest`` is never half-written. A file whose bytes
    vary between copies (a MATLAB header holds a time stamp) has no ``checksum``: ``verify``
    then checks the temporary file's content and raises ``DataError`` to refuse it. A transfer
    cut short, or a web page in place of the data, is refused with a message that says so.

    A failed download leaves nothing behind: neither the temporary file nor the folders this
    call created for ``dest``. A download larger than the data limit (1 GiB, or
    ``$DGMKIT_MAX_DATA_BYTES``) is stopped."""
    if checksum is None and verify is None:
        raise ValueError("download needs a checksum or a verify function")
    dest = Path(dest)
    limit = max_data_bytes()
    created: list[Path] = []
    tmp = None
    h = hashlib.new(algorithm)
    try:
        created = _make_folders(dest.parent)
        fd, tmp = _temporary(dest.parent, dest.name)
        log.info("downloading %s", url)
        with os.fdopen(fd, "wb") as out:
            head = _stream(url, out, h, limit, timeout)
        _check_download(url, Path(tmp), h, checksum, verify, head)
        _place(tmp, dest)
        tmp = None
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        _remove_folders(created)
        if isinstance(e, DataError):
            raise
        if isinstance(e, OSError | http.client.HTTPException | ValueError):  # URLError is an OSError
            raise DataError(f"could not download {url}: {getattr(e, 'reason', None) or e}") from None
        raise
    return dest
