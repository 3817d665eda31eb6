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


def test_code_task_runs_tests_in_a_bounded_process(tmp_path):
    from nodes.tasks import make_task
    from nodes.tasks.registry import run_tests

    assert run_tests("def f(x):\n    return x + 1\n", "def check(g):\n    assert g(1) == 2\n", "f")
    assert not run_tests("def f(x):\n    return x\n", "def check(g):\n    assert g(1) == 2\n", "f")
    assert not run_tests("def f(x):\n    while True:\n        pass\n", "def check(g):\n    g(1)\n", "f")  # CPU limit
    assert not run_tests("def f(x):\n    return bytearray(4 << 30)\n", "def check(g):\n    g(1)\n", "f")  # memory
    f = tmp_path / "he.jsonl"
    f.write_text(json.dumps({"task_id": "T/0", "prompt": "def inc(x):\n", "entry_point": "inc",
                             "test": "def check(g):\n    assert g(2) == 3\n"}) + "\n")
    task = make_task("humaneval", f)
    (p,) = task.problems("test", 1)
    assert p.uid == "T/0" and task.correct("    return x + 1\n", p) and not task.correct("    return x\n", p)
    with pytest.raises(ValueError, match="1 problems"):
        task.problems("test", 2)


def test_gsm8k_file_task_end_to_end_in_simulation(tmp_path):
    """A GSM8K-format file is a task of every decoding command: here wisv simulate."""
    import subprocess
    import sys

    from nodes.tasks import ArithTask

    f = tmp_path / "g.jsonl"
    with open(f, "w") as out:
        for p in ArithTask().problems("test", 3):
            q = p.prompt.removeprefix("Question: ").removesuffix("\nAnswer:").removesuffix(" Answer :")
            out.write(json.dumps({"question": q, "answer": p.solution.strip()}) + "\n")
    r = subprocess.run([sys.executable, "-m", "wisv.cli", "simulate", "--protocols", "vanilla", "--problems", "3",
                        "--task", "gsm8k", "--task-file", str(f), "-o", str(tmp_path), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["vanilla"]["problems"] == 3
