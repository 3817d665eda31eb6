"""The testbed as a Python API, for scripting experiments the way Mininet users script topologies:

    from runs.api import Testbed
    with Testbed(run_dir="runs/out/mine") as tb:          # Mininet hosts, shaped links (root)
        tb.attach_trace("traces/builtin/pedestrian_3p5ghz_60s.csv")
        tb.start_edge()                                    # the target behind ZeroMQ, in the edge host
        tb.run_protocol("vanilla", problems=5)
        tb.run_protocol("wisv-full", problems=5)
        df = tb.rounds()                                   # every round so far, as a DataFrame

Each ``run_protocol`` restarts the trace at its beginning when the device process starts, so
protocols see the same channel; the device reports the step its link applied as its CSI
(the replayer publishes it, :mod:`traces.link_state`). Every
setting of a protocol run is one :class:`nodes.config.RunConfig`, written beside the logs and
handed to the node processes as ``--config``; after each protocol the run directory holds the
same Parquet tables as an experiment's, so ``wisv report RUN_DIR`` reads it.

Every process (edge, devices, and the network's tc batches, delay elements and cross traffic)
is started through :meth:`topologies.net.EmulatedNetwork.popen`: it dies with this process, even
on ``kill -9``, and is registered for ``wisv link cleanup``. While a protocol runs, every one of
them is watched: one that dies fails the run within a second, naming it and its log. Use a
Testbed from one thread (the one that outlives its processes, as the parent-death signal
follows the thread that started them).
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pandas as pd

from nodes.config import RunConfig
from runs.devices import DeviceSetup, device_tag, resolve_devices
from runs.summary import ProtocolSummary, summarise
from runs.tables import write_run_tables
from topologies.capture import CaptureSettings, start_capture, stop_capture
from topologies.net import EDGE_IP, EmulatedNetwork, exit_text, last_line
from topologies.replayer import ReplayOptions, TraceReplayer
from topologies.shapers import QueueLimit
from topologies.topo import DeviceEdge, Topology
from traces.format import read_trace
from traces.link_state import link_state_path

REPO = Path(__file__).resolve().parent.parent
EDGE_PORT = 5555
WATCH_INTERVAL_S = 0.25  # how often the watch looks at the processes and the round logs
log = logging.getLogger(__name__)


class RunFailed(RuntimeError):
    """A node failed; the partial logs are in the run directory."""


class Testbed:
    """An emulated device–edge testbed with real node processes (see module docstring)."""

    def __init__(self, topo: Topology = DeviceEdge(), backend: str = "auto", seed: int = 0,
                 run_dir: str | Path | None = None, queue_packets: int = 1000, progress: bool = False,
                 config: RunConfig | None = None, capture: CaptureSettings | None = None):
        self.topo, self.backend, self.seed, self.queue_packets = topo, backend, seed, queue_packets
        self.capture, self._capture = capture, None  # pcaps of each protocol run (topologies.capture)
        self.config = config or RunConfig(run_id=uuid.uuid4().hex, seed=seed)
        self.progress = progress
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix="wisv-run-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.net: EmulatedNetwork | None = None
        self.trace_path: Path | None = None
        self.trace_paths: list[Path] = []
        self.edge = None
        self._edge_log = None

    def __enter__(self) -> "Testbed":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "Testbed":
        """Build the network."""
        self.net = EmulatedNetwork(self.topo, backend=self.backend, seed=self.seed, run_dir=self.run_dir / "net",
                                   queue=QueueLimit(packets=self.queue_packets))
        try:
            self.net.start()
        except BaseException:
            self.net.stop()
            raise
        return self

    def attach_trace(self, path: str | Path | list) -> None:
        """Use this trace for every device link, or one trace per device (a list); the first
        rows are applied now. Each device needs its own up and down link (``net.links``); links
        several devices share (``net.shared_links``) are not driven from here."""
        if any(set(pair) != {"up", "down"} for pair in self.net.links):
            raise ValueError(f"{self.topo.kind}: not every device has its own up and down link; attach_trace drives "
                             "those only (drive net.shared_links with a TraceReplayer)")
        paths = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)] * len(self.net.links)
        if len(paths) != len(self.net.links):
            raise ValueError(f"{len(paths)} traces for {len(self.net.links)} devices")
        self.trace_paths = paths
        self.trace_path = paths[0]
        self._replayer(0.0).apply_first()

    def _replayer(self, loop_to_ms: float) -> TraceReplayer:
        return TraceReplayer(self.net.links, [read_trace(p) for p in self.trace_paths],
                             ReplayOptions(loop_to_ms=loop_to_ms or None),
                             publish=[link_state_path(self.run_dir, k) for k in range(len(self.trace_paths))])

    def start_edge(self, drafter: str | None = None, target: str | None = None, lambda_ms: float | None = None) -> None:
        """Start the edge process (target model, heads, edge compute profile of the testbed's
        config; ``drafter``/``target``/``lambda_ms`` override it) in the edge host."""
        c = self.config
        if drafter or target:
            c = replace(c, models=replace(c.models, drafter=drafter or c.models.drafter, target=target or c.models.target))
        if lambda_ms is not None:
            c = replace(c, lambda_ms=lambda_ms)
        self.config = c
        path = c.write(self.run_dir / "edge-config.json")
        edge_log = self.run_dir / "edge.log"
        self._edge_log = open(edge_log, "ab")
        self.edge = self.net.popen(self.net.edge, [sys.executable, "-m", "wisv.cli", "node", "edge", "--bind",
                                                   f"tcp://0.0.0.0:{EDGE_PORT}", "--threads", "1", "--config", str(path)],
                                   "the edge", edge_log, stdout=subprocess.PIPE, stderr=self._edge_log, cwd=str(REPO))
        if not self.edge.stdout.readline().decode().startswith("ready"):
            raise RunFailed(f"the edge did not start{_exit_and_cause(self.edge, edge_log)}")

    def devices(self, cfg: RunConfig) -> list[DeviceSetup[Path]]:
        """The devices a protocol run with ``cfg`` starts (:func:`runs.devices.resolve_devices`,
        as the simulator resolves them): device k runs ``cfg.for_device(k)`` over its trace."""
        return resolve_devices(cfg, self.trace_paths)

    def protocol_config(self, protocol: str, problems: int | None = None, gamma: int | None = None,
                        split: str | None = None, max_new_tokens: int | None = None) -> RunConfig:
        """The testbed's config for ``protocol``, with the given settings changed."""
        c, t = self.config, self.config.task
        task = replace(t, split=split or t.split, problems=problems or t.problems,
                       max_new_tokens=max_new_tokens or t.max_new_tokens)  # kind, file, chat_template kept
        return replace(c, protocol=protocol, gamma=gamma or c.gamma, task=task)

    def run_protocol(self, protocol: str, problems: int | None = None, gamma: int | None = None,
                     split: str | None = None, max_new_tokens: int | None = None, timeout_s: float = 900.0,
                     on_device_start=None, config: RunConfig | None = None) -> ProtocolSummary:
        """Run one protocol — ``config``, or the testbed's config with ``protocol`` and the given
        settings — with one device process per device host (device k on its own slice of the
        problems), replaying the trace(s) from their start at the moment every device has
        loaded its model and said hello; logs go to the run directory."""
        if self.trace_path is None or self.edge is None:
            raise RuntimeError("attach_trace() and start_edge() first")
        cfg = config or self.protocol_config(protocol, problems, gamma, split, max_new_tokens)
        protocol = cfg.protocol
        rd = self.run_dir
        cfg.write(rd / f"config-{protocol}.json")
        n = len(self.net.devices)
        devices = self.devices(cfg)
        tag = lambda k: device_tag(protocol, k, n)  # noqa: E731
        cfg_paths = [d.config.write(rd / f"config-{tag(k)}.json") for k, d in enumerate(devices)]  # device k's own
        dev_logs = [rd / f"device-{tag(k)}.log" for k in range(n)]
        replayer = self._replayer(timeout_s * 1000.0)
        replayer.apply_first()  # hello and the first request already see the trace's first step, not the last
        #                         step of the previous protocol (which may be a deep fade)
        devs, errs = [], []
        self._check_alive(protocol, [], [], replayer)
        self._capture = start_capture(self.net, self.capture, rd / "pcap", protocol)  # None when capture is off
        try:
            for k, host in enumerate(self.net.devices):
                errs.append(open(dev_logs[k], "ab"))
                dev = self.net.popen(
                    host,
                    [sys.executable, "-m", "wisv.cli", "node", "device", "--connect", f"tcp://{EDGE_IP}:{EDGE_PORT}",
                     "--threads", "1", "--config", str(cfg_paths[k]),
                     "--log", str(rd / f"rounds-{tag(k)}.jsonl"), "--link-state", str(link_state_path(rd, k)),
                     "--wait-go",
                     "--json-out", str(rd / f"requests-{tag(k)}.json"), "--count-iface", host.intfList()[0].name],
                    f"device {k}", dev_logs[k], watch=False,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errs[-1], cwd=str(REPO))
                devs.append(dev)
                if on_device_start is not None:
                    on_device_start(protocol, dev)
            for k, dev in enumerate(devs):  # every device has its model and a session
                if dev.stdout.readline().decode().strip() != "ready":
                    self._check_alive(protocol, [], [], None)  # a dead edge is the cause, if it is dead
                    raise RunFailed(f"{protocol}: device {k} did not start{_exit_and_cause(dev, dev_logs[k])}")
            start = time.monotonic()  # the trace starts with the first request
            replayer.start(start)
            for dev in devs:
                dev.stdin.write(f"{start}\n".encode())
                dev.stdin.flush()
            deadline = time.monotonic() + timeout_s
            self._watch(protocol, devs, dev_logs, [rd / f"rounds-{tag(k)}.jsonl" for k in range(n)],
                        cfg.task.problems * n, deadline, replayer)
            for k, dev in enumerate(devs):
                try:
                    stdout, _ = dev.communicate(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise RunFailed(f"{protocol}: device {k} did not finish in {timeout_s:g} s") from None
                if dev.returncode != 0 or not stdout.strip():
                    raise RunFailed(f"{protocol}: the device {exit_text(dev.returncode)} (rounds so far in "
                                    f"rounds-{tag(k)}.jsonl){_cause(dev_logs[k])}")
        except BaseException:
            self._finish_protocol(protocol, devs, errs, replayer)
            _best_effort(write_run_tables, rd)  # the tables of what finished
            raise
        self._finish_protocol(protocol, devs, errs, replayer)
        requests, rounds = [], []
        for k in range(n):
            requests += json.loads((rd / f"requests-{tag(k)}.json").read_text())["requests"]
            rounds += [json.loads(x) for x in open(rd / f"rounds-{tag(k)}.jsonl")]
        write_run_tables(rd)
        return summarise(protocol, requests, rounds)

    def _finish_protocol(self, protocol: str, devs: list, errs: list, replayer: TraceReplayer) -> None:
        """Kill devices still running, stop the replay, write the link steps (a header at least),
        close the logs. Never raises: a failure here must not hide the run's own error."""
        for dev in devs:
            if dev.poll() is None:
                dev.kill()
            try:
                dev.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("%s: device pid %d did not exit after SIGKILL", protocol, dev.pid)
        _best_effort(replayer.stop)
        _best_effort(stop_capture, self._capture)  # after the devices: their last packets are in the pcaps
        self._capture = None
        _best_effort(lambda: replayer.log.frame().to_csv(self.run_dir / f"link-steps-{protocol}.csv", index=False))
        for e in errs:
            e.close()

    def _check_alive(self, protocol: str, devs: list, dev_logs: list[Path], replayer: TraceReplayer | None) -> None:
        """RunFailed naming the first process that must not have died and did: the edge, a
        process of the network (tc batch, delay element, cross traffic), a device that failed
        (exit status ≠ 0), or the trace replay."""
        try:
            self.net.check_processes()
        except RuntimeError as e:
            raise RunFailed(f"{protocol}: {e}") from None
        for k, dev in enumerate(devs):
            if dev.poll() not in (None, 0):
                raise RunFailed(f"{protocol}: the device {exit_text(dev.returncode)}{_cause(dev_logs[k])}")
        if replayer is not None and replayer.error is not None:
            raise RunFailed(f"{protocol}: the trace replay failed: {replayer.error!r}")

    def _watch(self, protocol: str, devs: list, dev_logs: list[Path], logs: list[Path], total: int, deadline: float,
               replayer: TraceReplayer) -> None:
        """Until every device exits: every :data:`WATCH_INTERVAL_S` s, fail the run if any
        process died (:meth:`_check_alive`), and show problems and rounds done (from the round
        logs)."""
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="problem", desc=protocol, leave=False)
        offsets = [0] * len(logs)  # read only what each log gained since the last look
        requests: set[str] = set()
        n_rounds = 0
        try:
            while any(d.poll() is None for d in devs) and time.monotonic() < deadline:
                time.sleep(WATCH_INTERVAL_S)
                self._check_alive(protocol, devs, dev_logs, replayer)
                if bar is None:
                    continue
                for i, f in enumerate(logs):
                    if not f.exists():
                        continue
                    with open(f) as fh:
                        fh.seek(offsets[i])
                        chunk = fh.read()
                    complete = chunk[: chunk.rfind("\n") + 1]
                    offsets[i] += len(complete.encode())
                    for ln in complete.splitlines():
                        requests.add(json.loads(ln)["request_id"])
                        n_rounds += 1
                bar.n = max(0, len(requests) - sum(d.poll() is None for d in devs))
                bar.set_postfix(rounds=n_rounds)
                bar.refresh()
            self._check_alive(protocol, devs, dev_logs, replayer)
        finally:
            if bar is not None:
                bar.close()

    def rounds(self, protocol: str | None = None) -> pd.DataFrame:
        """The per-round log (of one protocol, or all) as a DataFrame."""
        files = [self.run_dir / f"rounds-{protocol}.jsonl"] if protocol else sorted(self.run_dir.glob("rounds-*.jsonl"))
        parts = [pd.read_json(f, lines=True) for f in files if f.exists() and f.stat().st_size]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def stop(self) -> None:
        """Stop the edge and tear the network down (idempotent)."""
        if self.edge is not None:
            if self.net is not None:
                self.net.unwatch(self.edge)
            if self.edge.poll() is None:
                self.edge.terminate()
                try:
                    self.edge.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.edge.kill()
                    self.edge.wait()
            self.edge = None
        if self._edge_log:
            self._edge_log.close()
            self._edge_log = None
        if self.net is not None:
            self.net.stop()
            self.net = None


def _cause(log_path: Path) -> str:
    """``; see <log> (last line: …)``: where a failed node's own error is, and usually the error."""
    line = last_line(log_path)
    return f"; see {log_path}" + (f" (last line: {line})" if line else "")


def _exit_and_cause(proc: subprocess.Popen, log_path: Path) -> str:
    """The exit status of a node that stopped early (waiting briefly for it) and its cause."""
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return _cause(log_path)
    return f" ({exit_text(proc.returncode)}){_cause(log_path)}"


def _best_effort(fn, *args) -> None:
    """Call ``fn(*args)``; log an exception instead of raising it (cleanup paths)."""
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - never hide the error being handled
        log.warning("%s failed", getattr(fn, "__name__", fn), exc_info=True)
