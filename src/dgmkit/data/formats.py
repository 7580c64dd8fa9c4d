"""Readers for the canonical file formats: ``.amat`` text, IDX, and NumPy ``.npy``/``.npz``.

Every reader takes any bytes: it returns a valid array or raises :class:`DataError` with a
one-line message that names the file and the problem. Headers are parsed here, not by NumPy,
and every size they declare is computed with Python integers and compared with the bytes that
really follow before anything is allocated, so a hostile header cannot make a reader allocate
more than the file's real size justifies (or hang, or overflow).

Compressed data has a hard cap: a gzipped file (``.amat.gz``, IDX ``.gz``) is decompressed as a
stream and refused as soon as its output exceeds :func:`max_data_bytes`, and so is a ``.npz``
member whose size exceeds it. The cap is ``MAX_DECOMPRESSED_BYTES`` (1 GiB), or the number of
bytes in the environment variable ``DGMKIT_MAX_DATA_BYTES``. An IDX file is also capped by the
size its own header declares: decompression stops at the first byte beyond it.

Only plain numbers are read from NumPy files: bool, signed and unsigned integers and real
floats (16, 32 or 64 bits), in C or Fortran order, with no zero in the shape. Complex numbers,
strings, datetimes, timedeltas, objects and structured records are refused.
"""

import contextlib
import io
import math
import os
import re
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np
from numpy.typing import DTypeLike

from dgmkit import _io
from dgmkit._io import NotRegularFile, describe_os_error, open_regular
from dgmkit.errors import DataError, shown_value

__all__ = [
    "read_amat",
    "read_idx",
    "read_array",
    "read_arrays",
    "open_maybe_gzip",
    "read_regular",
    "open_data_file",
    "data_file_errors",
    "max_data_bytes",
    "MAX_DECOMPRESSED_BYTES",
    "MAX_BYTES_ENV",
]

MAX_DECOMPRESSED_BYTES = 1 << 30
"""Default cap on the bytes that decompression (gzip, ``.npz`` members) may produce: 1 GiB."""
MAX_BYTES_ENV = "DGMKIT_MAX_DATA_BYTES"
"""Environment variable that replaces ``MAX_DECOMPRESSED_BYTES`` (a whole number of bytes)."""

_IDX_DTYPES: dict[int, DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MAX_NDIM = 32  # NumPy 1.x's limit
_BLOCK = 1 << 20  # output produced per decompression step
_FEED = 1 << 16  # compressed input given per decompression step
_GZIP_MAGIC = b"\x1f\x8b"
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAX_HEADER = 1 << 16


def max_data_bytes() -> int:
    """The cap on decompressed data: ``$DGMKIT_MAX_DATA_BYTES`` if set, else 1 GiB."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return MAX_DECOMPRESSED_BYTES
    try:
        value = int(raw) if len(raw) <= 30 else -1
    except ValueError:
        value = -1
    if value <= 0:
        raise DataError(f"{MAX_BYTES_ENV}={raw[:40]!r} is not a positive whole number of bytes")
    return value


def _show(path: os.PathLike | str) -> str:
    """The path as text on one line (control characters escaped)."""
    s = str(path)
    return s if s.isprintable() else ascii(s)[1:-1]


def _one_line(e: object) -> str:
    s = " ".join(str(e).split())
    return (s if s.isprintable() else ascii(s)[1:-1])[:200] or type(e).__name__


def _alloc(n: int, path: Path) -> bytearray:
    try:
        return bytearray(n)
    except (MemoryError, OverflowError):
        raise DataError(f"{_show(path)}: not enough memory to read {n} bytes") from None


@contextlib.contextmanager
def data_file_errors(path: Path) -> Iterator[None]:
    """What opening or reading ``path`` raises, as one DataError line that names it."""
    try:
        yield
    except NotRegularFile:
        raise DataError(f"{_show(path)}: not a regular file") from None
    except OSError as e:
        raise DataError(describe_os_error(e, _show(path), "read")) from None
    except ValueError:  # a NUL byte in the name
        raise DataError(f"{_show(path)}: not a valid file name") from None


def open_data_file(path: Path) -> io.BufferedReader:
    """``path`` opened for reading, if it is a regular file (never a FIFO or device that could
    block or never end)."""
    with data_file_errors(path):
        return open_regular(path)


def read_regular(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the regular file ``path`` (the caller refuses more than
    ``limit``), as ``_io.read_regular``; every failure a DataError."""
    with data_file_errors(path):
        return _io.read_regular(path, limit)


def _read_all(f: io.BufferedReader, path: Path, most: int | None = None) -> bytearray:
    """The rest of the open file ``f`` (as long as the file really is; writable), or its next
    ``most`` bytes where it holds more."""
    try:
        size = max(0, os.fstat(f.fileno()).st_size - f.tell())
        size = size if most is None else min(size, most)
        buf = _alloc(size, path)
        view = memoryview(buf)
        got = 0
        while got < size:
            k = f.readinto(view[got:])
            if not k:
                break
            got += k
        view.release()
        if got < size:  # the file shrank while it was read
            del buf[got:]
        return buf
    except OSError as e:
        raise DataError(describe_os_error(e, _show(path), "read")) from None


class _BufferSource:
    """The bytes of a plain file, read front to back as writable views (no copies)."""

    def __init__(self, buf: bytearray):
        self._view = memoryview(buf)
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._view) - self._pos

    def read(self, n: int) -> memoryview:
        out = self._view[self._pos : self._pos + n]
        self._pos += len(out)
        return out


