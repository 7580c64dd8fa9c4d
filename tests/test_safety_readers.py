"""The data readers against hostile files: any bytes or header value either loads to a valid
array or raises DataError (one line, naming the file), never another exception, never an
allocation beyond what the file's real size justifies, never a long hang."""

import gzip
import io
import json
import struct
import time
import tracemalloc
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dgmkit.data import Dataset, Split, from_array, load_dataset
from dgmkit.data.download import download
from dgmkit.data.formats import MAX_BYTES_ENV, max_data_bytes, open_maybe_gzip, read_amat, read_array, read_arrays, read_idx
from dgmkit.data.matlab import read_mat
from dgmkit.data.table import read_table
from dgmkit.errors import DataError

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MB = 1 << 20


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile")


# ------------------------------------------------------------------------------------ helpers


def guarded(read, path: Path, data_size: int | None = None):
    """``read(path)``: the array it returns, or None after a DataError that names the file in
    one line. Any other exception propagates (and fails the test). The peak of traced
    allocations stays below 10 times the data's size (the file's, or the decompressed size
    when that is known to be larger) plus 1 MB, and the call returns within seconds."""
    size = max(path.stat().st_size, data_size or 0)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        out = read(path)
    except DataError as e:
        msg = str(e)
        assert "\n" not in msg and path.name in msg, msg
        out = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 5, "a reader took too long"
    assert peak < 10 * size + MB, f"peak allocation {peak} for {size} bytes of data"
    return out


def check_plain_array(arr) -> None:
    """A valid result: a numeric array with data in every dimension."""
    assert isinstance(arr, np.ndarray)
    assert arr.dtype.kind in "biuf" and arr.dtype.isnative
    assert 0 not in arr.shape


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def npy_with_header(header: str, payload: bytes, version: int = 1) -> bytes:
    text = header.encode("latin1", "replace")
    text += b" " * ((-len(text) - 11) % 64) + b"\n"
    size = struct.pack("<H", len(text)) if version == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes([version, 0]) + size + text + payload


def npz_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(dtype).tobytes()


