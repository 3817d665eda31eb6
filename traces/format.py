"""The canonical trace format (CSV and Parquet), with validation that names file, line, column.

CSV: a first line ``# wisv-trace {json metadata}``, then a header and one row per step.
Parquet: the same columns; the metadata JSON sits in the schema metadata under ``wisv-trace``.
Writes are atomic (temporary file + rename), so a failed write leaves nothing half-written.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from traces.errors import TraceFormatError
from traces.schedule import row_in_force

FORMAT_VERSION = 1
MAGIC = "# wisv-trace "
DIRECTIONS = ("up", "down")
REQUIRED = ("t_ms", "rate_bps_up", "delay_ms_up", "loss_up", "rate_bps_down", "delay_ms_down", "loss_down")
OPTIONAL = ("snr_db_up", "snr_db_down", "cqi_up", "cqi_down", "rsrp_dbm")
COLUMNS = REQUIRED + OPTIONAL
_UNIT_HINTS = {  # common wrong-unit column names → the canonical one
    "t_s": "t_ms", "time": "t_ms", "rate_mbps_up": "rate_bps_up", "rate_kbps_up": "rate_bps_up",
    "rate_mbps_down": "rate_bps_down", "rate_kbps_down": "rate_bps_down",
    "delay_s_up": "delay_ms_up", "delay_s_down": "delay_ms_down",
    "loss_pct_up": "loss_up", "loss_pct_down": "loss_down", "snr_db": "snr_db_up/snr_db_down",
}


@dataclass
class Trace:
    """A link trace: ``data`` (DataFrame of the canonical columns) and ``meta`` (JSON-able dict:
    source, step_ms, mapping, seed, rate_from, …)."""

    data: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = self.data.reset_index(drop=True)
        self.meta = {"version": FORMAT_VERSION, **self.meta}
        self.meta.setdefault("step_ms", self._inferred_step_ms())

    def _inferred_step_ms(self) -> float:
        t = self.data["t_ms"].to_numpy(dtype=float)
        return float(np.median(np.diff(t))) if len(t) > 1 else 1000.0

    @property
    def step_ms(self) -> float:
        """Nominal step in ms (also how long the last row holds)."""
        return float(self.meta["step_ms"])

    @property
    def last_hold_ms(self) -> float:
        """How long the last row holds, in ms: ``step_ms`` unless ``last_row_ms`` says otherwise."""
        return float(self.meta.get("last_row_ms", self.meta["step_ms"]))

    @property
    def duration_ms(self) -> float:
        """Duration in ms: last row's t_ms plus its hold time, minus the first t_ms."""
        t = self.data["t_ms"].to_numpy(dtype=float)
        return float(t[-1] + self.last_hold_ms - t[0]) if len(t) else 0.0

    def __len__(self) -> int:
        return len(self.data)

    def row_at(self, t_ms: float) -> int:
        """Index of the row in force at time ``t_ms`` (ms since the trace start)."""
        t = self.data["t_ms"].to_numpy(dtype=float)
        return max(0, row_in_force(t, t[0] + t_ms))

    def equals(self, other: "Trace") -> bool:
        """True when data (values and dtypes) and metadata are identical."""
        return self.meta == other.meta and self.data.equals(other.data) and \
            list(self.data.dtypes) == list(other.data.dtypes)


def canonical_frame(columns: dict[str, Any]) -> pd.DataFrame:
    """Build a DataFrame in canonical column order from a dict of arrays (missing optional
    columns are left out; ``t_ms`` is stored as float64 ms)."""
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ValueError(f"missing required trace columns: {missing}")
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown trace columns: {unknown}")
    return pd.DataFrame({c: np.asarray(columns[c], dtype=float) for c in COLUMNS if c in columns})


# ----------------------------------------------------------------------------- validation

def _check_header(path, names: list[str], line: int) -> None:
    for i, c in enumerate(names, start=1):
        if c not in COLUMNS:
            hint = f" (did you mean {_UNIT_HINTS[c]!r}? units are part of the name)" if c in _UNIT_HINTS else ""
            raise TraceFormatError(path, line, c, f"unknown column{hint}; known: {', '.join(COLUMNS)}", i)
    for c in REQUIRED:
        if c not in names:
            raise TraceFormatError(path, line, c, "required column is missing")
    dup = [c for c in names if names.count(c) > 1]
    if dup:
        raise TraceFormatError(path, line, dup[0], "column appears twice")


@dataclass(frozen=True)
class Problem:
    """The first broken rule in a set of trace columns: ``column``, 0-based ``row``, ``message``;
    ``kind`` is ``nonfinite`` (NaN/inf: a reader refines it with the text it read) or ``rule``."""

    column: str
    row: int
    message: str
    kind: str = "rule"


