"""ZMTP 3 and our wire header: the greeting, frames and multipart messages of a reassembled
stream (resynchronising after holes), and the msgpack header of each message read from its
captured prefix, every value checked, never trusted. CURVE: encrypted frames grouped by time."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from nodes.wire import MESSAGE_TYPES, WIRE_VERSION
from runs.pcap.streams import Stream, first_time
from traces.schedule import row_in_force

ZMTP_GREETING_BYTES = 64
ZMTP_MORE, ZMTP_LONG, ZMTP_COMMAND = 0x01, 0x02, 0x04
CURVE_MESSAGE_OVERHEAD_BYTES = 8 + 8 + 16 + 1  # "\x07MESSAGE", short nonce, MAC, inner flags byte
CURVE_GROUP_GAP_S = 0.002  # encrypted frames sent closer together than this form one message
MAX_ID_CHARS = 128
HEADER_SIGNATURE = b"\x84\xa1v"  # our header: a msgpack map of 4 keys whose first key is "v"
CURVE_SIGNATURE = b"\x07MESSAGE"


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
    for s in starts[row_in_force(starts, after) + 1:]:
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

