"""Named datasets, read from their canonical files in a data directory.

The data directory is the ``data_dir`` argument (``--data-dir``), else ``$DGMKIT_DATA``,
else ``~/.cache/dgmkit``. Each dataset looks for its files in a subfolder of that directory
(or the directory itself), plain or gzipped, and downloads them (checksummed) when they are
missing and ``download`` is true.

Wherever a file is found, its content identifies it: the SHA-256 of the array it decodes to
(independent of compression and text layout) must be the one this module records for that
dataset and split, else loading fails and says what the file holds instead (MNIST and
Fashion-MNIST use the same file names, so a folder of one must never pass for the other).
"""

import hashlib
import math
import numbers
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import numpy as np
import torch

from dgmkit.data.dataset import Dataset, Split
from dgmkit.data.download import download as fetch
from dgmkit.data.formats import read_amat, read_arrays, read_idx
from dgmkit.data.labels import HIDDEN, MAX_LABEL
from dgmkit.data.matlab import read_mat
from dgmkit.data.sprites import sprites
from dgmkit.data.table import TABLE_SUFFIXES, Column, read_table
from dgmkit.data.toy2d import TOY_2D, toy_2d
from dgmkit.errors import DataError, did_you_mean, generator_seed, shown_value

__all__ = [
    "DATASETS",
    "FOLDER_DATASETS",
    "CONTENT",
    "load_dataset",
    "default_data_dir",
    "from_array",
    "frey_faces",
    "content_digest",
    "is_data_file",
    "is_table",
    "check_images",
    "DATA_FILE_SUFFIXES",
    "ANOTHER_FOLDER",
]

ANOTHER_FOLDER = "name another folder with --data-dir or $DGMKIT_DATA (which --data-dir overrides)"
"""How a missing-data error tells the user to point dgm at their data (the end of its message)."""

_LARO = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_ROWEIS = "https://cs.nyu.edu/~roweis/data/"


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
_IDX_NAMES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}


def _idx_files(base_url: str, md5: dict[str, str]) -> dict[str, Remote]:
    """The four IDX files of an MNIST-layout dataset (its images and labels, train and test) at
    ``base_url``, each with its MD5."""
    return {k: Remote(f, f"{base_url}{f}", md5[k], "md5") for k, f in _IDX_NAMES.items()}


_MNIST_FILES = _idx_files(
    _MNIST,
    {
        "train_x": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train_y": "d53e105ee54ea40749a09fcbcd1e9432",
        "test_x": "9fb629c4189551a2d022fa330f9573f3",
        "test_y": "ec29112dd5afa0611ce80d1b7f02629c",
    },
)
_FASHION_FILES = _idx_files(
    _FASHION,
    {
        "train_x": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train_y": "25c81989df183df01b3e8a0aad5dffbe",
        "test_x": "bef4ecab320f06d8554ea6380940ec79",
        "test_y": "bb300cfdad3c16e7a12a480ee83cd310",
    },
)


# SHA-256 of each canonical file's decoded array (C-order bytes): what identifies the data.
CONTENT: dict[tuple[str, str], str] = {
    ("binarized-mnist", "train"): "43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a",
    ("binarized-mnist", "valid"): "069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e",
    ("binarized-mnist", "test"): "ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86",
    ("mnist", "train_x"): "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    ("mnist", "train_y"): "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    ("mnist", "test_x"): "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    ("mnist", "test_y"): "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
    ("fashion-mnist", "train_x"): "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
    ("fashion-mnist", "train_y"): "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
    ("fashion-mnist", "test_x"): "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
    ("fashion-mnist", "test_y"): "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    ("frey-faces", "frames"): "2438ba4f0d2a6bd8bac43de756141eaa33c8d248dd613d464bdb1210d9b7af78",  # (1965, 560) uint8
}
_PART = {
    "train": "training images",
    "valid": "validation images",
    "test": "test images",
    "train_x": "training images",
    "train_y": "training labels",
    "test_x": "test images",
    "test_y": "test labels",
    "frames": "frames",
}


