"""What packet capture costs the measurement: the default experiment (emulated, root) run with
and without ``capture:`` side by side in one invocation — pairs in ABBA order (off, on, on,
off, …) so a slow drift of the machine's load falls on both — and the request latency compared
per problem (same problems, same trace, same seed).

Prints the ratio of mean latency with capture to without (95 % bootstrap interval over paired
requests), per protocol, and beside it the same ratio between two runs without capture (the
run-to-run noise, with two pairs or more); how often a request decoded the same (rounds and
tokens) with and without capture, and between two runs without (the WISV protocols decide by the
CSI in force when a round happens, so timing alone changes some of their rounds; vanilla must
agree always); the packet accounting of the captured runs (``wisv pcap``: bytes against the
round logs, one-way delay against the trace); the load average it ran under; one JSON object last.

Usage: sudo .venv/bin/python benchmarks/capture_overhead.py [--pairs 2] [--problems 20] [-o DIR]
       .venv/bin/python benchmarks/capture_overhead.py --from-dir DIR   # only the figures of an earlier run
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LIMIT_PCT = 2.0  # capture must not change the latency it measures by more than this


def run_once(out: Path, capture: bool, problems: int | None) -> pd.DataFrame:
    """The default experiment into ``out`` with capture on or off; its requests table."""
    from runs.experiment import run_experiment
    from runs.spec import load_spec

    overrides: dict = {"capture": {"enabled": capture}}
    if problems:
        overrides["task"] = {"problems": problems}
    run_experiment(load_spec(None, overrides), out, "emulate", progress=False)
    return pd.read_parquet(out / "requests.parquet")


def paired(off: list[pd.DataFrame], on: list[pd.DataFrame]) -> pd.DataFrame:
    """Requests completed in both runs of each (off, on) pair: latency, rounds and tokens side by side."""
    keys = ["protocol", "request_id"]
    cols = keys + ["latency_ms", "rounds", "n_tokens"]
    parts = []
    for i, (a, b) in enumerate(zip(off, on)):
        m = a[a["ok"]][cols].merge(b[b["ok"]][cols], on=keys, suffixes=("_off", "_on"))
        parts.append(m.assign(pair=i))
    return pd.concat(parts, ignore_index=True)


def same_decoding(p: pd.DataFrame) -> dict[str, float]:
    """Per protocol, the fraction of paired requests with the same rounds and tokens."""
    same = (p["rounds_on"] == p["rounds_off"]) & (p["n_tokens_on"] == p["n_tokens_off"])
    return {proto: round(float(v), 3) for proto, v in same.groupby(p["protocol"]).mean().items()}


def ratio_ci(p: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean latency with capture over mean latency without, and its 95 % percentile bootstrap
    interval over paired requests."""
    on, off = p["latency_ms_on"].to_numpy(float), p["latency_ms_off"].to_numpy(float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(p), size=(n_boot, len(p)))
    boots = on[idx].mean(axis=1) / off[idx].mean(axis=1)
    return float(on.mean() / off.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=2, help="off/on pairs, in ABBA order")
    ap.add_argument("--problems", type=int, help="problems per protocol (default: the default spec's)")
    ap.add_argument("-o", "--output", help="where the runs go (default: runs/out/bench-capture-<time>)")
    ap.add_argument("--from-dir", help="only compute the figures of the runs an earlier invocation left in this directory")
    a = ap.parse_args(argv)
    if os.geteuid() != 0 and not a.from_dir:
        print(json.dumps({"skipped": "emulation needs root"}))
        return 0
    from runs.pcap import analyse_run, combine, find_captured_runs

    if a.from_dir:
        out = Path(a.from_dir)
        a.pairs = len(list(out.glob("on-*")))
        load_before = load_after = None
    else:
        out = Path(a.output or REPO / "runs" / "out" / f"bench-capture-{time.strftime('%Y%m%d-%H%M%S')}")
        load_before = os.getloadavg()
    t0 = time.monotonic()
    off, on = [], []
    for i in range(a.pairs):
        for capture in ((False, True) if i % 2 == 0 else (True, False)):
            mode = "on" if capture else "off"
            if a.from_dir:
                (on if capture else off).append(pd.read_parquet(out / f"{mode}-{i}" / "requests.parquet"))
                continue
            print(f"pair {i}: capture {mode}", flush=True)
            (on if capture else off).append(run_once(out / f"{mode}-{i}", capture, a.problems))
    load_after = load_after if a.from_dir else os.getloadavg()
    p = paired(off, on)
    ratio, lo, hi = ratio_ci(p)
    per_protocol = {proto: round(ratio_ci(g)[0], 4) for proto, g in p.groupby("protocol")}
    noise = paired(off[:1], off[1:2]) if len(off) > 1 else None  # two runs without capture
    accounting = combine([analyse_run(d) for i in range(a.pairs) for d in find_captured_runs(out / f"on-{i}")])
    res = {"latency_ratio": round(ratio, 4), "ci95": [round(lo, 4), round(hi, 4)],
           "change_pct": round((ratio - 1) * 100, 2), "within_2pct": abs(ratio - 1) * 100 <= LIMIT_PCT,
           "per_protocol": per_protocol, "requests_paired": int(len(p)), "pairs": a.pairs,
           "off_vs_off_latency_ratio": None if noise is None else round(ratio_ci(noise)[0], 4),
           "same_decoding_on_vs_off": same_decoding(p),
           "same_decoding_off_vs_off": None if noise is None else same_decoding(noise),
           "latency_ms_mean_off": round(float(p["latency_ms_off"].mean()), 1),
           "latency_ms_mean_on": round(float(p["latency_ms_on"].mean()), 1),
           "bytes_error_pct": accounting.get("bytes_error_pct"),
           "owd_median_error_ms": accounting.get("owd_median_error_ms"), "owd_messages": accounting.get("owd_messages"),
           "loadavg_before": load_before and [round(x, 2) for x in load_before],
           "loadavg_after": load_after and [round(x, 2) for x in load_after],
           "cpus": os.cpu_count(), "seconds": round(time.monotonic() - t0, 1), "output": str(out)}
    print(f"latency with capture / without: {ratio:.4f} [{lo:.4f}, {hi:.4f}] over {len(p)} paired requests "
          f"({res['change_pct']:+.2f} %; limit ±{LIMIT_PCT:g} %); per protocol {per_protocol}")
    print(f"two runs without capture: latency ratio {res['off_vs_off_latency_ratio']} (run-to-run noise)")
    print(f"same rounds and tokens, with vs without capture: {res['same_decoding_on_vs_off']}; two runs without: "
          f"{res['same_decoding_off_vs_off']}")
    print(f"packets vs round logs: {res['bytes_error_pct']} % bytes, one-way delay median error "
          f"{res['owd_median_error_ms']} ms over {res['owd_messages']} messages")
    print(f"load average before {res['loadavg_before']}, after {res['loadavg_after']} on {res['cpus']} CPUs")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
