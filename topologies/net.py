"""Build a declared topology (:class:`topologies.topo.Layout`) as a Mininet network with shaped
links, and tear it down — always.

Mininet runs with ``controller=None`` (no Open vSwitch needed); hosts are linked directly
(``DeviceEdge``) or through a ``LinuxBridge`` access point (``Star``). Every declared
:class:`topologies.topo.ShapedLink` — a device's own link or a shared one such as a backhaul — is
installed by the same code (:meth:`EmulatedNetwork._install_shapers`). Node names carry a random
per-run tag, so two runs at once do not collide. Everything a run creates is listed in a
registry file (``/run/wisv/net-<tag>.json``): interfaces in the root namespace, each host's shell
and network namespace, and every process the network started (pid, start time, role). Those
processes die with the run (``procs.lifecycle``); a later run, or ``wisv link cleanup``, removes
whatever a killed run still left behind (only its own entries: never ``mn -c``).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from procs.lifecycle import (child_environment, is_same_process, net_namespace, pdeathsig_prefix, pids_in_namespaces,
                             start_ticks)
from topologies.probe import probe_backends, stale_probe_namespaces
from topologies.shapers import BACKENDS, FixedRateShaper, LinkEnd, LinkShaper, QueueLimit, install_shared_root
from topologies.tcbatch import TcBatch
from topologies.topo import EDGE_IP, DeviceEdge, FixedRate, Layout, Port, ShapedLink, Topology, device_ip, node_name

log = logging.getLogger(__name__)
REGISTRY_DIR = Path(os.environ.get("WISV_REGISTRY_DIR", "/run/wisv"))
__all__ = ["EDGE_IP", "EmulatedNetwork", "OwnedProcess", "cleanup_stale", "device_ip", "exit_text", "last_line"]


@dataclass
class OwnedProcess:
    """A process the network started and owns: what it is (``role``), where (``host``), its
    log, its identity beyond the pid (``ticks``, its start time), and whether its exit fails the
    run (``watch``)."""

    proc: subprocess.Popen
    role: str
    host: str
    log: Path | None = None
    ticks: int | None = None
    watch: bool = True

    def record(self) -> dict:
        """Its registry entry."""
        return {"pid": self.proc.pid, "ticks": self.ticks, "role": self.role, "host": self.host}

    def failure(self) -> str | None:
        """Why the run must fail — it exited although watched — or None."""
        rc = self.proc.poll()
        if not self.watch or rc is None:
            return None
        where = ""
        if self.log is not None:
            line = last_line(self.log)
            where = f"; see {self.log}" + (f" (last line: {line})" if line else "")
        return f"{self.role} (pid {self.proc.pid} in host {self.host}) {exit_text(rc)}{where}"


class _OwnedHost:
    """A host whose ``popen`` starts processes the network owns (for code that only knows
    Mininet hosts, such as :class:`TcBatch`)."""

    def __init__(self, net: "EmulatedNetwork", host, role: str, log: Path | None = None):
        self._net, self._host, self._role, self._log = net, host, role, log
        self.name = host.name

    def popen(self, argv: list[str], **kw) -> subprocess.Popen:
        """Start ``argv`` in the host, owned and watched by the network."""
        return self._net.popen(self._host, argv, self._role, self._log, **kw)


def exit_text(returncode: int) -> str:
    """``exited with 1``, or ``exited with -9 (SIGKILL)`` for a process a signal ended."""
    if returncode < 0:
        try:
            return f"exited with {returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            pass
    return f"exited with {returncode}"


def last_line(path: Path | None, max_chars: int = 400) -> str:
    """The last non-empty line of a log file ('' if none): usually a failed process's error."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except (OSError, TypeError):
        return ""
    return lines[-1][:max_chars] if lines else ""


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _owner_alive(rec: dict) -> bool:
    """True while the run that wrote ``rec`` is running (its pid, with the same start time)."""
    pid = int(rec.get("owner_pid", 0))
    return pid > 0 and is_same_process(pid, rec.get("owner_ticks"))


def _kill(pid: int, ticks: int | None) -> bool:
    """SIGKILL ``pid`` if it is still the process that started at ``ticks``; True if signalled."""
    if not is_same_process(pid, ticks):
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pids: list[int], timeout_s: float = 3.0) -> list[int]:
    """Wait up to ``timeout_s`` s for ``pids`` to disappear; returns those still there."""
    deadline = time.monotonic() + timeout_s
    left = list(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if os.path.exists(f"/proc/{p}")]
    return left


