"""Benchmark: one spec emulated (root) and simulated, compared (see runs/agreement.py).
Stated tolerances: rounds identical for exact protocols; per-round wall time within 2 ms
(median) of draft + verify + the link time predicted from the trace; mean request latency within
25 %. Last line: one JSON object. Usage: python benchmarks/emulation_agreement.py [--problems 10]"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runs.agreement import check_agreement  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=10)
    ap.add_argument("--protocols", default="vanilla,wisv-full,wisv-selective")
    a = ap.parse_args()
    r = check_agreement(Path(tempfile.mkdtemp(prefix="wisv-agree-")),
                        {"name": "agree", "protocols": a.protocols.split(","), "task": {"problems": a.problems}})
    for p, v in r["protocols"].items():
        print(f"{p:>15}: rounds emulated {v['rounds_emulated']} / simulated {v['rounds_simulated']}; latency "
              f"{v['latency_ms_emulated']:.1f} vs {v['latency_ms_simulated']:.1f} ms ({v['latency_rel_diff'] * 100:+.1f} %); "
              f"round wall − predicted median {v['round_wall_minus_predicted_ms_median']:+.2f} ms, "
              f"p90 {v['round_wall_minus_predicted_ms_p90']:+.2f} ms")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