def nonfinite_problem(col: str, arr: np.ndarray) -> Problem | None:
    """The first NaN or infinite value of a column."""
    bad = np.flatnonzero(~np.isfinite(arr))
    return Problem(col, int(bad[0]), "value is not finite", "nonfinite") if bad.size else None


def time_problem(t_ms: np.ndarray) -> Problem | None:
    """``t_ms`` (ms) must increase strictly and start at or after 0."""
    nonmono = np.flatnonzero(np.diff(t_ms) <= 0)
    if nonmono.size:
        i = int(nonmono[0]) + 1
        return Problem("t_ms", i, f"time is not increasing ({t_ms[i - 1]:g} then {t_ms[i]:g} ms)")
    if t_ms.size and t_ms[0] < 0:
        return Problem("t_ms", 0, "time is negative")
    return None


def value_problem(col: str, arr: np.ndarray) -> Problem | None:
    """Range rules of one finite column: rates (bit/s) and delays (ms) ≥ 0, some rate ≥ 1000 bit/s
    (else the unit is wrong), delays ≤ 60 s, losses in [0, 1]; other columns have none."""
    kind = col.rsplit("_", 1)[0]
    if kind in ("rate_bps", "delay_ms"):
        neg = np.flatnonzero(arr < 0)
        if neg.size:
            return Problem(col, int(neg[0]), f"negative value {arr[neg[0]]:g}")
    if kind == "rate_bps" and arr.size and arr.max() < 1000.0:
        what = "every rate is 0" if arr.max() == 0 else f"every rate is below 1000 bit/s (max {arr.max():g})"
        return Problem(col, int(np.argmax(arr)), f"{what}: wrong unit? rates are in bit/s")
    if kind == "delay_ms":
        big = np.flatnonzero(arr > 60_000)
        if big.size:
            return Problem(col, int(big[0]), f"delay {arr[big[0]]:g} ms exceeds 60 s: wrong unit? delays are in ms")
    if kind == "loss":
        bad = np.flatnonzero((arr < 0) | (arr > 1))
        if bad.size:
            hint = " (a percentage? loss is a probability 0–1)" if arr[bad[0]] <= 100 else ""
            return Problem(col, int(bad[0]), f"loss {arr[bad[0]]:g} outside [0, 1]{hint}")
    return None


def find_problem(columns: dict[str, np.ndarray]) -> Problem | None:
    """The first broken rule of float columns keyed by canonical name, in the order a reader
    reports them: non-finite values (column order), time, then per direction rate, delay, loss."""
    for col, arr in columns.items():
        p = nonfinite_problem(col, arr)
        if p:
            return p
    if "t_ms" in columns:
        p = time_problem(columns["t_ms"])
        if p:
            return p
    for d in DIRECTIONS:
        for col in (f"rate_bps_{d}", f"delay_ms_{d}", f"loss_{d}"):
            p = value_problem(col, columns[col]) if col in columns else None
            if p:
                return p
    return None


def _as_float(values) -> np.ndarray:
    """A column (numeric or text) as float64, non-numbers → NaN."""
    if pd.api.types.is_numeric_dtype(values):
        return np.asarray(values, dtype=float)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def nonfinite_message(text: Any) -> str:
    """Why a cell that read as NaN/inf is bad, from its text: missing, not finite, not a number."""
    if text is None or (isinstance(text, float) and np.isnan(text)) or str(text).strip() == "":
        return "missing value"
    if str(text).strip().lower() in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"):
        return f"value {text!r} is not finite"
    return f"value {text!r} is not a number"


def _validate(path, df: pd.DataFrame, raw: pd.DataFrame | None, first_line: int, unit: str) -> pd.DataFrame:
    """Coerce to float and check every rule; ``first_line`` is the line (or row) of data row 0;
    ``raw`` (the cells as read) is consulted only to word an error."""
    names = list(df.columns)
    out = {col: _as_float(df[col]) for col in names}
    p = find_problem(out)
    if p:
        msg = p.message
        if p.kind == "nonfinite":
            msg = nonfinite_message(out[p.column][p.row] if raw is None else raw[p.column].iloc[p.row])
        raise TraceFormatError(path, first_line + p.row, p.column, msg, names.index(p.column) + 1, unit)
    return pd.DataFrame({c: out[c] for c in COLUMNS if c in out})


# ----------------------------------------------------------------------------- reading

