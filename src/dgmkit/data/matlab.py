"""MATLAB ``.mat`` files (formats v4 and v5, read with SciPy), as hostile input.

A ``.mat`` file holds named variables. The data array is the variable ``key`` (``--data-key``),
else ``x`` or ``X``, else the only numeric variable; a variable ``y`` (or ``Y``), a vector,
gives the labels (one whole number per row of the data, checked as every file's labels). Before
SciPy reads anything, dgmkit walks the file's structure itself: the file must be a regular file
within the data cap of :func:`dgmkit.data.formats.max_data_bytes`; in a v5 file every element
(and every part of a variable, to any depth) must declare no more bytes than it holds and be
of a known data type, laid out as SciPy will read it (``_check_matrix``: flags and dimensions
as full elements, a known class, the data parts its flags promise, variables only inside cells,
structs and objects, no dimension negative, a bounded number of struct fields), and the
compressed elements are inflated as streams that stop when all of them together reach the cap,
so no header can make a reader allocate more than the cap (nor crash SciPy's reader, which
trusts what it reads); in a v4 file every matrix must have a well-formed header whose digit M
declares the byte order of the file's headers (SciPy reads every matrix in that order, whatever
its M) and be followed by the bytes its size declares; variable names must be unique. Then
each chosen variable's declared size (shape times the bytes of its class, from
``scipy.io.whosmat``) is held against the cap. Only real numeric arrays are read (no cells,
structs, strings, sparse or complex matrices). MATLAB 7.3 files are HDF5 containers, which this
reader refuses with advice.

Rows are datapoints, as in NumPy files. Some MATLAB files store one datapoint per column (Roweis'
``frey_rawface.mat`` is 560 x 1965); that one is recognised by its content as the named dataset
``frey-faces``; a 2-D variable of fewer rows than columns (the Frey faces saved as doubles or
scaled, say) is refused by ``load_dataset`` with both readings named, unless --image-shape says
that its rows are the datapoints.
"""

import io
import math
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, NoReturn

import numpy as np

from dgmkit._io import describe_os_error
from dgmkit.data.formats import MAX_BYTES_ENV, max_data_bytes, read_regular
from dgmkit.errors import DataError

__all__ = ["read_mat", "MAT_MAGIC_73"]

MAT_MAGIC_73 = b"MATLAB 7.3 MAT-file"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"  # a file of HDF5 alone (a v7.3 file has it at byte 512)
# whosmat's class names -> bytes per element
_NUMERIC = {
    "double": 8,
    "single": 4,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "int64": 8,
    "uint64": 8,
    "logical": 1,
}


_MI_MATRIX, _MI_COMPRESSED = 14, 15


def _show(path: Path | str) -> str:
    return repr(str(path)) if any(not c.isprintable() for c in str(path)) else str(path)


def _name(name: str) -> str:
    return repr(name[:60])


class _Part(NamedTuple):
    kind: int
    body: memoryview
    small: bool  # written as a small element (type, size and up to 4 bytes in one 8-byte tag)


def _elements(data: memoryview, order: str, where: str, fail: Callable[[str], NoReturn]) -> list[_Part]:
    """The elements of a v5 byte stream, each checked to hold what it declares; the bodies are
    views of ``data``, not copies (nested variables would copy it once a level)."""
    out, pos = [], 0
    while pos < len(data):
        if len(data) - pos < 8:
            fail(f"{where} ends inside an element tag")
        kind, nbytes = struct.unpack_from(order + "II", data, pos)
        if kind >> 16:  # a small element: type and size packed in 4 bytes, data in the next 4
            if kind >> 16 > 4:
                fail(f"{where} has a small element that declares {kind >> 16} bytes in a field of 4")
            out.append(_Part(kind & 0xFFFF, data[pos + 4 : pos + 4 + (kind >> 16)], True))
            pos += 8
            continue
        if nbytes > len(data) - pos - 8:
            fail(f"{where} has an element that declares {nbytes} bytes but holds {len(data) - pos - 8}")
        if kind == _MI_MATRIX and nbytes % 8:  # SciPy goes on at its end, the padding rule elsewhere
            fail(f"{where} has a variable of {nbytes} bytes, not a whole number of 8-byte blocks")
        out.append(_Part(kind, data[pos + 8 : pos + 8 + nbytes], False))
        pos += 8 + nbytes
        if kind != _MI_COMPRESSED:
            pos += -nbytes % 8  # uncompressed elements are padded to 8 bytes
    return out


