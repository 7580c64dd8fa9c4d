"""What a mutation sweep of the data readers (data/formats.py, matlab.py, table.py, missing.py,
labels.py, transforms.py) found unchecked: the exact bounds of every size and cap, the IDX type
codes and magic, the .amat rows at a block boundary and at the end of the file, the values that
decide uint8 or float32, the .npy header fields one step out of range, the .npz member checks
that only a crafted zip reaches, the .mat structure walk one part or byte off, which variables a
.mat or .npz file gives as data and labels, the table, label and transform checks at their edges,
and a table path that is no regular file (a FIFO blocked read_table)."""

import contextlib
import dataclasses
import gzip
import io
import json
import os
import struct
import threading
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
import scipy.io
import torch
from tests.test_new_user import DOUBLES, MAT_HEADER, _crafted_mat, _element, _mat_variable
from tests.test_safety_readers import MB, idx_bytes, npy_with_header, npz_bytes

from dgmkit.data import Split, from_array
from dgmkit.data.formats import MAX_BYTES_ENV, max_data_bytes, open_maybe_gzip, read_amat, read_array, read_arrays, read_idx
from dgmkit.data.labels import check_labels, keep_labels
from dgmkit.data.matlab import read_mat
from dgmkit.data.missing import remove_completely_at_random
from dgmkit.data.table import read_table, write_table
from dgmkit.data.transforms import DataTransform, density_transform, make_transform, scores_densities
from dgmkit.errors import ConfigError, DataError

# ---------------------------------------------------------------------------------- the data cap


def test_the_cap_takes_any_positive_number_of_up_to_30_digits_and_refuses_zero(monkeypatch):
    monkeypatch.setenv(MAX_BYTES_ENV, "9" * 30)
    assert max_data_bytes() == 10**30 - 1
    for refused in ("0", "-5", "9" * 31):
        monkeypatch.setenv(MAX_BYTES_ENV, refused)
        with pytest.raises(DataError, match=f"{MAX_BYTES_ENV}=.* is not a positive whole number of bytes"):
            max_data_bytes()


def test_a_gzip_stream_of_exactly_the_cap_is_read_and_one_byte_more_is_refused(tmp_path):
    data = bytes(range(256)) * 40
    (tmp_path / "data.gz").write_bytes(gzip.compress(data))
    assert open_maybe_gzip(tmp_path / "data.gz", limit=len(data)) == data
    with pytest.raises(DataError, match=f"decompresses to more than {len(data) - 1} bytes, the limit"):
        open_maybe_gzip(tmp_path / "data.gz", limit=len(data) - 1)


# --------------------------------------------------------------------------------------- .amat


def test_amat_names_the_whole_bad_token_and_inf_as_not_finite(tmp_path):
    (tmp_path / "word.amat").write_text("1 2 3\n4 5 12345x\n")
    with pytest.raises(DataError, match=r"b'12345x' on line 2 is not a number"):
        read_amat(tmp_path / "word.amat", 3)
    (tmp_path / "inf.amat").write_text("1 2 3\n4 inf 6\n")
    with pytest.raises(DataError, match="values must be finite numbers, found 'inf' on line 2"):
        read_amat(tmp_path / "inf.amat", 3)


def test_amat_a_number_split_by_the_scanning_block_boundary_counts_once(tmp_path):
    """The general parser scans 256 KiB blocks: a number whose digits straddle a block boundary
    is one value, not two (the line would then hold 4 values of 3 columns)."""
    text = b"1 2 3\n" + b"123 456 789\n" * 30_000
    assert text[(1 << 18) - 1 : (1 << 18) + 1].isdigit()  # the boundary falls inside a number
    (tmp_path / "long.amat").write_bytes(text)
    got = read_amat(tmp_path / "long.amat", 3)
    assert got.shape == (30_001, 3) and got.dtype == np.float32
    assert got[0].tolist() == [1, 2, 3] and (got[1:] == [123, 456, 789]).all()


def test_amat_the_last_line_without_a_newline_is_a_row_or_named_if_short(tmp_path):
    (tmp_path / "open.amat").write_text("1 2 3\n4.5 5 6")
    assert read_amat(tmp_path / "open.amat", 3).tolist() == [[1, 2, 3], [4.5, 5, 6]]
    (tmp_path / "short.amat").write_text("1 2 3\n4.5 5")
    with pytest.raises(DataError, match="line 2 holds 2 values, expected 3 columns"):
        read_amat(tmp_path / "short.amat", 3)


def test_amat_a_line_of_one_value_too_many_is_refused_within_its_block(tmp_path):
    (tmp_path / "over.amat").write_bytes(b"1 2 3 4" + b" " * 300_000 + b"\n")
    with pytest.raises(DataError, match="line 1 holds more than 3 values, expected 3 columns"):
        read_amat(tmp_path / "over.amat", 3)