class _FileSource:
    """The bytes of an open plain file, read front to back only as they are asked for (writable):
    a header's sizes are held against ``remaining`` before its data are read, so a file larger
    than its header declares is refused unread."""

    def __init__(self, f: io.BufferedReader, path: Path):
        self._f, self._path = f, path
        try:
            self.remaining = max(0, os.fstat(f.fileno()).st_size - f.tell())
        except OSError as e:
            raise DataError(describe_os_error(e, _show(path), "read")) from None

    def read(self, n: int) -> bytearray:
        out = _read_all(self._f, self._path, min(n, self.remaining))
        self.remaining -= len(out)
        return out


class _GzipSource:
    """The decompressed bytes of a gzip file, produced only as they are read and never more
    than ``limit`` in all. Several concatenated members and zero padding at the end are
    accepted, as by gzip(1); a truncated, corrupt or over-long stream raises DataError."""

    remaining = None  # unknown until decompressed

    def __init__(self, buf: bytearray, path: Path, limit: int):
        self._buf = buf
        self._raw = memoryview(buf)
        self._pos = 0  # offset in the compressed bytes of the next byte to feed
        self._tail: bytes | memoryview = b""  # input fed but not yet consumed
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._done = False
        self._path = path
        self.limit = limit
        self.total = 0
        self._pad: int | None = None  # where the trailing zero bytes start, once known

    def read(self, n: int) -> bytearray:
        out = bytearray()
        while len(out) < n and not self._done:
            if self._tail:
                inp = self._tail
            else:
                inp = self._raw[self._pos : self._pos + _FEED]
                self._pos += len(inp)
            try:
                chunk = self._d.decompress(inp, min(n - len(out), _BLOCK))
            except zlib.error as e:
                raise DataError(f"{_show(self._path)}: corrupt gzip data ({_one_line(e)})") from None
            self._tail = self._d.unconsumed_tail
            self.total += len(chunk)
            if self.total > self.limit:
                raise DataError(
                    f"{_show(self._path)}: decompresses to more than {self.limit} bytes, the limit "
                    f"(set {MAX_BYTES_ENV} to raise it)"
                )
            out += chunk
            if self._d.eof:
                self._next_member()
            elif not chunk and not self._tail and not len(inp):
                raise DataError(f"{_show(self._path)}: truncated gzip data (the stream ends early)")
        return out

    def _next_member(self) -> None:
        self._pos -= len(self._d.unused_data)  # back to the first byte after this member
        self._tail = b""
        if self._pos >= self._padding_start():  # the end, or zero padding to the end
            self._done = True
        elif self._raw[self._pos : self._pos + 2] == _GZIP_MAGIC:
            self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        else:
            raise DataError(f"{_show(self._path)}: unexpected bytes after the end of the gzip data")

    def _padding_start(self) -> int:
        """The offset from which the file holds only zero bytes (its length where it ends in
        another byte): found once, scanning back from the end, so many members cost linear time."""
        if self._pad is None:
            end = len(self._raw)
            while end > 0:
                start = max(0, end - _FEED)
                kept = len(bytes(self._raw[start:end]).rstrip(b"\x00"))
                end = start + kept
                if kept:
                    break
            self._pad = end
        return self._pad


