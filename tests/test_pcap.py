"""Packet capture and packet-level accounting: the ZMTP / wire-header reading on synthetic
captures (no root), and an emulated run with --capture checked against its round logs and its
trace (root)."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from nodes.wire import Draft, Verdict, encode
from runs.pcap import (Stream, analyse_run, decode_header_prefix, parse_greeting, parse_zmtp, read_round_logs)

REPO = Path(__file__).resolve().parent.parent
DEV_IP, EDGE_IP, DEV_PORT, EDGE_PORT = "10.0.0.1", "10.0.0.254", 40000, 5555


# ----------------------------------------------------------------------------- synthetic captures

def greeting(mechanism: bytes = b"NULL") -> bytes:
    """A ZMTP 3.1 greeting."""
    return b"\xff" + b"\0" * 8 + b"\x7f" + bytes([3, 1]) + mechanism.ljust(20, b"\0") + b"\0" + b"\0" * 31


def zmtp_frame(body: bytes, more: bool = False, command: bool = False) -> bytes:
    """One ZMTP frame (short or long size)."""
    flags = (0x01 if more else 0) | (0x04 if command else 0)
    if len(body) > 255:
        return bytes([flags | 0x02]) + len(body).to_bytes(8, "big") + body
    return bytes([flags, len(body)]) + body


def zmtp_message(frames: list[bytes]) -> bytes:
    """A multipart message as ZMTP frames."""
    return b"".join(zmtp_frame(f, more=i < len(frames) - 1) for i, f in enumerate(frames))


READY = zmtp_frame(b"\x05READY" + b"\x0bSocket-Type" + (6).to_bytes(4, "big") + b"DEALER", command=True)


@dataclass
class Wire:
    """A synthetic device–edge TCP connection: every packet with its send time, and the
    arrival time of those that were not dropped (delay ``delay_s``, serialisation at ``rate_bps``)."""

    delay_s: float = 0.010
    rate_bps: float = 1e12
    seq: dict = field(default_factory=lambda: {"up": 1000, "down": 5000})
    ip_id: dict = field(default_factory=lambda: {"up": 1, "down": 1})
    packets: dict = field(default_factory=lambda: {"up": [], "down": []})  # (t_sent, t_arrived|None, scapy pkt)

    def _pkt(self, d: str, flags: str, payload: bytes, seq: int):
        from scapy.layers.inet import IP, TCP
        from scapy.layers.l2 import Ether

        src, dst, sp, dp = (DEV_IP, EDGE_IP, DEV_PORT, EDGE_PORT) if d == "up" else (EDGE_IP, DEV_IP, EDGE_PORT, DEV_PORT)
        other = "down" if d == "up" else "up"
        self.ip_id[d] += 1
        return Ether() / IP(src=src, dst=dst, id=self.ip_id[d], flags="DF") / TCP(
            sport=sp, dport=dp, seq=seq, ack=self.seq[other], flags=flags) / payload

    def syn(self, t: float) -> None:
        for d in ("up", "down"):
            self.packets[d].append((t, t + self.delay_s, self._pkt(d, "S" if d == "up" else "SA", b"", self.seq[d] - 1)))

    def send(self, d: str, data: bytes, t: float, drop: set[int] = frozenset(), mss: int = 1448) -> float:
        """Segments of ``data`` from ``t``; segment indices in ``drop`` are lost (then
        retransmitted 200 ms later). Returns when the last byte arrived."""
        last = t
        for i in range(0, len(data), mss):
            chunk = data[i:i + mss]
            pkt = self._pkt(d, "PA", chunk, self.seq[d])
            t += len(pkt) * 8 / self.rate_bps
            lost = i // mss in drop
            self.packets[d].append((t, None if lost else t + self.delay_s, pkt))
            if lost:
                again = self._pkt(d, "PA", chunk, self.seq[d])
                self.packets[d].append((t + 0.2, t + 0.2 + self.delay_s, again))
                last = max(last, t + 0.2 + self.delay_s)
            self.seq[d] += len(chunk)
            last = max(last, t + self.delay_s)
        return last

    def ack(self, d: str, t: float) -> None:
        self.packets[d].append((t, t + self.delay_s, self._pkt(d, "A", b"", self.seq[d])))

    def write(self, pcap_dir: Path, protocol: str, snaplen: int) -> list[dict]:
        """The four pcaps (sent/arrived × up/down) cut at ``snaplen``, and their manifest entries."""
        from scapy.utils import RawPcapWriter

        entries = []
        for d in ("up", "down"):
            for side in ("sent", "arrived"):
                name = f"{protocol}-d0-{d}-{side}.pcap"
                rows = [(ts if side == "sent" else ta, p) for ts, ta, p in self.packets[d] if side == "sent" or ta]
                w = RawPcapWriter(str(pcap_dir / name), linktype=1, snaplen=snaplen)
                w.write_header(None)
                for t, p in sorted(rows, key=lambda r: r[0]):
                    raw = bytes(p)
                    w.write_packet(raw[:snaplen], sec=int(t), usec=int(round((t % 1) * 1e6)), caplen=min(snaplen, len(raw)),
                                   wirelen=len(raw))
                w.close()
                entries.append({"protocol": protocol, "device": 0, "direction": d, "side": side, "file": name,
                                "snaplen_bytes": snaplen, "truncated": False, "dropped_by_kernel": 0})
        return entries

    def wire_bytes(self, d: str, t0: float, t1: float) -> int:
        """L2 bytes sent in direction ``d`` during [t0, t1] (what the device's counters count)."""
        return sum(len(p) for ts, _, p in self.packets[d] if t0 <= ts <= t1)


def synthetic_run(tmp_path: Path, snaplen: int = 256, drop_up: set[int] = frozenset(), hidden_dim: int = 64,
                  mechanism: bytes = b"NULL", garbage: bytes | None = None) -> tuple[Path, Wire]:
    """A run directory with round logs, link steps and four pcaps of two rounds of one request."""
    run = tmp_path / "run"
    (run / "pcap").mkdir(parents=True)
    w = Wire()
    t = 1_700_000_000.0
    w.syn(t)
    w.send("up", greeting(mechanism) + READY, t + 0.001)
    w.send("down", greeting(mechanism) + READY, t + 0.002)
    rows = []
    t = t + 0.1
    for rnd in range(2):
        t_start = t
        draft = Draft("req-7", rnd, [1, 2, 3, 4], {"rate_up_mbps": 10.0}, np.ones((4, hidden_dim), np.float32),
                      secret="s" * 32)
        payload = garbage if garbage is not None else zmtp_message(encode(draft))
        arrived = w.send("up", payload, t + 0.02, drop=drop_up if rnd == 1 else frozenset())
        verdict = zmtp_message(encode(Verdict("req-7", rnd, 2, 9, 2, 2, 0, 30.0)))
        back = w.send("down", verdict, arrived + 0.03)
        w.ack("up", back + 0.001)
        t_end = back + 0.002
        rows.append({"run_id": "x", "protocol": "vanilla", "device_id": "dev0", "request_id": "req-7", "round": rnd,
                     "t_start": t_start, "t_end": t_end, "wall_ms": (t_end - t_start) * 1e3, "draft_ms": 20.0,
                     "verify_ms": 30.0, "link_ms": (t_end - t_start) * 1e3 - 50.0,
                     "wire_up_bytes": w.wire_bytes("up", t_start, t_end),
                     "wire_down_bytes": w.wire_bytes("down", t_start, t_end),
                     "csi_delay_up_ms": 10.0, "csi_delay_down_ms": 10.0, "csi_rate_up_mbps": 1e6, "csi_rate_down_mbps": 1e6})
        t = t_end + 0.05
    (run / "rounds-vanilla.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "link-steps-vanilla.csv").write_text(
        "step,device,t_ms,applied_epoch_s,rate_bps_up,delay_ms_up,loss_up,rate_bps_down,delay_ms_down,loss_down\n"
        f"0,0,0,{1_699_999_999.0},1e12,10.0,0,1e12,10.0,0\n")
    entries = w.write(run / "pcap", "vanilla", snaplen)
    (run / "pcap" / "capture.json").write_text(json.dumps({"captures": entries}))
    return run, w


# ----------------------------------------------------------------------------- unit tests (no root)

def test_header_prefix_reads_type_request_and_round_even_when_cut():
    header = encode(Draft("req-000017", 3, [1, 2, 3, 4], {"rate_up_mbps": 10.0}, None, secret="a" * 32))[0]
    full = decode_header_prefix(header)
    assert (full.decodable, full.type, full.request_id, full.round) == (True, "draft", "req-000017", 3)
    cut = decode_header_prefix(header[:45])  # what a 256-byte snap length leaves of a long header
    assert (cut.decodable, cut.type, cut.request_id, cut.round) == (True, "draft", "req-000017", 3)
    assert decode_header_prefix(header[:10]).request_id == ""


def test_header_prefix_never_trusts_the_bytes():
    import msgpack

    bad = [msgpack.packb({"v": 2, "t": "draft", "f": {}, "a": []}), msgpack.packb({"v": True, "t": "draft"}),
           msgpack.packb({"v": 1, "t": "nonsense"}), msgpack.packb({"v": 1, "t": "draft", "f": {"round": "x",
                                                                                              "request_id": 5}}),
           msgpack.packb([1, 2, 3]), b"\xc1\xc1", b"", b"\xdf\xff\xff\xff\xff"]
    infos = [decode_header_prefix(b) for b in bad]
    assert [i.decodable for i in infos[:3]] == [False, False, False]
    assert infos[3].decodable and infos[3].round == -1 and infos[3].request_id == ""
    rng = random.Random(7)
    for _ in range(3000):  # random bytes, and our header with random bytes flipped
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        decode_header_prefix(blob)
        h = bytearray(encode(Verdict("r", 1, 2, 3, 2, 2, 0, 1.0))[0])
        h[rng.randrange(len(h))] = rng.randrange(256)
        decode_header_prefix(bytes(h))


def _stream(data: bytes, holes: list[tuple[int, int]] = (), seg: int = 100) -> Stream:
    known = np.ones(len(data), bool)
    for a, b in holes:
        known[a:b] = False
    segs = np.array([(s, min(s + seg, len(data)), s * 1e-6) for s in range(0, len(data), seg)], float)
    return Stream(("a", 1, "b", 2), 0, bytearray(data), known, segs)


def test_zmtp_messages_and_resync_after_a_hole():
    msgs = [zmtp_message(encode(Verdict("req-1", r, 1, 2, 1, 1, 0, 3.0))) for r in range(3)]
    data = greeting() + READY + b"".join(msgs)
    assert parse_greeting(data[:64]) == "NULL"
    p = parse_zmtp(_stream(data, seg=len(data)))
    assert [m.header.round for m in p.messages] == [0, 1, 2]
    assert [m.end - m.start for m in p.messages] == [len(m) for m in msgs]
    # the second message's header lost to a hole; the third starts a segment: parsing resumes there
    start2 = 64 + len(READY) + len(msgs[0])
    st = _stream(data, holes=[(start2, start2 + 4)])
    st.segments = np.array([(0, start2, 0.0), (start2, start2 + len(msgs[1]), 1.0),
                            (start2 + len(msgs[1]), len(data), 2.0)], float)
    p = parse_zmtp(st)
    assert [m.header.round for m in p.messages] == [0, 2] and p.unparsed_bytes == len(msgs[1])


def test_curve_runs_give_sizes_and_timing_only():
    box = lambda n: zmtp_frame(b"\x07MESSAGE" + b"\0" * 8 + os.urandom(n + 17), command=True)  # noqa: E731
    data = greeting(b"CURVE") + box(268) + box(512) + box(151)
    st = _stream(data, seg=len(data))
    n1 = 64 + len(box(268)) + len(box(512))
    st.segments = np.array([(0, n1, 0.0), (n1, len(data), 0.05)], float)
    p = parse_zmtp(st)
    assert p.mechanism == "CURVE"
    assert [(m.encrypted, m.n_frames, m.app_bytes, m.header.type) for m in p.messages] == [(True, 2, 780, ""),
                                                                                        (True, 1, 151, "")]


def test_synthetic_run_accounting_bytes_drops_retransmissions_and_delay(tmp_path):
    run, w = synthetic_run(tmp_path, snaplen=256, drop_up={0}, hidden_dim=2048)  # 16 kB drafts: 12 segments each
    acc = analyse_run(run)
    s = acc.summary
    assert s["bytes_error_pct"] == 0.0
    assert s["up_drops"] == 1 and s["up_retransmissions"] == 1 and s["down_drops"] == 0
    m = acc.messages
    assert list(m[m["direction"] == "up"]["type"]) == ["draft", "draft"]
    assert list(m[m["direction"] == "down"]["round"]) == [0, 1]
    assert m["decodable"].all() and m["frames_parsed"].all()
    up = m[m["direction"] == "up"].iloc[0]
    assert up["app_bytes"] == sum(len(f) for f in encode(Draft("req-7", 0, [1, 2, 3, 4], {"rate_up_mbps": 10.0},
                                                              np.ones((4, 2048), np.float32), secret="s" * 32)))
    assert abs(s["owd_median_error_ms"]) < 0.01  # arrivals are exactly 10 ms after sending here
    assert s["owd_messages"] == 3  # the round-1 draft lost a segment: left out of the delay check
    r = acc.rounds
    assert list(r["pcap_wire_up_bytes"]) == list(r["log_wire_up_bytes"]) and list(r["up_drops"]) == [0, 1]
    for t in ("packets", "messages", "rounds"):
        assert (run / "pcap" / f"pcap-{t}.parquet").is_file()
    pk = acc.packets
    carrying = pk[(pk["payload_len"] > 0) & (pk["seq_offset"] >= len(greeting()) + len(READY))]  # past the handshake
    assert set(pk["side"]) == {"sent", "arrived"} and (carrying["type"] != "").all()


def test_a_short_snap_length_keeps_sizes_types_and_timing(tmp_path):
    """At 100 bytes a packet keeps 34 bytes of payload: the hidden-state frame's header is lost,
    yet each message's extent (up to the next message), type and request id stand."""
    run, w = synthetic_run(tmp_path, snaplen=100)
    acc = analyse_run(run)
    m = acc.messages
    up = m[(m["direction"] == "up") & (m["type"] == "draft")]
    assert len(up) == 2 and not up["frames_parsed"].any() and set(up["request_id"]) == {"req-7"}
    full = zmtp_message(encode(Draft("req-7", 0, [1, 2, 3, 4], {"rate_up_mbps": 10.0}, np.ones((4, 64), np.float32),
                                     secret="s" * 32)))
    assert list(up["stream_bytes"]) == [len(full)] * 2
    assert acc.summary["bytes_error_pct"] == 0.0 and abs(acc.summary["owd_median_error_ms"]) < 0.01


def test_garbage_on_the_wire_is_counted_not_fatal(tmp_path):
    run, _ = synthetic_run(tmp_path, garbage=bytes(random.Random(1).randrange(256) for _ in range(3000)))
    s = analyse_run(run).summary
    assert s["messages"] >= 2  # the verdicts still parse
    assert s["unparsed_stream_bytes"] + s["undecodable_messages"] > 0


def test_damaged_pcap_files_are_read_as_far_as_they_go(tmp_path):
    run, _ = synthetic_run(tmp_path)
    sent = run / "pcap" / "vanilla-d0-up-sent.pcap"
    sent.write_bytes(sent.read_bytes()[:-30])  # a capture killed mid-record
    (run / "pcap" / "vanilla-d0-down-arrived.pcap").write_bytes(b"not a pcap at all")
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    wild = [Ether() / IP(src=DEV_IP, dst=EDGE_IP) / TCP(sport=DEV_PORT, dport=EDGE_PORT, seq=s, flags="PA") / b"\x01\xff"
            for s in (999, 2**31 - 5, 2**32 - 3)]  # sequence numbers all over the place: no 2 GB stream
    wrpcap(str(run / "pcap" / "vanilla-d0-down-sent.pcap"), wild)
    s = analyse_run(run).summary
    assert s["packets"] > 0 and s["messages"] >= 2


def test_wisv_pcap_json_is_the_last_line_and_draws_a_round(tmp_path):
    run, _ = synthetic_run(tmp_path)
    out = subprocess.run([sys.executable, "-m", "wisv.cli", "pcap", str(run), "--json"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["bytes_error_pct"] == 0.0 and res["messages"] == 4
    assert Path(res["plots"][0]).is_file() and Path(res["plots"][0]).stat().st_size > 10_000


def test_capture_bounds_and_tcpdump_command():
    from topologies.capture import CapturePoint, CaptureSettings, tcpdump_argv, tcpdump_counts

    s = CaptureSettings(True, 256, 1.0)
    assert s.max_packets == (2**20 - 24) // (16 + 256)
    argv = tcpdump_argv(CapturePoint("vanilla", 0, "down", "sent", "e1", "e1-eth0", "dst host 10.0.0.1", "/x.pcap"), s)
    assert argv[argv.index("-s") + 1] == "256" and argv[argv.index("-c") + 1] == str(s.max_packets)
    assert argv[argv.index("-Q") + 1] == "out" and argv[-1] == "dst host 10.0.0.1"
    assert tcpdump_counts("12 packets captured\n14 packets received by filter\n0 packets dropped by kernel\n") == {
        "packets_captured": 12, "received_by_filter": 14, "dropped_by_kernel": 0}


def test_capture_is_a_spec_section_and_a_flag():
    from runs.cli import spec_overrides
    from runs.spec import SpecError, load_spec

    assert load_spec(None)[0].capture().enabled is False
    run = load_spec(None, {"capture": {"enabled": True, "snaplen_bytes": 128}})[0]
    assert run.capture().enabled and run.capture().snaplen_bytes == 128
    with pytest.raises(SpecError, match="capture.snaplen_bytes"):
        load_spec(None, {"capture": {"snaplen_bytes": 20}})
    import argparse

    assert spec_overrides(argparse.Namespace(capture=True)) == {"capture": {"enabled": True}}


# ----------------------------------------------------------------------------- emulated (root)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="emulation needs root")


@needs_root
def test_emulated_run_with_capture_matches_round_logs_and_trace(tmp_path):
    """A run with capture: the packets account for the round logs' on-wire bytes (≤ 1 %), the
    one-way delay between the two captures is the trace's delay plus serialisation (median
    within 1 ms), every drop the delay element made is seen, and tcpdump reads every pcap."""
    from runs.api import Testbed
    from topologies.capture import CaptureSettings
    from topologies.probe import probe_backends
    from traces.format import write_trace
    from traces.synthetic import step_trace

    if probe_backends().reasons.get("nfqueue") is not None:
        pytest.skip("the nfqueue backend is not available")
    trace = write_trace(step_trace(100.0, 60.0, [5e6, 20e6], [8.0, 15.0], [0.03], seed=3), tmp_path / "t.csv")
    run = tmp_path / "run"
    with Testbed(run_dir=run, backend="nfqueue", capture=CaptureSettings(enabled=True)) as tb:
        tb.attach_trace(trace)
        tb.start_edge()
        tb.run_protocol("wisv-full", problems=3)
        element = {d: tb.net.links[0][d].element_stats() for d in ("up", "down")}
    out = subprocess.run([sys.executable, "-m", "wisv.cli", "pcap", str(run), "--json"], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["bytes_error_pct"] <= 1.0, res
    assert abs(res["owd_median_error_ms"]) <= 1.0 and res["owd_messages"] >= 20, res
    assert res["undecodable_messages"] == 0 and res["truncated_captures"] == 0 and res["kernel_dropped_packets"] == 0
    assert res["up_drops"] == element["up"]["dropped"] and res["down_drops"] == element["down"]["dropped"], (res, element)
    assert res["up_drops"] + res["down_drops"] > 0  # 3 % loss: some packets were dropped and seen as such
    logs = read_round_logs(run)
    assert res["rounds"] == len(logs)
    for f in sorted((run / "pcap").glob("*.pcap")):
        r = subprocess.run(["tcpdump", "-r", str(f), "-n", "-c", "3"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.count("\n") >= 1, (f, r.stderr)
