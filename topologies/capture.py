"""Packet capture on the emulated links: a pcap per device link direction, on both sides of the
shaped link, bounded in size. Started before a protocol's device processes, stopped after.

Where each capture taps (``nfqueue`` backend: rate by HTB on the sender's egress, delay and loss
by the NFQUEUE delay element on the receiver's ``PREROUTING``)::

    app ─▶ HTB (rate) ─▶ [sent] veth ─▶ receiver iface ─▶ PREROUTING: delay element ─▶ INPUT: [arrived] ─▶ socket

* ``<protocol>-d<k>-up-sent.pcap`` / ``-down-sent.pcap``: ``tcpdump -Q out`` on the sender's
  interface (device, resp. edge; on the edge: what goes to this device, and its multicast):
  what was put on the wire, after the rate shaper, before delay and loss — the packets the
  device's interface counters count.
* ``<protocol>-d<k>-up-arrived.pcap`` / ``-down-arrived.pcap``: what the receiver's stack got
  after the delay element, i.e. after delay and loss. A capture on the receiving interface
  itself would *not* show this: AF_PACKET taps a received packet before netfilter, so it sees
  every packet about a microsecond after it was sent, before it is delayed or dropped. Nor would
  NFLOG: libpcap stamps NFLOG packets when tcpdump reads them and the NFLOG timestamp attribute
  is the interface arrival time. So an ``iptables -t mangle INPUT … -j TEE`` rule clones each
  packet the moment the element releases it onto a capture-only veth pair inside the receiver
  (``wcap0`` → ``wcap1``, the clone dropped in ``raw PREROUTING`` on ``wcap1``), and tcpdump on
  ``wcap0`` stamps it in the kernel at that moment. Dropped packets never reach ``INPUT``.

With the ``netem`` backend delay and loss sit before the sender's tap, so ``sent`` is already
delayed and lossy: one-way delays between the captures are ~0 there and drops are not seen
(``capture.json`` records the backend). Packets the rate shaper's own queue drops (queue bound
overflow) are in neither capture.

Bounds: ``snaplen_bytes`` per packet, and at most ``max_mb_per_file`` MB per file, enforced as
a packet count (``tcpdump -c``: every record is at most 16 + snaplen bytes); a capture that hit
its count is marked ``truncated``. ``capture.json`` beside the pcaps lists every file, what it
taps and tcpdump's own counts (``dropped_by_kernel`` > 0: incomplete).
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from topologies.shapers import host_cmd
from topologies.topo import EDGE_IP, device_ip

log = logging.getLogger(__name__)
PCAP_RECORD_HEADER_BYTES = 16  # per packet record in a pcap file
PCAP_FILE_HEADER_BYTES = 24
TAP_IF, TAP_PEER = "wcap0", "wcap1"  # the capture-only veth pair inside a receiving host
TAP_ADDR, TAP_GATEWAY = "169.254.77.1/30", "169.254.77.2"
TAP_MAC, TAP_PEER_MAC = "02:77:63:61:70:30", "02:77:63:61:70:31"
READY_TIMEOUT_S = 10.0
DRAIN_MARGIN_S = 0.2  # after the largest delay in force, before the captures stop
MANIFEST = "capture.json"


@dataclass(frozen=True)
class CaptureSettings:
    """The ``capture:`` section of a spec: on or off, bytes kept per packet, MB per file."""

    enabled: bool = False
    snaplen_bytes: int = 256
    max_mb_per_file: float = 64.0

    @classmethod
    def from_spec(cls, section: dict[str, Any] | None) -> "CaptureSettings":
        """Settings from a resolved spec's ``capture`` mapping (None: the defaults, off)."""
        return cls(**section) if section else cls()

    @property
    def max_packets(self) -> int:
        """Packets per file that keep it within ``max_mb_per_file`` MB."""
        budget = int(self.max_mb_per_file * 2**20) - PCAP_FILE_HEADER_BYTES
        return max(1, budget // (PCAP_RECORD_HEADER_BYTES + self.snaplen_bytes))


@dataclass(frozen=True)
class CapturePoint:
    """One pcap: device ``device``'s ``direction`` (up: device → edge), ``side`` (sent or
    arrived), the host and interface tapped, and the tcpdump filter."""

    protocol: str
    device: int
    direction: str
    side: str
    host: str
    ifname: str
    bpf: str
    file: str

    @property
    def what(self) -> str:
        """What this capture measures, in words."""
        if self.side == "sent":
            return f"{self.direction} packets leaving {self.host}:{self.ifname} after the rate shaper (before delay/loss)"
        return f"{self.direction} packets released to {self.host}'s stack after the delay element (after delay/loss)"


@dataclass
class _Running:
    """A started tcpdump and its point."""

    point: CapturePoint
    proc: subprocess.Popen
    log_path: Path
    started_epoch_s: float


class _ReleaseTap:
    """The capture-only veth pair in one receiving host and the TEE rules feeding it (see the
    module docstring); removed by :meth:`remove` (and with the host's namespace anyway)."""

    def __init__(self, host):
        self.host = host
        self.rules: list[str] = []
        host.cmd(f"ip link del {TAP_IF} 2>/dev/null")  # left by an earlier protocol's failed teardown
        host_cmd(host, f"ip link add {TAP_IF} address {TAP_MAC} type veth peer name {TAP_PEER} address {TAP_PEER_MAC}")
        host_cmd(host, f"ip addr add {TAP_ADDR} dev {TAP_IF}")
        host_cmd(host, f"ip link set {TAP_IF} up && ip link set {TAP_PEER} up")
        host_cmd(host, f"ip neigh replace {TAP_GATEWAY} lladdr {TAP_PEER_MAC} dev {TAP_IF} nud permanent")
        self._add("raw", f"PREROUTING -i {TAP_PEER} -j DROP")

    def _add(self, table: str, rule: str) -> None:
        host_cmd(self.host, f"iptables -t {table} -A {rule}")
        self.rules.append(f"-t {table} -D {rule}")

    def clone_input(self, ifname: str, src: str) -> None:
        """Clone every packet from ``src`` that ``ifname`` delivers to the stack onto the tap."""
        self._add("mangle", f"INPUT -i {ifname} -s {src} -j TEE --gateway {TAP_GATEWAY}")

    def remove(self) -> None:
        """Delete the rules and the veth pair (best effort: the host may be gone)."""
        for r in reversed(self.rules):
            self.host.cmd(f"iptables {r} 2>/dev/null")
        self.rules = []
        self.host.cmd(f"ip link del {TAP_IF} 2>/dev/null")


def capture_points(net, protocol: str, out_dir: Path) -> list[CapturePoint]:
    """The four captures of every device link of ``net`` (an :class:`EmulatedNetwork`)."""
    points = []
    for k, pair in enumerate(net.links):
        dev, edge = pair["up"].sender, pair["up"].receiver
        ip = device_ip(k)
        stem = f"{protocol}-d{k}"
        points += [
            CapturePoint(protocol, k, "up", "sent", dev.host.name, dev.ifname, "", str(out_dir / f"{stem}-up-sent.pcap")),
            CapturePoint(protocol, k, "down", "sent", edge.host.name, edge.ifname, f"dst host {ip} or ether multicast",
                         str(out_dir / f"{stem}-down-sent.pcap")),
            CapturePoint(protocol, k, "up", "arrived", edge.host.name, TAP_IF, f"src host {ip}",
                         str(out_dir / f"{stem}-up-arrived.pcap")),
            CapturePoint(protocol, k, "down", "arrived", dev.host.name, TAP_IF, f"src host {EDGE_IP} and dst host {ip}",
                         str(out_dir / f"{stem}-down-arrived.pcap")),
        ]
    return points


def tcpdump_argv(point: CapturePoint, settings: CaptureSettings) -> list[str]:
    """The tcpdump command of one capture: outgoing packets of the interface, ``snaplen``
    bytes each, at most :attr:`CaptureSettings.max_packets`, written as they come; run as root
    (``-Z root``: the run directory is root's)."""
    argv = ["tcpdump", "-i", point.ifname, "-Q", "out", "-n", "-s", str(settings.snaplen_bytes),
            "-c", str(settings.max_packets), "--immediate-mode", "-Z", "root", "-w", point.file]
    return argv + ([point.bpf] if point.bpf else [])


def _wait_listening(run: _Running, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Block until tcpdump says it is listening; RuntimeError with its log if it exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = run.log_path.read_text(errors="replace") if run.log_path.exists() else ""
        if "listening on" in text:
            return
        if run.proc.poll() is not None:
            raise RuntimeError(f"tcpdump on {run.point.host}:{run.point.ifname} exited with {run.proc.returncode}: "
                               f"{text.strip()[-300:]}")
        time.sleep(0.02)
    raise RuntimeError(f"tcpdump on {run.point.host}:{run.point.ifname} not listening after {timeout_s:g} s")


_COUNT = re.compile(r"(\d+) packets? (captured|received by filter|dropped by kernel)")


def tcpdump_counts(text: str) -> dict[str, int]:
    """tcpdump's closing counts (captured, received by filter, dropped by kernel) from its log."""
    names = {"captured": "packets_captured", "received by filter": "received_by_filter",
             "dropped by kernel": "dropped_by_kernel"}
    return {names[m.group(2)]: int(m.group(1)) for m in _COUNT.finditer(text)}


@dataclass
class CaptureSession:
    """The running captures of one protocol run; :meth:`stop` ends them and writes the manifest."""

    net: Any
    settings: CaptureSettings
    out_dir: Path
    protocol: str
    backend: str
    running: list[_Running] = field(default_factory=list)
    taps: list[_ReleaseTap] = field(default_factory=list)

    def start(self) -> "CaptureSession":
        """Install the release taps, start every tcpdump and wait until each listens."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._install_taps()
            for p in capture_points(self.net, self.protocol, self.out_dir):
                Path(p.file).unlink(missing_ok=True)
                self.running.append(self._spawn(p))
            for r in self.running:
                _wait_listening(r)
        except BaseException:
            self.stop(drain_s=0.0)
            raise
        return self

    def _install_taps(self) -> None:
        by_host: dict[str, _ReleaseTap] = {}
        for k, pair in enumerate(self.net.links):
            for direction, src in (("up", device_ip(k)), ("down", EDGE_IP)):
                recv = pair[direction].receiver
                if recv.host.name not in by_host:
                    by_host[recv.host.name] = _ReleaseTap(recv.host)
                    self.taps.append(by_host[recv.host.name])
                by_host[recv.host.name].clone_input(recv.ifname, src)

    def _host(self, name: str):
        return next(h for h in [self.net.edge, *self.net.devices] if h.name == name)

    def _spawn(self, p: CapturePoint) -> _Running:
        log_path = Path(p.file).with_suffix(".log")
        with open(log_path, "wb") as err:
            proc = self.net.popen(self._host(p.host), tcpdump_argv(p, self.settings), f"tcpdump {Path(p.file).name}",
                                  log_path, watch=False, stdout=subprocess.DEVNULL, stderr=err)
        return _Running(p, proc, log_path, time.time())

    def drain_s(self) -> float:
        """How long the last packets may still sit in a delay element: the largest one-way
        delay in force, plus a margin."""
        delays = [s.state[1] for pair in self.net.links for s in pair.values()]
        return max(delays, default=0.0) / 1000.0 + DRAIN_MARGIN_S

    def stop(self, drain_s: float | None = None) -> list[dict]:
        """Let in-flight packets arrive (``drain_s``, default :meth:`drain_s`), stop every
        tcpdump (SIGINT: it flushes and prints its counts), remove the taps, and append this
        protocol's entries to ``capture.json``; returns them. Idempotent."""
        if not self.running and not self.taps:
            return []
        time.sleep(self.drain_s() if drain_s is None else drain_s)
        entries = [self._stop_one(r) for r in self.running]
        self.running = []
        for t in self.taps:
            t.remove()
        self.taps = []
        _append_manifest(self.out_dir / MANIFEST, entries)
        for e in entries:
            if e["truncated"] or e.get("dropped_by_kernel", 0):
                log.warning("capture %s is incomplete: %s packets captured (cap %d), %s dropped by the kernel",
                            e["file"], e.get("packets_captured"), e["max_packets"], e.get("dropped_by_kernel"))
        log.info("%s: %d pcaps in %s", self.protocol, len(entries), self.out_dir)
        return entries

    def _stop_one(self, r: _Running) -> dict:
        if r.proc.poll() is None:
            r.proc.send_signal(signal.SIGINT)
        try:
            r.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait(timeout=5)
        counts = tcpdump_counts(r.log_path.read_text(errors="replace")) if r.log_path.exists() else {}
        p = r.point
        return {**asdict(p), "file": Path(p.file).name, "what": p.what, "backend": self.backend,
                "device_ip": device_ip(p.device), "edge_ip": EDGE_IP, "snaplen_bytes": self.settings.snaplen_bytes,
                "max_packets": self.settings.max_packets, "started_epoch_s": r.started_epoch_s,
                "stopped_epoch_s": time.time(), **counts,
                "truncated": counts.get("packets_captured", 0) >= self.settings.max_packets}


def _append_manifest(path: Path, entries: list[dict]) -> None:
    """Add ``entries`` to the manifest at ``path`` (replacing earlier ones of the same files), atomically."""
    old = json.loads(path.read_text())["captures"] if path.exists() else []
    names = {e["file"] for e in entries}
    data = {"captures": [e for e in old if e["file"] not in names] + entries}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def start_capture(net, settings: CaptureSettings | None, out_dir: Path, protocol: str) -> CaptureSession | None:
    """Start the captures of one protocol run on ``net`` into ``out_dir``; None when
    ``settings`` is None or capture is off."""
    if settings is None or not settings.enabled:
        return None
    return CaptureSession(net, settings, Path(out_dir), protocol, net.backend).start()


def stop_capture(session: CaptureSession | None) -> None:
    """Stop ``session`` (nothing when None)."""
    if session is not None:
        session.stop()