def _open_source(path: Path, limit: int | None = None) -> _BufferSource | _GzipSource:
    with open_data_file(path) as f:
        buf = _read_all(f, path)
    if buf[:2] == _GZIP_MAGIC:
        return _GzipSource(buf, path, max_data_bytes() if limit is None else limit)
    return _BufferSource(buf)


def _read_everything(path: Path, limit: int | None = None) -> memoryview | bytearray:
    src = _open_source(path, limit)
    if isinstance(src, _GzipSource):
        return src.read(src.limit + 1)  # raises past the limit
    return src.read(src.remaining)


def open_maybe_gzip(path: Path, limit: int | None = None) -> bytes:
    """The bytes of ``path``, decompressed if it is gzipped (detected by its magic bytes).

    Decompression is streamed and stops with a DataError as soon as the output exceeds
    ``limit`` bytes (default :func:`max_data_bytes`: 1 GiB, or ``$DGMKIT_MAX_DATA_BYTES``);
    a truncated or corrupt gzip stream is a DataError too."""
    return bytes(_read_everything(Path(path), limit))


# ---------------------------------------------------------------------------------------- .amat

_AMAT_NUM, _AMAT_BLANK, _AMAT_NL, _AMAT_BAD = 0, 1, 2, 3
_AMAT_CLASS = np.full(256, _AMAT_BAD, np.uint8)
_AMAT_CLASS[list(b"0123456789+-.eE")] = _AMAT_NUM
_AMAT_CLASS[list(b" \t\r")] = _AMAT_BLANK
_AMAT_CLASS[ord("\n")] = _AMAT_NL


def _amat_token_at(data: memoryview | bytearray, pos: int) -> bytes:
    start, end = pos, pos
    while start > 0 and pos - start < 20 and data[start - 1] not in b" \t\r\n":
        start -= 1
    while end < len(data) and end - pos < 20 and data[end] not in b" \t\r\n":
        end += 1
    return bytes(data[start:end])


def _amat_rows(data: memoryview | bytearray, columns: int, path: Path) -> int:
    """The number of rows of a ``.amat`` text, after checking that it holds only numbers and
    that every non-blank line holds ``columns`` of them. Scans in blocks: the memory it needs
    does not grow with the file."""
    p = _show(path)
    step = 1 << 18
    carry = 0  # values on the unfinished line
    line = 1  # number of the line the block starts in
    rows = 0
    prev_sep = True
    for i in range(0, len(data), step):
        cls = _AMAT_CLASS[np.frombuffer(data, np.uint8, count=min(step, len(data) - i), offset=i)]
        nl = np.flatnonzero(cls == _AMAT_NL)
        bad = np.flatnonzero(cls == _AMAT_BAD)
        if bad.size:
            b = int(bad[0])
            where = line + int(np.searchsorted(nl, b))
            tok = _amat_token_at(data, i + b)
            if tok.lower().lstrip(b"+-") in (b"nan", b"inf", b"infinity"):
                raise DataError(f"{p}: values must be finite numbers, found {tok.decode()!r} on line {where}")
            raise DataError(f"{p}: not a .amat file: {tok!r} on line {where} is not a number")
        sep = cls != _AMAT_NUM
        start = ~sep
        start[0] &= prev_sep
        start[1:] &= sep[:-1]
        prev_sep = bool(sep[-1])
        counts = np.cumsum(start, dtype=np.int64)
        if nl.size:
            ends = counts[nl]
            per_line = np.diff(ends, prepend=0)
            per_line[0] += carry
            wrong = np.flatnonzero((per_line != 0) & (per_line != columns))
            if wrong.size:
                k = int(wrong[0])
                raise DataError(f"{p}: line {line + k} holds {per_line[k]} values, expected {columns} columns")
            rows += int(np.count_nonzero(per_line))
            carry = int(counts[-1] - ends[-1])
            line += int(nl.size)
        else:
            carry += int(counts[-1])
        if carry > columns:
            raise DataError(f"{p}: line {line} holds more than {columns} values, expected {columns} columns")
    if carry not in (0, columns):
        raise DataError(f"{p}: line {line} holds {carry} values, expected {columns} columns")
    return rows + (carry == columns)


