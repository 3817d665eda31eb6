"""The built-in task and the GSM8K-style loader."""
from __future__ import annotations

import json

import pytest

from nodes.tasks import ArithTask, extract_answer, load_gsm8k_jsonl, score


def test_problems_are_deterministic_checkable_and_split():
    t = ArithTask()
    a, b = t.problem("test", 3), t.problem("test", 3)
    assert a == b
    for p in t.problems("train", 200):
        assert extract_answer(p.solution) == p.answer
        assert score(p.solution, p)
        assert 0 <= int(p.answer) <= 199
    held_out = {p.prompt for s in ("validation", "test") for p in t.problems(s, 1000)}
    gen = t.iter_train()
    assert all(next(gen).prompt not in held_out for _ in range(300))


def test_phrasings_vary_but_answers_do_not():
    t = ArithTask()
    sols = [t.problem("train", i).solution for i in range(300)]
    assert any("thus" in s for s in sols) and any("which means" in s for s in sols)
    assert any("begins with" in s for s in sols) and any("At first" in s for s in sols)
    vocab = set(t.vocabulary())
    assert all(w in vocab for s in sols[:50] for w in s.split())


@pytest.mark.parametrize("text,expected", [("so 12 . #### 12", "12"), ("#### 1,234", "1234"), ("#### 7.0", "7"),
                                           ("#### -3", "-3"), ("no answer", None)])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_gsm8k_loader(tmp_path):
    p = tmp_path / "g.jsonl"
    p.write_text(json.dumps({"question": "2+2?", "answer": "It is 4.\n#### 4"}) + "\n\n" +
                 json.dumps({"question": "3*3?", "answer": "#### 9"}) + "\n")
    probs = load_gsm8k_jsonl(p)
    assert [q.answer for q in probs] == ["4", "9"] and "2+2?" in probs[0].prompt
    assert score("... #### 4", probs[0]) and not score("#### 5", probs[0])
    p.write_text('{"question": "x", "answer": "no marker"}\n')
    with pytest.raises(ValueError, match=r"g.jsonl:1: answer has no"):
        load_gsm8k_jsonl(p)
    p.write_text('{"question": \n')
    with pytest.raises(ValueError, match=r"g.jsonl:1:\d+: invalid JSON"):
        load_gsm8k_jsonl(p)
