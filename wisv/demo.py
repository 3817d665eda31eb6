"""``wisv demo``: the README's main job on built-in defaults.

Today it runs the trace pipeline end to end on the project's own shipped fading trace: read it,
summarise it, fit a channel model to it, generate a fresh trace from the fit, and plot both.
Later parts (emulated links, nodes, runs) extend this job.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "traces" / "builtin"
DEFAULT_TRACE = BUILTIN_DIR / "pedestrian_3p5ghz_60s.csv"


def run_demo(out_dir: Path) -> dict:
    """Run the default pipeline into ``out_dir``; returns the summary dict it also writes."""
    from traces.fit import fit_channel
    from traces.format import read_trace, write_trace
    from traces.ops import from_channel, summary
    from traces.plot import plot_trace

    out_dir.mkdir(parents=True, exist_ok=True)
    trace = read_trace(DEFAULT_TRACE)
    log.info("default trace %s: %d rows, %.0f s", DEFAULT_TRACE.name, len(trace), trace.duration_ms / 1000)
    spec, report = fit_channel(trace)
    refit = from_channel(spec)
    write_trace(refit, out_dir / "refit.parquet")
    plot_trace(trace, out_dir / "default_trace.png", title=DEFAULT_TRACE.name)
    plot_trace(refit, out_dir / "refit_trace.png", title="generated from the fitted model")
    result = {"trace": str(DEFAULT_TRACE.name), "summary": summary(trace), "fit": report,
              "refit_summary": summary(refit)}
    (out_dir / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def cmd_demo(a: argparse.Namespace) -> int:
    out = Path(a.output)
    result = run_demo(out)
    for d in ("up", "down"):
        s, r = result["summary"][d], result["refit_summary"][d]
        sys.stdout.write(f"{d:>4}: recorded mean rate {s['rate_bps']['mean'] / 1e6:7.2f} Mbit/s, "
                         f"SNR {s['snr_db']['mean']:5.1f} dB | refit {r['rate_bps']['mean'] / 1e6:7.2f} Mbit/s\n")
    sys.stdout.write(f"results in {out}/ (demo.json, default_trace.png, refit_trace.png)\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``wisv demo``."""
    p = sub.add_parser("demo", help="run the main job on the built-in defaults")
    p.add_argument("-o", "--output", default="runs/out/demo")
    p.set_defaults(func=cmd_demo)