def deflated_zeros(prefix: bytes, megabytes: int) -> bytes:
    """A raw deflate stream of ``prefix`` and ``megabytes`` MiB of zeros, built without ever
    holding the zeros: after a full flush, identical input compresses to identical bytes."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(MB)) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(bytes(MB)) + c.flush(zlib.Z_FULL_FLUSH) == block
    return head + block * megabytes + c.flush()


def zeros_crc(prefix: bytes, megabytes: int) -> int:
    crc = zlib.crc32(prefix)
    zeros = bytes(MB)
    for _ in range(megabytes):
        crc = zlib.crc32(zeros, crc)
    return crc


def gzip_wrap(raw_deflate: bytes, crc: int, size: int) -> bytes:
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + raw_deflate + struct.pack("<II", crc, size & 0xFFFFFFFF)


def zip_with_deflated_member(name: bytes, raw_deflate: bytes, size: int, crc: int, method: int = 8, flags: int = 0) -> bytes:
    """A one-member zip file (no zip64: sizes below 4 GiB) around a ready deflate stream (or,
    with ``method`` 0, stored bytes), its declared size, CRC and flags as given."""
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, method, 0, 0x21, crc, len(raw_deflate), size, len(name), 0)
    fields = (20, 20, flags, method, 0, 0x21, crc, len(raw_deflate), size, len(name), 0, 0, 0, 0, 0, 0)
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, *fields)
    offset = len(local) + len(name) + len(raw_deflate)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central) + len(name), offset, 0)
    return local + name + raw_deflate + central + name + end


BASE = np.arange(6, dtype=np.float64).reshape(2, 3)  # 48 bytes of payload
DESCRS = ["<f8", "<f4", "|u1", "|b1", "<i8", ">i4", "<u2", "<f2", "<c16", "<c8", "<M8[ns]", "<m8[s]", "|O", "|S3"]
DESCRS += ["<U2", "|V8", "<f16", "f8", "<q", "", "<i4,<i4", "<f8 "]
SHAPE_VALUES = [0, 1, 2, 3, 4, 6, 12, 24, 48, -1, 2**31, 2**32, 2**40, 2**63, 2**64, 10**30]

descrs = st.one_of(st.sampled_from(DESCRS), st.text(max_size=8))
shapes = st.one_of(
    st.lists(st.one_of(st.sampled_from(SHAPE_VALUES), st.integers(0, 100)), max_size=5).map(tuple),
    st.sampled_from(["6", "(6)", "[2, 3]", "(2, 3", "(-0,)", "(2., 3)", "(True,)", "None", "(1" + "0" * 5000 + ",)"]),
)
fortrans = st.sampled_from([True, False, "None", "0", "1", "'False'"])


@st.composite
def npy_headers(draw) -> str:
    descr, shape, fortran = draw(descrs), draw(shapes), draw(fortrans)
    entries = [f"'descr': {descr!r}", f"'fortran_order': {fortran}", f"'shape': {shape}"]
    keep = draw(st.lists(st.sampled_from(entries), min_size=0, max_size=4, unique=False)) if draw(st.booleans()) else entries
    header = "{" + ", ".join(keep) + ", }"
    if draw(st.booleans()):  # one character changed anywhere
        i = draw(st.integers(0, len(header) - 1))
        header = header[:i] + draw(st.characters(codec="latin-1")) + header[i + 1 :]
    return header


payloads = st.one_of(st.just(BASE.tobytes()), st.binary(max_size=64))


# ------------------------------------------------------------------------------- .npy / .npz


@st.composite
def npy_any_payload(draw) -> bytes:
    """Any bytes under a well-formed header of any dtype, with a shape that fits them."""
    descr = draw(st.sampled_from(["<f8", "|u1", "|b1", ">i2", "<f2", "<c8", "<M8[s]", "<m8[ms]", "|S2", "<U1", "|V4"]))
    payload = draw(st.binary(max_size=64))
    itemsize = np.dtype(descr).itemsize
    shape = (len(payload) // itemsize,) if draw(st.booleans()) else (len(payload) // itemsize // 2, 2)
    return npy_with_header(f"{{'descr': {descr!r}, 'fortran_order': {draw(st.booleans())}, 'shape': {shape}, }}", payload)


@FAST
@given(data=st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(lambda b: b"\x93NUMPY" + b), npy_any_payload()))
def test_npy_arbitrary_bytes_load_or_dataerror(work, data):
    path = work / "any.npy"
    path.write_bytes(data)
    out = guarded(read_array, path)
    if out is not None:
        check_plain_array(out)
        assert out.nbytes <= len(data)


@FAST
@given(header=npy_headers(), payload=payloads, version=st.sampled_from([1, 2, 3]))
def test_npy_mutated_header_loads_or_dataerror(work, header, payload, version):
    path = work / "mutated.npy"
    data = npy_with_header(header, payload, version)
    path.write_bytes(data)
    out = guarded(read_array, path)
    if out is not None:
        check_plain_array(out)
        assert out.nbytes == len(payload)


@FAST
@given(header=npy_headers(), payload=payloads, deflate=st.booleans(), labels=st.booleans())
def test_npz_member_with_mutated_header_loads_or_dataerror(work, header, payload, deflate, labels):
    path = work / "mutated.npz"
    members = {"x.npy": npy_with_header(header, payload)}
    if labels:
        members["y.npy"] = npy_with_header(header, payload)
    path.write_bytes(npz_bytes(members, zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED))
    out = guarded(lambda p: load_dataset(str(p)), path, data_size=2 * len(payload) + 1000)
    if out is not None:
        assert isinstance(out, Dataset)


VALID_NPZ = npz_bytes({"x.npy": npy_bytes(BASE), "y.npy": npy_bytes(np.arange(2))}, zipfile.ZIP_DEFLATED)


@FAST
@given(
    data=st.one_of(
        st.binary(max_size=300).map(lambda b: b"PK\x03\x04" + b),
        st.lists(st.tuples(st.integers(0, len(VALID_NPZ) - 1), st.integers(0, 255)), min_size=1, max_size=4).map(
            lambda edits: bytes(b if i not in dict(edits) else dict(edits)[i] for i, b in enumerate(VALID_NPZ))
        ),
        st.integers(0, len(VALID_NPZ) - 1).map(lambda n: VALID_NPZ[:n]),
    )
)
def test_npz_arbitrary_or_corrupted_bytes_load_or_dataerror(work, data):
    path = work / "any.npz"
    path.write_bytes(data)
    out = guarded(read_array, path)
    if out is not None:
        check_plain_array(out)


@pytest.mark.parametrize(
    "arr, problem",
    [
        (np.ones((20, 3), np.complex128), "complex"),
        (np.zeros(20, "M8[s]"), "datetimes"),
        (np.zeros(20, "m8[s]"), "timedeltas"),
        (np.array(["a", "b"] * 10), "strings"),
        (np.zeros(20, [("a", "<f4"), ("b", "<i4")]), "structured"),
        (np.zeros((20, 0)), "no data"),
        (np.zeros((0, 20)), "no data"),
    ],
)
def test_npy_refuses_what_is_not_plain_numbers(tmp_path, arr, problem):
    path = tmp_path / "bad.npy"
    np.save(path, arr)
    with pytest.raises(DataError, match=problem):
        read_array(path)
    with pytest.raises(DataError, match=problem):
        load_dataset(str(path))


def test_npy_refuses_objects_without_unpickling(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}] * 20, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="Python objects"):
        read_array(path)


@pytest.mark.parametrize("shape", [(2**40,), (2**20, 2**20, 2**20), (2**63,), (2**64, 2**64)])
def test_npy_header_claiming_terabytes_allocates_nothing(tmp_path, shape):
    path = tmp_path / "huge.npy"
    path.write_bytes(npy_with_header(f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}", b"\0" * 64))
    assert guarded(read_array, path) is None
    with pytest.raises(DataError, match="bytes follow"):
        read_array(path)


def test_npy_fortran_order_and_byte_order_are_honoured(tmp_path):
    a = np.arange(12, dtype=">i4").reshape(3, 4)
    np.save(tmp_path / "f.npy", np.asfortranarray(a))
    got = read_array(tmp_path / "f.npy")
    assert np.array_equal(got, a) and got.dtype == np.int32 and got.dtype.isnative and got.flags.writeable
    np.save(tmp_path / "b.npy", np.array([True, False] * 10))
    assert read_array(tmp_path / "b.npy").dtype == np.bool_
    raw = bytearray((tmp_path / "b.npy").read_bytes())
    raw[-1] = 7  # a bool byte that is neither 0 nor 1
    (tmp_path / "b.npy").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="bool"):
        read_array(tmp_path / "b.npy")


def test_npz_corrupt_truncated_or_not_npy_members(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, x=np.ones((20, 3)))
    (tmp_path / "trunc.npz").write_bytes(good.read_bytes()[:-30])
    (tmp_path / "junk.npz").write_bytes(npz_bytes({"x.npy": b"not an array at all"}))
    (tmp_path / "crc.npz").write_bytes(good.read_bytes().replace(npy_bytes(np.ones((20, 3)))[-8:], b"\x01" * 8))
    for name in ("trunc.npz", "junk.npz", "crc.npz"):
        with pytest.raises(DataError, match=name):
            read_array(tmp_path / name)
        with pytest.raises(DataError):
            load_dataset(str(tmp_path / name))


def test_npz_zip_bomb_of_two_gigabytes_is_refused_unread(tmp_path):
    n = 2048  # MiB of zeros
    header = npy_with_header(f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({n * MB},), }}", b"")
    raw = deflated_zeros(header, n)
    path = tmp_path / "bomb.npz"
    path.write_bytes(zip_with_deflated_member(b"x.npy", raw, len(header) + n * MB, zeros_crc(header, n)))
    assert path.stat().st_size < 3 * MB
    assert guarded(read_array, path) is None
    with pytest.raises(DataError, match="limit"):
        read_array(path)


def test_npz_member_beyond_a_lowered_cap_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, x=np.zeros((8, MB), np.uint8))  # 8 MiB of zeros in a small file
    assert path.stat().st_size < 100_000
    monkeypatch.setenv(MAX_BYTES_ENV, str(MB))
    assert max_data_bytes() == MB
    assert guarded(read_array, path) is None
    with pytest.raises(DataError, match=MAX_BYTES_ENV):
        read_array(path)
    monkeypatch.setenv(MAX_BYTES_ENV, "lots")
    with pytest.raises(DataError, match=MAX_BYTES_ENV):
        read_array(path)


def test_npz_member_whose_header_lies_about_its_size(tmp_path):
    member = npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000,), }", BASE.tobytes())
    (tmp_path / "lie.npz").write_bytes(npz_bytes({"x.npy": member}, zipfile.ZIP_DEFLATED))
    assert guarded(read_array, tmp_path / "lie.npz") is None


def test_npz_data_key_selects_the_array(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "several.npz"
    np.savez(path, images=rng.random((30, 4)), other=rng.random((30, 2)), y=np.arange(30) % 3)
    d = load_dataset(str(path), key="images")
    assert d.event_shape == (1, 1, 4) and sum(len(s) for s in (d.train, d.valid, d.test)) == 30
    assert d.train.y is not None and d.train.y.dtype == torch.int64
    assert load_dataset(str(path), key="other").event_shape == (1, 1, 2)
    with pytest.raises(DataError, match="'images', 'other', 'y'"):
        load_dataset(str(path))  # no 'x' and several arrays: the error lists them
    with pytest.raises(DataError, match="no array named 'nope'.*'images'"):
        load_dataset(str(path), key="nope")
    np.save(tmp_path / "one.npy", rng.random((20, 4)))
    with pytest.raises(DataError, match="only to .npz"):
        load_dataset(str(tmp_path / "one.npy"), key="images")
    with pytest.raises(DataError, match="only to .npz"):
        load_dataset("digits", key="images")
    np.savez(tmp_path / "default.npz", x=rng.random((20, 4)), z=rng.random(3))
    assert load_dataset(str(tmp_path / "default.npz")).event_shape == (1, 1, 4)  # 'x' by default


@pytest.mark.parametrize("names", [("x.npy", "x.npy"), ("x.npy", "x")])
def test_npz_with_an_array_named_twice_is_refused(tmp_path, names):
    """NumPy takes the last of two members of one name (and ``x`` and ``x.npy`` are one name to
    it); which one the user meant is unclear, so neither is read (it was silently the first)."""
    path = tmp_path / "twice.npz"
    with zipfile.ZipFile(path, "w") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name
        for name, value in zip(names, (np.ones((20, 4)), np.zeros((20, 4)))):
            buf = io.BytesIO()
            np.save(buf, value)
            z.writestr(name, buf.getvalue())
    with pytest.raises(DataError, match="holds the array 'x' twice"):
        read_array(path)


HEADER = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }"


@pytest.mark.parametrize(
    "data, problem",
    [
        (npy_with_header(HEADER[: HEADER.index("3")], BASE.tobytes()), r"malformed header \(it ends early\)"),
        (npy_with_header(HEADER.replace("(2, 3)", "(2 3)"), BASE.tobytes()), "unexpected '3' in the shape"),
        (npy_with_header(HEADER.replace("'descr':", "'descr'"), BASE.tobytes()), "a key without ':'"),
        (npy_with_header(HEADER.replace("'<f8',", "'<f8'"), BASE.tobytes()), "unexpected \"'fortran_order'\""),
        (npy_with_header(HEADER + " {", BASE.tobytes()), "text after the dict"),
        (npy_with_header(HEADER.replace("'<f8'", "(8,)"), BASE.tobytes()), r"descr \(8,\) is not a string"),
        (npy_with_header(HEADER.replace("(2, 3)", "(-2, -3)"), BASE.tobytes()), "not a tuple of non-negative integers"),
        (npy_with_header(HEADER.replace("(2, 3)", "'6'"), BASE.tobytes()), "not a tuple of non-negative integers"),
        (npy_with_header(HEADER.replace("(2, 3)", "(2, 3" + ", 1" * 31 + ")"), BASE.tobytes()), "33 dimensions"),
        (b"\x93NUMPY\x01\x00\x05", "truncated header"),  # one of the two bytes of the header's length
        (b"\x93NUMPY\x01\x00" + struct.pack("<H", 100) + b"{'descr'", "truncated header"),
        (b"\x93NUMPY\x02\x00" + struct.pack("<I", 1 << 20) + b"{}", "the header claims 1048576 bytes"),
    ],
)
def test_npy_headers_that_numpy_would_not_write_are_refused_by_name(tmp_path, data, problem):
    path = tmp_path / "bad.npy"
    path.write_bytes(data)
    with pytest.raises(DataError, match=problem) as e:
        read_array(path)
    assert str(e.value).startswith(f"cannot read {path} as a NumPy array: ")


def test_npy_header_without_a_trailing_comma_reads_as_numpys_own(tmp_path):
    """A dict literal that ends without ", " (as NumPy 1.x wrote before 1.17's padding) is the same header."""
    (tmp_path / "plain.npy").write_bytes(npy_with_header(HEADER.replace(", }", "}"), BASE.tobytes()))
    assert np.array_equal(read_array(tmp_path / "plain.npy"), BASE)


def test_npy_every_plain_dtype_in_every_byte_order_reads_its_values(tmp_path):
    values = np.arange(6) % 2
    for body in ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"):
        for order in "<>|=":
            stored = values.astype(np.dtype(order + body))
            header = f"{{'descr': '{order}{body}', 'fortran_order': False, 'shape': (6,), }}"
            (tmp_path / "t.npy").write_bytes(npy_with_header(header, stored.tobytes()))
            got = read_array(tmp_path / "t.npy")
            assert got.dtype.isnative and got.dtype.kind == stored.dtype.kind and np.array_equal(got, values), (order, body)


def test_npz_of_one_array_not_named_x_is_read_by_default(tmp_path):
    np.savez(tmp_path / "one.npz", images=BASE)
    x, y = read_arrays(tmp_path / "one.npz")
    assert np.array_equal(x, BASE) and y is None


def test_npz_members_that_are_encrypted_otherwise_compressed_or_shorter_than_declared(tmp_path):
    member = npy_bytes(BASE)
    (tmp_path / "bz.npz").write_bytes(npz_bytes({"x.npy": member}, zipfile.ZIP_BZIP2))
    secret = zip_with_deflated_member(b"x.npy", member, len(member), zlib.crc32(member), method=0, flags=1)
    (tmp_path / "secret.npz").write_bytes(secret)
    cut = member[:-8]  # the zip's sizes and CRC say the whole member; its stored bytes stop 8 short (CRC of those)
    (tmp_path / "short.npz").write_bytes(zip_with_deflated_member(b"x.npy", cut, len(member), zlib.crc32(cut), method=0))
    for name, problem in (
        ("bz.npz", r"compression method 12 is not supported \(only stored or deflated\)"),
        ("secret.npz", "the member is encrypted"),
        ("short.npz", "truncated member \\(40 of 48 bytes\\)"),
    ):
        with pytest.raises(DataError, match=problem) as e:
            read_array(tmp_path / name)
        assert str(e.value).startswith(f"cannot read {tmp_path / name} (array 'x') as a NumPy array: ")


# ---------------------------------------------------------------------------------------- IDX

IDX_CODES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]
DIM_VALUES = [0, 1, 2, 3, 4, 6, 8, 12, 24, 28, 2**16, 2**31, 2**32 - 1]


