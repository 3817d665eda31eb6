"""``wisv run`` (an experiment spec, emulated or simulated) and ``wisv report``."""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path


def spec_overrides(a: argparse.Namespace) -> dict:
    """Command-line overrides of spec keys."""
    o: dict = {}
    if getattr(a, "problems", None):
        o["task"] = {"problems": a.problems}
    if getattr(a, "protocols", None):
        o["protocols"] = a.protocols.split(",")
    if getattr(a, "gamma", None):
        o["gamma"] = a.gamma
    if getattr(a, "trace", None):
        o["trace"] = {"file": a.trace}
    return o


def cmd_run(a: argparse.Namespace) -> int:
    from runs.experiment import run_experiment
    from runs.report import markdown, report
    from runs.spec import load_spec

    runs = load_spec(a.spec, spec_overrides(a))
    out = Path(a.output)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        run_experiment(runs, out, "simulate" if a.simulate else "emulate")
    finally:
        if (out / "requests.parquet").exists():
            df, plots = report([out])
            sys.stdout.write(markdown(df))
            sys.stdout.write(f"results, report.md, report.csv and plots/ in {out}/\n")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from runs.report import as_json, markdown, report

    df, plots = report([Path(d) for d in a.run_dirs], Path(a.output) if a.output else None)
    if a.json:
        sys.stdout.write(json.dumps(as_json(df)) + "\n")
    else:
        sys.stdout.write(markdown(df))
        sys.stdout.write("plots: " + ", ".join(str(p) for p in plots) + "\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``wisv run`` and ``wisv report``."""
    p = sub.add_parser("run", help="run an experiment spec (default: the built-in one), emulated (root) or --simulate")
    p.add_argument("spec", nargs="?", help="experiment spec (YAML); none: the built-in default")
    p.add_argument("-o", "--output", default="runs/out/run")
    p.add_argument("--simulate", action="store_true", help="analytic link instead of emulation (no root)")
    p.add_argument("--problems", type=int)
    p.add_argument("--protocols")
    p.add_argument("--gamma", type=int)
    p.add_argument("--trace")
    p.set_defaults(func=cmd_run)
    r = sub.add_parser("report", help="tables (95 % CI, change vs vanilla) and plots of experiment directories")
    r.add_argument("run_dirs", nargs="+")
    r.add_argument("-o", "--output", help="where report.md, report.csv and plots/ go (default: the first directory)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_report)
