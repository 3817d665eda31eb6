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
    """A fixed-width table of protocol summaries. The latency change against vanilla is shown
    only when neither protocol had failures (both then ran the same problems); ``wisv report``
    gives paired ratios with intervals."""
    lines = [f"{'protocol':>15} {'n':>4} {'failed':>6} {'acc':>6} {'acc.len':>8} {'rounds/100t':>11} "
             f"{'lat mean ms':>11} {'p95 ms':>8} {'tok/s':>7} {'up B/tok':>9} {'Δlat vs vanilla':>15}"]
    base = res.get("vanilla")
    for k, v in res.items():
        same = base is not None and not base.failed and not v.failed and base.problems == v.problems
        d = f"{(v.latency_ms_mean / base.latency_ms_mean - 1) * 100:+.1f} %" if same else "-"
        lines.append(f"{k + (' ⚠' if v.failed else ''):>15} {v.problems:4d} {v.failed:6d} {v.accuracy:6.3f} "
                     f"{v.mean_accepted_len:8.2f} {v.rounds_per_100_tokens:11.1f} {v.latency_ms_mean:11.1f} "
                     f"{v.latency_ms_p95:8.1f} {v.tokens_per_s:7.1f} {v.up_bytes_per_token:9.1f} {d:>15}")
    if any(v.failed for v in res.values()):
        lines.append("⚠ failed requests are left out of latency and token figures and count as wrong")
    return "\n".join(lines) + "\n"


def figures(tokens: int, rounds: int, latencies_ms, up_bytes: float, down_bytes: float) -> dict:
    """The per-protocol figures of completed requests: ``tokens`` produced in ``rounds`` rounds,
    request latencies (ms), application bytes up and down — accepted length (tokens per round,
    counting the bonus token), rounds per 100 tokens, latency mean/p50/p95 (ms), tokens/s, bytes
    per token. Shared by the run summaries and ``wisv report``."""
    lat = np.asarray(latencies_ms, dtype=float) if len(latencies_ms) else np.full(1, np.nan)
    return {"mean_accepted_len": tokens / max(1, rounds), "rounds_per_100_tokens": 100.0 * rounds / max(1, tokens),
            "latency_ms_mean": float(np.mean(lat)), "latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p95": float(np.percentile(lat, 95)),
            "tokens_per_s": tokens / max(1e-9, np.nansum(lat) / 1000.0),
            "up_bytes_per_token": up_bytes / max(1, tokens), "down_bytes_per_token": down_bytes / max(1, tokens)}


def summarise(protocol: str, requests: list[dict], rounds: list[dict]) -> ProtocolSummary:
    """Figures of one protocol from per-request records (``ok``, ``correct``, ``n_tokens``,
    ``latency_ms``, ``request_id``) and per-round records (``up_bytes``, ``down_bytes``,
    ``request_id``): latency, tokens, rounds and bytes over the completed requests only (a
    failed request is counted in ``failed``, never as speed); accuracy over all (failed = wrong)."""
    ok = [r for r in requests if r["ok"]]
    done = {r.get("request_id") for r in ok}
    rounds = [x for x in rounds if x.get("request_id", None) in done or "request_id" not in x]
    toks = sum(r["n_tokens"] for r in ok)
    return ProtocolSummary(protocol, len(requests), len(requests) - len(ok),
                           sum(bool(r["correct"]) for r in requests) / max(1, len(requests)), toks, len(rounds),
                           **figures(toks, len(rounds), [r["latency_ms"] for r in ok],
                                     sum(x["up_bytes"] for x in rounds), sum(x["down_bytes"] for x in rounds)))