@st.composite
def idx_files(draw) -> tuple[bytes, int]:
    """An IDX file (bytes) made from a valid one with header fields changed, and the size of
    its payload."""
    base = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    data = bytearray(idx_bytes(base))
    ndim = draw(st.one_of(st.just(3), st.integers(0, 255)))
    n = min(ndim, 6) if draw(st.booleans()) else draw(st.integers(0, 6))  # a header that ends early too
    dims = draw(st.lists(st.one_of(st.sampled_from(DIM_VALUES), st.integers(0, 2**32 - 1)), min_size=n, max_size=n))
    head = bytes([draw(st.sampled_from([0, 1])), 0, draw(st.one_of(st.sampled_from(IDX_CODES), st.integers(0, 255))), ndim])
    payload = draw(st.one_of(st.sampled_from([0, 1, 2, 4, 8, 24]), st.integers(0, 24)))
    if draw(st.booleans()):
        data = bytearray(head + struct.pack(f">{n}I", *dims) + bytes(data[16 : 16 + payload]))
    else:
        data[: len(head)] = head
        payload = 24
    return bytes(data), payload


@FAST
@given(data=st.binary(max_size=300), gz=st.booleans(), magic=st.booleans())
def test_idx_arbitrary_bytes_load_or_dataerror(work, data, gz, magic):
    data = (b"\x00\x00\x08\x03" if magic else b"") + data
    path = work / ("any.idx.gz" if gz else "any.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = guarded(read_idx, path, data_size=len(data))
    if out is not None:
        check_plain_array(out)


@FAST
@given(file=idx_files(), gz=st.booleans())
def test_idx_mutated_header_loads_or_dataerror(work, file, gz):
    data, payload = file
    path = work / ("mutated.idx.gz" if gz else "mutated.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = guarded(read_idx, path, data_size=len(data))
    if out is not None:
        check_plain_array(out)
        assert out.nbytes == payload and out.ndim == data[3] >= 1


IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@FAST
@given(code=st.sampled_from(sorted(IDX_DTYPES)), data=st.data(), gz=st.booleans())
def test_idx_reads_back_the_values_of_every_type_code_in_native_order(work, code, data, gz):
    """Values, shape and dtype of an IDX file written here by hand (big-endian, as the format
    says) come back exactly, in the machine's byte order, whether the file is gzipped or not."""
    shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5)
    arr = data.draw(hnp.arrays(np.dtype(IDX_DTYPES[code]), shapes))
    raw = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    path = work / ("values.idx.gz" if gz else "values.idx")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    out = read_idx(path)
    assert out.dtype.isnative and out.dtype == arr.dtype.newbyteorder("=") and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


@FAST
@given(data=st.binary(min_size=2, max_size=300))
def test_gzip_arbitrary_compressed_bytes_load_or_dataerror(work, data):
    path = work / "any.gz"
    path.write_bytes(b"\x1f\x8b" + data)
    guarded(open_maybe_gzip, path)
    guarded(read_idx, path)
    guarded(lambda p: read_amat(p, 3), path)


def test_idx_dims_whose_product_overflows_int64(tmp_path):
    path = tmp_path / "overflow.idx"
    path.write_bytes(bytes([0, 0, 0x08, 4]) + struct.pack(">4I", *[2**16] * 4))  # 2**64 bytes, 0 in int64
    with pytest.raises(DataError, match="bytes follow"):
        read_idx(path)
    path.write_bytes(bytes([0, 0, 0x0E, 3]) + struct.pack(">3I", *[2**32 - 1] * 3) + bytes(8))
    with pytest.raises(DataError, match="bytes follow"):
        read_idx(path)


@pytest.mark.parametrize("kind", ["idx", "npy"])
def test_a_plain_file_larger_than_its_header_declares_is_refused_before_it_is_read(tmp_path, kind):
    """A header that declares 6 bytes in front of 64 MiB (a sparse file: no disk used): refused
    from the file's size, with nothing of the rest read in (the whole file was read first, so a
    wrong file of many gigabytes named like a data file was read into memory to be refused)."""
    path = tmp_path / f"big.{kind}"
    arr = np.zeros(6, np.uint8).reshape(2, 3)
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, 2]) + struct.pack(">2I", 2, 3) if kind == "idx" else npy_bytes(arr)[:-6])
        f.truncate(64 * MB)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"\(6 bytes\) but \d+ bytes follow"):
            (read_idx if kind == "idx" else read_array)(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MB, peak


def test_idx_gzip_stream_is_read_only_as_far_as_the_header_declares(tmp_path):
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 1, 28, 28)
    n = 2048  # MiB of zeros behind a header that declares 784 bytes
    path = tmp_path / "bomb-idx3-ubyte.gz"
    path.write_bytes(gzip_wrap(deflated_zeros(header, n), 0, len(header) + n * MB))  # trailer never reached
    assert path.stat().st_size < 3 * MB
    assert guarded(read_idx, path) is None
    with pytest.raises(DataError, match="more than 784 bytes follow"):
        read_idx(path)


