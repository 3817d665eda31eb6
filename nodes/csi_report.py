"""The device's CSI report: what its link applies now (SPEC §4).

In the testbed the replayer publishes every step it applies to a device's link into that
device's link-state file (:mod:`traces.link_state`); the device reports the step found there,
so a step the replayer missed is never reported. A device run on its own (no replayer) can
report a trace's row in force since a start time instead (:func:`schedule_csi`), read from the
same :class:`traces.schedule.LinkSchedule` the replayer and the simulator use.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from channel_models.csi import CSI
from traces.format import Trace
from traces.link_state import LinkStateReader
from traces.schedule import LinkSchedule


def applied_csi(path: str | Path) -> Callable[[], CSI]:
    """The report of the step the replayer last applied to this device's link (its link-state
    file ``path``); an unknown channel's report before the first step."""
    return LinkStateReader(path).csi


def schedule_csi(trace: Trace, start: Callable[[], float]) -> Callable[[], CSI]:
    """The report of ``trace``'s row in force (looping) ``time.monotonic() - start()`` seconds
    after it started; ``start`` is read at every report (an orchestrator may set it late)."""
    schedule = LinkSchedule.from_trace(trace)
    return lambda: schedule.csi_at((time.monotonic() - start()) * 1000.0)
