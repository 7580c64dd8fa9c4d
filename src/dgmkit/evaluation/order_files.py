"""The per-order log-likelihoods of a mixture of orders (``dgm eval --orders``), kept on disk as
each order is done, so that an evaluation that was stopped or killed goes on where it was.

One file per order, ``order-J.npz`` (NumPy, no pickles): the order itself (D entries) and its
log p(x | sigma_J) for each of the N datapoints (float64). The folder is named by what the values
depend on (the weights, the data, the seed: ``dgm eval`` hashes them), and since the orders of a
seed are drawn one after another, ``--orders 4`` then ``--orders 8`` computes only the last four.
A file is read back only if it holds exactly this order and N finite values, as ``put`` writes
them (uncompressed); a file that does not, or a link or anything but a file at its name, is an
error that names it (delete it to compute that order again).
"""

import io
import math
import os
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dgmkit._io import atomic_write_bytes
from dgmkit.errors import EvaluationError

__all__ = ["OrderFiles"]


class OrderFiles:
    """An ``estimates.OrderStore`` in ``folder`` for ``n`` datapoints; ``report`` (e.g. print)
    is told of each order as it is read back or kept, with the seconds it took."""

    def __init__(self, folder: Path, n: int, report: Callable[[str], None] | None = None):
        self.folder, self.n, self.report = Path(folder), int(n), report
        self._since = time.perf_counter()

    def _path(self, j: int) -> Path:
        return self.folder / f"order-{j}.npz"

    def get(self, j: int, order: torch.Tensor) -> torch.Tensor | None:
        path = self._path(j)
        if not os.path.lexists(path):
            return None
        if path.is_symlink() or not path.is_file():  # (a link: no file of this evaluation)
            what = f"a link to {os.readlink(path)}" if path.is_symlink() else "not a regular file"
            raise EvaluationError(f"{path}: {what}, not a stored order of this evaluation; delete it to compute it again")
        want = order.cpu().numpy().astype(np.int64)
        try:
            with open(path, "rb") as fh, zipfile.ZipFile(fh) as z:  # (closed however the reading ends)
                if sorted(z.namelist()) != ["order.npy", "values.npy"]:
                    raise ValueError(f"arrays {sorted(z.namelist())[:4]}, not order and values")
                _stored_as_written(z)
                got = _read_member(z, "order", np.int64, want.shape)
                values = _read_member(z, "values", np.float64, (self.n,))
        except _Mismatch as e:
            raise EvaluationError(f"{path}: {e}; delete it to compute it again") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise EvaluationError(
                f"{path}: not a stored order of this evaluation ({e}); delete it to compute it again"
            ) from None
        if not np.array_equal(got, want):
            raise EvaluationError(f"{path} holds another order than order {j} of this seed; delete it to compute it again")
        if not np.isfinite(values).all():
            raise EvaluationError(f"{path}: its log-likelihoods are not all finite; delete it to compute it again")
        if (values > 1e-6).any():  # (an any-order model's are of discrete data: log-probabilities, at most 0)
            raise EvaluationError(
                f"{path}: {int((values > 1e-6).sum())} of its log-likelihoods exceed 0, which no probability does; "
                "delete it to compute it again"
            )
        if self.report is not None:
            self.report(f"order {j}: read back from {path.name}")
        self._since = time.perf_counter()
        return torch.from_numpy(values)

    def put(self, j: int, order: torch.Tensor, values: torch.Tensor) -> None:
        v = values.detach().double().cpu().numpy()
        if v.shape != (self.n,):
            raise ValueError(f"expected {self.n} values for order {j}, got shape {v.shape}")
        self.folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, order=order.cpu().numpy().astype(np.int64), values=v)
        atomic_write_bytes(self._path(j), buf.getvalue())
        if self.report is not None:
            self.report(f"order {j}: scored in {time.perf_counter() - self._since:.1f} s and kept")
        self._since = time.perf_counter()


def _stored_as_written(z: zipfile.ZipFile) -> None:
    """Refuses members that ``put`` never writes: compressed or encrypted ones (whose reading
    raised zlib's, LZMA's or zipfile's own errors, not a refusal naming the file)."""
    for info in z.infolist():
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise ValueError(f"{info.filename} is compressed or encrypted, as no stored order is")


class _Mismatch(ValueError):
    """A stored array of another kind or size than the evaluation's."""


def _read_member(z: zipfile.ZipFile, name: str, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """The array ``name`` of the .npz archive ``z``, read only once its .npy header says it is of
    ``dtype`` and ``shape`` (so a crafted header or a compressed member cannot make it large)."""
    nbytes = np.dtype(dtype).itemsize * math.prod(shape)
    with z.open(f"{name}.npy") as m:
        version = np.lib.format.read_magic(m)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"{name}: .npy format version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        got_shape, fortran, got_dtype = read_header(m)
        if got_dtype != np.dtype(dtype) or tuple(got_shape) != tuple(shape) or fortran:
            raise _Mismatch(f"expected {name} of {np.dtype(dtype)} {tuple(shape)}, got {got_dtype} {tuple(got_shape)}")
        data = m.read(nbytes + 1)
    if len(data) != nbytes:
        raise ValueError(f"{name}: {len(data)} bytes of data, not the {nbytes} its header gives")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