def test_idx_headers_declaring_no_data_or_more_than_the_cap_are_refused_unread(tmp_path, monkeypatch):
    (tmp_path / "empty-idx3-ubyte").write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 5, 0, 28) + bytes(100))
    with pytest.raises(
        DataError, match=r"empty-idx3-ubyte: IDX header declares the shape \(5, 0, 28\), which holds no data"
    ):
        read_idx(tmp_path / "empty-idx3-ubyte")
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 1000, 28, 28)  # 784000 bytes declared
    path = tmp_path / "big-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + bytes(1000)))
    monkeypatch.setenv(MAX_BYTES_ENV, "100000")
    assert guarded(read_idx, path) is None
    with pytest.raises(DataError, match=f"784000 bytes\\), more than the limit of 100000 bytes \\(set {MAX_BYTES_ENV}"):
        read_idx(path)


def test_gzip_bomb_stops_at_the_cap(tmp_path, monkeypatch):
    text = gzip.compress(b"0 " * (32 * MB))  # 64 MiB of text in a small file
    (tmp_path / "bomb.amat.gz").write_bytes(text)
    monkeypatch.setenv(MAX_BYTES_ENV, str(MB))
    for reader in (read_amat, open_maybe_gzip):
        assert guarded(reader, tmp_path / "bomb.amat.gz", data_size=MB) is None  # the cap is all it may use
        with pytest.raises(DataError, match="more than 1048576 bytes"):
            reader(tmp_path / "bomb.amat.gz")


