"""Operations on traces: resample to a step, slice, loop, time-scale, and build from a channel.

Resampling is exact for piecewise-constant rows: each output row holds the time-weighted mean
of the input over its step (so rates keep their mean, and upsampling repeats values).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from traces.format import COLUMNS, Trace


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
    last = int(np.searchsorted(t, end_ms, side="left"))
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


def summary(trace: Trace) -> dict:
    """JSON summary: duration_s, step_ms, rows, and per direction mean/p5/p95 of rate (bit/s),
    delay (ms), loss (0–1) and SNR (dB) where present."""
    out = {"duration_s": trace.duration_ms / 1000.0, "step_ms": trace.step_ms, "rows": len(trace),
           "source": trace.meta.get("source"), "rate_from": trace.meta.get("rate_from")}
    w = np.diff(_edges(trace))
    for d in ("up", "down"):
        block = {}
        for key, col in (("rate_bps", f"rate_bps_{d}"), ("delay_ms", f"delay_ms_{d}"),
                         ("loss", f"loss_{d}"), ("snr_db", f"snr_db_{d}")):
            if col not in trace.data:
                block[key] = None
                continue
            v = trace.data[col].to_numpy(dtype=float)
            block[key] = {"mean": float(np.average(v, weights=w)),
                          "p5": float(np.percentile(v, 5)), "p95": float(np.percentile(v, 95))}
        out[d] = block
    return out