def content_digest(arr: np.ndarray) -> str:
    """SHA-256 of an array's values in C order (what identifies a canonical file's data)."""
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def _identify(name: str, part: str, path: Path, got: str) -> None:
    """The data read from ``path``, of content digest ``got``, must be ``name``'s ``part``; else
    say what it is instead."""
    if got == CONTENT[(name, part)]:
        return
    known = [f"{n}'s {_PART[p]}" for (n, p), d in CONTENT.items() if d == got]
    what = f"it holds {known[0]}" if known else "its content matches no release of it"
    raise DataError(
        f"{path} is not {name}'s {_PART[part]}: {what} (SHA-256 of the decoded data {got[:16]}..., expected "
        f"{CONTENT[(name, part)][:16]}...). Put {name}'s own files in its subfolder, or load other data as a "
        ".npy/.npz/.mat file by its path"
    )


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("DGMKIT_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "dgmkit"


def _not_regular(path: Path) -> DataError | None:
    """What is at ``path`` where a data file belongs but no regular file is (a folder, a pipe, a
    link to a device or to nothing), or at its folder where that is no folder (a file named
    ``mnist``, say: a download there failed with "[Errno 17] File exists"), as a DataError; None
    where nothing is there."""
    folder = path.parent
    if (folder.exists() or folder.is_symlink()) and not folder.is_dir():
        return DataError(f"{folder} is not a folder (a file, or a link to nothing), where {path.name} is looked for")
    if not os.path.lexists(path):
        return None
    return DataError(
        f"{path}: not a regular file (a folder, a device, a pipe or a link to nothing) where the data file belongs; "
        "put the file itself there"
    )


def _find(
    root: Path,
    subdirs: list[str],
    remote: Remote,
    download: bool,
    extra: Sequence[Path] = (),
    read: Callable[[Path], np.ndarray] = read_idx,
    identity: tuple[str, str] | None = None,
) -> tuple[Path, np.ndarray, str | None]:
    """Locate ``remote.name`` (plain or gzipped) under ``root`` and read it; download it if
    allowed. Returns the path, the array and its content digest (with ``identity``; else None).
    Of several copies, the first whose content is ``identity``'s wins (one that cannot be read is
    passed over); if none is, the first copy is returned, or its read error raised, so that its
    checks say what is wrong with it."""
    stem = remote.name.removesuffix(".gz")
    folders = [root / s for s in subdirs] + [root, *extra]
    first: tuple[Path, np.ndarray, str | None] | DataError | None = None
    for path in (folder / name for folder in folders for name in (stem, stem + ".gz")):
        if not path.is_file():
            first = first or _not_regular(path)  # (None where nothing is there)
            continue
        try:
            arr = read(path)
        except DataError as e:
            first = first or e
            continue
        digest = None if identity is None else content_digest(arr)
        if identity is None or digest == CONTENT[identity]:
            return path, arr, digest
        first = first or (path, arr, digest)
    if isinstance(first, DataError):
        raise first
    if first is not None:
        return first
    where = ", ".join(str(f) for f in folders)
    if not download:
        raise DataError(
            f"missing data file {stem} (or {stem}.gz); looked in {where}. "
            f"It comes from {remote.url}; put it in {root / subdirs[0]} or {ANOTHER_FOLDER}"
        )
    try:
        path = fetch(remote.url, root / subdirs[0] / remote.name, remote.checksum, remote.algorithm)
    except DataError as e:
        raise DataError(
            f"missing data file {stem} (or {stem}.gz); looked in {where}, and {e}. "
            f"Put the file in {root / subdirs[0]} or {ANOTHER_FOLDER}"
        ) from None
    arr = read(path)
    return path, arr, None if identity is None else content_digest(arr)


def _images(x: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x).reshape(-1, *shape))


_BINARIZED_ROWS = {"train": 50000, "valid": 10000, "test": 10000}


