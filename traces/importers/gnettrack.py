"""G-NetTrack Pro style 5G/LTE drive-test CSVs (e.g. the uccmisl 5G production dataset).

Columns used: ``Timestamp`` (``YYYY.MM.DD_hh.mm.ss``), ``SNR`` (dB), ``CQI``, ``RSRP`` (dBm),
``DL_bitrate``/``UL_bitrate`` (units unstated upstream; kbit/s is consistent with the values and
is the default of ``rate_unit``). ``-`` marks a missing value: forward-filled, and counted in the
metadata. Rows with the same timestamp are averaged. The recorded SNR is a downlink measurement;
with ``rate_from='csi'`` both directions are mapped from it (noted in the metadata).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from traces.format import Trace
from traces.importers.common import (RATE_UNITS, ImportOptions, Provenance, fill_missing, finish, numeric_column,
                                     read_timed_csv)

TIME_FORMAT = "%Y.%m.%d_%H.%M.%S"


def import_gnettrack(path: str | Path, opts: ImportOptions) -> Trace:
    """Import a G-NetTrack-style CSV as a canonical trace (rate from throughput or from CSI).

    Rates (``DL_bitrate``/``UL_bitrate``, in ``rate_unit``, default kbit/s) must be ≥ 0; rows
    that share a time stamp are averaged; errors name the file, line and source column."""
    path = Path(path)
    # Duplicate time stamps occur (merged below), so time only must not go backwards.
    table, t_ms = read_timed_csv(path, "Timestamp", TIME_FORMAT, "YYYY.MM.DD_hh.mm.ss", strictly_increasing=False)
    unit = RATE_UNITS[opts.rate_unit or "kbps"]
    fields = {"snr": "SNR", "cqi": "CQI", "rsrp": "RSRP", "dl": "DL_bitrate", "ul": "UL_bitrate"}
    values, filled = {}, {}
    for key, col in fields.items():
        v = numeric_column(path, table, col, nonnegative=key in ("dl", "ul"))
        values[key], filled[col] = fill_missing(path, table, col, v)
    frame = pd.DataFrame({"t_ms": t_ms, **values}).groupby("t_ms", sort=True).mean()
    dup = len(t_ms) - len(frame)
    t = frame.index.to_numpy(dtype=float)
    first_rows = np.unique(t_ms, return_index=True)[1]  # source row of each merged row
    cols = {"t_ms": t, "snr_db_up": frame["snr"].to_numpy(), "snr_db_down": frame["snr"].to_numpy(),
            "rsrp_dbm": frame["rsrp"].to_numpy()}
    meta = {"source": "gnettrack", "file": path.name, "rate_from": opts.rate_from,
            "duplicate_timestamps_merged": dup, "missing_values_filled": filled,
            "rate_unit": opts.rate_unit or "kbps", "step_ms": float(np.median(np.diff(t))) if len(t) > 1 else 1000.0,
            "note": "SNR is the recorded (downlink) SNR, used for both directions"}
    sources = {"snr_db_up": "SNR", "snr_db_down": "SNR", "rsrp_dbm": "RSRP", "cqi_up": "CQI", "cqi_down": "CQI"}
    if opts.rate_from == "throughput":
        for d, key in (("down", "dl"), ("up", "ul")):
            with np.errstate(over="ignore"):  # an overflow is inf: refused by validation
                cols[f"rate_bps_{d}"] = frame[key].to_numpy() * unit
            cols[f"delay_ms_{d}"] = np.full(len(t), opts.delay_ms)
            cols[f"loss_{d}"] = np.full(len(t), opts.loss)
            sources[f"rate_bps_{d}"] = fields[key]
        cols["cqi_up"] = cols["cqi_down"] = frame["cqi"].to_numpy()
    else:
        for d in ("up", "down"):
            rate, delay, loss, cqi = opts.csi_link(cols[f"snr_db_{d}"])
            cols[f"rate_bps_{d}"], cols[f"delay_ms_{d}"], cols[f"loss_{d}"] = rate, delay, loss
            cols[f"cqi_{d}"] = cqi
            sources[f"rate_bps_{d}"] = "SNR"
        meta["mapping"] = opts.link_mapping().describe()
    where = Provenance(lambda row: table.line_of(int(first_rows[row])),
                       {c: (src, table.index(src)) for c, src in sources.items()})
    return finish(cols, meta, opts, path, where)
