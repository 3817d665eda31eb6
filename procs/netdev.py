"""Interface counters of a host's namespace read from ``/proc/<pid>/net/dev`` (no process
spawned; the per-namespace view of the host's init process)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IfCounters:
    """Bytes and packets an interface received and sent (L2, as the kernel counts them)."""

    rx_bytes: int
    rx_packets: int
    rx_drops: int
    tx_bytes: int
    tx_packets: int
    tx_drops: int


def read_counters(pid: int | str, ifname: str) -> IfCounters:
    """Counters of ``ifname`` in the network namespace of process ``pid`` (``"self"``: ours)."""
    with open(f"/proc/{pid}/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == ifname:
                v = [int(x) for x in rest.split()]
                return IfCounters(v[0], v[1], v[3], v[8], v[9], v[11])
    raise KeyError(f"no interface {ifname} in the namespace of pid {pid}")
