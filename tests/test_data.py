"""Loaders on the real files and on small synthetic ones, downloads, and transforms."""

import gzip
import hashlib
import http.server
import json
import os
import re
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from dgmkit.data import VALID_SEED, DataTransform, Split, from_array, load_dataset, make_transform
from dgmkit.data.download import download
from dgmkit.data.formats import read_amat, read_array, read_idx
from dgmkit.errors import DataError

FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def test_amat_fast_path_equals_general_parser(tmp_path):
    rows = (np.random.default_rng(0).random((5, 784)) < 0.3).astype(np.uint8)
    text = "\n".join(" ".join(str(v) for v in r) for r in rows) + "\n"
    (tmp_path / "a.amat").write_text(text)
    (tmp_path / "b.amat.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "c.amat").write_text(text.replace(" ", "  "))  # irregular spacing: general parser
    for name in ("a.amat", "b.amat.gz", "c.amat"):
        got = read_amat(tmp_path / name)
        assert got.dtype == np.uint8 and np.array_equal(got, rows), name


def test_amat_rejects_malformed(tmp_path):
    (tmp_path / "bad.amat").write_text("0 1 x\n")
    with pytest.raises(DataError, match="not a .amat file"):
        read_amat(tmp_path / "bad.amat")
    (tmp_path / "short.amat").write_text("0 1 0\n")
    with pytest.raises(DataError, match="columns"):
        read_amat(tmp_path / "short.amat")


def test_idx_round_trip_and_errors(tmp_path):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(np.uint8)
    write_idx(tmp_path / "x.idx", arr)
    write_idx(tmp_path / "x.idx.gz", arr, gz=True)
    assert np.array_equal(read_idx(tmp_path / "x.idx"), arr)
    assert np.array_equal(read_idx(tmp_path / "x.idx.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "trunc").write_bytes((tmp_path / "x.idx").read_bytes()[:-3])
    with pytest.raises(DataError, match="bytes follow"):
        read_idx(tmp_path / "trunc")


def test_binarized_mnist_real_files(data_dir):
    d = load_dataset("binarized-mnist", data_dir, download=False)
    assert [len(d.train), len(d.valid), len(d.test)] == [50000, 10000, 10000]
    assert d.event_shape == (1, 28, 28) and d.num_levels == 2
    means = [s.x.float().mean().item() for s in (d.train, d.valid, d.test)]
    assert means == pytest.approx([0.1306, 0.1311, 0.1325], abs=6e-5)  # SOURCES.md statistics


def test_mnist_real_files(data_dir):
    d = load_dataset("mnist", data_dir, download=False)
    assert [len(d.train), len(d.valid), len(d.test)] == [50000, 10000, 10000]
    assert d.num_levels == 256 and d.train.x.dtype == torch.uint8
    counts = torch.bincount(torch.cat([d.train.y, d.valid.y]), minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert d.test.y[:5].tolist() == [7, 2, 1, 0, 4]


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_the_debian_package(tmp_path):
    d = load_dataset("fashion-mnist", tmp_path, download=False)  # empty data dir: found in /usr/share
    assert [len(d.train), len(d.valid), len(d.test)] == [50000, 10000, 10000]
    assert torch.bincount(d.test.y).tolist() == [1000] * 10


def test_idx_dataset_from_a_synthetic_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 256, (10010, 28, 28)), gz=False)
    write_idx(folder / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 10010), gz=True)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (7, 28, 28)), gz=True)
    write_idx(folder / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 7))
    from dgmkit.data.registry import _FASHION_FILES, _load_idx_set

    d = _load_idx_set("fashion-mnist", _FASHION_FILES, tmp_path, ["fashion-mnist"], download=False, identify=False)
    assert [len(d.train), len(d.valid), len(d.test)] == [10, 10000, 7]