def _load_binarized_mnist(root: Path, download: bool) -> Dataset:
    splits = {}
    for s, remote in _BINARIZED.items():
        path, x, digest = _find(
            root, ["binarized_mnist", "binarized-mnist"], remote, download, [], read_amat, ("binarized-mnist", s)
        )
        if x.dtype != np.uint8 or x.max() > 1:
            raise DataError(f"{path}: expected binary values 0/1")
        if len(x) != _BINARIZED_ROWS[s]:
            raise DataError(f"{path}: {len(x)} rows, expected {_BINARIZED_ROWS[s]} (binarized-mnist {s} split)")
        _identify("binarized-mnist", s, path, cast(str, digest))  # set: _find was given an identity
        splits[s] = Split(_images(x, (1, 28, 28)))
    return Dataset("binarized-mnist", splits["train"], splits["valid"], splits["test"], num_levels=2)


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
    name: str,
    files: dict,
    root: Path,
    subdirs: list[str],
    download: bool,
    extra: Iterable[Path] = (),
    classes: int = 10,
    identify: bool = True,
) -> Dataset:
    """An MNIST-like set of four IDX files; ``identify``: check each file's content against the
    dataset's (off only for synthetic stand-ins in tests)."""
    found = {
        k: _find(root, subdirs, r, download, list(extra), read_idx, (name, k) if identify else None)
        for k, r in files.items()
    }
    paths, arr = {k: f[0] for k, f in found.items()}, {k: f[1] for k, f in found.items()}
    for split in ("train", "test"):
        _check_idx_pair(name, split, paths, arr, classes)
    if len(arr["train_x"]) <= _N_VALID:
        raise DataError(
            f"{paths['train_x']}: {len(arr['train_x'])} training images, but {name} needs more than {_N_VALID} "
            f"(the last {_N_VALID} are held out for validation)"
        )
    if identify:
        for k, p in paths.items():
            _identify(name, k, p, cast(str, found[k][2]))  # set: _find was given an identity
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


_FREY_NAME = "frey_rawface.mat"
_FREY_URL = f"{_ROWEIS}{_FREY_NAME}"
FREY_SHAPE = (1965, 1, 28, 20)
FREY_SPLIT_SEED = 0


def _frey_frames(path: Path) -> np.ndarray:
    """The 1965 frames (1965, 560) of a frey_rawface.mat, checked by content."""
    try:
        x, _ = read_mat(path, "ff")
    except DataError as e:
        raise DataError(f"{path} is not Roweis' {_FREY_NAME} ({str(e).replace(' (choose with --data-key)', '')})") from None
    if x.shape != (560, 1965) or x.dtype != np.uint8:
        raise DataError(f"{path}: expected Frey's variable ff as uint8 of shape (560, 1965), found {x.dtype} {x.shape}")
    frames = np.ascontiguousarray(x.T)
    _identify("frey-faces", "frames", path, content_digest(frames))
    return frames


def frey_faces(frames: np.ndarray) -> Dataset:
    """Frey faces (1965 video frames of 28x20 8-bit pixels), split with a fixed seed (0) into
    1565 train, 200 valid and 200 test frames. The frames are in video order and neighbours
    look alike, so a random split puts near-copies of test frames in training: the numbers
    measure fit more than generalisation, as in the papers that use it."""
    x = torch.from_numpy(frames.reshape(FREY_SHAPE))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(FREY_SPLIT_SEED))
    tr, va, te = perm[:1565], perm[1565:1765], perm[1765:]
    return Dataset("frey-faces", Split(x[tr]), Split(x[va]), Split(x[te]), num_levels=256)


def _load_frey(root: Path, download: bool) -> Dataset:
    subdirs = ["frey_faces", "frey-faces"]
    folders = [root / s for s in subdirs] + [root]
    copies = [f / _FREY_NAME for f in folders if (f / _FREY_NAME).is_file()]
    first: DataError | None = None
    for path in copies:  # the first copy whose content is Frey's
        try:
            return frey_faces(_frey_frames(path))
        except DataError as e:
            first = first or e
    first = first or next(filter(None, (_not_regular(f / _FREY_NAME) for f in folders)), None)  # (a folder, a pipe)
    if first is not None:
        raise first
    if not download:
        where = ", ".join(str(f) for f in folders)
        raise DataError(
            f"missing data file {_FREY_NAME}; looked in {where}. It comes from {_FREY_URL}; "
            f"put it in {root / subdirs[0]} or {ANOTHER_FOLDER}"
        )
    try:
        found = fetch(_FREY_URL, root / subdirs[0] / _FREY_NAME, None, verify=_frey_frames)
    except DataError as e:
        raise DataError(
            f"missing data file {_FREY_NAME} in {root / subdirs[0]}, and {e}. Put it there by hand (it comes from "
            f"{_FREY_URL}) or {ANOTHER_FOLDER}"
        ) from None
    return frey_faces(_frey_frames(found))


_TABLES = {"breast-cancer": "load_breast_cancer", "wine": "load_wine", "iris": "load_iris", "diabetes": "load_diabetes"}
"""scikit-learn's bundled UCI tables (no download): (569, 30), (178, 13), (150, 4) and (442, 10)."""


