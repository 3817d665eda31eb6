"""Two-column ``time throughput`` logs (whitespace- or comma-separated, optional header),
as iperf-style or cellular throughput logs are often kept. Units via ``time_unit`` (default s)
and ``rate_unit`` (default Mbit/s); ``direction`` says which direction it records."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from traces.format import Trace, TraceFormatError
from traces.importers.common import RATE_UNITS, TIME_UNITS, ImportOptions, fill_direction, finish

_SPLIT = re.compile(r"[\s,;]+")


def read_two_column(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(time, throughput) columns of a two-column log, in the file's own units."""
    times, values = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            parts = _SPLIT.split(s)
            if len(parts) != 2:
                raise TraceFormatError(path, lineno, None, f"expected 2 columns, got {len(parts)}")
            try:
                a, b = float(parts[0]), float(parts[1])
            except ValueError:
                if not times:  # a header line
                    continue
                col = 1 if not _is_float(parts[0]) else 2
                raise TraceFormatError(path, lineno, None, f"{parts[col - 1]!r} is not a number", col) from None
            if not (np.isfinite(a) and np.isfinite(b)):
                raise TraceFormatError(path, lineno, None, "value is not finite", 1 if not np.isfinite(a) else 2)
            if b < 0:
                raise TraceFormatError(path, lineno, None, f"negative throughput {b:g}", 2)
            if times and a <= times[-1]:
                raise TraceFormatError(path, lineno, None, f"time is not increasing ({times[-1]:g} then {a:g})", 1)
            times.append(a)
            values.append(b)
    if not times:
        raise TraceFormatError(path, None, None, "no data rows")
    return np.asarray(times), np.asarray(values)


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def import_two_column(path: str | Path, opts: ImportOptions) -> Trace:
    """Import a two-column time/throughput log as a canonical trace."""
    path = Path(path)
    t, v = read_two_column(path)
    unit = opts.rate_unit or "mbps"
    have = "down" if opts.direction == "both" else opts.direction
    cols = {"t_ms": t * TIME_UNITS[opts.time_unit], f"rate_bps_{have}": v * RATE_UNITS[unit],
            f"delay_ms_{have}": np.full(len(t), opts.delay_ms), f"loss_{have}": np.full(len(t), opts.loss)}
    meta = {"source": "two-column", "file": path.name, "rate_from": "throughput", "rate_unit": unit,
            "time_unit": opts.time_unit}
    if opts.direction == "both":
        for k in ("rate_bps", "delay_ms", "loss"):
            cols[f"{k}_up"] = cols[f"{k}_down"]
        meta["note"] = "same log used for both directions"
    else:
        meta["note"] = fill_direction(cols, have, opts)
    return finish(cols, meta, opts)
