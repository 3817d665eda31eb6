"""An emulated experiment: real edge and device processes in Mininet hosts, talking ZeroMQ over
a link that replays a trace, one protocol after another over the same trace segment (the
replay restarts at the trace's beginning when each protocol starts). Built on
:class:`runs.api.Testbed`. A device that fails or dies fails the run; its logs so far stay on
disk, and the network, the rules and every process are removed whatever happens.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from nodes.config import RunConfig, field_default
from runs.api import RunFailed, Testbed  # noqa: F401  (RunFailed is part of this module's interface)
from runs.summary import ProtocolSummary
from topologies.capture import CaptureSettings
from topologies.shapers import BACKEND_CHOICES, QueueLimit
from topologies.topo import DeviceEdge, Topology


@dataclass
class EmulationSetup:
    """Where the protocols run: the topology, the shaping backend, the queue bound of each
    shaped link (packets), the trace (or one trace per device), a time limit per protocol, and
    the packet capture (off by default; an experiment passes its spec's ``capture`` section)."""

    trace: Path
    topology: Topology = field(default_factory=DeviceEdge)
    backend: str = BACKEND_CHOICES[0]  # auto
    queue_packets: int = field_default(QueueLimit, "packets")
    device_traces: list[Path] | None = None
    timeout_s: float = 900.0
    progress: bool = False
    capture: CaptureSettings = field(default_factory=CaptureSettings)


def _write(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def run_emulated(cfg: RunConfig, protocols: list[str], setup: EmulationSetup, run_dir: Path,
                 on_device_start=None) -> dict[str, ProtocolSummary]:
    """Run every protocol with ``cfg`` (its protocol replaced); results and logs go to
    ``run_dir``. ``on_device_start`` (protocol, Popen) is called when each device process
    starts (tests use it to kill one)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, ProtocolSummary] = {}
    status = {"run_id": cfg.run_id, "status": "running", "protocols": {}}
    with Testbed(setup.topology, backend=setup.backend, seed=cfg.seed, run_dir=run_dir,
                 queue_packets=setup.queue_packets, progress=setup.progress, config=cfg, capture=setup.capture) as tb:
        try:
            tb.attach_trace(list(setup.device_traces) if setup.device_traces else setup.trace)
            tb.start_edge()
            for protocol in protocols:
                out[protocol] = tb.run_protocol(protocol, timeout_s=setup.timeout_s, on_device_start=on_device_start,
                                                config=cfg.with_protocol(protocol))
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