def _table(name: str) -> Callable[[Path, bool], Dataset]:
    """A bundled UCI table, standardized (each column to mean 0 and standard deviation 1 over all
    rows, as in the MIWAE protocol), as continuous rows (N, 1, 1, D) split 80/10/10 with seed 0;
    the class as label where the table has one (not diabetes, whose target is a real number). Its
    ``columns`` name scikit-learn's features with their means and standard deviations, as a table
    read from a file has them: its numbers are of standardized values, and rows are written and
    read in the table's own units (diabetes: scikit-learn's, already scaled)."""

    def load(root: Path, download: bool) -> Dataset:
        import sklearn.datasets

        d = getattr(sklearn.datasets, _TABLES[name])()
        x = d.data.astype(np.float64)
        mean, std = x.mean(0), x.std(0)
        x = (x - mean) / std
        y = None if name == "diabetes" else d.target
        columns = tuple(Column(str(c), "numeric", float(m), float(s)) for c, m, s in zip(d.feature_names, mean, std))
        return replace(from_array(x.astype(np.float32), y, name=name), columns=columns)

    return load


def _toy(name: str) -> Callable[[Path, bool], Dataset]:
    return lambda root, download: toy_2d(name)


FOLDER_DATASETS = ("binarized-mnist", "mnist", "fashion-mnist", "frey-faces")
"""The named datasets read from their files in the data directory (``data_dir``), downloaded
where missing; the others are bundled with scikit-learn or made here, and read no folder."""

DATASETS: dict[str, Callable[[Path, bool], Dataset]] = {
    **{name: _toy(name) for name in TOY_2D},
    "binarized-mnist": _load_binarized_mnist,
    "mnist": _load_mnist,
    "fashion-mnist": _load_fashion,
    "frey-faces": _load_frey,
    "digits": _load_digits,
    "digits-4x4": _load_digits_4x4,
    "sprites": lambda root, download: sprites(32),
    "sprites-64": lambda root, download: sprites(64),
    **{name: _table(name) for name in _TABLES},
}


def check_images(x: np.ndarray, name: str, min_rows: int = 10) -> np.ndarray:
    """Rows of real numbers as images (N, C, H, W): (N, D) and (N, H, W) get unit axes; NaN
    marks a missing entry (no row all missing); no inf; values within float32's range."""
    if x.dtype == np.bool_:
        x = x.view(np.uint8)
    if x.dtype.kind not in "iuf":
        raise DataError(f"{name}: the data must be real numbers (bool, integers or floats), not {x.dtype}")
    if x.ndim == 2:
        x = x[:, None, None, :]
    elif x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{name}: expected images shaped (N, D), (N, H, W) or (N, C, H, W), got {x.shape}")
    if len(x) < min_rows:
        raise DataError(
            f"{name}: {len(x)} {'row' if len(x) == 1 else 'rows'} (images, or a table's rows); "
            f"at least {min_rows} are needed"
        )
    if 0 in x.shape:
        raise DataError(f"{name}: the images hold no values (shape {x.shape})")
    if x.dtype.kind == "f":
        if np.isinf(x).any():
            raise DataError(f"{name}: the data holds inf")
        nan = np.isnan(x)
        if nan.reshape(len(x), -1).all(1).any():
            rows = int(nan.reshape(len(x), -1).all(1).sum())
            raise DataError(
                f"{name}: {rows} {'row holds' if rows == 1 else 'rows hold'} no observed value (all NaN); leave "
                f"{'it' if rows == 1 else 'them'} out"
            )
        if nan.any() and x.dtype != np.float64:
            x = x.astype(np.float64)  # the range check below on the observed values
        if np.nanmax(np.abs(x)) > np.finfo(np.float32).max:
            raise DataError(f"{name}: the data holds values beyond the float32 range")
    return x


def check_channels_first(x: np.ndarray, name: str) -> None:
    """Refuses (DataError) an array (N, A, B, C) that looks like channels-last images (N, H, W, C):
    C of 1, 3 or 4 (grey, RGB, RGBA) after two axes of more than 4 (images that high and wide),
    which read as (N, C, H, W) would be A channels of B x C pixels."""
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and min(x.shape[1:3]) > 4:
        raise DataError(
            f"{name}: shape {x.shape} looks like channels-last images (N, H, W, C); dgmkit reads (N, C, H, W): "
            "transpose them first, as numpy.transpose(x, (0, 3, 1, 2)) (if they are (N, C, H, W) already, save them "
            "flat, (N, C*H*W), and give --image-shape C H W)"
        )


