"""Topologies as declared data (as Mininet's ``Topo``): a topology says which hosts, switches and
links it has and, per shaped direction, a :class:`ShapedLink` — whose egress carries the rate,
which packets it matches, what drives it (a device's trace, a trace shared by several devices, a
fixed rate), its loss seed, and whether several devices share it. Nothing here touches a network:
:meth:`Topology.declare` returns a :class:`Layout`, and :class:`topologies.net.EmulatedNetwork`
builds any layout with one code path for every shaped link.

:data:`TOPOLOGIES` is the one list of topology names (spec ``topology.kind``). A new topology is a
:class:`Topology` subclass with a ``declare`` and its entry there.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Union

EDGE_IP = "10.0.0.254"
CROSS_IP = "10.0.0.200"
ROLES = ("edge", "device", "cross")
DIRECTIONS = ("up", "down")


def device_ip(k: int) -> str:
    """Address of device ``k`` (0-based)."""
    return f"10.0.0.{k + 1}"


def link_seed(run_seed: int, index: int) -> int:
    """The loss seed of the shaped link numbered ``index`` in a run seeded ``run_seed``: the one
    place seeds of links are derived (device ``k``'s uplink is index ``2k``, its downlink ``2k+1``)."""
    return run_seed * 1000 + index


def node_name(name: str, tag: str) -> str:
    """The Mininet name of declared node ``name`` in the run tagged ``tag``: the tag goes after the
    leading letters (``d3`` → ``d<tag>3``, ``ap`` → ``ap<tag>``), so two runs never collide."""
    m = re.fullmatch(r"([A-Za-z]+)(\d*)", name)
    if m is None:
        raise ValueError(f"node name {name!r} must be letters then digits")
    return f"{m.group(1)}{tag}{m.group(2)}"


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
class HostDecl:
    """A host: its declared ``name`` (letters then digits), ``role`` (edge, device, cross), its
    address, and for a device its index."""

    name: str
    role: str
    ip: str
    device: int | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"host {self.name}: role must be one of {', '.join(ROLES)}")
        if (self.role == "device") != (self.device is not None):
            raise ValueError(f"host {self.name}: a device, and only a device, has a device index")


@dataclass(frozen=True)
class SwitchDecl:
    """A switch (an access point): a Linux bridge in the root namespace."""

    name: str


@dataclass(frozen=True)
class LinkDecl:
    """A link (a veth pair) between nodes ``a`` and ``b``."""

    a: str
    b: str


@dataclass(frozen=True)
class Port:
    """The interface of ``node`` on its link to ``peer``."""

    node: str
    peer: str


@dataclass(frozen=True)
class DeviceTrace:
    """The link follows device ``device``'s trace (its up or down columns)."""

    device: int


@dataclass(frozen=True)
class SharedTrace:
    """The link follows one trace named ``name`` that drives a link several devices share
    (a cell's uplink and downlink)."""

    name: str


@dataclass(frozen=True)
class FixedRate:
    """The link keeps ``rate_bps`` (bit/s), without delay or loss (an access point's backhaul)."""

    rate_bps: float

    def __post_init__(self) -> None:
        if self.rate_bps <= 0:
            raise ValueError("a fixed-rate link needs rate_bps > 0")


TraceSource = Union[DeviceTrace, SharedTrace, FixedRate]


@dataclass(frozen=True)
class ShapedLink:
    """One shaped direction from the node of ``egress`` to the node of ``ingress`` (the same
    link, or a path through a switch). The rate is shaped on ``egress`` (the sender's
    interface); the NFQUEUE backend's delay element sits on ``ingress`` (the receiver's). ``match_dst``: the
    egress is shared, this link is the class of packets to that address; ``match_src``: the
    ingress is shared, the delay element takes packets from that address only. ``direction``
    says which half of the trace drives it; ``source`` what trace (or fixed rate); ``seed`` its
    loss seed; ``index`` its number, unique in the layout (HTB class, NFQUEUE number);
    ``devices`` whose traffic crosses it, and ``shared`` whether it is one link several devices
    share (a backhaul, a cell) rather than one device's own."""

    name: str
    direction: str
    egress: Port
    ingress: Port
    source: TraceSource
    seed: int
    index: int
    devices: tuple[int, ...]
    shared: bool = False
    match_src: str | None = None
    match_dst: str | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"shaped link {self.name}: direction must be up or down")


