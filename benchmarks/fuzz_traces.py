"""Fuzz every trace importer and the canonical CSV reader with hypothesis (issue 12): arbitrary
bytes, mutated valid files and rows of hostile values. Each case must import to a valid trace or
raise TraceFormatError naming the file; anything else is a crash. Files live in a temporary
folder. Usage: ``python benchmarks/fuzz_traces.py [--cases N] [--seed S]`` (N per importer,
default 10 000). Last line: one JSON object {"cases", "clear_errors", "ok", "crashes",
"per_importer", "crash_examples"}."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from traces.fuzzing import TARGETS, FuzzCrash, case_folder, file_strategy, run_case  # noqa: E402


def fuzz_target(name: str, cases: int, rng_seed: int, root: Path) -> dict:
    """Run ``cases`` generated inputs through one target; counts of each outcome (no shrinking:
    every crash is counted, the first few kept as examples)."""
    target, folder = TARGETS[name], case_folder(root, name)
    counts = {"cases": 0, "ok": 0, "clear_errors": 0, "crashes": 0}
    examples: list[dict] = []

    @seed(rng_seed)
    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(data=file_strategy(name))
    def one(data: bytes) -> None:
        counts["cases"] += 1
        try:
            outcome = run_case(target, data, folder)
        except FuzzCrash as e:
            counts["crashes"] += 1
            if len(examples) < 5:
                examples.append({"importer": name, "error": str(e)[:300], "input": data[:200].hex()})
            return
        counts["clear_errors" if outcome == "clear_error" else "ok"] += 1

    t0 = time.perf_counter()
    one()
    counts["seconds"] = round(time.perf_counter() - t0, 1)
    counts["examples"] = examples
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=10_000, help="generated inputs per importer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", choices=sorted(TARGETS), help="fuzz only these importers")
    a = ap.parse_args()
    per: dict[str, dict] = {}
    examples: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="wisv-fuzz-") as d:
        for name in a.only or sorted(TARGETS):
            per[name] = fuzz_target(name, a.cases, a.seed, Path(d))
            examples += per[name].pop("examples")
            c = per[name]
            print(f"{name:>14}: {c['cases']} cases, {c['ok']} ok, {c['clear_errors']} clear errors, "
                  f"{c['crashes']} crashes ({c['seconds']} s)", flush=True)
    total = {k: sum(c[k] for c in per.values()) for k in ("cases", "ok", "clear_errors", "crashes")}
    print(json.dumps({**total, "per_importer": per, "crash_examples": examples}))


if __name__ == "__main__":
    main()
