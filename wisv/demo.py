"""``wisv demo``: the README's main job on built-in defaults.

Until the run orchestrator lands it chains the parts that exist, on the project's own shipped
inputs (the pedestrian fading trace and the default drafter/target pair):
1. traces: summary of the shipped trace, a channel model fitted to it, a fresh trace from the fit;
2. decoding: exact greedy speculative decoding against the relaxed baselines (top-2, typical)
   on test problems: accuracy, mean accepted length, rounds;
3. link (as root): the shipped trace replayed on an emulated device–edge link, measured against
   what it intended.
Results and plots go to the output folder (default ``runs/out/demo``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "traces" / "builtin"
DEFAULT_TRACE = BUILTIN_DIR / "pedestrian_3p5ghz_60s.csv"


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
    from nodes.decoding import Drafter, Verifier, make_policy, speculative_generate
    from nodes.evaluate import encode_prompt
    from nodes.models import load_pair
    from nodes.tasks import ArithTask, score

    pair = load_pair()
    problems = ArithTask().problems("test", n_problems)
    d, v = Drafter(pair.drafter), Verifier(pair.target)
    out = {}
    for name, kw in (("exact", {}), ("topk", {"k": 2}), ("typical", {})):
        policy = make_policy(name, **kw)
        tokens = rounds = correct = 0
        for p in problems:
            r = speculative_generate(d, v, policy, encode_prompt(pair, p), gamma, 128, pair.eos_token_id)
            tokens += len(r.tokens)
            rounds += len(r.rounds)
            correct += score(pair.tokenizer.decode(r.tokens, skip_special_tokens=True), p)
        out[name] = {"accuracy": correct / len(problems), "mean_accepted_len": tokens / rounds,
                     "rounds_per_100_tokens": 100.0 * rounds / tokens}
    return out


def link_part(out_dir: Path, duration_s: float) -> dict:
    """The shipped trace on an emulated link (root only)."""
    from topologies.linkcheck import run_link_check
    from traces.format import read_trace

    return run_link_check(read_trace(DEFAULT_TRACE), duration_s=duration_s, run_dir=out_dir / "link")


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
    if os.geteuid() == 0 and not a.no_link:
        link = link_part(out, a.link_seconds)
        result["link"] = link
        sys.stdout.write(f"link ({link['backend']}): {link['steps']} steps, {link['missed_steps']} missed; " + "; ".join(
            f"{d} rate error {link[d]['rate_error_pct']:.1f} %, OWD error p99 {link[d]['owd_p99_error_ms']:+.2f} ms"
            for d in ("up", "down")) + "\n")
    else:
        sys.stdout.write("link: skipped (needs root)\n")
    (out / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(f"results in {out}/ (demo.json, default_trace.png, refit_trace.png)\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``wisv demo``."""
    p = sub.add_parser("demo", help="run the main job on the built-in defaults")
    p.add_argument("-o", "--output", default="runs/out/demo")
    p.add_argument("--problems", type=int, default=40)
    p.add_argument("--link-seconds", type=float, default=8.0)
    p.add_argument("--no-link", action="store_true")
    p.set_defaults(func=cmd_demo)