def test_amat_fast_path_refuses_a_character_just_after_the_digits(tmp_path):
    (tmp_path / "colon.amat").write_bytes(b"0 1 :\n1 0 1\n")  # ':' is '9' + 1
    with pytest.raises(DataError, match="not a number"):
        read_amat(tmp_path / "colon.amat", 3)


@pytest.mark.parametrize("value", ["256", "-1", "0.5"])
def test_amat_values_outside_the_bytes_stay_float32(tmp_path, value):
    (tmp_path / "v.amat").write_text(f"0 1 {value}\n")
    got = read_amat(tmp_path / "v.amat", 3)
    assert got.dtype == np.float32 and got.tolist() == [[0, 1, float(value)]]


# ----------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize(
    "code, values",
    [
        (0x08, [0, 1, 200, 255]),
        (0x09, [-128, -1, 0, 127]),
        (0x0B, [-30000, -1, 2, 30000]),
        (0x0C, [-(2**31), -1, 3, 2**31 - 1]),
        (0x0D, [-1.5, 0.25, 3e30, -7.0]),
        (0x0E, [-1.5, 0.1, 1e300, -7.0]),
    ],
)
def test_idx_every_type_code_reads_its_big_endian_values(tmp_path, code, values):
    arr = np.array(values).reshape(2, 2)
    (tmp_path / "a.idx").write_bytes(idx_bytes(arr, code))
    got = read_idx(tmp_path / "a.idx")
    assert got.dtype.isnative and got.shape == (2, 2)
    assert got.dtype.kind == ("u" if code == 0x08 else "i" if code < 0x0D else "f")
    assert np.array_equal(got, arr.astype(got.dtype))


@pytest.mark.parametrize(
    "data, problem",
    [
        (bytes([1, 0, 0x08, 1, 0, 0, 0, 1, 7]), "bad magic number"),  # the first byte must be 0 too
        (bytes([0, 0, 0x08]), "bad magic number"),  # a file shorter than the magic
        (bytes([0, 0, 0x08, 0, 7]), "declares 0 dimensions"),  # no dimension: not one scalar
    ],
)
def test_idx_a_wrong_magic_byte_short_magic_or_no_dimension_is_refused(tmp_path, data, problem):
    (tmp_path / "bad.idx").write_bytes(data)
    with pytest.raises(DataError, match=problem):
        read_idx(tmp_path / "bad.idx")


def test_idx_reads_32_dimensions_and_names_the_bytes_that_follow(tmp_path):
    arr = np.arange(2, dtype=np.uint8).reshape((2,) + (1,) * 31)
    (tmp_path / "deep.idx").write_bytes(idx_bytes(arr))
    assert np.array_equal(read_idx(tmp_path / "deep.idx"), arr)
    (tmp_path / "long.idx").write_bytes(idx_bytes(np.zeros(4)) + bytes(9))
    with pytest.raises(DataError, match=r"IDX header says \(4,\) \(4 bytes\) but 13 bytes follow"):
        read_idx(tmp_path / "long.idx")


# ---------------------------------------------------------------------------------- .npy / .npz


def _npy(header: str, payload: bytes = bytes(8), version: int = 1) -> bytes:
    return npy_with_header(header, payload, version)


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"\x93NUMPY\x01\x01" + bytes(200), "unknown .npy format version 1.1"),
        (_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (-1, -1), }"), "not a tuple of non-negative integers"),
        (_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1" + "0" * 30 + ",), }"), "more than 30 digits"),
        (_npy("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", b"\x01\x02"), "a bool value is neither 0 nor 1"),
        (_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'k\xe9': 1}", version=2), "malformed header"),
    ],
)  # fmt: skip
def test_npy_header_fields_one_step_out_of_range_are_refused_by_name(tmp_path, data, problem):
    (tmp_path / "a.npy").write_bytes(data)
    with pytest.raises(DataError, match=problem) as e:
        read_array(tmp_path / "a.npy")
    assert "UTF-8" not in str(e.value)  # a version 1 or 2 header is latin-1


def test_npy_a_header_of_more_than_64_kib_is_refused_unread(tmp_path):
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }" + " " * 65_536
    (tmp_path / "big.npy").write_bytes(_npy(header, version=2))
    with pytest.raises(DataError, match="the header claims 65654 bytes \\(at most 65536 are read\\)"):
        read_array(tmp_path / "big.npy")


def test_npz_a_member_with_bad_npy_magic_is_refused(tmp_path):
    member = _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }").replace(b"NUMPY", b"NUMPX", 1)
    (tmp_path / "a.npz").write_bytes(npz_bytes({"x.npy": member}))
    with pytest.raises(DataError, match="not a .npy file \\(bad magic bytes\\)"):
        read_array(tmp_path / "a.npz")