def _inflate(body: memoryview, limit: int, fail: Callable[[str], NoReturn]) -> bytearray:
    """The inflated bytes of a compressed element, grown in steps (zlib would reserve the whole
    ``limit`` at once if asked for it in one call), never more than ``limit``."""
    d = zlib.decompressobj()
    out = bytearray()
    data: bytes | memoryview = body
    try:
        while not d.eof:
            chunk = d.decompress(data, min(_STEP, limit + 1 - len(out)))
            out += chunk
            if len(out) > limit:
                fail(f"its compressed variables expand beyond the limit of {limit} bytes (set {MAX_BYTES_ENV} to raise it)")
            data = d.unconsumed_tail
            if not chunk and not data:
                break  # the input ended before the stream did: SciPy says so when it reads it
    except zlib.error as e:
        fail(f"a compressed variable is corrupt ({e})")
    return out


_STEP = 1 << 24


# the v5 data types (miINT8 ... miUTF32); SciPy indexes a table with the code unchecked, so any
# other code must never reach it
_MI_TYPES = frozenset((1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 14, 15, 16, 17, 18))
_MI_INT32, _MI_UINT32 = 5, 6
# the classes whose data parts may be variables (cell, struct, object, function handle, opaque
# object); in any other a variable as the data crashes SciPy's reader
_CONTAINERS = frozenset((1, 2, 3, 16, 17))
_MX_STRUCT, _MX_OBJECT, _MX_SPARSE, _MX_LAST_NUMERIC = 2, 3, 5, 15
_MX_COMPLEX_FLAG, _MX_LOGICAL_FLAG = 0x0800, 0x0200
_MAX_FIELDS = 20_000  # field names in all of a file's structs
_MX_OPAQUE = 17  # a MATLAB object of a newer kind (string, table, function handle...): no dimensions part
_MAX_NESTING = 32


