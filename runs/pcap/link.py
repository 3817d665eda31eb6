"""The link in force when a captured message was sent, per device and direction: the steps the
replayer applied (``link-steps-<protocol>.csv``), else the rounds' CSI reports, each read as a
:class:`traces.schedule.LinkSchedule` on the wall clock (epoch seconds)."""
from __future__ import annotations

import math

import pandas as pd

from traces.schedule import LinkSchedule

# round-log CSI column → link-step column, and the factor to its unit
_REPORT_COLUMNS = {"csi_delay_up_ms": ("delay_ms_up", 1.0), "csi_delay_down_ms": ("delay_ms_down", 1.0),
                   "csi_rate_up_mbps": ("rate_bps_up", 1e6), "csi_rate_down_mbps": ("rate_bps_down", 1e6)}


class LinkInForce:
    """The link step in force at a wall-clock time, per device and direction: from the applied
    steps (``applied_epoch_s``), else from the rounds' CSI reports (at each round's ``t_start``)."""

    def __init__(self, steps: pd.DataFrame, rounds: pd.DataFrame):
        self.applied: dict[int, LinkSchedule] = {}
        if "applied_epoch_s" in steps and "device" in steps:
            for device, g in steps.groupby("device"):
                self.applied[int(device)] = LinkSchedule.from_steps(g, "applied_epoch_s")
        self.reported: dict[str, LinkSchedule] = {}
        if len(rounds) and {"t_start", "device_id"} <= set(rounds.columns):
            for device_id, g in rounds.groupby("device_id"):
                cols = {dst: g[src].to_numpy(dtype=float) * f for src, (dst, f) in _REPORT_COLUMNS.items() if src in g}
                self.reported[str(device_id)] = LinkSchedule.from_steps(
                    pd.DataFrame({"t_start": g["t_start"].to_numpy(dtype=float), **cols}), "t_start")

    def at(self, device: int, direction: str, t_s: float) -> tuple[float, float]:
        """(one-way delay ms, rate bit/s) in force at ``t_s`` (epoch s); NaN when unknown."""
        for schedule in (self.applied.get(device), self.reported.get(f"dev{device}")):
            if schedule is not None and schedule.row_at(t_s * 1000.0) >= 0:
                return (schedule.value_at(f"delay_ms_{direction}", t_s * 1000.0),
                        schedule.value_at(f"rate_bps_{direction}", t_s * 1000.0))
        return math.nan, math.nan
