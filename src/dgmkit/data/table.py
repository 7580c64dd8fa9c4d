"""Tables: rows of numeric and categorical columns, read from CSV (or Parquet), with a schema.

A table becomes continuous rows (N, 1, 1, D) in the column order of the file: a numeric column
standardized (mean 0, sd 1 over its observed values; ``Column.mean`` and ``Column.std`` take
it back), a categorical column as its category's index 0..K-1 among the sorted distinct
values. An empty cell, ``NA``, ``NaN`` or ``?`` is a missing entry (NaN). The schema says each
column's kind: a JSON file ``{"columns": {"age": "numeric", "sex": "categorical", ...}}``
naming every column, or, without one, inferred: a column whose observed values all read as
finite numbers is numeric, any other is categorical. The columns (``Dataset.columns``) give
the mixed likelihood its heads (``--likelihood mixed``) and ``dgm impute`` its CSV output.
"""

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dgmkit.errors import DataError

__all__ = ["Column", "read_table", "write_table", "TABLE_SUFFIXES", "MISSING_CELLS", "MAX_CATEGORIES"]

TABLE_SUFFIXES = (".csv", ".parquet")
MISSING_CELLS = ("", "na", "nan", "?", "null", "none")
MAX_CATEGORIES = 256
MAX_TABLE_BYTES = 1 << 30
MAX_COLUMNS = 10_000


@dataclass(frozen=True)
class Column:
    """One column: ``kind`` numeric (standardized by ``mean`` and ``std``) or categorical
    (``categories``, their index being the stored value)."""

    name: str
    kind: str
    mean: float = 0.0
    std: float = 1.0
    categories: tuple[str, ...] = ()

    @property
    def levels(self) -> int:
        """K for a categorical column, 0 for a numeric one."""
        return len(self.categories) if self.kind == "categorical" else 0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "mean": self.mean,
            "std": self.std,
            "categories": list(self.categories),
        }


def _read_cells(path: Path) -> tuple[list[str], list[list[str]]]:
    size = path.stat().st_size
    if size > MAX_TABLE_BYTES:
        raise DataError(f"{path.name}: {size} bytes, more than the {MAX_TABLE_BYTES} a table may have")
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(
                f"{path.name}: reading Parquet needs pyarrow (pip install pyarrow), or give the table as CSV"
            ) from None
        try:
            t = pq.read_table(path)
        except Exception as e:  # noqa: BLE001 - any reader failure is a bad file, said in one line
            raise DataError(f"{path.name}: not a readable Parquet file ({type(e).__name__}: {e})") from None
        header = [str(n) for n in t.column_names]
        cols = [["" if v is None else str(v) for v in t.column(i).to_pylist()] for i in range(t.num_columns)]
        return header, [list(r) for r in zip(*cols)]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path.name}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as e:
        raise DataError(f"{path.name}: not a readable CSV file ({e})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise DataError(f"{path.name}: a table needs a header row and at least one row of values")
    header = [h.strip() for h in rows[0]]
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise DataError(f"{path.name}: row {i} has {len(r)} cells, the header {len(header)}")
    return header, [[c.strip() for c in r] for r in rows[1:]]


def _schema(path: Path | None, header: list[str]) -> dict[str, str] | None:
    if path is None:
        return None
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"schema {path}: not a readable JSON file ({e})") from None
    cols = spec.get("columns") if isinstance(spec, dict) else None
    if not isinstance(cols, dict) or not all(isinstance(v, str) for v in cols.values()):
        raise DataError(f'schema {path}: expected {{"columns": {{"name": "numeric" or "categorical", ...}}}}')
    bad = {k: v for k, v in cols.items() if v not in ("numeric", "categorical")}
    if bad:
        raise DataError(f"schema {path}: kinds must be numeric or categorical, got {bad}")
    if set(cols) != set(header):
        missing, extra = sorted(set(header) - set(cols)), sorted(set(cols) - set(header))
        raise DataError(
            f"schema {path} does not match the table's columns: not in the schema {missing}, not in the table {extra}"
        )
    return cols


