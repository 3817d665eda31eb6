"""A scratch cell of plain network namespaces for measuring the cell element (root only).

One receiver namespace (the base station / edge) and N sender namespaces (the devices), each
sender joined to the receiver by its own veth pair on subnet ``10.77.<i>.0/24`` (sender ``.2``,
receiver ``.1``). Names carry a unique tag, and :func:`scratch_cell` deletes every namespace it
made on the way out, also after a failure. Traffic comes from :mod:`topologies.probe_traffic`
(paced UDP, timestamped in the application). Used by the element's test and the benchmark; the
``cell`` topology of the testbed will build its hosts with Mininet instead.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from topologies.probe_traffic import UDP_IP_ETH_BYTES

REPO = Path(__file__).resolve().parent.parent
IP_UDP_BYTES = 28  # IPv4 + UDP headers: the element counts IP packet bytes
_counter = itertools.count()


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


@dataclass(frozen=True)
class ScratchCell:
    """Namespace names and addresses of a scratch cell."""

    tag: str
    n_senders: int

    @property
    def receiver(self) -> str:
        """The receiver's namespace."""
        return f"wisvcell-{self.tag}-rx"

    def sender(self, i: int) -> str:
        """Sender ``i``'s namespace."""
        return f"wisvcell-{self.tag}-s{i}"

    @staticmethod
    def sender_ip(i: int) -> str:
        """Sender ``i``'s address (the source the element classifies by)."""
        return f"10.77.{i}.2"

    @staticmethod
    def receiver_ip(i: int) -> str:
        """The receiver's address on sender ``i``'s link."""
        return f"10.77.{i}.1"

    def exec_prefix(self, netns: str) -> list[str]:
        """Words that run a command inside ``netns``."""
        return ["ip", "netns", "exec", netns]

    def run_in(self, netns: str, *cmd: str) -> str:
        """Run ``cmd`` in ``netns``; RuntimeError with its stderr when it fails."""
        r = subprocess.run([*self.exec_prefix(netns), *cmd], capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            raise RuntimeError(f"{netns}: {' '.join(cmd)}: {r.stderr.strip()}")
        return r.stdout


@contextmanager
def scratch_cell(n_senders: int) -> Iterator[ScratchCell]:
    """Build a :class:`ScratchCell` of ``n_senders`` senders; its namespaces are deleted on exit
    (stop the processes you started in them first)."""
    cell = ScratchCell(tag=f"{os.getpid() % 100000:x}{next(_counter)}", n_senders=n_senders)
    made: list[str] = []
    try:
        for ns in (cell.receiver, *(cell.sender(i) for i in range(n_senders))):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for i in range(n_senders):
            r_if, s_if = f"r{i}", f"s{i}"
            _ip("-n", cell.receiver, "link", "add", r_if, "type", "veth", "peer", "name", s_if, "netns", cell.sender(i))
            _ip("-n", cell.receiver, "addr", "add", f"{cell.receiver_ip(i)}/24", "dev", r_if)
            _ip("-n", cell.sender(i), "addr", "add", f"{cell.sender_ip(i)}/24", "dev", s_if)
            _ip("-n", cell.receiver, "link", "set", r_if, "up")
            _ip("-n", cell.sender(i), "link", "set", s_if, "up")
        yield cell
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


@dataclass(frozen=True)
class UdpResult:
    """Per-sender datagrams and IP bytes received in the measurement window, its length (s), and
    the one-way delays (ms) of the datagrams received in it."""

    packets: np.ndarray
    ip_bytes: np.ndarray
    window_s: float
    owd_ms: tuple[np.ndarray, ...]

    @property
    def throughput_bps(self) -> np.ndarray:
        """Per-sender IP-level throughput (bit/s) in the window."""
        return self.ip_bytes * 8.0 / self.window_s


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=5)


def udp_load(cell: ScratchCell, senders: list[int], rate_bps: float, size: int, duration_s: float,
             warmup_s: float = 0.5, port_base: int = 9000) -> UdpResult:
    """Paced UDP of ``size``-byte datagrams at ``rate_bps`` (on the wire) from each sender in
    ``senders`` to the receiver for ``duration_s``; counts what the receiver's application got
    between ``warmup_s`` after the start and the end."""
    procs: list[subprocess.Popen] = []
    py = [sys.executable, "-m", "topologies.probe_traffic"]
    with tempfile.TemporaryDirectory(prefix="wisv-cell-") as tmp:
        outs = [Path(tmp) / f"recv{i}.npy" for i in senders]
        try:
            for i, out in zip(senders, outs):
                procs.append(subprocess.Popen([*cell.exec_prefix(cell.receiver), *py, "recv", "--port", str(port_base + i),
                                               "--out", str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              cwd=str(REPO)))
            n_recv = len(procs)
            for i in senders:
                procs.append(subprocess.Popen([*cell.exec_prefix(cell.sender(i)), *py, "send", "--dst", cell.receiver_ip(i),
                                               "--port", str(port_base + i), "--rate-bps", f"{rate_bps}",
                                               "--size", str(size), "--duration", f"{duration_s}"],
                                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(REPO)))
            for p in procs:
                if p.stdout.readline().strip() != b"ready":
                    raise RuntimeError("a probe process did not start")
            start = time.monotonic() + 0.3
            until = start + duration_s + 0.3
            for k, p in enumerate(procs):
                p.stdin.write(f"{until if k < n_recv else start}\n".encode())
                p.stdin.flush()
            for p in procs:
                p.wait(timeout=duration_s + 30)
            lo, hi = int((start + warmup_s) * 1e9), int((start + duration_s) * 1e9)
            packets, owd = [], []
            for out in outs:
                rows = np.load(out)
                sel = rows[(rows[:, 2] >= lo) & (rows[:, 2] < hi)]
                packets.append(len(sel))
                owd.append((sel[:, 2] - sel[:, 1]) / 1e6)
        finally:
            _stop(procs)
    pk = np.array(packets, dtype=float)
    return UdpResult(packets=pk, ip_bytes=pk * (size + IP_UDP_BYTES), window_s=duration_s - warmup_s,
                     owd_ms=tuple(owd))


def wire_rate_to_ip(rate_bps: float, size: int) -> float:
    """The IP-level rate (bit/s) of a paced UDP flow of ``size``-byte datagrams sent at
    ``rate_bps`` counted on the wire (as :mod:`topologies.probe_traffic` paces)."""
    return rate_bps * (size + IP_UDP_BYTES) / (size + UDP_IP_ETH_BYTES)
