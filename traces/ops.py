"""Operations on traces: resample to a step, slice, loop, time-scale, and build from a channel.

Resampling is exact for piecewise-constant rows: each output row holds the time-weighted mean
of the input over its step (so rates keep their mean, and upsampling repeats values).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from traces.format import COLUMNS, Trace
from traces.schedule import rows_before


def _edges(trace: Trace) -> np.ndarray:
    t = trace.data["t_ms"].to_numpy(dtype=float)
    return np.append(t, t[-1] + trace.last_hold_ms)


def resample(trace: Trace, step_ms: float) -> Trace:
    """Trace on a regular grid of ``step_ms`` ms; each row is the time-weighted mean over its step."""
    if step_ms <= 0:
        raise ValueError("step_ms must be positive")
    edges = _edges(trace)
    t0, t_end = edges[0], edges[-1]
    n = max(1, int(math.ceil((t_end - t0) / step_ms - 1e-9)))
    grid = t0 + np.arange(n + 1) * step_ms
    grid[-1] = min(grid[-1], t_end)
    widths = np.diff(edges)
    cols = {"t_ms": grid[:-1] - t0}
    for c in trace.data.columns:
        if c == "t_ms":
            continue
        v = trace.data[c].to_numpy(dtype=float)
        cum = np.concatenate(([0.0], np.cumsum(v * widths)))  # integral at each edge
        integ = np.interp(grid, edges, cum)
        cols[c] = np.diff(integ) / np.diff(grid)
        if c.startswith("cqi"):
            cols[c] = np.round(cols[c])
    meta = {k: v for k, v in trace.meta.items() if k != "last_row_ms"}
    meta.update(step_ms=float(step_ms), resampled_from_ms=trace.meta.get("resampled_from_ms", trace.step_ms))
    if not math.isclose(grid[-1] - grid[-2], step_ms):
        meta["last_row_ms"] = float(grid[-1] - grid[-2])
    return Trace(pd.DataFrame({c: cols[c] for c in COLUMNS if c in cols}), meta)


def slice_trace(trace: Trace, start_ms: float, end_ms: float | None = None) -> Trace:
    """The part of ``trace`` in [start_ms, end_ms) (ms from the trace start), re-based to t=0;
    the row in force at ``start_ms`` starts the slice."""
    t = trace.data["t_ms"].to_numpy(dtype=float) - trace.data["t_ms"].iloc[0]
    end_ms = trace.duration_ms if end_ms is None else min(end_ms, trace.duration_ms)
    if not 0 <= start_ms < end_ms:
        raise ValueError(f"empty slice [{start_ms}, {end_ms}) of a {trace.duration_ms:g} ms trace")
    first = trace.row_at(start_ms)
    last = rows_before(t, end_ms)
    df = trace.data.iloc[first:last].copy()
    new_t = np.maximum(t[first:last] - start_ms, 0.0)
    df["t_ms"] = new_t
    meta = {k: v for k, v in trace.meta.items() if k != "last_row_ms"}
    meta["slice_ms"] = [float(start_ms), float(end_ms)]
    hold = float(end_ms - start_ms - new_t[-1])
    if not math.isclose(hold, trace.step_ms):
        meta["last_row_ms"] = hold
    return Trace(df, meta)


def loop_trace(trace: Trace, duration_ms: float) -> Trace:
    """Repeat ``trace`` end to end until it lasts at least ``duration_ms``, cut at that length."""
    if duration_ms <= 0:
        raise ValueError("duration_ms must be positive")
    period = trace.duration_ms
    reps = int(math.ceil(duration_ms / period))
    t = trace.data["t_ms"].to_numpy(dtype=float) - trace.data["t_ms"].iloc[0]
    df = pd.concat([trace.data] * reps, ignore_index=True)
    df["t_ms"] = np.concatenate([t + k * period for k in range(reps)])
    # Each copy starts one period after the last, so a partial last row stays partial inside.
    looped = Trace(df, {**trace.meta, "looped_period_ms": period})
    return slice_trace(looped, 0.0, duration_ms) if reps * period > duration_ms else looped


def time_scale(trace: Trace, factor: float) -> Trace:
    """Stretch time by ``factor`` (2.0 = the channel changes half as fast); values unchanged."""
    if factor <= 0:
        raise ValueError("factor must be positive")
    df = trace.data.copy()
    df["t_ms"] = df["t_ms"] * factor
    meta = {**trace.meta, "step_ms": trace.step_ms * factor,
            "time_scale": trace.meta.get("time_scale", 1.0) * factor}
    if "last_row_ms" in meta:
        meta["last_row_ms"] = meta["last_row_ms"] * factor
    return Trace(df, meta)


def from_channel(spec) -> Trace:
    """Generate a trace from a :class:`channel_models.ChannelSpec` (fading → CSI → link)."""
    from channel_models.generator import generate_link

    csi, up, down = generate_link(spec)
    cols = {"t_ms": np.arange(spec.n_steps) * spec.step_ms,
            "rate_bps_up": up.rate_bps, "delay_ms_up": up.delay_ms, "loss_up": up.loss,
            "rate_bps_down": down.rate_bps, "delay_ms_down": down.delay_ms, "loss_down": down.loss,
            "snr_db_up": csi.snr_db_up, "snr_db_down": csi.snr_db_down}
    if spec.mapping.startswith("cqi"):
        cols["cqi_up"], cols["cqi_down"] = up.cqi, down.cqi
    df = pd.DataFrame({c: np.asarray(cols[c], dtype=float) for c in COLUMNS if c in cols})
    meta = {"source": "generated", "generator": "channel_models", "step_ms": float(spec.step_ms),
            "seed": spec.seed, "rate_from": "csi",
            "mapping": {"up": spec.mapping_for(spec.up).describe(),
                        "down": spec.mapping_for(spec.down).describe()},
            "channel": spec.to_dict()}
    return Trace(df, meta)


SUMMARY_COLUMNS = (("rate_bps", "rate_bps"), ("delay_ms", "delay_ms"), ("loss", "loss"), ("snr_db", "snr_db"))


def _stats(v: np.ndarray, weights: np.ndarray, total: float) -> dict[str, float]:
    """Time-weighted mean (weights in ms summing to ``total``) and the 5th/95th percentiles of
    one column, in its units; ``v`` may be reordered in place when it is writable."""
    mean = float(np.dot(v, weights) / total)
    work = v if v.flags.writeable else v.copy()
    p5, p95 = np.percentile(work, [5, 95], overwrite_input=True)
    return {"mean": mean, "p5": float(p5), "p95": float(p95)}


def _summary_from(columns: set[str], column, meta: dict) -> dict:
    """The summary from column names, a ``column(name) -> float array`` reader and the
    metadata; holds one column at a time besides the step weights, so memory is about three
    columns, not the table."""
    t_ms = column("t_ms")
    step = float(meta["step_ms"]) if "step_ms" in meta else \
        (float(np.median(np.diff(t_ms))) if len(t_ms) > 1 else 1000.0)
    hold = float(meta.get("last_row_ms", step))
    weights = np.empty_like(t_ms)  # each row's hold time in ms (no temporary copy of t)
    np.subtract(t_ms[1:], t_ms[:-1], out=weights[:-1])
    weights[-1] = hold
    out = {"duration_s": float(t_ms[-1] + hold - t_ms[0]) / 1000.0, "step_ms": step, "rows": int(len(t_ms)),
           "source": meta.get("source"), "rate_from": meta.get("rate_from")}
    del t_ms
    total = float(weights.sum())
    for d in ("up", "down"):
        out[d] = {key: _stats(column(f"{prefix}_{d}"), weights, total) if f"{prefix}_{d}" in columns else None
                  for key, prefix in SUMMARY_COLUMNS}
    return out


def summary(trace: Trace) -> dict:
    """JSON summary: duration_s, step_ms, rows, and per direction mean/p5/p95 of rate (bit/s),
    delay (ms), loss (0–1) and SNR (dB) where present (``None`` where absent)."""
    return _summary_from(set(trace.data.columns), lambda c: trace.data[c].to_numpy(dtype=float), trace.meta)


def summary_file(path) -> dict:
    """:func:`summary` of a trace file, validating it as :func:`traces.read_trace` would.

    A Parquet trace is streamed in row batches, one column at a time: peak memory is one
    float64 column (for its exact percentiles) plus a batch, not the table. A CSV trace is
    read whole."""
    from pathlib import Path

    from traces.format import TraceFormatError, _check_header, parquet_columns, parquet_metadata, read_trace

    path = Path(path)
    if not path.is_file() or _magic(path) != b"PAR1":
        return summary(read_trace(path))
    pf, meta = parquet_metadata(path)
    names = parquet_columns(pf)
    _check_header(path, names, None)
    rows = pf.metadata.num_rows
    if rows == 0:
        raise TraceFormatError(path, None, None, "trace has no rows")
    t0, t_last, median_step = _scan_time(path, pf, names, rows, need_median="step_ms" not in meta)
    step = float(meta["step_ms"]) if "step_ms" in meta else median_step
    hold = float(meta.get("last_row_ms", step))
    duration = t_last + hold - t0
    out = {"duration_s": duration / 1000.0, "step_ms": step, "rows": int(rows),
           "source": meta.get("source"), "rate_from": meta.get("rate_from")}
    summarised = {f"{prefix}_{d}" for _, prefix in SUMMARY_COLUMNS for d in ("up", "down")}
    for name in names:  # the columns the summary does not show are validated too
        if name != "t_ms" and name not in summarised:
            _checked_column(path, pf, names, name, rows, hold)
    for d in ("up", "down"):
        out[d] = {}
        for key, prefix in SUMMARY_COLUMNS:
            name = f"{prefix}_{d}"
            if name not in names:
                out[d][key] = None
                continue
            values, weighted = _checked_column(path, pf, names, name, rows, hold)
            p5, p95 = np.percentile(values, [5, 95], overwrite_input=True)
            out[d][key] = {"mean": weighted / duration, "p5": float(p5), "p95": float(p95)}
            del values
    return out


def _fail(path, names: list[str], name: str, row: int, message: str):
    from traces.format import TraceFormatError

    return TraceFormatError(path, 1 + row, name, message, names.index(name) + 1, "row")


def _scan_time(path, pf, names: list[str], rows: int, need_median: bool) -> tuple[float, float, float]:
    """(first t_ms, last t_ms, median step ms or nan) of a Parquet trace, checking the time rules
    batch by batch (the median needs the steps: 8 bytes a row, only when the metadata lacks it)."""
    from traces.format import iter_parquet_batches, nonfinite_message, time_problem

    first = last = None
    steps = np.empty(max(rows - 1, 0)) if need_median else None
    i = 0
    for (t,) in iter_parquet_batches(path, pf, ["t_ms"]):
        if not len(t):
            continue
        bad = np.flatnonzero(~np.isfinite(t))
        if bad.size:
            raise _fail(path, names, "t_ms", i + int(bad[0]), nonfinite_message(t[bad[0]]))
        joined = t if last is None else np.concatenate(([last], t))
        p = time_problem(joined)
        if p:
            raise _fail(path, names, "t_ms", i + p.row - (last is not None), p.message)
        if steps is not None and len(joined) > 1:
            k = i - (last is not None)
            steps[k:k + len(joined) - 1] = np.diff(joined)
        first = float(t[0]) if first is None else first
        last = float(t[-1])
        i += len(t)
    if first is None or i != rows:
        raise _fail(path, names, "t_ms", i, f"column has {i} rows, the file says {rows}")
    median = float(np.median(steps, overwrite_input=True)) if steps is not None and steps.size else 1000.0
    return first, last, median


def _checked_column(path, pf, names: list[str], name: str, rows: int, hold: float) -> tuple[np.ndarray, float]:
    """(values, time-weighted sum in value·ms) of one column, read with ``t_ms`` batch by
    batch into one float64 array and validated by the trace rules."""
    from traces.format import iter_parquet_batches, nonfinite_message, nonfinite_problem, value_problem

    values = np.empty(rows)
    weighted = 0.0
    pending: tuple[float, float] | None = None  # (t, value) of the last row seen, its hold unknown yet
    i = 0
    for t, v in iter_parquet_batches(path, pf, ["t_ms", name]):
        if not len(v):
            continue
        values[i:i + len(v)] = v
        if pending is not None:
            weighted += pending[1] * (t[0] - pending[0])
        weighted += float(np.dot(v[:-1], np.diff(t)))
        pending = (float(t[-1]), float(v[-1]))
        i += len(v)
    if pending is None or i != rows:
        raise _fail(path, names, name, i, f"column has {i} rows, the file says {rows}")
    weighted += pending[1] * hold
    p = nonfinite_problem(name, values) or value_problem(name, values)
    if p:
        raise _fail(path, names, name, p.row, nonfinite_message(values[p.row]) if p.kind == "nonfinite" else p.message)
    return values, weighted


def _magic(path) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)