def _check_matrix(body: memoryview, order: str, fail: Callable[[str], NoReturn], fields: list[int], depth: int = 0) -> None:
    """A variable's parts: array flags (a known class; the logical flag only on numbers),
    dimensions (none negative; an opaque object has none), both as full elements, then its name
    and data, each of a known type and holding what it declares, variables as parts only of a
    cell, struct or object, whose variables are checked likewise; ``fields`` counts the field
    names of the file's structs (SciPy checks each against all before it, in quadratic time)."""
    if depth > _MAX_NESTING:
        fail(f"variables nest more than {_MAX_NESTING} deep")
    parts = _elements(body, order, "a variable", fail)
    if not parts:
        return  # an empty matrix (an empty cell's entry)
    for part in parts:
        if part.kind not in _MI_TYPES or part.kind == _MI_COMPRESSED:
            fail(f"a variable has a part of unknown data type {part.kind}")
    # SciPy reads the flags and the dimensions as full elements whatever their tags say
    if parts[0].kind not in (_MI_INT32, _MI_UINT32) or len(parts[0].body) < 4 or parts[0].small:
        fail("a variable does not start with its array flags")
    flags = struct.unpack_from(order + "I", parts[0].body)[0]
    mclass = flags & 0xFF
    if not 1 <= mclass <= _MX_OPAQUE:
        fail(f"a variable is of unknown class {mclass}")
    if flags & _MX_LOGICAL_FLAG and not _MX_SPARSE <= mclass <= _MX_LAST_NUMERIC:
        fail(f"a variable of class {mclass} is flagged logical, which only numbers can be")
    if mclass != _MX_OPAQUE:
        if len(parts) < 3 or parts[1].kind not in (_MI_INT32, _MI_UINT32) or parts[1].small:
            fail("a variable does not start with its array flags, dimensions and name")
        dims = parts[1].body
        if len(dims) % 4 or any(d < 0 for d in struct.unpack(f"{order}{len(dims) // 4}i", dims)):
            fail("a variable declares negative or malformed dimensions")
    if mclass not in _CONTAINERS:  # SciPy reads the parts the flags promise, there or not
        wanted = (3 if mclass == _MX_SPARSE else 1) + bool(flags & _MX_COMPLEX_FLAG)
        if len(parts) - 3 != wanted:
            fail(f"a variable of class {mclass} has {len(parts) - 3} data parts where its flags promise {wanted}")
    if mclass in (_MX_STRUCT, _MX_OBJECT) and len(parts) >= (5 if mclass == _MX_STRUCT else 6):
        length, names = parts[3:5] if mclass == _MX_STRUCT else parts[4:6]
        size = struct.unpack_from(order + "i", length.body)[0] if len(length.body) >= 4 else 0
        fields[0] += len(names.body) // size if size > 0 else 0
        if fields[0] > _MAX_FIELDS:
            fail(f"its structs name more than {_MAX_FIELDS} fields")
    for part in parts[1 if mclass == _MX_OPAQUE else 2 :]:
        if part.kind == _MI_MATRIX:
            if mclass not in _CONTAINERS:
                fail(f"a variable of class {mclass} (numbers, characters or sparse) holds a variable as a part")
            _check_matrix(part.body, order, fail, fields, depth + 1)


def _check_v5(raw: bytes, limit: int, path: Path) -> None:
    """Walk a v5 file: top-level elements, compressed ones inflated (all of them together
    bounded by the cap), and every variable (``_check_matrix``), before SciPy sees a byte."""

    def fail(why: str) -> NoReturn:
        raise DataError(f"cannot read {_show(path)} as a MATLAB .mat file: {why}")

    order = "<" if raw[126:128] == b"IM" else ">"
    budget, fields = limit, [0]
    for top in _elements(memoryview(raw)[128:], order, "the file", fail):
        if top.kind == _MI_COMPRESSED:
            inflated = _inflate(top.body, budget, fail)
            budget -= len(inflated)
            inner = _elements(memoryview(inflated), order, "a compressed variable", fail)
        else:
            inner = [top]
        for part in inner:
            if part.kind != _MI_MATRIX or part.small:
                fail(f"an element of type {part.kind} stands where a variable belongs")
            _check_matrix(part.body, order, fail, fields)


def _variables(path: Path, raw: bytes) -> list[tuple[str, tuple[int, ...], str]]:
    from scipy.io import whosmat

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            names = [(str(n), tuple(int(s) for s in shape), str(cls)) for n, shape, cls in whosmat(io.BytesIO(raw))]
    except (OSError, PermissionError) as e:
        raise DataError(describe_os_error(e, _show(path), "read")) from None
    except MemoryError:
        raise DataError(f"{_show(path)}: not a readable .mat file (its headers ask for more memory than there is)") from None
    except Exception as e:  # noqa: BLE001 - SciPy's parser raises many kinds on bad bytes
        raise DataError(f"cannot read {_show(path)} as a MATLAB .mat file ({type(e).__name__}: {_line(e)})") from None
    seen = [n for n, _, _ in names]
    twice = sorted({n for n in seen if seen.count(n) > 1})
    if twice:
        raise DataError(f"{_show(path)} holds the variable {_name(twice[0])} twice; which one is meant is unclear")
    return names


def _line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__


