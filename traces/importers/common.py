"""Options and helpers shared by the importers: units, missing directions, CSI → link."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from channel_models.mapping import make_mapping
from traces.format import COLUMNS, Trace, TraceFormatError

RATE_UNITS = {"bps": 1.0, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9, "Bps": 8.0, "kBps": 8e3, "MBps": 8e6}
TIME_UNITS = {"ms": 1.0, "s": 1000.0, "us": 1e-3}


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
    columns, scales: the generic importer's map canonical-name → source column and multipliers.
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

    def __post_init__(self) -> None:
        if self.rate_from not in ("throughput", "csi"):
            raise ValueError("rate_from must be throughput or csi")
        if self.rate_unit is not None and self.rate_unit not in RATE_UNITS:
            raise ValueError(f"rate_unit must be one of {sorted(RATE_UNITS)}")
        if self.time_unit not in TIME_UNITS:
            raise ValueError(f"time_unit must be one of {sorted(TIME_UNITS)}")
        if self.direction not in ("both", "up", "down"):
            raise ValueError("direction must be both, up or down")
        if not 0 <= self.loss <= 1 or self.delay_ms < 0:
            raise ValueError("loss must lie in [0, 1] and delay_ms >= 0")

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


def finish(cols: dict[str, Any], meta: dict[str, Any], opts: ImportOptions, min_rate_bps: float = 8000.0) -> Trace:
    """Assemble a Trace from column arrays: re-base time to 0, floor rates, resample if asked."""
    from traces.ops import resample

    t = np.asarray(cols["t_ms"], dtype=float)
    cols["t_ms"] = t - t[0]
    floored = 0
    for d in ("up", "down"):
        r = np.asarray(cols[f"rate_bps_{d}"], dtype=float)
        floored += int(np.sum(r < min_rate_bps))
        cols[f"rate_bps_{d}"] = np.maximum(r, min_rate_bps)
    meta = {**meta, "import_options": opts.describe(), "rate_floor_bps": min_rate_bps,
            "rows_at_rate_floor": floored}
    df = pd.DataFrame({c: np.asarray(cols[c], dtype=float) for c in COLUMNS if c in cols})
    trace = Trace(df, meta)
    return resample(trace, opts.step_ms) if opts.step_ms else trace


def numeric_column(path, df: pd.DataFrame, col: str, header_line: int = 1, missing: str = "-") -> np.ndarray:
    """Column ``col`` of a string DataFrame as floats, ``missing`` marks → NaN; anything else
    non-numeric raises TraceFormatError with the file, line and column."""
    if col not in df.columns:
        raise TraceFormatError(path, header_line, col, "expected column is missing")
    s = df[col].astype(str).str.strip()
    is_missing = s.isin([missing, ""])
    num = pd.to_numeric(s.where(~is_missing), errors="coerce")
    bad = np.flatnonzero(num.isna() & ~is_missing)
    if bad.size:
        i = int(bad[0])
        raise TraceFormatError(path, header_line + 1 + i, col, f"value {s.iloc[i]!r} is not a number",
                               list(df.columns).index(col) + 1)
    return num.to_numpy(dtype=float)


def read_timed_csv(path, time_col: str, time_format: str, human_format: str,
                   strictly_increasing: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """A CSV as strings plus its time column as ms since the first row; a bad or backward
    time stamp raises TraceFormatError with the file, line and column."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    raw.columns = [c.strip() for c in raw.columns]
    if time_col not in raw.columns:
        raise TraceFormatError(path, 1, time_col, "expected column is missing")
    col = list(raw.columns).index(time_col) + 1
    ts = pd.to_datetime(raw[time_col].str.strip(), format=time_format, errors="coerce")
    bad = np.flatnonzero(ts.isna())
    if bad.size:
        i = int(bad[0])
        raise TraceFormatError(path, 2 + i, time_col, f"{raw[time_col].iloc[i]!r} is not {human_format}", col)
    t_ms = (ts - ts.iloc[0]).dt.total_seconds().to_numpy() * 1000.0
    step = np.diff(t_ms)
    back = np.flatnonzero(step <= 0 if strictly_increasing else step < 0)
    if back.size:
        raise TraceFormatError(path, 3 + int(back[0]), time_col,
                               "time is not increasing" if strictly_increasing else "time goes backwards", col)
    return raw, t_ms


def fill_missing(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Forward-fill NaNs (then back-fill a leading gap); returns the array and how many were filled."""
    n = int(np.isnan(x).sum())
    if n == 0:
        return x, 0
    if n == len(x):
        raise ValueError("column has no values at all")
    return pd.Series(x).ffill().bfill().to_numpy(), n
