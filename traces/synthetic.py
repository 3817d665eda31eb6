"""Synthetic piecewise-constant traces for link conformance checks (rates, delays, losses drawn
per step from given value sets, seeded)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from traces.format import Trace


def step_trace(step_ms: float, duration_s: float, rates_bps: Sequence[float], delays_ms: Sequence[float] = (10.0,),
               losses: Sequence[float] = (0.0,), seed: int = 0, cycle_delays: bool = False) -> Trace:
    """A trace whose every step draws its rate and loss from the given sets (same for up and
    down, independently drawn) and its delay likewise, or cycles delays when ``cycle_delays``."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * 1000.0 / step_ms))
    cols: dict[str, np.ndarray] = {"t_ms": np.arange(n) * float(step_ms)}
    for d in ("up", "down"):
        cols[f"rate_bps_{d}"] = rng.choice(np.asarray(rates_bps, dtype=float), n)
        if cycle_delays:
            cols[f"delay_ms_{d}"] = np.resize(np.asarray(delays_ms, dtype=float), n)
        else:
            cols[f"delay_ms_{d}"] = rng.choice(np.asarray(delays_ms, dtype=float), n)
        cols[f"loss_{d}"] = rng.choice(np.asarray(losses, dtype=float), n)
    order = ["t_ms", "rate_bps_up", "delay_ms_up", "loss_up", "rate_bps_down", "delay_ms_down", "loss_down"]
    return Trace(pd.DataFrame({c: cols[c] for c in order}),
                 {"source": "synthetic-steps", "step_ms": float(step_ms), "seed": seed, "rate_from": "throughput"})
