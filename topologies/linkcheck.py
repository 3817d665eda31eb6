"""``wisv link check``: build ``DeviceEdge``, replay a trace, send probes both ways and compare
what the link did with what the trace intended.

Phases (each direction independently, both at once):
1. delay/loss probes: small UDP datagrams at ``probe_pps`` for the first half;
2. bulk: UDP at 1.25× the highest rate of the phase, up then down, for a quarter each.

Intended values come from the replayer's log of what was applied when. One-way delay intended
for a probe follows an order-preserving delay line: release = max(arrival + delay in force,
previous release), plus its serialisation time at the rate in force.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from topologies.net import EmulatedNetwork
from topologies.probe_traffic import UDP_IP_ETH_BYTES
from topologies.replayer import ReplayOptions, StepLog, TraceReplayer
from topologies.shapers import QueueLimit
from topologies.topo import DeviceEdge
from traces.format import Trace
from traces.schedule import row_in_force

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parent.parent
PROBE_PORT, BULK_PORT = 5001, 5002
PROBE_SIZE, BULK_SIZE = 100, 1400


@dataclass
class CheckPlan:
    """Timing of a link check (seconds from the replay start)."""

    duration_s: float
    probe_pps: float = 500.0
    lead_s: float = 0.2  # from arming the ready probe processes to the replay start

    @property
    def probe_window(self) -> tuple[float, float]:
        """When the probes run."""
        return 0.0, self.duration_s / 2

    def bulk_window(self, direction: str) -> tuple[float, float]:
        """When the bulk flow of ``direction`` runs."""
        q = self.duration_s / 4
        return (2 * q, 3 * q) if direction == "up" else (3 * q, 4 * q)


def _in_force(steps: dict[str, np.ndarray], t: np.ndarray, col: str) -> np.ndarray:
    """Value of ``col`` in force at monotonic seconds ``t`` (from the applied-step log)."""
    return steps[col][np.clip(row_in_force(steps["applied_s"], t), 0, None)]


def _steps(log_: StepLog) -> dict[str, np.ndarray]:
    df = log_.frame()
    return {c: df[c].to_numpy(dtype=float) for c in df.columns}


def owd_errors(rx: np.ndarray, steps: dict, d: str) -> tuple[np.ndarray, int]:
    """(measured − intended one-way delay in ms per received probe, reordered count)."""
    if len(rx) == 0:
        return np.zeros(0), 0
    order = np.argsort(rx[:, 1])  # by send time
    send_s = rx[order, 1] / 1e9
    recv_s = rx[order, 2] / 1e9
    delay = _in_force(steps, send_s, f"delay_ms_{d}") / 1000.0
    rate = _in_force(steps, send_s, f"rate_bps_{d}")
    tx = (rx[order, 3] + UDP_IP_ETH_BYTES) * 8 / rate
    release = np.maximum.accumulate(send_s + tx + delay)
    err_ms = (recv_s - send_s - (release - send_s)) * 1000.0
    arrival_seq = rx[np.argsort(rx[:, 2]), 0]
    reordered = int(np.sum(arrival_seq < np.maximum.accumulate(arrival_seq)))
    return err_ms, reordered


def rate_errors(rx: np.ndarray, steps: dict, d: str, window: tuple[float, float], start: float,
                win_s: float = 0.1) -> np.ndarray:
    """Per 100 ms window: (delivered − intended) / intended, intended = rate × (1 − loss) in
    force. Each received packet is dated back to when it left the rate limiter (receive time
    minus the delay then in force), so windows on the trace's 100 ms grid see exactly their
    steps even while the delay changes; the first 300 ms of the flow (queue filling) are left out."""
    if len(rx) == 0:
        return np.array([1.0])
    recv_s = rx[:, 2] / 1e9
    bits = (rx[:, 3] + UDP_IP_ETH_BYTES) * 8.0
    first_guess = recv_s - _in_force(steps, recv_s, f"delay_ms_{d}") / 1000.0
    departed = recv_s - _in_force(steps, first_guess, f"delay_ms_{d}") / 1000.0
    t0, t1 = window
    first = start + np.ceil((t0 + 0.3 - start) / win_s) * win_s
    errs = []
    for a in np.arange(first, t1 - win_s + 1e-9, win_s):
        grid = a + (np.arange(20) + 0.5) * win_s / 20
        intended = np.mean(_in_force(steps, grid, f"rate_bps_{d}") * (1 - _in_force(steps, grid, f"loss_{d}")))
        delivered = bits[(departed >= a) & (departed < a + win_s)].sum() / win_s
        errs.append((delivered - intended) / intended)
    return np.array(errs)


def _popen(host, args: list[str]):
    return host.popen([sys.executable, "-m", "topologies.probe_traffic", *args], stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(REPO))


def _arm(proc, monotonic_s: float) -> None:
    """Give an armed probe process its schedule: one monotonic second on standard input."""
    proc.stdin.write(f"{monotonic_s}\n".encode())
    proc.stdin.flush()


def run_link_check(trace: Trace, backend: str = "auto", duration_s: float = 10.0, seed: int = 0,
                   probe_pps: float = 500.0, run_dir: Path | None = None, queue: QueueLimit = QueueLimit()) -> dict:
    """Run the check (needs root); returns the JSON-able result of ``wisv link check --json``."""
    plan = CheckPlan(duration_s, probe_pps)
    first = trace.data.iloc[0]
    with EmulatedNetwork(DeviceEdge(), backend=backend, seed=seed, run_dir=run_dir, queue=queue,
                         initial=(first["rate_bps_up"], first["delay_ms_up"], first["loss_up"])) as net:
        dev, edge = net.devices[0], net.edge
        net.links[0]["down"].set(first["rate_bps_down"], first["delay_ms_down"], first["loss_down"])
        replayer = TraceReplayer(net.links, [trace], ReplayOptions(loop_to_ms=duration_s * 1000.0))
        out = net.run_dir
        ends = {"up": (dev, edge, net.layout.edge.ip), "down": (edge, dev, net.layout.devices[0].ip)}
        # Highest rate each bulk phase will meet (the trace is looped to the duration).
        max_rate = {d: float(replayer.traces[0].data[f"rate_bps_{d}"].max()) for d in ends}
        # Every receiver and sender starts armed (no schedule yet) and says ready; the schedule is
        # fixed only then, so a slow start-up on a busy host never eats into the replay.
        receivers, senders = [], {}
        for d, (src, dst, dst_ip) in ends.items():
            for port, name in ((PROBE_PORT, "probe"), (BULK_PORT, "bulk")):
                receivers.append(_popen(dst, ["recv", "--port", str(port), "--out", str(out / f"{name}-{d}.npy")]))
            a, b = plan.probe_window
            senders[f"probe-{d}"] = _popen(src, ["send", "--dst", dst_ip, "--port", str(PROBE_PORT), "--pps",
                                                 f"{probe_pps}", "--size", str(PROBE_SIZE), "--duration", f"{b - a}"])
            a, b = plan.bulk_window(d)
            senders[f"bulk-{d}"] = _popen(src, ["send", "--dst", dst_ip, "--port", str(BULK_PORT), "--rate-bps",
                                                f"{1.25 * max_rate[d]}", "--size", str(BULK_SIZE), "--duration", f"{b - a}"])
        for name, p in [*(("receiver", p) for p in receivers), *senders.items()]:
            if p.stdout.readline().decode().strip() != "ready":
                raise RuntimeError(f"probe {name} failed: {p.stderr.read().decode()}")
        start = time.monotonic() + plan.lead_s
        for p in receivers:
            _arm(p, start + duration_s + 1.0)
        for d in ends:
            _arm(senders[f"probe-{d}"], start + plan.probe_window[0])
            _arm(senders[f"bulk-{d}"], start + plan.bulk_window(d)[0])
        replayer.start(start)
        sent = {}
        for name, p in senders.items():
            o, e = p.communicate(timeout=duration_s + 60)
            if p.returncode:
                raise RuntimeError(f"{name} sender failed: {e.decode()}")
            sent[name] = int(o.decode().strip() or 0)
        for p in receivers:
            p.communicate(timeout=30)
        replayer.stop()
        element = {d: getattr(net.links[0][d], "element_stats", dict)() for d in ends}
    steps = _steps(replayer.log)
    result = {"backend": net.backend, "duration_s": duration_s, "steps": len(replayer.log.rows),
              "step_apply_p99_ms": float(np.percentile(replayer.log.apply_ms(), 99)) if replayer.log.rows else None,
              "step_apply_median_ms": float(np.median(replayer.log.apply_ms())) if replayer.log.rows else None,
              "missed_steps": replayer.log.missed, "replay_realtime": replayer.realtime}
    for d in ends:
        probe = np.load(out / f"probe-{d}.npy")
        bulk = np.load(out / f"bulk-{d}.npy")
        err, reordered = owd_errors(probe, steps, d)
        n_sent = sent[f"probe-{d}"]
        a, b = plan.probe_window
        send_times = start + a + np.arange(n_sent) / probe_pps
        intended_loss = float(np.mean(_in_force(steps, send_times, f"loss_{d}"))) if n_sent else 0.0
        measured_loss = 1.0 - len(probe) / n_sent if n_sent else 0.0
        rerr = rate_errors(bulk, steps, d, tuple(start + x for x in plan.bulk_window(d)), start)
        result[d] = {
            "rate_error_pct": float(np.mean(np.abs(rerr)) * 100.0),
            "rate_mean_error_pct": float(np.mean(rerr) * 100.0),
            "owd_median_error_ms": float(np.median(err)) if len(err) else None,
            "owd_p99_error_ms": float(np.percentile(err, 99)) if len(err) else None,
            "loss_error_pp": (measured_loss - intended_loss) * 100.0,
            "reordered": reordered,
            "probes_sent": n_sent, "probes_received": int(len(probe)),
            "loss_measured": measured_loss, "loss_intended": intended_loss,
            "bulk_packets": int(len(bulk)), "element": element.get(d, {}),
        }
    (Path(out) / "linkcheck.json").write_text(json.dumps(result, indent=2) + "\n")
    replayer.log.frame().to_csv(Path(out) / "link_steps.csv", index=False)
    return result
