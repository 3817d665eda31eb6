"""Topologies that describe and build themselves (as Mininet's ``Topo``): :class:`DeviceEdge` and
:class:`Star`. :class:`topologies.net.EmulatedNetwork` builds any of them without knowing which;
:data:`TOPOLOGIES` is the one list of topology names (spec ``topology.kind``).
"""
from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

EDGE_IP = "10.0.0.254"
CROSS_IP = "10.0.0.200"


def device_ip(k: int) -> str:
    """Address of device ``k`` (0-based)."""
    return f"10.0.0.{k + 1}"


@dataclass(frozen=True)
class CrossTraffic:
    """A host beside the devices that sends UDP to the edge at ``rate_bps`` through the shared
    backhaul (``Star`` only); ``tool`` is ``udp`` (built-in generator) or ``iperf3``."""

    rate_bps: float = 5e6
    tool: str = "udp"

    def __post_init__(self) -> None:
        if self.rate_bps <= 0 or self.tool not in ("udp", "iperf3"):
            raise ValueError("cross traffic needs rate_bps > 0 and tool udp or iperf3")


@dataclass
class Built:
    """What a topology added to a Mininet network: the edge host, the device hosts, the
    optional cross-traffic host, and interfaces it made in the root namespace (to register
    for cleanup)."""

    edge: Any
    devices: list
    cross: Any = None
    root_ifaces: list[str] = field(default_factory=list)


class Topology(ABC):
    """A device–edge topology. ``shared_edge_egress``: the edge reaches every device through one
    interface (its downlinks are HTB classes by destination on that interface)."""

    kind: ClassVar[str] = ""
    shared_edge_egress: ClassVar[bool] = False
    n_devices: int
    cross_traffic: CrossTraffic | None = None

    @abstractmethod
    def build(self, net, tag: str) -> Built:
        """Add hosts, switches and links to the Mininet network ``net`` (names carry ``tag``)."""

    def shape_backhaul(self, net, built: Built, leaf_qdisc: str) -> None:
        """Shape links inside the topology other than the device links (none by default)."""

    @classmethod
    def from_spec(cls, d: dict) -> "Topology":
        """The topology of a spec's ``topology`` section (without its ``kind``)."""
        try:
            return cls(**d)
        except TypeError:
            raise ValueError(f"{cls.kind} takes no {', '.join(sorted(d))} (star does)") from None


@dataclass(frozen=True)
class DeviceEdge(Topology):
    """One device and one edge server joined by a direct link, shaped per direction."""

    kind: ClassVar[str] = "device-edge"
    n_devices: int = 1

    def __post_init__(self) -> None:
        if self.n_devices != 1:
            raise ValueError("device-edge has exactly one device; use star for more")

    def build(self, net, tag: str) -> Built:
        from mininet.node import Host

        edge = net.addHost(f"e{tag}", cls=Host, ip=f"{EDGE_IP}/24")
        dev = net.addHost(f"d{tag}0", cls=Host, ip=f"{device_ip(0)}/24")
        net.addLink(dev, edge)
        return Built(edge, [dev])


@dataclass(frozen=True)
class Star(Topology):
    """``n_devices`` devices behind an access point (a Linux bridge) to one edge; each device's
    radio link is shaped by its own trace; ``backhaul_rate_bps`` (if set) shapes the shared
    AP → edge port, which the optional cross traffic also uses."""

    kind: ClassVar[str] = "star"
    shared_edge_egress: ClassVar[bool] = True
    n_devices: int = 2
    cross_traffic: CrossTraffic | None = None
    backhaul_rate_bps: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.n_devices <= 64:
            raise ValueError("n_devices must lie in 1..64")

    def build(self, net, tag: str) -> Built:
        from mininet.node import Host
        from mininet.nodelib import LinuxBridge

        edge = net.addHost(f"e{tag}", cls=Host, ip=f"{EDGE_IP}/24")
        devices = [net.addHost(f"d{tag}{k}", cls=Host, ip=f"{device_ip(k)}/24") for k in range(self.n_devices)]
        ap = net.addSwitch(f"ap{tag}", cls=LinuxBridge, stp=False)
        for d in devices:
            net.addLink(d, ap)
        net.addLink(edge, ap)
        cross = None
        if self.cross_traffic is not None:
            cross = net.addHost(f"x{tag}", cls=Host, ip=f"{CROSS_IP}/24")
            net.addLink(cross, ap)
        return Built(edge, devices, cross, [f"ap{tag}"])

    def shape_backhaul(self, net, built: Built, leaf_qdisc: str) -> None:
        """HTB at ``backhaul_rate_bps`` on the AP port towards the edge (root namespace)."""
        if not self.backhaul_rate_bps:
            return
        port = [i.name for i in net.switches[0].intfList()
                if i.link and built.edge in (i.link.intf1.node, i.link.intf2.node)][0]
        rate = int(self.backhaul_rate_bps)
        for cmd in (f"tc qdisc replace dev {port} root handle 1: htb default 1",
                    f"tc class replace dev {port} parent 1: classid 1:1 htb rate {rate}bit ceil {rate}bit quantum 1514",
                    f"tc qdisc replace dev {port} parent 1:1 handle 10: {leaf_qdisc}"):
            subprocess.run(cmd.split(), check=True, capture_output=True)

    @classmethod
    def from_spec(cls, d: dict) -> "Star":
        d = dict(d)
        rate = d.pop("cross_traffic_bps", None)
        return cls(cross_traffic=CrossTraffic(rate) if rate else None, **d)


TOPOLOGIES: dict[str, type[Topology]] = {t.kind: t for t in (DeviceEdge, Star)}


def topology_from_spec(section: dict) -> Topology:
    """The topology of a spec's ``topology`` section (``kind`` names it; ValueError otherwise)."""
    d = dict(section)
    kind = d.pop("kind", DeviceEdge.kind)
    if kind not in TOPOLOGIES:
        raise ValueError(f"unknown topology kind {kind!r}; known: {', '.join(TOPOLOGIES)}")
    return TOPOLOGIES[kind].from_spec({k: v for k, v in d.items() if v is not None})