def read_trace(path: str | os.PathLike) -> Trace:
    """Read a canonical trace from CSV or Parquet (by content), validating every row.

    Raises TraceFormatError naming the file, line (CSV) or row (Parquet) and column."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such trace file")
    if path.is_dir():
        raise TraceFormatError(path, None, None, "is a directory, not a trace file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PAR1":
        return _read_parquet(path)
    return _read_csv(path)


def _metadata_lines(path: Path) -> tuple[dict[str, Any], int]:
    """(metadata, number of leading ``#`` lines) of a canonical CSV; the metadata line is
    ``# wisv-trace {json}``. Reads only the leading lines."""
    from traces.textio import iter_line_blocks

    meta: dict[str, Any] = {}
    skip = 0
    for _, block in iter_line_blocks(path):
        for line in block.split("\n"):
            if not line.startswith("#"):
                return meta, skip
            skip += 1
            if line.startswith(MAGIC):
                meta = _parse_meta(path, skip, line[len(MAGIC):].rstrip("\r"))
    return meta, skip


def _parse_meta(path: Path, line: int | None, text: str | bytes) -> dict[str, Any]:
    """The metadata JSON object of a trace; TraceFormatError (with the line) if malformed."""
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        col = getattr(e, "colno", None)
        raise TraceFormatError(path, line, None, f"bad metadata JSON: {getattr(e, 'msg', e)}", col) from None
    if not isinstance(meta, dict):
        raise TraceFormatError(path, line, None, "metadata must be a JSON object")
    version = meta.get("version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TraceFormatError(path, line, None, f"metadata 'version' must be a positive integer, not {version!r}")
    if version > FORMAT_VERSION:
        raise TraceFormatError(path, line, None, f"trace format version {version} is newer than {FORMAT_VERSION}")
    for key in ("step_ms", "last_row_ms"):
        if key in meta and not _positive_number(meta[key]):
            raise TraceFormatError(path, line, None, f"metadata {key!r} must be a positive number of ms, not {meta[key]!r}")
    return meta


def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v)) and v > 0


def _read_csv(path: Path) -> Trace:
    from traces.textio import read_csv_strings

    meta, skip = _metadata_lines(path)
    table = read_csv_strings(path, min_rows=0, skip_rows=skip)
    names = table.names
    _check_header(path, names, table.header_line)
    if len(table) == 0:
        raise TraceFormatError(path, table.header_line + 1, None, "trace has no rows")
    raw = pd.DataFrame({n: table.strings(n) for n in names})
    try:
        data = _validate(path, raw, raw, 0, "line")
    except TraceFormatError as e:  # re-word with the physical line of the row
        raise TraceFormatError(path, table.line_of(e.line), e.column, e.message, e.col_index) from None
    return Trace(data, meta)


