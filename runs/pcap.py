"""Packet-level accounting of a captured emulated run (``wisv pcap RUN_DIR``), with scapy.

For every capture of ``RUN_DIR/pcap/capture.json`` (see :mod:`topologies.capture`: per device
and direction, ``sent`` after the rate shaper and ``arrived`` after the delay element):

1. packets are read with scapy (time, bytes on the wire, IPv4/TCP header fields, the captured
   part of the payload); each TCP stream of a ``sent`` capture is reassembled by sequence number
   into a sparse byte stream (snap-length cuts leave holes; their length is known from the IP
   header);
2. ZMTP 3 is parsed from the stream: the greeting (signature, version, mechanism), then frames
   (flags byte: MORE 0x01, LONG 0x02, COMMAND 0x04; a 1- or 8-byte size); data frames are grouped
   into multipart messages by the MORE flag. Where a frame header fell into a hole the parser
   resynchronises at the next TCP segment that starts a message. The first frame of each message
   is our wire header (msgpack ``{"v", "t", "f", "a"}``); its type, ``request_id`` and ``round``
   are read from whatever prefix was captured, each value checked, never trusted: bytes that do
   not decode make an *undecodable* message, never an error. CURVE runs: frames are encrypted
   MESSAGE commands, so messages are grouped by time and only sizes and timing are reported;
3. every ``sent`` packet is matched to its ``arrived`` copy (addresses, ports, IP id, sequence,
   acknowledgement, flags, length): unmatched ones were dropped by the emulated loss; a segment
   re-sending stream bytes already sent is a retransmission;
4. a message's one-way delay runs from its first byte in the ``sent`` capture to its last byte in
   the ``arrived`` capture; it is compared with the trace's delay in force when it was sent plus
   its serialisation (its wire bytes at the trace's rate in force; ``link-steps-*.csv``).

Written to ``RUN_DIR/pcap/``: ``pcap-packets.parquet``, ``pcap-messages.parquet``,
``pcap-rounds.parquet`` (per round of the round logs: on-wire bytes from the packets inside the
round's ``[t_start, t_end]`` beside the device's interface-counter bytes, retransmissions, drops,
one-way delays) and ``pcap-summary.json``.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import msgpack
import numpy as np
import pandas as pd
from scapy.layers.inet import IP, TCP
from scapy.utils import PcapReader

from nodes.wire import MESSAGE_TYPES, WIRE_VERSION

log = logging.getLogger(__name__)
MANIFEST = "capture.json"
SEQ_MOD = 2**32
ZMTP_GREETING_BYTES = 64
ZMTP_MORE, ZMTP_LONG, ZMTP_COMMAND = 0x01, 0x02, 0x04
CURVE_MESSAGE_OVERHEAD_BYTES = 8 + 8 + 16 + 1  # "\x07MESSAGE", short nonce, MAC, inner flags byte
CURVE_GROUP_GAP_S = 0.002  # encrypted frames sent closer together than this form one message
MAX_ID_CHARS = 128
HEADER_SIGNATURE = b"\x84\xa1v"  # our header: a msgpack map of 4 keys whose first key is "v"
CURVE_SIGNATURE = b"\x07MESSAGE"
STREAM_SLACK_BYTES = 1 << 20  # a stream spans at most its captured payload plus this (packets the capture missed)


# ----------------------------------------------------------------------------- packets

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


# ----------------------------------------------------------------------------- streams

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


# ----------------------------------------------------------------------------- our header

@dataclass
class HeaderInfo:
    """What a message's first frame says, as far as it was captured and checked."""

    decodable: bool = False
    type: str = ""
    request_id: str = ""
    round: int = -1


def _checked_id(v: Any) -> str:
    return v if isinstance(v, str) and 0 < len(v) <= MAX_ID_CHARS and v.isprintable() else ""


