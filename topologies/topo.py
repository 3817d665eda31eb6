"""Declarative topologies (what to build, not how): :class:`DeviceEdge` and :class:`Star`."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CrossTraffic:
    """A host beside the devices that sends UDP to the edge at ``rate_bps`` through the shared
    backhaul (``Star`` only); ``tool`` is ``udp`` (built-in generator) or ``iperf3``."""

    rate_bps: float = 5e6
    tool: str = "udp"

    def __post_init__(self) -> None:
        if self.rate_bps <= 0 or self.tool not in ("udp", "iperf3"):
            raise ValueError("cross traffic needs rate_bps > 0 and tool udp or iperf3")


@dataclass(frozen=True)
class DeviceEdge:
    """One device and one edge server joined by a direct link, shaped per direction."""

    name: str = "device-edge"

    @property
    def n_devices(self) -> int:
        """Number of device hosts."""
        return 1


@dataclass(frozen=True)
class Star:
    """``n_devices`` devices behind an access point (a Linux bridge) to one edge; each device's
    radio link is shaped by its own trace; ``backhaul_rate_bps`` (if set) shapes the shared
    AP → edge port, which the optional cross traffic also uses."""

    n_devices: int = 2
    cross_traffic: CrossTraffic | None = None
    backhaul_rate_bps: float | None = None
    name: str = "star"

    def __post_init__(self) -> None:
        if not 1 <= self.n_devices <= 64:
            raise ValueError("n_devices must lie in 1..64")
