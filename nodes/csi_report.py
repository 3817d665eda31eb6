"""The device's CSI report from a trace: the row in force at a time since the trace started.

In the testbed the channel a device sees is the trace the replayer applies to its link, so the
device reports the same trace's row in force (SPEC §4); the simulator's link reads it too.
"""
from __future__ import annotations

import numpy as np

from channel_models.csi import CSI
from traces.format import Trace


class TraceCSI:
    """Reports of one trace; ``at(t_ms)`` loops past the trace's end."""

    def __init__(self, trace: Trace):
        self.duration_ms = trace.duration_ms
        t = trace.data["t_ms"].to_numpy(dtype=float)
        self._t = t - t[0]
        self._reports = [CSI.from_row(r) for r in trace.data.to_dict("records")]

    def outage_end_ms(self, t_ms: float, direction: str) -> float | None:
        """When an outage (rate 0 in ``direction``) in force at ``t_ms`` ends, in ms on the same
        clock; None when the rate at ``t_ms`` is not 0, inf when the trace never recovers."""
        if self.at(t_ms).rate_bps(direction) > 0:
            return None
        base = t_ms - (t_ms % self.duration_ms if self.duration_ms > 0 else 0.0)
        start = int(np.searchsorted(self._t, t_ms - base, side="right"))
        for lap in range(2):  # the rest of this lap, then the whole next one (the trace loops)
            for i in range(start if lap == 0 else 0, len(self._t)):
                if self._reports[i].rate_bps(direction) > 0:
                    return base + lap * self.duration_ms + self._t[i]
        return float("inf")

    def at(self, t_ms: float) -> CSI:
        """The report in force ``t_ms`` ms after the trace started (the trace loops)."""
        if self.duration_ms > 0:
            t_ms %= self.duration_ms
        return self._reports[max(0, int(np.searchsorted(self._t, t_ms, side="right")) - 1)]
