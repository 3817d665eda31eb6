"""Benchmark: emulated links against their traces (root; Mininet + tc + the chosen backend).

1. rate, 100 ms steps (goal ±5 % per 100 ms window) and 10 ms steps (goal ±10 %);
2. one-way delay changing every 50 ms with 5 % loss (goals: median ±0.5 ms, p99 ≤ +2 ms on an
   idle machine, loss ±1 pp over ≥ 5 000 probes per direction, no reordering);
3. replay of 10 ms steps for 60 s (goals: no missed steps, p99 step-apply < 1 ms).
Last line: one JSON object. Usage: python benchmarks/link_conformance.py [--backend auto]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from topologies.linkcheck import run_link_check  # noqa: E402
from traces.synthetic import step_trace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--replay-s", type=float, default=60.0)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out: dict = {}
    for step in (100.0, 10.0):
        r = run_link_check(step_trace(step, 10.0, [10e6, 20e6, 40e6], [10.0], seed=1), a.backend, 10.0)
        out["backend"] = r["backend"]
        out[f"rate_error_pct_{int(step)}ms"] = {d: round(r[d]["rate_error_pct"], 3) for d in ("up", "down")}
        print(f"rate, {step:g} ms steps: per-window error up {r['up']['rate_error_pct']:.2f} %, "
              f"down {r['down']['rate_error_pct']:.2f} %")
    r = run_link_check(step_trace(50.0, 8.0, [20e6], [10.0, 30.0], [0.05], seed=2, cycle_delays=True), a.backend, 8.0,
                       probe_pps=1300.0)
    for d in ("up", "down"):
        x = r[d]
        out[f"delay_loss_{d}"] = {k: (round(x[k], 4) if isinstance(x[k], float) else x[k]) for k in
                                  ("owd_median_error_ms", "owd_p99_error_ms", "loss_error_pp", "reordered", "probes_sent")}
        print(f"delay 10/30 ms every 50 ms, loss 5 %, {d}: OWD error median {x['owd_median_error_ms']:+.3f} ms, "
              f"p99 {x['owd_p99_error_ms']:+.3f} ms; loss error {x['loss_error_pp']:+.2f} pp over {x['probes_sent']} "
              f"probes; reordered {x['reordered']}")
    r = run_link_check(step_trace(10.0, a.replay_s, [5e6, 10e6, 20e6, 40e6], [5.0, 15.0], [0.0, 0.01], seed=3),
                       a.backend, a.replay_s)
    out["replay"] = {"duration_s": a.replay_s, "steps": r["steps"], "missed_steps": r["missed_steps"],
                     "replay_realtime": r["replay_realtime"], "step_apply_p99_ms": round(r["step_apply_p99_ms"], 4),
                     "step_apply_median_ms": round(r["step_apply_median_ms"], 4)}
    print(f"replay {a.replay_s:g} s at 10 ms: {r['steps']} steps, {r['missed_steps']} missed, "
          f"apply p99 {r['step_apply_p99_ms']:.3f} ms, real-time replay thread: {r['replay_realtime']}")
    out["step_apply_p99_ms"] = out["replay"]["step_apply_p99_ms"]
    out["missed_steps"] = out["replay"]["missed_steps"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
