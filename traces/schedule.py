"""The schedule of one link: which row is in force at a time (Mahimahi's ``LinkQueue`` idea —
one object owns the link's schedule, everything else asks it).

A *schedule* is rows that each come into force at a time and hold until the next row's: a
trace's rows (ms since its start; it loops with the trace's duration as period when asked), or
the steps a replayer applied (their ``applied_epoch_s``, never looping). Before the first row of
a schedule that does not loop nothing is in force (index -1, values NaN).

Everyone who needs "the link at t" reads it here:

- the replayer (:mod:`topologies.replayer`) walks :meth:`LinkSchedule.steps` in real time;
- the device's CSI report (:mod:`nodes.csi_report`) outside the testbed, and the simulator's
  link (:class:`runs.simulate.AnalyticLink`): :meth:`LinkSchedule.csi_at`,
  :meth:`LinkSchedule.outage_end_ms`;
- the run tables' ``csi_worst_*`` columns (:mod:`runs.tables`): :meth:`LinkSchedule.worst_in_windows`;
- the capture accounting (:mod:`runs.pcap`): :meth:`LinkSchedule.value_at` over the applied steps.

A rate of 0 in a direction is an *outage* there (nothing is delivered until the rate returns);
:meth:`LinkSchedule.outage_end_ms` says when. :func:`row_in_force` and :func:`rows_before` are
the project's only sorted-time lookups (a test greps for others).
"""
from __future__ import annotations

import math
from typing import Any, Iterator

from dataclasses import dataclass

import numpy as np
import pandas as pd

from channel_models.cell import DeviceChannel
from channel_models.csi import CSI

LINK_COLUMNS = ("rate_bps_up", "delay_ms_up", "loss_up", "rate_bps_down", "delay_ms_down", "loss_down")


def row_in_force(starts: np.ndarray, t: Any) -> Any:
    """Index of the row in force at ``t`` among rows coming into force at ``starts`` (sorted
    ascending, same unit as ``t``): the last row that starts at or before ``t``; -1 before the
    first. ``t`` a scalar gives an int, an array gives an int array."""
    i = np.searchsorted(starts, t, side="right") - 1
    return int(i) if np.ndim(i) == 0 else i.astype(np.int64)


def rows_before(starts: np.ndarray, t: Any) -> Any:
    """How many rows of ``starts`` (sorted ascending) start strictly before ``t`` (scalar → int)."""
    i = np.searchsorted(starts, t, side="left")
    return int(i) if np.ndim(i) == 0 else i.astype(np.int64)