def read_amat(path: Path, columns: int = 784) -> np.ndarray:
    """Read a ``.amat`` text file (plain or gzipped): one example per line, ``columns``
    space-separated finite numbers.

    The binarized MNIST files hold single-digit values separated by single spaces, which are
    read directly from the bytes; anything else goes through a general parser that checks
    every line. Returns uint8 if every value is an integer in 0..255, else float32.
    """
    path = Path(path)
    data = _read_everything(path)
    width = 2 * columns  # "v v v ... v\n"
    if len(data) % width == 0 and len(data) > 0:
        grid = np.frombuffer(data, dtype=np.uint8).reshape(-1, width)
        seps = grid[:, 1::2]
        if (seps[:, :-1] == ord(" ")).all() and (seps[:, -1] == ord("\n")).all():
            digits = grid[:, 0::2] - ord("0")
            if (digits <= 9).all():
                return np.ascontiguousarray(digits)
    rows = _amat_rows(data, columns, path)
    if rows == 0:
        raise DataError(f"{_show(path)}: not a .amat file: it holds no rows of {columns} columns")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            values = np.fromstring(bytes(data), dtype=np.float32, sep=" ")
    except (ValueError, DeprecationWarning):
        values = None
    if values is None or values.size != rows * columns:
        raise DataError(f"{_show(path)}: not a .amat file: some values are not well-formed numbers")
    if not np.isfinite(values).all():
        raise DataError(f"{_show(path)}: values must be finite numbers (one is too large for float32)")
    values = values.reshape(rows, columns)
    if values.min() >= 0 and values.max() <= 255 and np.all(values == np.round(values)):
        return values.astype(np.uint8)
    return values


# ------------------------------------------------------------------------------------------ IDX


def _native(arr: np.ndarray) -> np.ndarray:
    """``arr`` in the machine's byte order (swapped in place: its buffer is writable)."""
    if arr.dtype.isnative:
        return arr
    arr.byteswap(inplace=True)
    return arr.view(arr.dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), plain or gzipped: magic (0, 0, dtype, ndim),
    big-endian dims, data. The size the dims declare must be exactly the size of the data;
    a gzipped file is decompressed only up to that size."""
    path = Path(path)
    with open_data_file(path) as f:
        with data_file_errors(path):
            gzipped = f.read(2) == _GZIP_MAGIC
            f.seek(0)
        if not gzipped:  # (read as far as the header declares, once the file's size is checked against it)
            return _idx_of(_FileSource(f, path), path)
    return _idx_of(_open_source(path), path)


def _idx_of(src: _FileSource | _BufferSource | _GzipSource, path: Path) -> np.ndarray:
    """The array of the IDX file ``path`` whose bytes ``src`` gives (``read_idx``)."""
    p = _show(path)
    head = bytes(src.read(4))
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
        raise DataError(f"{p}: not an IDX file (bad magic number)")
    ndim = head[3]
    if ndim == 0 or ndim > _MAX_NDIM:
        raise DataError(f"{p}: IDX header declares {ndim} dimensions (1 to {_MAX_NDIM} can be read)")
    raw_dims = bytes(src.read(4 * ndim))
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{p}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    if 0 in dims:
        raise DataError(f"{p}: IDX header declares the shape {dims}, which holds no data")
    dtype = np.dtype(_IDX_DTYPES[head[2]])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    if src.remaining is not None and src.remaining != expected:
        raise DataError(f"{p}: IDX header says {dims} ({expected} bytes) but {src.remaining} bytes follow")
    if isinstance(src, _GzipSource) and expected > src.limit:
        raise DataError(
            f"{p}: IDX header says {dims} ({expected} bytes), more than the limit of {src.limit} bytes "
            f"(set {MAX_BYTES_ENV} to raise it)"
        )
    payload = src.read(expected + 1)  # a gzip stream is decompressed no further than this
    if len(payload) != expected:
        found = f"more than {expected}" if len(payload) > expected else str(len(payload))
        raise DataError(f"{p}: IDX header says {dims} ({expected} bytes) but {found} bytes follow")
    return _native(np.frombuffer(payload, dtype=dtype).reshape(dims))


# ---------------------------------------------------------------------------------- .npy / .npz

_NPY_TOKEN = re.compile(
    r"""\s*(?:(?P<punct>[{}()\[\]:,])|(?P<str>'[^'\\\n]*'|"[^"\\\n]*")|(?P<int>-?[0-9]+)L?|(?P<name>True|False|None)|(?P<bad>\S))""",
    re.ASCII,
)
_NPY_KINDS = {
    "c": "complex numbers",
    "M": "datetimes",
    "m": "timedeltas",
    "O": "Python objects",
    "S": "byte strings",
    "a": "byte strings",
    "U": "strings",
    "V": "raw or structured records",
}
_NPY_PLAIN = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"}


