"""``wisv models …``: train and evaluate the drafter/target pair."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_train(a: argparse.Namespace) -> int:
    from nodes.training import PairSpec, train_pair

    spec = PairSpec()
    if a.quick:  # a smoke-test size, not the shipped pair
        spec.target.steps, spec.drafter.steps = 30, 30
    which = tuple(a.only) if a.only else ("target", "drafter")
    stats = train_pair(Path(a.output), spec, which)
    sys.stdout.write(json.dumps({k: {x: v[x] for x in ("params", "steps", "seconds", "final_loss")}
                                 for k, v in stats.items()}) + "\n")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from nodes.evaluate import evaluate_pair

    res = evaluate_pair(a.drafter, a.target, n_problems=a.problems, gamma=a.gamma, dtype=a.dtype,
                        gsm8k=a.gsm8k, max_new_tokens=a.max_new_tokens)
    sys.stdout.write(json.dumps(res) + "\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` command group."""
    p = sub.add_parser("models", help="train and evaluate the drafter/target pair")
    ms = p.add_subparsers(dest="models_cmd", required=True)
    t = ms.add_parser("train", help="train the built-in pair on the built-in task (seeded)")
    t.add_argument("-o", "--output", default=str(Path(__file__).resolve().parent / "pretrained" / "default"))
    t.add_argument("--only", action="append", choices=["target", "drafter"])
    t.add_argument("--quick", action="store_true", help="30 steps each (smoke test)")
    t.set_defaults(func=cmd_train)
    e = ms.add_parser("eval", help="accuracy and acceptance of a pair on the task")
    e.add_argument("--drafter")
    e.add_argument("--target")
    e.add_argument("--problems", type=int, default=100)
    e.add_argument("--gamma", type=int, default=4)
    e.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    e.add_argument("--gsm8k", help="GSM8K-style JSONL to score instead of the built-in task")
    e.add_argument("--max-new-tokens", type=int, default=128)
    e.set_defaults(func=cmd_eval)
