"""A generic CSV with a column map: ``columns`` maps canonical names (``t_ms``, ``rate_bps_up``,
``snr_db_down``, …) to the file's own column names, and ``scales`` multiplies each canonical
column (e.g. ``rate_bps_up: 1e6`` for Mbit/s); the time column is in ``time_unit``.
A missing rate comes from the SNR column through the mapping when ``rate_from='csi'``; a missing
delay/loss takes the option value; a missing direction is filled as ``other_direction`` says."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from traces.format import COLUMNS, Trace, TraceFormatError
from traces.importers.common import TIME_UNITS, ImportOptions, fill_direction, finish, numeric_column


def import_generic(path: str | Path, opts: ImportOptions) -> Trace:
    """Import any CSV through an explicit column map (see module doc)."""
    path = Path(path)
    if "t_ms" not in opts.columns:
        raise ValueError("the generic importer needs a column map with t_ms, e.g. --map t_ms=time")
    for canon in opts.columns:
        if canon not in COLUMNS:
            raise ValueError(f"unknown canonical column {canon!r} in the column map; known: {COLUMNS}")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    raw.columns = [c.strip() for c in raw.columns]
    cols = {}
    for canon, src in opts.columns.items():
        v = numeric_column(path, raw, src, missing="")
        bad = np.flatnonzero(np.isnan(v))
        if bad.size:
            raise TraceFormatError(path, 2 + int(bad[0]), src, "missing value", list(raw.columns).index(src) + 1)
        cols[canon] = v * opts.scales.get(canon, 1.0)
    cols["t_ms"] = cols["t_ms"] * TIME_UNITS[opts.time_unit]  # after any --scale of the time column
    n = len(cols["t_ms"])
    present = [d for d in ("up", "down") if f"rate_bps_{d}" in cols or f"snr_db_{d}" in cols]
    if not present:
        raise ValueError("the column map gives no rate_bps_* or snr_db_* column")
    for d in present:
        if f"rate_bps_{d}" not in cols:
            if opts.rate_from != "csi":
                raise ValueError(f"no rate_bps_{d} column: map one, or use rate_from=csi with snr_db_{d}")
            rate, delay, loss, _ = opts.csi_link(cols[f"snr_db_{d}"])
            cols[f"rate_bps_{d}"] = rate
            cols.setdefault(f"delay_ms_{d}", delay)
            cols.setdefault(f"loss_{d}", loss)
        cols.setdefault(f"delay_ms_{d}", np.full(n, opts.delay_ms))
        cols.setdefault(f"loss_{d}", np.full(n, opts.loss))
    meta = {"source": "generic-csv", "file": path.name, "rate_from": opts.rate_from,
            "column_map": dict(opts.columns)}
    if len(present) == 1:
        meta["note"] = fill_direction(cols, present[0], opts)
    return finish(cols, meta, opts)
