"""An emulated experiment: real edge and device processes in Mininet hosts, talking ZeroMQ over
a link that replays a trace, one protocol after another over the same trace segment (the
replay restarts at the trace's beginning when each protocol starts).

The edge process (``wisv node edge``) runs in the edge host for the whole experiment; per
protocol a device process (``wisv node device``) runs in the device host, writes its per-round
log as it goes and reports the trace step in force as its CSI (both read one monotonic clock).
A device that fails or dies fails the run; its logs so far stay on disk, and the network, the
rules and every process are removed whatever happens.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nodes.sweep import ProtocolSummary
from topologies.net import EDGE_IP, EmulatedNetwork
from topologies.replayer import ReplayOptions, TraceReplayer
from topologies.topo import DeviceEdge
from traces.format import read_trace

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parent.parent
EDGE_PORT = 5555


class RunFailed(RuntimeError):
    """A node failed; the partial logs are in ``run_dir``."""


@dataclass
class EmulatedSpec:
    """What to run: trace file, protocols, problems per protocol, draft length, backend, seed."""

    trace: Path
    protocols: tuple[str, ...] = ("vanilla", "wisv-full", "wisv-selective")
    problems: int = 20
    gamma: int = 4
    backend: str = "auto"
    seed: int = 0
    max_new_tokens: int = 128
    timeout_s: float = 900.0


def _write(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def run_emulated(spec: EmulatedSpec, run_dir: Path, on_device_start=None) -> dict[str, ProtocolSummary]:
    """Run every protocol of ``spec``; results and logs go to ``run_dir``. ``on_device_start``
    (protocol, Popen) is called when each device process starts (tests use it to kill one)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    trace = read_trace(spec.trace)
    first = trace.data.iloc[0]
    run_id = f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    _write(run_dir / "spec.json", {**spec.__dict__, "trace": str(spec.trace), "run_id": run_id})
    out: dict[str, ProtocolSummary] = {}
    status = {"run_id": run_id, "status": "running", "protocols": {}}
    with EmulatedNetwork(DeviceEdge(), backend=spec.backend, seed=spec.seed, run_dir=run_dir / "net",
                         initial=(first["rate_bps_up"], first["delay_ms_up"], first["loss_up"])) as net:
        net.links[0]["down"].set(first["rate_bps_down"], first["delay_ms_down"], first["loss_down"])
        edge_log = open(run_dir / "edge.log", "ab")
        edge = net.edge.popen([sys.executable, "-m", "wisv.cli", "node", "edge", "--bind", f"tcp://0.0.0.0:{EDGE_PORT}"],
                              stdout=subprocess.PIPE, stderr=edge_log, cwd=str(REPO))
        try:
            if not edge.stdout.readline().decode().startswith("ready"):
                raise RunFailed(f"the edge did not start (see {run_dir / 'edge.log'})")
            for protocol in spec.protocols:
                out[protocol] = _run_protocol(spec, protocol, net, run_dir, run_id, on_device_start)
                status["protocols"][protocol] = "done"
                _write(run_dir / "status.json", status)
            status["status"] = "done"
        except BaseException as e:
            status["status"] = "failed"
            status["error"] = f"{type(e).__name__}: {e}"
            raise
        finally:
            _write(run_dir / "status.json", status)
            if edge.poll() is None:
                edge.terminate()
                try:
                    edge.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    edge.kill()
                    edge.wait()
            edge_log.close()
    _write(run_dir / "summary.json", {k: v.__dict__ for k, v in out.items()})
    return out


def _run_protocol(spec: EmulatedSpec, protocol: str, net: EmulatedNetwork, run_dir: Path, run_id: str,
                  on_device_start=None) -> ProtocolSummary:
    replayer = TraceReplayer(net.links, [read_trace(spec.trace)], ReplayOptions(loop_to_ms=spec.timeout_s * 1000.0))
    start = time.monotonic() + 1.0  # the device loads its model meanwhile; the trace starts with its first request
    err = open(run_dir / f"device-{protocol}.log", "ab")
    dev = net.devices[0].popen(
        [sys.executable, "-m", "wisv.cli", "node", "device", "--connect", f"tcp://{EDGE_IP}:{EDGE_PORT}",
         "--protocol", protocol, "--problems", str(spec.problems), "--gamma", str(spec.gamma),
         "--max-new-tokens", str(spec.max_new_tokens), "--log", str(run_dir / f"rounds-{protocol}.jsonl"),
         "--run-id", run_id, "--trace", str(spec.trace), "--trace-start", f"{start}", "--json-out",
         str(run_dir / f"requests-{protocol}.json"), "--count-iface", net.devices[0].intfList()[0].name],
        stdout=subprocess.PIPE, stderr=err, cwd=str(REPO))
    if on_device_start is not None:
        on_device_start(protocol, dev)
    replayer.start(start)
    try:
        stdout, _ = dev.communicate(timeout=spec.timeout_s)
    except subprocess.TimeoutExpired:
        dev.kill()
        dev.wait()
        raise RunFailed(f"{protocol}: the device did not finish in {spec.timeout_s:g} s") from None
    finally:
        replayer.stop()
        replayer.log.frame().to_csv(run_dir / f"link-steps-{protocol}.csv", index=False)
        err.close()
    if dev.returncode != 0 or not stdout.strip():
        raise RunFailed(f"{protocol}: the device exited with {dev.returncode} (see {run_dir}/device-{protocol}.log; "
                        f"rounds so far in rounds-{protocol}.jsonl)")
    s = json.loads(stdout.decode().strip().splitlines()[-1])
    return ProtocolSummary(**s)
