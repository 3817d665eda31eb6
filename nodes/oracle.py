"""The oracle bound: accept exactly the mismatches whose substitution leaves the answer unchanged.

A mismatch (draft token d where the target would write t) is *harmless* when substituting d and
letting the target continue greedily to the end gives the same outcome as the target's own
greedy output (the final answer, or whether a code task's tests pass): the label the mining
gives (:mod:`nodes.mining`). :class:`OracleAcceptance` applies it to every mismatch of a draft in
order, with the accepted substitutions in the prefix: the most a verifier can accept, greedily
position by position, without changing any answer — so every answer, and the accuracy, is the
target's own, problem by problem. A learned head can only exceed it by changing answers.

It needs what no deployable verifier has — the problem, and a look-ahead rollout of the target
per mismatch — so the time it spends judging is reported in ``Decision.extra["lookahead_ms"]``
and not charged as the edge's compute.
"""
from __future__ import annotations

import time
from typing import Hashable

from nodes.config import TaskConfig
from nodes.decoding import CachedLM, autoregressive_generate
from nodes.decoding.policies import Decision, VerificationPolicy, VerifyContext, exact_prefix
from nodes.tasks.base import Problem

MAX_SCAN = 50_000  # problems searched for a request id before giving up
SCAN_CHUNK = 512


def harmless(task, text: str, problem: Problem, reference_outcome: Hashable) -> bool:
    """``text`` (a full output) keeps the target's own outcome (final answer, or tests passing)."""
    return task.outcome(text, problem) == reference_outcome


class AnswerOracle:
    """Judges substitutions for the problems of a run's task: finds a request's problem by its
    id (the problem's ``uid``, as devices name requests), rolls the target out greedily and
    labels the output with :func:`harmless`. References and labels are memoised by problem,
    budget and tokens, so one oracle shared by the runs of a sweep judges each substitution once
    (its decisions do not depend on the channel)."""

    def __init__(self, target, tokenizer, eos_token_id: int | None, task: TaskConfig):
        self.target, self.tokenizer, self.eos, self.task = target, tokenizer, eos_token_id, task
        self.judge = task.make()
        self._lm: CachedLM | None = None
        self._by_uid: dict[str, Problem] = {}
        self._scanned = 0
        self._requests: dict[str, tuple[int, int]] = {}  # request id -> (prompt length, max_new_tokens)
        self._references: dict[tuple, Hashable] = {}
        self._labels: dict[tuple, bool] = {}

    def problem(self, uid: str) -> Problem:
        """The task problem called ``uid`` (searched from the task's start index); ValueError
        when the task has none (the oracle judges only the run's task problems)."""
        while uid not in self._by_uid:
            batch = self._chunk(self.task.start_index + self._scanned) if self._scanned < MAX_SCAN else []
            if not batch:
                raise ValueError(f"the oracle knows no problem {uid!r} in the run's task")
            self._by_uid.update((p.uid, p) for p in batch)
            self._scanned += len(batch)
        return self._by_uid[uid]

    def _chunk(self, start: int) -> list[Problem]:
        """Up to SCAN_CHUNK problems from index ``start`` (fewer at the end of a task file)."""
        n = SCAN_CHUNK
        while n:
            try:
                return self.judge.problems(self.task.split, n, start)
            except ValueError:  # past the end of a task file
                n //= 2
        return []

    def start(self, request_id: str, prompt: list[int], max_new_tokens: int) -> None:
        """Open a request (prompt token ids); its problem is looked up now, its reference on first use."""
        self.problem(request_id)
        self._requests[request_id] = (len(prompt), max_new_tokens)

    def _rollout_text(self, tokens: list[int], prompt_len: int, max_new_tokens: int) -> str:
        """The output text after the target continues ``tokens`` greedily to its budget."""
        self._lm = self._lm or CachedLM(self.target)
        budget = max_new_tokens - (len(tokens) - prompt_len)
        tail = [] if budget <= 0 or (self.eos is not None and tokens[-1] == self.eos) else \
            autoregressive_generate(self._lm, tokens, budget, self.eos)
        return self.tokenizer.decode(tokens[prompt_len:] + tail, skip_special_tokens=True)

    def is_harmless(self, request_id: str, tokens: list[int]) -> bool:
        """Whether the output that continues ``tokens`` (prompt, committed tokens and the
        substituted draft prefix) keeps the target's own answer."""
        prompt_len, budget = self._requests[request_id]
        problem = self.problem(request_id)
        ref_key = (request_id, tuple(tokens[:prompt_len]), budget)
        if ref_key not in self._references:
            self._references[ref_key] = self.judge.outcome(self._rollout_text(tokens[:prompt_len], prompt_len, budget),
                                                           problem)
        key = (*ref_key, tuple(tokens[prompt_len:]))
        if key not in self._labels:
            self._labels[key] = harmless(self.judge, self._rollout_text(list(tokens), prompt_len, budget), problem,
                                         self._references[ref_key])
        return self._labels[key]

    def finish(self, request_id: str) -> None:
        """Close a request (its memoised labels stay)."""
        self._requests.pop(request_id, None)


class OracleAcceptance(VerificationPolicy):
    """Greedy verification that accepts a mismatched draft token exactly when the oracle says
    the answer stays the target's own (see the module docstring)."""

    name = "oracle"

    def __init__(self, oracle: AnswerOracle):
        self.oracle = oracle
        self.request_id: str | None = None

    def start_request(self, request_id: str, prompt: list[int], max_new_tokens: int) -> None:
        """Open ``request_id`` at the oracle (forgetting the previous request of this session)."""
        if self.request_id is not None:
            self.oracle.finish(self.request_id)
        self.request_id = request_id
        self.oracle.start(request_id, prompt, max_new_tokens)

    def verify(self, ctx: VerifyContext) -> Decision:
        if self.request_id is None or ctx.committed is None:
            raise ValueError("the oracle verifies inside a request (start_request) with the committed tokens")
        t0 = time.perf_counter()
        n_exact, first, greedy = exact_prefix(ctx)
        match = ctx.matches().tolist()
        draft = ctx.draft_tokens.tolist()
        n = n_exact
        while n < ctx.gamma and (match[n] or self.oracle.is_harmless(self.request_id, ctx.committed + draft[:n + 1])):
            n += 1
        return Decision(accepted=n, next_token=int(greedy[n]), accepted_exact=n_exact, first_mismatch=first,
                        harmless=sum(not m for m in match[:n]), extra={"lookahead_ms": (time.perf_counter() - t0) * 1000.0})