def test_gzip_members_padding_truncation_and_trailing_garbage(tmp_path):
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    data = idx_bytes(arr)
    (tmp_path / "multi.gz").write_bytes(gzip.compress(data[:100]) + gzip.compress(data[100:]) + b"\0" * 8)
    assert np.array_equal(read_idx(tmp_path / "multi.gz"), arr)
    (tmp_path / "trunc.gz").write_bytes(gzip.compress(data)[:-5])
    with pytest.raises(DataError, match="truncated gzip"):
        read_idx(tmp_path / "trunc.gz")
    (tmp_path / "crc.gz").write_bytes(gzip.compress(data)[:-8] + b"\0" * 8)
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx(tmp_path / "crc.gz")
    (tmp_path / "tail.gz").write_bytes(gzip.compress(data) + b"garbage")
    with pytest.raises(DataError, match="after the end"):
        read_idx(tmp_path / "tail.gz")
    (tmp_path / "pad-tail.gz").write_bytes(gzip.compress(data) + b"\0" * 70000 + b"x" + b"\0" * 9)
    with pytest.raises(DataError, match="after the end"):  # zeros, then a byte: not padding to the end
        read_idx(tmp_path / "pad-tail.gz")
    # many members: the padding check once, not a scan of the rest per member (20000 took 5 s)
    empty = gzip.compress(b"", mtime=0)
    (tmp_path / "many.gz").write_bytes(gzip.compress(data) + empty * 20000 + b"\0" * 70000)
    assert np.array_equal(read_idx(tmp_path / "many.gz"), arr)


def mat_bytes(**kwargs) -> bytes:
    import scipy.io

    buf = io.BytesIO()
    arrays = {"x": np.arange(60.0).reshape(20, 3), "y": np.arange(20, dtype=np.uint8) % 3, "z": np.ones((2, 2), np.int16)}
    if kwargs.get("format") != "4":
        arrays.update(c=np.array([[1, "ab"]], dtype=object), s={"f": np.ones(2)})
    scipy.io.savemat(buf, arrays, **kwargs)
    return buf.getvalue()


MAT_FILES = [mat_bytes(), mat_bytes(do_compression=True), mat_bytes(format="4")]
MAT_WORDS = [b"\xff\xff\xff\xff", b"\x00\x00\x00\x80", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00", b"\x01\x00\x00\x00"]


@st.composite
def mutated_mat_files(draw) -> bytes:
    """A v5 (plain or compressed) or v4 .mat file of numbers, labels, a cell and a struct, with a
    few bytes or 32-bit words overwritten, bytes inserted, or its end cut off."""
    data = bytearray(draw(st.sampled_from(MAT_FILES)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["byte", "word", "insert", "cut"]))
        if kind == "byte" and i < len(data):
            data[i] = draw(st.integers(0, 255))
        elif kind == "word":
            data[i : i + 4] = draw(st.sampled_from(MAT_WORDS))
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[i:]
    return bytes(data)


@FAST
@given(data=mutated_mat_files(), key=st.sampled_from([None, "x", "y", "c", "s"]))
def test_mat_mutated_bytes_load_or_dataerror(work, data, key):
    path = work / "mutated.mat"
    path.write_bytes(data)
    out = guarded(lambda p: read_mat(p, key), path, data_size=max(map(len, MAT_FILES)))
    if out is not None:
        x, y = out
        check_plain_array(x)
        assert y is None or (isinstance(y, np.ndarray) and y.dtype.kind in "biuf")


@pytest.mark.parametrize("reader", [read_array, read_idx, read_amat, open_maybe_gzip, read_mat])
def test_a_path_that_is_no_readable_file_is_one_data_error_naming_it(tmp_path, reader):
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "folder").mkdir()
    for path, problem in (
        (tmp_path / "missing.npy", f"no such file or folder: {tmp_path / 'missing.npy'}"),
        (tmp_path / "folder", f"{tmp_path / 'folder'}: not a regular file"),
        (tmp_path / "file" / "x.npy", f"cannot read {tmp_path / 'file' / 'x.npy'}: a part of the path is not a folder"),
        (Path(f"{tmp_path}/a\0b.npy"), f"{tmp_path}/a\\x00b.npy: not a valid file name"),  # (os.open: ValueError)
    ):
        with pytest.raises(DataError) as e:
            reader(path)
        assert str(e.value) == problem


def write_mnist_folder(folder: Path, n_train: int, n_test: int = 7, **override) -> None:
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (n_train, 28, 28))),
        "train-labels-idx1-ubyte": idx_bytes(rng.integers(0, 10, n_train)),
        "t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (n_test, 28, 28))),
        "t10k-labels-idx1-ubyte": idx_bytes(rng.integers(0, 10, n_test)),
    }
    files.update(override)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def test_mnist_with_too_few_training_images_says_how_many(tmp_path):
    write_mnist_folder(tmp_path / "mnist", n_train=100)
    with pytest.raises(DataError, match=r"100 training images, but mnist needs more than 10000") as e:
        load_dataset("mnist", tmp_path, download=False)
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte") in str(e.value)


@pytest.mark.parametrize(
    "name, data, problem",
    [
        ("train-labels-idx1-ubyte", idx_bytes(np.full(10001, 12)), r"0\.\.9"),
        ("t10k-labels-idx1-ubyte", idx_bytes(np.full((7, 2), 1)), "one integer per image"),
        ("t10k-labels-idx1-ubyte", idx_bytes(np.arange(6) % 10), "7 images but .* 6 labels"),
        ("t10k-images-idx3-ubyte", idx_bytes(np.zeros((7, 28, 28)), 0x0C), "uint8"),
        ("t10k-images-idx3-ubyte", idx_bytes(np.zeros((7, 14, 56))), r"\(N, 28, 28\)"),
        ("t10k-labels-idx1-ubyte", idx_bytes(np.zeros(7), 0x0D), "integer"),
    ],
)
def test_mnist_like_files_are_checked_with_their_path(tmp_path, name, data, problem):
    # MNIST, not Fashion-MNIST: the real Fashion-MNIST files of the Debian package, if
    # installed, would be preferred to these (a copy whose content is the dataset's wins)
    folder = tmp_path / "mnist"
    write_mnist_folder(folder, n_train=10001, **{name: data})
    with pytest.raises(DataError, match=problem) as e:
        load_dataset("mnist", tmp_path, download=False)
    assert str(folder) in str(e.value)


