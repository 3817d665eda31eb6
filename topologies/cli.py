"""``wisv link …``: check an emulated link against its trace; show what a topology declares;
clean up after killed runs."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from topologies.shapers import BACKEND_CHOICES
from topologies.topo import TOPOLOGIES


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


def cmd_layout(a: argparse.Namespace) -> int:
    from dataclasses import asdict

    from topologies.topo import topology_from_spec

    topo = topology_from_spec({"kind": a.kind, "n_devices": a.n_devices, "backhaul_rate_bps": a.backhaul_rate_bps,
                               "cross_traffic_bps": a.cross_traffic_bps})
    lay = topo.declare(a.seed)
    if a.json:
        sys.stdout.write(json.dumps(asdict(lay), default=str) + "\n")
        return 0
    w = sys.stdout.write
    w(f"{topo.kind}: hosts {', '.join(f'{h.name} ({h.role} {h.ip})' for h in lay.hosts)}\n")
    if lay.switches:
        w(f"  switches {', '.join(s.name for s in lay.switches)}\n")
    w(f"  links {', '.join(f'{ln.a}-{ln.b}' for ln in lay.links)}\n")
    for s in lay.shaped:
        match = (f" to {s.match_dst}" if s.match_dst else "") + (f" from {s.match_src}" if s.match_src else "")
        w(f"  {s.name:<12} {s.egress.node}->{s.egress.peer} .. {s.ingress.node}<-{s.ingress.peer}  {s.source}  "
          f"seed {s.seed}  devices {list(s.devices)}{' shared' if s.shared else ''}{match}\n")
    if lay.cross_traffic is not None:
        w(f"  cross traffic {lay.cross_traffic.rate_bps:g} bit/s ({lay.cross_traffic.tool}) from "
          f"{lay.cross.name} to {lay.edge.name}\n")
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
    t = ls.add_parser("layout", help="print what a topology declares: hosts, links, shaped links with their "
                                     "traces, seeds and matches (builds nothing)")
    t.add_argument("--kind", choices=list(TOPOLOGIES), default="device-edge", help="topology (spec topology.kind)")
    t.add_argument("--n-devices", type=int, help="devices (star)")
    t.add_argument("--backhaul-rate-bps", type=float, help="shaped AP -> edge port, bit/s (star)")
    t.add_argument("--cross-traffic-bps", type=float, help="UDP cross traffic to the edge, bit/s (star)")
    t.add_argument("--seed", type=int, default=0, help="the run's seed (links' loss seeds derive from it)")
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.set_defaults(func=cmd_layout)
    k = ls.add_parser("cleanup", help="remove what killed runs left behind (only their own entries)")
    k.set_defaults(func=cmd_cleanup)
