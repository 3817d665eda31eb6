"""Evaluate a drafter/target pair on a task: accuracy of each model and of speculative decoding
under every answer filter of the task (the deciding one named), exact-match acceptance per draft
position, greedy exactness, mean accepted length, tokens per request and why requests ended.
Every decoding stops at the task's stop rules (:mod:`nodes.decoding.stopping`)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from nodes.decoding import Drafter, ExactMatch, Verifier, autoregressive_generate, speculative_generate
from nodes.decoding.lm import CachedLM
from nodes.decoding.stopping import END_BUDGET, StopCriteria, stop_criteria_for
from nodes.models import ModelPair, load_pair
from nodes.tasks import Problem


@dataclass
class EvalRun:
    """Per-problem outputs of one decoding method."""

    texts: list[str]
    tokens: list[list[int]]
    seconds: float


def encode_prompt(pair: ModelPair, problem: Problem, chat_template: bool = False) -> list[int]:
    """Token ids of a problem's prompt (with BOS, as in training), inside the tokenizer's chat
    template (one user turn, the assistant's turn opened) when ``chat_template``."""
    if not chat_template:
        return pair.tokenizer(problem.prompt)["input_ids"]
    if not getattr(pair.tokenizer, "chat_template", None):
        raise ValueError("chat_template is on, but this tokenizer has no chat template")
    ids = pair.tokenizer.apply_chat_template([{"role": "user", "content": problem.prompt}], add_generation_prompt=True,
                                             tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def run_autoregressive(pair: ModelPair, model, problems: list[Problem], max_new_tokens: int,
                       chat_template: bool = False, stop: StopCriteria | None = None) -> EvalRun:
    """Greedy decoding of every problem by one model alone (until EOS, a rule of ``stop`` or the budget)."""
    lm = CachedLM(model)
    texts, toks = [], []
    t0 = time.perf_counter()
    for p in problems:
        out = autoregressive_generate(lm, encode_prompt(pair, p, chat_template), max_new_tokens, pair.eos_token_id,
                                      stop=stop)
        toks.append(out)
        texts.append(pair.tokenizer.decode(out, skip_special_tokens=True))
    return EvalRun(texts, toks, time.perf_counter() - t0)


def accept_rate_by_position(rounds_lists, gamma: int) -> list[float]:
    """P(draft token i stands by exact match | the round drafted ≥ i+1 tokens), i < gamma."""
    reached = np.zeros(gamma)
    accepted = np.zeros(gamma)
    for rounds in rounds_lists:
        for r in rounds:
            reached[: r.drafted] += 1
            accepted[: r.accepted_exact] += 1
    return [float(a / n) if n else 0.0 for a, n in zip(accepted, reached)]


def accuracy_by_filter(judge, texts: list[str], problems: list[Problem]) -> dict[str, float]:
    """Share of ``texts`` correct under each answer filter of the task."""
    return {f: float(np.mean([judge.correct_by(f, t, p) for t, p in zip(texts, problems)])) for f in judge.filters}


def evaluate_pair(drafter_path=None, target_path=None, n_problems: int = 100, gamma: int = 4, dtype: str = "fp32",
                  max_new_tokens: int = 128, split: str = "test", task: "TaskConfig | None" = None,
                  use_stops: bool = True) -> dict:
    """Accuracy of target, drafter and greedy speculative decoding on a task (default: the
    built-in one) under every filter (``acc_*`` under the deciding ``answer_filter``,
    ``acc_by_filter`` all of them); acceptance by position; output tokens and rounds per
    request; how many requests ended at EOS, a stop sequence or the budget. ``use_stops=False``
    decodes to EOS or the budget only (the comparison of benchmarks/stop_sequences.py)."""
    from nodes.config import TaskConfig

    task = task or TaskConfig()
    pair = load_pair(drafter_path, target_path, dtype=dtype)
    judge = task.make()
    problems = judge.problems(split, n_problems, task.start_index)
    stop = stop_criteria_for(judge, pair.tokenizer, pair.target, task.chat_template) if use_stops else None
    tgt = run_autoregressive(pair, pair.target, problems, max_new_tokens, task.chat_template, stop)
    drf = run_autoregressive(pair, pair.drafter, problems, max_new_tokens, task.chat_template, stop)
    d, v = Drafter(pair.drafter), Verifier(pair.target)
    spec_tokens, rounds = [], []
    t0 = time.perf_counter()
    for p in problems:
        r = speculative_generate(d, v, ExactMatch(), encode_prompt(pair, p, task.chat_template), gamma,
                                 max_new_tokens, pair.eos_token_id, stop=stop)
        spec_tokens.append(r.tokens)
        rounds.append(r.rounds)
    spec_s = time.perf_counter() - t0
    spec_texts = [pair.tokenizer.decode(t, skip_special_tokens=True) for t in spec_tokens]
    n_tok = sum(len(t) for t in spec_tokens)
    n_rounds = sum(len(r) for r in rounds)
    by_filter = {"target": accuracy_by_filter(judge, tgt.texts, problems),
                 "drafter": accuracy_by_filter(judge, drf.texts, problems),
                 "spec": accuracy_by_filter(judge, spec_texts, problems)}
    ends = [(r[-1].end_reason if r else END_BUDGET) or END_BUDGET for r in rounds]
    f = judge.answer_filter
    return {
        "problems": len(problems), "gamma": gamma, "dtype": dtype, "task": task.kind, "answer_filter": f,
        "stop_sequences": list(stop.stop_strings) if stop else [], "eos_ids": sorted(stop.eos_ids) if stop else
        [pair.eos_token_id],
        "acc_target": by_filter["target"][f], "acc_drafter": by_filter["drafter"][f], "acc_spec": by_filter["spec"][f],
        "acc_by_filter": by_filter,
        "tokens_per_request": n_tok / max(1, len(problems)), "rounds_per_request": n_rounds / max(1, len(problems)),
        "end_reasons": {k: ends.count(k) for k in sorted(set(ends))},
        "greedy_exact": all(a == b for a, b in zip(spec_tokens, tgt.tokens)),
        "accept_rate_by_pos": accept_rate_by_position(rounds, gamma),
        "mean_accepted_len": n_tok / max(1, n_rounds),
        "target_tok_s": sum(len(t) for t in tgt.tokens) / tgt.seconds,
        "drafter_tok_s": sum(len(t) for t in drf.tokens) / drf.seconds,
        "spec_tok_s": n_tok / spec_s,
    }