@dataclass(frozen=True)
class Layout:
    """A declared topology: hosts, switches, links, the shaped directions, and cross traffic
    (from the ``cross`` host to the edge), checked for consistency."""

    hosts: tuple[HostDecl, ...]
    switches: tuple[SwitchDecl, ...]
    links: tuple[LinkDecl, ...]
    shaped: tuple[ShapedLink, ...]
    cross_traffic: CrossTraffic | None = None

    def __post_init__(self) -> None:
        names = [h.name for h in self.hosts] + [s.name for s in self.switches]
        if len(set(names)) != len(names):
            raise ValueError(f"node names repeat: {names}")
        for n in names:
            node_name(n, "")
        if [h.role for h in self.hosts].count("edge") != 1:
            raise ValueError("a topology has exactly one edge host")
        if [h.device for h in self.devices] != list(range(len(self.devices))):
            raise ValueError("devices are numbered 0..n-1 in order")
        if self.cross_traffic is not None and not any(h.role == "cross" for h in self.hosts):
            raise ValueError("cross traffic needs a host of role cross")
        pairs = set()
        for ln in self.links:
            if ln.a not in names or ln.b not in names:
                raise ValueError(f"link {ln.a}–{ln.b} names an undeclared node")
            pairs |= {(ln.a, ln.b), (ln.b, ln.a)}
        seen = set()
        for s in self.shaped:
            for p in (s.egress, s.ingress):
                if (p.node, p.peer) not in pairs:
                    raise ValueError(f"shaped link {s.name}: no link {p.node}–{p.peer}")
            if s.index in seen:
                raise ValueError(f"shaped link {s.name}: index {s.index} repeats")
            seen.add(s.index)
            if isinstance(s.source, DeviceTrace) and s.source.device not in range(len(self.devices)):
                raise ValueError(f"shaped link {s.name}: no device {s.source.device}")
        keys = [(s.source, s.direction) for s in self.shaped if not isinstance(s.source, FixedRate)]
        if len(set(keys)) != len(keys):
            raise ValueError("one shaped link per trace and direction")

    @property
    def edge(self) -> HostDecl:
        """The edge host."""
        return next(h for h in self.hosts if h.role == "edge")

    @property
    def devices(self) -> list[HostDecl]:
        """The device hosts, by index."""
        return sorted((h for h in self.hosts if h.role == "device"), key=lambda h: h.device)

    @property
    def cross(self) -> HostDecl | None:
        """The cross-traffic host, if any."""
        return next((h for h in self.hosts if h.role == "cross"), None)

    def device_links(self, k: int) -> dict[str, ShapedLink]:
        """Device ``k``'s own links by direction (those its trace drives; {} for a device whose
        traffic only crosses shared links)."""
        return {s.direction: s for s in self.shaped if s.source == DeviceTrace(k)}

    def shared_traces(self) -> dict[str, dict[str, ShapedLink]]:
        """Links driven by a shared trace: trace name → direction → link."""
        out: dict[str, dict[str, ShapedLink]] = {}
        for s in self.shaped:
            if isinstance(s.source, SharedTrace):
                out.setdefault(s.source.name, {})[s.direction] = s
        return out

    def shared_egresses(self) -> list[Port]:
        """Egress interfaces several shaped links share (each link a class by destination)."""
        return list(dict.fromkeys(s.egress for s in self.shaped if s.match_dst))


def device_link_pair(k: int, run_seed: int, device: Port, edge: Port, shared_edge: bool) -> tuple[ShapedLink, ...]:
    """Device ``k``'s uplink (on the device's egress ``device``) and downlink (on the edge's
    egress ``edge``), driven by its trace, numbered ``2k`` and ``2k+1``. ``shared_edge``: the edge
    reaches every device through one interface, so the links match the device's address."""
    ip = device_ip(k) if shared_edge else None
    return (ShapedLink(f"{device.node}.up", "up", device, edge, DeviceTrace(k), link_seed(run_seed, 2 * k), 2 * k,
                       (k,), match_src=ip),
            ShapedLink(f"{device.node}.down", "down", edge, device, DeviceTrace(k), link_seed(run_seed, 2 * k + 1),
                       2 * k + 1, (k,), match_dst=ip))


class Topology(ABC):
    """A device–edge topology: its parameters, and :meth:`declare` what it is made of."""

    kind: ClassVar[str] = ""
    n_devices: int
    cross_traffic: CrossTraffic | None = None

    @abstractmethod
    def declare(self, seed: int = 0) -> Layout:
        """The hosts, switches, links and shaped links of this topology, with the loss seeds of a
        run seeded ``seed`` (see :func:`link_seed`)."""

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

    def declare(self, seed: int = 0) -> Layout:
        return Layout(hosts=(HostDecl("e", "edge", EDGE_IP), HostDecl("d0", "device", device_ip(0), 0)),
                      switches=(), links=(LinkDecl("d0", "e"),),
                      shaped=device_link_pair(0, seed, Port("d0", "e"), Port("e", "d0"), shared_edge=False))


@dataclass(frozen=True)
class Star(Topology):
    """``n_devices`` devices behind an access point (a Linux bridge) to one edge; each device's
    radio link is shaped by its own trace; ``backhaul_rate_bps`` (if set) shapes the shared
    AP → edge port, which the optional cross traffic also uses."""

    kind: ClassVar[str] = "star"
    n_devices: int = 2
    cross_traffic: CrossTraffic | None = None
    backhaul_rate_bps: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.n_devices <= 64:
            raise ValueError("n_devices must lie in 1..64")

    def declare(self, seed: int = 0) -> Layout:
        n = self.n_devices
        devices = tuple(HostDecl(f"d{k}", "device", device_ip(k), k) for k in range(n))
        cross = (HostDecl("x", "cross", CROSS_IP),) if self.cross_traffic is not None else ()
        links = (*(LinkDecl(d.name, "ap") for d in devices), LinkDecl("e", "ap"), *(LinkDecl(x.name, "ap") for x in cross))
        shaped = [s for k in range(n) for s in device_link_pair(k, seed, Port(f"d{k}", "ap"), Port("e", "ap"), True)]
        if self.backhaul_rate_bps:
            shaped.append(ShapedLink("backhaul.up", "up", Port("ap", "e"), Port("e", "ap"), FixedRate(self.backhaul_rate_bps),
                                     link_seed(seed, 2 * n), 2 * n, tuple(range(n)), shared=True))
        return Layout((HostDecl("e", "edge", EDGE_IP), *devices, *cross), (SwitchDecl("ap"),), links, tuple(shaped),
                      self.cross_traffic)

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
