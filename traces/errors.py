"""The error every malformed trace raises: it names the file, the line (or row) and the column."""
from __future__ import annotations

import os


class TraceFormatError(ValueError):
    """A malformed trace: carries the file, the 1-based line (or row) and the column.

    ``message`` is the bare reason; ``str(error)`` is ``FILE:LINE:COL: column 'NAME': reason``
    (``FILE: row N:`` for a Parquet row, parts unknown left out)."""

    def __init__(self, path: str | os.PathLike, line: int | None, column: str | None, message: str,
                 col_index: int | None = None, unit: str = "line"):
        self.path, self.line, self.column, self.col_index = str(path), line, column, col_index
        self.message, self.unit = message, unit
        where = str(path)
        if line is not None:
            where += f":{line}" if unit == "line" else f": row {line}"
        if col_index is not None:
            where += f":{col_index}"
        col = f" column {column!r}:" if column else ""
        super().__init__(f"{where}:{col} {message}")

    def __reduce__(self):
        return (type(self), (self.path, self.line, self.column, self.message, self.col_index, self.unit))
