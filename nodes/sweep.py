"""Run protocols over one trace segment and summarise them: shared by ``wisv simulate`` (the
analytic link) and, later, the emulated orchestrator. Every protocol restarts the trace at its
beginning, so all protocols see the same channel."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nodes.device import DeviceClient, DeviceConfig
from nodes.edge import EdgeServer
from nodes.evaluate import encode_prompt
from nodes.models import ModelPair
from nodes.simulate import AnalyticLink, SimTransport
from nodes.tasks import ArithTask, score
from nodes.telemetry import RoundLogger
from traces.format import Trace

log = logging.getLogger(__name__)


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


def request_record(result, problem, decode_fn) -> dict:
    """The per-request record of a device result (see :func:`summarise`)."""
    return {"request_id": result.request_id, "ok": result.ok, "error": result.error,
            "correct": bool(result.ok and score(decode_fn(result.tokens), problem)),
            "n_tokens": len(result.tokens), "latency_ms": result.latency_ms, "rounds": len(result.rounds)}


def simulate(pair: ModelPair, trace: Trace, protocols: list[str], n_problems: int = 20, gamma: int = 4,
             out_dir: Path | None = None, seed: int = 0, run_id: str = "sim", max_new_tokens: int = 128,
             split: str = "test", lambda_ms: float | None = None) -> dict[str, ProtocolSummary]:
    """Every protocol over the same trace segment with the analytic link; per-round logs go to
    ``out_dir/rounds-<protocol>.jsonl`` and the summary to ``out_dir/summary.json``."""
    problems = ArithTask().problems(split, n_problems)
    out: dict[str, ProtocolSummary] = {}
    for protocol in protocols:
        edge = EdgeServer(pair.target, pair.eos_token_id, bind=None, head_lambda_ms=lambda_ms)
        cfg = DeviceConfig(protocol=protocol, gamma=gamma, run_id=run_id, seed=seed, device_id="sim-device")
        transport = SimTransport(edge, AnalyticLink(trace, seed=seed), cfg)
        logger = RoundLogger(out_dir / f"rounds-{protocol}.jsonl") if out_dir else None
        client = DeviceClient(pair.drafter, None, cfg, pair.eos_token_id, logger, csi=transport.csi, transport=transport)
        client.hello()
        results = [client.run(encode_prompt(pair, p), max_new_tokens, request_id=p.uid) for p in problems]
        client.close()
        if logger:
            logger.close()
        decode_fn = lambda t: pair.tokenizer.decode(t, skip_special_tokens=True)  # noqa: E731
        requests = [request_record(r, p, decode_fn) for r, p in zip(results, problems)]
        rounds = [{"up_bytes": x.up_bytes, "down_bytes": x.down_bytes} for r in results for x in r.rounds]
        out[protocol] = summarise(protocol, requests, rounds)
        if out_dir:
            (out_dir / f"requests-{protocol}.json").write_text(
                json.dumps({"summary": out[protocol].__dict__, "requests": requests}, indent=1) + "\n")
        log.info("%s: %s", protocol, out[protocol])
    if out_dir:
        (out_dir / "summary.json").write_text(json.dumps({k: v.__dict__ for k, v in out.items()}, indent=2) + "\n")
    return out