class LinkSchedule:
    """Rows of link values in force from ``t_ms`` (ms, ascending) on; ``period_ms`` set: the
    schedule repeats with that period (``t_ms`` then starts at 0)."""

    def __init__(self, t_ms: np.ndarray, columns: dict[str, np.ndarray], period_ms: float | None = None):
        self.t_ms = np.asarray(t_ms, dtype=float)
        if len(self.t_ms) == 0:
            raise ValueError("a link schedule needs at least one row")
        if period_ms is not None and not period_ms > 0:
            period_ms = None  # a zero-length schedule cannot loop: its one row holds
        self.period_ms = period_ms
        self.columns = {c: np.asarray(v, dtype=float) for c, v in columns.items()}
        self._reports: list[CSI] | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_trace(cls, trace, loop: bool = True, scale: float = 1.0) -> "LinkSchedule":
        """The schedule of a :class:`traces.format.Trace` (time re-based to its first row);
        ``loop``: it repeats with the trace's duration; ``scale``: time runs that many times
        slower (2.0: the channel changes half as fast, as :func:`traces.ops.time_scale`)."""
        if not scale > 0:
            raise ValueError("scale must be positive")
        t = trace.data["t_ms"].to_numpy(dtype=float)
        cols = {c: trace.data[c].to_numpy(dtype=float) for c in trace.data.columns if c != "t_ms"}
        return cls((t - t[0]) * scale, cols, trace.duration_ms * scale if loop else None)

    @classmethod
    def from_steps(cls, steps: pd.DataFrame, time_col: str = "applied_epoch_s", unit_ms: float = 1000.0,
                   period_ms: float | None = None) -> "LinkSchedule | None":
        """The schedule of a table of applied steps (a replayer's link-step log: ``time_col`` in
        units of ``unit_ms`` ms, default seconds → this schedule's ms); None when it is empty."""
        if time_col not in steps.columns or not len(steps):
            return None
        s = steps.sort_values(time_col, kind="stable")
        cols = {c: s[c].to_numpy(dtype=float) for c in s.columns
                if c != time_col and pd.api.types.is_numeric_dtype(s[c])}
        return cls(s[time_col].to_numpy(dtype=float) * unit_ms, cols, period_ms)

    # ------------------------------------------------------------------ the row in force

    def __len__(self) -> int:
        return len(self.t_ms)

    def fold(self, t_ms: Any) -> Any:
        """``t_ms`` folded into the first period (unchanged when the schedule does not loop)."""
        return np.mod(t_ms, self.period_ms) if self.period_ms else t_ms

    def row_at(self, t_ms: Any) -> Any:
        """Index of the row in force at ``t_ms`` (ms on this schedule's clock; looping: folded
        into the period); -1 before the first row. Scalars give an int, arrays an int array."""
        return row_in_force(self.t_ms, self.fold(t_ms))

    def value_at(self, column: str, t_ms: Any) -> Any:
        """Value of ``column`` in force at ``t_ms`` (NaN before the first row)."""
        i = self.row_at(t_ms)
        v = self.columns[column]
        if np.ndim(i) == 0:
            return float(v[i]) if i >= 0 else math.nan
        return np.where(i >= 0, v[np.clip(i, 0, None)], math.nan)

    def row(self, i: int) -> dict[str, float]:
        """Row ``i`` as a dict of its columns."""
        return {c: float(v[i]) for c, v in self.columns.items()}

    def csi(self, i: int) -> CSI:
        """The CSI report of row ``i``."""
        if self._reports is None:
            self._reports = [CSI.from_row(self.row(k)) for k in range(len(self))]
        return self._reports[i]

    def csi_at(self, t_ms: float) -> CSI:
        """The report of the row in force at ``t_ms`` (the first row's before it starts)."""
        return self.csi(max(0, self.row_at(t_ms)))

    # ------------------------------------------------------------------ outages

    def in_outage(self, t_ms: float, direction: str) -> bool:
        """Whether ``direction``'s rate is 0 at ``t_ms`` (nothing is delivered)."""
        return self.value_at(f"rate_bps_{direction}", t_ms) == 0.0

    def outage_start_ms(self, t_ms: float, direction: str) -> float | None:
        """When the outage (rate 0 in ``direction``) in force at ``t_ms`` began, in ms on the same
        clock (a looping schedule looks back into the previous lap; -inf when every row is an
        outage); None when the rate at ``t_ms`` is not 0."""
        if not self.in_outage(t_ms, direction):
            return None
        rate, n = self.columns[f"rate_bps_{direction}"], len(self)
        k, offset = self.row_at(t_ms), (t_ms - self.fold(t_ms) if self.period_ms else 0.0)
        for _ in range(n):
            prev, prev_offset = k - 1, offset
            if prev < 0:
                if not self.period_ms:
                    return offset + float(self.t_ms[0])
                prev, prev_offset = n - 1, offset - self.period_ms
            if rate[prev] > 0:
                return offset + float(self.t_ms[k])
            k, offset = prev, prev_offset
        return -math.inf

    def outage_end_ms(self, t_ms: float, direction: str) -> float | None:
        """When the outage (rate 0 in ``direction``) in force at ``t_ms`` ends, in ms on the
        same clock; None when the rate at ``t_ms`` is not 0, inf when the link never recovers."""
        if not self.in_outage(t_ms, direction):
            return None
        rate = self.columns[f"rate_bps_{direction}"]
        base = t_ms - self.fold(t_ms) if self.period_ms else 0.0
        start = self.row_at(t_ms) + 1
        for lap in range(2 if self.period_ms else 1):  # the rest of this lap, then the whole next one
            for i in range(start if lap == 0 else 0, len(self)):
                if rate[i] > 0:
                    return base + lap * (self.period_ms or 0.0) + float(self.t_ms[i])
        return math.inf

    # ------------------------------------------------------------------ windows and steps

    def worst_in_windows(self, column: str, t0_ms: np.ndarray, t1_ms: np.ndarray, take_max: bool) -> np.ndarray:
        """Per window [t0, t1] (ms): the worst (max or min) of ``column`` in force at any time in
        it — the row in force at t0 (the first row when t0 is before it) and every row that
        starts up to t1. A looping schedule folds the windows into one period (a window of a
        whole period or more sees every row; one that runs past the period's end sees both ends)."""
        t0, t1 = np.asarray(t0_ms, dtype=float), np.asarray(t1_ms, dtype=float)
        v = self.columns[column]
        reduce = np.max if take_max else np.min

        def plain(a_ms: np.ndarray, b_ms: np.ndarray) -> np.ndarray:
            first = np.maximum(row_in_force(self.t_ms, a_ms), 0)
            stop = np.maximum(row_in_force(self.t_ms, b_ms) + 1, first + 1)
            return np.array([reduce(v[a:b]) for a, b in zip(first, stop)], dtype=float)

        if not self.period_ms:
            return plain(t0, t1)
        whole = (t1 - t0) >= self.period_ms
        f0, f1 = self.fold(t0), self.fold(t1)
        wrap = ~whole & (f1 < f0)  # the window runs past the period's end: [t0, P) and [0, t1]
        f0, f1 = np.where(whole, self.t_ms[0], f0), np.where(whole | wrap, np.inf, f1)
        w = plain(f0, f1)
        if wrap.any():
            head = plain(np.full(len(f0), self.t_ms[0]), self.fold(t1))
            w = np.where(wrap, (np.maximum if take_max else np.minimum)(w, head), w)
        return w

    def steps(self, until_ms: float | None = None) -> Iterator[tuple[int, float, int]]:
        """(step number, ms it comes into force, row) of every row starting before ``until_ms``
        in order — a looping schedule repeats its rows lap after lap (step numbers go on
        counting); without ``until_ms``, one pass over the rows."""
        n = len(self)
        if until_ms is None or not self.period_ms:
            stop = n if until_ms is None else rows_before(self.t_ms, until_ms)
            for i in range(stop):
                yield i, float(self.t_ms[i]), i
            return
        lap = 0
        while True:
            for i in range(n):
                t = lap * self.period_ms + float(self.t_ms[i])
                if t >= until_ms:
                    return
                yield lap * n + i, t, i
            lap += 1


