"""An emulated experiment: real edge and device processes in Mininet hosts, talking ZeroMQ over
a link that replays a trace, one protocol after another over the same trace segment (the
replay restarts at the trace's beginning when each protocol starts). Built on
:class:`runs.api.Testbed`. A device that fails or dies fails the run; its logs so far stay on
disk, and the network, the rules and every process are removed whatever happens.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from nodes.sweep import ProtocolSummary
from runs.api import RunFailed, Testbed  # noqa: F401  (RunFailed is part of this module's interface)


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
    lambda_ms: float | None = None
    drafter: str | None = None
    target: str | None = None
    split: str = "test"
    queue_packets: int = 1000
    n_devices: int = 1
    cross_traffic_bps: float | None = None
    backhaul_rate_bps: float | None = None
    device_args: list[str] | None = None
    device_traces: list[Path] | None = None  # one per device (Star); default: ``trace`` for all
    progress: bool = False


def _write(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def run_emulated(spec: EmulatedSpec, run_dir: Path, on_device_start=None) -> dict[str, ProtocolSummary]:
    """Run every protocol of ``spec``; results and logs go to ``run_dir``. ``on_device_start``
    (protocol, Popen) is called when each device process starts (tests use it to kill one)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    if not (run_dir / "spec.json").exists():  # an experiment has already written the resolved spec
        _write(run_dir / "spec.json", {**spec.__dict__, "trace": str(spec.trace), "run_id": run_id})
    out: dict[str, ProtocolSummary] = {}
    status = {"run_id": run_id, "status": "running", "protocols": {}}
    from topologies.topo import CrossTraffic, DeviceEdge, Star

    topo = DeviceEdge() if spec.n_devices == 1 and not spec.cross_traffic_bps else Star(
        spec.n_devices, CrossTraffic(spec.cross_traffic_bps) if spec.cross_traffic_bps else None, spec.backhaul_rate_bps)
    with Testbed(topo, backend=spec.backend, seed=spec.seed, run_dir=run_dir, queue_packets=spec.queue_packets,
                 progress=spec.progress) as tb:
        try:
            tb.attach_trace(list(spec.device_traces) if spec.device_traces else spec.trace)
            tb.start_edge(spec.drafter, spec.target, spec.lambda_ms)
            for protocol in spec.protocols:
                out[protocol] = tb.run_protocol(protocol, spec.problems, spec.gamma, spec.split, spec.max_new_tokens,
                                                run_id, spec.timeout_s, on_device_start, spec.device_args)
                status["protocols"][protocol] = "done"
                _write(run_dir / "status.json", status)
            status["status"] = "done"
        except BaseException as e:
            status["status"] = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            status["error"] = f"{type(e).__name__}: {e}"
            raise
        finally:
            _write(run_dir / "status.json", status)
    _write(run_dir / "summary.json", {k: v.__dict__ for k, v in out.items()})
    return out
