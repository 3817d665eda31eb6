"""``wisv run``: the default emulated experiment (and, later, experiment specs)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def print_table(res: dict, out) -> None:
    """A fixed-width table of protocol summaries, with the change against vanilla."""
    out.write(f"{'protocol':>15} {'acc':>6} {'acc.len':>8} {'rounds/100t':>11} {'lat mean ms':>11} {'p95 ms':>8} "
              f"{'tok/s':>7} {'up B/tok':>9} {'Δlat vs vanilla':>15}\n")
    base = res.get("vanilla")
    for k, v in res.items():
        d = f"{(v.latency_ms_mean / base.latency_ms_mean - 1) * 100:+.1f} %" if base else "-"
        out.write(f"{k:>15} {v.accuracy:6.3f} {v.mean_accepted_len:8.2f} {v.rounds_per_100_tokens:11.1f} "
                  f"{v.latency_ms_mean:11.1f} {v.latency_ms_p95:8.1f} {v.tokens_per_s:7.1f} {v.up_bytes_per_token:9.1f} "
                  f"{d:>15}\n")


def cmd_run(a: argparse.Namespace) -> int:
    from runs.emulated import EmulatedSpec, run_emulated
    from wisv.demo import DEFAULT_TRACE

    spec = EmulatedSpec(Path(a.trace or DEFAULT_TRACE), tuple(a.protocols.split(",")), a.problems, a.gamma,
                        a.backend, a.seed)
    res = run_emulated(spec, Path(a.output))
    print_table(res, sys.stdout)
    sys.stdout.write(f"logs and summary.json in {a.output}/\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``wisv run``."""
    p = sub.add_parser("run", help="emulated experiment: protocols over a replayed trace in Mininet (root)")
    p.add_argument("--trace")
    p.add_argument("--protocols", default="vanilla,wisv-full,wisv-selective")
    p.add_argument("--problems", type=int, default=20)
    p.add_argument("--gamma", type=int, default=4)
    p.add_argument("--backend", choices=["auto", "netem", "nfqueue"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", default="runs/out/run")
    p.set_defaults(func=cmd_run)