def _check_labels(y: object, n: int, name: str) -> torch.Tensor:
    """Labels as int64: one per image, integral, finite, in 0..MAX_LABEL, or ``HIDDEN`` (-1) where the
    file does not show it (a partly labelled file, for semi-supervised training)."""
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
    low, high = y.min().item(), y.max().item()  # (Python numbers: MAX_LABEL as float16 is inf, as float32 2**31)
    if low < HIDDEN or high > MAX_LABEL:
        raise DataError(f"{name}: labels must lie in 0..{MAX_LABEL}, found {low}..{high} ({HIDDEN} marks a hidden label)")
    return torch.from_numpy(y.astype(np.int64))


def _check_float32_values(seen: np.ndarray, name: str, whole: bool) -> None:
    """Refuse values (not levels: the finite ones, ``seen``) that the float32 dgmkit models would
    not keep: integers beyond 2^24 (not all distinct), of an integer dtype or whole numbers of a
    wider float one (``whole``: MATLAB's doubles) that float32 would change, or all below float32's
    smallest normal number (their digits lost, or 0)."""
    top = 0
    if seen.dtype.kind in "iu":
        top = max(-int(seen.min()), int(seen.max()))  # (Python ints: no overflow)
    elif whole and bool((seen.astype(np.float32) != seen).any()):  # (float32 data, or data it keeps: no loss)
        top = int(np.abs(seen).max())
        top = top if top <= 2**53 else 0  # (beyond 2^53 every double is whole: no sign of integers)
    if top > 2**24:  # (float32 holds every integer up to 2^24 only)
        raise DataError(
            f"{name}: integers of magnitude up to {top}, beyond 2^24, would not all stay distinct as the float32 "
            "values dgmkit models; scale them first"
        )
    if 0 < float(np.abs(seen).max()) < np.finfo(np.float32).tiny:
        raise DataError(
            f"{name}: values of magnitude at most {float(np.abs(seen).max()):.3g}, below float32's smallest normal "
            f"number ({np.finfo(np.float32).tiny:.3g}), would lose their digits or become 0 as the float32 values "
            "dgmkit models; scale them first"
        )