class _HeaderParser:
    """A recursive-descent parser of a .npy header's tokens: a Python dict literal of strings,
    booleans and tuples of integers (what NumPy writes). ``fail`` refuses anything else."""

    def __init__(self, text: str, fail: "_Fail"):
        self.fail = fail
        self.tokens: list[tuple[str, str]] = []
        for m in _NPY_TOKEN.finditer(text):
            kind = m.lastgroup
            assert kind is not None  # every alternative of _NPY_TOKEN is a named group
            if kind == "bad":
                fail(f"malformed header (unexpected {m['bad']!r})")
            self.tokens.append((kind, m[kind]))
        self.pos = 0

    def take(self) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            self.fail("malformed header (it ends early)")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def value(self) -> object:
        kind, tok = self.take()
        if kind == "str":
            return tok[1:-1]
        if kind == "name":
            return {"True": True, "False": False, "None": None}[tok]
        if tok == "[":
            self.fail("structured dtypes (records with fields) cannot be read; save a plain numeric array")
        if tok != "(":
            self.fail(f"malformed header (unexpected {shown_value(tok)})")
        return self.shape()

    def shape(self) -> tuple[int, ...]:
        """The rest of a tuple of integers, after its "("."""
        items: list[int] = []
        while True:
            kind, tok = self.take()
            if tok == ")":
                return tuple(items)
            if kind != "int":
                self.fail(f"malformed header (shape holds {shown_value(tok)})")
            if len(tok.lstrip("-")) > 30:
                self.fail("the shape declares a dimension of more than 30 digits")
            items.append(int(tok))
            kind, tok = self.take()
            if tok == ")":
                return tuple(items)
            if tok != ",":
                self.fail(f"malformed header (unexpected {shown_value(tok)} in the shape)")

    def header(self) -> dict:
        """The header's dict literal, from its "{" to its "}"."""
        out: dict = {}
        if self.take()[1] != "{":
            self.fail("malformed header (not a dict)")
        while True:
            kind, tok = self.take()
            if tok == "}":
                return out
            if kind != "str":
                self.fail(f"malformed header (unexpected {shown_value(tok)})")
            if self.take()[1] != ":":
                self.fail("malformed header (a key without ':')")
            key = tok[1:-1]
            if key in out:
                self.fail(f"malformed header (the key {shown_value(key)} appears twice)")
            out[key] = self.value()
            kind, tok = self.take()
            if tok == "}":
                return out
            if tok != ",":
                self.fail(f"malformed header (unexpected {shown_value(tok)})")


def _npy_header_dict(text: str, fail: "_Fail") -> dict:
    """Parse the header of a .npy file: a Python dict literal of strings, booleans and tuples
    of integers (what NumPy writes), without ``eval``: any other text is refused."""
    parser = _HeaderParser(text, fail)
    out = parser.header()
    if parser.pos != len(parser.tokens):
        fail("malformed header (text after the dict)")
    return out


class _Fail:
    """Raise DataError for the file (and, in a .npz file, the member) being read."""

    def __init__(self, path: Path, member: str | None = None):
        self.where = _show(path) + (f" (array {shown_value(member)})" if member is not None else "")

    def __call__(self, problem: str) -> NoReturn:
        raise DataError(f"cannot read {self.where} as a NumPy array: {problem}")


