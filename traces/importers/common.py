"""Options and helpers shared by the importers: units, missing directions, CSI → link."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from channel_models.csi import MIN_RATE_BPS
from channel_models.mapping import make_mapping
from traces.format import COLUMNS, Trace, TraceFormatError, find_problem
from traces.textio import CsvStrings, numeric, read_csv_strings

RATE_UNITS = {"bps": 1.0, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9, "Bps": 8.0, "kBps": 8e3, "MBps": 8e6}
TIME_UNITS = {"ms": 1.0, "s": 1000.0, "us": 1e-3}
MAX_ROWS = 10_000_000  # an import (after any resampling) of more rows is refused


@dataclass
class ImportOptions:
    """How to turn a source log into a link trace.

    rate_from: ``throughput`` (the recorded bit rate) or ``csi`` (the recorded SNR/CQI through
        ``mapping``); rate_unit: unit of recorded throughput (``kbps`` for G-NetTrack, whose
        upstream leaves it unstated); time_unit: of two-column/generic time stamps;
    delay_ms, loss: one-way delay and loss where the source has none;
    step_ms: resample to this step (None keeps the source's own);
    mapping, bandwidth_hz, overhead: the CSI → link mapping for ``rate_from='csi'``;
    other_direction: ``mirror`` (copy the recorded direction) or a rate in bit/s for a
        direction the source does not record;
    columns, scales: the generic importer's map canonical-name → source column and multipliers;
    floor_outages: raise rate-0 rows (outages: nothing delivered) to the smallest link rate
        :data:`channel_models.csi.MIN_RATE_BPS` like every other rate below it; off by
        default, so an outage in the source stays one (the trace's metadata says which).
    """

    rate_from: str = "throughput"
    rate_unit: str | None = None
    time_unit: str = "s"
    delay_ms: float = 10.0
    loss: float = 0.0
    step_ms: float | None = None
    mapping: str = "cqi1"
    bandwidth_hz: float = 20e6
    overhead: float = 0.14
    other_direction: str = "mirror"
    direction: str = "both"
    nr_slots_per_s: float = 400.0
    columns: dict[str, str] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)
    floor_outages: bool = False

    def __post_init__(self) -> None:
        if self.rate_from not in ("throughput", "csi"):
            raise ValueError("rate_from must be throughput or csi")
        if self.rate_unit is not None and self.rate_unit not in RATE_UNITS:
            raise ValueError(f"rate_unit must be one of {sorted(RATE_UNITS)}")
        if self.time_unit not in TIME_UNITS:
            raise ValueError(f"time_unit must be one of {sorted(TIME_UNITS)}")
        if self.direction not in ("both", "up", "down"):
            raise ValueError("direction must be both, up or down")
        if not 0 <= self.loss <= 1 or not 0 <= self.delay_ms <= 60_000:
            raise ValueError("loss must lie in [0, 1] and delay_ms in [0, 60000]")
        if self.other_direction != "mirror":
            try:
                rate = float(self.other_direction)
            except ValueError:
                rate = -1.0
            if not (math.isfinite(rate) and rate >= 0):
                raise ValueError("other_direction must be 'mirror' or a rate in bit/s (>= 0)")
        if self.step_ms is not None and not (math.isfinite(self.step_ms) and self.step_ms > 0):
            raise ValueError("step_ms must be a positive number of ms")

    def describe(self) -> dict[str, Any]:
        """The options that shaped an import, for the trace metadata."""
        return {k: v for k, v in self.__dict__.items() if v not in (None, {}, [])}

    def link_mapping(self):
        """The CSI → link mapping these options choose."""
        return make_mapping(self.mapping, bandwidth_hz=self.bandwidth_hz, overhead=self.overhead,
                            base_delay_ms=self.delay_ms)

    def csi_link(self, snr_db: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rate bit/s, delay ms, loss, cqi) from an SNR series in dB through the chosen mapping."""
        link = self.link_mapping().map(snr_db)
        return link.rate_bps, link.delay_ms, link.loss, link.cqi


def fill_direction(cols: dict[str, Any], have: str, opts: ImportOptions) -> str:
    """Fill the direction the source lacks (``mirror`` it, or a constant rate in bit/s);
    returns a note for the metadata."""
    other = "down" if have == "up" else "up"
    n = len(cols["t_ms"])
    if opts.other_direction == "mirror":
        for k in ("rate_bps", "delay_ms", "loss", "snr_db", "cqi"):
            if f"{k}_{have}" in cols:
                cols[f"{k}_{other}"] = cols[f"{k}_{have}"]
        return f"{other} mirrored from {have}"
    try:
        rate = float(opts.other_direction)
    except ValueError:
        raise ValueError("other_direction must be 'mirror' or a rate in bit/s") from None
    cols[f"rate_bps_{other}"] = np.full(n, rate)
    cols[f"delay_ms_{other}"] = np.full(n, opts.delay_ms)
    cols[f"loss_{other}"] = np.full(n, opts.loss)
    return f"{other} constant {rate:g} bit/s"


@dataclass(frozen=True)
class Provenance:
    """Where an imported trace's rows and columns come from, to word its errors.

    line_of: trace row (0-based) → 1-based line of the source file (None: errors say "row N");
    columns: canonical column → (source column name, 1-based index) it was computed from."""

    line_of: Callable[[int], int] | None = None
    columns: dict[str, tuple[str, int | None]] = field(default_factory=dict)


def validate_import(path, cols: dict[str, Any], meta: dict[str, Any], where: Provenance) -> None:
    """Check the canonical columns of an import by the trace rules (before any rate floor), so
    that a wrong unit or a negative value is refused with the file, line and source column."""
    problem = find_problem({c: np.asarray(cols[c], dtype=float) for c in COLUMNS if c in cols})
    if problem is None:
        return
    src, index = _source_of(problem.column, cols, where)
    message = problem.message
    if src != problem.column:
        message += f" (read as {problem.column})"
    if "wrong unit" in message and problem.column.startswith("rate_bps"):
        message += (": is the SNR in dB?" if meta.get("rate_from") == "csi"
                    else ": give the source's unit (--rate-unit, or --scale for the generic format)")
    if where.line_of is None:
        raise TraceFormatError(path, problem.row + 1, src, message, index, "row")
    raise TraceFormatError(path, where.line_of(problem.row), src, message, index)


def _source_of(col: str, cols: dict[str, Any], where: Provenance) -> tuple[str, int | None]:
    """The source column behind canonical ``col`` (or behind the direction it mirrors)."""
    if col in where.columns:
        return where.columns[col]
    for a, b in (("_up", "_down"), ("_down", "_up")):
        other = col.replace(a, b) if col.endswith(a) else None
        if other in where.columns and cols.get(other) is cols.get(col):
            return where.columns[other]
    return col, None


@dataclass
class RateFloor:
    """Raises rates below :data:`MIN_RATE_BPS` (the smallest rate a link is shaped to) to it,
    chunk after chunk, keeping rate-0 rows — outages — unless ``floor_outages``; counts what it
    changed per direction and row (``floored``: raised, ``outages``: rate 0 kept)."""

    floor_outages: bool = False
    floored: int = 0
    outages: int = 0

    def apply(self, cols: dict[str, Any]) -> None:
        """Floor ``cols``' ``rate_bps_up``/``rate_bps_down`` in place (bit/s)."""
        for d in ("up", "down"):
            r = np.asarray(cols[f"rate_bps_{d}"], dtype=float)
            zero = r == 0
            low = (r < MIN_RATE_BPS) if self.floor_outages else ((r < MIN_RATE_BPS) & ~zero)
            self.floored += int(np.sum(low))
            self.outages += 0 if self.floor_outages else int(np.sum(zero))
            cols[f"rate_bps_{d}"] = np.where(low, MIN_RATE_BPS, r)

    def meta(self) -> dict[str, Any]:
        """What the floor did, for the trace metadata: ``outages`` (``kept``: rate 0 is an
        outage; ``floored``: raised to the floor), ``rate_floor_bps``, ``rows_at_rate_floor``
        and ``outage_rows`` (counted per direction)."""
        return {"outages": "floored" if self.floor_outages else "kept", "rate_floor_bps": MIN_RATE_BPS,
                "rows_at_rate_floor": self.floored, "outage_rows": self.outages}


def finish(cols: dict[str, Any], meta: dict[str, Any], opts: ImportOptions, path=None,
           where: Provenance | None = None) -> Trace:
    """Assemble a Trace from column arrays: re-base time to 0, validate (before the floor, so a
    wrong unit or a negative rate is an error), raise rates below the smallest link rate to it
    (:class:`RateFloor`: rate 0, an outage, is kept unless ``opts.floor_outages``), resample to
    ``opts.step_ms`` ms if asked."""
    from traces.ops import resample

    path = path if path is not None else meta.get("file", "<import>")
    t = np.asarray(cols["t_ms"], dtype=float)
    if len(t) == 0:
        raise TraceFormatError(path, None, None, "no data rows")
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is inf: refused by validation
        cols["t_ms"] = t - t[0] if np.isfinite(t[0]) else t
    validate_import(path, cols, meta, where or Provenance())
    floor = RateFloor(opts.floor_outages)
    floor.apply(cols)
    meta = {**meta, "import_options": opts.describe(), **floor.meta()}
    df = pd.DataFrame({c: np.asarray(cols[c], dtype=float) for c in COLUMNS if c in cols})
    trace = Trace(df, meta)
    if opts.step_ms:
        check_rows(path, trace.duration_ms / opts.step_ms, f"resampling at {opts.step_ms:g} ms")
        trace = resample(trace, opts.step_ms)
    return trace


def check_rows(path, rows: float, what: str) -> None:
    """Refuse an import that would hold more than MAX_ROWS rows (memory), naming the file."""
    if rows > MAX_ROWS:
        raise TraceFormatError(path, None, None, f"{what} gives {rows:.3g} rows, more than {MAX_ROWS:,}: "
                               "use a larger step (--step-ms)")


def numeric_column(path, table: CsvStrings, col: str, missing: tuple[str, ...] = ("-", ""),
                   nonnegative: bool = False) -> np.ndarray:
    """Column ``col`` of a string table as floats, ``missing`` marks → NaN; anything else
    non-numeric (or negative, when ``nonnegative``) raises TraceFormatError with the file,
    line and column."""
    v = numeric(path, table, col, missing)
    bad = np.flatnonzero(np.isinf(v) | (v < 0)) if nonnegative else np.flatnonzero(np.isinf(v))
    if bad.size:
        i = int(bad[0])
        what = f"value {v[i]:g} is not finite" if np.isinf(v[i]) else f"negative value {v[i]:g}"
        raise TraceFormatError(path, table.line_of(i), col, what, table.index(col))
    return v


def read_timed_csv(path, time_col: str, time_format: str, human_format: str,
                   strictly_increasing: bool) -> tuple[CsvStrings, np.ndarray]:
    """A CSV as strings plus its time column as ms since the first row; a header-only file,
    a row with the wrong number of fields, a bad or backward time stamp raise TraceFormatError
    with the file, line and column."""
    table = read_csv_strings(path, min_rows=1)
    col = table.index(time_col)
    text = table.strings(time_col)
    ts = pd.to_datetime(text, format=time_format, errors="coerce")
    bad = np.flatnonzero(ts.isna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise TraceFormatError(path, table.line_of(i), time_col, f"{text.iloc[i]!r} is not {human_format}", col)
    t_ms = (ts - ts.iloc[0]).dt.total_seconds().to_numpy(dtype=float) * 1000.0
    step = np.diff(t_ms)
    back = np.flatnonzero(step <= 0 if strictly_increasing else step < 0)
    if back.size:
        raise TraceFormatError(path, table.line_of(int(back[0]) + 1), time_col,
                               "time is not increasing" if strictly_increasing else "time goes backwards", col)
    return table, t_ms


def fill_missing(path, table: CsvStrings, col: str, x: np.ndarray) -> tuple[np.ndarray, int]:
    """Forward-fill NaNs (then back-fill a leading gap); returns the array and how many were
    filled. A column with no value at all is a TraceFormatError naming it."""
    n = int(np.isnan(x).sum())
    if n == 0:
        return x, 0
    if n == len(x):
        raise TraceFormatError(path, table.line_of(0), col, "column has no values at all (every row is missing)",
                               table.index(col))
    return pd.Series(x).ffill().bfill().to_numpy(), n
