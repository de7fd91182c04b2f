"""Tables written to disk in chunks, never half-written: ``requests.csv`` / ``steps.csv`` (or ``.parquet``).

:class:`TableWriter` appends chunks of columns (dicts of equal-length arrays) to a file under a
temporary name beside the destination (:func:`simllm.atomic.temp_name`) and renames it when
closed; an exception removes it, and a killed process leaves at most the hidden temporary file,
never a truncated table. CSV chunks are formatted exactly as one ``DataFrame.to_csv`` of the whole
table would be (``float_format="%.12g"``, empty field for NaN, ``\\n`` line ends); Parquet chunks
become row groups of one ``pyarrow.parquet.ParquetWriter`` file. The same rows give the same bytes.

Format choice (:func:`choose_format`): ``csv`` or ``parquet`` as asked; ``auto`` (``simllm run``'s
default) is CSV up to :data:`CSV_MAX_REQUESTS` requests and Parquet above, where CSV costs more
time to write than the simulation itself (formatting every float in Python) and ~6x the disk.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ..atomic import temp_name

FORMATS = ("auto", "csv", "parquet")

CSV_MAX_REQUESTS = 200_000
"""``--format auto`` writes CSV up to this many requests, Parquet above."""

CSV_FLOAT_FORMAT = "%.12g"


def _quote(s: str) -> str:
    """A CSV field as Python's csv module (QUOTE_MINIMAL) writes it."""
    if "," in s or '"' in s or "\n" in s or "\r" in s:
        return '"' + s.replace('"', '""') + '"'
    return s


def _csv_field_lists(cols: dict) -> Optional[list]:
    """Each column as a list of CSV fields formatted as ``DataFrame.to_csv(float_format="%.12g")`` formats
    them (NaN and None empty), or None for a column of another kind (the caller lets pandas write it)."""
    out = []
    for v in cols.values():
        a = np.asarray(v)
        k = a.dtype.kind
        if k == "f":
            fmt = CSV_FLOAT_FORMAT
            out.append(["" if x != x else fmt % x for x in a.tolist()])
        elif k in "iu":
            out.append(list(map(str, a.tolist())))
        elif k in "OU" or a.dtype.name == "str" or isinstance(a.dtype, pd.StringDtype):
            vals = a.tolist()
            if not all(type(x) is str for x in vals):
                return None
            out.append([_quote(x) if x else x for x in vals])
        else:
            return None
    return out


def csv_text(cols: dict, header: bool) -> Optional[str]:
    """Rows of ``cols`` as CSV text (``\n`` line ends), or None if a column needs pandas' formatting."""
    fields = _csv_field_lists(cols)
    if fields is None:
        return None
    head = ",".join(_quote(str(c)) for c in cols) + "\n" if header else ""
    n = len(fields[0]) if fields else 0
    if n == 0:
        return head
    return head + "\n".join(map(",".join, zip(*fields))) + "\n"


def choose_format(format: str, requests: int) -> str:
    """``csv`` or ``parquet`` for a run of ``requests`` requests (``auto``: see the module docstring)."""
    if format != "auto":
        return format
    return "parquet" if requests > CSV_MAX_REQUESTS else "csv"


class TableWriter:
    """Write a table chunk by chunk to ``path`` (``.csv`` or ``.parquet``, see the module docstring).

    Use as a context manager, or call :meth:`close` (success: rename) / :meth:`abort`."""

    def __init__(self, path: str | Path, format: str):
        if format not in ("csv", "parquet"):
            raise ValueError(f"format must be csv or parquet, got {format!r}")
        self.path = Path(path)
        self.format = format
        self.tmp = temp_name(self.path)
        self.rows = 0
        self._columns: Optional[list] = None
        self._f = None
        self._pq = None
        self.closed = False
        if format == "csv":
            self._f = open(self.tmp, "w", encoding="utf-8", newline="")

    def write(self, cols: dict) -> None:
        """Append the rows of ``cols`` (column name -> array; the same columns every call)."""
        df = pd.DataFrame(cols)
        if self._columns is None:
            self._columns = list(df.columns)
        elif list(df.columns) != self._columns:
            raise ValueError(f"{self.path.name}: chunk columns {list(df.columns)} differ from {self._columns}")
        if self.format == "csv":
            text = csv_text(cols, header=self.rows == 0) if len(df) else None
            if text is not None:  # the same text, formatted ~3x faster than pandas does
                self._f.write(text)
            else:
                df.to_csv(self._f, index=False, header=self.rows == 0, lineterminator="\n",
                          float_format=CSV_FLOAT_FORMAT)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            t = pa.Table.from_pandas(df, preserve_index=False)
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.tmp, t.schema)
            elif t.schema != self._pq.schema:
                t = t.cast(self._pq.schema)
            self._pq.write_table(t)
        self.rows += len(df)

    def close(self, columns: Optional[list] = None) -> Path:
        """Finish the file and rename it onto ``path``; ``columns`` names the header of a table with no rows.
        Closing again does nothing."""
        if self.closed:
            return self.path
        self.closed = True
        if self.rows == 0:
            empty = pd.DataFrame({c: [] for c in (self._columns or columns or [])})
            if self.format == "csv":
                empty.to_csv(self._f, index=False, lineterminator="\n")
            else:
                empty.to_parquet(self.tmp, index=False)
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._pq is not None:
            self._pq.close()
            self._pq = None
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (the destination is left as it was)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            if self._f is not None:
                self._f.close()
            if self._pq is not None:
                self._pq.close()
        self._f = self._pq = None
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()

    def __enter__(self) -> "TableWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()  # (no-op if already closed)
        else:
            self.abort()