# --------------------------------------------------------------------------------------- .amat

AMAT_ALPHABET = "0123456789 .-+eE\n\t\rnaifNAIF\x00\xff\xe9"


AMAT_TOKENS = ["0", "1", "255", "2.5", "-3", "1e3", "nan", "inf", "-inf", "1e999", "NaN", "x", "\xff", "1-2", "."]
amat_rows = st.lists(st.lists(st.sampled_from(AMAT_TOKENS), max_size=5), max_size=6)
amat_texts = st.one_of(
    st.text(alphabet=AMAT_ALPHABET, max_size=200),
    amat_rows.map(lambda rows: "".join(" ".join(r) + "\n" for r in rows)),
)


@FAST
@given(text=amat_texts, gz=st.booleans())
def test_amat_arbitrary_text_loads_or_dataerror(work, text, gz):
    data = text.encode("latin1")
    path = work / ("any.amat.gz" if gz else "any.amat")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = guarded(lambda p: read_amat(p, 3), path, data_size=len(data))
    if out is not None:
        check_plain_array(out)
        assert out.ndim == 2 and out.shape[1] == 3 and np.isfinite(out).all()
        assert len(out) == sum(1 for line in text.split("\n") if line.split())  # one row per non-blank line


AMAT_NUMBER_FORMS = {
    "repr": lambda v: repr(float(v)),
    "exponent": lambda v: f"{float(v):.8e}",
    "whole": lambda v: str(int(v)),
}


@FAST
@given(
    values=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6),
        elements=st.floats(-(2.0**100), 2.0**100, width=32, allow_subnormal=False),
    ),
    form=st.sampled_from(sorted(AMAT_NUMBER_FORMS)),
)
def test_amat_reads_back_each_number_as_python_reads_it(work, values, form):
    """Rows of numbers in any of the usual forms read back as float32 of what Python parses each
    one as; as uint8 exactly when every value is a whole number in 0..255."""
    if form == "whole":
        values = np.round(values).clip(-1e6, 1e6)
    text = "".join(" ".join(AMAT_NUMBER_FORMS[form](v) for v in row) + "\n" for row in values)
    path = work / "values.amat"
    path.write_text(text)
    out = read_amat(path, values.shape[1])
    expected = np.array([[np.float32(float(t)) for t in line.split()] for line in text.splitlines()], dtype=np.float32)
    np.testing.assert_array_equal(out.astype(np.float32), expected)
    whole_bytes = bool(expected.min() >= 0 and expected.max() <= 255 and (expected == np.round(expected)).all())
    assert out.dtype == (np.uint8 if whole_bytes else np.float32)


@FAST
@given(data=st.binary(max_size=300), gz=st.booleans())
def test_amat_arbitrary_bytes_load_or_dataerror(work, data, gz):
    path = work / ("bytes.amat.gz" if gz else "bytes.amat")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = guarded(lambda p: read_amat(p, 2), path, data_size=len(data))
    if out is not None:
        assert out.ndim == 2 and out.shape[1] == 2 and np.isfinite(out).all()


@pytest.mark.parametrize(
    "text, problem",
    [
        ("1 2 3\n4 5 nan\n", "finite"),
        ("1 2 3\ninf 5 6\n", "finite"),
        ("1 2 3\n4 5 1e999\n", "finite"),
        ("1 2 3 4\n5 6\n", "line 1 holds 4 values"),  # ragged rows whose total divides by 3
        ("1 2\n3 4 5 6\n", "line 1 holds 2 values"),
        ("1 2 3\n4 5 \xe9\n", "not a number"),
        ("1 2 3\n4-5 6 7\n", "not well-formed"),
    ],
)
def test_amat_refuses_non_finite_ragged_and_non_text(tmp_path, text, problem):
    path = tmp_path / "bad.amat"
    path.write_bytes(text.encode("latin1"))
    with pytest.raises(DataError, match=problem):
        read_amat(path, 3)


def test_amat_general_parser_keeps_lines_and_blank_lines(tmp_path):
    (tmp_path / "ok.amat").write_text("1 2 3\n\n  4.5\t5 -6  \r\n")
    got = read_amat(tmp_path / "ok.amat", 3)
    assert got.dtype == np.float32 and got.tolist() == [[1, 2, 3], [4.5, 5, -6]]


def test_amat_line_of_too_many_values_is_refused_at_the_first_block_it_overflows(tmp_path):
    """A line longer than a scanning block (256 KiB) that already holds more values than the
    columns: refused with its line number, before the rest is scanned."""
    path = tmp_path / "long.amat"
    path.write_bytes(b"1 2 3\n4 5 6\n" + b"7 " * 200_000 + b"\n")
    with pytest.raises(DataError, match=f"{path}: line 3 holds more than 3 values, expected 3 columns"):
        read_amat(path, 3)


def test_csv_row_of_a_million_cells_is_refused_before_it_is_split(tmp_path):
    """One line of 1.2 million two-letter cells (3.6 MB): split by the csv module it would be
    some 70 MB of Python strings (a 256 MB file, the most a table may be, 7.7 GB) before any cap
    counted them; its commas are counted as the line is handed over, and it is refused unsplit.
    A quoted cell's line breaks still keep the line numbers of the rows after it."""
    path = tmp_path / "wide.csv"
    path.write_bytes(b"a,b\n1,2\n" + b"ab," * 1_200_000 + b"ab\n")
    assert guarded(read_table, path) is None  # (a DataError, within 10 times the file's size)
    with pytest.raises(DataError, match=r"wide.csv: line 3 holds more than 1048576 commas"):
        read_table(path)
    ok = tmp_path / "quoted.csv"
    ok.write_text('a,b\n"x,\ny",1\n"x,\ny",2\n\nz,3\nz,q\n')
    with pytest.raises(DataError, match="line 8, column 'b' is numeric, but holds 'q'"):
        read_table(ok, schema=_schema(tmp_path, a="categorical", b="numeric"))