def test_npz_a_member_of_one_byte_over_the_cap_is_refused(tmp_path, monkeypatch):
    member = _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }")
    (tmp_path / "a.npz").write_bytes(npz_bytes({"x.npy": member}))
    monkeypatch.setenv(MAX_BYTES_ENV, str(len(member)))
    assert read_array(tmp_path / "a.npz").shape == (1,)
    monkeypatch.setenv(MAX_BYTES_ENV, str(len(member) - 1))
    with pytest.raises(
        DataError, match=f"the member declares {len(member)} bytes, more than the limit of {len(member) - 1}"
    ):
        read_array(tmp_path / "a.npz")


@pytest.mark.parametrize("extra", [-8, 8])
def test_npz_a_member_whose_header_lies_names_the_bytes_it_holds(tmp_path, extra):
    payload = bytes(16 + extra)
    member = _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", payload)
    (tmp_path / "a.npz").write_bytes(npz_bytes({"x.npy": member}, zipfile.ZIP_DEFLATED))
    with pytest.raises(
        DataError, match=f"declares shape \\(2,\\) of float64 \\(16 bytes\\) but the member holds {16 + extra}"
    ):
        read_array(tmp_path / "a.npz")


def test_npz_a_deflated_member_with_a_wrong_crc_is_refused(tmp_path):
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.arange(1000.0))
    raw = bytearray(buf.getvalue())
    crc = struct.unpack_from("<I", raw, 14)[0]
    for at in range(len(raw) - 4):  # the CRC in the local header and in the central directory
        if struct.unpack_from("<I", raw, at)[0] == crc:
            struct.pack_into("<I", raw, at, crc ^ 1)
    (tmp_path / "crc.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt .npz file \\(BadZipFile: Bad CRC-32"):
        read_array(tmp_path / "crc.npz")


def test_npz_labels_are_not_the_data_when_y_is_chosen_as_the_data(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.ones((3, 2)), y=np.arange(3))
    x, y = read_arrays(tmp_path / "a.npz", key="y")
    assert x.tolist() == [0, 1, 2] and y is None
    x, y = read_arrays(tmp_path / "a.npz")
    assert x.shape == (3, 2) and y.tolist() == [0, 1, 2]


def test_npz_of_many_arrays_names_twenty_and_counts_the_rest(tmp_path):
    np.savez(tmp_path / "many.npz", **{f"a{i:02d}": np.zeros(1) for i in range(21)})
    with pytest.raises(DataError, match="'a18', 'a19' and 1 more\\) and none is named 'x'") as e:
        read_array(tmp_path / "many.npz")
    assert "'a20'" not in str(e.value)
    np.savez(tmp_path / "twenty.npz", **{f"a{i:02d}": np.zeros(1) for i in range(20)})
    with pytest.raises(DataError, match="'a18', 'a19'\\) and none is named 'x'"):
        read_array(tmp_path / "twenty.npz")


# --------------------------------------------------------------------------------------- tables


