"""The canonical trace format (CSV and Parquet), with validation that names file, line, column.

CSV: a first line ``# wisv-trace {json metadata}``, then a header and one row per step.
Parquet: the same columns; the metadata JSON sits in the schema metadata under ``wisv-trace``.
Writes are atomic (temporary file + rename), so a failed write leaves nothing half-written.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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


class TraceFormatError(ValueError):
    """A malformed trace: carries the file, the 1-based line (or row) and the column."""

    def __init__(self, path: str | os.PathLike, line: int | None, column: str | None, message: str,
                 col_index: int | None = None, unit: str = "line"):
        self.path, self.line, self.column, self.col_index = str(path), line, column, col_index
        where = str(path)
        if line is not None:
            where += f":{line}" if unit == "line" else f": row {line}"
        if col_index is not None:
            where += f":{col_index}"
        col = f" column {column!r}:" if column else ""
        super().__init__(f"{where}:{col} {message}")


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
        return max(0, int(np.searchsorted(t, t[0] + t_ms, side="right")) - 1)

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


def _validate(path, df: pd.DataFrame, raw: pd.DataFrame | None, first_line: int, unit: str) -> pd.DataFrame:
    """Coerce to float and check every rule; ``first_line`` is the line (or row) of data row 0."""
    names = list(df.columns)
    out = {}

    def fail(idx: int, col: str, msg: str) -> None:
        raise TraceFormatError(path, first_line + int(idx), col, msg, names.index(col) + 1, unit)

    for col in names:
        values = df[col] if pd.api.types.is_numeric_dtype(df[col]) else pd.to_numeric(df[col], errors="coerce")
        arr = np.asarray(values, dtype=float)
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            i = bad[0]
            text = None if raw is None else raw[col].iloc[i]
            if text is None or (isinstance(text, float) and np.isnan(text)) or str(text).strip() == "":
                fail(i, col, "missing value")
            if str(text).strip().lower() in ("nan", "inf", "-inf", "infinity"):
                fail(i, col, f"value {text!r} is not finite")
            fail(i, col, f"value {text!r} is not a number")
        out[col] = arr
    t = out["t_ms"]
    nonmono = np.flatnonzero(np.diff(t) <= 0)
    if nonmono.size:
        i = nonmono[0] + 1
        fail(i, "t_ms", f"time is not increasing ({t[i - 1]:g} then {t[i]:g} ms)")
    if t.size and t[0] < 0:
        fail(0, "t_ms", "time is negative")
    for d in DIRECTIONS:
        rate, delay, loss = out[f"rate_bps_{d}"], out[f"delay_ms_{d}"], out[f"loss_{d}"]
        for col, arr in ((f"rate_bps_{d}", rate), (f"delay_ms_{d}", delay)):
            neg = np.flatnonzero(arr < 0)
            if neg.size:
                fail(neg[0], col, f"negative value {arr[neg[0]]:g}")
        if rate.size and rate.max() < 1000.0:
            fail(int(np.argmax(rate)), f"rate_bps_{d}",
                 f"every rate is below 1000 bit/s (max {rate.max():g}): wrong unit? rates are in bit/s")
        big = np.flatnonzero(delay > 60_000)
        if big.size:
            fail(big[0], f"delay_ms_{d}", f"delay {delay[big[0]]:g} ms exceeds 60 s: wrong unit? delays are in ms")
        bad = np.flatnonzero((loss < 0) | (loss > 1))
        if bad.size:
            hint = " (a percentage? loss is a probability 0–1)" if loss[bad[0]] <= 100 else ""
            fail(bad[0], f"loss_{d}", f"loss {loss[bad[0]]:g} outside [0, 1]{hint}")
    return pd.DataFrame({c: out[c] for c in COLUMNS if c in out})


# ----------------------------------------------------------------------------- reading

def read_trace(path: str | os.PathLike) -> Trace:
    """Read a canonical trace from CSV or Parquet (by content), validating every row.

    Raises TraceFormatError naming the file, line (CSV) or row (Parquet) and column."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such trace file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PAR1":
        return _read_parquet(path)
    return _read_csv(path)


def _read_csv(path: Path) -> Trace:
    meta: dict[str, Any] = {}
    skip = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                break
            skip += 1
            if line.startswith(MAGIC):
                try:
                    meta = json.loads(line[len(MAGIC):])
                except json.JSONDecodeError as e:
                    raise TraceFormatError(path, skip, None, f"bad metadata JSON: {e.msg}", e.colno) from None
                if not isinstance(meta, dict):
                    raise TraceFormatError(path, skip, None, "metadata must be a JSON object")
    try:
        raw = pd.read_csv(path, skiprows=skip, dtype=str, skip_blank_lines=False,
                          keep_default_na=False, na_filter=False)
    except pd.errors.ParserError as e:
        raise TraceFormatError(path, None, None, f"not a CSV table: {e}") from None
    except pd.errors.EmptyDataError:
        raise TraceFormatError(path, skip + 1, None, "no header line") from None
    names = [c.strip() for c in raw.columns]
    raw.columns = names
    _check_header(path, names, skip + 1)
    if len(raw) == 0:
        raise TraceFormatError(path, skip + 2, None, "trace has no rows")
    data = _validate(path, raw, raw, skip + 2, "line")
    if meta.get("version", FORMAT_VERSION) > FORMAT_VERSION:
        raise TraceFormatError(path, 1, None, f"trace format version {meta['version']} is newer than {FORMAT_VERSION}")
    return Trace(data, meta)


def _read_parquet(path: Path) -> Trace:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise TraceFormatError(path, None, None, f"unreadable Parquet file: {e}") from None
    md = table.schema.metadata or {}
    meta = json.loads(md.get(b"wisv-trace", b"{}"))
    df = table.to_pandas()
    _check_header(path, list(df.columns), None)
    if len(df) == 0:
        raise TraceFormatError(path, None, None, "trace has no rows")
    data = _validate(path, df, df.astype(object), 1, "row")
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
