"""The oracle bound: it accepts exactly what the mining labels harmless, it never changes an
answer, and it needs the run's task at the edge."""
from __future__ import annotations

import pytest

from nodes.config import TaskConfig
from nodes.decoding import Drafter, ExactMatch, Verifier, speculative_generate
from nodes.edge import EdgeServer
from nodes.evaluate import encode_prompt
from nodes.mining import mine_problem
from nodes.models import load_pair
from nodes.oracle import AnswerOracle, OracleAcceptance
from nodes.protocols import PROTOCOLS
from nodes.wire import Error, Hello, decode_envelope, encode

TASK = TaskConfig(split="train")


@pytest.fixture(scope="module")
def pair():
    return load_pair()


def _run(pair, policy, problem, gamma=4, max_new_tokens=128):
    prompt = encode_prompt(pair, problem)
    policy.start_request(problem.uid, prompt, max_new_tokens)
    return speculative_generate(Drafter(pair.drafter), Verifier(pair.target), policy, prompt, gamma, max_new_tokens,
                                pair.eos_token_id)


def test_oracle_decides_the_first_mismatch_as_mining_labels_it(pair):
    """The oracle's decision at the first mismatch of a request is the mining label of that
    mismatch (computed by the separate mining code path); the answer is always the target's own
    (lossless decoding's), in no more rounds."""
    judge = TASK.make()
    oracle = AnswerOracle(pair.target, pair.tokenizer, pair.eos_token_id, TASK)
    seen = {True: 0, False: 0}
    for p in judge.problems(TASK.split, 30, TASK.start_index):  # until both decisions were seen
        exact = _run(pair, ExactMatch(), p)
        ref = pair.tokenizer.decode(exact.tokens, skip_special_tokens=True)
        rows = mine_problem(pair, encode_prompt(pair, p), p, 4, 128, judge)
        if not rows or seen[not rows[0]["important"]]:
            continue
        r = _run(pair, OracleAcceptance(oracle), p)
        first = next(x for x in r.rounds if x.first_mismatch is not None)
        took = first.accepted > first.first_mismatch
        assert took == (not rows[0]["important"]), (p.uid, rows[0])
        seen[took] += 1
        text = pair.tokenizer.decode(r.tokens, skip_special_tokens=True)
        assert judge.outcome(text, p) == judge.outcome(ref, p)
        assert len(r.rounds) <= len(exact.rounds)
        if min(seen.values()):
            break
    assert seen == {True: 1, False: 1}, seen


def test_oracle_needs_the_task_at_the_edge(pair):
    """An edge without the run's task refuses the oracle protocol at hello, with the reason."""
    edge = EdgeServer(pair.target, pair.eos_token_id, bind=None)
    reply = decode_envelope(edge.handle_frames(b"dev", encode(Hello("dev0", "oracle", 4))), 1 << 20).message()
    assert isinstance(reply, Error) and "needs the run's task" in reply.message
    assert PROTOCOLS["oracle"].oracle and "oracle" not in PROTOCOLS.with_head()


def test_oracle_refuses_requests_outside_the_task(pair):
    """A request id that names no problem of the task fails that request, clearly."""
    oracle = AnswerOracle(pair.target, pair.tokenizer, pair.eos_token_id, TaskConfig(kind="arith", split="test"))
    with pytest.raises(ValueError, match="knows no problem 'not-a-problem'"):
        oracle.start("not-a-problem", [1, 2, 3], 8)
