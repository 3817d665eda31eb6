"""A generic CSV with a column map: ``columns`` maps canonical names (``t_ms``, ``rate_bps_up``,
``snr_db_down``, …) to the file's own column names, and ``scales`` multiplies each canonical
column (e.g. ``rate_bps_up: 1e6`` for Mbit/s); the time column is in ``time_unit``.
A missing rate comes from the SNR column through the mapping when ``rate_from='csi'``; a missing
delay/loss takes the option value; a missing direction is filled as ``other_direction`` says."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from traces.format import COLUMNS, Trace, TraceFormatError
from traces.importers.common import TIME_UNITS, ImportOptions, Provenance, fill_direction, finish, numeric_column
from traces.textio import read_csv_strings


def import_generic(path: str | Path, opts: ImportOptions) -> Trace:
    """Import any CSV through an explicit column map (see module doc); errors name the file,
    the line and the source column."""
    path = Path(path)
    if "t_ms" not in opts.columns:
        raise ValueError("the generic importer needs a column map with t_ms, e.g. --map t_ms=time")
    for canon in opts.columns:
        if canon not in COLUMNS:
            raise ValueError(f"unknown canonical column {canon!r} in the column map; known: {COLUMNS}")
    table = read_csv_strings(path, min_rows=1)
    cols = {}
    for canon, src in opts.columns.items():
        v = numeric_column(path, table, src, missing=("",))
        bad = np.flatnonzero(np.isnan(v))
        if bad.size:
            raise TraceFormatError(path, table.line_of(int(bad[0])), src, "missing value", table.index(src))
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is inf: refused by validation
            cols[canon] = v * opts.scales.get(canon, 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        cols["t_ms"] = cols["t_ms"] * TIME_UNITS[opts.time_unit]  # after any --scale of the time column
    n = len(cols["t_ms"])
    present = [d for d in ("up", "down") if f"rate_bps_{d}" in cols or f"snr_db_{d}" in cols]
    if not present:
        raise ValueError("the column map gives no rate_bps_* or snr_db_* column")
    sources = {canon: (src, table.index(src)) for canon, src in opts.columns.items()}
    for d in present:
        if f"rate_bps_{d}" not in cols:
            if opts.rate_from != "csi":
                raise ValueError(f"no rate_bps_{d} column: map one, or use rate_from=csi with snr_db_{d}")
            rate, delay, loss, _ = opts.csi_link(cols[f"snr_db_{d}"])
            cols[f"rate_bps_{d}"] = rate
            cols.setdefault(f"delay_ms_{d}", delay)
            cols.setdefault(f"loss_{d}", loss)
            sources[f"rate_bps_{d}"] = sources[f"snr_db_{d}"]
        cols.setdefault(f"delay_ms_{d}", np.full(n, opts.delay_ms))
        cols.setdefault(f"loss_{d}", np.full(n, opts.loss))
    meta = {"source": "generic-csv", "file": path.name, "rate_from": opts.rate_from,
            "column_map": dict(opts.columns)}
    if len(present) == 1:
        meta["note"] = fill_direction(cols, present[0], opts)
    return finish(cols, meta, opts, path, Provenance(table.line_of, sources))
