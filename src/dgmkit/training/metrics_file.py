"""The one reader of a run's ``metrics.jsonl`` (one JSON object per epoch, or EM iteration, that
``RunWriter.metrics`` appends): every command that reads the file (``dgm report``, a resumed run's
``RunWriter.truncate_metrics``, ``RunFolder.stranded_start``) reads it through ``metrics_lines``,
which checks it once for all of them.

A metrics.jsonl is refused, with MetricsFileError (its line, if any, and why), where it is not a
regular file (a FIFO would block, a link to ``/dev/zero`` never end; a link to nothing is named as
such), is larger than MAX_METRICS_BYTES, holds more than MAX_METRICS_LINES lines (blank lines
aside) or a line of more than MAX_METRICS_LINE_BYTES (refused by its size, unparsed: parsing JSON
takes up to 27 times a line's size), or a line that is not a JSON object as dgmkit writes one
(UTF-8; no NaN or Infinity, no key twice: ``_io.parse_json``). Each caller raises its own error
class from it (``dgm report`` DataError, a resumed run CheckpointError).
"""

import json
import os
from collections.abc import Generator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from dgmkit._io import describe_os_error, open_regular, parse_json
from dgmkit.errors import DgmError

__all__ = [
    "metrics_lines", "MetricsLine", "MetricsFileError", "MAX_METRICS_BYTES", "MAX_METRICS_LINE_BYTES",
    "MAX_METRICS_LINES",
]  # fmt: skip

MAX_METRICS_BYTES = 256 << 20  # a run's metrics.jsonl
# a line of it, its newline included: an epoch's is a few kB (16 MiB: the KLs of 2 million latent dimensions);
# parsing JSON takes up to 27 times its size (nested empty lists), so a longer line is refused unparsed
MAX_METRICS_LINE_BYTES = 16 << 20
MAX_METRICS_LINES = 10**6  # one line an epoch, and no run has more epochs (nor EM iterations)
_CHUNK = 1 << 20  # how much of a line over the cap is read at a time, to count its length (not kept)


class MetricsFileError(DgmError):
    """A metrics.jsonl that ``metrics_lines`` refuses. ``line``: the line refused (from 1, blank
    lines counted; None: the file as a whole), ``reason``: why, in words; the message names the
    file and both. ``unreadable``: the file could not be read at all (no regular file, a link to
    nothing, an OSError): its message says all there is to say; otherwise it says what the
    file holds, and a caller adds what follows from it (not a metrics file of dgmkit; the run
    cannot be resumed)."""

    def __init__(self, path: Path, reason: str, line: int | None = None, unreadable: bool = False):
        self.path, self.reason, self.line, self.unreadable = path, reason, line, unreadable
        super().__init__(f"{path}, line {line}: {reason}" if line is not None else reason)


class MetricsLine(NamedTuple):
    """A line of metrics.jsonl: its ``number`` (from 1, blank lines counted), its ``text`` as in
    the file (bytes, without the newline) and the JSON object it holds (``row``)."""

    number: int
    text: bytes
    row: dict


def metrics_lines(path: os.PathLike[str] | str, *, being_written: bool = True) -> Generator[MetricsLine, None, None]:
    """The lines of the metrics.jsonl ``path`` that hold an epoch, one at a time (the file is read
    a line at a time: a caller that keeps only part of each row holds only that), blank lines left
    out; none where there is no file at ``path``. MetricsFileError where the file or a line is not
    one dgmkit writes (the module's docstring).

    ``being_written``: the file is read while a run may be writing it (not under the run's lock):
    a last line with no newline that is not yet whole JSON is the line being written, and left
    out. False (read under the lock, or before the file is rewritten or removed): no line is
    being written, and such a line is refused as cut short. A last line with no newline that is
    whole JSON is read either way, and one that holds JSON dgmkit never writes (NaN, say) is
    refused either way: a line being written is one that dgmkit writes."""
    path = Path(path)
    f = _opened(path)
    if f is None:
        return
    too_large = f"{path} is larger than {MAX_METRICS_BYTES >> 20} MiB"
    with f:
        if os.fstat(f.fileno()).st_size > MAX_METRICS_BYTES:
            raise MetricsFileError(path, too_large)
        read = lines = number = 0
        while True:
            raw = f.readline(MAX_METRICS_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            read += len(raw)
            size, ended = len(raw), raw.endswith(b"\n")
            if size > MAX_METRICS_LINE_BYTES and not ended:  # its length, unkept
                more, ended = _rest_of_line(f, MAX_METRICS_BYTES - read)
                size, read = size + more, read + more
            if read > MAX_METRICS_BYTES:  # (the file grew while it was read)
                raise MetricsFileError(path, too_large)
            if size <= MAX_METRICS_LINE_BYTES and not raw.strip():
                continue
            lines += 1
            if lines > MAX_METRICS_LINES:
                raise MetricsFileError(
                    path,
                    f"{path} holds more than {MAX_METRICS_LINES:,} lines, one an epoch, more than any run has epochs",
                )
            if size > MAX_METRICS_LINE_BYTES:
                raise MetricsFileError(
                    path, f"{size:,} bytes, more than any line dgmkit writes ({MAX_METRICS_LINE_BYTES >> 20} MiB)", number
                )
            text = raw[:-1] if ended else raw  # (a line with no newline is the last: readline stops only at the end)
            row = _object(path, text, number, ended, being_written)
            if row is None:  # the line being written
                return
            yield MetricsLine(number, text, row)


def _opened(path: Path) -> BinaryIO | None:
    """``path`` open to read, where it is a regular file; None where there is nothing at ``path``."""
    if not os.path.lexists(path):
        return None
    if path.is_symlink() and not path.exists():  # (git-annex content not fetched, say)
        raise MetricsFileError(
            path, f"{path}, a link to {os.readlink(path)}, names no file: fetch its content, or remove the link", None, True
        )
    try:
        return open_regular(path)
    except OSError as e:  # (a FIFO, a device, a folder: not a regular file; permission denied)
        raise MetricsFileError(path, describe_os_error(e, path, "read"), None, True) from None


def _rest_of_line(f: BinaryIO, most: int) -> tuple[int, bool]:
    """The bytes of the rest of a line that ``f`` is in (read, not kept), up to one chunk more than
    ``most``, and whether a newline ended it."""
    size = 0
    while size <= most:
        more = f.readline(_CHUNK)
        if not more:
            return size, False
        size += len(more)
        if more.endswith(b"\n"):
            return size, True
    return size, False


def _object(path: Path, text: bytes, number: int, ended: bool, being_written: bool) -> dict | None:
    """The JSON object of line ``number``; None where it is the line being written (the last,
    with no newline, cut short, where ``being_written``); MetricsFileError where it is none."""
    cut = " (cut short: no newline ends it)" if not ended else ""
    try:
        row = parse_json(text.decode())
    except UnicodeDecodeError as e:  # (dgmkit writes ASCII: escaped, any other character)
        if not ended and being_written and e.reason == "unexpected end of data":
            return None
        raise MetricsFileError(path, f"not UTF-8 text (byte {e.start + 1} of the line){cut}", number) from None
    except json.JSONDecodeError:
        if not ended and being_written:
            return None
        raise MetricsFileError(path, f"not a JSON object{cut}", number) from None
    except ValueError as e:  # JSON, but not what dgmkit writes: NaN, Infinity, a key twice
        raise MetricsFileError(path, str(e), number) from None
    if not isinstance(row, dict):
        raise MetricsFileError(path, "not a JSON object", number)
    return row
