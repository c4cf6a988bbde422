"""Delimited interaction files (TSV/CSV with a header) read fast, with errors that point at a line.

pandas parses; a vectorized byte scan counts the fields of every line first, so that a malformed line is
reported with its number instead of being silently padded with NaN. Line numbers are those of the file
(the header is line 1, blank lines count), which is what an editor shows.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from distillrec.errors import DataError

_NEWLINE, _CR = 10, 13


@dataclass
class Table:
    """The parsed rows of one file, and for each row the line of the file it came from."""

    path: Path
    columns: list[str]
    frame: pd.DataFrame
    lines: np.ndarray  # int64 [n_rows], 1-based line number in the file

    def __len__(self) -> int:
        return len(self.frame)

    def __contains__(self, column: str) -> bool:
        return column in self.columns

    def where(self, row: int) -> str:
        """'<file>, line N' for a 0-based data row, the prefix of every message about that row."""
        return f"{self.path}, line {int(self.lines[row])}"

    def fail(self, row: int, problem: str) -> DataError:
        return DataError(f"{self.where(row)}: {problem}")

    def require(self, *names: str) -> None:
        for name in names:
            if name not in self.columns:
                raise DataError(
                    f"{self.path}: missing required column '{name}'; columns found: {', '.join(self.columns)}"
                )

    def raw(self, column: str, row: int) -> str:
        value = self.frame[column].iloc[row]
        return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)

    def int_column(self, column: str, *, low: int = 0) -> np.ndarray:
        """The column as int64; the first empty, non-integer or too small value is an error."""
        col = self.frame[column]
        if col.dtype.kind in "iu":
            values = col.to_numpy(dtype=np.int64)
        else:
            numbers = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
            bad = ~np.isfinite(numbers) | (numbers != np.round(numbers)) | (np.abs(numbers) >= 2.0**63)
            if bad.any():
                row = int(np.argmax(bad))
                raw = self.raw(column, row)
                what = (
                    "is empty"
                    if raw == ""
                    else f"'{raw}' is too large for an id"
                    if np.isfinite(numbers[row]) and numbers[row] == np.round(numbers[row])
                    else f"'{raw}' is not an integer"
                )
                raise self.fail(row, f"{column} {what}")
            values = numbers.astype(np.int64)
        below = values < low
        if below.any():
            row = int(np.argmax(below))
            problem = "is negative" if low == 0 else f"is below {low}"
            raise self.fail(row, f"{column} {values[row]} {problem}")
        return values

    def float_column(self, column: str) -> np.ndarray:
        """The column as float64; the first empty or non-numeric value is an error."""
        col = self.frame[column]
        if col.dtype.kind in "iuf":
            values = col.to_numpy(dtype=np.float64)
        else:
            values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argmax(bad))
            raw = self.raw(column, row)
            what = "is empty" if raw == "" else f"'{raw}' is not a finite number"
            raise self.fail(row, f"{column} {what}")
        return values

    def str_column(self, column: str) -> np.ndarray:
        """The column as strings (object array); an empty value is an error."""
        values = self.frame[column].astype(str).to_numpy(dtype=object)
        empty = values == ""
        if empty.any():
            raise self.fail(int(np.argmax(empty)), f"{column} is empty")
        return values

    def check_below(self, column: str, values: np.ndarray, high: int, why: str) -> None:
        """Every value must be < high; `why` says where the bound comes from (e.g. the feature file)."""
        over = values >= high
        if over.any():
            row = int(np.argmax(over))
            raise self.fail(row, f"{column} {values[row]} is out of range: {why}")

    def check_dense(self, column: str, values: np.ndarray, index_file: str | None = None) -> None:
        """Ids that index arrays must be the dense indices 0..N-1 (see `sparse_id_row`)."""
        row = sparse_id_row(values)
        if row is not None:
            raise self.fail(row, sparse_id_problem(column, values, index_file))


def sparse_id_row(values: np.ndarray) -> int | None:
    """The row of the largest id when ids are far from dense (a few unused ids are fine). A sparse original id
    (say 10**12) would make every per-user or per-item array that large, so it is refused before anything is
    allocated."""
    if len(values) == 0:
        return None
    if int(values.max()) + 1 > 2 * len(np.unique(values)) + 10_000:
        return int(np.argmax(values))
    return None


def sparse_id_problem(column: str, values: np.ndarray, index_file: str | None = None) -> str:
    hint = f" ({index_file} maps them to original ids)" if index_file else ""
    return (
        f"{column} {int(values.max())} is far beyond the {len(np.unique(values))} distinct ids: ids must be "
        f"dense indices 0..N-1{hint}; a file of original ids reads in the RecBole format (`.inter` with "
        "`user_id:token`), which maps them"
    )


def _line_scan(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per physical line: start offset, length without the line break, and number of separators."""
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == _NEWLINE)
    if len(buf) and buf[-1] != _NEWLINE:
        ends = np.append(ends, len(buf))
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    lengths = ends - starts
    has_cr = np.zeros(len(ends), dtype=bool)
    nonempty = lengths > 0
    last = np.minimum(ends - 1, len(buf) - 1)
    has_cr[nonempty] = buf[last[nonempty]] == _CR
    return starts, lengths - has_cr, ends


