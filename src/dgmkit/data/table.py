"""Tables: rows of numeric and categorical columns, read from CSV (or Parquet), with a schema.

A table becomes continuous rows (N, 1, 1, D) in the column order of the file: a numeric column
standardized (mean 0, sd 1 over its observed values; ``Column.mean`` and ``Column.std`` take
it back), a categorical column as its category's index 0..K-1 among the sorted distinct
values. An empty cell, ``NA``, ``NaN`` or ``?`` (in any case) is a missing entry (NaN); any
other cell is a value (``none`` or ``null`` too: a category may be named so). The schema says
each column's kind: a JSON file ``{"columns": {"age": "numeric", "sex": "categorical", ...}}``
naming every column, or, without one, inferred: a column whose observed values all read as
numbers is numeric (and then each must be finite and within float32's range: ``inf`` or
``1e39`` in it is refused, not taken as a category), any other is categorical, except that a
column of more than 20 distinct numbers but for one cell in 50 or fewer (a typing slip,
``4o.2``, or ``N/A`` for a missing entry) is refused, as is one of more than 20 distinct values
most of them seen once (more than half its cells: an identifier, or numbers written with
symbols, ``$1,234``): a schema says if it is categorical. A
number is written in decimal, as in C or a spreadsheet (``-1.5``, ``2e-3``, ``.5``): Python's
digit separators (``5_0``) and non-ASCII digits are not numbers here, so such a cell makes its
column categorical, or is refused in a numeric one. A first line that looks like a row of data
is no header and is refused, unless a schema names those columns: numbers only, mostly numbers
beside a word that is also a value of its column below (iris without its header: "setosa"), or
words that are each a value of their column below. The columns (``Dataset.columns``) give the
mixed likelihood its heads (``--likelihood mixed``) and ``dgm impute`` its CSV output. A table read
with a model's columns (``dgm score``, ``dgm impute`` of a file) is standardized by the table that
model was trained on: a value so far out that its standardized square overflows float32 (1e30 in a
column of values near 2) is refused by its place and column, as no model could score it.
"""

import csv
import io
import math
import os
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dgmkit._io import invisible_character, parse_json, read_regular, shown_text
from dgmkit.data.formats import data_file_errors, open_data_file
from dgmkit.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Column", "read_table", "write_table", "describe_columns", "TABLE_SUFFIXES", "MISSING_CELLS", "MAX_CATEGORIES"]

TABLE_SUFFIXES = (".csv", ".parquet")
MISSING_CELLS = ("", "na", "nan", "?")
MAX_CATEGORIES = 256
MAX_TABLE_BYTES = 1 << 28  # parsed into Python strings: some 20 times that in memory
MAX_COLUMNS = 10_000
MAX_TABLE_CELLS = 1 << 25  # each a Python string once parsed: some 2 GB of wide rows
MAX_TABLE_ROWS = 1 << 23  # each a list once parsed, some 270 bytes a row of one cell: some 2.3 GB (9 GB at the cells' cap)
MAX_ROW_COMMAS = 1 << 20  # one row's, counted before it is split into cells: some 60 MB of them at most
MAX_SCHEMA_BYTES = 16 << 20  # a schema file (one name and kind per column: some 40 bytes each)