@dataclass(frozen=True)
class ScheduleChannel(DeviceChannel):
    """A device's own channel in a cell (:mod:`channel_models.cell`) read from a link schedule:
    the rate column ``column`` (bit/s) in force at each TTI, from ``offset_ms`` on (one trace
    rotated per device), looping as the schedule does."""

    schedule: LinkSchedule
    column: str = "rate_bps_up"
    offset_ms: float = 0.0

    @classmethod
    def from_columns(cls, t_ms, rate_bps, offset_ms: float = 0.0, period_ms: float | None = None) -> "ScheduleChannel":
        """From two array-likes (row start times in ms, rates in bit/s); the series repeats with
        ``period_ms`` (default: the last row's time + the median step)."""
        t = np.asarray(t_ms, dtype=float)
        if len(t) != len(rate_bps) or not len(t) or np.any(np.diff(t) <= 0):
            raise ValueError("t_ms must increase and match rate_bps, non-empty")
        step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
        period = period_ms if period_ms is not None else t[-1] - t[0] + step
        return cls(LinkSchedule(t - t[0], {"rate_bps_up": np.asarray(rate_bps, dtype=float)}, period), "rate_bps_up",
                   float(offset_ms))

    def rates_bps(self, n_tti: int, tti_ms: float) -> np.ndarray:
        """Rate (bit/s) in force at the start of TTIs 0 … n_tti − 1 of ``tti_ms`` each."""
        return np.asarray(self.schedule.value_at(self.column, np.arange(n_tti) * tti_ms + self.offset_ms + 1e-9))
