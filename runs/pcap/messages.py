"""One link direction: its two captures read into the packets table (each ``sent`` packet
matched to its ``arrived`` copy, retransmissions marked, its message named) and the messages
table (each ZMTP message's bytes, timing, one-way delay and the link in force when it was sent)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from runs.pcap.link import LinkInForce
from runs.pcap.packets import Packet
from runs.pcap.streams import (FlowArrays, Stream, build_stream, first_time, flows_of, mark_retransmissions,
                               match_arrivals, relative_seq, segments_at)
from runs.pcap.zmtp import ZmtpMessage, parse_zmtp
from traces.schedule import row_in_force


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


def analyse_direction(d: Direction, link: LinkInForce) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(packets, messages) tables of one link direction."""
    arrival = match_arrivals(d.sent, d.arrived)
    flows, arrived_flows = flows_of(d.sent), flows_of(d.arrived)
    msg_rows: list[dict] = []
    where: dict[int, tuple[int, int, bool]] = {}  # id(packet) -> (conn, stream offset, retransmission)
    index: dict[int, tuple[np.ndarray, np.ndarray, list[dict]]] = {}  # conn -> message starts, ends, rows
    arrival_of = {id(p): t for p, t in zip(d.sent, arrival)}
    for conn, flow in enumerate(sorted(flows)):
        pkts = flows[flow]
        st = build_stream(flow, pkts)
        retrans = mark_retransmissions(pkts, st.isn)
        arr = FlowArrays.of(pkts, st.isn, retrans, [arrival_of[id(p)] for p in pkts])
        arr_segments = segments_at(arrived_flows.get(flow, []), st.isn)
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
    return typed_frame(pkt_rows, PACKET_COLUMNS), typed_frame(msg_rows, MESSAGE_COLUMNS)


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
        i = row_in_force(starts, rel)
        if i >= 0 and rel < ends[i]:
            mtype, rid, rnd = rows[i]["type"], rows[i]["request_id"], rows[i]["round"]
    return {"protocol": d.protocol, "device": d.device, "direction": d.direction, "side": side, "t_s": p.t_s,
            "wire_bytes": p.wire_bytes, "tcp": p.tcp, "conn": conn, "seq_offset": rel, "payload_len": p.payload_len,
            "flags": p.flags, "ip_id": p.ip_id, "retransmission": retrans,
            "dropped": bool(side == "sent" and p.tcp and math.isnan(t_arr)), "arrived_t_s": t_arr,
            "owd_ms": (t_arr - p.t_s) * 1000.0, "type": mtype, "request_id": rid, "round": rnd}


def typed_frame(rows: list[dict], columns: dict[str, str]) -> pd.DataFrame:
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