def from_array(
    x: np.ndarray, y: np.ndarray | None = None, name: str = "array", seed: int = 0, shaped: bool = False
) -> Dataset:
    """A dataset from one array of images: (N, D), (N, H, W) or (N, C, H, W), at least 10.

    The images must be real numbers (bool, integer or float), NaN marking a missing entry
    (``data.missing``; no row all missing, no inf); labels ``y``, if given,
    one non-negative whole number per image, or -1 where it is hidden (semi-supervised
    training). Integer or binary-valued data is kept as integers, their number of levels
    following the values whatever the array's dtype: 2 if binary, 256 if the largest value
    needs 8 bits (128..255: 8-bit data, whose levels are 256 even where no pixel reaches 255),
    else max + 1 (digits of 0..16: 17); other float data is
    continuous. The rows are split with a seeded permutation into 80% train, 10% valid and
    10% test, none of them empty. An array that looks channels-last is refused
    (``check_channels_first``) unless ``shaped``: its shape was given (``--image-shape``).
    """
    if not (isinstance(name, str) and name):  # (a run records it as its data's name)
        raise DataError(f"a dataset's name is a non-empty string, got {shown_value(name)}")
    seed = generator_seed(seed, error=DataError)  # (a NumPy integer failed in manual_seed)
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists, or objects that are not arrays
        raise DataError(f"{name}: the data is not an array of numbers ({e})") from None
    if not shaped:
        check_channels_first(x, name)
    x = check_images(x, name)
    missing = x.dtype.kind == "f" and bool(np.isnan(x).any())
    seen = x[~np.isnan(x)] if missing else x
    integral = x.dtype.kind in "iu" or bool(np.all(seen == np.round(seen)))
    if integral and seen.min() >= 0 and seen.max() <= 255:
        top = int(seen.max())
        levels = 2 if top <= 1 else (256 if top >= 128 else top + 1)
        # integers, stored as floats where NaN marks missing entries (``data.missing``)
        t = torch.from_numpy(x.astype(np.float32 if missing else np.uint8))
    else:
        _check_float32_values(seen, name, integral)
        levels, t = None, torch.from_numpy(x.astype(np.float32))
    labels = None if y is None else _check_labels(y, len(t), name)
    perm = torch.randperm(len(t), generator=torch.Generator().manual_seed(seed))
    n_va = n_te = max(1, len(t) // 10)  # at least 10 rows (check_images): train keeps 8 or more
    parts = perm[: len(t) - n_va - n_te], perm[len(t) - n_va - n_te : len(t) - n_te], perm[len(t) - n_te :]
    full = Split(t, labels, rows=torch.arange(len(t)))
    train, valid, test = (full.subset(p) for p in parts)
    return Dataset(name, train, valid, test, num_levels=levels)


DATA_FILE_SUFFIXES = (".npy", ".npz", ".mat", *TABLE_SUFFIXES)


def is_data_file(name: "str | os.PathLike[str]") -> bool:
    """Whether a ``--dataset`` value (or a path from Python) names a file (by its suffix) rather
    than a named dataset."""
    return os.fspath(name).lower().endswith(DATA_FILE_SUFFIXES)


def is_table(name: "str | os.PathLike[str]") -> bool:
    """Whether a ``--dataset`` value names a table (rows of named columns): a .csv or .parquet
    file, or one of the bundled UCI tables."""
    name = os.fspath(name)
    return name in _TABLES or name.lower().endswith(TABLE_SUFFIXES)


def _reshape(x: np.ndarray, image_shape: tuple[int, ...], name: str) -> np.ndarray:
    """Flat rows (N, D) as images (N, H, W) or (N, C, H, W), D = H W or C H W (``image_shape``
    checked by ``load_dataset``)."""
    per_row = math.prod(x.shape[1:]) if x.ndim >= 2 else None
    if x.ndim != 2 or per_row != math.prod(image_shape):
        raise DataError(
            f"{name}: --image-shape {' '.join(map(str, image_shape))} needs flat rows of {math.prod(image_shape)} "
            f"values (N, {math.prod(image_shape)}); the data has shape {x.shape}"
        )
    return x.reshape(len(x), *image_shape)


def _load_data_file(
    name: str,
    key: str | None,
    shape: tuple[int, ...] | None,
    schema: str | os.PathLike | None,
    columns: tuple[Column, ...] | None = None,
) -> Dataset:
    """A dataset from a data file given by its path (``load_dataset``)."""
    try:
        path = Path(name).expanduser()
    except RuntimeError as e:  # ~user of an unknown user
        raise DataError(f"no such data file: {name} ({e})") from None
    if not path.is_file():
        if path.exists():  # (a FIFO would block the read, a folder is no file)
            raise DataError(f"data file {path} is not a regular file")
        raise DataError(f"no such data file: {path}")
    if schema is not None and path.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"--schema describes a table's columns: it applies to .csv and .parquet files, not {path.name}")
    if path.suffix.lower() in TABLE_SUFFIXES:
        if key is not None or shape is not None:
            raise DataError(f"--data-key and --image-shape do not apply to a table ({path.name})")
        rows, columns = read_table(path, schema, columns)
        return replace(from_array(rows.astype(np.float32), None, name=path.name), columns=columns)
    if path.suffix.lower() == ".mat":
        x, y = read_mat(path, key)
        if x.shape == (560, 1965) and x.dtype == np.uint8 and content_digest(x.T) == CONTENT[("frey-faces", "frames")]:
            if shape is not None and shape not in (FREY_SHAPE[1:], FREY_SHAPE[2:]):
                raise DataError(
                    f"{path} holds the Frey faces, whose frames are 28 x 20; --image-shape {shape} contradicts it"
                )
            return frey_faces(np.ascontiguousarray(x.T))
        _check_mat_datapoints_first(path, x, shape)
    else:
        x, y = read_arrays(path, key)
    if shape is not None:
        x = _reshape(x, shape, path.name)
    return from_array(x, y, name=path.name, shaped=shape is not None)


