"""Reading text trace files so that every problem is a :class:`TraceFormatError` naming the file.

* :func:`check_text` — the file is non-empty UTF-8 text (a leading BOM is allowed), else an
  error with the line of the first NUL byte or undecodable byte;
* :func:`iter_line_blocks` — the text in blocks of whole lines (BOM stripped), with the
  1-based line number of each block's first line, for streaming parsers (bounded memory);
* :func:`read_csv_strings` — a comma-separated table with a header, every field a string,
  read columnar by ``pyarrow.csv``; a row with more or fewer fields than the header (such as a
  truncated last row) is an error naming its line.
"""
from __future__ import annotations

import codecs
import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from traces.errors import TraceFormatError

BOM = b"\xef\xbb\xbf"
BLOCK_BYTES = 1 << 20  # 1 MiB of text per block


def check_text(path: str | os.PathLike, block_bytes: int = BLOCK_BYTES) -> None:
    """Raise TraceFormatError unless ``path`` is a non-empty UTF-8 text file (BOM allowed).

    Reads the file once in blocks of ``block_bytes`` bytes; memory stays bounded by a block."""
    for _ in iter_line_blocks(path, block_bytes):
        pass


def iter_line_blocks(path: str | os.PathLike, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, str]]:
    """Yield ``(first_line, text)``: the file's decoded text in blocks of whole lines
    (about ``block_bytes`` bytes each; BOM stripped), ``first_line`` 1-based.

    Raises TraceFormatError for an empty file, binary data (a NUL byte) or invalid UTF-8,
    with the line where the bad byte sits."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    line = 1
    carry = ""
    first = True
    with open(path, "rb") as f:
        while True:
            chunk = f.read(block_bytes)
            if first:
                if not chunk:
                    raise TraceFormatError(path, None, None, "empty file")
                if chunk.startswith(BOM):
                    chunk = chunk[len(BOM):]
                first = False
            final = not chunk
            if b"\x00" in chunk:
                nul = chunk.index(b"\x00")
                raise TraceFormatError(path, line + count_line_ends(carry) + _count_ends(chunk[:nul]), None,
                                       "binary data (a NUL byte), not a text trace")
            text = carry + _decode(path, decoder, chunk, final, line + count_line_ends(carry))
            if final:
                if text:
                    yield line, text
                return
            cut = text.rfind("\n") + 1
            carry = text[cut:]
            if cut:
                yield line, text[:cut]
                line += count_line_ends(text[:cut])


def count_line_ends(text: str) -> int:
    """Number of line ends (``\\r\\n``, ``\\r`` or ``\\n``, as the CSV parser counts them)."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _count_ends(data: bytes) -> int:
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def _decode(path, decoder, chunk: bytes, final: bool, line: int) -> str:
    """Decode one chunk; an invalid byte becomes a TraceFormatError with its line."""
    try:
        return decoder.decode(chunk, final)
    except UnicodeDecodeError as e:
        raise TraceFormatError(path, line + _count_ends(chunk[: e.start]), None,
                               f"not UTF-8 text (byte 0x{chunk[e.start]:02x})"
                               if e.start < len(chunk) else "not UTF-8 text (truncated character at the end)") from None


@dataclass
class CsvStrings:
    """A CSV table whose every field is a string: ``names`` (header, stripped), the pyarrow
    ``table``, and the file ``path`` for errors."""

    path: Path
    names: list[str]
    table: object  # pyarrow.Table
    skip_rows: int = 0

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def has(self, name: str) -> bool:
        """Whether the header has a column ``name``."""
        return name in self.names

    def index(self, name: str) -> int:
        """1-based position of column ``name`` (its first occurrence); TraceFormatError if absent."""
        if name not in self.names:
            raise TraceFormatError(self.path, self.header_line, name, "expected column is missing")
        return self.names.index(name) + 1

    def strings(self, name: str) -> pd.Series:
        """Column ``name`` as a Series of stripped strings."""
        import pyarrow as pa

        col = self.table.column(self.index(name) - 1)
        if not pa.types.is_string(col.type):
            col = col.cast(pa.string())
        return col.to_pandas().astype("string").fillna("").str.strip()

    @property
    def header_line(self) -> int:
        """1-based line of the header."""
        return _physical_line(self.path, self.skip_rows + 1)

    def line_of(self, row: int) -> int:
        """1-based line of data row ``row`` (0-based), skipping empty lines as the parser does."""
        return _physical_line(self.path, self.skip_rows + row + 2)


