"""20 ms 5G NSA modem logs (e.g. the Doubb/Self-Attention-based-5G-Uplink dataset): an uplink
log with ``td`` (``YYYY-MM-DD hh:mm:ss.mmm``), ``5G_TBS``, ``5G_MCS``, ``5G_CQI``, ``5G_BLER`` (%),
``5G_RSRP``, ``5G_RB`` and 4G counterparts; values are bin averages.

Units the upstream leaves unstated, as options:
* throughput: ``5G_TBS`` is read as bits per scheduled slot, times ``nr_slots_per_s``
  (default 400: 30 kHz SCS has 2000 slots/s, and a DDDSU TDD pattern gives one in five to the
  uplink);
* CSI: ``5G_CQI`` (rounded) → efficiency by the chosen CQI table × bandwidth × (1 − overhead).
Loss comes from the recorded first-transmission BLER through the HARQ model (independent
retransmissions: residual = BLER^(max_retx+1)); HARQ adds harq_rtt_ms per expected retransmission.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from channel_models.cqi import cqi_efficiency
from channel_models.mapping import HarqModel
from traces.format import Trace, TraceFormatError
from traces.importers.common import (ImportOptions, Provenance, fill_direction, fill_missing, finish, numeric_column,
                                     read_timed_csv)


def import_modem(path: str | Path, opts: ImportOptions) -> Trace:
    """Import a 20 ms modem log (one direction, uplink by default) as a canonical trace.

    ``5G_TBS`` (bits per scheduled slot) must be ≥ 0 and ``5G_BLER`` a percentage in
    [0, 100]; errors name the file, line and source column."""
    path = Path(path)
    table, t_ms = read_timed_csv(path, "td", "%Y-%m-%d %H:%M:%S.%f", "YYYY-MM-DD hh:mm:ss.mmm", strictly_increasing=True)
    have = "up" if opts.direction in ("both", "up") else "down"
    filled = {}
    v = {}
    for col in ("5G_TBS", "5G_CQI", "5G_BLER", "5G_RSRP"):
        raw = numeric_column(path, table, col, missing=("",), nonnegative=col in ("5G_TBS", "5G_BLER"))
        v[col], filled[col] = fill_missing(path, table, col, raw)
    over = np.flatnonzero(v["5G_BLER"] > 100)
    if over.size:
        i = int(over[0])
        raise TraceFormatError(path, table.line_of(i), "5G_BLER", f"BLER {v['5G_BLER'][i]:g} % exceeds 100 %",
                               table.index("5G_BLER"))
    bler = v["5G_BLER"] / 100.0
    harq = HarqModel()
    residual = bler ** (harq.max_retx + 1)
    extra = harq.harq_rtt_ms * sum(bler ** k for k in range(1, harq.max_retx + 1))
    cqi = np.clip(np.round(v["5G_CQI"]), 0, 15)
    cols = {"t_ms": t_ms, f"delay_ms_{have}": opts.delay_ms + extra, f"loss_{have}": residual,
            f"cqi_{have}": cqi, "rsrp_dbm": v["5G_RSRP"]}
    table_no = 2 if opts.mapping == "cqi2" else 1
    if opts.rate_from == "throughput":
        with np.errstate(over="ignore"):  # an overflow is inf: refused by validation
            cols[f"rate_bps_{have}"] = v["5G_TBS"] * opts.nr_slots_per_s
    else:
        cols[f"rate_bps_{have}"] = cqi_efficiency(cqi.astype(int), table_no) * opts.bandwidth_hz * (1 - opts.overhead)
    meta = {"source": "modem-20ms", "file": path.name, "rate_from": opts.rate_from,
            "recorded_direction": have, "missing_values_filled": filled,
            "tbs_unit": "bits per scheduled slot", "nr_slots_per_s": opts.nr_slots_per_s,
            "loss_from": "5G_BLER via HARQ", "harq": {"max_retx": harq.max_retx, "harq_rtt_ms": harq.harq_rtt_ms},
            "step_ms": float(np.median(np.diff(t_ms))) if len(t_ms) > 1 else 20.0}
    if opts.rate_from == "csi":
        meta["mapping"] = {"name": f"cqi{table_no}", "bandwidth_hz": opts.bandwidth_hz, "overhead": opts.overhead}
    meta["note"] = fill_direction(cols, have, opts)
    rate_src = "5G_TBS" if opts.rate_from == "throughput" else "5G_CQI"
    sources = {f"rate_bps_{have}": rate_src, f"delay_ms_{have}": "5G_BLER", f"loss_{have}": "5G_BLER",
               f"cqi_{have}": "5G_CQI", "rsrp_dbm": "5G_RSRP"}
    where = Provenance(table.line_of, {c: (src, table.index(src)) for c, src in sources.items()})
    return finish(cols, meta, opts, path, where)
