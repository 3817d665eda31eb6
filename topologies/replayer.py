"""Replay a trace onto link shapers in real time, on the monotonic clock.

Step i is due at ``start + t_ms[i]``; the replayer sleeps until then, applies both directions
(rate through the persistent tc batch, delay/loss through the netem change or the delay
element's control line) and logs when it was due, when it was applied and how long that took.
A step whose successor is already due when its turn comes is *missed* (skipped, counted, never
applied late out of order). The replay thread runs with real-time priority where the host allows
it (:mod:`topologies.realtime`), so busy model processes do not make it miss steps. Looping,
slicing and time-scaling use ``traces.ops``; which row is in force when, looping included, is the
link's :class:`traces.schedule.LinkSchedule` (the one the device, the simulator and the reports
read). With ``publish`` paths the replay thread also writes every step it applies into that
device's link-state file (:mod:`traces.link_state`), which the device's CSI report reads: the
device reports what its link applied, a missed step included.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from topologies.realtime import make_realtime
from traces.format import Trace
from traces.link_state import LinkStateWriter
from traces.ops import loop_trace, slice_trace, time_scale
from traces.schedule import LINK_COLUMNS, LinkSchedule

log = logging.getLogger(__name__)


@dataclass
class ReplayOptions:
    """start_ms/end_ms: slice of the trace; loop_to_ms: loop it to this length; scale: time factor."""

    start_ms: float = 0.0
    end_ms: float | None = None
    loop_to_ms: float | None = None
    scale: float = 1.0


def prepare(trace: Trace, opts: ReplayOptions) -> Trace:
    """Apply slice, time-scale and loop to a trace, in that order."""
    t = trace
    if opts.start_ms or opts.end_ms is not None:
        t = slice_trace(t, opts.start_ms, opts.end_ms)
    if opts.scale != 1.0:
        t = time_scale(t, opts.scale)
    if opts.loop_to_ms is not None:
        t = loop_trace(t, opts.loop_to_ms)
    return t


LINK_VALUES = LINK_COLUMNS
# device index, trace row, trace ms, due and applied monotonic s, applied wall clock (epoch s), lateness ms
STEP_COLUMNS = ("step", "device", "t_ms", "due_s", "applied_s", "applied_epoch_s", "apply_ms", *LINK_VALUES)


@dataclass
class StepLog:
    """What was applied when (:data:`STEP_COLUMNS`): trace row and time, due and applied
    monotonic seconds, applied wall clock (epoch s, the round logs' clock), lateness, values."""

    rows: list[dict] = field(default_factory=list)
    missed: int = 0

    def frame(self) -> pd.DataFrame:
        """The log as a DataFrame (one row per applied step; the columns even when empty)."""
        return pd.DataFrame(self.rows, columns=list(STEP_COLUMNS))

    def apply_ms(self) -> np.ndarray:
        """Time from due to applied per step, in ms."""
        return np.array([r["apply_ms"] for r in self.rows]) if self.rows else np.zeros(0)


class TraceReplayer:
    """Drives ``links`` (a list of ``{'up': shaper, 'down': shaper}``, one per device, each with
    its own trace) from ``traces`` on a background thread; ``publish`` (one path per device, or
    None) is where each device's applied link state is written (:mod:`traces.link_state`)."""

    def __init__(self, links: list[dict], traces: list[Trace], opts: ReplayOptions = ReplayOptions(),
                 publish: list | None = None):
        if len(links) != len(traces):
            raise ValueError("one trace per device link is needed")
        if publish is not None and len(publish) != len(links):
            raise ValueError("one link-state path per device link is needed")
        self.links = links
        self.traces = [prepare(t, ReplayOptions(opts.start_ms, opts.end_ms)) for t in traces]  # the slices
        # The schedule scales time, and loops when a length is asked for (to that length), else it is played once.
        self.schedules = [LinkSchedule.from_trace(t, loop=opts.loop_to_ms is not None, scale=opts.scale)
                          for t in self.traces]
        self.log = StepLog()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_time: float | None = None
        self.error: BaseException | None = None
        self.realtime: bool | None = None  # whether the replay thread got SCHED_FIFO (None: not started)
        self._writers = [LinkStateWriter(p) for p in publish] if publish is not None else None
        # One merged timeline: (t_ms, device index, step number, schedule row).
        events = sorted((t_ms, k, step, row) for k, sch in enumerate(self.schedules)
                        for step, t_ms, row in sch.steps(opts.loop_to_ms))
        self._events = events
        # For each event, the index of the same device's next event (len(events) if none).
        self._next_same = [len(events)] * len(events)
        last: dict[int, int] = {}
        for j in range(len(events) - 1, -1, -1):
            k = events[j][1]
            self._next_same[j] = last.get(k, len(events))
            last[k] = j

    def apply(self, k: int, row: int, step: int | None = None, t_ms: float | None = None) -> None:
        """Apply schedule row ``row`` of device ``k`` to both directions, and publish it as
        ``step`` (default: the row) at trace time ``t_ms`` (default: the row's)."""
        c = self.schedules[k].columns
        self.links[k]["up"].set(c["rate_bps_up"][row], c["delay_ms_up"][row], c["loss_up"][row])
        self.links[k]["down"].set(c["rate_bps_down"][row], c["delay_ms_down"][row], c["loss_down"][row])
        if self._writers is not None:
            self._writers[k].publish(row if step is None else step,
                                     self.schedules[k].t_ms[row] if t_ms is None else t_ms, time.time(),
                                     self.schedules[k].row(row))

    def apply_first(self) -> None:
        """Apply every device's first row now (the links' state before the replay starts)."""
        for k in range(len(self.traces)):
            self.apply(k, 0)

    def start(self, start_time: float | None = None) -> "TraceReplayer":
        """Replay on a thread: each step is applied when it falls due, the first rows at once;
        ``start_time`` is the monotonic second the trace's t=0 maps to (default: now)."""
        self.start_time = time.monotonic() if start_time is None else start_time
        self._thread = threading.Thread(target=self._run, name="trace-replayer", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        self.realtime = make_realtime()
        try:
            ev = self._events
            n = len(ev)
            j = 0
            while j < n and not self._stop.is_set():
                t_ms, k, step, row = ev[j]
                due = self.start_time + t_ms / 1000.0
                now = time.monotonic()
                if due > now:
                    if self._stop.wait(due - now):
                        break
                # Skip this device's step if its next step is already due (missed, never applied late).
                nxt = self._next_same[j]
                if nxt < n and self.start_time + ev[nxt][0] / 1000.0 <= time.monotonic():
                    self.log.missed += 1
                else:
                    self.apply(k, row, step, t_ms)
                    applied, applied_epoch = time.monotonic(), time.time()
                    cols = self.schedules[k].columns
                    self.log.rows.append({"step": step, "device": k, "t_ms": t_ms, "due_s": due, "applied_s": applied,
                                          "applied_epoch_s": applied_epoch, "apply_ms": (applied - due) * 1000.0,
                                          **{c: float(cols[c][row]) for c in LINK_VALUES}})
                j += 1
        except BaseException as e:  # surfaced by join()
            self.error = e
            log.exception("trace replay failed")

    def stop(self) -> None:
        """Stop replaying (the links keep their last values, the link-state files the last step)."""
        self._stop.set()
        try:
            self.join()
        finally:
            for w in self._writers or []:
                w.close()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the replay to end; re-raise an error from the replay thread."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None:
            raise RuntimeError("trace replay failed") from self.error