def read_csv_strings(path: str | os.PathLike, min_rows: int = 1, skip_rows: int = 0) -> CsvStrings:
    """Read a CSV with a header line (after ``skip_rows`` leading lines) as strings (columnar,
    pyarrow). Raises TraceFormatError naming the file and line for: non-text data, no header,
    a row whose number of fields differs from the header's (e.g. a truncated last row), fewer
    than ``min_rows`` data rows."""
    import pyarrow as pa
    import pyarrow.csv as pc

    path = Path(path)
    check_text(path)
    raw_names = _raw_header(path, skip_rows)
    if not raw_names:
        raise TraceFormatError(path, None, None, "no header line")
    if _physical_line(path, skip_rows + 2, default=0) == 0:
        raise TraceFormatError(path, _physical_line(path, skip_rows + 1) + 1, None,
                               "no data rows (the file has only a header)")
    bad: list[tuple[int | None, int, int]] = []

    def on_invalid(row) -> str:
        bad.append((row.number, row.expected_columns, row.actual_columns))
        return "error"

    try:
        table = pc.read_csv(
            path,
            read_options=pc.ReadOptions(use_threads=False, block_size=1 << 22, skip_rows=skip_rows),
            parse_options=pc.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=False),
            convert_options=pc.ConvertOptions(column_types={n: pa.string() for n in raw_names},
                                              strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (pa.ArrowInvalid, pa.ArrowException) as e:
        if bad:
            number, expected, actual = bad[0]
            line = _physical_line(path, number) if number else None
            what = "truncated row?" if actual < expected else "an unquoted comma?"
            raise TraceFormatError(path, line, None, f"row has {actual} fields, the header has {expected} ({what})") from None
        raise TraceFormatError(path, None, None, f"not a CSV table: {_first_line(str(e))}") from None
    if table.num_rows < min_rows:
        raise TraceFormatError(path, _physical_line(path, skip_rows + 1) + 1, None,
                               "no data rows (the file has only a header)" if table.num_rows == 0
                               else f"{table.num_rows} data row(s); at least {min_rows} needed")
    return CsvStrings(path, [str(c).strip() for c in table.column_names], table, skip_rows)


def _first_line(s: str) -> str:
    return s.strip().splitlines()[0] if s.strip() else s


_EOL = re.compile(r"\r\n|\r|\n")


def lines_of(block: str) -> list[str]:
    """The lines of a block of whole lines (``\\r\\n``, ``\\r`` or ``\\n`` end a line, as for
    the CSV parser), without a trailing empty piece."""
    parts = _EOL.split(block)
    return parts[:-1] if parts and parts[-1] == "" else parts


def _raw_header(path: Path, skip_rows: int = 0) -> list[str]:
    """The header fields as written (not stripped): the first non-empty line after
    ``skip_rows`` lines; [] when there is none."""
    skipped = 0
    for _, block in iter_line_blocks(path):
        for ln in lines_of(block):
            if skipped < skip_rows:
                skipped += 1
                continue
            if ln:
                try:
                    return next(csv.reader([ln]), [])
                except csv.Error:
                    return ln.split(",")
    return []


def _physical_line(path: Path, logical_row: int, default: int | None = None) -> int:
    """1-based physical line of the ``logical_row``-th non-empty line (1 = the header);
    ``default`` (else ``logical_row``) when the file has fewer."""
    seen = line = 0
    for _, block in iter_line_blocks(path):
        for ln in lines_of(block):
            line += 1
            if ln:
                seen += 1
                if seen == logical_row:
                    return line
    return max(1, logical_row) if default is None else default


def numeric(path, table: CsvStrings, name: str, missing: tuple[str, ...] = ("-", "")) -> np.ndarray:
    """Column ``name`` as float64; the ``missing`` marks → NaN; anything else that is not a
    number raises TraceFormatError naming file, line and column."""
    s = table.strings(name)
    is_missing = s.isin(list(missing)).to_numpy(dtype=bool)
    num = pd.to_numeric(s.where(~is_missing), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = np.flatnonzero(np.isnan(num) & ~is_missing)
    if bad.size:
        i = int(bad[0])
        raise TraceFormatError(path, table.line_of(i), name, f"value {s.iloc[i]!r} is not a number", table.index(name))
    return num
