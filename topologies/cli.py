"""``wisv link …``: check an emulated link against its trace; clean up after killed runs."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from topologies.shapers import BACKEND_CHOICES


def cmd_check(a: argparse.Namespace) -> int:
    from topologies.linkcheck import run_link_check
    from topologies.shapers import QueueLimit
    from traces.format import read_trace

    trace = read_trace(a.trace)
    queue = QueueLimit(packets=None, bytes=a.queue_bytes) if a.queue_bytes else QueueLimit(packets=a.queue_packets)
    res = run_link_check(trace, backend=a.backend, duration_s=a.duration, seed=a.seed,
                         run_dir=Path(a.run_dir) if a.run_dir else None, queue=queue)
    if a.json:
        sys.stdout.write(json.dumps(res) + "\n")
        return 0
    sys.stdout.write(f"backend {res['backend']}: {res['steps']} steps applied, {res['missed_steps']} missed, "
                     f"apply p99 {res['step_apply_p99_ms']:.3f} ms"
                     f"{'' if res['replay_realtime'] else ' (replay thread without real-time priority)'}\n")
    for d in ("up", "down"):
        r = res[d]
        sys.stdout.write(f"  {d:>4}: rate error {r['rate_error_pct']:5.2f} %  OWD error median {r['owd_median_error_ms']:+.3f} ms "
                         f"p99 {r['owd_p99_error_ms']:+.3f} ms  loss {r['loss_measured'] * 100:.2f} % vs "
                         f"{r['loss_intended'] * 100:.2f} % intended  reordered {r['reordered']}\n")
    return 0


def cmd_cleanup(a: argparse.Namespace) -> int:
    from topologies.net import cleanup_stale

    removed = cleanup_stale()
    sys.stdout.write("".join(f"removed: {r}\n" for r in removed) if removed else "nothing left behind by killed runs\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``link`` command group."""
    p = sub.add_parser("link", help="emulated links: check against a trace, clean up")
    ls = p.add_subparsers(dest="link_cmd", required=True)
    c = ls.add_parser("check", help="replay a trace on DeviceEdge and measure the link against it (root)")
    c.add_argument("--trace", required=True, help="trace file to replay")
    c.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help="shaping backend")
    c.add_argument("--duration", type=float, default=10.0, help="seconds")
    c.add_argument("--seed", type=int, default=0, help="seed of the emulated loss")
    c.add_argument("--queue-packets", type=int, default=1000, help="queue bound, packets")
    c.add_argument("--queue-bytes", type=int, help="queue bound in bytes instead")
    c.add_argument("--run-dir", help="where probe logs go (default: a temporary directory)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=cmd_check)
    k = ls.add_parser("cleanup", help="remove what killed runs left behind (only their own entries)")
    k.set_defaults(func=cmd_cleanup)