def _npy_dtype(descr: object, fail: _Fail) -> np.dtype:
    if not isinstance(descr, str):
        fail(f"malformed header (descr {shown_value(descr)} is not a string)")
    order, body = (descr[0], descr[1:]) if descr[:1] in ("<", ">", "|", "=") else ("", descr)
    if body not in _NPY_PLAIN:
        what = _NPY_KINDS.get(body[:1], "not a plain numeric type")
        fail(f"dtype {shown_value(descr)} ({what}) is not supported; only bool, integers and real floats can be read")
    return np.dtype(order + body)  # every one of _NPY_PLAIN in every byte order is a NumPy dtype


def _npy_header(
    read: Callable[[int], bytes | bytearray | memoryview], fail: _Fail
) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """Read and check the header of a .npy stream: dtype, shape, Fortran order, header bytes."""
    magic = bytes(read(8))
    if len(magic) < 8 or magic[:6] != _NPY_MAGIC:
        fail("not a .npy file (bad magic bytes)")
    major, minor = magic[6], magic[7]
    if major not in (1, 2, 3) or minor != 0:
        fail(f"unknown .npy format version {major}.{minor}")
    size_bytes = 2 if major == 1 else 4
    raw_len = bytes(read(size_bytes))
    if len(raw_len) < size_bytes:
        fail("truncated header")
    hlen = int.from_bytes(raw_len, "little")
    if hlen > _NPY_MAX_HEADER:
        fail(f"the header claims {hlen} bytes (at most {_NPY_MAX_HEADER} are read)")
    raw = bytes(read(hlen))
    if len(raw) < hlen:
        fail("truncated header")
    try:
        text = raw.decode("utf-8" if major == 3 else "latin1")
    except UnicodeDecodeError:
        fail("the header is not valid UTF-8")
    d = _npy_header_dict(text, fail)
    if set(d) != {"descr", "fortran_order", "shape"}:
        fail(f"malformed header (keys {shown_value(sorted(d))}, expected descr, fortran_order and shape)")
    dtype = _npy_dtype(d["descr"], fail)
    fortran, shape = d["fortran_order"], d["shape"]
    if not isinstance(fortran, bool):
        fail(f"malformed header (fortran_order is {shown_value(fortran)}, not True or False)")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        fail(f"malformed header (shape {shown_value(shape)} is not a tuple of non-negative integers)")
    if len(shape) > _MAX_NDIM:
        fail(f"the shape has {len(shape)} dimensions (at most {_MAX_NDIM} can be read)")
    if 0 in shape:
        fail(f"the array holds no data (shape {shape})")
    return dtype, shape, fortran, len(magic) + size_bytes + hlen


def _npy_array(payload: memoryview | bytearray, dtype: np.dtype, shape: tuple, fortran: bool, fail: _Fail) -> np.ndarray:
    arr = np.frombuffer(payload, dtype=dtype)
    if dtype.kind == "b" and arr.view(np.uint8).max() > 1:
        fail("a bool value is neither 0 nor 1")
    arr = _native(arr)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def _declared_bytes(dtype: np.dtype, shape: tuple) -> int:
    return math.prod(shape) * dtype.itemsize  # Python ints: no overflow


def _read_npy(path: Path, key: str | None) -> np.ndarray:
    fail = _Fail(path)
    if key is not None:
        raise DataError(
            f"{_show(path)} is a .npy file holding one array; --data-key {shown_value(key)} applies only to .npz files"
        )
    with open_data_file(path) as f:
        src = _FileSource(f, path)  # (the data read once the header's size is checked against the file's)
        dtype, shape, fortran, _ = _npy_header(src.read, fail)
        need = _declared_bytes(dtype, shape)
        if need != src.remaining:
            fail(f"the header declares shape {shape} of {dtype} ({need} bytes) but {src.remaining} bytes follow")
        payload = src.read(need)
    if len(payload) != need:  # (the file shrank while it was read)
        fail(f"the header declares shape {shape} of {dtype} ({need} bytes) but {len(payload)} bytes follow")
    return _npy_array(payload, dtype, shape, fortran, fail)


_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    OSError,
    EOFError,
    ValueError,
    struct.error,
    OverflowError,
    NotImplementedError,
    RuntimeError,
    KeyError,
    IndexError,
)