def _checked_round(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31 else -1


def decode_header_prefix(prefix: bytes) -> HeaderInfo:
    """Type, request id and round from the (possibly cut) bytes of a wire header frame. A
    message is decodable when its version is ours and its type is known; values of the wrong
    type are left out; garbage gives an undecodable message, never an exception."""
    up = msgpack.Unpacker(raw=False, max_buffer_size=max(len(prefix), 1), strict_map_key=False)
    up.feed(prefix)
    version, info = None, HeaderInfo()
    try:
        for _ in range(up.read_map_header()):
            key = up.unpack()
            if key == "v":
                version = up.unpack()
            elif key == "t":
                t = up.unpack()
                info.type = t if isinstance(t, str) and t in MESSAGE_TYPES else ""
            elif key == "f":
                for _ in range(up.read_map_header()):
                    name = up.unpack()
                    if name == "request_id":
                        info.request_id = _checked_id(up.unpack())
                    elif name == "round":
                        info.round = _checked_round(up.unpack())
                    else:
                        up.skip()
            else:
                up.skip()
    except msgpack.OutOfData:
        pass  # cut by the snap length: keep what was read
    except Exception:  # noqa: BLE001 - any malformed msgpack (several exception types)
        return HeaderInfo()
    info.decodable = isinstance(version, int) and not isinstance(version, bool) and version == WIRE_VERSION \
        and bool(info.type)
    return info if info.decodable else HeaderInfo()


# ----------------------------------------------------------------------------- ZMTP 3

@dataclass
class ZmtpMessage:
    """One multipart message in a stream: byte range [start, end) including frame headers,
    application bytes (frame bodies, as far as their headers were read), frames, and what its
    header said. ``frames_parsed`` is False when a frame header fell into a hole: the message
    then ends where the next one begins (the stream carries nothing between messages), so its
    size and timing still hold, its application bytes and frame count do not."""

    start: int
    end: int
    app_bytes: int = 0
    n_frames: int = 0
    frames_parsed: bool = True
    encrypted: bool = False
    header: HeaderInfo = field(default_factory=HeaderInfo)


@dataclass
class ParsedStream:
    """The ZMTP reading of one stream: mechanism (NULL, CURVE, … or '' without a greeting),
    messages, and the bytes that could not be parsed (lost sync)."""

    mechanism: str = ""
    messages: list[ZmtpMessage] = field(default_factory=list)
    unparsed_bytes: int = 0
    command_bytes: int = 0


def parse_greeting(raw: bytes | None) -> str | None:
    """The security mechanism of a ZMTP 3 greeting (64 bytes), or None if it is not one."""
    if raw is None or len(raw) < ZMTP_GREETING_BYTES or raw[0] != 0xFF or raw[9] != 0x7F or raw[10] < 3:
        return None
    mech = raw[12:32].rstrip(b"\0")
    return mech.decode("ascii") if mech and all(0x20 < c < 0x7F for c in mech) else None


def frame_header(st: Stream, pos: int) -> tuple[int, int, int] | None:
    """(flags, body size, header length) of the ZMTP frame at ``pos``; None when those bytes
    were not captured or the flags are not ZMTP's."""
    first = st.get(pos, 1)
    if first is None or first[0] & ~0x07:
        return None
    flags = first[0]
    if flags & ZMTP_LONG:
        raw = st.get(pos + 1, 8)
        return None if raw is None else (flags, int.from_bytes(raw, "big"), 9)
    raw = st.get(pos + 1, 1)
    return None if raw is None else (flags, raw[0], 2)


def starts_message(st: Stream, pos: int, mechanism: str) -> bool:
    """Whether a message (CURVE: an encrypted frame) plausibly begins at ``pos``."""
    hdr = frame_header(st, pos)
    if hdr is None:
        return False
    flags, _, hl = hdr
    if mechanism == "CURVE":
        return bool(flags & ZMTP_COMMAND) and st.prefix(pos + hl, len(CURVE_SIGNATURE)) == CURVE_SIGNATURE
    return not flags & ZMTP_COMMAND and st.prefix(pos + hl, len(HEADER_SIGNATURE)) == HEADER_SIGNATURE


def _resync(st: Stream, after: int, mechanism: str) -> int | None:
    """The first segment start after ``after`` where a message begins, or None."""
    starts = st.segment_starts
    for s in starts[np.searchsorted(starts, after, side="right"):]:
        if starts_message(st, int(s), mechanism):
            return int(s)
    return None


def parse_zmtp(st: Stream) -> ParsedStream:
    """Frames and messages of one stream (see the module docstring)."""
    mech = parse_greeting(st.get(0, ZMTP_GREETING_BYTES))
    out = ParsedStream(mechanism=mech or "")
    pos: int | None = ZMTP_GREETING_BYTES if mech else _resync(st, -1, "")
    if pos is None or (mech is None and pos > 0):
        out.unparsed_bytes += st.total if pos is None else pos
    cur: ZmtpMessage | None = None
    while pos is not None and pos < st.total:
        hdr = frame_header(st, pos)
        if hdr is None:  # a hole or not ZMTP: skip to where the next message begins
            nxt = _resync(st, pos, out.mechanism)
            stop = st.total if nxt is None else nxt
            if cur is not None:
                cur.end, cur.frames_parsed = stop, False
                out.messages.append(cur)
                cur = None
            else:
                out.unparsed_bytes += stop - pos
            pos = nxt
            continue
        flags, size, hl = hdr
        end = pos + hl + size
        if flags & ZMTP_COMMAND:
            if out.mechanism == "CURVE" and st.prefix(pos + hl, len(CURVE_SIGNATURE)) == CURVE_SIGNATURE:
                out.messages.append(ZmtpMessage(pos, min(end, st.total), max(0, size - CURVE_MESSAGE_OVERHEAD_BYTES), 1,
                                                end <= st.total, encrypted=True))
            else:
                out.command_bytes += min(end, st.total) - pos
            pos = end
            continue
        if cur is None:
            cur = ZmtpMessage(pos, end, header=decode_header_prefix(st.prefix(pos + hl, size)))
        cur.end, cur.app_bytes, cur.n_frames = end, cur.app_bytes + size, cur.n_frames + 1
        if end > st.total:
            cur.end, cur.frames_parsed = st.total, False
        if not flags & ZMTP_MORE or end > st.total:
            out.messages.append(cur)
            cur = None
        pos = end
    if cur is not None:
        cur.frames_parsed = False
        out.messages.append(cur)
    if out.mechanism == "CURVE":
        out.messages = group_by_time(out.messages, st.segments)
    return out


def group_by_time(frames: list[ZmtpMessage], segments: np.ndarray, gap_s: float = CURVE_GROUP_GAP_S) -> list[ZmtpMessage]:
    """Encrypted frames (one per CURVE MESSAGE command) joined into messages: a frame sent
    within ``gap_s`` of the previous frame's last byte continues its message."""
    out: list[ZmtpMessage] = []
    last_t = -math.inf
    for f in frames:
        t0 = first_time(segments, f.start)
        if out and not (t0 - last_t > gap_s):
            m = out[-1]
            m.end, m.app_bytes, m.n_frames, m.frames_parsed = f.end, m.app_bytes + f.app_bytes, m.n_frames + 1, \
                m.frames_parsed and f.frames_parsed
        else:
            out.append(ZmtpMessage(f.start, f.end, f.app_bytes, 1, f.frames_parsed, True))
        last_t = first_time(segments, max(f.start, f.end - 1))
    return out


# ----------------------------------------------------------------------------- the link in force

class LinkInForce:
    """The trace step in force at a wall-clock time, per device and direction: from
    ``link-steps-<protocol>.csv`` (``applied_epoch_s``), else from the rounds' CSI reports."""

    def __init__(self, steps: pd.DataFrame, rounds: pd.DataFrame):
        self.steps = steps.sort_values("applied_epoch_s") if "applied_epoch_s" in steps else pd.DataFrame()
        self.rounds = rounds.sort_values("t_start") if len(rounds) else rounds

    def at(self, device: int, direction: str, t_s: float) -> tuple[float, float]:
        """(one-way delay ms, rate bit/s) in force at ``t_s``; NaN when unknown."""
        if len(self.steps):
            s = self.steps[self.steps["device"] == device]
            i = int(np.searchsorted(s["applied_epoch_s"].to_numpy(), t_s, side="right")) - 1
            if i >= 0:
                row = s.iloc[i]
                return float(row[f"delay_ms_{direction}"]), float(row[f"rate_bps_{direction}"])
        if len(self.rounds):
            r = self.rounds[self.rounds["device_id"] == f"dev{device}"]
            i = int(np.searchsorted(r["t_start"].to_numpy(), t_s, side="right")) - 1
            if i >= 0:
                row = r.iloc[i]
                return float(row[f"csi_delay_{direction}_ms"]), float(row[f"csi_rate_{direction}_mbps"]) * 1e6
        return math.nan, math.nan


# ----------------------------------------------------------------------------- one link direction

def _flows(packets: list[Packet]) -> dict[tuple, list[Packet]]:
    flows: dict[tuple, list[Packet]] = {}
    for p in packets:
        if p.tcp:
            flows.setdefault((p.src, p.sport, p.dst, p.dport), []).append(p)
    return flows


def _mark_retransmissions(packets: list[Packet], isn: int) -> list[bool]:
    """Per packet of one flow (capture order): does it re-send stream bytes already sent?"""
    top, out = -1, []
    for p in packets:
        s = relative_seq(p.seq, isn)
        retrans = p.payload_len > 0 and s < SEQ_MOD // 2 and s < top
        top = max(top, s + p.payload_len) if p.payload_len > 0 and s < SEQ_MOD // 2 else top
        out.append(retrans)
    return out


def _match_arrivals(sent: list[Packet], arrived: list[Packet]) -> list[float]:
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


@dataclass
class Direction:
    """The two captures of one device link direction and what was read from them."""

    protocol: str
    device: int
    direction: str
    sent: list[Packet]
    arrived: list[Packet]
    mechanism: str = ""
    unparsed_bytes: int = 0


def _segments_at(packets: list[Packet], isn: int) -> np.ndarray:
    """(start, end, time) rows of the data segments of ``packets`` in a stream starting at ``isn``."""
    rows = [(relative_seq(p.seq, isn), relative_seq(p.seq, isn) + p.payload_len, p.t_s) for p in packets
            if p.payload_len > 0 and relative_seq(p.seq, isn) < SEQ_MOD // 2]
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def analyse_direction(d: Direction, link: LinkInForce) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(packets, messages) tables of one link direction."""
    arrival = _match_arrivals(d.sent, d.arrived)
    flows, arrived_flows = _flows(d.sent), _flows(d.arrived)
    msg_rows: list[dict] = []
    where: dict[int, tuple[int, int, bool]] = {}  # id(packet) -> (conn, stream offset, retransmission)
    index: dict[int, tuple[np.ndarray, np.ndarray, list[dict]]] = {}  # conn -> message starts, ends, rows
    arrival_of = {id(p): t for p, t in zip(d.sent, arrival)}
    for conn, flow in enumerate(sorted(flows)):
        pkts = flows[flow]
        st = build_stream(flow, pkts)
        retrans = _mark_retransmissions(pkts, st.isn)
        arr = FlowArrays.of(pkts, st.isn, retrans, [arrival_of[id(p)] for p in pkts])
        arr_segments = _segments_at(arrived_flows.get(flow, []), st.isn)
        parsed = parse_zmtp(st)
        d.mechanism = d.mechanism or parsed.mechanism
        d.unparsed_bytes += parsed.unparsed_bytes
        rows = [_message_row(d, conn, i, m, st, arr_segments, arr, link) for i, m in enumerate(parsed.messages)]
        msg_rows += rows
        index[conn] = (np.array([r["stream_start"] for r in rows], dtype=np.int64),
                       np.array([r["stream_end"] for r in rows], dtype=np.int64), rows)
        for p, r in zip(pkts, retrans):
            where[id(p)] = (conn, relative_seq(p.seq, st.isn), r)
        for p in arrived_flows.get(flow, []):
            where[id(p)] = (conn, relative_seq(p.seq, st.isn), False)
    pkt_rows = [_packet_row(d, side, p, t_arr, where.get(id(p)), index)
                for side, pkts, times in (("sent", d.sent, arrival), ("arrived", d.arrived, [math.nan] * len(d.arrived)))
                for p, t_arr in zip(pkts, times)]
    return _frame(pkt_rows, PACKET_COLUMNS), _frame(msg_rows, MESSAGE_COLUMNS)


def _message_row(d: Direction, conn: int, i: int, m: ZmtpMessage, st: Stream, arr_segments: np.ndarray,
                 arr: FlowArrays, link: LinkInForce) -> dict:
    """One row of the messages table."""
    wire = arr.wire_bytes(m.start, m.end)
    t0, t_last = first_time(st.segments, m.start), first_time(st.segments, m.end - 1)
    t_arr = first_time(arr_segments, m.end - 1)
    owd_ms = (t_arr - t0) * 1000.0
    delay_ms, rate_bps = link.at(d.device, d.direction, t0)
    ser_ms = wire * 8.0 / rate_bps * 1000.0 if rate_bps > 0 else math.nan
    cov = arr.covering(m.start, m.end)
    return {"protocol": d.protocol, "device": d.device, "direction": d.direction, "conn": conn, "message": i,
            "type": m.header.type, "request_id": m.header.request_id, "round": m.header.round,
            "decodable": m.header.decodable, "encrypted": m.encrypted, "frames_parsed": m.frames_parsed,
            "n_frames": m.n_frames, "app_bytes": m.app_bytes, "stream_bytes": m.end - m.start, "wire_bytes": wire,
            "stream_start": m.start, "stream_end": m.end, "t_sent_first_s": t0, "t_sent_last_s": t_last,
            "t_arrived_last_s": t_arr, "owd_ms": owd_ms, "delay_in_force_ms": delay_ms, "rate_in_force_bps": rate_bps,
            "serialisation_ms": ser_ms, "expected_owd_ms": delay_ms + ser_ms,
            "owd_error_ms": owd_ms - (delay_ms + ser_ms), "retransmissions": int((cov & arr.retrans).sum()),
            "lost_packets": int((cov & arr.lost).sum())}


def _packet_row(d: Direction, side: str, p: Packet, t_arr: float, where: tuple[int, int, bool] | None,
                index: dict[int, tuple[np.ndarray, np.ndarray, list[dict]]]) -> dict:
    """One row of the packets table (its message: the one holding its first payload byte)."""
    conn, rel, retrans = where or (-1, -1, False)
    mtype, rid, rnd = "", "", -1
    if p.payload_len > 0 and conn in index:
        starts, ends, rows = index[conn]
        i = int(np.searchsorted(starts, rel, side="right")) - 1
        if i >= 0 and rel < ends[i]:
            mtype, rid, rnd = rows[i]["type"], rows[i]["request_id"], rows[i]["round"]
    return {"protocol": d.protocol, "device": d.device, "direction": d.direction, "side": side, "t_s": p.t_s,
            "wire_bytes": p.wire_bytes, "tcp": p.tcp, "conn": conn, "seq_offset": rel, "payload_len": p.payload_len,
            "flags": p.flags, "ip_id": p.ip_id, "retransmission": retrans,
            "dropped": bool(side == "sent" and p.tcp and math.isnan(t_arr)), "arrived_t_s": t_arr,
            "owd_ms": (t_arr - p.t_s) * 1000.0, "type": mtype, "request_id": rid, "round": rnd}


def _frame(rows: list[dict], columns: dict[str, str]) -> pd.DataFrame:
    """A table of ``rows`` with ``columns`` (name → dtype), typed even when empty."""
    return pd.DataFrame(rows, columns=list(columns)).astype(columns)


PACKET_COLUMNS = {"protocol": "str", "device": "int64", "direction": "str", "side": "str", "t_s": "float64",
                  "wire_bytes": "int64", "tcp": "bool", "conn": "int64", "seq_offset": "int64", "payload_len": "int64",
                  "flags": "str", "ip_id": "int64", "retransmission": "bool", "dropped": "bool",
                  "arrived_t_s": "float64", "owd_ms": "float64", "type": "str", "request_id": "str", "round": "int64"}
MESSAGE_COLUMNS = {"protocol": "str", "device": "int64", "direction": "str", "conn": "int64", "message": "int64",
                   "type": "str", "request_id": "str", "round": "int64", "decodable": "bool", "encrypted": "bool",
                   "frames_parsed": "bool", "n_frames": "int64", "app_bytes": "int64", "stream_bytes": "int64",
                   "wire_bytes": "float64", "stream_start": "int64", "stream_end": "int64", "t_sent_first_s": "float64",
                   "t_sent_last_s": "float64", "t_arrived_last_s": "float64", "owd_ms": "float64",
                   "delay_in_force_ms": "float64", "rate_in_force_bps": "float64", "serialisation_ms": "float64",
                   "expected_owd_ms": "float64", "owd_error_ms": "float64", "retransmissions": "int64",
                   "lost_packets": "int64"}


# ----------------------------------------------------------------------------- a run

@dataclass
class RunAccounting:
    """The tables and the summary of one captured run directory."""

    run_dir: Path
    packets: pd.DataFrame
    messages: pd.DataFrame
    rounds: pd.DataFrame
    summary: dict


def find_captured_runs(root: Path) -> list[Path]:
    """Run directories under ``root`` (itself included) that hold ``pcap/capture.json``."""
    here = [root] if (root / "pcap" / MANIFEST).is_file() else []
    return here + sorted(p.parent.parent for p in root.glob(f"**/pcap/{MANIFEST}") if p.parent.parent != root)


def read_round_logs(run_dir: Path) -> pd.DataFrame:
    """Every round of the run's ``rounds-*.jsonl`` logs (empty frame when none)."""
    parts = [pd.read_json(f, lines=True) for f in sorted(run_dir.glob("rounds-*.jsonl")) if f.stat().st_size]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def read_link_steps(run_dir: Path, protocol: str) -> pd.DataFrame:
    """The trace steps applied during ``protocol`` (``link-steps-<protocol>.csv``; empty when absent)."""
    path = run_dir / f"link-steps-{protocol}.csv"
    return pd.read_csv(path) if path.is_file() and path.stat().st_size else pd.DataFrame()


def _directions(run_dir: Path, captures: list[dict]) -> Iterator[Direction]:
    """The captured link directions of a run, both sides read."""
    groups: dict[tuple, dict[str, dict]] = {}
    for c in captures:
        groups.setdefault((c["protocol"], c["device"], c["direction"]), {})[c["side"]] = c
    for (protocol, device, direction), sides in sorted(groups.items()):
        files = {s: run_dir / "pcap" / c["file"] for s, c in sides.items()}
        sent = read_packets(files["sent"]) if "sent" in files and files["sent"].is_file() else []
        arrived = read_packets(files["arrived"]) if "arrived" in files and files["arrived"].is_file() else []
        yield Direction(protocol, int(device), direction, sent, arrived)


def _window_sums(t: np.ndarray, values: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Sum of ``values`` whose time ``t`` (sorted) lies in each window [t0, t1]."""
    cum = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return cum[np.searchsorted(t, t1, side="right")] - cum[np.searchsorted(t, t0, side="left")]


def round_table(rounds: pd.DataFrame, packets: pd.DataFrame, messages: pd.DataFrame) -> pd.DataFrame:
    """Per logged round: on-wire bytes from the ``sent`` packets inside [t_start, t_end] beside
    the round log's interface-counter bytes, retransmissions, drops, and its messages' one-way
    delays (a message belongs to the round during which its first byte was sent)."""
    out = []
    for (protocol, device), grp in packets.groupby(["protocol", "device"]):
        r = rounds[(rounds["protocol"] == protocol) & (rounds["device_id"] == f"dev{device}")].sort_values("t_start")
        if not len(r):
            continue
        t0, t1 = r["t_start"].to_numpy(float), r["t_end"].to_numpy(float)
        row = {"protocol": protocol, "device": int(device), "request_id": r["request_id"].to_numpy(),
               "round": r["round"].to_numpy(), "t_start": t0, "t_end": t1, "wall_ms": r["wall_ms"].to_numpy(float),
               "log_wire_up_bytes": r["wire_up_bytes"].to_numpy(), "log_wire_down_bytes": r["wire_down_bytes"].to_numpy()}
        for direction in ("up", "down"):
            s = grp[(grp["direction"] == direction) & (grp["side"] == "sent")].sort_values("t_s")
            t = s["t_s"].to_numpy(float)
            row[f"pcap_wire_{direction}_bytes"] = _window_sums(t, s["wire_bytes"].to_numpy(float), t0, t1).astype(int)
            row[f"{direction}_retransmissions"] = _window_sums(t, s["retransmission"].to_numpy(float), t0, t1).astype(int)
            row[f"{direction}_drops"] = _window_sums(t, s["dropped"].to_numpy(float), t0, t1).astype(int)
            m = messages[(messages["protocol"] == protocol) & (messages["device"] == device)
                         & (messages["direction"] == direction)]
            idx = np.searchsorted(t0, m["t_sent_first_s"].to_numpy(float), side="right") - 1
            inside = (idx >= 0) & (m["t_sent_first_s"].to_numpy(float) <= t1[np.clip(idx, 0, None)])
            by_round = pd.Series(m["owd_ms"].to_numpy(float)[inside]).groupby(idx[inside])
            err = pd.Series(m["owd_error_ms"].to_numpy(float)[inside]).groupby(idx[inside])
            row[f"{direction}_messages"] = by_round.size().reindex(range(len(r)), fill_value=0).to_numpy()
            row[f"{direction}_owd_ms_median"] = by_round.median().reindex(range(len(r))).to_numpy()
            row[f"{direction}_owd_error_ms_median"] = err.median().reindex(range(len(r))).to_numpy()
        out.append(pd.DataFrame(row))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def message_round_index(messages: pd.DataFrame, rounds: pd.DataFrame) -> pd.Series:
    """For each message, the index (in ``rounds``) of the round during which it was sent; -1 if none."""
    out = pd.Series(-1, index=messages.index)
    for (protocol, device), r in rounds.groupby(["protocol", "device"]):
        r = r.sort_values("t_start")
        m = messages[(messages["protocol"] == protocol) & (messages["device"] == device)]
        t = m["t_sent_first_s"].to_numpy(float)
        i = np.searchsorted(r["t_start"].to_numpy(float), t, side="right") - 1
        ok = (i >= 0) & (t <= r["t_end"].to_numpy(float)[np.clip(i, 0, None)])
        out.loc[m.index[ok]] = r.index.to_numpy()[i[ok]]
    return out


def summarise(captures: list[dict], packets: pd.DataFrame, messages: pd.DataFrame, rounds: pd.DataFrame,
              mechanisms: set[str], unparsed_bytes: int) -> dict:
    """Totals, the byte check against the round logs and the one-way delay check."""
    s: dict[str, Any] = {"captures": len(captures), "packets": int(len(packets)), "messages": int(len(messages)),
                         "mechanism": ",".join(sorted(m for m in mechanisms if m)) or "unknown",
                         "encrypted_messages": int(messages["encrypted"].sum()) if len(messages) else 0,
                         "undecodable_messages": int((~messages["decodable"] & ~messages["encrypted"]).sum())
                         if len(messages) else 0,
                         "messages_frames_unparsed": int((~messages["frames_parsed"]).sum()) if len(messages) else 0,
                         "unparsed_stream_bytes": int(unparsed_bytes),
                         "truncated_captures": sum(bool(c.get("truncated")) for c in captures),
                         "kernel_dropped_packets": sum(int(c.get("dropped_by_kernel", 0)) for c in captures),
                         "rounds": int(len(rounds))}
    sent = packets[packets["side"] == "sent"] if len(packets) else packets
    for d in ("up", "down"):
        ok = rounds[rounds[f"log_wire_{d}_bytes"] >= 0] if len(rounds) else rounds
        log_b = float(ok[f"log_wire_{d}_bytes"].sum()) if len(ok) else 0.0
        pcap_b = float(ok[f"pcap_wire_{d}_bytes"].sum()) if len(ok) else 0.0
        s[f"log_wire_{d}_bytes"], s[f"pcap_wire_{d}_bytes"] = int(log_b), int(pcap_b)
        s[f"bytes_error_pct_{d}"] = abs(pcap_b - log_b) / log_b * 100.0 if log_b > 0 else None
        ds = sent[sent["direction"] == d] if len(sent) else sent
        s[f"{d}_retransmissions"] = int(ds["retransmission"].sum()) if len(ds) else 0
        s[f"{d}_drops"] = int(ds["dropped"].sum()) if len(ds) else 0
        good = _owd_sample(messages, d)
        s[f"owd_median_ms_{d}"] = float(good["owd_ms"].median()) if len(good) else None
        s[f"owd_median_error_ms_{d}"] = float(good["owd_error_ms"].median()) if len(good) else None
    errs = [s[f"bytes_error_pct_{d}"] for d in ("up", "down") if s[f"bytes_error_pct_{d}"] is not None]
    s["bytes_error_pct"] = max(errs) if errs else None
    good = _owd_sample(messages, None)
    s["owd_messages"] = int(len(good))
    s["owd_median_error_ms"] = float(good["owd_error_ms"].median()) if len(good) else None
    return s


def _owd_sample(messages: pd.DataFrame, direction: str | None) -> pd.DataFrame:
    """Messages whose one-way delay says something about the link: delivered without a
    retransmission or a loss, with the trace step in force known."""
    if not len(messages):
        return messages
    m = messages[(messages["retransmissions"] == 0) & (messages["lost_packets"] == 0)
                 & np.isfinite(messages["owd_error_ms"])]
    return m if direction is None else m[m["direction"] == direction]


def analyse_run(run_dir: Path) -> RunAccounting:
    """Read every capture of ``run_dir`` (see the module docstring) and write the tables and
    ``pcap-summary.json`` beside the pcaps."""
    pcap_dir = run_dir / "pcap"
    captures = json.loads((pcap_dir / MANIFEST).read_text())["captures"]
    for c in captures:
        if c.get("truncated") or int(c.get("dropped_by_kernel", 0)):
            log.warning("%s: incomplete capture (size cap reached or kernel drops): byte totals will be short",
                        c["file"])
    logs = read_round_logs(run_dir)
    pkt_parts, msg_parts, mechanisms, unparsed = [], [], set(), 0
    for d in _directions(run_dir, captures):
        link = LinkInForce(read_link_steps(run_dir, d.protocol), logs[logs["protocol"] == d.protocol] if len(logs)
                           else logs)
        p, m = analyse_direction(d, link)
        pkt_parts.append(p)
        msg_parts.append(m)
        mechanisms.add(d.mechanism)
        unparsed += d.unparsed_bytes
    packets = pd.concat(pkt_parts, ignore_index=True) if pkt_parts else _frame([], PACKET_COLUMNS)
    messages = pd.concat(msg_parts, ignore_index=True) if msg_parts else _frame([], MESSAGE_COLUMNS)
    rounds = round_table(logs, packets, messages) if len(logs) and len(packets) else pd.DataFrame()
    summary = {"run_dir": str(run_dir), **summarise(captures, packets, messages, rounds, mechanisms, unparsed)}
    packets.to_parquet(pcap_dir / "pcap-packets.parquet", index=False)
    messages.to_parquet(pcap_dir / "pcap-messages.parquet", index=False)
    rounds.to_parquet(pcap_dir / "pcap-rounds.parquet", index=False)
    (pcap_dir / "pcap-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return RunAccounting(run_dir, packets, messages, rounds, summary)


def combine(runs: list[RunAccounting]) -> dict:
    """One summary over several runs: byte totals summed, one-way delay errors pooled."""
    if len(runs) == 1:
        return runs[0].summary
    s: dict[str, Any] = {"runs": [str(r.run_dir) for r in runs]}
    for key in ("captures", "packets", "messages", "encrypted_messages", "undecodable_messages", "messages_frames_unparsed",
                "truncated_captures", "kernel_dropped_packets", "rounds", "up_retransmissions", "down_retransmissions",
                "up_drops", "down_drops", "log_wire_up_bytes", "pcap_wire_up_bytes", "log_wire_down_bytes",
                "pcap_wire_down_bytes"):
        s[key] = sum(int(r.summary.get(key) or 0) for r in runs)
    for d in ("up", "down"):
        lb, pb = s[f"log_wire_{d}_bytes"], s[f"pcap_wire_{d}_bytes"]
        s[f"bytes_error_pct_{d}"] = abs(pb - lb) / lb * 100.0 if lb > 0 else None
    errs = [s[f"bytes_error_pct_{d}"] for d in ("up", "down") if s[f"bytes_error_pct_{d}"] is not None]
    s["bytes_error_pct"] = max(errs) if errs else None
    good = pd.concat([_owd_sample(r.messages, None) for r in runs], ignore_index=True)
    s["owd_messages"] = int(len(good))
    s["owd_median_error_ms"] = float(good["owd_error_ms"].median()) if len(good) else None
    return s