def _choose(path: Path, names: list[tuple[str, tuple[int, ...], str]], key: str | None) -> tuple[str, tuple, str]:
    by_name = {n: (n, s, c) for n, s, c in names}
    shown = ", ".join(f"{_name(n)} {'x'.join(map(str, s))} {c}" for n, s, c in names[:20])
    shown += f" and {len(names) - 20} more" if len(names) > 20 else ""
    if not names:
        raise DataError(f"{_show(path)} holds no variables: there is no data in it")
    if key is not None:
        if key not in by_name:
            raise DataError(f"{_show(path)} has no variable named {_name(key)}; it holds {shown} (choose with --data-key)")
        return by_name[key]
    for guess in ("x", "X"):
        if guess in by_name:
            return by_name[guess]
    numeric = [v for v in names if v[2] in _NUMERIC and v[0] not in ("y", "Y")]
    if len(numeric) == 1:
        return numeric[0]
    raise DataError(f"{_show(path)} holds {shown}; name the data's variable with --data-key")


def _load(path: Path, raw: bytes, name: str, shape: tuple[int, ...], cls: str, limit: int, v5: bool) -> np.ndarray:
    if cls not in _NUMERIC:
        raise DataError(f"{_show(path)}: the variable {_name(name)} is a MATLAB {cls}, not a numeric array")
    declared = math.prod(shape) * _NUMERIC[cls]
    if v5 and declared > limit:  # (a v4 file is uncompressed: its size bounds it, and whosmat calls all its arrays double)
        raise DataError(
            f"{_show(path)}: the variable {name!r} declares {declared} bytes, more than the limit of {limit} "
            f"(set {MAX_BYTES_ENV} to raise it)"
        )
    from scipy.io import loadmat

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = loadmat(io.BytesIO(raw), variable_names=[name], squeeze_me=False)[name]
    except MemoryError:
        raise DataError(f"{_show(path)}: not enough memory to read the variable {_name(name)}") from None
    except Exception as e:  # noqa: BLE001 - SciPy's parser raises many kinds on bad bytes
        why = f"{type(e).__name__}: {_line(e)}"
        raise DataError(f"cannot read the variable {_name(name)} of {_show(path)} ({why})") from None
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
        raise DataError(f"{_show(path)}: the variable {_name(name)} is not a real numeric array")
    if value.nbytes > limit:
        raise DataError(f"{_show(path)}: the variable {_name(name)} holds more than the limit of {limit} bytes")
    if value.dtype == np.bool_:
        value = value.astype(np.uint8)
    return np.ascontiguousarray(value)


_V4_BYTES = (8, 4, 4, 2, 2, 1)  # bytes per value of each precision P: double, single, int32, int16, uint16, uint8
_V4_FORMATS = ("IEEE little-endian", "IEEE big-endian", "VAX D-float", "VAX G-float", "Cray")  # of each digit M