def read_table(path: Path, sep: str = "\t", *, as_str: bool = False) -> Table:
    """Read a delimited file with a header row; malformed lines are DataErrors naming their line.

    `as_str` keeps every value as text (for token columns, e.g. RecBole's), otherwise pandas infers
    numbers and the typed accessors of `Table` validate them.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        raise DataError(f"{path}: file is empty (expected a header line)")
    starts, lengths, ends = _line_scan(data)
    sep_byte = ord(sep)
    buf = np.frombuffer(data, dtype=np.uint8)
    # separators per line: cumulative count of separator bytes, differenced at line boundaries
    cum = np.concatenate([[0], np.cumsum(buf == sep_byte, dtype=np.int64)])
    n_sep = cum[starts + lengths] - cum[starts]
    blank = lengths == 0
    header_line = int(np.argmax(~blank))
    header = data[starts[header_line] : starts[header_line] + lengths[header_line]].decode("utf-8", "replace")
    columns = [c.strip() for c in header.split(sep)]
    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        raise DataError(f"{path}, line {header_line + 1}: column '{dup}' appears twice in the header")
    quoted = sep != "\t" and b'"' in data
    line_no = np.arange(1, len(starts) + 1, dtype=np.int64)
    is_row = ~blank & (line_no > header_line + 1)
    if not quoted:
        wrong = is_row & (n_sep != len(columns) - 1)
        if wrong.any():
            i = int(np.argmax(wrong))
            raise DataError(
                f"{path}, line {i + 1}: malformed row with {int(n_sep[i]) + 1} fields, expected "
                f"{len(columns)} ({', '.join(columns)})"
            )
    kwargs: dict = {"sep": sep, "header": 0, "engine": "c", "skip_blank_lines": True}
    if sep == "\t":
        kwargs["quoting"] = csv.QUOTE_NONE
    if as_str:
        kwargs.update(dtype=str, keep_default_na=False, na_filter=False)
    try:
        frame = pd.read_csv(path, encoding="utf-8-sig", **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        msg = " ".join(str(exc).split())
        raise DataError(f"{path}: cannot be parsed as {'TSV' if sep == chr(9) else 'CSV'} ({msg})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    lines = line_no[is_row]
    if len(lines) != len(frame):  # quoted fields spanning lines: fall back to row numbers
        lines = np.arange(2, len(frame) + 2, dtype=np.int64)
    return Table(path=path, columns=list(frame.columns), frame=frame, lines=lines)


def first_duplicate(*columns: np.ndarray) -> tuple[int, int] | None:
    """Rows (i, j), i < j, of the first repeated combination of `columns` in file order, or None.

    Vectorized: one lexsort, then adjacent rows compared; the pair reported is the one whose second
    occurrence comes first in the file, which is where a person reading the file would notice it.
    """
    n = len(columns[0])
    if n < 2:
        return None
    order = np.lexsort((np.arange(n), *columns[::-1]))
    same = np.ones(n - 1, dtype=bool)
    for col in columns:
        same &= col[order[1:]] == col[order[:-1]]
    if not same.any():
        return None
    firsts, seconds = order[:-1][same], order[1:][same]
    k = int(np.argmin(seconds))
    return int(firsts[k]), int(seconds[k])
