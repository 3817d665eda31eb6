"""The user-space delay/loss element of the ``nfqueue`` backend (one per receiving interface).

Runs inside the *receiver's* network namespace, behind
``iptables -t mangle -A PREROUTING -i IF -j NFQUEUE --queue-num Q``: every arriving packet is
held until ``max(arrival + delay, previous release)`` (FIFO, never reorders) or dropped with
probability ``loss``, drawn from a seeded generator so the same packet sequence drops the same
way. Control is a line protocol on standard input (the orchestrator lives in another
namespace, so no socket is needed): ``<delay_ms> <loss>`` applies atomically to packets arriving
after it; ``stats`` answers one JSON line of counters on standard output. A malformed line is
ignored (the link keeps its state). The element exits when its standard input closes, and is
killed by the kernel when the orchestrator that started it dies (``procs.lifecycle``), so a killed
run leaves no holder of the namespace behind. It runs with real-time priority where the host
allows it (:mod:`topologies.realtime`).

Usage (inside the namespace): python -m topologies.delay_element --queue Q [--seed S]
"""
from __future__ import annotations

import argparse
import collections
import random
import sys
import time

from procs.lifecycle import die_with_orchestrator
from topologies.element_io import ElementIO, answer
from topologies.realtime import make_realtime


def run(queue_num: int, seed: int, delay_ms: float, loss: float, max_len: int) -> None:
    """Serve the queue until stdin closes; see the module docstring."""
    rng = random.Random(seed)
    state = {"delay_s": delay_ms / 1000.0, "loss": loss}
    fifo: collections.deque = collections.deque()
    last = [0.0]
    counters = {"seen": 0, "dropped": 0, "released": 0, "bytes_seen": 0, "updates": 0}

    def on_packet(pkt) -> None:
        counters["seen"] += 1
        counters["bytes_seen"] += pkt.get_payload_len()
        if state["loss"] > 0.0 and rng.random() < state["loss"]:
            counters["dropped"] += 1
            pkt.drop()
            return
        release = max(time.monotonic() + state["delay_s"], last[0])
        last[0] = release
        fifo.append((release, pkt))

    io = ElementIO(queue_num, on_packet, max_len=max_len)
    io.ready()
    try:
        while True:
            now = time.monotonic()
            while fifo and fifo[0][0] <= now:
                fifo.popleft()[1].accept()
                counters["released"] += 1
            timeout = max(0.0, fifo[0][0] - now) if fifo else 0.5
            lines = io.wait(timeout)
            if lines is None:
                break  # parent gone
            for text in lines:
                if text == "stats":
                    answer({**counters, "queued": len(fifo), **state})
                    continue
                try:
                    d, l_ = text.split()[:2]
                    d_s, l_p = float(d) / 1000.0, float(l_)
                    if not (d_s >= 0 and 0.0 <= l_p <= 1.0):
                        raise ValueError
                except ValueError:
                    continue  # a malformed update is ignored, the link keeps its state
                state["delay_s"], state["loss"] = d_s, l_p
                counters["updates"] += 1
    finally:
        for _, pkt in fifo:
            pkt.accept()
        io.close()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry (see module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--max-len", type=int, default=8192)
    a = ap.parse_args(argv)
    die_with_orchestrator()
    make_realtime()
    run(a.queue, a.seed, a.delay_ms, a.loss, a.max_len)
    return 0


if __name__ == "__main__":
    sys.exit(main())
