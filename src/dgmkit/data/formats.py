"""Readers for the canonical file formats: ``.amat`` text, IDX, and NumPy arrays."""

import gzip
import struct
from pathlib import Path

import numpy as np

from dgmkit.errors import DataError

__all__ = ["read_amat", "read_idx", "read_array", "open_maybe_gzip"]

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def open_maybe_gzip(path: Path) -> bytes:
    """The bytes of ``path``, decompressed if it is gzipped (detected by its magic bytes)."""
    try:
        raw = Path(path).read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def read_amat(path: Path, columns: int = 784) -> np.ndarray:
    """Read a ``.amat`` text file: one example per line, ``columns`` space-separated values.

    The binarized MNIST files hold single-digit values separated by single spaces, which are
    read directly from the bytes; anything else falls back to a general text parser.
    Returns uint8 if every value is an integer in 0..255, else float32.
    """
    data = open_maybe_gzip(path)
    width = 2 * columns  # "v v v ... v\n"
    if len(data) % width == 0 and len(data) > 0:
        grid = np.frombuffer(data, dtype=np.uint8).reshape(-1, width)
        seps = grid[:, 1::2]
        if (seps[:, :-1] == ord(" ")).all() and (seps[:, -1] == ord("\n")).all():
            digits = grid[:, 0::2] - ord("0")
            if (digits <= 9).all():
                return np.ascontiguousarray(digits)
    try:
        values = np.array(data.split(), dtype=np.float32)
    except ValueError:
        raise DataError(f"{path}: not a .amat file (expected rows of {columns} numbers)") from None
    if values.size == 0 or values.size % columns:
        raise DataError(f"{path}: {values.size} values do not form rows of {columns} columns")
    values = values.reshape(-1, columns)
    if np.all(values == np.round(values)) and values.min() >= 0 and values.max() <= 255:
        return values.astype(np.uint8)
    return values


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format): magic (0, 0, dtype, ndim), big-endian dims, data."""
    data = open_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{path}: IDX header says {dims} ({expected} bytes) but {len(data) - header} bytes follow")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_array(path: Path, key: str | None = None) -> np.ndarray:
    """Read a ``.npy`` file, or one array of a ``.npz`` file (``key``, or its only/first 'x')."""
    path = Path(path)
    try:
        obj = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read {path} as a NumPy array: {e}") from None
    if isinstance(obj, np.ndarray):
        return obj
    with obj:
        names = list(obj.keys())
        if key is None:
            key = "x" if "x" in names else (names[0] if len(names) == 1 else None)
        if key not in names:
            raise DataError(f"{path}: choose an array with --data-key; it holds {names}")
        return obj[key]