@dataclass(frozen=True)
class Column:
    """One column: ``kind`` numeric (standardized by ``mean`` and ``std``; ``integer``: every
    value the file holds is a whole number, so values written back (samples, imputations) are
    rounded to one) or categorical (``categories``, their index being the stored value)."""

    name: str
    kind: str
    mean: float = 0.0
    std: float = 1.0
    categories: tuple[str, ...] = ()
    integer: bool = False

    @property
    def levels(self) -> int:
        """K for a categorical column, 0 for a numeric one."""
        return len(self.categories) if self.kind == "categorical" else 0


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` (whose line breaks are all \\n), each with its break: as a StringIO's
    with newline="" would give them, without its copy of the text at 4 bytes a character."""
    start = 0
    while start < len(text):
        end = text.find("\n", start) + 1 or len(text)
        yield text[start:end]
        start = end


class _RowCommas:
    """Counts the commas of each row's lines as ``lines`` hands them to the csv module, which splits
    a whole row before its cells can be counted: a row of more than ``MAX_ROW_COMMAS`` (one line of
    millions of short cells, some 20 times its bytes once split into Python strings) is refused
    unsplit. No row of a table's ``MAX_COLUMNS`` comes near it, unless its quoted cells hold
    hundreds of thousands of commas."""

    def __init__(self, path: Path):
        self.path, self.commas, self.first = path, 0, 1

    def lines(self, text: Iterable[str]) -> Iterator[str]:
        for number, line in enumerate(text, 1):
            self.first = self.first or number
            self.commas += line.count(",")
            if self.commas > MAX_ROW_COMMAS:
                raise DataError(
                    f"{self.path.name}: line {self.first} holds more than {MAX_ROW_COMMAS} commas (quoted ones "
                    f"included), far more cells than the {MAX_COLUMNS} columns a table may have"
                )
            yield line

    def split(self) -> None:
        """The lines handed over so far made a row: the next row's count starts afresh."""
        self.commas, self.first = 0, 0


class _Places:
    """Where each row of a table is, as the messages name it ("line 5", "row 4"), written only
    when asked for: a string of every row would cost more than a narrow row's cells."""

    def __init__(self, word: str, numbers: np.ndarray):
        self.word, self.numbers = word, numbers

    def __getitem__(self, i: int) -> str:
        return f"{self.word} {self.numbers[i]}"

    def __len__(self) -> int:
        return len(self.numbers)

    def subset(self, rows: list[int]) -> "_Places":
        return _Places(self.word, self.numbers[np.asarray(rows, dtype=np.int64)])


def _read_cells(path: Path) -> tuple[list[str], list[list[str]], _Places]:
    """The header, the rows of cells and where each row is in the file, as the messages name it
    ("line 5" of a CSV file, "row 4" of a Parquet one) (blank lines skipped; a row of empty cells
    is a row of missing entries, kept). A path that is no regular file (none, a folder, a FIFO,
    which would block) is a DataError naming it, as in every reader."""
    parquet = path.suffix.lower() == ".parquet"
    with open_data_file(path) as f, data_file_errors(path):
        size = os.fstat(f.fileno()).st_size
        raw = b"" if parquet or size > MAX_TABLE_BYTES else f.read(size)
    if size > MAX_TABLE_BYTES:
        raise DataError(f"{path.name}: {size} bytes, more than the {MAX_TABLE_BYTES} a table may have")
    if parquet:
        return _read_parquet(path)
    try:
        text = raw.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")  # (universal newlines, as a text file)
    except UnicodeDecodeError as e:  # (the line as the other messages count them: \r\n, \n or \r ends one)
        line = raw.count(b"\n", 0, e.start) + raw.count(b"\r", 0, e.start) - raw.count(b"\r\n", 0, e.start) + 1
        raise DataError(
            f"{path.name}: line {line} is not UTF-8 text ({e.reason} at byte {e.start}); save the table as UTF-8"
        ) from None
    # lines that keep their breaks (a quoted cell keeps its line breaks), and only \r and \n end one (not \f or U+2028)
    row = _RowCommas(path)
    reader = csv.reader(row.lines(_lines(text)), strict=True)
    rows, lines, line, cells = [], array("q"), 1, 0
    try:
        for r in reader:
            row.split()
            if r and (len(r) > 1 or r[0].strip()):
                rows.append([c.strip() for c in r])  # (no second list of every row: a narrow table's rows cost most)
                lines.append(line)
                cells += len(r)
                if cells > MAX_TABLE_CELLS or len(rows) > MAX_TABLE_ROWS + 1:  # (and its header)
                    raise DataError(
                        f"{path.name}: more than the {MAX_TABLE_CELLS} cells or {MAX_TABLE_ROWS} rows a table may have"
                    )
            line = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path.name}: not a readable CSV file (line {reader.line_num}: {e})") from None
    if len(rows) < 2:
        raise DataError(f"{path.name}: a table needs a header row and at least one row of values")
    header = rows.pop(0)
    for i, r in zip(lines[1:], rows):
        if len(r) != len(header):
            raise DataError(f"{path.name}: line {i} has {len(r)} cells, the header {len(header)}")
    return header, rows, _Places("line", np.frombuffer(lines, np.int64)[1:])


def _read_parquet(path: Path) -> tuple[list[str], list[list[str]], _Places]:
    """A Parquet file's cells as text, its checks made before any column is expanded: the cells
    and the stored bytes (each column's pages uncompressed) within the caps, its columns of
    numbers or text, then the text the cells will hold (a column stored as a dictionary, one
    long value repeated, expands far beyond its pages) within the byte cap, as a CSV file's; its
    names and cells stripped of the spaces around them, as a CSV file's."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path.name}: reading Parquet needs pyarrow (pip install pyarrow), or give it as CSV") from None
    try:
        schema = pq.read_schema(path)

        def text(t: "pa.DataType") -> bool:
            return pa.types.is_string(t) or pa.types.is_large_string(t) or str(t) == "string_view"

        for field in schema:
            kind = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
            if pa.types.is_nested(kind) or not (text(kind) or pa.types.is_primitive(kind) or pa.types.is_decimal(kind)):
                raise DataError(f"{path.name}: column {field.name!r} holds {kind}; a table's cells are numbers or text")
        # text columns stay as indices into their distinct values until their size is known
        file = pq.ParquetFile(path, read_dictionary=[f.name for f in schema if pa.types.is_string(f.type)])
        meta = file.metadata
        rows = meta.num_rows
        if meta.num_columns > MAX_COLUMNS or rows * meta.num_columns > MAX_TABLE_CELLS or rows > MAX_TABLE_ROWS:
            raise DataError(
                f"{path.name}: {rows} rows of {meta.num_columns} columns, more than the {MAX_COLUMNS} columns, "
                f"{MAX_TABLE_CELLS} cells and {MAX_TABLE_ROWS} rows a table may have"
            )
        stored = sum(
            meta.row_group(g).column(c).total_uncompressed_size
            for g in range(meta.num_row_groups)
            for c in range(meta.num_columns)
        )
        if stored > MAX_TABLE_BYTES:
            raise DataError(f"{path.name}: {stored} bytes uncompressed, more than the {MAX_TABLE_BYTES} a table may have")
        t = file.read()
        size = _text_bytes(t, text)
        if size > MAX_TABLE_BYTES:
            raise DataError(f"{path.name}: its text expands to {size} bytes, more than the {MAX_TABLE_BYTES} allowed")
        cols = [["" if v is None else str(v).strip() for v in column.to_pylist()] for column in t.columns]
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file, said in one line
        why = " ".join(str(e).split())[:200]
        raise DataError(f"{path.name}: not a readable Parquet file ({type(e).__name__}: {why})") from None
    names = [str(n).strip() for n in t.column_names]
    return names, [list(r) for r in zip(*cols)], _Places("row", np.arange(1, meta.num_rows + 1))


def _text_bytes(t: "pa.Table", text: Callable[["pa.DataType"], bool]) -> int:
    """The bytes that the text columns (``text`` of their type) of the Parquet table ``t`` hold
    once expanded: a dictionary column's values counted as often as its indices name them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    size = 0
    for column in t.columns:
        for chunk in column.chunks:
            if pa.types.is_dictionary(chunk.type) and text(chunk.type.value_type):
                size += pc.sum(pc.take(pc.binary_length(chunk.dictionary), chunk.indices)).as_py() or 0
            elif text(chunk.type):
                size += pc.sum(pc.binary_length(chunk.cast(pa.large_string()))).as_py() or 0
    return size


def _schema(path: Path | None, header: list[str]) -> dict[str, str] | None:
    """The kinds of the columns that the schema file at ``path`` names ({"columns": {name: kind}},
    nothing else), checked against the table's ``header``; None without a schema."""
    if path is None:
        return None
    where = f"schema {shown_text(str(path))}"  # (a name's control characters escaped: no line reads as another)
    if not Path(path).is_file():  # a folder, a FIFO (that would block) or nothing
        raise DataError(f"{where}: not a file (no such file, or a folder or pipe)")
    with data_file_errors(Path(path)):
        raw = read_regular(path, MAX_SCHEMA_BYTES)
    if len(raw) > MAX_SCHEMA_BYTES:
        raise DataError(f"{where}: more than {MAX_SCHEMA_BYTES} bytes, the most a schema may have")
    try:  # (a byte-order mark, as some editors write one, is not part of the text: as a CSV file's and a config file's)
        spec = parse_json(raw.decode("utf-8-sig"))
    except ValueError as e:  # UnicodeDecodeError and JSON errors, nesting too deep included
        raise DataError(f"{where}: not a readable JSON file ({e})") from None
    cols = spec.get("columns") if isinstance(spec, dict) else None
    if not isinstance(cols, dict) or not all(isinstance(v, str) for v in cols.values()):
        raise DataError(f'{where}: expected {{"columns": {{"name": "numeric" or "categorical", ...}}}}')
    other = sorted(k for k in spec if k != "columns")
    if other:  # (a misspelt key would be unread: the kinds it meant to give inferred instead)
        raise DataError(f'{where}: holds keys other than "columns", which a schema does not read: {other[:5]}')
    bad = {k: v for k, v in cols.items() if v not in ("numeric", "categorical")}
    if bad:
        raise DataError(f"{where}: kinds must be numeric or categorical, got {bad}")
    if set(cols) != set(header):
        missing, extra = sorted(set(header) - set(cols)), sorted(set(cols) - set(header))
        raise DataError(f"{where} does not match the table's columns: not in the schema {missing}, not in the table {extra}")
    return cols


_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|infinity|nan)", re.IGNORECASE | re.ASCII)


def _number(cell: str) -> float | None:
    """The cell as a number (inf and NaN spelled out included: refused later in a numeric
    column), or None. Only plain decimal notation: ``float`` alone would also take ``5_0`` as
    50 and Arabic-Indic digits."""
    return float(cell) if _DECIMAL.fullmatch(cell) else None


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _shown_cell(cell: str) -> str:
    return repr(cell) if len(cell) <= 40 else repr(cell[:40]) + f"... ({len(cell)} characters)"


def describe_columns(columns: Sequence[Column], most: int = 12) -> str:
    """The columns as a run reads them, ``most`` of them named: "age numeric (whole numbers),
    colour categorical (blue, green, red)" (a name or category that is long or holds characters
    that do not print is quoted, as the messages quote cells)."""

    def shown(text: str) -> str:
        return text if text.isprintable() and len(text) <= 40 and "," not in text else _shown_cell(text)

    words = []
    for c in columns[:most]:
        if c.kind == "categorical":
            cats = ", ".join(shown(v) for v in c.categories[:5]) + (f", ... {c.levels} in all" if c.levels > 5 else "")
            words.append(f"{shown(c.name)} categorical ({cats})")
        else:
            words.append(f"{shown(c.name)} numeric" + (" (whole numbers)" if c.integer else ""))
    more = len(columns) - len(words)
    return ", ".join(words) + (f", and {more} more" if more > 0 else "")


def _check_number(path: Path, name: str, cell: str, v: float | None, place: str | None = None) -> None:
    """A numeric column's value must be a finite number within float32's range (the stored
    rows' type: a larger one would overflow the column's standardization)."""
    where = f"{place}, " if place is not None else ""
    shown = _shown_cell(cell)
    if v is None:
        raise DataError(f"{path.name}: {where}column {name!r} is numeric, but holds {shown}")
    if not math.isfinite(v) or abs(v) > _FLOAT32_MAX:
        raise DataError(
            f"{path.name}: {where}column {name!r} holds {shown}: a numeric column's values must be finite numbers "
            f"within +-{_FLOAT32_MAX:.4g} (a schema can make the column categorical)"
        )


def _check_not_a_slip(path: Path, name: str, cells: list[str], numbers: list[float | None], places: _Places) -> None:
    """Refuses (DataError) an inferred column of more than 20 distinct numbers but for a few cells
    (one, or at most 1 in 50), which would make it categorical, every number a category of its
    own, through what is most likely a typing slip or a missing entry marked otherwise than the
    table's markers. (A few codes and a word, "1".."5" and "unsure", stay categorical.)"""
    odd = [i for i, v in enumerate(numbers) if v is None]
    if odd and len(set(numbers) - {None}) > 20 and len(odd) <= max(1, len(numbers) // 50):
        schema = '{"columns": {"' + name + '": "categorical", ...}}'
        raise DataError(
            f"{path.name}: column {name!r} holds numbers but for {len(odd)} cell(s), the first "
            f"{_shown_cell(cells[odd[0]])} on {places[odd[0]]}; mend the cell (an empty cell, NA, NaN or ? marks "
            f"a missing entry), or give a schema ({schema}, --schema) if the column is categorical"
        )


_OTHER_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def _check_header(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """Refuses (DataError) a header that does not name each column once, saying which name is
    empty or repeated, and a file of one column whose every line holds as many semicolons, tabs
    or vertical bars as its header: a table separated by those (a European spreadsheet's CSV, a
    TSV), which read with commas would be one categorical column of whole lines."""
    if len(header) > MAX_COLUMNS:
        raise DataError(f"{path.name}: the header names {len(header)} columns, more than the {MAX_COLUMNS} a table may have")
    if len(header) == 1:
        for sep, name in _OTHER_SEPARATORS.items():
            count = header[0].count(sep)
            if count and all(r[0].count(sep) == count for r in rows):
                raise DataError(
                    f"{path.name}: one column, every line split by {name} as its header is ({_shown_cell(header[0])}): "
                    f"a table separated by {name}; dgmkit reads comma-separated files (a cell holding a comma "
                    "quoted): save it so"
                )
    for j, h in enumerate(header):
        if not h:
            raise DataError(f"{path.name}: the header's column {j + 1} has no name (every column needs one)")
        hidden = invisible_character(h)
        if hidden is not None:  # (a name is printed back, in notes and messages: U+202E would show it as another)
            raise DataError(
                f"{path.name}: the header's column {j + 1}, {_shown_cell(h)}, holds the invisible or control character "
                f"U+{ord(hidden):04X}, which can make a name show as another: rename the column"
            )
        if h in header[:j]:
            raise DataError(
                f"{path.name}: the header names {h!r} twice (columns {header.index(h) + 1} and {j + 1}); each column "
                "needs a name of its own"
            )


def _check_not_unique(path: Path, name: str, cats: tuple[str, ...], observed: int) -> None:
    """Refuses (DataError) an inferred categorical column of more than 20 values, most of them
    seen once (more distinct values than half its observed cells): an identifier, or numbers
    written with symbols (``$1,234``, ``12%``), each of which would be a category of its own, a
    new row's value none of them. A schema that names it categorical takes it as it is."""
    if len(cats) > 20 and 2 * len(cats) > observed:
        schema = '{"columns": {"' + name + '": "categorical", ...}}'
        raise DataError(
            f"{path.name}: column {name!r} holds {len(cats)} distinct values in {observed} cells "
            f"({', '.join(map(_shown_cell, cats[:3]))}, ...), each a category of its own if it were categorical: an "
            "identifier (leave it out), numbers written with symbols (write them plain: 1234.5, not $1,234.50), or, if "
            f"it is categorical, a schema that says so ({schema}, --schema)"
        )


def _check_names_not_data(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """Refuses a first line that looks like a row of data read as the header: numbers only; mostly
    numbers beside a word that is also a value of its column below (iris without its header:
    "5.1,3.5,1.4,0.2,setosa"); or words that are each a value of their column below ("red,small"
    over red/blue and small/large). A word among its column's values beside other names ("smoker"
    over smoker/non-smoker in "id,2019,smoker"), or numbers that name columns (pandas'
    "0,1,2,label"), are names."""
    if all(_number(h) is not None for h in header):
        raise DataError(
            f"{path.name}: its first line holds numbers only ({', '.join(map(_shown_cell, header[:3]))}"
            f"{', ...' if len(header) > 3 else ''}): a table needs a header line naming its columns (a schema naming "
            "them says that these are the names)"
        )
    words = [j for j, h in enumerate(header) if _number(h) is None]
    echoes = [j for j in words if any(r[j] == header[j] for r in rows)]
    mostly_numbers = 2 * (len(header) - len(words)) > len(header)
    echoed = echoes[0] if echoes and (mostly_numbers or (len(echoes) == len(words) >= 2)) else None
    if echoed is not None:
        raise DataError(
            f"{path.name}: its first line's {_shown_cell(header[echoed])} (column {echoed + 1}) is also a value of that "
            "column below: the first line looks like a row of data, not a header line naming the columns; add one "
            "(a schema naming the columns says that these are the names)"
        )


def _check_some_observed(path: Path, rows: list[list[str]], places: _Places) -> None:
    """Refuses a line whose every cell is empty or missing (a spreadsheet's blank line), named
    where it is, before it is a row of NaN that a later check could only count."""
    empty = [places[i] for i, r in enumerate(rows) if all(c.lower() in MISSING_CELLS for c in r)]
    if empty:
        shown = ", ".join(empty[:3]) + (f" and {len(empty) - 3} more" if len(empty) > 3 else "")
        one = len(empty) == 1
        raise DataError(
            f"{path.name}: {shown} {'holds' if one else 'hold'} no observed value (every cell empty or missing); leave "
            f"{'it' if one else 'them'} out"
        )


def read_table(
    path: str | Path, schema: str | os.PathLike[str] | None = None, columns: tuple[Column, ...] | None = None
) -> tuple[np.ndarray, tuple[Column, ...]]:
    """The table's rows (N, D) as float64 (NaN: missing; module docstring) and its columns.
    ``columns``: encode with these (a table a model was trained on: the same names in the same
    order, its standardization and its categories) instead of the table's own."""
    path = Path(path)
    header, rows, places = _read_cells(path)
    _check_header(path, header, rows)
    _check_some_observed(path, rows, places)
    if columns is not None:
        return _encode(path, header, rows, places, columns), columns
    # (a schema naming the columns says that the first line holds their names; a Parquet file's names are its
    # metadata, never a row of data)
    if schema is None and path.suffix.lower() != ".parquet":
        _check_names_not_data(path, header, rows)
    kinds = _schema(Path(schema) if schema is not None else None, header)
    n, d = len(rows), len(header)
    x = np.full((n, d), np.nan)
    found: list[Column] = []
    for j, name in enumerate(header):
        cells = [r[j] for r in rows]
        present = [i for i, c in enumerate(cells) if c.lower() not in MISSING_CELLS]
        numbers = [_number(cells[i]) for i in present]
        kind = kinds[name] if kinds else ("numeric" if all(v is not None for v in numbers) else "categorical")
        if not present:
            raise DataError(f"{path.name}: column {name!r} has no observed value")
        if not kinds:
            _check_not_a_slip(path, name, [cells[i] for i in present], numbers, places.subset(present))
        if kind == "numeric":
            for i, v in zip(present, numbers):
                _check_number(path, name, cells[i], v, places[i])
            values = np.array(numbers)
            x[present, j], mean, std = _standardized(values)
            whole = bool(np.all(values == np.round(values)) and np.abs(values).max() < 2**53)
            found.append(Column(name, "numeric", mean, std, integer=whole))
        else:
            cats = tuple(sorted({cells[i] for i in present}))
            if len(cats) > MAX_CATEGORIES:
                raise DataError(
                    f"{path.name}: column {name!r} has {len(cats)} categories, more than {MAX_CATEGORIES} (the most a "
                    "categorical column may have): group the rare ones, or leave the column out"
                )
            if not kinds:
                _check_not_unique(path, name, cats, len(present))
            index = {c: k for k, c in enumerate(cats)}
            x[present, j] = [index[cells[i]] for i in present]
            found.append(Column(name, "categorical", categories=cats))
    return x, tuple(found)


def _standardized(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(values - mean) / std, the mean and the standard deviation (1 for a constant column)."""
    mean, std = float(values.mean()), float(values.std())
    if std < 1e-150 and values.min() != values.max():  # their squares underflow (to 0: a constant column)
        scale = float(np.abs(values).max())
        std = float((values / scale).std()) * scale
    std = std if std > 0 else 1.0
    return (values - mean) / std, mean, std


def _encode(
    path: Path, header: list[str], rows: list[list[str]], places: _Places, columns: tuple[Column, ...]
) -> np.ndarray:
    # (names and categories compared stripped, as the readers give them: a run of a Parquet file read before they
    # were stripped recorded 'height ' and 'male ')
    if header != [c.name.strip() for c in columns]:
        raise DataError(f"{path.name}: columns {header}, but the model's table has {[c.name for c in columns]}")
    x = np.full((len(rows), len(columns)), np.nan)
    for j, c in enumerate(columns):
        index = {v.strip(): k for k, v in enumerate(c.categories)}
        if len(index) < len(c.categories):
            raise DataError(f"the model's column {c.name!r} has categories that differ only in spaces: {list(c.categories)}")
        for i, r in enumerate(rows):
            cell = r[j]
            if cell.lower() in MISSING_CELLS:
                continue
            if c.kind == "numeric":
                v = _number(cell)
                _check_number(path, c.name, cell, v, places[i])
                assert v is not None  # _check_number raised otherwise
                x[i, j] = (v - c.mean) / c.std
                _check_standardized(path, c, cell, x[i, j], places[i])
            elif cell in index:
                x[i, j] = index[cell]
            else:
                raise DataError(
                    f"{path.name}: {places[i]}, column {c.name!r}: {_shown_cell(cell)} is not one of its categories "
                    f"{list(c.categories)}"
                )
    return x


# a standardized value beyond this has a square that overflows float32 (inf): the numeric column's Gaussian
# log-density, -(x - mu)^2 / 2 sigma^2, is -inf or NaN there whatever the model's weights
_SQUARE_SAFE = math.sqrt(_FLOAT32_MAX)


def _check_standardized(path: Path, c: Column, cell: str, z: float, place: str) -> None:
    """Refuses (DataError) a value of a numeric column that, standardized by the table a model was
    trained on, lies so far out that its square overflows float32 (a finite 1e30 in a column of
    values near 2): the model would score it as no number (it gave a NaN log weight)."""
    if abs(z) > _SQUARE_SAFE:
        raise DataError(
            f"{path.name}: {place}, column {c.name!r} holds {_shown_cell(cell)}, {abs(z):.3g} standard deviations from "
            f"the column's mean in the table the model was trained on (mean {c.mean:.4g}, sd {c.std:.4g}), more than the "
            f"{_SQUARE_SAFE:.3g} whose square float32 holds: the column's Gaussian likelihood gives it no finite "
            "log-density; correct the value (its units?) or leave the cell empty (a missing entry)"
        )


def _unstandardized(v: float, c: Column, low: float, high: float) -> str:
    """A stored (float32, standardized) value ``v`` in the column's units: the shortest decimal
    that reads back (``read_table`` with these columns) as the same float32 value, the standardized
    values strictly between ``low`` and ``high`` (``_float32_bounds``) rounding to it. The coarsest
    rounding that does, so that a cell that was ``40`` in the file, stored as 39.9999997 after
    standardization, is written ``40`` again, not with digits of float32's rounding; a column
    far from 0 (a mean large against the spread) keeps the digits it needs, beyond float32's 7
    significant ones."""
    value = v * c.std + c.mean
    reach = min(v - low, high - v) * c.std  # the value moved less than this in the column's units reads back the same
    if value == 0:
        return "0"
    if not math.isfinite(value) or not 0 < reach < math.inf:
        return repr(value)
    # rounded at the place whose half unit is within reach, the value fits (but for the rounding of
    # these operations: the next places are tried); at coarser places it is one number for as long as
    # it fits (it lies within reach of the value), so the coarsest place that fits ends the search
    sure = math.ceil(-math.log10(2 * reach))

    def reads_back(n: float) -> bool:  # (within float32's range too: read_table refuses 3.4028235e+38)
        return low < (n - c.mean) / c.std < high and abs(n) <= _FLOAT32_MAX

    for places in range(sure, sure + 8):
        near = round(value, places) + 0.0  # (+ 0.0: no "-0")
        if reads_back(near):
            break
    else:
        return repr(value)
    for coarse in range(places - 1, sure - 340, -1):
        if near == 0:  # (no coarser number)
            break
        coarser = round(value, coarse) + 0.0
        if not reads_back(coarser):
            break
        near = coarser
    text = repr(near)
    return text[:-2] if text.endswith(".0") else text


def _float32_bounds(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each value of ``rows`` as float32, the midpoints to its float32 neighbours (float64,
    exact): the numbers strictly between them round to it (NaN where the value is NaN)."""
    stored = rows.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        below = np.nextafter(stored, np.float32(-np.inf)).astype(np.float64)
        above = np.nextafter(stored, np.float32(np.inf)).astype(np.float64)
        return (stored + below) / 2, (stored + above) / 2


def write_table(
    rows: np.ndarray, columns: tuple[Column, ...], original: str | Path | None = None, first: bool = False
) -> str:
    """CSV text of stored rows (N, D) in the table's own units: numeric columns un-standardized,
    categorical indices as their category; a NaN as an empty cell. ``original``: the table these
    rows were read from (``read_table``; with ``first``, its first N rows), whose observed cells
    are written as they were there, character for character; only its missing cells take values
    from ``rows``."""
    out = [[c.name for c in columns]]
    kept = None
    if original is not None:
        header, kept, _ = _read_cells(Path(original))
        if header != [c.name for c in columns]:  # (its cells were written under other columns' names, or IndexError)
            raise DataError(
                f"{Path(original).name}: columns {header}, but the rows to write have {[c.name for c in columns]}; "
                "its cells can only be kept under their own columns"
            )
    if kept is not None and first:
        kept = kept[: len(rows)]
    if original is not None and kept is not None and len(kept) != len(rows):
        raise DataError(f"{Path(original).name} has {len(kept)} rows, the values to write {len(rows)}")
    values = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    lows, highs = _float32_bounds(values)
    for i, (r, low, high) in enumerate(zip(values.tolist(), lows.tolist(), highs.tolist())):
        cells = []
        for j, (v, c) in enumerate(zip(r, columns)):
            if kept is not None and kept[i][j].lower() not in MISSING_CELLS:
                cells.append(kept[i][j])
            elif math.isnan(v):
                cells.append("")
            elif c.kind == "numeric" and c.integer and abs(v * c.std + c.mean) < 2**53:
                cells.append(str(round(v * c.std + c.mean)))
            elif c.kind == "numeric":
                cells.append(_unstandardized(v, c, low[j], high[j]))
            elif math.isinf(v):  # (round's OverflowError)
                raise DataError(f"row {i}, column {c.name!r}: {v} is no index of its {len(c.categories)} categories")
            else:
                cells.append(c.categories[int(min(max(round(v), 0), len(c.categories) - 1))])
        out.append(cells)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(out)
    return buf.getvalue()