def _number(cell: str) -> float | None:
    try:
        v = float(cell)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def read_table(
    path: str | Path, schema: str | Path | None = None, columns: tuple[Column, ...] | None = None
) -> tuple[np.ndarray, tuple[Column, ...]]:
    """The table's rows (N, D) as float64 (NaN: missing; module docstring) and its columns.
    ``columns``: encode with these (a table a model was trained on: the same names in the same
    order, its standardization and its categories) instead of the table's own."""
    path = Path(path)
    header, rows = _read_cells(path)
    if len(header) > MAX_COLUMNS or len(set(header)) != len(header) or any(not h for h in header):
        raise DataError(f"{path.name}: the header must name up to {MAX_COLUMNS} columns, each once and none empty")
    if columns is not None:
        return _encode(path, header, rows, columns), columns
    kinds = _schema(Path(schema) if schema is not None else None, header)
    n, d = len(rows), len(header)
    x = np.full((n, d), np.nan)
    columns = []
    for j, name in enumerate(header):
        cells = [r[j] for r in rows]
        present = [i for i, c in enumerate(cells) if c.lower() not in MISSING_CELLS]
        numbers = [_number(cells[i]) for i in present]
        kind = kinds[name] if kinds else ("numeric" if all(v is not None for v in numbers) else "categorical")
        if not present:
            raise DataError(f"{path.name}: column {name!r} has no observed value")
        if kind == "numeric":
            if any(v is None for v in numbers):
                bad = cells[present[[v is None for v in numbers].index(True)]]
                raise DataError(f"{path.name}: column {name!r} is numeric, but holds {bad!r}")
            values = np.array(numbers)
            mean, std = float(values.mean()), float(values.std())
            std = std if std > 0 else 1.0
            x[present, j] = (values - mean) / std
            columns.append(Column(name, "numeric", mean, std))
        else:
            cats = tuple(sorted({cells[i] for i in present}))
            if len(cats) > MAX_CATEGORIES:
                raise DataError(f"{path.name}: column {name!r} has {len(cats)} categories, more than {MAX_CATEGORIES}")
            index = {c: k for k, c in enumerate(cats)}
            x[present, j] = [index[cells[i]] for i in present]
            columns.append(Column(name, "categorical", categories=cats))
    return x, tuple(columns)


def _encode(path: Path, header: list[str], rows: list[list[str]], columns: tuple[Column, ...]) -> np.ndarray:
    if header != [c.name for c in columns]:
        raise DataError(f"{path.name}: columns {header}, but the model's table has {[c.name for c in columns]}")
    x = np.full((len(rows), len(columns)), np.nan)
    for j, c in enumerate(columns):
        index = {v: k for k, v in enumerate(c.categories)}
        for i, r in enumerate(rows):
            cell = r[j]
            if cell.lower() in MISSING_CELLS:
                continue
            if c.kind == "numeric":
                v = _number(cell)
                if v is None:
                    raise DataError(f"{path.name}: row {i + 2}, column {c.name!r} is numeric, but holds {cell!r}")
                x[i, j] = (v - c.mean) / c.std
            elif cell in index:
                x[i, j] = index[cell]
            else:
                raise DataError(
                    f"{path.name}: row {i + 2}, column {c.name!r}: {cell!r} is not one of its categories "
                    f"{list(c.categories)}"
                )
    return x


def write_table(rows: np.ndarray, columns: tuple[Column, ...]) -> str:
    """CSV text of stored rows (N, D) in the table's own units: numeric columns un-standardized,
    categorical indices as their category; a NaN as an empty cell."""
    out = [[c.name for c in columns]]
    for r in np.asarray(rows, dtype=np.float64).reshape(len(rows), -1):
        cells = []
        for v, c in zip(r, columns):
            if math.isnan(v):
                cells.append("")
            elif c.kind == "numeric":
                cells.append(f"{v * c.std + c.mean:.7g}")  # stored as float32: 7 significant digits
            else:
                cells.append(c.categories[int(min(max(round(v), 0), len(c.categories) - 1))])
        out.append(cells)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(out)
    return buf.getvalue()
