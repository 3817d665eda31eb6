"""The cell scheduler element: real packets of many devices held and released per TTI.

Runs inside the *receiver's* network namespace (the base station / edge side of the uplink),
behind ``iptables -t mangle -A PREROUTING <match> -j NFQUEUE --queue-num Q``
(:func:`iptables_rule`). Every arriving packet is classified by its IPv4 source address into one
FIFO per device (packets from other sources pass at once). Every TTI (``--tti-ms``, 1 ms by
default, on the monotonic clock) the element asks a scheduler of
:data:`channel_models.cell.SCHEDULERS` for each device's grant from its backlog (bytes queued,
IP bytes) and its current rate, adds the grant to the device's credit and releases the packets
at the head of its queue that the credit covers (a packet larger than one TTI's grant waits for
the credit of several, as a transport block segmenting it would; the credit is dropped when the
queue empties, so an idle device saves nothing up). A TTI the loop wakes late for is still run,
back to back with the next (at most ``MAX_CATCH_UP_TTI`` of them; older ones are skipped and
counted), so late wake-ups delay packets but do not change throughput.

Control is a line protocol on standard input, as :mod:`topologies.delay_element`:
``rates <r0> <r1> …`` sets each device's rate in bit/s (from its own channel; applies from the
next TTI); ``stats`` answers one JSON line on standard output (:func:`run` lists the fields).
A malformed line is ignored. The element exits when its standard input closes (releasing what
it holds), dies with the orchestrator that started it (``procs.lifecycle``) and runs with
real-time priority where allowed (:mod:`topologies.realtime`).

Usage (inside the namespace): python -m topologies.cell_element --queue Q --device IP …
    --rate-bps R [--scheduler round-robin] [--tti-ms 1]
"""
from __future__ import annotations

import argparse
import collections
import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from channel_models.cell import SCHEDULERS, make_scheduler
from procs.lifecycle import child_environment, close_and_wait, die_with_orchestrator, pdeathsig_prefix
from topologies.element_io import ElementIO, answer
from topologies.realtime import make_realtime

MAX_CATCH_UP_TTI = 20  # late TTIs run back to back after a stall; older ones are skipped


def iptables_rule(queue_num: int, match: str) -> str:
    """The mangle PREROUTING rule (without -A/-D) that hands packets matching ``match`` (iptables
    words, e.g. ``-i eth0`` or ``-s 10.0.0.0/24``) to the element on queue ``queue_num``."""
    return f"PREROUTING {match} -j NFQUEUE --queue-num {int(queue_num)}"


