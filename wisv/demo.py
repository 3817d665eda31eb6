"""``wisv demo``: the README's main job on built-in defaults.

On the project's own shipped inputs (the pedestrian fading trace, the default drafter/target
pair and its head):
1. traces: summary of the shipped trace, a channel model fitted to it, a fresh trace from the fit;
2. decoding: exact greedy speculative decoding against the relaxed baselines (top-2, typical)
   on test problems, in process: accuracy, mean accepted length, rounds;
3. the protocols compared end to end: as root, an emulated run (edge and device processes in
   Mininet hosts, ZeroMQ over a link replaying the trace); otherwise ``wisv simulate``'s
   analytic link, and the demo says so.
Results and plots go to the output folder (default ``runs/out/demo``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from traces.defaults import DEFAULT_TRACE

log = logging.getLogger(__name__)


def trace_part(out_dir: Path) -> dict:
    """Summary, fit and refit of the shipped trace, with plots."""
    from traces.fit import fit_channel
    from traces.format import read_trace, write_trace
    from traces.ops import from_channel, summary
    from traces.plot import plot_trace

    trace = read_trace(DEFAULT_TRACE)
    spec, report = fit_channel(trace)
    refit = from_channel(spec)
    write_trace(refit, out_dir / "refit.parquet")
    plot_trace(trace, out_dir / "default_trace.png", title=DEFAULT_TRACE.name)
    plot_trace(refit, out_dir / "refit_trace.png", title="generated from the fitted model")
    return {"trace": DEFAULT_TRACE.name, "summary": summary(trace), "fit": report, "refit_summary": summary(refit)}


def decoding_part(n_problems: int, gamma: int = 4) -> dict:
    """Accuracy and accepted length of each verification policy on ``n_problems`` test problems."""
    from nodes.decoding import Drafter, Verifier, speculative_generate
    from nodes.protocols import PROTOCOLS
    from nodes.evaluate import encode_prompt
    from nodes.models import load_pair
    from nodes.tasks import ArithTask, score

    pair = load_pair()
    problems = ArithTask().problems("test", n_problems)
    d, v = Drafter(pair.drafter), Verifier(pair.target)
    out = {}
    for name in ("vanilla", "topk", "typical"):  # the non-learned protocols, in one process
        policy = PROTOCOLS[name].edge_policy(0.0)
        tokens = rounds = correct = 0
        for p in problems:
            r = speculative_generate(d, v, policy, encode_prompt(pair, p), gamma, 128, pair.eos_token_id)
            tokens += len(r.tokens)
            rounds += len(r.rounds)
            correct += score(pair.tokenizer.decode(r.tokens, skip_special_tokens=True), p)
        out[name] = {"accuracy": correct / len(problems), "mean_accepted_len": tokens / rounds,
                     "rounds_per_100_tokens": 100.0 * rounds / tokens}
    return out


def protocols_part(out_dir: Path, n_problems: int, emulate: bool) -> tuple[str, "object"]:
    """The built-in experiment (the registry's default comparison over the shipped trace),
    emulated or simulated, with its report; returns (mode, report table)."""
    from runs.experiment import run_experiment
    from runs.report import report
    from runs.spec import load_spec

    mode = "emulate" if emulate else "simulate"
    run_dir = out_dir / "run"
    run_experiment(load_spec(None, {"name": "default", "task": {"problems": n_problems}}), run_dir, mode, progress=False)
    df, _ = report([run_dir])
    return mode + "d", df


def cmd_demo(a: argparse.Namespace) -> int:
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"trace": trace_part(out)}
    for dname in ("up", "down"):
        s, r = result["trace"]["summary"][dname], result["trace"]["refit_summary"][dname]
        sys.stdout.write(f"trace {dname:>4}: mean rate {s['rate_bps']['mean'] / 1e6:6.2f} Mbit/s, SNR "
                         f"{s['snr_db']['mean']:5.1f} dB | fitted model regenerates {r['rate_bps']['mean'] / 1e6:6.2f} Mbit/s\n")
    result["decoding"] = decoding_part(a.problems)
    for name, r in result["decoding"].items():
        sys.stdout.write(f"policy {name:>8}: accuracy {r['accuracy']:.3f}, mean accepted length "
                         f"{r['mean_accepted_len']:.2f}, rounds per 100 tokens {r['rounds_per_100_tokens']:.1f}\n")
    from runs.report import as_json, markdown

    emulate = os.geteuid() == 0 and not a.simulate
    how, df = protocols_part(out, a.problems, emulate)
    result["protocols"] = {"mode": how, **as_json(df)}
    sys.stdout.write(f"protocols over {DEFAULT_TRACE.name} ({how}"
                     f"{'' if emulate else '; emulation needs root'}), {a.problems} problems each:\n")
    sys.stdout.write(markdown(df))
    (out / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(f"results in {out}/ (demo.json, trace plots; run/report.md, run/plots/, per-round logs)\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``wisv demo``."""
    p = sub.add_parser("demo", help="run the main job on the built-in defaults")
    p.add_argument("-o", "--output", default="runs/out/demo", help="where the demo's results go (replaced)")
    p.add_argument("--problems", type=int, default=20, help="test problems per protocol")
    p.add_argument("--simulate", action="store_true", help="use the analytic link even as root")
    p.set_defaults(func=cmd_demo)
