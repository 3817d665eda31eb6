"""Benchmark: label mining round by round (the reference definition) against batched, side by side.

Both miners label the same first training problems of the same pair: :func:`nodes.mining.mine_problem`
(one problem at a time, the decoding core's rounds, one substituted rollout per mismatch) and
:func:`nodes.mining.mine_batch` (batched greedy outputs, one teacher-forced forward per model,
rollouts ``--batch-size`` per forward). The labels must agree (it fails when more than one
problem's labels differ: padded batches may break an fp32 near-tie the other way, as
``tests/test_mining.py`` allows); it prints wall and CPU seconds per label for each, and their ratio, measured in one
run with the load average at start and end (the machines are shared: compare ratios, not seconds).

Usage: python benchmarks/mining.py [--problems 60] [--gamma 4] [--batch-size 16] [--threads 2]
           [--drafter D --target T] [--max-new-tokens 128]
Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from nodes.config import TaskConfig
from nodes.evaluate import encode_prompt
from nodes.mining import mine_batch, mine_problem
from nodes.models import load_pair


def _timed(fn) -> tuple[object, float, float]:
    """(result, wall s, CPU s of this process) of ``fn()``."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def _key(rows: list[dict]) -> list[tuple]:
    return [(r["position"], r["draft_token"], r["target_token"], r["important"]) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=60, help="first training problems to mine")
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per forward (batched miner)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--drafter", help="drafter folder (default: the shipped pair)")
    ap.add_argument("--target", help="target folder (default: the shipped pair)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pair = load_pair(a.drafter, a.target)
    judge = TaskConfig(split="train").make()
    problems = judge.problems("train", a.problems, 0)
    prompts = [encode_prompt(pair, p) for p in problems]
    load0 = os.getloadavg()[0]
    with torch.inference_mode():
        seq, seq_wall, seq_cpu = _timed(lambda: [mine_problem(pair, pr, p, a.gamma, a.max_new_tokens, judge)
                                                 for pr, p in zip(prompts, problems)])
        bat, bat_wall, bat_cpu = _timed(lambda: mine_batch(pair, prompts, problems, a.gamma, a.max_new_tokens, judge,
                                                           a.batch_size))
    load1 = os.getloadavg()[0]
    labels = sum(len(r) for r in seq)
    differing = sum(_key(x) != _key(y) for x, y in zip(seq, bat))
    out = {
        "problems": a.problems, "gamma": a.gamma, "batch_size": a.batch_size, "threads": a.threads,
        "labels": labels, "labels_batched": sum(len(r) for r in bat), "problems_with_other_labels": differing,
        "round_by_round_s_per_label": round(seq_wall / max(1, labels), 4),
        "batched_s_per_label": round(bat_wall / max(1, labels), 4),
        "round_by_round_cpu_s_per_label": round(seq_cpu / max(1, labels), 4),
        "batched_cpu_s_per_label": round(bat_cpu / max(1, labels), 4),
        "speedup_wall": round(seq_wall / bat_wall, 2), "speedup_cpu": round(seq_cpu / bat_cpu, 2),
        "load_avg_1min": [round(load0, 2), round(load1, 2)],
    }
    print(f"{a.problems} problems, γ {a.gamma}, {labels} labels ({differing} problems labelled otherwise by the batched miner), {a.threads} threads, "
          f"load {load0:.2f} → {load1:.2f}")
    print(f"round by round: {out['round_by_round_s_per_label']:.4f} s/label wall, "
          f"{out['round_by_round_cpu_s_per_label']:.4f} CPU s/label")
    print(f"batched ({a.batch_size} per forward): {out['batched_s_per_label']:.4f} s/label wall, "
          f"{out['batched_cpu_s_per_label']:.4f} CPU s/label")
    print(f"batched is ×{out['speedup_wall']} faster (wall), ×{out['speedup_cpu']} (CPU)")
    print(json.dumps(out))
    if differing > 1:
        raise SystemExit(f"the batched labels differ from the round-by-round definition on {differing} problems")


if __name__ == "__main__":
    main()
