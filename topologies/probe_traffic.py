"""Probe traffic run inside emulated hosts, timestamped in the application.

Modes:
* ``send``: UDP datagrams of ``--size`` bytes at ``--pps`` (or ``--rate-bps``) from monotonic
  second ``--start-at`` for ``--duration`` s; each carries (sequence, send time ns).
* ``recv``: records (sequence, send ns, receive ns, size) of every datagram until ``--until``
  (monotonic s), then writes them as ``.npy`` to ``--out``.
* Without ``--start-at`` / ``--until``, ``send`` and ``recv`` print ``ready`` once set up and read
  that second from the first line of standard input: an orchestrator starts every process, waits
  for all of them, and only then fixes the schedule, however long start-up took on a busy host.
* ``zmq-echo`` / ``zmq-ping``: a ZeroMQ REP echo server and a REQ client that records RTTs.
``time.monotonic_ns`` is one clock for every namespace of the machine, so one-way delays are
send-to-receive differences.
"""
from __future__ import annotations

import argparse
import socket
import struct
import sys
import time

import numpy as np

HEADER = struct.Struct("!QQ")  # sequence, send time (monotonic ns)
UDP_IP_ETH_BYTES = 8 + 20 + 14  # per-datagram headers on the wire (UDP, IPv4, Ethernet)


def sleep_until(t: float) -> None:
    """Sleep until monotonic second ``t`` (coarse sleep, then a short spin)."""
    while True:
        d = t - time.monotonic()
        if d <= 0:
            return
        time.sleep(d - 0.0002 if d > 0.0005 else 0)


def armed() -> float:
    """Say ``ready`` on standard output, then return the monotonic second read from standard input."""
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    line = sys.stdin.readline()
    try:
        return float(line)
    except ValueError:
        raise SystemExit(f"expected a monotonic second on standard input, got {line!r}") from None


def send(dst: str, port: int, pps: float, size: int, start_at: float | None, duration: float) -> int:
    """Paced UDP sender from monotonic second ``start_at`` (None: :func:`armed`) for ``duration``
    s; returns the number of datagrams sent."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    pad = b"\0" * max(0, size - HEADER.size)
    interval = 1.0 / pps
    start_at = start_at if start_at is not None else armed()
    sleep_until(start_at)
    end = start_at + duration
    seq = 0
    next_t = start_at
    while True:
        now = time.monotonic()
        if now >= end:
            break
        while next_t <= now and next_t < end:  # catch up in a burst after a late wake-up
            try:
                s.sendto(HEADER.pack(seq, time.monotonic_ns()) + pad, (dst, port))
            except (BlockingIOError, OSError):
                pass  # a full socket buffer is a local drop; the sequence number still advances
            seq += 1
            next_t += interval
        sleep_until(min(next_t, end))
    return seq


def recv(port: int, until: float | None, out: str) -> int:
    """Record every datagram until monotonic second ``until`` (None: :func:`armed`); returns the count."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("0.0.0.0", port))
    s.settimeout(0.05)
    buf = bytearray(65536)
    rows: list[tuple[int, int, int, int]] = []
    if until is None:
        until = armed()  # datagrams arriving meanwhile wait in the socket buffer
    else:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
    while time.monotonic() < until:
        try:
            n = s.recv_into(buf)
        except socket.timeout:
            continue
        t = time.monotonic_ns()
        if n >= HEADER.size:
            seq, sent = HEADER.unpack_from(buf)
            rows.append((seq, sent, t, n))
    arr = np.array(rows, dtype=np.int64).reshape(-1, 4)
    np.save(out, arr)
    return len(rows)


def zmq_echo(bind: str, until: float) -> None:
    """REP server echoing every request until monotonic second ``until``."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.bind(bind)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while time.monotonic() < until:
        if poller.poll(50):
            sock.send(sock.recv())
    sock.close(0)
    ctx.term()


def zmq_ping(connect: str, count: int, size: int, interval_s: float, out: str) -> None:
    """REQ client: ``count`` round trips of ``size`` bytes; writes RTTs (ms) to ``out``."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.connect(connect)
    payload = b"x" * size
    rtts = []
    sock.send(payload)  # warm-up: connection set-up costs extra round trips
    sock.recv()
    for _ in range(count):
        t0 = time.monotonic_ns()
        sock.send(payload)
        sock.recv()
        rtts.append((time.monotonic_ns() - t0) / 1e6)
        time.sleep(interval_s)
    np.save(out, np.array(rtts))
    sock.close(0)
    ctx.term()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry (see module docstring)."""
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("send")
    s.add_argument("--dst", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--pps", type=float)
    s.add_argument("--rate-bps", type=float)
    s.add_argument("--size", type=int, default=100)
    s.add_argument("--start-at", type=float, help="monotonic s (default: read from stdin after 'ready')")
    s.add_argument("--duration", type=float, required=True)
    r = sub.add_parser("recv")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--until", type=float, help="monotonic s (default: read from stdin after 'ready')")
    r.add_argument("--out", required=True)
    e = sub.add_parser("zmq-echo")
    e.add_argument("--bind", required=True)
    e.add_argument("--until", type=float, required=True)
    p = sub.add_parser("zmq-ping")
    p.add_argument("--connect", required=True)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--interval-s", type=float, default=0.01)
    p.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.mode == "send":
        pps = a.pps or a.rate_bps / 8.0 / (a.size + UDP_IP_ETH_BYTES)
        sys.stdout.write(f"{send(a.dst, a.port, pps, a.size, a.start_at, a.duration)}\n")
    elif a.mode == "recv":
        recv(a.port, a.until, a.out)
    elif a.mode == "zmq-echo":
        zmq_echo(a.bind, a.until)
    else:
        zmq_ping(a.connect, a.count, a.size, a.interval_s, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
