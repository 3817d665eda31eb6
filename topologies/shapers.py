"""Shape one direction of a link: rate on the sender's egress (HTB, changed in place), delay and
loss by netem under the HTB class or by the NFQUEUE delay element at the receiver's ingress.

Both backends (and :class:`FixedRateShaper`, for links declared at a fixed rate) share one interface, :class:`LinkShaper`: ``setup()``, ``set(rate_bps, delay_ms,
loss)`` (called every trace step; sub-millisecond), ``counters()``, ``teardown()``.

A rate of 0 is an outage: while it is in force the link drops every packet (loss 1.0 at netem or
at the delay element); HTB itself cannot go below 8 kbit/s and stays at that floor meanwhile.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from channel_models.csi import MIN_RATE_BPS
from procs.lifecycle import close_and_wait
from procs.netdev import read_counters
from topologies.tcbatch import TcBatch

log = logging.getLogger(__name__)
HZ = 250  # kernel timer frequency seen here; HTB needs a burst of at least rate / HZ
HTB_MIN_RATE_BPS = int(MIN_RATE_BPS)  # HTB's smallest rate; a trace's rate 0 is an outage instead (effective_loss)
# Starts a process in a host: spawn(host, argv, role, log_path, **Popen keywords) -> Popen.
Spawn = Callable[..., subprocess.Popen]


def plain_spawn(host, argv: list[str], role: str, log: Path | None = None, **kw) -> subprocess.Popen:
    """Start ``argv`` in ``host`` with Mininet's ``popen`` (``role`` and ``log`` unused): the
    default when no network owns and watches the processes."""
    return host.popen(argv, **kw)


def effective_loss(rate_bps: float, loss: float) -> float:
    """The loss (0–1) to apply: 1.0 while the rate is 0 (an outage), else ``loss``."""
    return 1.0 if rate_bps <= 0 else loss


@dataclass(frozen=True)
class QueueLimit:
    """Queue bound of the shaped link: ``packets`` (pfifo) or ``bytes`` (bfifo)."""

    packets: int | None = 1000
    bytes: int | None = None

    def tc_leaf(self) -> str:
        """The leaf qdisc as tc words."""
        if self.bytes is not None:
            return f"bfifo limit {int(self.bytes)}"
        return f"pfifo limit {int(self.packets or 1000)}"

    @property
    def netem_limit(self) -> int:
        """netem's own queue limit in packets."""
        return int(self.packets or max(1, (self.bytes or 1_500_000) // 1500))


@dataclass(frozen=True)
class LinkEnd:
    """One end of a link: a Mininet host and its interface name."""

    host: object
    ifname: str

    @property
    def pid(self) -> int:
        """The host's namespace-holding process."""
        return int(self.host.pid)


def htb_words(rate_bps: float) -> str:
    """HTB class parameters for a rate in bit/s: the burst is 1.5 timer ticks of data (what HTB
    needs to reach the rate) but at least two MTUs, so a slow link does not pass long bursts."""
    rate = max(int(rate_bps), HTB_MIN_RATE_BPS)
    burst = max(3028, int(rate / 8 / HZ * 1.5))
    return f"htb rate {rate}bit ceil {rate}bit burst {burst} cburst {burst} quantum 1514"


def install_shared_root(host, dev: str) -> None:
    """The root HTB of an egress that several shaped links share (a class per destination is
    added by each :class:`LinkShaper` with ``match_dst``); unmatched traffic goes unshaped."""
    host_cmd(host, f"tc qdisc replace dev {dev} root handle 1: htb default 99")
    host_cmd(host, f"tc class replace dev {dev} parent 1: classid 1:99 htb rate 10gbit quantum 1514")


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20)


def host_cmd(host, cmd: str) -> str:
    """Run ``cmd`` in ``host``; RuntimeError with its output when it fails."""
    out = host.cmd(cmd + " ; echo __rc=$?")
    body, _, rc = out.rpartition("__rc=")
    if rc.strip() != "0":
        raise RuntimeError(f"{host.name}: `{cmd}` failed: {body.strip()}")
    return body


class LinkShaper(ABC):
    """One direction ``sender → receiver`` of a link. Each backend says whether this kernel
    supports it (:meth:`probe`, run in a throwaway namespace by :mod:`topologies.probe`)."""

    backend = "base"
    delays_at_receiver = False  # delay and loss applied at the receiving host's ingress (needs a host there)

    @classmethod
    @abstractmethod
    def probe(cls, netns: str, ifname: str) -> str | None:
        """None when the backend works in network namespace ``netns`` (on veth ``ifname``,
        whose peer is ``<ifname>-peer``); otherwise the reason it does not."""

    def __init__(self, sender: LinkEnd, receiver: LinkEnd, batch: TcBatch, queue: QueueLimit = QueueLimit(),
                 seed: int = 0, log_dir: Path | None = None, match_src: str | None = None,
                 match_dst: str | None = None, index: int = 0, spawn: Spawn = plain_spawn):
        self.sender, self.receiver, self.batch, self.spawn = sender, receiver, batch, spawn
        self.queue, self.seed, self.log_dir = queue, seed, log_dir or Path("/tmp")
        self.match_src = match_src  # receiver side: only packets from this source (shared interface)
        self.match_dst = match_dst  # sender side: only packets to this destination (shared egress)
        self.index = index
        # A dedicated egress uses class 1:1; a shared one (match_dst) a class per destination.
        self.classid = f"1:{10 + index}" if match_dst else "1:1"
        self.leaf = f"{100 + index}:" if match_dst else "10:"
        self.state = (0.0, 0.0, 0.0)

    def _htb_setup(self, rate_bps: float, leaf: str) -> None:
        dev, h = self.sender.ifname, self.sender.host
        if not self.match_dst:
            host_cmd(h, f"tc qdisc replace dev {dev} root handle 1: htb default 1")
        host_cmd(h, f"tc class replace dev {dev} parent 1: classid {self.classid} {htb_words(rate_bps)}")
        host_cmd(h, f"tc qdisc replace dev {dev} parent {self.classid} handle {self.leaf} {leaf}")
        if self.match_dst:
            host_cmd(h, f"tc filter add dev {dev} parent 1: protocol ip prio 1 "
                        f"u32 match ip dst {self.match_dst}/32 flowid {self.classid}")

    @abstractmethod
    def setup(self, rate_bps: float, delay_ms: float, loss: float) -> None:
        """Install the shaping with initial values."""

    def set(self, rate_bps: float, delay_ms: float, loss: float) -> None:
        """Change rate (bit/s), one-way delay (ms) and loss (0–1) in place; only what changed
        is sent (the rate as an in-place HTB class change through the tc batch). Rate 0 is an
        outage: every packet is dropped until the rate is positive again."""
        old_rate, old_delay, old_loss = self.state
        if rate_bps != old_rate:
            self.batch.send(f"class change dev {self.sender.ifname} parent 1: classid {self.classid} {htb_words(rate_bps)}")
        applied = (delay_ms, effective_loss(rate_bps, loss))
        if applied != (old_delay, effective_loss(old_rate, old_loss)):
            self._set_delay_loss(*applied)
        self.state = (rate_bps, delay_ms, loss)

    @abstractmethod
    def _set_delay_loss(self, delay_ms: float, loss: float) -> None:
        """Change the one-way delay (ms) and loss (0–1) in place."""

    def counters(self) -> dict:
        """Sender tx and receiver rx interface counters (L2 bytes/packets)."""
        tx = read_counters(self.sender.pid, self.sender.ifname)
        rx = read_counters(self.receiver.pid, self.receiver.ifname)
        return {"tx_bytes": tx.tx_bytes, "tx_packets": tx.tx_packets, "rx_bytes": rx.rx_bytes,
                "rx_packets": rx.rx_packets}

    def qdisc_stats(self) -> str:
        """``tc -s qdisc`` of the sender interface (for debugging)."""
        return self.sender.host.cmd(f"tc -s qdisc show dev {self.sender.ifname}")

    def teardown(self) -> None:
        """Remove the qdiscs (the interfaces themselves go with the topology)."""
        if self.match_dst:
            self.sender.host.cmd(f"tc class del dev {self.sender.ifname} classid {self.classid} 2>/dev/null")
        else:
            self.sender.host.cmd(f"tc qdisc del dev {self.sender.ifname} root 2>/dev/null")


class NetemShaper(LinkShaper):
    """HTB rate + a netem child (delay, loss) on the sender's egress: the standard on Linux hosts."""

    backend = "netem"

    @classmethod
    def probe(cls, netns: str, ifname: str) -> str | None:
        r = _run("tc", "-n", netns, "qdisc", "add", "dev", ifname, "root", "netem", "delay", "1ms")
        return None if r.returncode == 0 else (r.stderr.strip() or "tc netem failed")

    def _netem(self, delay_ms: float, loss: float) -> str:
        return f"netem delay {delay_ms:.3f}ms loss {loss * 100:.4f}% limit {self.queue.netem_limit}"

    def setup(self, rate_bps, delay_ms, loss):
        self._htb_setup(rate_bps, self._netem(delay_ms, effective_loss(rate_bps, loss)))
        self.state = (rate_bps, delay_ms, loss)

    def _set_delay_loss(self, delay_ms, loss):
        self.batch.send(f"qdisc change dev {self.sender.ifname} parent {self.classid} handle {self.leaf} "
                        f"{self._netem(delay_ms, loss)}")


class NfqueueShaper(LinkShaper):
    """HTB rate on the sender + the NFQUEUE delay/loss element on the receiver's PREROUTING
    (for kernels without netem; never on the sender, where TCP small queues would collapse)."""

    backend = "nfqueue"
    delays_at_receiver = True

    @classmethod
    def probe(cls, netns: str, ifname: str) -> str | None:
        try:
            import netfilterqueue  # noqa: F401
        except ImportError as e:
            return f"python NetfilterQueue missing: {e}"
        r = _run("ip", "netns", "exec", netns, "iptables", "-t", "mangle", "-A", "PREROUTING", "-i", f"{ifname}-peer",
                 "-j", "NFQUEUE", "--queue-num", "7")
        return None if r.returncode == 0 else (r.stderr.strip() or "iptables NFQUEUE failed")

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.proc: subprocess.Popen | None = None
        self.queue_num = 10 + self.index
        self._rule: str | None = None
        self._stderr = None

    def setup(self, rate_bps, delay_ms, loss):
        self._htb_setup(rate_bps, self.queue.tc_leaf())
        src = f"-s {self.match_src} " if self.match_src else ""
        self._rule = f"PREROUTING -i {self.receiver.ifname} {src}-j NFQUEUE --queue-num {self.queue_num}"
        # The element must listen before the rule exists, or packets meet an unbound queue.
        self._stderr = open(self.log_dir / f"delay-{self.receiver.host.name}-{self.queue_num}.log", "ab")
        self.proc = self.spawn(
            self.receiver.host,
            [sys.executable, "-m", "topologies.delay_element", "--queue", str(self.queue_num), "--seed", str(self.seed),
             "--delay-ms", f"{delay_ms}", "--loss", f"{effective_loss(rate_bps, loss)}", "--max-len", "16384"],
            f"delay element {self.receiver.host.name}:{self.queue_num}", Path(self._stderr.name),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, cwd=str(Path(__file__).resolve().parent.parent))
        line = self.proc.stdout.readline().decode().strip()
        if line != "ready":
            raise RuntimeError(f"delay element on {self.receiver.host.name} did not start (see {self._stderr.name})")
        # Real-time priority keeps its p99 near +0.2 ms on 2 busy cores (best effort).
        subprocess.run(["chrt", "-f", "-p", "50", str(self.proc.pid)], capture_output=True)
        host_cmd(self.receiver.host, f"iptables -t mangle -A {self._rule}")
        self.state = (rate_bps, delay_ms, loss)

    def _set_delay_loss(self, delay_ms, loss):
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"delay element on {self.receiver.host.name} died")
        self.proc.stdin.write(f"{delay_ms:.4f} {loss:.6f}\n".encode())
        self.proc.stdin.flush()

    def element_stats(self) -> dict:
        """The delay element's counters (seen, dropped, released, …); {} if it is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return {}
        self.proc.stdin.write(b"stats\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        return json.loads(line) if line else {}

    def teardown(self):
        if self._rule:
            self.receiver.host.cmd(f"iptables -t mangle -D {self._rule} 2>/dev/null")
            self._rule = None
        if self.proc is not None:
            close_and_wait(self.proc)
            self.proc = None
        if self._stderr:
            self._stderr.close()
        super().teardown()


class FixedRateShaper(LinkShaper):
    """HTB rate and the queue's plain leaf on the sender's egress, no delay and no loss: a link
    declared at a fixed rate (:class:`topologies.topo.FixedRate`, e.g. an access point's
    backhaul), whatever backend shapes the traced links. Not a user-chosen backend."""

    backend = "fixed-rate"

    @classmethod
    def probe(cls, netns: str, ifname: str) -> str | None:
        r = _run("tc", "-n", netns, "qdisc", "add", "dev", ifname, "root", "handle", "1:", "htb")
        return None if r.returncode == 0 else (r.stderr.strip() or "tc htb failed")

    def setup(self, rate_bps, delay_ms, loss):
        if delay_ms or loss or rate_bps <= 0:
            raise ValueError("a fixed-rate link has a positive rate and neither delay nor loss")
        self._htb_setup(rate_bps, self.queue.tc_leaf())
        self.state = (rate_bps, delay_ms, loss)

    def set(self, rate_bps, delay_ms, loss):
        raise ValueError(f"{self.sender.ifname}: a fixed-rate link keeps its rate (no trace drives it)")

    def _set_delay_loss(self, delay_ms, loss):
        raise ValueError(f"{self.sender.ifname}: a fixed-rate link has neither delay nor loss")


BACKENDS: dict[str, type[LinkShaper]] = {c.backend: c for c in (NetemShaper, NfqueueShaper)}  # in order of preference
BACKEND_CHOICES = ("auto", *BACKENDS)
