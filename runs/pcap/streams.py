"""TCP reassembly: one direction of a TCP connection as a sparse byte stream (snap-length cuts
leave holes whose length the IP header gives), retransmission marking, and matching each
``sent`` packet to its ``arrived`` copy."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from runs.pcap.packets import Packet

SEQ_MOD = 2**32
STREAM_SLACK_BYTES = 1 << 20  # a stream spans at most its captured payload plus this (packets the capture missed)

@dataclass
class Stream:
    """One direction of a TCP connection as a sparse byte stream: ``data`` where ``known``,
    holes where the snap length cut the payload. Offsets are relative to the initial sequence
    number; ``segments`` are (start, end, time) of every data segment of the capture it was
    built from."""

    flow: tuple
    isn: int
    data: bytearray
    known: np.ndarray
    segments: np.ndarray  # rows of start, end, t_s (float64)

    @property
    def total(self) -> int:
        """Stream length in bytes."""
        return len(self.data)

    def get(self, pos: int, n: int) -> bytes | None:
        """``n`` bytes at ``pos`` if all were captured, else None."""
        if pos < 0 or pos + n > self.total or not self.known[pos:pos + n].all():
            return None
        return bytes(self.data[pos:pos + n])

    def prefix(self, pos: int, n: int) -> bytes:
        """The captured bytes from ``pos`` on, up to ``n``, until the first hole."""
        end = min(pos + n, self.total)
        if pos >= end:
            return b""
        holes = np.flatnonzero(~self.known[pos:end])
        return bytes(self.data[pos:pos + (int(holes[0]) if holes.size else end - pos)])

    @cached_property
    def segment_starts(self) -> np.ndarray:
        """Distinct offsets where a segment begins, ascending."""
        return np.unique(self.segments[:, 0]).astype(np.int64) if len(self.segments) else np.zeros(0, np.int64)


def relative_seq(seq: int, isn: int) -> int:
    """Offset of ``seq`` in a stream starting at ``isn`` (32-bit wrap-around)."""
    return (seq - isn) % SEQ_MOD


def flow_isn(packets: list[Packet]) -> int:
    """The first data sequence number of one flow's packets: after the SYN when it was captured,
    else the lowest sequence number (modulo wrap-around) seen."""
    syn = [p for p in packets if "S" in p.flags]
    if syn:
        return (syn[0].seq + 1) % SEQ_MOD
    data = [p.seq for p in packets if p.payload_len > 0] or [p.seq for p in packets]
    first = data[0]
    return min(data, key=lambda s: relative_seq(s, first) if relative_seq(s, first) < SEQ_MOD // 2 else
               relative_seq(s, first) - SEQ_MOD)


def build_stream(flow: tuple, packets: list[Packet]) -> Stream:
    """Reassemble one flow's data segments (retransmissions overlap; later copies fill holes)."""
    isn = flow_isn(packets)
    limit = sum(p.payload_len for p in packets) + STREAM_SLACK_BYTES  # a wild sequence number allocates nothing
    segs = [(relative_seq(p.seq, isn), p) for p in packets if p.payload_len > 0]
    segs = [(s, p) for s, p in segs if s < limit]  # before the ISN or far beyond the data: not this stream
    total = max((s + p.payload_len for s, p in segs), default=0)
    data, known = bytearray(total), np.zeros(total, dtype=bool)
    rows = []
    for s, p in segs:
        n = len(p.payload)
        data[s:s + n] = p.payload
        known[s:s + n] = True
        rows.append((s, s + p.payload_len, p.t_s))
    return Stream(flow, isn, data, known, np.array(rows, dtype=np.float64).reshape(-1, 3))


def first_time(segments: np.ndarray, offset: int) -> float:
    """Earliest time a segment holding byte ``offset`` was captured (NaN: never)."""
    if not len(segments):
        return math.nan
    m = (segments[:, 0] <= offset) & (offset < segments[:, 1])
    return float(segments[m, 2].min()) if m.any() else math.nan


def flows_of(packets: list[Packet]) -> dict[tuple, list[Packet]]:
    """TCP packets grouped by flow (source, source port, destination, destination port), in capture order."""
    flows: dict[tuple, list[Packet]] = {}
    for p in packets:
        if p.tcp:
            flows.setdefault((p.src, p.sport, p.dst, p.dport), []).append(p)
    return flows


def mark_retransmissions(packets: list[Packet], isn: int) -> list[bool]:
    """Per packet of one flow (capture order): does it re-send stream bytes already sent?"""
    top, out = -1, []
    for p in packets:
        s = relative_seq(p.seq, isn)
        retrans = p.payload_len > 0 and s < SEQ_MOD // 2 and s < top
        top = max(top, s + p.payload_len) if p.payload_len > 0 and s < SEQ_MOD // 2 else top
        out.append(retrans)
    return out


def match_arrivals(sent: list[Packet], arrived: list[Packet]) -> list[float]:
    """Arrival time of each sent packet's copy (NaN: it never arrived); non-TCP: NaN."""
    pending: dict[tuple, list[float]] = {}
    for p in arrived:
        if p.tcp:
            pending.setdefault(p.key(), []).append(p.t_s)
    out = []
    for p in sent:
        times = pending.get(p.key()) if p.tcp else None
        out.append(times.pop(0) if times else math.nan)
    return out


@dataclass
class FlowArrays:
    """Per data-carrying packet of one flow (capture order): stream offsets, lengths, wire
    bytes, whether it re-sent bytes already sent, and whether its copy arrived."""

    start: np.ndarray
    end: np.ndarray
    wire: np.ndarray
    retrans: np.ndarray
    lost: np.ndarray

    @classmethod
    def of(cls, pkts: list[Packet], isn: int, retrans: list[bool], arrival: list[float]) -> "FlowArrays":
        """The arrays of ``pkts`` (only those with payload in the stream)."""
        keep = [i for i, p in enumerate(pkts) if p.payload_len > 0 and relative_seq(p.seq, isn) < SEQ_MOD // 2]
        start = np.array([relative_seq(pkts[i].seq, isn) for i in keep], dtype=np.int64)
        return cls(start, start + np.array([pkts[i].payload_len for i in keep], dtype=np.int64),
                   np.array([pkts[i].wire_bytes for i in keep], dtype=np.float64),
                   np.array([retrans[i] for i in keep], dtype=bool),
                   np.array([math.isnan(arrival[i]) for i in keep], dtype=bool))

    def covering(self, a: int, b: int) -> np.ndarray:
        """Mask of the packets holding bytes of stream range [a, b)."""
        return (self.start < b) & (self.end > a)

    def wire_bytes(self, a: int, b: int) -> float:
        """Wire bytes of range [a, b): payload overlap plus the packet overhead in proportion,
        over first transmissions."""
        m = self.covering(a, b) & ~self.retrans
        plen = (self.end - self.start)[m]
        overlap = np.minimum(self.end[m], b) - np.maximum(self.start[m], a)
        return float((overlap + (self.wire[m] - plen) * overlap / plen).sum())



def segments_at(packets: list[Packet], isn: int) -> np.ndarray:
    """(start, end, time) rows of the data segments of ``packets`` in a stream starting at ``isn``."""
    rows = [(relative_seq(p.seq, isn), relative_seq(p.seq, isn) + p.payload_len, p.t_s) for p in packets
            if p.payload_len > 0 and relative_seq(p.seq, isn) < SEQ_MOD // 2]
    return np.array(rows, dtype=np.float64).reshape(-1, 3)

