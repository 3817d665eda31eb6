"""Build a topology as a Mininet network with shaped links, and tear it down — always.

Mininet runs with ``controller=None`` (no Open vSwitch needed); hosts are linked directly
(``DeviceEdge``) or through a ``LinuxBridge`` access point (``Star``). Node names carry a random
per-run tag, so two runs at once do not collide. Everything a run creates in the root namespace
is listed in a registry file (``/run/wisv/net-<tag>.json``); a later run removes what a killed
run left behind (only its own entries: never ``mn -c``).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import uuid
from pathlib import Path

from topologies.probe import probe_backends, stale_probe_namespaces
from topologies.shapers import BACKENDS, LinkEnd, LinkShaper, QueueLimit, install_shared_root
from topologies.tcbatch import TcBatch
from topologies.topo import EDGE_IP, DeviceEdge, Topology, device_ip

log = logging.getLogger(__name__)
REGISTRY_DIR = Path(os.environ.get("WISV_REGISTRY_DIR", "/run/wisv"))
__all__ = ["EDGE_IP", "EmulatedNetwork", "cleanup_stale", "device_ip"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def cleanup_stale(registry_dir: Path = REGISTRY_DIR) -> list[str]:
    """Remove what runs whose owner process is dead left in the root namespace; returns what
    was removed. Touches only entries those runs registered."""
    removed: list[str] = []
    for ns in stale_probe_namespaces():
        if subprocess.run(["ip", "netns", "del", ns], capture_output=True).returncode == 0:
            removed.append(f"namespace {ns}")
    for entry in (registry_dir.glob("net-*.json") if registry_dir.is_dir() else []):
        try:
            rec = json.loads(entry.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if _pid_alive(int(rec.get("owner_pid", 0))):
            continue
        for hp in rec.get("host_pids", []):
            pid, name = int(hp[0]), hp[1]
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if f"mininet:{name}" in cmdline:  # the pid still belongs to that run's host shell
                os.kill(pid, 9)
                removed.append(f"host {name} (pid {pid})")
        for ifname in rec.get("root_ifaces", []):
            r = subprocess.run(["ip", "link", "del", ifname], capture_output=True)
            if r.returncode == 0:
                removed.append(f"interface {ifname}")
        entry.unlink(missing_ok=True)
    if removed:
        log.warning("removed leftovers of killed runs: %s", ", ".join(removed))
    return removed


class EmulatedNetwork:
    """A running emulated topology: ``devices`` (Mininet hosts), ``edge``, and per device
    ``links[k]['up'|'down']`` (:class:`LinkShaper`). Use as a context manager."""

    def __init__(self, topo: Topology = DeviceEdge(), backend: str = "auto",
                 queue: QueueLimit = QueueLimit(), seed: int = 0, run_dir: Path | None = None,
                 initial: tuple[float, float, float] = (10e6, 10.0, 0.0)):
        self.topo, self.queue, self.seed, self.initial = topo, queue, seed, initial
        self.backend = probe_backends().choose(backend)
        self.tag = uuid.uuid4().hex[:4]
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix=f"wisv-net-{self.tag}-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.net = None
        self.devices: list = []
        self.edge = None
        self.cross = None
        self.links: list[dict[str, LinkShaper]] = []
        self._batches: dict[str, TcBatch] = {}
        self._registry = REGISTRY_DIR / f"net-{self.tag}.json"
        self._root_ifaces: list[str] = []
        self._procs: list[subprocess.Popen] = []

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "EmulatedNetwork":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "EmulatedNetwork":
        """Build hosts and links, turn offloads off, install the shapers."""
        from mininet.log import setLogLevel
        from mininet.net import Mininet

        setLogLevel("error")
        cleanup_stale()
        self.net = Mininet(topo=None, build=False, controller=None, autoSetMacs=False, waitConnected=False)
        built = self.topo.build(self.net, self.tag)
        self.edge, self.devices, self.cross = built.edge, built.devices, built.cross
        self._root_ifaces += built.root_ifaces
        self._write_registry()
        self.net.build()
        self.net.start()
        self._write_registry()
        for h in self.net.hosts:
            for intf in h.intfList():
                if intf.name != "lo":
                    h.cmd(f"ethtool -K {intf.name} tso off gso off gro off 2>/dev/null")
        for sw in self.net.switches:  # bridges live in the root namespace
            for intf in sw.intfList():
                if intf.name != "lo":
                    subprocess.run(["ethtool", "-K", intf.name, "tso", "off", "gso", "off", "gro", "off"],
                                   capture_output=True)
        self._install_shapers()
        self.topo.shape_backhaul(self.net, built, self.queue.tc_leaf())
        if self.topo.cross_traffic is not None:
            self._start_cross_traffic()
        log.info("network %s up: %s, backend %s, run dir %s", self.tag, self.topo.kind, self.backend, self.run_dir)
        return self

    def _batch(self, host) -> TcBatch:
        if host.name not in self._batches:
            self._batches[host.name] = TcBatch(host, self.run_dir / f"tc-{host.name}.log")
        return self._batches[host.name]

    def _install_shapers(self) -> None:
        cls = BACKENDS[self.backend]
        edge_if = self.edge.intfList()[0].name
        shared = self.topo.shared_edge_egress
        if shared:  # one root HTB on the edge's shared egress; a class per device, by destination
            install_shared_root(self.edge, edge_if)
        for k, dev in enumerate(self.devices):
            dev_if = dev.intfList()[0].name
            up = cls(LinkEnd(dev, dev_if), LinkEnd(self.edge, edge_if), self._batch(dev), self.queue,
                     seed=self.seed * 1000 + 2 * k, log_dir=self.run_dir,
                     match_src=device_ip(k) if shared else None, index=2 * k)
            down = cls(LinkEnd(self.edge, edge_if), LinkEnd(dev, dev_if), self._batch(self.edge), self.queue,
                       seed=self.seed * 1000 + 2 * k + 1, log_dir=self.run_dir,
                       match_dst=device_ip(k) if shared else None, index=2 * k + 1)
            up.setup(*self.initial)
            down.setup(*self.initial)
            self.links.append({"up": up, "down": down})

    def _start_cross_traffic(self) -> None:
        """UDP from the cross-traffic host to the edge at the configured rate, until stop()."""
        import sys
        import time

        ct = self.topo.cross_traffic
        repo = str(Path(__file__).resolve().parent.parent)
        if ct.tool == "iperf3":
            self._procs.append(self.edge.popen(["iperf3", "-s", "-p", "5201"], stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))
            time.sleep(0.2)
            self._procs.append(self.cross.popen(["iperf3", "-c", EDGE_IP, "-p", "5201", "-u", "-b", str(int(ct.rate_bps)),
                                                 "-t", "86400"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            return
        far = time.monotonic() + 86400
        sink = self.edge.popen([sys.executable, "-m", "topologies.probe_traffic", "recv", "--port", "5900", "--until",
                                f"{far}", "--out", str(self.run_dir / "cross-traffic.npy")],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=repo)
        sink.stdout.readline()
        self._procs.append(sink)
        self._procs.append(self.cross.popen([sys.executable, "-m", "topologies.probe_traffic", "send", "--dst", EDGE_IP,
                                             "--port", "5900", "--rate-bps", f"{ct.rate_bps}", "--size", "1200",
                                             "--start-at", f"{time.monotonic()}", "--duration", "86400"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=repo))

    def _write_registry(self) -> None:
        REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
        hosts = [[h.pid, h.name] for h in (self.net.hosts if self.net else []) if getattr(h, "pid", None)]
        self._registry.write_text(json.dumps({"owner_pid": os.getpid(), "tag": self.tag,
                                              "root_ifaces": self._root_ifaces, "host_pids": hosts}))

    def stop(self) -> None:
        """Tear everything down (idempotent; safe after a partial start)."""
        errors = []
        for p in self._procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        self._procs = []
        for pair in self.links:
            for shaper in pair.values():
                try:
                    shaper.teardown()
                except Exception as e:  # keep tearing down the rest
                    errors.append(e)
        self.links = []
        for b in self._batches.values():
            b.close()
        self._batches = {}
        if self.net is not None:
            try:
                self.net.stop()
            except Exception as e:
                errors.append(e)
            self.net = None
        for ifname in self._root_ifaces:
            subprocess.run(["ip", "link", "del", ifname], capture_output=True)
        self._registry.unlink(missing_ok=True)
        if errors:
            log.warning("teardown of %s had errors: %s", self.tag, errors)