def _csv(tmp_path, text: str, name: str = "t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


@contextlib.contextmanager
def _writer_knocks(fifo):
    """Opens and closes the write end of ``fifo`` every 0.2 s, so that a reader blocked on it
    goes on (and its test fails rather than hangs)."""
    stop = threading.Event()

    def knock() -> None:
        while not stop.wait(0.2):
            with contextlib.suppress(OSError):  # no reader: nothing to let go on
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    thread = threading.Thread(target=knock, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_table_path_that_is_no_regular_file_is_a_data_error_and_never_blocks(tmp_path, suffix):
    """read_table opened any path: a FIFO blocked it for ever, a missing file or a folder raised
    an OSError of its own (the CLI looked first; read_table and write_table's original did not)."""
    fifo = tmp_path / f"fifo{suffix}"
    os.mkfifo(fifo)
    (tmp_path / f"folder{suffix}").mkdir()
    columns = read_table(_csv(tmp_path, "a,b\n1,x\n3,y\n"))[1]
    with _writer_knocks(fifo):
        for name, problem in ((fifo.name, "not a regular file"), (f"folder{suffix}", "not a regular file"),
                              (f"none{suffix}", "no such file or folder")):  # fmt: skip
            with pytest.raises(DataError, match=problem):
                read_table(tmp_path / name)
        with pytest.raises(DataError, match="not a regular file"):
            write_table(np.zeros((1, 2)), columns, original=fifo)


def test_a_table_of_windows_or_old_mac_line_ends_reads_as_one_of_unix_line_ends(tmp_path):
    unix = read_table(_csv(tmp_path, 'a,b\n1,"x\ny"\n3,z\n'))
    for text in ('a,b\r\n1,"x\r\ny"\r\n3,z\r\n', 'a,b\r1,"x\ry"\r3,z\r'):
        path = tmp_path / "t.csv"
        path.write_bytes(text.encode())
        x, columns = read_table(path)
        assert np.array_equal(x, unix[0]) and columns == unix[1] and columns[1].categories == ("x\ny", "z")


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_a_byte_that_is_not_utf8_is_refused_by_its_line(tmp_path, end):
    """The message named the byte's offset alone (byte 19 of the file), not the line, as the
    other messages of a table name theirs; a quoted line break is a line too."""
    path = tmp_path / "t.csv"
    path.write_bytes(end.join([b"a,b", b'1,"x', b'y"', b"2,caf\xe9", b""]))
    with pytest.raises(DataError, match=r"line 4 is not UTF-8 text \(invalid continuation byte"):
        read_table(path)


def test_a_schema_naming_a_column_the_table_lacks_is_refused(tmp_path):
    path = _csv(tmp_path, "a,b\n1,x\n2,y\n")
    (tmp_path / "s.json").write_text(json.dumps({"columns": {"a": "numeric", "b": "categorical", "z": "numeric"}}))
    with pytest.raises(DataError, match=r"not in the schema \[\], not in the table \['z'\]"):
        read_table(path, tmp_path / "s.json")


def test_a_signed_nan_in_a_numeric_column_is_refused_not_missing(tmp_path):
    path = _csv(tmp_path, "a,b\n1,x\n-nan,y\n2,z\n")  # "nan" marks a missing entry, "-nan" is a number
    with pytest.raises(DataError, match="line 3, column 'a' holds '-nan': a numeric column's values must be finite"):
        read_table(path)


def _column(cells: list[str]) -> str:
    return "v,w\n" + "".join(f"{c},{i % 2}\n" for i, c in enumerate(cells))


def test_a_slip_is_refused_from_21_distinct_numbers_and_up_to_one_cell_in_50(tmp_path):
    slip = r"column 'v' holds numbers but for 1 cell\(s\), the first '4o.2'"
    cells = [str(i) for i in range(21)] * 2 + ["4o.2"]  # 21 distinct numbers, 43 cells: one slip is refused
    with pytest.raises(DataError, match=slip):
        read_table(_csv(tmp_path, _column(cells)))
    cells = [str(i) for i in range(20)] * 3 + ["4o.2"]  # 20 distinct numbers and a word: codes, categorical
    assert read_table(_csv(tmp_path, _column(cells)))[1][0].levels == 21
    cells = [str(i) for i in range(30)] * 3 + ["old", "young"]  # 2 words in 92 cells: more than 1 in 50
    assert read_table(_csv(tmp_path, _column(cells)))[1][0].levels == 32


def test_twenty_one_values_each_seen_once_are_refused_as_an_identifier_and_twenty_are_not(tmp_path):
    cells = [f"id{i}" for i in range(21)]
    with pytest.raises(DataError, match="column 'v' holds 21 distinct values in 21 cells"):
        read_table(_csv(tmp_path, _column(cells)))
    assert read_table(_csv(tmp_path, _column(cells[:20])))[1][0].levels == 20


def test_a_header_of_more_than_10000_columns_is_refused(tmp_path):
    n = 10_001
    path = _csv(tmp_path, ",".join(f"c{i}" for i in range(n)) + "\n" + ",".join("1" for _ in range(n)) + "\n")
    with pytest.raises(DataError, match="the header names 10001 columns, more than the 10000 a table may have"):
        read_table(path)


def test_one_column_whose_lines_hold_more_semicolons_than_its_header_is_one_column(tmp_path):
    x, columns = read_table(_csv(tmp_path, "a;b\n1;2;3\n4;5;6\n"))
    assert [c.name for c in columns] == ["a;b"] and columns[0].categories == ("1;2;3", "4;5;6")


def test_numbers_beyond_2_to_the_53_are_not_whole_numbers_of_a_column(tmp_path):
    columns = read_table(_csv(tmp_path, "a,b\n1e17,x\n3e17,y\n"))[1]
    assert columns[0].kind == "numeric" and not columns[0].integer
    assert read_table(_csv(tmp_path, "a,b\n1e15,x\n3e15,y\n"))[1][0].integer


def test_missing_cells_in_any_case_are_missing_in_rows_read_with_a_models_columns_and_written_back(tmp_path):
    x, columns = read_table(_csv(tmp_path, "a,b\n1,x\n3,y\n"))
    path = _csv(tmp_path, "a,b\nNA,x\n3,NaN\n", "new.csv")
    rows = read_table(path, columns=columns)[0]
    assert np.isnan(rows[0, 0]) and np.isnan(rows[1, 1]) and rows[1, 0] == x[1, 0]
    filled = rows.copy()
    filled[0, 0], filled[1, 1] = x[0, 0], 0.0
    assert write_table(filled, columns, original=path) == "a,b\n1,x\n3,x\n"


def test_a_categorical_value_below_the_first_index_is_written_as_the_first_category(tmp_path):
    columns = read_table(_csv(tmp_path, "a,b\n1,x\n3,y\n4,z\n"))[1]
    rows = np.array([[0.0, -0.7], [0.0, 2.6]])  # indices rounded and held to 0..K-1: not the last category from -1
    assert write_table(rows, columns).splitlines()[1:] == ["3,x", "3,z"]


def test_rows_are_written_over_an_original_table_only_of_their_own_columns(tmp_path):
    """write_table kept an original table's cells by position: one of the same columns in another order had
    its cells written under the wrong names (a file edited while dgm impute ran), one of fewer columns was an
    IndexError."""
    x, columns = read_table(_csv(tmp_path, "a,b\n1,x\n3,y\n4,z\n", "a.csv"))
    assert write_table(x, columns, tmp_path / "a.csv").splitlines() == ["a,b", "1,x", "3,y", "4,z"]
    for name, text, shown in (("b.csv", "b,a\nx,1\ny,3\nz,4\n", "'b', 'a'"), ("c.csv", "a\n1\n3\n4\n", "'a'")):
        with pytest.raises(DataError, match=rf"{name}: columns \[{shown}\], but the rows to write have \['a', 'b'\]"):
            write_table(x, columns, _csv(tmp_path, text, name))


# ----------------------------------------------------------------------------------------- .mat


def _mat(tmp_path, data: bytes, name: str = "m.mat"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _flags(mclass: int, size: int = 8) -> bytes:
    return _element(6, struct.pack("<II", mclass, 0)[:size])


DIMS, NAME = _element(5, struct.pack("<2i", 20, 3)), _element(1, b"x")


@pytest.mark.parametrize(
    "data, problem",
    [
        (MAT_HEADER + _element(14, _flags(6, 2) + DIMS + NAME + DOUBLES), "does not start with its array flags"),
        (MAT_HEADER + _element(14, _flags(1) + DIMS), "flags, dimensions and name"),
        (MAT_HEADER + _element(14, _flags(6) + DIMS + NAME + DOUBLES + DOUBLES), "2 data parts where its flags promise 1"),
        (MAT_HEADER + _mat_variable(6, (-1, 60), DOUBLES), "negative or malformed dimensions"),
        (MAT_HEADER + _element(14, _flags(6) + DIMS + _element(14, _crafted_mat()[136:]) + DOUBLES),
         "class 6 .* holds a variable as a part"),
        (MAT_HEADER + struct.pack("<II", (4 << 16) | 14, 0) + _crafted_mat()[128:], "an element of type 14 stands where"),
        (MAT_HEADER, "holds no variables"),
    ],
)  # fmt: skip
def test_mat_structures_one_part_off_are_refused_by_name(tmp_path, data, problem):
    with pytest.raises(DataError, match=problem):
        read_mat(_mat(tmp_path, data))


def test_mat_an_object_of_five_parts_is_one_data_error(tmp_path):
    classname = _element(1, b"c")
    with pytest.raises(DataError, match="m.mat"):
        read_mat(_mat(tmp_path, MAT_HEADER + _element(14, _flags(3) + DIMS + NAME + classname + _element(5, b"\x08\0\0\0"))))


def test_mat_element_sizes_one_step_beyond_what_they_hold_are_refused(tmp_path):
    small = bytearray(_crafted_mat())
    struct.pack_into("<I", small, 128 + 8, (5 << 16) | 6)  # a small element of 5 bytes in a field of 4
    with pytest.raises(DataError, match="a small element that declares 5 bytes in a field of 4"):
        read_mat(_mat(tmp_path, bytes(small)))
    over = bytearray(_crafted_mat())
    (size,) = struct.unpack_from("<I", over, 132)
    struct.pack_into("<I", over, 132, size + 8)  # the variable claims its 8 bytes of padding and 8 more
    with pytest.raises(DataError, match=f"the file has an element that declares {size + 8} bytes but holds {size}"):
        read_mat(_mat(tmp_path, bytes(over)))


def _compressed(variable: bytes) -> bytes:
    packed = zlib.compress(variable)
    return MAT_HEADER + struct.pack("<II", 15, len(packed)) + packed


def test_mat_a_compressed_variable_of_exactly_the_cap_is_read_and_one_byte_more_is_refused(tmp_path, monkeypatch):
    variable = _crafted_mat()[128:]
    path = _mat(tmp_path, _compressed(variable))
    monkeypatch.setenv(MAX_BYTES_ENV, str(len(variable)))
    assert read_mat(path)[0].shape == (20, 3)
    monkeypatch.setenv(MAX_BYTES_ENV, str(len(variable) - 1))
    with pytest.raises(DataError, match=f"its compressed variables expand beyond the limit of {len(variable) - 1} bytes"):
        read_mat(path)


def test_mat_inflating_stops_at_the_cap_and_allocates_no_more(tmp_path, monkeypatch):
    body = _flags(6) + _element(5, struct.pack("<2i", 1 << 22, 1)) + NAME + _element(9, bytes(32 * MB))
    path = _mat(tmp_path, _compressed(_element(14, body)))
    monkeypatch.setenv(MAX_BYTES_ENV, str(MB))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="expand beyond the limit of 1048576 bytes"):
            read_mat(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MB, peak  # not the 32 MiB behind the cap


def test_mat_a_variable_that_declares_more_than_the_cap_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = _mat(tmp_path, MAT_HEADER + _mat_variable(6, (1000, 1000), DOUBLES))
    monkeypatch.setenv(MAX_BYTES_ENV, "4000000")
    with pytest.raises(DataError, match="the variable 'x' declares 8000000 bytes, more than the limit of 4000000"):
        read_mat(path)


def test_mat_a_logical_flag_on_the_last_numeric_class_reads(tmp_path):
    data = _element(14, _flags(15 | 0x200) + DIMS + NAME + _element(13, np.ones(60, np.uint64).tobytes()))
    x, _ = read_mat(_mat(tmp_path, MAT_HEADER + data))
    assert x.shape == (20, 3) and (x == 1).all()


def _v4(mopt: int = 0, rows: int = 2, imag: int = 0, name: bytes = b"x\0", namelen: int | None = None) -> bytes:
    namelen = len(name) if namelen is None else namelen
    return struct.pack("<5i", mopt, rows, 1, imag, namelen) + name + np.arange(2.0).tobytes()


@pytest.mark.parametrize(
    "data",
    [_v4(mopt=60), _v4(mopt=3), _v4(imag=2), _v4(rows=-1), _v4(name=b"", namelen=0), _v4(name=b"xy")],
    ids=["precision 6", "type 3", "imaginary flag 2", "negative rows", "no name", "name without NUL"],
)
def test_mat_v4_headers_one_field_out_of_range_are_not_v4(tmp_path, data):
    assert read_mat(_mat(tmp_path, _v4()))[0].tolist() == [[0.0], [1.0]]  # the base header is a v4 file
    with pytest.raises(DataError, match="starts with neither a v5 header nor a v4 matrix header"):
        read_mat(_mat(tmp_path, data, "bad.mat"))


@pytest.mark.parametrize(
    "data, problem",
    [
        (
            _v4(mopt=1000)[:22] + np.arange(2.0).astype(">f8").tobytes(),
            "'x' declares IEEE big-endian numbers in a file of IEEE little-endian headers",
        ),
        (_v4(mopt=2000), "'x' declares VAX D-float numbers"),
        (_v4() + _v4(mopt=4000, name=b"y\0"), "'y' declares Cray numbers"),
        (
            struct.pack(">5i", 0, 2, 1, 0, 2) + b"x\0" + np.arange(2.0).astype(">f8").tobytes(),
            "'x' declares IEEE little-endian numbers in a file of IEEE big-endian headers",
        ),
        (_v4(rows=2**30)[:-8], r"'x' declares 1073741824 x 1 values \(8589934592 bytes\) but 8 bytes follow its header"),
        (struct.pack("<5i", 0, 2**31 - 1, 2**31 - 1, 1, 2) + b"x\0", r"declares 2147483647 x 2147483647 values"),
        (_v4() + b"\0" * 7, "the bytes at offset 38 are no matrix header"),
    ],
    ids=["big-endian numbers", "VAX", "Cray second", "little-endian numbers", "short", "int64 overflow", "trailing bytes"],
)
def test_mat_v4_matrices_are_walked_before_scipy_reads_them(tmp_path, data, problem):
    """SciPy reads every v4 matrix in the byte order of the file's first header, whatever the M digit
    of its own says (a big-endian or VAX matrix was read as little-endian numbers, silently wrong),
    and said "negative seek value" of dimensions whose bytes overflow int64."""
    with pytest.raises(DataError, match=problem) as e:
        read_mat(_mat(tmp_path, data))
    assert str(e.value).startswith(f"cannot read {tmp_path / 'm.mat'} as a MATLAB .mat file: ")


@pytest.mark.parametrize(
    "data",
    [
        b"MATLAB 7.3 format file written by another tool".ljust(124) + b"\x00\x02IM" + bytes(384) + b"\x89HDF\r\n\x1a\n",
        b"\x89HDF\r\n\x1a\n" + bytes(200),  # no MAT header at all (Octave's save -hdf5, h5py)
    ],
    ids=["version 2 in the header", "plain HDF5"],
)
def test_mat_an_hdf5_file_is_named_one_whatever_its_header_text(tmp_path, data):
    """A v7.3 file was told by its header's first words alone: another text (a version of 2 in the
    header's version field) or none (a plain HDF5 file named .mat) got a v5 or v4 parser's message."""
    with pytest.raises(DataError, match="an HDF5 container"):
        read_mat(_mat(tmp_path, data))


def test_mat_data_and_labels_by_their_names(tmp_path):
    images, labels = np.arange(12.0).reshape(4, 3), np.array([[0, 1, 0, 1]])
    scipy.io.savemat(tmp_path / "a.mat", {"images": images, "y": labels})
    x, y = read_mat(tmp_path / "a.mat")  # y is the labels, so images is the only data
    assert np.array_equal(x, images) and y.tolist() == [0, 1, 0, 1]
    x, y = read_mat(tmp_path / "a.mat", "y")  # the labels chosen as the data are no labels of themselves
    assert x.shape == (1, 4) and y is None
    scipy.io.savemat(tmp_path / "b.mat", {"X": images, "other": images, "Y": labels})
    x, y = read_mat(tmp_path / "b.mat")
    assert np.array_equal(x, images) and y.tolist() == [0, 1, 0, 1]


def test_mat_a_file_of_no_variables_says_so_and_many_variables_are_counted(tmp_path):
    """A file of no variables was told to "name the data's variable with --data-key"; of 100, twenty were named
    and the other 80 left out without a word (a .npz file's count them)."""
    scipy.io.savemat(tmp_path / "none.mat", {})
    for key in (None, "x"):
        with pytest.raises(DataError, match=r"none.mat holds no variables: there is no data in it$"):
            read_mat(tmp_path / "none.mat", key)
    scipy.io.savemat(tmp_path / "many.mat", {f"v{i}": np.ones((20, 3)) for i in range(100)})
    with pytest.raises(DataError, match=r"'v19' 20x3 double and 80 more; name the data's variable with --data-key$"):
        read_mat(tmp_path / "many.mat")


def test_mat_a_variable_of_no_values_is_refused_as_such(tmp_path):
    """A 0 x 5 variable was refused as "0 rows of 5 values", advising to save its transpose as 5
    datapoints (0 x 28 x 28 likewise, once stacks were checked): it holds no data, as a .npy file of a 0 in its
    shape is refused."""
    from dgmkit.data import load_dataset

    for shape, shown in (((0, 5), "0x5"), ((0, 28, 28), "0x28x28"), ((5, 0), "5x0")):
        scipy.io.savemat(tmp_path / "empty.mat", {"x": np.zeros(shape)})
        with pytest.raises(DataError, match=rf"empty.mat: the variable 'x' holds no values \(shape {shown}\)$"):
            load_dataset(str(tmp_path / "empty.mat"))


def test_mat_a_stack_of_images_along_its_last_axis_is_refused_with_both_readings(tmp_path):
    """MATLAB stacks images as H x W x N (and H x W x C x N): 50 images of 28 x 28 were read as 28
    datapoints of 28 x 50, and trained on without a word (a 2-D variable of fewer rows than
    columns was already refused so)."""
    from dgmkit.data import load_dataset

    stack = np.random.default_rng(0).integers(0, 256, (28, 28, 50)).astype(np.uint8)
    scipy.io.savemat(tmp_path / "stack.mat", {"x": stack})
    for shape in (None, [28, 28]):
        with pytest.raises(DataError, match=r"shape \(28, 28, 50\).*permute\(x, \[3 1 2\]\).*save them flat \(28, 1400\)"):
            load_dataset(str(tmp_path / "stack.mat"), image_shape=shape)
    scipy.io.savemat(tmp_path / "rgb.mat", {"x": np.zeros((32, 32, 3, 50), np.uint8)})
    with pytest.raises(DataError, match=r"shape \(32, 32, 3, 50\).*permute\(x, \[4 1 2 3\]\)"):
        load_dataset(str(tmp_path / "rgb.mat"))
    scipy.io.savemat(tmp_path / "first.mat", {"x": np.moveaxis(stack, -1, 0)})  # the images first: read as they are
    assert load_dataset(str(tmp_path / "first.mat")).event_shape == (1, 28, 28)


# ------------------------------------------------------------------------------ missing, labels


def test_entries_are_not_removed_from_the_code_grids_of_a_vq_vae():
    codes = dataclasses.replace(from_array(np.arange(200).reshape(20, 10) % 7), name="codes:run")
    with pytest.raises(ConfigError, match="missing_rate applies to data, not to the code grids"):
        remove_completely_at_random(codes, 0.3)
    assert remove_completely_at_random(codes, 0.0) is codes


def test_the_labels_of_an_empty_split_are_checked_without_error():
    assert check_labels(Split(torch.zeros(0, 1, 1, 1), torch.zeros(0, dtype=torch.long)), 2).shape == (0,)


def test_keep_labels_refuses_more_labels_than_datapoints_and_a_class_one_short(tmp_path):
    x = torch.zeros(5, 1, 1, 1)
    with pytest.raises(DataError, match="--labels 6 is more than the 5 training datapoints"):
        keep_labels(Split(x, torch.tensor([0, 0, 0, 1, 1])), 6, num_classes=2, seed=0)
    with pytest.raises(DataError, match="--labels 4 needs 2 examples of class 1; the training split holds 1"):
        keep_labels(Split(x, torch.tensor([0, 0, 0, 0, 1])), 4, num_classes=2, seed=0)


def test_keep_labels_refuses_a_number_of_labels_that_is_not_a_positive_whole_number():
    """From Python, --labels -2 over 2 classes kept 4 of 5 labels of each class (a slice [:-1]), 0 kept none
    and 2.0 was a TypeError; the command line's setting was checked, the function not."""
    split = Split(torch.zeros(10, 1, 1, 1), torch.tensor([0] * 5 + [1] * 5))
    for n, shown in ((-2, "-2"), (0, "0"), (2.0, "2.0"), (True, "True")):
        with pytest.raises(DataError, match=f"--labels must be an integer >= 1, got {shown}$"):
            keep_labels(split, n, num_classes=2, seed=0)
    assert int((keep_labels(split, np.int64(2), num_classes=2, seed=0).y >= 0).sum()) == 2


def test_keep_labels_suggests_fewer_classes_only_where_the_labels_take_fewer_values():
    x = torch.zeros(4, 1, 1, 1)
    with pytest.raises(DataError, match="class 1; the training split holds 0$"):
        keep_labels(Split(x, torch.tensor([0, 0, 2, 2])), 3, num_classes=3, seed=0)  # labels 0..2 of 3 classes
    with pytest.raises(
        DataError, match="class 2; the training split holds 0 \\(its labels take 2 values: --classes 2\\?\\)"
    ):
        keep_labels(Split(x, torch.tensor([0, 0, 1, 1])), 3, num_classes=3, seed=0)


def test_keeping_every_label_gives_them_as_int64():
    split = Split(torch.zeros(4, 1, 1, 1), torch.tensor([0, 1, 1, 0], dtype=torch.uint8))
    assert keep_labels(split, None, num_classes=2, seed=0).y.dtype == torch.long


# ---------------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("kind, levels, shown", [("scale", 1, "1"), ("dequantize", 1, "1"), ("scale", True, "True")])
def test_a_transform_that_reads_levels_needs_an_integer_of_at_least_two(kind, levels, shown):
    with pytest.raises(DataError, match=f"num_levels must be an integer L >= 2, got {shown}$"):
        DataTransform(kind, levels)


def test_the_continuous_transform_takes_values_as_they_are_whatever_its_levels():
    x = torch.tensor([[-3.5, 7.25]])
    assert torch.equal(DataTransform("continuous", 4)(x), x)


def test_a_mixed_table_scores_densities_unless_every_column_is_categorical():
    assert scores_densities("continuous", {"likelihood": "mixed", "table_levels": [0, 3]})
    assert not scores_densities("continuous", {"likelihood": "mixed", "table_levels": [2, 3]})
    assert not scores_densities("dequantize", {"likelihood": "gaussian"})


def test_binarize_none_keeps_a_named_8bit_dataset_from_dynamic_binarization_and_unknown_modes_are_refused():
    digits = dataclasses.replace(from_array(np.arange(340).reshape(20, 17) % 17), name="digits")
    assert make_transform("bernoulli", digits).kind == "dynamic-binarize"
    with pytest.raises(DataError, match="non-binary data \\(17 levels\\) for a bernoulli likelihood"):
        make_transform("bernoulli", digits, binarize="none")
    with pytest.raises(DataError, match="binarize must be auto, dynamic or none, got 'static'"):
        make_transform("bernoulli", digits, binarize="static")


def test_variational_dequantization_of_continuous_data_is_refused():
    continuous = from_array(np.linspace(0, 1, 200).reshape(20, 10).astype(np.float32))
    assert density_transform(continuous).kind == "continuous"
    with pytest.raises(DataError, match="variational dequantization needs integer data, got continuous data"):
        density_transform(continuous, variational=True)
