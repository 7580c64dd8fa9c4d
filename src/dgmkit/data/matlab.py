"""MATLAB ``.mat`` files (formats v4 and v5, read with SciPy), as hostile input.

A ``.mat`` file holds named variables. The data array is the variable ``key`` (``--data-key``),
else ``x`` or ``X``, else the only numeric variable; a variable ``y`` (or ``Y``) of as many
entries as the data has rows gives the labels. Before any variable is read, the file's size and
each chosen variable's declared size (from its header, listed by ``scipy.io.whosmat``) are held
against the data cap of :func:`dgmkit.data.formats.max_data_bytes`, so a compressed variable
cannot expand beyond it. Only real numeric arrays are read (no cells, structs, strings, sparse or
complex matrices). MATLAB 7.3 files are HDF5 containers, which this reader refuses with advice.

Rows are datapoints, as in NumPy files. Some MATLAB files store one datapoint per column (Roweis'
``frey_rawface.mat`` is 560 x 1965); that one is recognised by its content as the named dataset
``frey-faces``, and for others the error names the shape so the user can transpose it.
"""

import math
import os
import warnings
from pathlib import Path

import numpy as np

from dgmkit._io import describe_os_error
from dgmkit.data.formats import MAX_BYTES_ENV, max_data_bytes
from dgmkit.errors import DataError

__all__ = ["read_mat", "MAT_MAGIC_73"]

MAT_MAGIC_73 = b"MATLAB 7.3 MAT-file"
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


def _show(path: Path) -> str:
    return repr(str(path)) if any(c in str(path) for c in "\n\r\t") else str(path)


def _variables(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    from scipy.io import whosmat

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [(str(n), tuple(int(s) for s in shape), str(cls)) for n, shape, cls in whosmat(str(path))]
    except (OSError, PermissionError) as e:
        raise DataError(describe_os_error(e, _show(path), "read")) from None
    except MemoryError:
        raise DataError(f"{_show(path)}: not a readable .mat file (its headers ask for more memory than there is)") from None
    except Exception as e:  # noqa: BLE001 - SciPy's parser raises many kinds on bad bytes
        raise DataError(f"cannot read {_show(path)} as a MATLAB .mat file ({type(e).__name__}: {_line(e)})") from None


def _line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__


def _choose(path: Path, names: list[tuple[str, tuple[int, ...], str]], key: str | None) -> tuple[str, tuple, str]:
    by_name = {n: (n, s, c) for n, s, c in names}
    shown = ", ".join(f"{n} {'x'.join(map(str, s))} {c}" for n, s, c in names[:20]) or "no variables"
    if key is not None:
        if key not in by_name:
            raise DataError(f"{_show(path)} has no variable named {key[:60]!r}; it holds {shown} (choose with --data-key)")
        return by_name[key]
    for guess in ("x", "X"):
        if guess in by_name:
            return by_name[guess]
    numeric = [v for v in names if v[2] in _NUMERIC and v[0] not in ("y", "Y")]
    if len(numeric) == 1:
        return numeric[0]
    raise DataError(f"{_show(path)} holds {shown}; name the data's variable with --data-key")


def _load(path: Path, name: str, shape: tuple[int, ...], cls: str, limit: int) -> np.ndarray:
    if cls not in _NUMERIC:
        raise DataError(f"{_show(path)}: the variable {name!r} is a MATLAB {cls}, not a numeric array")
    declared = math.prod(shape) * _NUMERIC[cls]
    if declared > limit:
        raise DataError(
            f"{_show(path)}: the variable {name!r} declares {declared} bytes, more than the limit of {limit} "
            f"(set {MAX_BYTES_ENV} to raise it)"
        )
    from scipy.io import loadmat

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = loadmat(str(path), variable_names=[name], squeeze_me=False)[name]
    except MemoryError:
        raise DataError(f"{_show(path)}: not enough memory to read the variable {name!r}") from None
    except Exception as e:  # noqa: BLE001 - SciPy's parser raises many kinds on bad bytes
        raise DataError(f"cannot read the variable {name!r} of {_show(path)} ({type(e).__name__}: {_line(e)})") from None
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
        raise DataError(f"{_show(path)}: the variable {name!r} is not a real numeric array")
    if value.nbytes > limit:
        raise DataError(f"{_show(path)}: the variable {name!r} holds more than the limit of {limit} bytes")
    if value.dtype == np.bool_:
        value = value.astype(np.uint8)
    return np.ascontiguousarray(value)


def read_mat(path: Path, key: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The data array of a MATLAB ``.mat`` file and its labels (or None): see the module docstring."""
    path = Path(path)
    limit = max_data_bytes()
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as f:
            head = f.read(128)
    except OSError as e:
        raise DataError(describe_os_error(e, _show(path), "read")) from None
    except ValueError:
        raise DataError(f"{_show(path)}: not a valid file name") from None
    if size > limit:
        raise DataError(f"{_show(path)} is {size} bytes, more than the limit of {limit} (set {MAX_BYTES_ENV} to raise it)")
    if head.startswith(MAT_MAGIC_73):
        raise DataError(
            f"{_show(path)} is a MATLAB 7.3 file (an HDF5 container), which dgmkit does not read; "
            "save it with MATLAB's save(..., '-v7') or convert it to .npz"
        )
    names = _variables(path)
    name, shape, cls = _choose(path, names, key)
    x = _load(path, name, shape, cls, limit)
    y = None
    for label in ("y", "Y"):
        match = [v for v in names if v[0] == label]
        if match and label != name:
            _, yshape, ycls = match[0]
            if math.prod(yshape) == x.shape[0] and ycls in _NUMERIC:
                y = _load(path, label, yshape, ycls, limit).reshape(-1)
            break
    return x, y