def test_missing_files_name_what_is_expected(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("binarized-mnist", tmp_path, download=False)
    msg = str(e.value)
    assert "binarized_mnist_train.amat" in msg and "http" in msg and str(tmp_path) in msg


@pytest.mark.parametrize("download", [False, True])
def test_a_data_folder_that_is_a_file_is_named_as_such(tmp_path, download):
    """--data-dir naming a file: said so, before any download (which failed with "[Errno 17] File
    exists"), not "missing data file ... put it in FILE/mnist"."""
    (tmp_path / "notes.txt").write_text("x")
    for name in ("mnist", "frey-faces"):
        with pytest.raises(DataError, match=r"the data folder \S*notes\.txt is not a folder") as e:
            load_dataset(name, tmp_path / "notes.txt", download=download)
        assert "missing" not in str(e.value) and "Errno" not in str(e.value)
    assert load_dataset("digits", tmp_path / "notes.txt").name == "digits"  # (reads no folder)
    (tmp_path / "mnist").write_text("x")  # the dataset's subfolder a file
    with pytest.raises(DataError, match=r"\S*mnist is not a folder \(a file, .*where train-images-idx3-ubyte is looked"):
        load_dataset("mnist", tmp_path, download=download)


@pytest.mark.parametrize("kind", ["folder", "fifo", "link to a device", "link to nothing"])
def test_something_other_than_a_file_in_a_data_files_place_is_named_not_called_missing(tmp_path, kind):
    """A folder, a pipe or a link to a device or to nothing where a dataset's file belongs: named
    as not a regular file (it was "missing data file ... put it in" the folder that holds it, and
    with downloads on, the download was kept out by it and then refused)."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    there = folder / "train-images-idx3-ubyte.gz"
    if kind == "folder":
        there.mkdir()
    elif kind == "fifo":
        os.mkfifo(there)
    else:
        there.symlink_to("/dev/zero" if kind == "link to a device" else tmp_path / "gone")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: not a regular file") as e:
        load_dataset("mnist", tmp_path, download=True)
    assert "missing" not in str(e.value)
    there.rename(folder / "frey_rawface.mat")  # (Frey's own loader; no download: it would go to the network)
    with pytest.raises(DataError, match="frey_rawface.mat: not a regular file") as e:
        load_dataset("frey-faces", folder, download=False)
    assert "missing" not in str(e.value)


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load_dataset("nope")


def test_digits_is_embedded():
    d = load_dataset("digits")
    assert [len(d.train), len(d.valid), len(d.test)] == [1197, 300, 300]
    assert d.num_levels == 17 and int(d.train.x.max()) == 16
    assert not set(d.test.y.tolist()) - set(range(10))


@pytest.fixture
def http_file(tmp_path):
    """Serve one file over HTTP on the loopback interface."""
    payload = b"canonical data file\n" * 100
    root = tmp_path / "served"
    root.mkdir()
    (root / "file.bin").write_bytes(payload)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/file.bin", payload
    server.shutdown()
    server.server_close()


def test_download_checks_the_checksum_and_is_atomic(tmp_path, http_file):
    url, payload = http_file
    dest = tmp_path / "out" / "file.bin"
    download(url, dest, hashlib.sha256(payload).hexdigest())
    assert dest.read_bytes() == payload
    bad = tmp_path / "out" / "bad.bin"
    with pytest.raises(DataError, match="expected"):
        download(url, bad, "0" * 64)
    assert not bad.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["file.bin"]  # no partial files
    with pytest.raises(DataError, match="could not download"):
        download(url.replace("file.bin", "missing.bin"), tmp_path / "out" / "m.bin", "0" * 64)


def test_dynamic_binarization_is_fresh_and_unbiased():
    x = torch.full((20000, 1, 2, 2), 8, dtype=torch.uint8)  # 8/16 = 0.5
    t = DataTransform("dynamic-binarize", 17)
    g = torch.Generator().manual_seed(0)
    a, b = t(x, g), t(x, g)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(a, b)
    assert a.mean().item() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("kind", ["dynamic-binarize", "dequantize"])
def test_held_out_data_are_transformed_with_the_one_fixed_noise(kind):
    """``held_out``: the noise of VALID_SEED (what validation and dgm eval use), the same on each
    call, where a plain call draws new noise."""
    x = torch.randint(0, 17, (500, 1, 2, 2), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    t = DataTransform(kind, 17)
    a = t.held_out(x)
    assert torch.equal(a, t.held_out(x)) and torch.equal(a, t(x, torch.Generator().manual_seed(VALID_SEED)))
    assert not torch.equal(a, t(x, torch.Generator().manual_seed(VALID_SEED + 1))) and not torch.equal(a, t(x))
    assert VALID_SEED == 1234  # (what every earlier run's validation and evaluation numbers were made with)


@pytest.mark.parametrize("kind", ["binary", "dynamic-binarize", "dequantize", "scale", "integers", "continuous"])
def test_a_transform_refuses_a_generator_that_is_no_torch_generator(kind):
    """An int or a NumPy Generator given as the generator was ignored by the transforms that draw
    nothing (binary, scale, integers, continuous; mutation at rate 0), and failed inside torch's
    bernoulli or rand in the others: each refuses it by its name."""
    from dgmkit.data.mutation import mutate

    x = torch.randint(0, 2, (3, 1, 2, 2), dtype=torch.uint8)
    t = DataTransform(kind, 2)
    for bad, given in (
        (5, r"5; torch\.Generator\(\)\.manual_seed\(5\) is one seeded with it"),
        (np.random.default_rng(0), "a numpy Generator"),
    ):
        with pytest.raises(TypeError, match=rf"^generator must be a torch\.Generator or None, got {given}$"):
            t(x, bad)
        with pytest.raises(TypeError, match=r"^generator must be a torch\.Generator or None"):
            mutate(x, 0.0, 2, bad)
    assert torch.equal(t(x, torch.Generator().manual_seed(0)), t(x, torch.Generator().manual_seed(0)))
    assert t(x).shape == x.shape and torch.equal(mutate(x, 0.0, 2, torch.Generator()), x)


def test_dequantization_stays_inside_each_bin():
    x = torch.arange(256, dtype=torch.uint8).repeat(50)
    y = DataTransform("dequantize", 256)(x, torch.Generator().manual_seed(0))
    assert ((y * 256).floor().long() == x.long()).all()
    assert DataTransform("dequantize", 256).log_volume == pytest.approx(np.log(256))


@pytest.mark.parametrize("kind", ["binary", "dynamic-binarize", "dequantize", "scale", "integers", "continuous"])
def test_a_transform_declares_the_interval_its_values_lie_in(kind):
    """What a density's window is clipped to (dgm density): every level's value inside, the ends reached."""
    levels = 2 if kind == "binary" else 5
    x = torch.arange(levels, dtype=torch.uint8).repeat(200)
    y = DataTransform(kind, levels)(x, torch.Generator().manual_seed(0)).double()
    got = DataTransform(kind, levels).value_range
    if kind == "continuous":
        assert got is None
        return
    lo, hi = got
    assert lo <= y.min() and y.max() <= hi
    assert y.min() - lo < 0.05 and hi - y.max() < 0.05  # (dequantized: (k + u) / L comes near both ends)


def test_the_levels_of_a_large_array_are_checked_in_parts_and_all_of_them():
    """The check of the stored levels looks at a large x in parts (its copies of all of x at once
    held gigabytes): a bad value in a later part, or a fraction, is still found and said of all x."""
    x = torch.zeros(3 * (1 << 22) + 5)
    x[5] = 17.0  # in the first part of four
    with pytest.raises(DataError, match="integer levels 0..16; got .*17"):
        DataTransform("integers", 17)(x)
    x[5], x[-1], x[(1 << 22) + 3] = 0.0, float("nan"), 0.5
    with pytest.raises(DataError, match="integer levels 0..16; got"):
        DataTransform("scale", 17)(x)
    x[(1 << 22) + 3] = 16.0
    assert DataTransform("scale", 17)(x)[(1 << 22) + 3] == 1.0 and torch.isnan(DataTransform("scale", 17)(x)[-1])


def test_scaling_to_the_unit_interval():
    x = torch.tensor([0, 8, 16], dtype=torch.uint8)
    assert DataTransform("scale", 17)(x).tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(DataError, match="unknown data transform"):
        DataTransform("rescale", 17)


def test_a_transform_is_chosen_for_a_dataset_and_anything_else_is_refused_by_what_it_is():
    """A split of the dataset, the arguments swapped or None reached ``dataset.columns``: an
    AttributeError ("'Split' object has no attribute 'columns'")."""
    from dgmkit.data.transforms import density_transform

    data = from_array(np.random.default_rng(0).integers(0, 2, (50, 16)).astype(np.float32), name="b")
    chosen = "a data transform is chosen for a dgmkit Dataset"
    for call, what in (
        (lambda: make_transform("bernoulli", data.train), r"got Split \(its splits' levels are the Dataset's"),
        (lambda: make_transform(data, "bernoulli"), "got 'bernoulli'"),
        (lambda: make_transform("bernoulli", None), "got NoneType"),
        (lambda: density_transform("digits"), "got 'digits'"),
    ):
        with pytest.raises(DataError, match=rf"^{chosen} \(dgmkit\.data\.load_dataset\(name\)\), {what}"):
            call()


def test_make_transform_choices_and_errors():
    ints = from_array(np.random.default_rng(0).integers(0, 256, (50, 4, 4)).astype(np.uint8), name="u8")
    binary = from_array(np.random.default_rng(0).integers(0, 2, (50, 16)).astype(np.float32), name="b")
    cont = from_array(np.random.default_rng(0).random((50, 16)), name="c")
    assert binary.num_levels == 2 and ints.num_levels == 256 and cont.num_levels is None
    assert make_transform("bernoulli", binary).kind == "binary"
    with pytest.raises(DataError, match="non-binary data"):
        make_transform("bernoulli", ints)
    assert make_transform("bernoulli", ints, binarize="dynamic").kind == "dynamic-binarize"
    assert make_transform("gaussian", ints).kind == "dequantize"
    assert make_transform("gaussian", cont).kind == "continuous"
    assert make_transform("categorical", ints).kind == "integers"
    with pytest.raises(DataError, match="integer pixel data"):
        make_transform("logistic", cont)
    with pytest.raises(DataError, match="'beta': the transforms are those of bernoulli, gaussian, student-t, categorical"):
        make_transform("beta", cont)  # a head of one's own: the message says which transform to take
    with pytest.raises(DataError, match="bernoulli"):
        make_transform("bernoulli", cont)
    with pytest.raises(DataError, match="binarize must be auto, dynamic or none, got 'always'"):
        make_transform("bernoulli", ints, binarize="always")


def test_from_array_splits_and_rejects_bad_input(tmp_path):
    d = from_array(np.arange(100, dtype=np.uint8)[:, None, None].repeat(8, 1).repeat(8, 2))
    assert [len(d.train), len(d.valid), len(d.test)] == [80, 10, 10] and d.event_shape == (1, 8, 8)
    # each input's row of the array, through any subset of a split
    rows = torch.cat([d.train.rows, d.valid.rows, d.test.rows])
    assert torch.equal(rows.sort()[0], torch.arange(100)) and torch.equal(d.test.x[:, 0, 0, 0].long(), d.test.rows)
    assert torch.equal(d.test.subset(torch.tensor([3, 1])).rows, d.test.rows[[3, 1]])
    with pytest.raises(DataError, match="need one row index"):
        Split(torch.zeros(3, 1, 2, 2), rows=torch.arange(2))
    with pytest.raises(DataError, match="expected images shaped"):
        from_array(np.zeros(5))
    with pytest.raises(DataError, match="9 rows .* at least 10 are needed"):
        from_array(np.zeros((9, 5)))
    with pytest.raises(DataError, match=r"channels-last images \(N, H, W, C\).*numpy.transpose\(x, \(0, 3, 1, 2\)\)"):
        from_array(np.zeros((20, 12, 12, 3), np.uint8))
    assert from_array(np.zeros((20, 3, 12, 12), np.uint8)).event_shape == (3, 12, 12)  # (N, C, H, W) as it is
    assert from_array(np.zeros((20, 2, 4, 4), np.uint8)).event_shape == (2, 4, 4)  # small images: no guess
    assert from_array(np.zeros((20, 12, 12, 3), np.uint8), shaped=True).event_shape == (12, 12, 3)  # --image-shape
    with pytest.raises(DataError, match="NaN"):
        from_array(np.full((20, 3), np.nan))
    np.save(tmp_path / "a.npy", np.ones((20, 4)))
    assert read_array(tmp_path / "a.npy").shape == (20, 4)
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(str(tmp_path / "junk.npy"))


@pytest.mark.parametrize(
    "name, options, problem",
    [
        ("digits", dict(schema="s.json"), "--schema applies only to .csv and .parquet files, not to the dataset 'digits'"),
        ("digits", dict(image_shape=[8, 8]), "--image-shape applies only to data files; the dataset 'digits' knows"),
        (
            "x.npy",
            dict(schema="s.json"),
            "--schema describes a table's columns: it applies to .csv and .parquet files, not x",
        ),
        ("t.csv", dict(key="x"), r"--data-key and --image-shape do not apply to a table \(t.csv\)"),
        ("t.csv", dict(image_shape=[1, 2]), r"--data-key and --image-shape do not apply to a table \(t.csv\)"),
        ("x.npy", dict(image_shape=[12]), r"--image-shape takes H W or C H W, positive whole numbers; got \[12\]"),
        ("x.npy", dict(image_shape=[0, 12]), r"--image-shape takes H W or C H W, positive whole numbers; got \[0, 12\]"),
        ("~no-such-user-dgmkit/x.npy", {}, "no such data file: ~no-such-user-dgmkit/x.npy"),
    ],
)
def test_options_that_do_not_apply_to_the_data_are_refused(tmp_path, monkeypatch, name, options, problem):
    monkeypatch.chdir(tmp_path)
    np.save("x.npy", np.zeros((20, 12), np.uint8))
    Path("t.csv").write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(DataError, match=problem):
        load_dataset(name, **options)


def test_from_array_refuses_ragged_data_or_labels_and_reads_bool_labels():
    with pytest.raises(DataError, match="the data is not an array of numbers"):
        from_array([[1, 2], [3]] * 10)
    x = np.zeros((20, 4), np.uint8)
    with pytest.raises(DataError, match="the labels are not an array of numbers"):
        from_array(x, [[1, 2], [3]] * 10)
    d = from_array(x, np.arange(20) % 2 == 1)
    labels = torch.cat([d.train.y, d.valid.y, d.test.y])
    assert labels.dtype == torch.int64 and sorted(labels.tolist()) == [0] * 10 + [1] * 10


def test_splits_and_datasets_refuse_what_they_cannot_hold():
    from dgmkit.data import Dataset

    x = torch.zeros(4, 1, 2, 2)
    ok = Split(x)
    for make, problem in [
        (lambda: Split(torch.tensor(1.0)), r"a split needs a batch of images, got a tensor of shape \(\)"),
        (lambda: Split(x, torch.zeros(4)), "labels must be integers, not torch.float32"),
        (
            lambda: Dataset("d", ok, ok, Split(torch.zeros(4, 1, 3, 3)), None),
            r"different shapes \[\(1, 2, 2\), \(1, 3, 3\)\]",
        ),
        (lambda: Dataset("d", ok, ok, ok, None, factor_names=("a",)), "1 factor names for 0 factor sizes"),
        (lambda: Dataset("d", ok, ok, ok, None, ("a",), (2,)), "needs 1 factor indices"),
        (lambda: load_dataset("digits").split("validation"), "unknown split 'validation'; choose train, valid or test"),
    ]:
        with pytest.raises(DataError, match=problem):
            make()


def test_the_checkerboard_is_uniform_on_its_eight_black_squares():
    x = load_dataset("checkerboard").train.x.reshape(-1, 2)
    assert x.shape == (20000, 2) and bool(((x >= -2) & (x < 2)).all())
    col, row = (x + 2).floor().long().unbind(1)
    assert bool(((col + row) % 2 == 0).all())  # the black squares only
    counts = torch.bincount(col * 4 + row, minlength=16)[[0, 2, 5, 7, 8, 10, 13, 15]]
    assert (counts - 2500).abs().max() < 200  # 2500 each (a standard deviation of 47)


def test_generated_data_are_identified_by_their_definition_not_their_last_bits(tmp_path, monkeypatch):
    """Another CPU or library build may move a generated float by one ulp: the run must still
    recognise its two moons (it once refused them as "other data"); an older run that pinned
    them by their content digest is still recognised; data read from files keep content digests."""
    import dataclasses

    from dgmkit.cli.common import run_data
    from dgmkit.cli.main import main
    from dgmkit.config import load_run
    from dgmkit.data import Dataset, toy2d

    moons = load_dataset("two-moons")
    with pytest.raises(DataError, match=r"no 2-D toy dataset named 'moons'; choose from \["):  # (was a KeyError)
        toy2d.toy_2d("moons")
    bumped = toy2d.toy_2d("two-moons")
    one_ulp = torch.nextafter(bumped.train.x, torch.tensor(9.0))
    bumped = dataclasses.replace(bumped, train=dataclasses.replace(bumped.train, x=one_ulp))
    assert bumped.content_digest() != moons.content_digest() and bumped.fingerprint() == moons.fingerprint()
    assert load_dataset("rings").fingerprint() != moons.fingerprint()
    assert load_dataset("sprites").fingerprint() != load_dataset("sprites-64").fingerprint()
    digits = load_dataset("digits")
    assert digits.generator is None and digits.fingerprint() == digits.content_digest()

    out = tmp_path / "moons"
    assert main(["train", "--dataset", "two-moons", "--model", "flow", "--flow", "realnvp", "--flow-layers", "2",
                 "--hidden", "8", "--epochs", "1", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    original = toy2d.TOY_2D["two-moons"]
    monkeypatch.setitem(toy2d.TOY_2D, "two-moons", lambda n, g: torch.nextafter(original(n, g), torch.tensor(9.0)))
    assert run_data(load_run(out)).fingerprint() == moons.fingerprint()  # one ulp off: the same data
    monkeypatch.undo()
    old = tmp_path / "old"  # a run of an older dgmkit, which pinned generated data by their content digest
    monkeypatch.setattr(Dataset, "fingerprint", Dataset.content_digest)
    assert main(["train", "--dataset", "two-moons", "--model", "flow", "--flow", "realnvp", "--flow-layers", "2",
                 "--hidden", "8", "--epochs", "1", "--out", str(old), "--quiet"]) == 0  # fmt: skip
    monkeypatch.undo()
    assert json.loads((old / "config.json").read_text())["data"]["sha256"] == moons.content_digest()
    run_data(load_run(old))
    assert main(["train", "--resume", "--out", str(old), "--epochs", "2", "--quiet"]) == 0
    assert json.loads((old / "config.json").read_text())["data"]["sha256"] == moons.content_digest()
    assert main(["eval", str(old), "--split", "valid"]) == 0


@pytest.mark.parametrize("kind", ["binary", "dynamic-binarize", "dequantize", "scale", "integers"])
def test_a_transform_of_integer_data_refuses_values_that_are_not_its_levels(kind):
    """Images already scaled to [0, 1], or values past the top level, would be scored as other
    data; NaN (missing) entries and the levels themselves pass."""
    t = DataTransform(kind, 2 if kind == "binary" else 17)
    top = 1 if kind == "binary" else 16
    ok = torch.tensor([[0.0, float(top), float("nan")]])
    assert t(ok).shape == ok.shape
    assert t(torch.full((2, 3), float("nan"))).isnan().all()  # nothing observed: nothing to check, still missing
    assert t(torch.tensor([[0, top]], dtype=torch.uint8)).shape == (1, 2)
    for bad, needle in [
        (torch.tensor([[0.0, 0.5]]), "not all whole numbers"),
        (torch.tensor([[0, top + 1]]), f"integer levels 0..{top}"),
        (torch.tensor([[-1, 0]]), "values in [-1"),
        (np.zeros((1, 2)), "takes the data as a torch tensor, got ndarray"),  # (was 'str' has no attribute 'type')
    ]:
        with pytest.raises(DataError, match=re.escape(needle)):
            t(bad)


def test_continuous_data_for_a_bernoulli_likelihood_point_to_densities_and_say_what_binarize_does():
    cont = from_array(np.random.default_rng(0).random((20, 4)).astype(np.float32))
    with pytest.raises(DataError, match=r"--likelihood gaussian \(or student-t\) in the VAE families, or --model flow"):
        make_transform("bernoulli", cont)
    with pytest.raises(DataError, match="--binarize dynamic draws binary pixels from integer levels"):
        make_transform("bernoulli", cont, "dynamic")


def test_dequantization_noise_is_uniform_within_each_bin():
    y = DataTransform("dequantize", 4)(torch.full((20_000,), 2, dtype=torch.long), torch.Generator().manual_seed(0))
    u = y.double() * 4 - 2  # the noise added to the level
    assert ((u >= 0) & (u < 1)).all()
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.004  # stderrs 0.002, 0.0005


def test_a_dataset_prints_as_its_sizes_and_shape_not_its_tensors():
    digits = load_dataset("digits")
    assert repr(digits) == "Dataset('digits': train 1197, valid 300, test 300 of (1, 8, 8), 17 levels, labelled)"
    assert repr(digits.test) == "Split(x: torch.uint8 (300, 1, 8, 8), y: torch.int64 (300,))"


@pytest.mark.parametrize("name", ["iris", "wine"])
def test_a_bundled_table_is_standardized_and_its_columns_give_back_the_raw_values(name):
    """Every column at mean 0 and standard deviation 1 over all rows, and the columns' recorded
    mean and scale give scikit-learn's values back (a scale off by anything trained every table
    run on other data, and no test saw it)."""
    import sklearn.datasets

    d = load_dataset(name)
    x = torch.cat([s.x for s in (d.train, d.valid, d.test)]).double().flatten(1)
    assert x.mean(0).abs().max() < 1e-5
    assert x.std(0, unbiased=False).sub(1).abs().max() < 1e-4
    raw = getattr(sklearn.datasets, f"load_{name}")().data
    mean = torch.tensor([c.mean for c in d.columns], dtype=torch.float64)
    std = torch.tensor([c.std for c in d.columns], dtype=torch.float64)
    np.testing.assert_allclose(np.sort((x * std + mean).numpy(), axis=0), np.sort(raw, axis=0), atol=1e-4)


def test_digits_4x4_is_the_pooled_digits_on_from_half_the_range():
    """digits-4x4: the 8x8 digits pooled 2x2, a pixel on where the pooled value is >= 8 of 0..16
    (the boundary occurs in the data)."""
    d, small = load_dataset("digits"), load_dataset("digits-4x4")
    pooled = torch.nn.functional.avg_pool2d(d.test.x.float(), 2)
    assert (pooled == 8).any()
    assert torch.equal(small.test.x, (pooled >= 8).to(torch.uint8))


def test_load_dataset_refuses_arguments_of_another_kind_by_name(tmp_path):
    """From Python: a name of None was an AttributeError of ``.lower()``, data_dir=3 pathlib's
    TypeError, data_dir="" the default folder, and an image shape of (2.5, 4) was read as (2, 4)."""
    flat = tmp_path / "flat.npy"
    np.save(flat, np.random.default_rng(0).random((40, 12)))
    for args, needle in (
        (dict(name=None), "a dataset is named by a string (a name, or a data file's path), got None"),
        (dict(name=3), "got 3"),
        (dict(name="digits", data_dir=3), "data_dir names a folder by its path, got 3"),
        (dict(name="digits", data_dir=""), "data_dir is empty"),
        (dict(name=str(flat), image_shape=(2.5, 4)), "positive whole numbers; got (2.5, 4)"),
        (dict(name=str(flat), image_shape="34"), "got '34'"),
        (dict(name=str(flat), image_shape=(True, 12)), "got (True, 12)"),
    ):
        with pytest.raises(DataError) as e:
            load_dataset(**args)
        assert needle in str(e.value)
    assert load_dataset(flat, image_shape=np.array([3, 4])).train.x.shape[1:] == (1, 3, 4)  # (a Path, NumPy sizes)
    x = np.random.default_rng(0).random((40, 4))
    for args, needle in ((dict(name=3), "a dataset's name is a non-empty string, got 3"), (dict(seed=-1), "seed must be")):
        with pytest.raises(DataError, match=needle):  # (from_array named a dataset 3, which a run record refuses)
            from_array(x, **args)


def test_whole_doubles_beyond_what_float32_holds_are_refused_as_integers_are():
    """Whole numbers beyond 2^24 as doubles (a MATLAB file's integers) passed and were merged by the
    float32 cast (20 distinct values 2^24-18..2^24+1 became 19, and 2^24 + 1, 2^24 + 2, ... pairwise
    equal), where the same values as int64 were refused; whole doubles that float32 keeps, and
    float32 data, stay accepted."""
    ints = np.arange(2**24 - 18, 2**24 + 2, dtype=np.int64).reshape(20, 1)
    for x in (ints, ints.astype(np.float64)):
        with pytest.raises(DataError, match="integers of magnitude up to 16777217, beyond 2\\^24"):
            from_array(x)
    kept = (np.arange(20, dtype=np.float64) * 2 + 2**24).reshape(20, 1)  # (even ones: float32 holds them)
    assert from_array(kept).num_levels is None
    assert from_array(ints.astype(np.float32)).num_levels is None  # (already float32: nothing changes)
    assert from_array(ints.astype(np.float64) + 0.5).num_levels is None  # (not whole: continuous values)