def _v4_fields(raw: bytes, pos: int, order: str) -> tuple[int, int, int, int, int] | None:
    """The five int32 of a v4 matrix header at ``pos`` read in byte order ``order`` (type code
    MOPT, rows, columns, imaginary flag, name length), if they are one: M in 0..4, O = 0, P in
    0..5 and T in 0..2, an imaginary flag 0 or 1, non-negative sizes and a name of 1..64 bytes
    ending in NUL within the file; else None."""
    if len(raw) - pos < 20:
        return None
    mopt, rows, cols, imag, namelen = struct.unpack_from(order + "5i", raw, pos)
    o, p, t = (mopt // 100) % 10, (mopt // 10) % 10, mopt % 10  # M (the byte order) is mopt // 1000 < 5
    if not (0 <= mopt < 5000 and o == 0 and p <= 5 and t <= 2 and imag in (0, 1) and rows >= 0 and cols >= 0):
        return None
    if not (1 <= namelen <= 64 and len(raw) >= pos + 20 + namelen and raw[pos + 20 + namelen - 1] == 0):
        return None
    return mopt, rows, cols, imag, namelen


def _v4_header(raw: bytes) -> str | None:
    """The byte order ("<" or ">") in which ``raw`` starts as a MATLAB v4 file (``_v4_fields``),
    or None if it does not."""
    return next((order for order in "<>" if _v4_fields(raw, 0, order) is not None), None)


def _check_v4(raw: bytes, order: str, path: Path) -> None:
    """Walk a v4 file's matrices before SciPy reads one: each header well formed, in the file's
    byte order ``order`` and saying so by its digit M (SciPy reads every matrix in the byte order
    of the first header, whatever its own M says: big-endian or VAX numbers were read as
    little-endian ones, silently wrong), and its values within the bytes that follow it."""

    def fail(why: str) -> NoReturn:
        raise DataError(f"cannot read {_show(path)} as a MATLAB .mat file: {why}")

    own = "<>".index(order)
    pos = 0
    while pos < len(raw):
        fields = _v4_fields(raw, pos, order)
        if fields is None:
            fail(f"the bytes at offset {pos} are no matrix header (a v4 file holds matrices one after another)")
        mopt, rows, cols, imag, namelen = fields
        name = _name(raw[pos + 20 : pos + 19 + namelen].decode("latin1"))
        if mopt // 1000 != own:
            fail(f"the matrix {name} declares {_V4_FORMATS[mopt // 1000]} numbers in a file of {_V4_FORMATS[own]} headers")
        size = rows * cols * _V4_BYTES[(mopt // 10) % 10] * (2 if imag and mopt % 10 != 2 else 1)  # (sparse: no double)
        pos += 20 + namelen
        if size > len(raw) - pos:
            held = len(raw) - pos
            fail(f"the matrix {name} declares {rows} x {cols} values ({size} bytes) but {held} bytes follow its header")
        pos += size


def read_mat(path: Path, key: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The data array of a MATLAB ``.mat`` file and its labels (or None): see the module docstring."""
    path = Path(path)
    limit = max_data_bytes()
    raw = read_regular(path, limit)
    if len(raw) > limit:
        raise DataError(f"{_show(path)} is more than the limit of {limit} bytes (set {MAX_BYTES_ENV} to raise it)")
    v5 = len(raw) >= 128 and raw[126:128] in (b"IM", b"MI")
    major = raw[125 if raw[126:127] == b"I" else 124] if v5 else None  # the header's version, 1 (v5) or 2 (v7.3)
    if raw.startswith((MAT_MAGIC_73, _HDF5_MAGIC)) or major == 2:  # (another tool's header text, or none)
        raise DataError(
            f"{_show(path)} is a MATLAB 7.3 file (an HDF5 container), which dgmkit does not read; "
            "save it with MATLAB's save(..., '-v7') or convert it to .npz"
        )
    v4_order = None if v5 else _v4_header(raw)
    if v5:
        _check_v5(raw, limit, path)
    elif v4_order is None:
        raise DataError(
            f"cannot read {_show(path)} as a MATLAB .mat file: it starts with neither a v5 header nor a v4 matrix "
            "header (is it a .mat file?)"
        )
    else:
        _check_v4(raw, v4_order, path)
    names = _variables(path, raw)  # SciPy reads the bytes checked above, never the file again
    name, shape, cls = _choose(path, names, key)
    x = _load(path, raw, name, shape, cls, limit, v5)
    if x.size == 0:  # (as a .npy file's; a 0 x 5 variable was refused as 5 datapoints stored as columns)
        raise DataError(f"{_show(path)}: the variable {_name(name)} holds no values (shape {'x'.join(map(str, x.shape))})")
    y = None
    for label in ("y", "Y"):
        match = [v for v in names if v[0] == label]
        if match and label != name:
            _, yshape, ycls = match[0]
            if ycls not in _NUMERIC:
                raise DataError(f"{_show(path)}: the labels {label} are of MATLAB class {ycls!r}, not numbers")
            y = _load(path, raw, label, yshape, ycls, limit, v5)
            if y.ndim == 2 and 1 in y.shape:  # MATLAB's vectors are N x 1 or 1 x N
                y = y.reshape(-1)
            break  # checked with every other file's labels: one whole number per row
    return x, y
