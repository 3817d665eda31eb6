"""Real-time scheduling for the link's timekeepers (trace replayer, tc batch, delay element).

Model processes share the CPU with the emulated link: on 2 cores a decoding forward can hold a
core for tens of ms, and a timekeeper woken late applies a trace step or releases a packet late.
Measured here, a thread waking every 10 ms beside three CPU hogs: wake-up lateness p99 3.6 ms at
normal priority, 0.15 ms (max 0.22) with ``SCHED_FIFO``. ``SCHED_FIFO`` puts the
timekeepers ahead of every normal process when they wake; they sleep between steps and packets,
so they take no CPU from the models otherwise, and the kernel's real-time throttling
(``/proc/sys/kernel/sched_rt_runtime_us``) still reserves CPU for everything else.
``../shared/notes`` measured the effect on the delay element: p99 one-way delay 24.3 ms with two
CPU hogs, 21.9 ms after ``chrt -f -p 50`` (target 20 ms).

Needs ``CAP_SYS_NICE`` (root here); without it the caller keeps normal scheduling and the
refusal is logged, never raised.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

TIMEKEEPER_PRIORITY = 50  # SCHED_FIFO priority (1..99), as chrt -f -p 50 in the notes


def make_realtime(pid: int = 0, priority: int = TIMEKEEPER_PRIORITY) -> bool:
    """Give process/thread ``pid`` (0: the calling thread) SCHED_FIFO at ``priority``; True if
    granted, False (logged) if not."""
    try:
        os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as e:
        log.info("real-time scheduling refused (%s); keeping normal scheduling", e)
        return False
    return True
