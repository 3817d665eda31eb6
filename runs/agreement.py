"""Do emulation and simulation agree? One spec, run both ways, compared:

* rounds per protocol (identical for exact greedy protocols: same decisions, same tokens);
* mean request latency per protocol (relative difference);
* per emulated round: measured wall time against draft + verify + the link time the analytic
  model predicts from the trace rows in force (expected losses), i.e. does the emulated link
  cost what the trace says it should.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from runs.experiment import run_experiment
from runs.spec import load_spec

EXACT = ("vanilla", "ar-edge")


def predicted_round_ms(rounds: pd.DataFrame, trace_path: Path) -> np.ndarray:
    """draft + verify + predicted link time (both directions, every exchange) per round."""
    from runs.simulate import AnalyticLink
    from traces.format import read_trace

    link = AnalyticLink(read_trace(trace_path))
    t0 = rounds.groupby("protocol")["t_start"].transform("min")
    out = []
    for r, start in zip(rounds.itertuples(), t0):
        # Each round trip carries a share of the round's bytes; model them as equal exchanges.
        n = max(1, int(r.round_trips))
        t = (r.t_start - start) * 1000.0 + r.draft_ms
        link_ms = sum(link.transfer_ms(t, r.up_bytes / n, "up", expected=True) +
                      link.transfer_ms(t, r.down_bytes / n, "down", expected=True) for _ in range(n))
        out.append(r.draft_ms + r.verify_ms + link_ms)
    return np.array(out)


def check_agreement(out_dir: Path, overrides: dict) -> dict:
    """Run the spec (defaults + ``overrides``) emulated and simulated; returns the comparison."""
    runs = load_spec(None, overrides)
    res = {m: run_experiment(runs, out_dir / m, m, progress=False) for m in ("emulate", "simulate")}
    name = runs[0].name
    emu, sim = res["emulate"][name][0], res["simulate"][name][0]
    out: dict = {"protocols": {}}
    rounds = pd.read_parquet(out_dir / "emulate" / "rounds.parquet")
    trace = out_dir / "emulate" / name / "rep0" / "trace.parquet"
    rounds = rounds[rounds["rep"] == 0]
    pred = predicted_round_ms(rounds, trace)
    err = rounds["wall_ms"].to_numpy() - pred
    for p in emu:
        e, s = emu[p], sim[p]
        sel = (rounds["protocol"] == p).to_numpy()
        out["protocols"][p] = {
            "rounds_emulated": e["rounds"], "rounds_simulated": s["rounds"],
            "rounds_identical": e["rounds"] == s["rounds"],
            "latency_ms_emulated": e["latency_ms_mean"], "latency_ms_simulated": s["latency_ms_mean"],
            "latency_rel_diff": e["latency_ms_mean"] / s["latency_ms_mean"] - 1.0,
            "round_wall_minus_predicted_ms_median": float(np.median(err[sel])),
            "round_wall_minus_predicted_ms_p90": float(np.percentile(err[sel], 90)),
        }
    out["exact_protocols_identical"] = all(out["protocols"][p]["rounds_identical"] for p in out["protocols"] if p in EXACT)
    (out_dir / "agreement.json").write_text(json.dumps(out, indent=2) + "\n")
    return out