def test_csv_rows_of_one_cell_cost_no_second_list_nor_string_each(tmp_path):
    """A narrow table's rows cost most in what is kept beside their cells: a second (stripped) list
    of every row and a "line N" string of each took some 368 bytes a row at the peak, now some 270
    (the 2-letter cell, its row's list and its line number as 8 bytes), so that the cells cap
    bounds fewer bytes. Its messages still name the line."""
    rows = 20_000
    path = tmp_path / "narrow.csv"
    path.write_text("a\n" + "ab\n" * rows)
    tracemalloc.start()
    try:
        read_table(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 300 * rows, f"{peak / rows:.0f} bytes a row"
    path.write_text("a,b\n" + "x,1\n" * 30 + "x,1o\n" + "x,1\n")
    with pytest.raises(DataError, match="line 32, column 'b' is numeric, but holds '1o'"):
        read_table(path, schema=_schema(tmp_path, a="categorical", b="numeric"))


def _schema(folder: Path, **kinds: str) -> Path:
    path = folder / "schema.json"
    path.write_text(json.dumps({"columns": kinds}))
    return path


def test_binarized_mnist_file_checks_name_the_file(tmp_path):
    folder = tmp_path / "binarized_mnist"
    folder.mkdir()
    row = " ".join(["0"] * 783 + ["1"]) + "\n"
    for s in ("train", "valid", "test"):
        (folder / f"binarized_mnist_{s}.amat").write_text(row * 3)
    with pytest.raises(DataError, match="3 rows, expected 50000") as e:
        load_dataset("binarized-mnist", tmp_path, download=False)
    assert str(folder / "binarized_mnist_train.amat") in str(e.value)
    (folder / "binarized_mnist_train.amat").write_text(row.replace("1", "2") * 3)
    with pytest.raises(DataError, match="binary values") as e:
        load_dataset("binarized-mnist", tmp_path, download=False)
    assert str(folder / "binarized_mnist_train.amat") in str(e.value)


# --------------------------------------------------------------------------------- from_array


@pytest.mark.parametrize(
    "y, problem",
    [
        (np.full(20, np.nan), "NaN"),
        (np.zeros((20, 2)), "1-D"),
        (np.arange(20) - 2, "0\\.\\."),  # (-1 marks a hidden label: test_partly_labelled)
        (np.arange(20) + 0.5, "whole numbers"),
        (np.arange(19), "19 labels for 20 images"),
        (np.array(["a"] * 20), "integers"),
        (np.full(20, 1e30), "0\\.\\."),
    ],
)
def test_from_array_refuses_bad_labels(y, problem):
    with pytest.raises(DataError, match=problem):
        from_array(np.zeros((20, 4), np.uint8), y)


def test_label_range_is_checked_exactly_whatever_their_float_type():
    """MAX_LABEL (2**31 - 1) is 2**31 as float32 and inf as float16: compared in the labels' own
    type, float32 labels of 2**31 passed, and float16 ones warned of an overflow."""
    with pytest.raises(DataError, match="labels must lie in 0..2147483647, found 2147483648"):
        from_array(np.zeros((20, 4), np.uint8), np.full(20, 2**31, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = from_array(np.zeros((20, 4), np.uint8), np.full(20, 65504, np.float16))
    assert d.train.y.tolist() == [65504] * len(d.train)


def test_nan_and_2d_labels_in_an_npz_file(tmp_path):
    np.savez(tmp_path / "nan.npz", x=np.zeros((20, 4)), y=np.full(20, np.nan))
    np.savez(tmp_path / "two.npz", x=np.zeros((20, 4)), y=np.zeros((20, 2), np.int64))
    with pytest.raises(DataError, match="NaN"):
        load_dataset(str(tmp_path / "nan.npz"))
    with pytest.raises(DataError, match="1-D"):
        load_dataset(str(tmp_path / "two.npz"))
    np.savez(tmp_path / "ok.npz", x=np.zeros((20, 4)), y=(np.arange(20) % 3).astype(np.float32))
    d = load_dataset(str(tmp_path / "ok.npz"))
    assert d.train.y.dtype == torch.int64 and set(torch.cat([d.train.y, d.test.y]).tolist()) <= {0, 1, 2}


@pytest.mark.parametrize(
    "x, problem",
    [
        (np.zeros((20, 0)), "no values"),
        (np.zeros((20, 3, 0)), "no values"),
        (np.ones((20, 3), np.complex64), "real numbers"),
        (np.array([["a"] * 3] * 20), "real numbers"),
        (np.full((20, 3), np.inf), "holds inf"),
        (np.where(np.eye(20, 3) > 0, np.nan, 0.5), None),  # NaN marks missing entries: accepted
        (np.concatenate([np.full((1, 3), np.nan), np.zeros((19, 3))]), "1 row holds no observed value .*; leave it out$"),
        (np.concatenate([np.full((2, 3), np.nan), np.zeros((19, 3))]), "2 rows hold no observed value .*; leave them out$"),
        (np.full((20, 3), 1e300), "float32"),
        (np.full((20, 3), 1e-300), "below float32's smallest normal number"),  # (all 0 as float32: it read so silently)
        (np.linspace(-1e-39, 1e-39, 60).reshape(20, 3), "of magnitude at most 1e-39"),
        (np.zeros((9, 3)), "at least 10"),
    ],
)
def test_from_array_refuses_bad_images(x, problem):
    if problem is None:
        d = from_array(x)
        assert sum(int(s.x.isnan().sum()) for s in (d.train, d.valid, d.test)) == 3
        return
    with pytest.raises(DataError, match=problem):
        from_array(x)


def test_from_array_every_split_is_non_empty_and_bool_images_work():
    d = from_array(np.ones((10, 4), bool))
    assert min(len(d.train), len(d.valid), len(d.test)) >= 1 and d.num_levels == 2
    empty = Split(torch.zeros(0, 1, 2, 2))
    with pytest.raises(DataError, match="empty"):
        Dataset("d", Split(torch.zeros(3, 1, 2, 2)), empty, Split(torch.zeros(3, 1, 2, 2)), num_levels=None)
    with pytest.raises(DataError, match="one label each"):
        Split(torch.zeros(3, 1, 2, 2), torch.zeros(2, dtype=torch.int64))


# ------------------------------------------------------------------------------------ download


def test_failed_download_leaves_no_folder_behind(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    root = tmp_path / "fresh" / "data"
    with pytest.raises(DataError, match="could not download"):
        download("http://example.invalid/f.bin", root / "sub" / "f.bin", "0" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # fresh/, data/ and sub/ are gone
    with pytest.raises(DataError, match="no network"):
        load_dataset("mnist", root, download=True)
    assert not (tmp_path / "fresh").exists()
    # a folder that existed before, and anything in it, stays
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "note.txt").write_text("mine")
    with pytest.raises(DataError):
        download("http://example.invalid/f.bin", tmp_path / "kept" / "new" / "f.bin", "0" * 64)
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["note.txt"]


def test_download_is_checked_before_it_is_in_place_and_a_failure_leaves_nothing(tmp_path, monkeypatch):
    """Offline, through file:// URLs: what the download checks (its size against the cap, its
    checksum or ``verify``) refuses a file before it is in place, and every failure, an
    interrupt too, leaves neither the temporary file nor a folder that the call made."""
    import hashlib

    src = tmp_path / "src" / "f.bin"
    src.parent.mkdir()
    src.write_bytes(b"abc" * 1000)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    url = src.as_uri()
    dest = tmp_path / "got" / "sub" / "f.bin"
    assert download(url, dest, sha) == dest and dest.read_bytes() == src.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["f.bin"]  # the temporary file renamed, none left

    def refuse(path: Path) -> None:
        assert path.read_bytes() == src.read_bytes()  # verify sees the whole file, before it is in place
        raise DataError("not the file wanted")

    def interrupt(path: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setenv(MAX_BYTES_ENV, "1000")
    with pytest.raises(DataError, match=f"download of {url} exceeds 1000 bytes, the limit \\(set {MAX_BYTES_ENV}"):
        download(url, tmp_path / "new" / "f.bin", sha)
    monkeypatch.delenv(MAX_BYTES_ENV)
    with pytest.raises(DataError, match="not the file wanted"):
        download(url, tmp_path / "new" / "f.bin", None, verify=refuse)
    with pytest.raises(KeyboardInterrupt):
        download(url, tmp_path / "new" / "f.bin", None, verify=interrupt)
    with pytest.raises(DataError, match=f"could not download {url}: .*File name too long"):
        download(url, tmp_path / "new" / ("x" * 300) / "f.bin", sha)  # new/ is made, then x...x cannot be
    assert sorted(p.name for p in tmp_path.iterdir()) == ["got", "src"]  # new/ is gone each time


def test_a_download_is_readable_by_whoever_may_read_a_new_file(tmp_path):
    """The file in place has a new file's permissions (0666 less the umask): mkstemp's 0600
    kept the other users of a shared data folder out of a file that one of them downloaded."""
    import hashlib
    import os
    import stat

    src = tmp_path / "src.bin"
    src.write_bytes(b"abc" * 100)
    old = os.umask(0o022)
    try:
        dest = download(src.as_uri(), tmp_path / "data" / "f.bin", hashlib.sha256(src.read_bytes()).hexdigest())
    finally:
        os.umask(old)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644 and dest.read_bytes() == src.read_bytes()


def test_a_download_keeps_a_file_that_appeared_at_its_destination_meanwhile(tmp_path, monkeypatch):
    """A file that another process (or the user, by hand) put at the destination during the
    download is kept, not overwritten, with hard links and on a file system without them."""
    import hashlib
    import os

    src = tmp_path / "src.bin"
    src.write_bytes(b"abc" * 100)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    theirs = tmp_path / "data" / "g.bin"

    def another_process_finishes(path: Path) -> None:
        theirs.write_bytes(b"their copy")

    assert download(src.as_uri(), theirs, sha, verify=another_process_finishes) == theirs
    assert theirs.read_bytes() == b"their copy"
    assert [p.name for p in theirs.parent.iterdir()] == ["g.bin"]  # no temporary file left
    monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(PermissionError("no hard links here")))
    assert download(src.as_uri(), tmp_path / "data" / "h.bin", sha).read_bytes() == src.read_bytes()
    assert download(src.as_uri(), theirs, sha, verify=another_process_finishes).read_bytes() == b"their copy"
    assert sorted(p.name for p in theirs.parent.iterdir()) == ["g.bin", "h.bin"]


@pytest.fixture
def hostile_server():
    """A loopback HTTP server whose /cut announces 1000 bytes and sends 300 (a dropped
    connection), and whose /page answers with a web page (a proxy's login page) and status 200."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"x" * 300 if self.path == "/cut" else b"  <!DOCTYPE html><html><body>Sign in</body></html>"
            self.send_response(200)
            self.send_header("Content-Length", "1000" if self.path == "/cut" else str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_cut_transfer_and_a_web_page_are_refused_by_name(tmp_path, hostile_server):
    """urllib ends a transfer cut short of its Content-Length quietly: it was refused only as a
    checksum mismatch, and a web page in place of the data too, neither saying what happened."""

    def refuse(path: Path) -> None:
        raise DataError(f"{path} is not the file wanted")

    with pytest.raises(DataError, match=f"^download of {hostile_server}/cut ended after 300 of the 1000 bytes its server"):
        download(f"{hostile_server}/cut", tmp_path / "new" / "f.bin", "0" * 64)
    for checksum, verify, said in (("0" * 64, None, "expected 0+"), (None, refuse, "is not the file wanted")):
        with pytest.raises(DataError, match=f"{said} \\(it is a web page, HTML, not the data file"):
            download(f"{hostile_server}/page", tmp_path / "new" / "f.bin", checksum, verify=verify)
    assert sorted(tmp_path.iterdir()) == []  # nothing left: no temporary file, no folder


@pytest.mark.parametrize("page", [b"\xef\xbb\xbf<!DOCTYPE html><html>Not found</html>", b"\n<head><title>Error</title>"])
def test_a_web_page_after_a_byte_order_mark_or_without_its_html_tag_is_refused_by_name(tmp_path, monkeypatch, page):
    """A web page that starts with a UTF-8 byte-order mark (as IIS and some proxies write one), or
    with <head> where the <html> tag is left out, was refused as a checksum mismatch only."""
    import io
    import urllib.request

    class Page(io.BytesIO):
        headers = {"Content-Length": str(len(page))}

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Page(page))
    with pytest.raises(DataError, match="expected 0+ \\(it is a web page, HTML, not the data file"):
        download("http://example.invalid/f", tmp_path / "new" / "f.bin", "0" * 64)
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize("length", ["²", "١٢", "12x", ""])
def test_a_content_length_of_other_than_ascii_digits_is_not_read_as_one(tmp_path, monkeypatch, length):
    """A server's Content-Length of "²" passed str.isdigit, and int() raised ValueError: an internal
    error in place of the download. It is taken as no length, as any invalid one is."""
    import io
    import urllib.request

    body = b"\x00" * 16

    class Body(io.BytesIO):
        headers = {"Content-Length": length}

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Body(body))
    with pytest.raises(DataError, match="expected 0+"):  # (the checksum's refusal: the download itself went through)
        download("http://example.invalid/f", tmp_path / "new" / "f.bin", "0" * 64)
