"""Verify time against batch size and draft length: one batched target forward vs one forward per session.

For each batch size B and draft length γ, B sessions (committed contexts of ``--context`` tokens
plus 0..B-1, so the rows are ragged) each verify a block of γ draft tokens: (a) all in one
:meth:`nodes.decoding.BatchedVerifier.score_batch` forward, (b) one batch-1
:meth:`nodes.decoding.Verifier.score` per session after another (today's first-come-first-served
edge). Every timed call is followed by the rollback a rejection would cause (untimed), so each
repeat verifies the same positions. Also a ragged-draft row per B: session i drafts
1 + i mod ``max(--gammas)`` tokens. Reported per cell: median ms of the batched forward and of the
B sequential ones (and the fastest repeat of each: on a shared host the minimum is the steadier
figure), their ratio (> 1: batching is faster), ms per verified token (B·(γ+1) tokens). The order
of the two alternates between repeats; the first repeat is an untimed warm-up.

Usage: python benchmarks/batched_verify.py [--target DIR] [--batch-sizes 1,2,4,8] [--gammas 1,4,8]
       [--context 64] [--repeats 7] [--threads 2] [--device cpu] [--dtype fp32] [--out FILE]
Last line: one JSON object (also written to ``--out``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from nodes.decoding import BatchedVerifier, ScoreRequest, Verifier  # noqa: E402
from nodes.models import DEFAULT_DIR, load_model  # noqa: E402

log = logging.getLogger("benchmarks.batched_verify")


@dataclass
class Cell:
    """One (batch size, draft lengths) measurement; times in ms (medians over the repeats)."""

    batch: int
    gammas: list[int]
    batched_ms: float
    sequential_ms: float
    batched_min_ms: float
    sequential_min_ms: float
    tokens: int

    @property
    def speedup(self) -> float:
        """Sequential time over batched time (> 1: one batched forward is faster)."""
        return self.sequential_ms / self.batched_ms

    def row(self) -> dict:
        """The cell as a JSON-ready dict."""
        return {**asdict(self), "speedup": round(self.speedup, 3),
                "speedup_min": round(self.sequential_min_ms / self.batched_min_ms, 3),
                "batched_ms_per_token": round(self.batched_ms / self.tokens, 4),
                "sequential_ms_per_token": round(self.sequential_ms / self.tokens, 4)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: torch.nn.Module, batch: int, gammas: list[int], context: int, repeats: int, seed: int = 0) -> Cell:
    """Median ms of one batched verify of ``batch`` sessions (session i drafts ``gammas[i]`` tokens
    after ``context + i`` committed ones) and of the same verifies one session at a time."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    seqs = [torch.randint(3, vocab, (context + i,), generator=gen).tolist() for i in range(batch)]
    drafts = [torch.randint(3, vocab, (g,), generator=gen).tolist() for g in gammas]
    max_len = context + batch + max(gammas) + 1
    bv = BatchedVerifier(model, max_batch_size=batch, max_len=max_len)
    slots = [bv.open() for _ in range(batch)]
    refs = [Verifier(model) for _ in range(batch)]
    bv.score_batch([ScoreRequest(s, q, []) for s, q in zip(slots, seqs)])  # prefill the contexts
    for s, q in zip(slots, seqs):
        bv.commit(s, len(q))
    for ref, q in zip(refs, seqs):
        ref.score(q, [])
        ref.commit(len(q))
    def batched() -> None:
        bv.score_batch([ScoreRequest(s, q, d) for s, q, d in zip(slots, seqs, drafts)])

    def sequential() -> None:
        for ref, q, d in zip(refs, seqs, drafts):
            ref.score(q, d)

    times: dict[str, list[float]] = {"batched": [], "sequential": []}
    for r in range(repeats + 1):  # the first repeat warms up; the order alternates
        order = (("batched", batched), ("sequential", sequential))
        for name, fn in order if r % 2 else order[::-1]:
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if r:
                times[name].append((time.perf_counter() - t0) * 1000.0)
        for s, ref, q in zip(slots, refs, seqs):
            bv.commit(s, len(q)), ref.commit(len(q))
    return Cell(batch, list(gammas), statistics.median(times["batched"]), statistics.median(times["sequential"]),
                min(times["batched"]), min(times["sequential"]), sum(g + 1 for g in gammas))


def main(argv: list[str] | None = None) -> dict:
    """Run the grid, print a table and the JSON line; returns the result."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", type=Path, default=DEFAULT_DIR / "target")
    ap.add_argument("--batch-sizes", default="1,2,4,8")
    ap.add_argument("--gammas", default="1,4,8")
    ap.add_argument("--context", type=int, default=64, help="committed tokens per session (row i: + i)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(a.threads)
    model = load_model(a.target, a.device, a.dtype)
    sizes = [int(x) for x in a.batch_sizes.split(",")]
    gammas = [int(x) for x in a.gammas.split(",")]
    load0 = os.getloadavg()
    cells = []
    for b in sizes:
        for g in gammas:
            cells.append(measure(model, b, [g] * b, a.context, a.repeats))
        cells.append(measure(model, b, [1 + i % max(gammas) for i in range(b)], a.context, a.repeats))
    load1 = os.getloadavg()
    print(f"{'B':>3} {'gammas':>24} {'batched ms':>11} {'sequential ms':>14} {'x':>6} {'min x':>6} {'ms/token':>9}")
    for c in cells:
        print(f"{c.batch:3d} {str(c.gammas):>24} {c.batched_ms:11.2f} {c.sequential_ms:14.2f} {c.speedup:6.2f} "
              f"{c.sequential_min_ms / c.batched_min_ms:6.2f} {c.batched_ms / c.tokens:9.3f}")
    device = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else f"cpu ({a.threads} threads)"
    result = {"target": str(a.target), "device": device, "dtype": a.dtype, "context": a.context,
              "repeats": a.repeats, "load_average": [round(load0[0], 2), round(load1[0], 2)],
              "cells": [c.row() for c in cells]}
    line = json.dumps(result)
    if a.out:
        a.out.write_text(line + "\n")
    print(line)
    return result


if __name__ == "__main__":
    main()
