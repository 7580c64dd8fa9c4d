"""What a new user meets (issue 16): data identified by content wherever found, data files pinned
by their run, MATLAB files and flat rows with an image shape, units said for continuous data,
results kept per protocol, help on every flag, flags that do not apply refused."""

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dgmkit.cli.common import plural
from dgmkit.cli.demo import DEMO_CONFIG
from dgmkit.cli.main import build_parser, main
from dgmkit.config import FORMAT, migrate_record
from dgmkit.data import load_dataset
from dgmkit.data.matlab import read_mat
from dgmkit.data.registry import CONTENT, content_digest, from_array
from dgmkit.errors import DataError
from dgmkit.evaluation.figures import project_2d

FASHION = Path("/usr/share/datasets/fashion-mnist")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def failure(code, err, *needles):
    assert code == 1, err
    assert err.startswith("dgm: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


# ------------------------------------------------------------------ named data, identified by content
def _link_all(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        (dst / f.name).symlink_to(f)


def test_mnist_files_in_the_root_never_pass_for_fashion_mnist(data_dir, tmp_path):
    _link_all(data_dir / "mnist", tmp_path)  # MNIST's files straight in the data folder: same names as Fashion-MNIST's
    if FASHION.is_dir():  # the real Fashion-MNIST files (Debian package) are found and preferred by content
        d = load_dataset("fashion-mnist", tmp_path, download=False)
        assert d.test.y[:5].tolist() == [9, 2, 1, 1, 6]  # ankle boot, pullover, trouser, trouser, shirt
    else:
        with pytest.raises(DataError, match="is not fashion-mnist's training images: it holds mnist's training images"):
            load_dataset("fashion-mnist", tmp_path, download=False)
    assert load_dataset("mnist", tmp_path, download=False).test.y[:5].tolist() == [7, 2, 1, 0, 4]


def test_a_swapped_split_file_is_named(data_dir, tmp_path):
    folder = tmp_path / "binarized_mnist"
    folder.mkdir()
    src = data_dir / "binarized_mnist"
    (folder / "binarized_mnist_train.amat.gz").symlink_to(src / "binarized_mnist_train.amat.gz")
    (folder / "binarized_mnist_valid.amat.gz").symlink_to(src / "binarized_mnist_valid.amat.gz")
    (folder / "binarized_mnist_test.amat.gz").symlink_to(src / "binarized_mnist_valid.amat.gz")  # same size, other data
    with pytest.raises(DataError, match="is not binarized-mnist's test images: it holds binarized-mnist's validation"):
        load_dataset("binarized-mnist", tmp_path, download=False)


def test_content_digests_are_of_the_values():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert content_digest(a) == content_digest(np.asfortranarray(a)) != content_digest(a.T)
    assert len(set(CONTENT.values())) == len(CONTENT)  # no two canonical files alike


# ------------------------------------------------------------------ Frey faces and MATLAB files
def test_frey_faces_by_name_and_by_path(data_dir):
    d = load_dataset("frey-faces", data_dir, download=False)
    assert d.event_shape == (1, 28, 20) and d.num_levels == 256
    assert [len(d.train), len(d.valid), len(d.test)] == [1565, 200, 200]
    every = torch.cat([d.train.x, d.valid.x, d.test.x]).double()
    assert every.mean().item() == pytest.approx(154.4609, abs=1e-3) and every.min() == 8 and every.max() == 238
    by_path = load_dataset(str(data_dir / "frey_faces" / "frey_rawface.mat"))
    assert by_path.name == "frey-faces" and by_path.fingerprint() == d.fingerprint()
    for shape in ([28, 20], [1, 28, 20]):  # the frames' own shape may be given; another is a contradiction
        assert (
            load_dataset(str(data_dir / "frey_faces" / "frey_rawface.mat"), image_shape=shape).fingerprint()
            == d.fingerprint()
        )
    with pytest.raises(
        DataError, match=r"holds the Frey faces, whose frames are 28 x 20; --image-shape \(20, 28\) contradicts"
    ):
        load_dataset(str(data_dir / "frey_faces" / "frey_rawface.mat"), image_shape=[20, 28])


def test_frey_faces_missing_says_where_it_comes_from(tmp_path):
    with pytest.raises(DataError, match="frey_rawface.mat.*roweis"):
        load_dataset("frey-faces", tmp_path, download=False)


@pytest.mark.parametrize("name", ["binarized-mnist", "mnist", "frey-faces"])
def test_a_missing_data_file_names_both_ways_to_point_at_the_data(name, tmp_path, monkeypatch):
    import dgmkit.data.registry as registry

    def offline(*args, **kwargs):
        raise DataError("no network here")

    monkeypatch.setattr(registry, "fetch", offline)
    for download in (False, True):
        with pytest.raises(DataError, match="missing data file") as e:
            load_dataset(name, tmp_path, download=download)
        assert str(e.value).endswith("or name another folder with --data-dir or $DGMKIT_DATA (which --data-dir overrides)")


def test_frey_faces_copies_that_are_not_freys_are_passed_over_or_named(data_dir, tmp_path):
    """Of several frey_rawface.mat, the first that holds Frey's frames is read; if none does, the
    first copy's problem is the error, naming it."""
    wrong_shape, no_ff = tmp_path / "frey_faces" / "frey_rawface.mat", tmp_path / "frey-faces" / "frey_rawface.mat"
    for path in (wrong_shape, no_ff):
        path.parent.mkdir()
    scipy.io.savemat(wrong_shape, {"ff": np.zeros((28, 20), np.uint8)})
    scipy.io.savemat(no_ff, {"x": np.zeros((28, 20), np.uint8)})
    with pytest.raises(
        DataError, match="expected Frey's variable ff as uint8 of shape \\(560, 1965\\), found uint8 \\(28, 20\\)"
    ):
        load_dataset("frey-faces", tmp_path, download=False)
    wrong_shape.unlink()
    with pytest.raises(DataError, match=f"{no_ff} is not Roweis' frey_rawface.mat \\(.*has no variable named 'ff'"):
        load_dataset("frey-faces", tmp_path, download=False)
    (tmp_path / "frey_rawface.mat").symlink_to(data_dir / "frey_faces" / "frey_rawface.mat")  # a third copy, Frey's
    d = load_dataset("frey-faces", tmp_path, download=False)
    assert d.fingerprint() == load_dataset("frey-faces", data_dir, download=False).fingerprint()


def test_frey_faces_download_is_verified_by_content_and_a_failed_one_leaves_nothing(data_dir, tmp_path, monkeypatch):
    """The download path, offline through a file:// URL: the file is checked by its content
    (a MATLAB header holds a time stamp: no checksum) before it is put in place."""
    import dgmkit.data.registry as registry

    monkeypatch.setattr(registry, "_FREY_URL", (data_dir / "frey_faces" / "frey_rawface.mat").as_uri())
    d = load_dataset("frey-faces", tmp_path / "root", download=True)
    assert d.fingerprint() == load_dataset("frey-faces", data_dir, download=False).fingerprint()
    assert sorted(p.name for p in (tmp_path / "root" / "frey_faces").iterdir()) == ["frey_rawface.mat"]
    scipy.io.savemat(tmp_path / "other.mat", {"ff": np.zeros((28, 20), np.uint8)})
    for url, problem in (
        ((tmp_path / "nope.mat").as_uri(), "could not download"),
        ((tmp_path / "other.mat").as_uri(), "expected Frey's variable ff"),
    ):
        monkeypatch.setattr(registry, "_FREY_URL", url)
        with pytest.raises(
            DataError,
            match=f"missing data file frey_rawface.mat in {tmp_path / 'new' / 'frey_faces'}, and .*{problem}.*\\. Put it "
            "there by hand \\(it comes from .*\\) or name another folder with --data-dir or \\$DGMKIT_DATA \\(which "
            "--data-dir overrides\\)$",
        ):
            load_dataset("frey-faces", tmp_path / "new", download=True)
        assert not (tmp_path / "new").exists()


def test_mnist_download_is_read_and_identified_like_a_file_found(data_dir, tmp_path, monkeypatch):
    """A missing canonical file is downloaded (here from a file:// URL, with the MD5 of that
    copy), put in the dataset's subfolder, read and identified by its content."""
    import hashlib

    import dgmkit.data.registry as registry

    local = data_dir / "mnist"
    md5 = {k: hashlib.md5((local / r.name).read_bytes()).hexdigest() for k, r in registry._MNIST_FILES.items()}
    monkeypatch.setattr(registry, "_MNIST_FILES", registry._idx_files(local.as_uri() + "/", md5))
    d = load_dataset("mnist", tmp_path, download=True)
    assert d.fingerprint() == load_dataset("mnist", data_dir, download=False).fingerprint()
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(r.name for r in registry._MNIST_FILES.values())


def test_a_mat_file_by_path_with_key_labels_and_image_shape(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 36)).astype(np.uint8)
    y = (np.arange(40) % 3).astype(np.float64)  # MATLAB stores labels as doubles
    path = tmp_path / "data.mat"
    scipy.io.savemat(path, {"images": x, "noise": rng.random((5, 5)), "y": y[None, :]})
    with pytest.raises(DataError, match="name the data's variable with --data-key"):
        read_mat(path)
    got, labels = read_mat(path, "images")
    assert np.array_equal(got, x) and np.array_equal(labels, y)
    d = load_dataset(str(path), key="images", image_shape=[6, 6])
    assert d.event_shape == (1, 6, 6) and d.num_levels == 256 and d.train.y is not None
    with pytest.raises(DataError, match=r"needs flat rows of 35 values"):
        load_dataset(str(path), key="images", image_shape=[5, 7])
    with pytest.raises(DataError, match="has no variable named 'nope'"):
        read_mat(path, "nope")


def test_mat_labels_of_the_wrong_shape_are_refused_as_in_npz(tmp_path):
    """Labels that do not fit the data are an error, in a .mat file as in a .npz (they were
    dropped without a word)."""
    x = np.random.default_rng(0).integers(0, 2, (40, 16)).astype(np.uint8)
    for y, problem in (
        (np.arange(39) % 3, "39 labels for 40 images"),
        (np.zeros((40, 2)), r"labels must be one integer per image \(1-D\), got shape \(40, 2\)"),
        (np.zeros((2, 20)), r"got shape \(2, 20\)"),
    ):
        for suffix in (".mat", ".npz"):
            path = tmp_path / f"d{suffix}"
            if suffix == ".mat":
                scipy.io.savemat(path, {"x": x, "y": y})
            else:
                np.savez(path, x=x, y=y)
            with pytest.raises(DataError, match=problem):
                load_dataset(str(path))
    path = tmp_path / "text.mat"
    path.write_text("not a MATLAB file, whatever its name\n" * 5)
    with pytest.raises(DataError, match="neither a v5 header nor a v4 matrix header"):
        load_dataset(str(path))  # (was: SciPy's IndexError passed through)
    v4 = tmp_path / "v4.mat"
    scipy.io.savemat(v4, {"x": x, "y": np.arange(40) % 2}, format="4")
    assert load_dataset(str(v4)).train.y is not None
    scipy.io.savemat(path, {"x": x, "y": "labels"})
    with pytest.raises(DataError, match="the labels y are of MATLAB class 'char', not numbers"):
        load_dataset(str(path))


def test_the_levels_of_whole_numbers_follow_their_values_not_their_dtype():
    """The same digits as uint8 and int64 make the same model (the uint8 copy had 256 levels)."""
    digits = np.random.default_rng(0).integers(0, 17, (50, 4, 4))
    eight_bit = np.random.default_rng(0).integers(0, 200, (50, 4, 4))
    for dtype in (np.uint8, np.int64, np.float32):
        assert from_array(digits.astype(dtype)).num_levels == 17
        assert from_array(eight_bit.astype(dtype)).num_levels == 256
        assert from_array((digits > 8).astype(dtype)).num_levels == 2


def test_mat_files_that_cannot_be_data(tmp_path):
    cells = tmp_path / "cells.mat"
    scipy.io.savemat(cells, {"x": np.array([[1, 2], [3, 4]], dtype=object)})
    with pytest.raises(DataError):
        read_mat(cells)
    v73 = tmp_path / "v73.mat"
    v73.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64" + b"\0" * 200)
    with pytest.raises(DataError, match="HDF5"):
        read_mat(v73)
    big = tmp_path / "big.mat"
    scipy.io.savemat(big, {"x": np.zeros((100, 100))}, do_compression=True)
    os.environ["DGMKIT_MAX_DATA_BYTES"] = "4000"
    try:
        with pytest.raises(DataError, match="compressed variables expand beyond the limit of 4000 bytes"):
            read_mat(big)  # 80000 bytes once inflated, from a file of a few hundred
    finally:
        del os.environ["DGMKIT_MAX_DATA_BYTES"]


def _mat_bytes(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    scipy.io.savemat(buf, arrays)
    return buf.getvalue()


def test_crafted_mat_structures_are_refused_before_scipy_reads_them(tmp_path):
    import struct

    a, b = _mat_bytes(x=np.zeros((4, 3), np.uint8)), _mat_bytes(x=np.ones((5, 3), np.uint8))
    (tmp_path / "dup.mat").write_bytes(a + b[128:])  # the variable x twice
    with pytest.raises(DataError, match="holds the variable 'x' twice"):
        read_mat(tmp_path / "dup.mat")
    lying = bytearray(a)
    struct.pack_into("<I", lying, 132, 10**9)  # the first element declares 1 GB in a file of ~300 bytes
    (tmp_path / "lying.mat").write_bytes(bytes(lying))
    with pytest.raises(DataError, match="declares 1000000000 bytes but holds"):
        read_mat(tmp_path / "lying.mat")
    inner = bytearray(a)
    struct.pack_into("<I", inner, 128 + 8 + 16 + 4, 10**8)  # the dims part of the variable declares 100 MB
    (tmp_path / "inner.mat").write_bytes(bytes(inner))
    with pytest.raises(DataError, match="a variable has an element that declares 100000000 bytes"):
        read_mat(tmp_path / "inner.mat")
    os.mkfifo(tmp_path / "fifo.mat")
    with pytest.raises(DataError, match="not a regular file"):
        read_mat(tmp_path / "fifo.mat")  # never blocks


def _element(kind: int, body: bytes) -> bytes:
    import struct

    return struct.pack("<II", kind, len(body)) + body + bytes(-len(body) % 8)


def _crafted_mat(data_kind: int = 9, dims: tuple[int, int] = (20, 3)) -> bytes:
    import struct

    header = b"MATLAB 5.0 MAT-file".ljust(116) + bytes(8) + b"\x00\x01IM"
    flags, shape = _element(6, struct.pack("<II", 6, 0)), _element(5, struct.pack("<2i", *dims))
    return header + _element(14, flags + shape + _element(1, b"x") + _element(data_kind, np.ones(60).tobytes()))


@pytest.mark.parametrize("kind", [0, 8, 10, 11, 15, 19, 20, 255])
def test_a_data_part_of_unknown_type_is_refused_before_scipy_reads_it(tmp_path, kind):
    """SciPy's reader indexes a table with a part's type code unchecked: codes outside MATLAB's
    (8, 10, 11, 19 and up) crashed the process with a segmentation fault, through dgm train too."""
    (tmp_path / "crafted.mat").write_bytes(_crafted_mat(kind))
    with pytest.raises(DataError, match=f"a part of unknown data type {kind}"):
        read_mat(tmp_path / "crafted.mat")


def test_crafted_mat_parts_negative_dims_and_nesting(tmp_path):
    (tmp_path / "ok.mat").write_bytes(_crafted_mat())
    assert read_mat(tmp_path / "ok.mat")[0].shape == (20, 3)  # the crafting itself is a valid file
    (tmp_path / "neg.mat").write_bytes(_crafted_mat(dims=(-20, 3)))  # NumPy would read -20 as "the rest"
    with pytest.raises(DataError, match="negative or malformed dimensions"):
        read_mat(tmp_path / "neg.mat")
    top = _crafted_mat()
    (tmp_path / "top.mat").write_bytes(top[:128] + _element(9, np.ones(4).tobytes()) + top[128:])
    with pytest.raises(DataError, match="an element of type 9 stands where a variable belongs"):
        read_mat(tmp_path / "top.mat")
    cell = tmp_path / "deep.mat"
    scipy.io.savemat(cell, {"x": np.zeros((2, 2)), "c": np.array([[np.array([[1.0]]), "a"]], dtype=object)})
    assert read_mat(cell)[0].shape == (2, 2)  # a cell beside the data is walked (its parts checked) and left
    small = bytearray(_crafted_mat())
    import struct

    struct.pack_into("<I", small, 128 + 8, (200 << 16) | 6)  # a small element claiming 200 bytes in 4
    (tmp_path / "small.mat").write_bytes(bytes(small))
    with pytest.raises(DataError, match="small element that declares 200 bytes"):
        read_mat(tmp_path / "small.mat")


def test_a_variable_as_the_data_of_a_numeric_one_is_refused(tmp_path):
    """A miMATRIX where a double's real (or imaginary) part belongs crashed SciPy's reader too;
    variables are parts only of cells, structs and objects."""
    import struct

    header = b"MATLAB 5.0 MAT-file".ljust(116) + bytes(8) + b"\x00\x01IM"
    inner = _crafted_mat()[128 + 8 :]  # a valid double variable's body
    flags, shape = _element(6, struct.pack("<II", 6, 0)), _element(5, struct.pack("<2i", 1, 1))
    (tmp_path / "nested.mat").write_bytes(header + _element(14, flags + shape + _element(1, b"x") + _element(14, inner)))
    with pytest.raises(DataError, match="a variable of class 6 .* holds a variable as a part"):
        read_mat(tmp_path / "nested.mat")


@pytest.mark.parametrize("flags, parts, problem", [(6 | 0x800, 1, "1 data parts where its flags promise 2"),
                                                    (6, 0, "0 data parts where its flags promise 1"),
                                                    (5, 1, "1 data parts where its flags promise 3")])  # fmt: skip
def test_a_variable_without_the_parts_its_flags_promise_is_refused(tmp_path, flags, parts, problem):
    """A complex flag on a double with no imaginary part (one bit of a valid file flipped, found
    by fuzzing) made SciPy read past the variable and crash."""
    import struct

    header = b"MATLAB 5.0 MAT-file".ljust(116) + bytes(8) + b"\x00\x01IM"
    head = _element(6, struct.pack("<II", flags, 0)) + _element(5, struct.pack("<2i", 2, 3)) + _element(1, b"x")
    data = _element(9, np.ones(6).tobytes()) * parts
    (tmp_path / "promise.mat").write_bytes(header + _element(14, head + data))
    with pytest.raises(DataError, match=problem):
        read_mat(tmp_path / "promise.mat")


def test_parts_that_scipy_would_parse_otherwise_are_refused(tmp_path):
    """Where SciPy reads bytes in another way than the check walks them, a file could pass the
    check and still crash SciPy (found by a fuzzing pass): array flags written as a small
    element (SciPy reads two full words there), a variable whose size is not whole 8-byte blocks
    (SciPy goes on at its end, the check after the padding), the logical flag on a struct (SciPy
    then calls it a logical array: 10M empty fields took 4 GB) and a file full of field names
    (SciPy compares each with all before it)."""
    import struct

    header = b"MATLAB 5.0 MAT-file".ljust(116) + bytes(8) + b"\x00\x01IM"
    dims, name = _element(5, struct.pack("<2i", 1, 1)), _element(1, b"x")
    small_flags = struct.pack("<II", (4 << 16) | 6, 1)  # a cell, its flags in a small element
    (tmp_path / "small.mat").write_bytes(header + _element(14, small_flags + dims + name + _element(14, b"")))
    with pytest.raises(DataError, match="does not start with its array flags"):
        read_mat(tmp_path / "small.mat")
    body = _element(6, struct.pack("<II", 6, 0)) + dims + name + _element(9, np.ones(1).tobytes())
    (tmp_path / "odd.mat").write_bytes(header + struct.pack("<II", 14, len(body) - 4) + body)
    with pytest.raises(DataError, match="a variable of 60 bytes, not a whole number of 8-byte blocks"):
        read_mat(tmp_path / "odd.mat")
    fields = _element(5, struct.pack("<i", 8)) + _element(1, b"a".ljust(8, b"\0"))
    logical = _element(6, struct.pack("<II", 2 | 0x200, 0)) + _element(5, struct.pack("<2i", 1000, 10000)) + name
    (tmp_path / "logical.mat").write_bytes(header + _element(14, logical + fields))
    with pytest.raises(DataError, match="class 2 is flagged logical, which only numbers can be"):
        read_mat(tmp_path / "logical.mat")
    scipy.io.savemat(tmp_path / "fields.mat", {"x": np.ones((2, 2)), "s": {f"f{i}": 0 for i in range(20001)}})
    with pytest.raises(DataError, match="name more than 20000 fields"):
        read_mat(tmp_path / "fields.mat")
    scipy.io.savemat(tmp_path / "ok.mat", {"x": np.ones((2, 2)), "s": {f"f{i}": 0 for i in range(2000)},
                                          "sparse_logical": scipy.sparse.csc_matrix(np.eye(3, dtype=bool))})  # fmt: skip
    assert read_mat(tmp_path / "ok.mat")[0].shape == (2, 2)


def test_matlab_written_objects_and_uint32_dimensions_still_read():
    """Files from MATLAB that SciPy's tests keep: function handles (opaque objects, which have
    no dimensions part) beside the data, and dimensions stored as miUINT32."""
    data = Path(scipy.io.__file__).parent / "matlab" / "tests" / "data"
    if not (data / "some_functions.mat").exists():
        pytest.skip("SciPy's test files are not installed")
    assert read_mat(data / "some_functions.mat", "a")[0].shape == (1, 1)
    assert read_mat(data / "miuint32_for_miint32.mat")[0].shape == (1, 10)


def _mat_variable(mclass: int, dims: tuple[int, ...], *data: bytes, name: bytes = b"x") -> bytes:
    """A v5 variable element: array flags of class ``mclass``, dimensions, name and data parts."""
    import struct

    flags, shape = _element(6, struct.pack("<II", mclass, 0)), _element(5, struct.pack(f"<{len(dims)}i", *dims))
    return _element(14, flags + shape + _element(1, name) + b"".join(data))


MAT_HEADER = b"MATLAB 5.0 MAT-file".ljust(116) + bytes(8) + b"\x00\x01IM"
DOUBLES = _element(9, np.ones(60).tobytes())


def test_crafted_mat_classes_layouts_and_sizes_are_refused_by_name(tmp_path):
    """What the structure walk and the size checks refuse before SciPy allocates or reads:
    each a DataError naming the file and the problem."""
    import io
    import struct

    buf = io.BytesIO()
    scipy.io.savemat(buf, {"x": np.arange(60.0).reshape(20, 3)}, do_compression=True)
    packed = buf.getvalue()
    (size,) = struct.unpack_from("<I", packed, 132)
    cut = packed[:128] + struct.pack("<II", 15, size // 2) + packed[136 : 136 + size // 2]  # the stream stops midway
    for name, data, problem in (
        ("tail.mat", _crafted_mat() + bytes(4), "the file ends inside an element tag"),
        ("cut.mat", cut, "a compressed variable has an element that declares"),
        ("class0.mat", MAT_HEADER + _mat_variable(0, (20, 3), DOUBLES), "a variable is of unknown class 0"),
        ("class18.mat", MAT_HEADER + _mat_variable(18, (20, 3), DOUBLES), "a variable is of unknown class 18"),
        (
            "nodims.mat",
            MAT_HEADER + _element(14, _element(6, struct.pack("<II", 6, 0)) + DOUBLES),
            "flags, dimensions and name",
        ),
        (
            "huge.mat",
            MAT_HEADER + _mat_variable(6, (10**6, 10**6), DOUBLES),
            "declares 8000000000000 bytes, more than the limit",
        ),
        ("reshape.mat", MAT_HEADER + _mat_variable(6, (20, 4), DOUBLES), "cannot reshape array of size 60"),
        ("short.mat", b"MATLAB", "neither a v5 header nor a v4 matrix header"),
    ):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=problem) as e:
            read_mat(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and "\n" not in str(e.value)


def test_mat_cells_nest_at_most_32_deep_and_an_empty_entry_is_walked(tmp_path):
    value: object = np.zeros((2, 2))
    for _ in range(33):
        cell = np.empty((1, 1), dtype=object)
        cell[0, 0] = value
        value = cell
    scipy.io.savemat(tmp_path / "deep.mat", {"x": np.ones((2, 2)), "c": value})
    with pytest.raises(DataError, match="variables nest more than 32 deep"):
        read_mat(tmp_path / "deep.mat")
    empty = _mat_variable(1, (1, 1), _element(14, b""), name=b"c")  # a cell whose one entry is an empty matrix
    (tmp_path / "empty.mat").write_bytes(MAT_HEADER + empty + _crafted_mat()[128:])
    assert np.array_equal(read_mat(tmp_path / "empty.mat")[0], np.ones((20, 3)))


def test_mat_complex_logical_and_the_whole_file_against_the_cap(tmp_path, monkeypatch):
    scipy.io.savemat(tmp_path / "complex.mat", {"x": np.ones((20, 3)) * (1 + 2j)})
    with pytest.raises(DataError, match="the variable 'x' is not a real numeric array"):
        read_mat(tmp_path / "complex.mat")
    mask = np.arange(60).reshape(20, 3) % 3 == 0
    scipy.io.savemat(tmp_path / "logical.mat", {"x": mask})
    x, _ = read_mat(tmp_path / "logical.mat")
    assert x.dtype == np.uint8 and np.array_equal(x, mask)  # 0/1 bytes, as a .npy of bools reads
    monkeypatch.setenv("DGMKIT_MAX_DATA_BYTES", "100")
    with pytest.raises(DataError, match="logical.mat is more than the limit of 100 bytes \\(set DGMKIT_MAX_DATA_BYTES"):
        read_mat(tmp_path / "logical.mat")


def test_nested_cells_are_walked_without_a_copy_a_level(tmp_path):
    import tracemalloc

    value: object = np.zeros(4 * 2**20, np.uint8)
    for _ in range(20):  # 20 cells deep around 4 MiB: 84 MiB when every level copied its body
        cell = np.empty((1, 1), dtype=object)
        cell[0, 0] = value
        value = cell
    scipy.io.savemat(tmp_path / "deep.mat", {"c": value, "x": np.ones((2, 2))}, do_compression=True)
    tracemalloc.start()
    try:
        assert read_mat(tmp_path / "deep.mat", "x")[0].shape == (2, 2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 4 * 2**20, peak  # the inflated variable and its growth, not a copy a level


def test_the_cap_holds_for_all_compressed_variables_together(tmp_path, monkeypatch):
    """Each variable under the cap, all of them over it: refused before most are inflated (a
    file of a few MB made of many such variables once took a minute of inflating)."""
    path = tmp_path / "many.mat"
    scipy.io.savemat(path, {f"v{i}": np.zeros((100, 10)) for i in range(10)} | {"x": np.ones((3, 2))}, do_compression=True)
    monkeypatch.setenv("DGMKIT_MAX_DATA_BYTES", str(9 * 8000 + 4000))  # room for 9 of the 10 zero arrays
    with pytest.raises(DataError, match="compressed variables expand beyond the limit"):
        read_mat(path)
    monkeypatch.setenv("DGMKIT_MAX_DATA_BYTES", str(12 * 8000))
    assert read_mat(path, "x")[0].shape == (3, 2)


@pytest.fixture(scope="module")
def a_mat_file(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("mat") / "ok.mat"
    scipy.io.savemat(path, {"x": np.arange(60, dtype=np.uint8).reshape(12, 5), "y": np.arange(12)}, do_compression=True)
    return path.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_mat_files_load_or_fail_cleanly(tmp_path, a_mat_file, data):
    raw = bytearray(a_mat_file)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    path = tmp_path / "m.mat"
    path.write_bytes(bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw))
    try:
        x, _ = read_mat(path)
    except DataError:
        return
    assert isinstance(x, np.ndarray) and x.dtype.kind in "biuf"


# ------------------------------------------------------------------ a run pins its data file
def _npy(path: Path, seed: int = 0) -> Path:
    x = np.random.default_rng(seed).integers(0, 2, (120, 16)).astype(np.uint8)
    np.save(path, x)
    return path


def test_a_run_pins_its_data_file_by_full_path_and_content(capsys, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    _npy(work / "x.npy")
    monkeypatch.chdir(work)
    out = tmp_path / "run"
    flags = ["--image-shape", "4", "4", "--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--quiet"]
    code, _, err = run(capsys, "train", "--dataset", "x.npy", *flags, "--out", out)
    assert code == 0, err
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["data"]["dataset"] == str(work / "x.npy")  # the full path, not as typed
    assert record["data"]["event_shape"] == [1, 4, 4] and len(record["data"]["sha256"]) == 64
    monkeypatch.chdir(tmp_path)  # another folder: still found
    code, _, err = run(capsys, "eval", out, "--iw-samples", "2")
    assert code == 0, err
    _npy(work / "x.npy", seed=1)  # other data of the same shape in its place: refused
    failure(*run(capsys, "eval", out, "--iw-samples", "2")[::2], "now holds other data", "--data")
    moved = tmp_path / "moved.npy"
    _npy(moved)  # the original data, at a new path
    code, _, err = run(capsys, "eval", out, "--iw-samples", "2", "--data", moved)
    assert code == 0, err
    failure(*run(capsys, "eval", out, "--data", tmp_path / "nope.txt")[::2], ".npy, .npz, .mat, .csv or .parquet")


def test_a_data_file_gone_or_changed_under_a_run_that_recorded_no_digest_is_refused_by_name(capsys, tmp_path):
    """The run's data file deleted since: "no such data file", named, and how to point at it. A
    run that recorded no digest of its data (older formats) is held to the shape and the levels it
    recorded: other data there are refused, not scored."""
    from run_records import rewrite_records

    data, out = tmp_path / "x.npy", tmp_path / "run"
    rng = np.random.default_rng(0)
    np.save(data, rng.integers(0, 2, (120, 4, 4)).astype(np.uint8))
    code, _, err = run(capsys, "train", "--dataset", data, "--hidden", "16", "--latent-dim", "2", "--epochs", "1",
                       "--quiet", "--out", out)  # fmt: skip
    assert code == 0, err
    data.unlink()
    failure(*run(capsys, "eval", out, "--iw-samples", "2")[::2], f"no such data file: {data}", "--data PATH")

    def no_digest(record: dict) -> dict:
        del record["data"]["sha256"]
        return record

    rewrite_records(out, no_digest)
    np.save(data, rng.integers(0, 3, (120, 4, 4)).astype(np.uint8))
    failure(*run(capsys, "eval", out, "--iw-samples", "2")[::2], "now holds 3 levels", "trained on 2 levels")
    np.save(data, rng.integers(0, 2, (120, 5, 5)).astype(np.uint8))
    failure(*run(capsys, "eval", out, "--iw-samples", "2")[::2], "now have shape (1, 5, 5)", "trained on (1, 4, 4)")
    np.save(data, rng.integers(0, 2, (120, 4, 4)).astype(np.uint8))  # other data alike: nothing tells them apart
    assert run(capsys, "eval", out, "--iw-samples", "2")[0] == 0


def test_a_linked_data_file_is_read_by_the_name_it_was_given(capsys, tmp_path):
    """A data file that is a link into a store of suffix-less blobs (DVC, git-annex) is read by
    its link's name, as load_dataset reads it; the CLI followed the link to the blob's name and
    refused it as an unknown dataset. The run records the link, its folder resolved."""
    store = tmp_path / "store"
    store.mkdir()
    _npy(store / "blob.npy").rename(store / "blob")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.npy").symlink_to(store / "blob")
    (tmp_path / "to-data").symlink_to(tmp_path / "data")
    out = tmp_path / "run"
    flags = ["--image-shape", "4", "4", "--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--quiet"]
    code, _, err = run(capsys, "train", "--dataset", tmp_path / "to-data" / "x.npy", *flags, "--out", out)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["config"]["data"]["dataset"] == str(tmp_path / "data" / "x.npy")
    assert run(capsys, "eval", out, "--iw-samples", "2")[0] == 0


def test_data_flag_is_refused_for_a_named_dataset(capsys, tmp_path):
    out = tmp_path / "run"
    assert run(capsys, "train", "--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--quiet", "--out", out)[0] == 0
    failure(
        *run(capsys, "eval", out, "--data", tmp_path / "x.npy")[::2],
        "named dataset 'digits'",
        "read from no folder: it does not move",
    )


def test_a_named_dataset_changed_after_training_is_refused(capsys, tmp_path, data_dir):
    _link_all(data_dir / "mnist", tmp_path / "a" / "mnist")
    out = tmp_path / "run"
    flags = ["--dataset", "mnist", "--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--quiet"]
    code, _, err = run(capsys, "train", *flags, "--data-dir", tmp_path / "a", "--out", out, "--batch-size", "1000")
    assert code == 0, err
    record = json.loads((out / "config.json").read_text())
    bad = tmp_path / "b" / "mnist"  # the same file names, the test images swapped for training images
    bad.mkdir(parents=True)
    for f in (data_dir / "mnist").iterdir():
        src = data_dir / "mnist" / ("train-images-idx3-ubyte.gz" if f.name.startswith("t10k-images") else f.name)
        (bad / f.name).symlink_to(src)
    code, _, err = run(capsys, "eval", out, "--iw-samples", "1", "--limit", "5", "--data-dir", tmp_path / "b")
    assert code == 1 and "t10k-images-idx3-ubyte.gz" in err, err  # refused, naming the file
    assert record["data"]["sha256"] == load_dataset("mnist", tmp_path / "a").fingerprint()


# ------------------------------------------------------------------ honest units, results kept
def test_continuous_data_get_no_bits_per_dim_and_say_why(capsys, tmp_path):
    x = np.random.default_rng(0).random((200, 16)).astype(np.float32)
    np.save(tmp_path / "f.npy", x)
    out = tmp_path / "run"
    flags = ["--likelihood", "gaussian", "--hidden", "16", "--latent-dim", "2", "--epochs", "2"]
    code, text, err = run(capsys, "train", "--dataset", tmp_path / "f.npy", *flags, "--out", out)
    assert code == 0, err
    assert "bits/dim" not in text and "log-density of continuous data" in text
    code, text, err = run(capsys, "eval", out, "--iw-samples", "3")
    assert code == 0, err
    assert "bits/dim          n/a: continuous data" in text and "not probabilities" in text
    r = json.loads((out / "eval.json").read_text())
    assert r["bpd"] is None and r["elbo_bpd"] is None and r["density_of"] == "continuous"


def test_results_are_kept_per_protocol(capsys, tmp_path):
    out = tmp_path / "run"
    assert run(capsys, "train", "--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--quiet", "--out", out)[0] == 0
    code, text, _ = run(capsys, "eval", out, "--iw-samples", "20")
    assert code == 0 and "KL per dimension" in text and "largest first" in text
    full = json.loads((out / "eval.json").read_text())
    assert run(capsys, "eval", out, "--iw-samples", "2", "--limit", "10")[0] == 0
    assert json.loads((out / "eval.json").read_text())["n"] == 10  # eval.json: the latest
    kept = json.loads((out / "evals.json").read_text())["results"]
    assert len(kept) == 2
    (key,) = [k for k in kept if k.startswith("test | all | importance-sampled k=20 | seed 0 | weights ")]
    assert kept[key]["nll"] == full["nll"]  # the long one is not lost
    assert run(capsys, "eval", out, "--iw-samples", "20")[0] == 0  # the same protocol again replaces only itself
    assert len(json.loads((out / "evals.json").read_text())["results"]) == 2
    (out / "evals.json").write_text("[1, 2]")
    failure(*run(capsys, "eval", out, "--iw-samples", "2")[::2], "is not an evals.json")


def test_flags_that_do_not_apply_are_refused(capsys, tmp_path):
    flow = tmp_path / "flow"
    flags = ["--model", "flow", "--flow", "realnvp", "--flow-layers", "2", "--hidden", "8", "--epochs", "1", "--quiet"]
    assert run(capsys, "train", *flags, "--out", flow)[0] == 0
    failure(*run(capsys, "sample", flow, "--draw", "--out", tmp_path / "s.png")[::2], "--draw is for latent variable")
    failure(*run(capsys, "eval", flow, "--iw-samples", "10")[::2], "exact log-likelihood", "nothing to sample")
    vae = tmp_path / "vae"
    assert run(capsys, "train", "--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--quiet", "--out", vae)[0] == 0
    failure(*run(capsys, "train", "--conv-channels", "8", "16", "--epochs", "1", "--out", tmp_path / "c")[::2], "conv")


def test_every_flag_of_every_command_has_help_and_its_default():
    parser = build_parser(["train"])
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in commands.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"dgm {name} {action.option_strings or action.dest} has no help"
            text = formatter._get_help_string(action)
            default = action.default
            if action.option_strings and not (default is None or default is False or default == []):  # ([]: none)
                assert "default" in text, f"dgm {name} {action.option_strings}: {text!r} does not show its default"


def test_interpolate_steps_help_says_the_line_runs_between_the_codes_the_output_line_names():
    # the line runs between the codes that reconstruct the two images (an IAF's at eps = 0, a hierarchy's
    # layer by layer), not between latent means, as the command's own output line says
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    steps = next(a for a in commands["interpolate"]._actions if a.dest == "steps")
    assert "the code that reconstructs one image" in steps.help and "latent mean" not in steps.help
    epochs = next(a for a in commands["demo"]._actions if a.dest == "epochs")  # (its default: the demo config's)
    assert epochs.default is None and f"(default: {DEMO_CONFIG['epochs']})" in epochs.help


def test_gumbel_temperature_is_named_apart_from_sample_temperature(capsys, tmp_path):
    train = next(a for a in build_parser(["train", "--model", "dvae"])._actions if isinstance(a, argparse._SubParsersAction))
    assert "--gumbel-temperature" in train.choices["train"].format_help()
    out = tmp_path / "d"
    flags = ["--model", "dvae", "--gumbel-temperature", "0.8", "--hidden", "16", "--latent-dim", "2", "--epochs", "1"]
    assert run(capsys, "train", *flags, "--quiet", "--out", out)[0] == 0
    failure(*run(capsys, "train", "--model", "dvae", "--temperature", "0.8", "--out", tmp_path / "e")[::2], "temperature")
    # a run of format 2 spelled it "temperature": it loads as gumbel_temperature
    record = json.loads((out / "config.json").read_text())
    model = dict(record["config"]["model"])
    model["temperature"], model["temperature_min"] = model.pop("gumbel_temperature"), model.pop("gumbel_temperature_min")
    old = {**record, "format": 2, "config": {**record["config"], "model": model}}
    new = migrate_record(old, "old")
    assert new["format"] == FORMAT and new["config"]["model"]["gumbel_temperature"] == 0.8


def test_plural_and_axis_labels():
    assert [plural(1, "epoch"), plural(2, "epoch"), plural(0, "image")] == ["1 epoch", "2 epochs", "0 images"]
    _, labels, _ = project_2d(torch.randn(50, 2))
    assert labels == ("z_1", "z_2")
    _, labels, what = project_2d(torch.randn(50, 5))
    assert labels[0].startswith("PC 1") and labels[1].startswith("PC 2") and "PCA of 5-D" in what
    points, labels, _ = project_2d(torch.randn(50, 1))
    assert labels[1].startswith("random jitter") and np.ptp(points[:, 1]) > 0


def test_one_epoch_is_said_in_the_singular(capsys, tmp_path):
    out = tmp_path / "run"
    code, text, _ = run(capsys, "train", "--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--quiet", "--out", out)
    assert code == 0 and "trained 1 epoch;" in text


# ------------------------------------------------------------------ the conv VAE on 8x8 digits
def test_conv_stacks_keep_the_signal_at_initialisation():
    """The cause of the conv VAE's collapse on the 8x8 digits: at PyTorch's default init the conv
    decoder's output moved ~30 times less with z than an MLP decoder's. With He init it does not."""
    from dgmkit.nn import MLP
    from dgmkit.nn.conv import ConvDecoderNet, ConvEncoderNet

    torch.manual_seed(0)
    z = torch.randn(500, 8)
    x = torch.rand(500, 1, 8, 8)
    with torch.no_grad():
        conv_dec = ConvDecoderNet(8, (1, 8, 8), 1, hidden=512)(z).reshape(500, -1).std(0).mean()
        mlp_dec = MLP(8, [256, 512], 64, "relu")(z).std(0).mean()
        conv_enc = ConvEncoderNet((1, 8, 8), 16, hidden=512)(x).std(0).mean()
        mlp_enc = MLP(64, [512, 256], 16, "relu")(x.flatten(1)).std(0).mean()
    assert conv_dec > 0.5 * mlp_dec and conv_enc > 0.5 * mlp_enc


def test_a_conv_vae_on_the_digits_keeps_its_latents(capsys, tmp_path):
    out = tmp_path / "conv"
    flags = ["--encoder", "conv", "--latent-dim", "8", "--warmup", "5", "--epochs", "8", "--quiet"]
    assert run(capsys, "train", *flags, "--out", out)[0] == 0
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["valid_active_units"] >= 6 and last["valid_kl"] > 1.0  # before: 0 of 8 active, KL 0.05
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["model"]["conv_channels"] == [32, 64]


# ------------------------------------------------------------------ review: copies, resume, weights
def test_an_unreadable_copy_is_passed_over_for_a_good_one(data_dir, tmp_path):
    _link_all(data_dir / "mnist", tmp_path)  # the good files in the data folder's root
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte").write_bytes(b"garbage, not IDX")  # found first, unreadable
    assert load_dataset("mnist", tmp_path, download=False).train.x.shape == (50000, 1, 28, 28)
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()  # no good copy left: the first one's error
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path, download=False)


def test_resume_refuses_changed_data_and_results_name_their_weights(capsys, tmp_path):
    _npy(tmp_path / "x.npy")
    out = tmp_path / "run"
    flags = ["--dataset", tmp_path / "x.npy", "--hidden", "16", "--latent-dim", "2", "--quiet"]
    assert run(capsys, "train", *flags, "--epochs", "1", "--out", out)[0] == 0
    assert run(capsys, "eval", out, "--iw-samples", "2")[0] == 0
    assert run(capsys, "train", "--resume", "--out", out, "--epochs", "8", "--quiet")[0] == 0  # best improves
    assert run(capsys, "eval", out, "--iw-samples", "2")[0] == 0  # same protocol, other weights: both kept
    kept = json.loads((out / "evals.json").read_text())["results"]
    assert len(kept) == 2 and len({r["weights"] for r in kept.values()}) == 2
    _npy(tmp_path / "x.npy", seed=3)
    failure(*run(capsys, "train", "--resume", "--out", out, "--epochs", "9")[::2], "the data now differ")


def test_conv_channels_are_refused_where_the_networks_are_fixed(capsys, tmp_path):
    flags = ["--model", "hvae", "--architecture", "conv-hvae", "--conv-channels", "8", "16", "--out", tmp_path / "h"]
    failure(*run(capsys, "train", *flags)[::2], "conv_channels")


def test_importing_dgmkit_needs_no_posix_only_module_and_no_compiled_coder():
    """``import dgmkit`` (and the CLI, the trainer, the run folders) with ``fcntl`` and
    ``constriction`` unavailable, as on Windows or without the compress extra; dgm compress then
    says what to install."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['fcntl'] = None; sys.modules['constriction'] = None\n"
        "import dgmkit, dgmkit.cli.main, dgmkit.training.run_writer, dgmkit.coding\n"
        "from dgmkit.coding.arm_coder import _coder\n"
        "try:\n    _coder()\nexcept dgmkit.errors.ConfigError as e:\n    print(e)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "pip install 'dgmkit[compress]'" in p.stdout


def test_a_mat_file_of_one_datapoint_per_column_is_refused_with_both_readings(tmp_path):
    """Roweis' Frey faces saved again as doubles (or scaled to [0, 1]) are 560 x 1965, one frame per
    column: they were read as 560 datapoints of 1965 values, and trained on without a word."""

    from dgmkit.data import load_dataset

    frames = np.random.default_rng(0).integers(0, 256, (560, 1965)).astype(np.float64)
    path = tmp_path / "frey_double.mat"
    scipy.io.savemat(path, {"ff": frames / 255})
    with pytest.raises(DataError, match=r"560 rows of 1965 values.*save the transpose \(x\.T\)"):
        load_dataset(str(path))
    scipy.io.savemat(path, {"ff": (frames / 255).T})  # transposed: 1965 frames of 560 pixels
    assert load_dataset(str(path)).train.x.shape[-1] == 560
    wide = tmp_path / "wide.mat"
    scipy.io.savemat(wide, {"x": frames[:40, :60]})
    assert load_dataset(str(wide), image_shape=(1, 6, 10)).event_shape == (1, 6, 10)  # (its rows, said so)