def parquet_metadata(path: Path) -> tuple[Any, dict[str, Any]]:
    """(pyarrow ParquetFile, trace metadata) of a Parquet trace; the metadata sits in the schema
    metadata or, for a streamed write, the file's key-value metadata, under ``wisv-trace``."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        kv = dict(pf.schema_arrow.metadata or {})
        kv.update({k: v for k, v in (pf.metadata.metadata or {}).items() if k not in kv})
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise TraceFormatError(path, None, None, f"unreadable Parquet file: {_one_line(e)}") from None
    meta = _parse_meta(path, None, kv[b"wisv-trace"]) if b"wisv-trace" in kv else {}
    return pf, meta


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def iter_parquet_batches(path: Path, pf: Any, names: list[str]):
    """Yield lists of float64 arrays (one per name in ``names``, nulls → NaN), one row group at
    a time, of a Parquet trace; a non-numeric or unreadable column is a TraceFormatError.
    (Row groups are read one by one: ``iter_batches`` keeps buffers for the whole file.)"""
    for i in range(pf.metadata.num_row_groups):
        try:
            group = pf.read_row_group(i, columns=names, use_threads=False, use_pandas_metadata=False)
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise TraceFormatError(path, None, names[0] if len(names) == 1 else None,
                                   f"unreadable Parquet data: {_one_line(e)}") from None
        yield [_float_array(path, name, group.column(k)) for k, name in enumerate(names)]


def _float_array(path: Path, name: str, col: Any) -> np.ndarray:
    t = pa_types()
    if not (t.is_floating(col.type) or t.is_integer(col.type) or t.is_boolean(col.type)):
        raise TraceFormatError(path, None, name, f"column of type {col.type} is not numeric")
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=float)


def read_parquet_column(path: Path, pf: Any, name: str) -> np.ndarray:
    """One column of a Parquet trace as a writable float64 array (nulls → NaN), read batch by
    batch into it: memory is the column plus one batch, not the table."""
    out = np.empty(pf.metadata.num_rows, dtype=float)
    i = 0
    for (v,) in iter_parquet_batches(path, pf, [name]):
        if i + len(v) > len(out):
            break
        out[i:i + len(v)] = v
        i += len(v)
    if i != len(out):
        raise TraceFormatError(path, None, name, f"column has {i}+ rows, the file says {len(out)}")
    return out


def pa_types() -> Any:
    """``pyarrow.types`` (imported on first use)."""
    import pyarrow.types

    return pyarrow.types


def parquet_columns(pf: Any) -> list[str]:
    """The trace columns of a Parquet file (a stored pandas index is not one)."""
    return [n for n in pf.schema_arrow.names if not n.startswith("__index_level_")]


def _read_parquet(path: Path) -> Trace:
    pf, meta = parquet_metadata(path)
    names = parquet_columns(pf)
    _check_header(path, names, None)
    if pf.metadata.num_rows == 0:
        raise TraceFormatError(path, None, None, "trace has no rows")
    df = pd.DataFrame({n: read_parquet_column(path, pf, n) for n in names})
    data = _validate(path, df, df, 1, "row")
    return Trace(data, meta)


# ----------------------------------------------------------------------------- writing

def _atomic_target(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_trace(trace: Trace, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write ``trace`` atomically as CSV or Parquet (by ``fmt`` or the file extension)."""
    path = Path(path)
    fmt = fmt or ("parquet" if path.suffix in (".parquet", ".pq") else "csv")
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"unknown trace format {fmt!r}: use csv or parquet")
    _validate(path, trace.data, None, 1, "row")  # never write what we could not read back
    tmp = _atomic_target(path)
    try:
        meta_json = json.dumps(trace.meta, sort_keys=True, default=_json_default)
        if fmt == "csv":
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(MAGIC + meta_json + "\n")
                trace.data.to_csv(f, index=False, float_format=None, lineterminator="\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(trace.data, preserve_index=False)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                   b"wisv-trace": meta_json.encode()})
            pq.write_table(table, tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class TraceWriter:
    """Write a canonical trace in chunks of rows (a streamed import), atomically: nothing
    appears at ``path`` until :meth:`close` gives the metadata; an exception inside a ``with``
    block removes the partial file. CSV or Parquet by ``fmt`` or the file extension; memory
    is one chunk. Chunks are checked only for their column set: the caller validates values."""

    def __init__(self, path: str | os.PathLike, fmt: str | None = None):
        self.path = Path(path)
        self.fmt = fmt or ("parquet" if self.path.suffix in (".parquet", ".pq") else "csv")
        if self.fmt not in ("csv", "parquet"):
            raise ValueError(f"unknown trace format {self.fmt!r}: use csv or parquet")
        self._tmp = _atomic_target(self.path)
        self._data = self._tmp.with_suffix(".rows") if self.fmt == "csv" else None
        self._names: list[str] | None = None
        self._sink: Any = None

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self._tmp.exists():
            self.abort()

    def write(self, cols: dict[str, Any]) -> None:
        """Append rows: ``cols`` maps canonical column names to equal-length float arrays."""
        names = [c for c in COLUMNS if c in cols]
        if self._names is None:
            _check_header(self.path, names, None)
            self._names = names
            self._open()
        elif names != self._names:
            raise ValueError(f"chunk columns {names} differ from the first chunk's {self._names}")
        arrays = [np.asarray(cols[c], dtype=float) for c in names]
        if self.fmt == "csv":
            pd.DataFrame(dict(zip(names, arrays))).to_csv(self._sink, header=False, index=False, lineterminator="\n")
        else:
            import pyarrow as pa

            self._sink.write_table(pa.table(dict(zip(names, arrays))))

    def _open(self) -> None:
        if self.fmt == "csv":
            self._sink = open(self._data, "w", encoding="utf-8", newline="")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            # Chunks are small row groups: per-group dictionaries would cost more than they save.
            self._sink = pq.ParquetWriter(self._tmp, pa.schema([(c, pa.float64()) for c in self._names]),
                                          use_dictionary=False, compression="zstd")

    def close(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Finish the file with ``meta`` and move it into place; returns the metadata written."""
        if self._names is None:
            raise TraceFormatError(self.path, None, None, "trace has no rows")
        meta = {"version": FORMAT_VERSION, **meta}
        meta_json = json.dumps(meta, sort_keys=True, default=_json_default)
        if self.fmt == "csv":
            self._sink.close()
            with open(self._tmp, "w", encoding="utf-8", newline="") as f, open(self._data, encoding="utf-8") as rows:
                f.write(MAGIC + meta_json + "\n" + ",".join(self._names) + "\n")
                shutil.copyfileobj(rows, f, 1 << 20)
            self._data.unlink()
        else:
            self._sink.add_key_value_metadata({"wisv-trace": meta_json})
            self._sink.close()
        self._sink = None
        os.chmod(self._tmp, 0o666 & ~_umask())
        os.replace(self._tmp, self.path)
        return meta

    def abort(self) -> None:
        """Drop everything written so far."""
        if self._sink is not None:
            try:
                self._sink.close()
            except Exception:  # a half-written file is deleted next anyway
                pass
            self._sink = None
        self._tmp.unlink(missing_ok=True)
        if self._data is not None:
            self._data.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