def _check_mat_datapoints_first(path: Path, x: np.ndarray, shape: tuple[int, ...] | None) -> None:
    """A .mat variable read as datapoints along its first axis, refused where MATLAB's habits make
    another reading likely: a 2-D variable of fewer rows than columns (one datapoint per column; not
    with --image-shape), or a stack of images shorter along its first axis than its last (H x W x N)."""
    if x.ndim == 2 and x.shape[0] < x.shape[1] and shape is None:
        raise DataError(
            f"{path}: its data hold {x.shape[0]} rows of {x.shape[1]} values, fewer rows than values: rows are "
            f"datapoints, and MATLAB files often hold one datapoint per column; if these are {x.shape[1]} "
            f"datapoints, save the transpose (x.T); if they are {x.shape[0]}, name their shape with --image-shape"
        )
    if x.ndim >= 3 and x.shape[0] < x.shape[-1]:  # MATLAB stacks images last: H x W x N, H x W x C x N
        order = " ".join(map(str, [x.ndim, *range(1, x.ndim)]))
        raise DataError(
            f"{path}: its data have shape {x.shape}, fewer along the first axis than the last: the first axis holds "
            f"the datapoints, and MATLAB stacks images along the last (H x W x N); if these are {x.shape[-1]} "
            f"images, save them with that axis first (permute(x, [{order}]) in MATLAB, numpy.moveaxis(x, -1, 0)); if "
            f"they are {x.shape[0]}, save them flat ({x.shape[0]}, {math.prod(x.shape[1:])}) and give their shape with "
            "--image-shape"
        )


def _checked_arguments(
    name: object, data_dir: object, image_shape: Iterable[int] | None
) -> tuple[str, tuple[int, ...] | None]:
    """``load_dataset``'s name (a path as its text) and image shape, refused in words where they
    are of another kind (from Python: a name of None was an AttributeError of ``.lower()``, an
    image shape of 2.5 was read as 2), with ``data_dir`` (a path, not empty)."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        raise DataError(f"a dataset is named by a string (a name, or a data file's path), got {shown_value(name)}")
    if data_dir is not None and not (isinstance(data_dir, (str, os.PathLike)) and isinstance(os.fspath(data_dir), str)):
        raise DataError(f"data_dir names a folder by its path, got {shown_value(data_dir)}")
    if data_dir is not None and not os.fspath(data_dir):  # (not "no folder given": that is None)
        raise DataError("data_dir is empty: name a folder, or give None for the default")
    if image_shape is None:
        return name, None
    shape = list(image_shape) if isinstance(image_shape, Iterable) and not isinstance(image_shape, str) else None
    whole = shape is not None and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in shape)
    if not (shape is not None and whole and len(shape) in (2, 3) and min(shape) >= 1):
        shown = [int(v) for v in shape] if shape is not None and whole else shown_value(image_shape)
        raise DataError(f"--image-shape takes H W or C H W, positive whole numbers; got {shown}")
    return name, tuple(int(v) for v in shape)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    key: str | None = None,
    image_shape: Iterable[int] | None = None,
    schema: str | os.PathLike | None = None,
    columns: tuple[Column, ...] | None = None,
) -> Dataset:
    """Load a named dataset, or a ``.npy``, ``.npz`` or MATLAB ``.mat`` file given by its path.
    A table file (``.csv``, ``.parquet``) is read by ``columns`` where given (another table's:
    the same header, standardized by their means and standard deviations, their categories),
    else by its own.

    A ``.npz`` file's data is its array ``key`` (``--data-key``), else its array ``x``, else
    its only array; its array ``y``, if any, gives the labels (a ``.mat`` file likewise, see
    ``dgmkit.data.matlab``). Flat rows (N, D) become images with ``image_shape`` (H, W) or
    (C, H, W). A ``.mat`` file that holds Roweis' Frey faces loads as ``frey-faces``.

    >>> load_dataset("digits").train.x.shape
    torch.Size([1197, 1, 8, 8])
    """
    name, shape = _checked_arguments(name, data_dir, image_shape)
    if is_data_file(name):
        return _load_data_file(name, key, shape, schema, columns)
    if name not in DATASETS:
        raise DataError(
            f"unknown dataset {name!r}{did_you_mean(name, DATASETS)}; choose from {sorted(DATASETS)} or give a .npy, "
            ".npz, .mat, .csv or .parquet file by its path"
        )
    if key is not None:
        raise DataError(f"--data-key {key!r} applies only to .npz and .mat files, not to the dataset {name!r}")
    if schema is not None:
        raise DataError(f"--schema applies only to .csv and .parquet files, not to the dataset {name!r}")
    if shape is not None:
        raise DataError(f"--image-shape applies only to data files; the dataset {name!r} knows its image shape")
    root = default_data_dir(data_dir)
    if name in FOLDER_DATASETS and (root.exists() or root.is_symlink()) and not root.is_dir():
        raise DataError(f"the data folder {root} is not a folder (a file, or a link to nothing): {ANOTHER_FOLDER}")
    return DATASETS[name](root, download)
