"""Named datasets, read from their canonical files in a data directory.

The data directory is the ``data_dir`` argument (``--data-dir``), else ``$DGMKIT_DATA``,
else ``~/.cache/dgmkit``. Each dataset looks for its files in a subfolder of that directory
(or the directory itself), plain or gzipped, and downloads them (checksummed) when they are
missing and ``download`` is true.
"""

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dgmkit.data.dataset import Dataset, Split
from dgmkit.data.download import download as fetch
from dgmkit.data.formats import read_amat, read_arrays, read_idx
from dgmkit.data.sprites import sprites
from dgmkit.data.toy2d import TOY_2D, toy_2d
from dgmkit.errors import DataError

__all__ = ["DATASETS", "load_dataset", "default_data_dir", "from_array"]

_LARO = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


@dataclass(frozen=True)
class Remote:
    """A canonical file: its name, where it comes from and its checksum."""

    name: str
    url: str
    checksum: str
    algorithm: str


_BINARIZED = {
    s: Remote(f"binarized_mnist_{s}.amat", f"{_LARO}binarized_mnist_{s}.amat", c, "sha256")
    for s, c in [
        ("train", "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"),
        ("valid", "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"),
        ("test", "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"),
    ]
}
_MNIST_FILES = {
    k: Remote(f, f"{_MNIST}{f}", c, "md5")
    for k, f, c in [
        ("train_x", "train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("train_y", "train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        ("test_x", "t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        ("test_y", "t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ]
}
_FASHION_FILES = {
    k: Remote(f, f"{_FASHION}{f}", c, "md5")
    for k, f, c in [
        ("train_x", "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        ("train_y", "train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        ("test_x", "t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        ("test_y", "t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    ]
}


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("DGMKIT_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "dgmkit"


def _find(root: Path, subdirs: list[str], remote: Remote, download: bool, extra: list[Path] = ()) -> Path:
    """Locate ``remote.name`` (plain or gzipped) under ``root``; download it if allowed."""
    stem = remote.name.removesuffix(".gz")
    folders = [root / s for s in subdirs] + [root, *extra]
    for folder in folders:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    where = ", ".join(str(f) for f in folders)
    if not download:
        raise DataError(
            f"missing data file {stem} (or {stem}.gz); looked in {where}. "
            f"It comes from {remote.url}; put it in {root / subdirs[0]} or name another --data-dir"
        )
    try:
        return fetch(remote.url, root / subdirs[0] / remote.name, remote.checksum, remote.algorithm)
    except DataError as e:
        raise DataError(
            f"missing data file {stem} (or {stem}.gz); looked in {where}, and {e}. "
            f"Put the file in {root / subdirs[0]} or name another --data-dir"
        ) from None


def _images(x: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x).reshape(-1, *shape))


_BINARIZED_ROWS = {"train": 50000, "valid": 10000, "test": 10000}


def _load_binarized_mnist(root: Path, download: bool) -> Dataset:
    splits = {}
    for s, remote in _BINARIZED.items():
        path = _find(root, ["binarized_mnist", "binarized-mnist"], remote, download)
        x = read_amat(path)
        if x.dtype != np.uint8 or x.max() > 1:
            raise DataError(f"{path}: expected binary values 0/1")
        if len(x) != _BINARIZED_ROWS[s]:
            raise DataError(f"{path}: {len(x)} rows, expected {_BINARIZED_ROWS[s]} (binarized-mnist {s} split)")
        splits[s] = Split(_images(x, (1, 28, 28)))
    return Dataset("binarized-mnist", num_levels=2, **splits)


_N_VALID = 10000  # the last training images of the MNIST-like sets, held out for validation


def _check_idx_pair(name: str, split: str, paths: dict[str, Path], arr: dict[str, np.ndarray], classes: int) -> None:
    """The images and labels of one split: uint8 (N, 28, 28) images, as many labels in 0..classes-1."""
    xp, yp = paths[f"{split}_x"], paths[f"{split}_y"]
    x, y = arr[f"{split}_x"], arr[f"{split}_y"]
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
        raise DataError(f"{xp}: expected {name} images as uint8 of shape (N, 28, 28), found {x.dtype} {x.shape}")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{yp}: expected {name} labels as one integer per image, found {y.dtype} {y.shape}")
    if y.min() < 0 or y.max() >= classes:
        raise DataError(f"{yp}: labels must lie in 0..{classes - 1}, found {int(y.min())}..{int(y.max())}")
    if len(x) != len(y):
        raise DataError(f"{xp} holds {len(x)} images but {yp} holds {len(y)} labels")


def _load_idx_set(
    name: str, files: dict, root: Path, subdirs: list[str], download: bool, extra: Iterable[Path] = (), classes: int = 10
) -> Dataset:
    paths = {k: _find(root, subdirs, r, download, list(extra)) for k, r in files.items()}
    arr = {k: read_idx(p) for k, p in paths.items()}
    for split in ("train", "test"):
        _check_idx_pair(name, split, paths, arr, classes)
    if len(arr["train_x"]) <= _N_VALID:
        raise DataError(
            f"{paths['train_x']}: {len(arr['train_x'])} training images, but {name} needs more than {_N_VALID} "
            f"(the last {_N_VALID} are held out for validation)"
        )
    x_tr, y_tr = _images(arr["train_x"], (1, 28, 28)), torch.from_numpy(arr["train_y"].astype(np.int64))
    n_valid = _N_VALID
    return Dataset(
        name,
        train=Split(x_tr[:-n_valid], y_tr[:-n_valid]),
        valid=Split(x_tr[-n_valid:], y_tr[-n_valid:]),
        test=Split(_images(arr["test_x"], (1, 28, 28)), torch.from_numpy(arr["test_y"].astype(np.int64))),
        num_levels=256,
    )


def _load_mnist(root: Path, download: bool) -> Dataset:
    return _load_idx_set("mnist", _MNIST_FILES, root, ["mnist", "MNIST/raw"], download)


def _load_fashion(root: Path, download: bool) -> Dataset:
    system = [Path("/usr/share/datasets/fashion-mnist")]
    return _load_idx_set("fashion-mnist", _FASHION_FILES, root, ["fashion-mnist", "fashion_mnist"], download, system)


def _load_digits(root: Path, download: bool) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16): no download needed.
    Split with a fixed seed into 1197 train, 300 valid and 300 test images."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.uint8)).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, va, te = perm[:1197], perm[1197:1497], perm[1497:]
    return Dataset("digits", Split(x[tr], y[tr]), Split(x[va], y[va]), Split(x[te], y[te]), num_levels=17)


def _load_digits_4x4(root: Path, download: bool) -> Dataset:
    """The digits pooled to 4x4 (mean of 2x2 blocks) and thresholded at half the range:
    16 binary pixels, small enough for models that enumerate every image (2^16 states)."""
    d = _load_digits(root, download)

    def pool(s: Split) -> Split:
        x = torch.nn.functional.avg_pool2d(s.x.float(), 2)
        return Split((x >= 8).to(torch.uint8), s.y)

    return Dataset("digits-4x4", pool(d.train), pool(d.valid), pool(d.test), num_levels=2)


def _toy(name: str) -> Callable[[Path, bool], Dataset]:
    return lambda root, download: toy_2d(name)


DATASETS: dict[str, Callable[[Path, bool], Dataset]] = {
    **{name: _toy(name) for name in TOY_2D},
    "binarized-mnist": _load_binarized_mnist,
    "mnist": _load_mnist,
    "fashion-mnist": _load_fashion,
    "digits": _load_digits,
    "digits-4x4": _load_digits_4x4,
    "sprites": lambda root, download: sprites(32),
    "sprites-64": lambda root, download: sprites(64),
}


MAX_LABEL = 2**31 - 1
"""The largest class label ``from_array`` accepts."""


def _check_images(x: np.ndarray, name: str) -> np.ndarray:
    if x.dtype == np.bool_:
        x = x.view(np.uint8)
    if x.dtype.kind not in "iuf":
        raise DataError(f"{name}: the data must be real numbers (bool, integers or floats), not {x.dtype}")
    if x.ndim == 2:
        x = x[:, None, None, :]
    elif x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or len(x) < 10:
        raise DataError(f"{name}: expected at least 10 images shaped (N, D), (N, H, W) or (N, C, H, W), got {x.shape}")
    if 0 in x.shape:
        raise DataError(f"{name}: the images hold no values (shape {x.shape})")
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise DataError(f"{name}: the data holds NaN or inf")
        if np.abs(x).max() > np.finfo(np.float32).max:
            raise DataError(f"{name}: the data holds values beyond the float32 range")
    return x


def _check_labels(y: object, n: int, name: str) -> torch.Tensor:
    """Labels as int64: one per image, integral, finite, in 0..MAX_LABEL."""
    try:
        y = np.asarray(y)
    except (ValueError, TypeError) as e:
        raise DataError(f"{name}: the labels are not an array of numbers ({e})") from None
    if y.dtype == np.bool_:
        y = y.view(np.uint8)
    if y.dtype.kind not in "iuf":
        raise DataError(f"{name}: labels must be integers, not {y.dtype}")
    if y.ndim != 1:
        raise DataError(f"{name}: labels must be one integer per image (1-D), got shape {y.shape}")
    if len(y) != n:
        raise DataError(f"{name}: {len(y)} labels for {n} images")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{name}: the labels hold NaN or inf")
    if y.dtype.kind == "f" and not np.all(y == np.round(y)):
        raise DataError(f"{name}: labels must be whole numbers")
    if y.min() < 0 or y.max() > MAX_LABEL:
        raise DataError(f"{name}: labels must lie in 0..{MAX_LABEL}, found {y.min()}..{y.max()}")
    return torch.from_numpy(y.astype(np.int64))


def from_array(x: np.ndarray, y: np.ndarray | None = None, name: str = "array", seed: int = 0) -> Dataset:
    """A dataset from one array of images: (N, D), (N, H, W) or (N, C, H, W), at least 10.

    The images must be finite real numbers (bool, integer or float); labels ``y``, if given,
    one non-negative whole number per image. Integer or binary-valued data is kept as
    integers (num_levels 2 if binary, else max + 1 up to 256); other float data is
    continuous. The rows are split with a seeded permutation into 80% train, 10% valid and
    10% test, none of them empty.
    """
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists, or objects that are not arrays
        raise DataError(f"{name}: the data is not an array of numbers ({e})") from None
    x = _check_images(x, name)
    integral = x.dtype.kind in "iu" or bool(np.all(x == np.round(x)))
    if integral and x.min() >= 0 and x.max() <= 255:
        levels = 2 if x.max() <= 1 else (256 if x.dtype == np.uint8 else int(x.max()) + 1)
        t = torch.from_numpy(x.astype(np.uint8))
    else:
        levels, t = None, torch.from_numpy(x.astype(np.float32))
    labels = None if y is None else _check_labels(y, len(t), name)
    perm = torch.randperm(len(t), generator=torch.Generator().manual_seed(seed))
    n_va = n_te = max(1, len(t) // 10)
    parts = perm[: len(t) - n_va - n_te], perm[len(t) - n_va - n_te : len(t) - n_te], perm[len(t) - n_te :]
    if min(len(p) for p in parts) == 0:
        raise DataError(f"{name}: {len(t)} images are too few for non-empty train, valid and test splits")
    full = Split(t, labels)
    return Dataset(name, *(full.subset(p) for p in parts), num_levels=levels)


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, download: bool = True, key: str | None = None
) -> Dataset:
    """Load a named dataset, or a ``.npy``/``.npz`` file given by its path.

    A ``.npz`` file's data is its array ``key`` (``--data-key``), else its array ``x``, else
    its only array; its array ``y``, if any, gives the labels.

    >>> load_dataset("digits").train.x.shape
    torch.Size([1197, 1, 8, 8])
    """
    if name.endswith((".npy", ".npz")):
        try:
            path = Path(name).expanduser()
        except RuntimeError as e:  # ~user of an unknown user
            raise DataError(f"no such data file: {name} ({e})") from None
        if not path.is_file():
            raise DataError(f"no such data file: {path}")
        x, y = read_arrays(path, key)
        return from_array(x, y, name=path.name)
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)} or give a .npy/.npz file")
    if key is not None:
        raise DataError(f"--data-key {key!r} applies only to .npz files, not to the dataset {name!r}")
    return DATASETS[name](default_data_dir(data_dir), download)