def _npz_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, name: str) -> np.ndarray:
    """One member of an open .npz file, read as a stream: its header first, then exactly the
    bytes it declares (no more than the member's declared size, itself capped)."""
    fail = _Fail(path, name)
    limit = max_data_bytes()
    if info.flag_bits & 0x1:
        fail("the member is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        fail(f"compression method {info.compress_type} is not supported (only stored or deflated)")
    if info.file_size > limit:
        fail(f"the member declares {info.file_size} bytes, more than the limit of {limit} (set {MAX_BYTES_ENV} to raise it)")
    try:
        with z.open(info) as f:

            def read(n: int) -> bytes:
                return f.read(n)

            dtype, shape, fortran, header = _npy_header(read, fail)
            need = _declared_bytes(dtype, shape)
            if header + need != info.file_size:
                fail(
                    f"the header declares shape {shape} of {dtype} ({need} bytes) "
                    f"but the member holds {info.file_size - header} bytes"
                )
            buf = bytearray()
            while len(buf) < need:
                block = f.read(min(_BLOCK, need - len(buf)))
                if not block:
                    fail(f"truncated member ({len(buf)} of {need} bytes)")
                buf += block
            if f.read(1):  # also makes zipfile check the CRC
                fail("the member holds more bytes than its header declares")
    except _ZIP_ERRORS as e:
        if isinstance(e, DataError):
            raise
        fail(f"corrupt .npz file ({type(e).__name__}: {_one_line(e)})")
    return _npy_array(buf, dtype, shape, fortran, fail)


def _show_names(names: list[str]) -> str:
    shown = ", ".join(repr(n[:40]) for n in names[:20])
    return shown + (f" and {len(names) - 20} more" if len(names) > 20 else "")


def _read_npz(path: Path, key: str | None, labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    p = _show(path)
    try:
        with open_data_file(path) as fobj, zipfile.ZipFile(fobj) as z:
            members: dict[str, zipfile.ZipInfo] = {}
            for info in z.infolist():
                name = info.filename.removesuffix(".npy")
                if name in members:  # NumPy would take the last of them; which one is meant is unclear
                    raise DataError(f"{p} holds the array {shown_value(name)} twice; which one is meant is unclear")
                members[name] = info
            names = list(members)
            if not names:
                raise DataError(f"{p}: the .npz file holds no arrays")
            if key is None:
                if "x" in members:
                    key = "x"
                elif len(names) == 1:
                    key = names[0]
                else:
                    raise DataError(
                        f"{p} holds several arrays ({_show_names(names)}) and none is named 'x'; choose one with --data-key "
                        "(dgm train), or name the data x (numpy.savez(FILE, x=...)) for the commands that take no such flag"
                    )
            elif key not in members:
                raise DataError(
                    f"{p} has no array named {shown_value(key)}; it holds {_show_names(names)} (choose with --data-key)"
                )
            x = _npz_member(z, members[key], path, key)
            y = _npz_member(z, members["y"], path, "y") if labels and key != "y" and "y" in members else None
            return x, y
    except _ZIP_ERRORS as e:
        if isinstance(e, DataError):
            raise
        raise DataError(
            f"cannot read {p} as a NumPy array: corrupt .npz file ({type(e).__name__}: {_one_line(e)})"
        ) from None


def _read(path: Path, key: str | None, labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    path = Path(path)
    with open_data_file(path) as f:
        try:
            magic = f.read(6)
        except OSError as e:
            raise DataError(describe_os_error(e, _show(path), "read")) from None
    if magic.startswith(_ZIP_MAGICS):
        return _read_npz(path, key, labels)
    if magic == _NPY_MAGIC:
        return _read_npy(path, key), None
    raise DataError(f"cannot read {_show(path)} as a NumPy array: not a .npy or .npz file (bad magic bytes)")


def read_arrays(path: Path, key: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The data array of a ``.npy`` or ``.npz`` file and, for a ``.npz`` file, its labels:
    the array ``y`` if it holds one (else None).

    The data array of a ``.npz`` file is ``key`` if given (``--data-key``), else the array
    ``x``, else its only array. A ``.npy`` file holds one array and takes no ``key``. The
    format is told by the file's first bytes, not its name."""
    return _read(path, key, labels=True)


def read_array(path: Path, key: str | None = None) -> np.ndarray:
    """Read a ``.npy`` file, or one array of a ``.npz`` file (``key``, or its 'x', or its only array)."""
    return _read(path, key, labels=False)[0]
