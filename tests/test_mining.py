"""Batched label mining gives the labels of the sequential definition; batched greedy decoding
gives each sequence's own greedy output; round structure; resumption refuses other settings."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from nodes.config import TaskConfig
from nodes.evaluate import encode_prompt
from nodes.models import load_pair

N_PROBLEMS = 8


@pytest.fixture(scope="module")
def pair():
    return load_pair()


@pytest.fixture(scope="module")
def problems(pair):
    judge = TaskConfig(split="train").make()
    ps = judge.problems("train", N_PROBLEMS, 0)
    return judge, ps, [encode_prompt(pair, p) for p in ps]


def test_first_mismatches_follow_the_rounds():
    from nodes.mining import first_mismatches

    eos = 2
    ref = [10, 11, 12, 13, 14, 15, 16, 17, 18, eos]
    # round 0 drafts 0..3: mismatch at 1; round 1 drafts 2..5: all match, bonus 6; round 2 drafts
    # from 7: mismatch at 8; round 3 starts at 9 and drafts EOS, which stands: done.
    choice = [10, 99, 12, 13, 14, 15, 98, 17, 97, eos]
    assert first_mismatches(ref, choice, 4, 128, eos) == [1, 8]
    # The token budget bounds the window: with 8 tokens, round 2 drafts only position 7.
    assert first_mismatches(ref[:8], choice[:8], 4, 8, eos) == [1]
    # A drafted EOS that stands ends the window (nothing is read past the output's end).
    assert first_mismatches([5, eos], [5, eos], 4, 128, eos) == []
    assert first_mismatches([5, 6, 7], [9, 9, 9], 1, 3, eos) == [0, 1, 2]


def test_greedy_batch_is_each_sequence_greedy_output(pair, problems):
    """Ragged prompts in one left-padded batch, each to its own budget and EOS, give what each
    prompt decodes alone (the default pair, fp32)."""
    from nodes.batched import greedy_batch
    from nodes.decoding import autoregressive_generate

    _, _, prompts = problems
    budgets = [128, 5, 0, 40, 128, 1, 77, 128]
    got = greedy_batch(pair.target, prompts, budgets, pair.eos_token_id, pair.tokenizer.pad_token_id)
    want = [autoregressive_generate(pair.target, p, b, pair.eos_token_id) if b else [] for p, b in zip(prompts, budgets)]
    assert got == want
    assert any(w and w[-1] == pair.eos_token_id for w in want) and [len(w) for w in want][1:3] == [5, 0]


def test_batched_mining_gives_the_sequential_labels(pair, problems):
    """The batched miner's rows equal :func:`mine_problem`'s (the definition run round by round):
    positions, tokens and labels exactly on every problem but at most one (an fp32 near-tie
    flipped by padding; none measured on 60 problems of the default pair), probabilities and
    hidden states to 1e-4."""
    from nodes.mining import mine_batch, mine_problem

    judge, ps, prompts = problems
    seq = [mine_problem(pair, pr, p, 4, 128, judge) for pr, p in zip(prompts, ps)]
    bat = mine_batch(pair, prompts, ps, 4, 128, judge, batch_size=3)  # 3: several batches, one ragged
    key = ("position", "draft_token", "target_token", "important")
    same = [[tuple(r[k] for k in key) for r in a] == [tuple(r[k] for k in key) for r in b] for a, b in zip(seq, bat)]
    assert sum(same) >= N_PROBLEMS - 1, same
    rows = [(x, y) for a, b, ok in zip(seq, bat, same) if ok for x, y in zip(a, b)]
    assert len(rows) >= 10 and {x["important"] for x, _ in rows} == {True, False}
    for x, y in rows:
        for k in ("p_draft", "p_top", "entropy"):
            assert abs(x[k] - y[k]) < 1e-4, (k, x[k], y[k])
        for k in ("target_hidden", "drafter_hidden"):
            assert np.abs(x[k] - y[k]).max() < 1e-4, k


def test_mining_logs_each_shard_and_refuses_other_settings(pair, tmp_path, caplog):
    from nodes.mining import mine

    with caplog.at_level(logging.INFO, logger="nodes.mining"):
        m = mine(pair, tmp_path, 3, gamma=4, shard_size=2, progress=False, batch_size=4)
    assert [s["start"] for s in m["shards"]] == [0, 2] and m["max_new_tokens"] == 128
    lines = [r.getMessage() for r in caplog.records if "s/label" in r.getMessage()]
    assert len(lines) == 2 and "left (estimated)" in lines[-1] and " 0 s left" in lines[-1]
    with pytest.raises(ValueError, match="gamma = 4, not 3"):
        mine(pair, tmp_path, 4, gamma=3, shard_size=2, progress=False)
    with pytest.raises(ValueError, match="max_new_tokens = 128, not 64"):
        mine(pair, tmp_path, 4, gamma=4, shard_size=2, max_new_tokens=64, progress=False)
