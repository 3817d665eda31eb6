"""Packet reading: every packet of a pcap file, with scapy, as :class:`Packet` records (time,
bytes on the wire, IPv4/TCP header fields, the captured part of the payload)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.utils import PcapReader

log = logging.getLogger(__name__)

@dataclass
class Packet:
    """One captured packet: when, how many bytes on the wire, and (IPv4/TCP) its header fields
    and the captured part of its payload (``payload`` may be shorter than ``payload_len``)."""

    t_s: float
    wire_bytes: int
    tcp: bool = False
    src: str = ""
    dst: str = ""
    sport: int = 0
    dport: int = 0
    ip_id: int = 0
    seq: int = 0
    ack: int = 0
    flags: str = ""
    payload_len: int = 0
    payload: bytes = b""

    def key(self) -> tuple:
        """What identifies this packet on both sides of the link (the TTL is not in it)."""
        return self.src, self.dst, self.sport, self.dport, self.ip_id, self.seq, self.ack, self.flags, self.payload_len


def _parse(pkt: Any) -> Packet:
    """A :class:`Packet` from a scapy packet; anything but well-formed IPv4/TCP is kept as
    bytes on the wire only."""
    p = Packet(float(pkt.time), int(getattr(pkt, "wirelen", None) or len(pkt)))
    if IP not in pkt or TCP not in pkt:
        return p
    ip, tcp = pkt[IP], pkt[TCP]
    hdr_bytes = int(ip.ihl or 5) * 4 + int(tcp.dataofs or 5) * 4
    payload_len = int(ip.len or 0) - hdr_bytes
    if payload_len < 0:
        return p
    seg = bytes(tcp)
    body = seg[int(tcp.dataofs or 5) * 4:][:payload_len]  # without link-layer padding
    return Packet(p.t_s, p.wire_bytes, True, ip.src, ip.dst, int(tcp.sport), int(tcp.dport), int(ip.id),
                  int(tcp.seq), int(tcp.ack), str(tcp.flags), payload_len, body)


def read_packets(path: Path) -> list[Packet]:
    """Every packet of a pcap file, in file order; a file cut short ends the list."""
    out: list[Packet] = []
    try:
        with PcapReader(str(path)) as reader:
            for pkt in reader:
                out.append(_parse(pkt))
    except (EOFError, OSError, ValueError) as e:  # scapy's Scapy_Exception is an Exception; see below
        log.warning("%s: read stopped after %d packets: %s", path, len(out), e)
    except Exception as e:  # noqa: BLE001 - a damaged file must not stop the accounting of the rest
        log.warning("%s: read stopped after %d packets: %s: %s", path, len(out), type(e).__name__, e)
    return out