def _interfaces_of(pid: int) -> set[str]:
    """Interface names in the network namespace of ``pid`` (empty if it is gone)."""
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            return {ln.split(":")[0].strip() for ln in f.readlines()[2:]}
    except OSError:
        return set()


def _verified_namespaces(namespaces: dict[str, dict], registered: list[tuple[int, int | None]]) -> dict[str, str]:
    """The run's host namespaces that still exist, as ``net:[inode]`` → host name.
    ``namespaces``: host name → ``{"ns": "net:[inode]", "ifaces": [names]}``. Namespace inodes
    are reused once freed, so one counts only while a registered process (same pid and start
    time) lives in it or it still holds one of the host's interfaces; never the root namespace
    or ours."""
    ours = {net_namespace(os.getpid()), net_namespace(1)}
    wanted = {v["ns"]: (h, set(v.get("ifaces", []))) for h, v in namespaces.items()
              if v.get("ns") and v["ns"] not in ours}
    verified: dict[str, str] = {}
    for pid, ticks in registered:
        ns = net_namespace(pid)
        if ns in wanted and is_same_process(pid, ticks):
            verified[ns] = wanted[ns][0]
    for pid in pids_in_namespaces(set(wanted) - set(verified)):
        ns = net_namespace(pid)
        if ns in wanted and wanted[ns][1] & _interfaces_of(pid):
            verified[ns] = wanted[ns][0]
    return verified


def kill_namespace_leftovers(namespaces: dict[str, dict], registered: list[tuple[int, int | None]] = (),
                             labels: dict[int, str] | None = None, spare: frozenset[int] = frozenset(),
                             timeout_s: float = 3.0) -> list[str]:
    """SIGKILL every process in the run's host namespaces (see :func:`_verified_namespaces`),
    registered or not — whatever lives there belongs to the run — except the pids in ``spare``;
    wait up to ``timeout_s`` s for them to go. Returns what was killed (``labels`` names the
    registered ones)."""
    verified = _verified_namespaces(namespaces, list(registered))
    labels = labels or {}
    removed, killed = [], []
    for pid in pids_in_namespaces(set(verified)):
        host = verified.get(net_namespace(pid))
        if host is not None and pid not in spare and _kill(pid, start_ticks(pid)):
            killed.append(pid)
            removed.append(labels.get(pid, f"process {pid} in the namespace of host {host}"))
    left = _wait_gone(killed, timeout_s)
    if left:
        log.warning("processes %s did not exit after SIGKILL", left)
    return removed


def _registered(rec: dict) -> tuple[list[tuple[int, int | None]], dict[int, str]]:
    """The processes a registry entry names, as (pid, start ticks), and a label for each. A
    host shell recorded without its start time (older registries) counts only while its command
    line still names the host."""
    procs: list[tuple[int, int | None]] = []
    labels: dict[int, str] = {}
    for p in rec.get("procs", []):
        procs.append((int(p["pid"]), p.get("ticks")))
        labels[int(p["pid"])] = f"{p.get('role', 'process')} (pid {p['pid']}) in host {p.get('host', '?')}"
    for hp in rec.get("host_pids", []):
        pid, name = int(hp[0]), hp[1]
        ticks = hp[2] if len(hp) > 2 else None
        if ticks is None:
            try:
                if f"mininet:{name}" not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    continue
            except OSError:
                continue
            ticks = start_ticks(pid)
        procs.append((pid, ticks))
        labels[pid] = f"host {name} (pid {pid})"
    return procs, labels


def _cleanup_record(entry: Path, rec: dict) -> list[str]:
    """Remove what one dead run left (see :func:`cleanup_stale`); returns what was removed."""
    procs, labels = _registered(rec)
    namespaces = rec.get("namespaces", {})
    removed = kill_namespace_leftovers(namespaces, procs, labels)  # first, while registered ones vouch for them
    killed = []
    for pid, ticks in procs:  # registered processes outside those namespaces
        if _kill(pid, ticks):
            killed.append(pid)
            removed.append(labels[pid])
    _wait_gone(killed)
    for ifname in rec.get("root_ifaces", []):
        if subprocess.run(["ip", "link", "del", ifname], capture_output=True).returncode == 0:
            removed.append(f"interface {ifname}")
    entry.unlink(missing_ok=True)
    hosts = sorted(namespaces) or sorted(hp[1] for hp in rec.get("host_pids", []))
    removed.append(f"registry {entry.name} of run {rec.get('tag', '?')} (owner pid {rec.get('owner_pid')} dead; the "
                   f"namespaces of hosts {', '.join(hosts) or '(none recorded)'}, with their veths, qdiscs and NFQUEUE "
                   f"rules, go with their last process)")
    return removed


