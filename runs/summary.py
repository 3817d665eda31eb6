"""Per-protocol summaries of a run's requests and rounds, shared by the simulated and the emulated
orchestrators, and their fixed-width table."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ProtocolSummary:
    """Per-protocol figures of a run (latency in ms, bytes per token)."""

    protocol: str
    problems: int
    failed: int
    accuracy: float
    tokens: int
    rounds: int
    mean_accepted_len: float
    rounds_per_100_tokens: float
    latency_ms_mean: float
    latency_ms_p50: float
    latency_ms_p95: float
    tokens_per_s: float
    up_bytes_per_token: float
    down_bytes_per_token: float


def format_table(res: dict[str, ProtocolSummary]) -> str:
    """A fixed-width table of protocol summaries, with the latency change against vanilla."""
    lines = [f"{'protocol':>15} {'acc':>6} {'acc.len':>8} {'rounds/100t':>11} {'lat mean ms':>11} {'p95 ms':>8} "
             f"{'tok/s':>7} {'up B/tok':>9} {'Δlat vs vanilla':>15}"]
    base = res.get("vanilla")
    for k, v in res.items():
        d = f"{(v.latency_ms_mean / base.latency_ms_mean - 1) * 100:+.1f} %" if base else "-"
        lines.append(f"{k:>15} {v.accuracy:6.3f} {v.mean_accepted_len:8.2f} {v.rounds_per_100_tokens:11.1f} "
                     f"{v.latency_ms_mean:11.1f} {v.latency_ms_p95:8.1f} {v.tokens_per_s:7.1f} "
                     f"{v.up_bytes_per_token:9.1f} {d:>15}")
    return "\n".join(lines) + "\n"


def summarise(protocol: str, requests: list[dict], rounds: list[dict]) -> ProtocolSummary:
    """Figures of one protocol from per-request records (``ok``, ``correct``, ``n_tokens``,
    ``latency_ms``) and per-round records (``up_bytes``, ``down_bytes``)."""
    toks = sum(r["n_tokens"] for r in requests)
    lat = np.array([r["latency_ms"] for r in requests]) if requests else np.zeros(1)
    up = sum(x["up_bytes"] for x in rounds)
    down = sum(x["down_bytes"] for x in rounds)
    return ProtocolSummary(protocol, len(requests), sum(not r["ok"] for r in requests),
                           sum(bool(r["correct"]) for r in requests) / max(1, len(requests)), toks, len(rounds),
                           toks / max(1, len(rounds)), 100.0 * len(rounds) / max(1, toks), float(lat.mean()),
                           float(np.percentile(lat, 50)), float(np.percentile(lat, 95)),
                           toks / max(1e-9, lat.sum() / 1000.0), up / max(1, toks), down / max(1, toks))
