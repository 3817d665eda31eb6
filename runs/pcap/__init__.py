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

One module per layer: :mod:`runs.pcap.packets` (reading), :mod:`runs.pcap.streams` (TCP
reassembly), :mod:`runs.pcap.zmtp` (ZMTP/msgpack), :mod:`runs.pcap.link` (the link in force,
from :class:`traces.schedule.LinkSchedule`), :mod:`runs.pcap.messages` (one direction's tables),
:mod:`runs.pcap.rounds` (the join with the round logs) and :mod:`runs.pcap.run` (a run).
"""
from runs.pcap.link import LinkInForce
from runs.pcap.messages import MESSAGE_COLUMNS, PACKET_COLUMNS, Direction, analyse_direction
from runs.pcap.packets import Packet, read_packets
from runs.pcap.rounds import message_round_index, round_table, summarise
from runs.pcap.run import (MANIFEST, RunAccounting, analyse_run, combine, find_captured_runs, read_link_steps,
                           read_round_logs)
from runs.pcap.streams import SEQ_MOD, FlowArrays, Stream, build_stream, first_time, flow_isn, relative_seq
from runs.pcap.zmtp import (HeaderInfo, ParsedStream, ZmtpMessage, decode_header_prefix, frame_header, group_by_time,
                            parse_greeting, parse_zmtp, starts_message)

__all__ = ["LinkInForce", "MESSAGE_COLUMNS", "PACKET_COLUMNS", "Direction", "analyse_direction", "Packet",
           "read_packets", "message_round_index", "round_table", "summarise", "MANIFEST", "RunAccounting",
           "analyse_run", "combine", "find_captured_runs", "read_link_steps", "read_round_logs", "SEQ_MOD",
           "FlowArrays", "Stream", "build_stream", "first_time", "flow_isn", "relative_seq", "HeaderInfo",
           "ParsedStream", "ZmtpMessage", "decode_header_prefix", "frame_header", "group_by_time", "parse_greeting",
           "parse_zmtp", "starts_message"]