def cleanup_stale(registry_dir: Path | None = None) -> list[str]:
    """Remove what runs whose owner process is dead left behind: every process they registered
    (checked by start time, so a reused pid is never killed), anything else still in their
    host namespaces (the namespaces, with their veths, qdiscs and NFQUEUE rules, then go), the
    interfaces they made in the root namespace, and leaked probe namespaces. Returns what was
    removed. Touches only entries those runs registered."""
    registry_dir = REGISTRY_DIR if registry_dir is None else registry_dir
    removed: list[str] = []
    for ns in stale_probe_namespaces():
        if subprocess.run(["ip", "netns", "del", ns], capture_output=True).returncode == 0:
            removed.append(f"namespace {ns}")
    for entry in sorted(registry_dir.glob("net-*.json")) if registry_dir.is_dir() else []:
        try:
            rec = json.loads(entry.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not _owner_alive(rec):
            removed += _cleanup_record(entry, rec)
    if removed:
        log.warning("removed leftovers of killed runs: %s", "; ".join(removed))
    return removed


class EmulatedNetwork:
    """A running emulated topology: ``devices`` (Mininet hosts), ``edge``, ``shapers`` (every
    declared shaped link by name: :class:`LinkShaper`), per device its own links
    ``links[k]['up'|'down']`` (what :class:`topologies.replayer.TraceReplayer` drives with the
    device's trace), and ``shared_links[name]['up'|'down']`` for links a shared trace drives.
    ``layout`` is what was declared (``topo.declare(seed)``). Use as a context manager.

    Every process it starts — tc batches, delay elements, cross traffic, and what callers start
    through :meth:`popen` (the edge, the devices) — dies with this process (``procs.lifecycle``),
    is registered by pid and start time in the registry file, and is watched
    (:meth:`check_processes`)."""

    def __init__(self, topo: Topology = DeviceEdge(), backend: str = "auto",
                 queue: QueueLimit = QueueLimit(), seed: int = 0, run_dir: Path | None = None,
                 initial: tuple[float, float, float] = (10e6, 10.0, 0.0)):
        self.topo, self.queue, self.seed, self.initial = topo, queue, seed, initial
        self.layout: Layout = topo.declare(seed)
        self.backend = probe_backends().choose(backend)
        switches = {sw.name for sw in self.layout.switches}
        for decl in self.layout.shaped:
            if self._shaper_class(decl).delays_at_receiver and decl.ingress.node in switches:
                raise ValueError(f"shaped link {decl.name}: the {self.backend} backend delays packets at the receiving "
                                 f"host, and {decl.ingress.node} is a switch (bridged packets skip iptables); use netem")
        self.tag = uuid.uuid4().hex[:4]
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix=f"wisv-net-{self.tag}-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.net = None
        self.devices: list = []
        self.edge = None
        self.cross = None
        self.links: list[dict[str, LinkShaper]] = []
        self.shared_links: dict[str, dict[str, LinkShaper]] = {}
        self.shapers: dict[str, LinkShaper] = {}
        self.nodes: dict = {}  # declared name -> Mininet node
        self._ifnames: dict[Port, str] = {}
        self._batches: dict[str, TcBatch] = {}
        self._registry = REGISTRY_DIR / f"net-{self.tag}.json"
        self._root_ifaces: list[str] = []
        self._owned: list[OwnedProcess] = []
        self._namespaces: dict[str, dict] = {}

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
        self._add_nodes_and_links()
        self._write_registry()
        self.net.build()
        self.net.start()
        self._namespaces = {h.name: {"ns": net_namespace(h.pid), "ifaces": [i.name for i in h.intfList()
                                                                             if i.name != "lo"]}
                            for h in self.net.hosts}
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
        if self.layout.cross_traffic is not None:
            self._start_cross_traffic()
        log.info("network %s up: %s, backend %s, run dir %s", self.tag, self.topo.kind, self.backend, self.run_dir)
        return self

    # ------------------------------------------------------------------ processes
    def popen(self, host, argv: list[str], role: str, log: Path | None = None, watch: bool = True,
              **kw) -> subprocess.Popen:
        """Start ``argv`` in ``host`` (Mininet ``popen`` keywords in ``kw``) as a process of this
        network: it dies with this process, it is registered (pid, start time, ``role``) for
        :func:`cleanup_stale`, it is killed at :meth:`stop`, and — when ``watch`` — its exit
        fails :meth:`check_processes` with ``role`` and its ``log`` named. Start it from a thread
        that outlives it (the parent-death signal follows the starting thread)."""
        kw["env"] = child_environment(kw.get("env"))
        return self.adopt(host.popen([*pdeathsig_prefix(), *argv], **kw), role, host, log, watch)

    def adopt(self, proc: subprocess.Popen, role: str, host, log: Path | None = None,
              watch: bool = True) -> subprocess.Popen:
        """Make a process started otherwise (e.g. ``host.popen``) one of this network's: registered
        for :func:`cleanup_stale`, killed at :meth:`stop`, watched if ``watch``. It does not
        die with this process unless it arranged that itself."""
        self._owned = [o for o in self._owned if o.proc.poll() is None or o.watch]
        self._owned.append(OwnedProcess(proc, role, host.name, log, start_ticks(proc.pid), watch))
        self._write_registry()
        return proc

    def processes(self) -> list[OwnedProcess]:
        """The processes this network owns now (a copy)."""
        return list(self._owned)

    def check_processes(self) -> None:
        """RuntimeError naming the first watched process that has exited (role, pid, host,
        exit status, its log and that log's last line)."""
        for o in self._owned:
            reason = o.failure()
            if reason:
                raise RuntimeError(reason)

    def unwatch(self, proc: subprocess.Popen) -> None:
        """``proc`` may exit from now on without failing the run (a process being stopped)."""
        for o in self._owned:
            if o.proc is proc:
                o.watch = False

    def _batch(self, host) -> TcBatch:
        if host.name not in self._batches:
            path = self.run_dir / f"tc-{host.name}.log"
            self._batches[host.name] = TcBatch(_OwnedHost(self, host, f"tc batch of {host.name}", path), path)
        return self._batches[host.name]

    def _add_nodes_and_links(self) -> None:
        """Add the layout's hosts, switches (Linux bridges in the root namespace, registered for
        cleanup) and links to the Mininet network; note each link end's interface name."""
        from mininet.node import Host
        from mininet.nodelib import LinuxBridge

        lay = self.layout
        for h in lay.hosts:
            self.nodes[h.name] = self.net.addHost(node_name(h.name, self.tag), cls=Host, ip=f"{h.ip}/24")
        for k, sw in enumerate(lay.switches):
            # an explicit datapath id: Mininet derives one from the digits of the name, and a random
            # tag may have none ("Unable to derive default datapath ID")
            self.nodes[sw.name] = self.net.addSwitch(node_name(sw.name, self.tag), cls=LinuxBridge, stp=False,
                                                     dpid=f"{int(self.tag, 16):012x}{k:04x}")
            self._root_ifaces.append(node_name(sw.name, self.tag))
        for ln in lay.links:
            link = self.net.addLink(self.nodes[ln.a], self.nodes[ln.b])
            self._ifnames[Port(ln.a, ln.b)] = link.intf1.name
            self._ifnames[Port(ln.b, ln.a)] = link.intf2.name
        self.edge = self.nodes[lay.edge.name]
        self.devices = [self.nodes[d.name] for d in lay.devices]
        self.cross = self.nodes[lay.cross.name] if lay.cross is not None else None

    def _end(self, port: Port) -> LinkEnd:
        return LinkEnd(self.nodes[port.node], self._ifnames[port])

    def _shaper_class(self, decl: ShapedLink) -> type[LinkShaper]:
        """The chosen backend; a fixed-rate link (no delay, no loss) needs only its HTB class."""
        return FixedRateShaper if isinstance(decl.source, FixedRate) else BACKENDS[self.backend]

    def _install_shapers(self) -> None:
        """Install every declared shaped link the same way: a shared egress gets its root HTB
        first, then each link its class, leaf and (NFQUEUE backend) delay element, with the
        declared seed and matches, starting at ``initial`` (a fixed-rate link: its rate)."""
        for port in self.layout.shared_egresses():
            install_shared_root(self.nodes[port.node], self._ifnames[port])
        for decl in self.layout.shaped:
            fixed = isinstance(decl.source, FixedRate)  # never changed: no tc batch
            batch = None if fixed else self._batch(self.nodes[decl.egress.node])
            shaper = self._shaper_class(decl)(
                self._end(decl.egress), self._end(decl.ingress), batch, self.queue, seed=decl.seed,
                log_dir=self.run_dir, match_src=decl.match_src, match_dst=decl.match_dst, index=decl.index,
                spawn=self.popen)
            self.shapers[decl.name] = shaper
            shaper.setup(*((decl.source.rate_bps, 0.0, 0.0) if fixed else self.initial))
        self.links = [{d: self.shapers[s.name] for d, s in self.layout.device_links(k).items()}
                      for k in range(len(self.devices))]
        self.shared_links = {name: {d: self.shapers[s.name] for d, s in by_dir.items()}
                             for name, by_dir in self.layout.shared_traces().items()}

    def _start_cross_traffic(self) -> None:
        """UDP from the cross-traffic host to the edge at the configured rate, until stop()."""
        ct = self.layout.cross_traffic
        repo = str(Path(__file__).resolve().parent.parent)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        if ct.tool == "iperf3":
            self.popen(self.edge, ["iperf3", "-s", "-p", "5201"], "cross-traffic sink (iperf3)", **quiet)
            time.sleep(0.2)
            self.popen(self.cross, ["iperf3", "-c", self.layout.edge.ip, "-p", "5201", "-u", "-b", str(int(ct.rate_bps)), "-t",
                                    "86400"], "cross-traffic source (iperf3)", **quiet)
            return
        far = time.monotonic() + 86400
        sink = self.popen(self.edge, [sys.executable, "-m", "topologies.probe_traffic", "recv", "--port", "5900", "--until",
                                      f"{far}", "--out", str(self.run_dir / "cross-traffic.npy")],
                          "cross-traffic sink", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=repo)
        sink.stdout.readline()
        self.popen(self.cross, [sys.executable, "-m", "topologies.probe_traffic", "send", "--dst", self.layout.edge.ip, "--port",
                                "5900", "--rate-bps", f"{ct.rate_bps}", "--size", "1200", "--start-at",
                                f"{time.monotonic()}", "--duration", "86400"], "cross-traffic source", cwd=repo, **quiet)

    def _write_registry(self) -> None:
        """Write what this run has made so far (see :func:`cleanup_stale`), atomically."""
        REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
        hosts = [[h.pid, h.name, start_ticks(h.pid)] for h in (self.net.hosts if self.net else [])
                 if getattr(h, "pid", None)]
        _write_atomic(self._registry, json.dumps({
            "owner_pid": os.getpid(), "owner_ticks": start_ticks(os.getpid()), "tag": self.tag,
            "root_ifaces": self._root_ifaces, "host_pids": hosts, "namespaces": self._namespaces,
            "procs": [o.record() for o in self._owned if o.proc.poll() is None]}))

    def _kill_owned(self) -> None:
        """SIGKILL and reap every process this network started that is still running."""
        for o in self._owned:
            o.watch = False
            if o.proc.poll() is None:
                o.proc.kill()
            try:
                o.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) did not exit after SIGKILL", o.role, o.proc.pid)

    def stop(self) -> None:
        """Tear everything down (idempotent; safe after a partial start)."""
        errors = []
        for o in self._owned:  # processes stop without failing the run from here on
            o.watch = False
        for shaper in self.shapers.values():
            try:
                shaper.teardown()
            except Exception as e:  # keep tearing down the rest
                errors.append(e)
        self.shapers, self.links, self.shared_links = {}, [], {}
        for b in self._batches.values():
            b.close()
        self._batches = {}
        self._kill_owned()
        self._owned = []
        if self.net is not None:
            shells = [(h.pid, start_ticks(h.pid)) for h in self.net.hosts if getattr(h, "pid", None)]
            # anything else started in the hosts; Mininet stops the shells themselves
            kill_namespace_leftovers(self._namespaces, shells, spare=frozenset(p for p, _ in shells))
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