def run(queue_num: int, devices: list[str], rates_bps: list[float], scheduler: str, tti_ms: float,
        queue_packets: int, scheduler_kwargs: dict | None = None) -> None:
    """Serve the queue until stdin closes (see the module docstring). ``stats`` fields: ``ttis``
    run, ``late_ttis`` (run more than one TTI after their time), ``skipped_ttis``, ``active_sum``
    (Σ over TTIs of active devices), ``cpu_s`` (this process's CPU seconds), ``rates_bps`` and per
    device (lists in ``devices`` order): ``released_packets``, ``released_bytes``, ``dropped``
    (queue full), ``queued_packets``, ``queued_bytes``, ``share_sum`` (Σ of its shares),
    ``delay_ms_sum`` and ``delay_ms_max`` (arrival → release of released packets)."""
    n = len(devices)
    index = {socket.inet_aton(ip): i for i, ip in enumerate(devices)}
    sched = make_scheduler(scheduler, n, tti_ms, **(scheduler_kwargs or {}))
    rates = [float(r) for r in rates_bps]
    queues: list[collections.deque] = [collections.deque() for _ in range(n)]
    queued_bytes = [0.0] * n
    credit = [0.0] * n
    c = {"released_packets": [0] * n, "released_bytes": [0] * n, "dropped": [0] * n,
         "share_sum": [0.0] * n, "delay_ms_sum": [0.0] * n, "delay_ms_max": [0.0] * n}
    g = {"ttis": 0, "late_ttis": 0, "skipped_ttis": 0, "active_sum": 0, "passed": 0, "updates": 0}

    def on_packet(pkt) -> None:
        i = index.get(pkt.get_payload()[12:16])
        if i is None:
            g["passed"] += 1
            pkt.accept()
            return
        if len(queues[i]) >= queue_packets:
            c["dropped"][i] += 1
            pkt.drop()
            return
        size = pkt.get_payload_len()
        queues[i].append((pkt, size, time.monotonic()))
        queued_bytes[i] += size

    def run_tti(now: float) -> None:
        grant, share, active = sched.allocate_lists([max(b - k, 0.0) for b, k in zip(queued_bytes, credit)], rates)
        g["ttis"] += 1
        if not active:
            return
        g["active_sum"] += active
        for i in range(n):
            if grant[i] <= 0.0:
                continue
            c["share_sum"][i] += share[i]
            credit[i] += grant[i]
            q = queues[i]
            while q and q[0][1] <= credit[i] + 1e-6:
                pkt, size, t_in = q.popleft()
                pkt.accept()
                credit[i] -= size
                queued_bytes[i] -= size
                c["released_packets"][i] += 1
                c["released_bytes"][i] += size
                d = (now - t_in) * 1000.0
                c["delay_ms_sum"][i] += d
                c["delay_ms_max"][i] = max(c["delay_ms_max"][i], d)
            if not q:
                credit[i] = 0.0
                queued_bytes[i] = 0.0

    def stats() -> dict:
        return {**g, "cpu_s": time.process_time(), "rates_bps": rates, "devices": devices,
                "released_packets": c["released_packets"], "released_bytes": c["released_bytes"],
                "dropped": c["dropped"], "queued_packets": [len(q) for q in queues],
                "queued_bytes": queued_bytes, "share_sum": c["share_sum"],
                "delay_ms_sum": c["delay_ms_sum"], "delay_ms_max": c["delay_ms_max"]}

    io = ElementIO(queue_num, on_packet, max_len=n * queue_packets + 1024)
    tti_s = tti_ms / 1000.0
    next_tti = time.monotonic() + tti_s
    io.ready()
    try:
        while True:
            now = time.monotonic()
            if now >= next_tti:
                due = int((now - next_tti) // tti_s) + 1
                if due > 1:
                    g["late_ttis"] += due - 1
                if due > MAX_CATCH_UP_TTI:
                    g["skipped_ttis"] += due - MAX_CATCH_UP_TTI
                for _ in range(min(due, MAX_CATCH_UP_TTI)):
                    run_tti(now)
                next_tti += due * tti_s
            lines = io.wait(next_tti - time.monotonic())
            if lines is None:
                break  # parent gone
            for line in lines:
                words = line.split()
                if words == ["stats"]:
                    answer(stats())
                elif len(words) == n + 1 and words[0] == "rates":
                    try:
                        new = [float(w) for w in words[1:]]
                    except ValueError:
                        continue
                    if all(0.0 <= r < float("inf") for r in new):
                        rates[:] = new
                        g["updates"] += 1
    finally:
        for q in queues:
            for pkt, _, _ in q:
                pkt.accept()
        io.close()


@dataclass
class CellElement:
    """The orchestrator's handle on a running element: a ``Popen`` with pipes on stdin/stdout."""

    proc: subprocess.Popen
    n_devices: int

    @classmethod
    def start(cls, prefix: list[str], queue_num: int, devices: list[str], rates_bps: list[float],
              scheduler: str = "round-robin", tti_ms: float = 1.0, queue_packets: int = 1000,
              cwd: str | None = None, stderr=None) -> "CellElement":
        """Start the element with ``prefix`` (e.g. ``["ip", "netns", "exec", NS]``) in front of
        the Python command, armed to die with this process, and wait for its ``ready``;
        RuntimeError if it does not come."""
        argv = [*pdeathsig_prefix(), *prefix, sys.executable, "-m", "topologies.cell_element", "--queue", str(queue_num),
                "--scheduler", scheduler, "--tti-ms", f"{tti_ms}", "--queue-packets", str(queue_packets),
                "--rates-bps", ",".join(f"{r:.0f}" for r in rates_bps)]
        for ip in devices:
            argv += ["--device", ip]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=cwd,
                                env=child_environment())
        line = proc.stdout.readline().decode().strip()
        if line != "ready":
            proc.kill()
            proc.wait(timeout=5)
            raise RuntimeError(f"cell element did not start (said {line!r})")
        return cls(proc, len(devices))

    def set_rates(self, rates_bps: list[float]) -> None:
        """Each device's rate (bit/s) from the next TTI on."""
        if len(rates_bps) != self.n_devices:
            raise ValueError(f"need {self.n_devices} rates")
        self.proc.stdin.write(("rates " + " ".join(f"{r:.0f}" for r in rates_bps) + "\n").encode())
        self.proc.stdin.flush()

    def stats(self) -> dict:
        """The element's counters (see :func:`run`); RuntimeError if it is gone."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"cell element exited with {self.proc.returncode}")
        self.proc.stdin.write(b"stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        """Stop it (closing stdin releases what it holds); kill it if it does not exit in 3 s."""
        close_and_wait(self.proc)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry (see module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--device", action="append", required=True, help="a device's IPv4 source address (repeat)")
    ap.add_argument("--rates-bps", required=True, help="initial rate per device, comma-separated (one: all)")
    ap.add_argument("--scheduler", default="round-robin", choices=list(SCHEDULERS))
    ap.add_argument("--tti-ms", type=float, default=1.0)
    ap.add_argument("--queue-packets", type=int, default=1000, help="per device; beyond it packets drop")
    ap.add_argument("--pf-window-tti", type=float, help="proportional-fair averaging window (default LENA's 99)")
    a = ap.parse_args(argv)
    rates = [float(x) for x in a.rates_bps.split(",")]
    if len(rates) == 1:
        rates *= len(a.device)
    if len(rates) != len(a.device):
        ap.error("give one rate, or one per device")
    kwargs = {"time_window_tti": a.pf_window_tti} if a.pf_window_tti and a.scheduler == "proportional-fair" else {}
    die_with_orchestrator()
    make_realtime()
    run(a.queue, a.device, rates, a.scheduler, a.tti_ms, a.queue_packets, kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
