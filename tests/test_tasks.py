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


# --------------------------------------------------------------------------- answer filters
# Real output shapes: the two quoted in issue 24 (a Qwen2-1.5B-Instruct target on GSM8K with a chat
# template, and on HumanEval), a \boxed{} answer, "The answer is 1,234.", a fenced block whose
# signature the model rewrote, prose after the code.
QWEN_GSM8K = ("To determine how many stickers Farid has now, we need to follow these steps:\n\n1. **Initial number "
              "of stickers**: Farid starts with 48 stickers.\n2. **Stickers given away**: He gives away \\( \\frac{1}{4} "
              "\\) of 48, which is \\( 48 \\div 4 = 12 \\).\n3. **Remaining**: \\( 48 - 12 = 36 \\).\n\nTherefore, "
              "Farid has \\(\\boxed{36}\\) stickers now.")
QWEN_GSM8K_CUT = ("To determine how many stickers Farid has now, we need to follow these steps: 1. **Initial number of "
                  "stickers**: Farid starts with 48 stickers. 2. **Stickers given away**: He gives away \\( \\frac{1}{4}")
TRUNCATE_PROMPT = ('\n\ndef truncate_number(number: float) -> float:\n    """ Given a positive floating point number, '
                   'return its decimal part.\n    >>> truncate_number(3.5)\n    0.5\n    """\n')
TRUNCATE_TESTS = "def check(candidate):\n    assert candidate(3.5) == 0.5\n    assert abs(candidate(1.33) - 0.33) < 1e-6\n"
QWEN_HUMANEVAL = ("    decimals = number - int(number)\n    return decimals\n\n# Test the function\nprint(truncate_number(3.5))"
                  "  # Output: 0.5\n```\n\nThis code snippet defines a function `truncate_number` that takes a floating "
                  "point number …")


@pytest.mark.parametrize("text,strict,flexible", [
    (QWEN_GSM8K, None, "36"),                       # chain of thought with LaTeX, the answer boxed
    (QWEN_GSM8K_CUT, None, "4"),                    # cut by the budget: the last number, wrong but extracted
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72", "72"),
    ("So she has 1,234 left. The answer is 1,234.", None, "1234"),
    ("The total is $\\boxed{1{,}234}$ dollars.", None, "1234"),
    ("\\boxed{\\$18.00} is what she makes. Next: 5", None, "18"),
    ("#### 7.0\n\nQuestion: what is 2+2?\nAnswer: 4", "7", "7"),  # text after the stop sequence is not scored
    ("I cannot tell.", None, None),
    ("so1books.Theansweris1.####1", "1", "1"),  # a word-level tokenizer saved without a decoder joins with no space
])
def test_answer_filters_on_real_output_shapes(text, strict, flexible, tmp_path):
    from nodes.tasks import make_task

    f = tmp_path / "g.jsonl"
    f.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n")
    task = make_task("gsm8k", f)
    (p,) = task.problems("test", 1)
    assert task.outcome_by("strict-match", text, p) == strict
    assert task.outcome_by("flexible-extract", text, p) == flexible


def _truncate_problem():
    from nodes.tasks import Problem

    return Problem("HumanEval/2", TRUNCATE_PROMPT, "", "", TRUNCATE_TESTS, "truncate_number")


def test_code_filters_on_real_output_shapes():
    from nodes.tasks.filters import code_block_program, completion_program
    from nodes.tasks.registry import CodeTask

    p = _truncate_problem()
    completion, chat = CodeTask(answer_filter="completion"), CodeTask(answer_filter="code-block")
    # the completion: prints and prose after the function; cut at "\n#", it passes
    assert completion_program(QWEN_HUMANEVAL, p.prompt).endswith("    return decimals\n")
    assert completion.correct(QWEN_HUMANEVAL, p)
    assert completion.outcome("    return decimals\nThis code snippet defines a function", p) is None  # prose: no program
    # a chat answer: prose, then the function rewritten without its annotations, then prose
    answer = ("Here is the implementation:\n\n```python\nimport math\n\ndef truncate_number(number):\n"
              "    return number - math.floor(number)\n\nprint(truncate_number(3.5))\n```\n\nThe function subtracts "
              "the integer part.\n```python\nassert False\n```")
    program = code_block_program(answer, p.prompt, p.entry_point)
    assert "def truncate_number(number: float) -> float:" in program   # the prompt's signature kept
    assert "def truncate_number(number):" not in program and "print(" not in program and "import math" in program
    assert chat.correct(answer, p) and not completion.correct(answer, p)
    # other parameter names: the model's own function replaces the prompt's
    renamed = "```\ndef truncate_number(x):\n  return x % 1.0\n```"
    assert chat.correct(renamed, p)
    # no fence: the completion rule
    assert chat.correct("    return number % 1.0\n", p)
    assert chat.outcome("```python\ndef truncate_number(number):\n    return (\n```", p) is None  # does not compile


def test_filters_registry_and_task_config(tmp_path):
    from nodes.config import TaskConfig
    from nodes.tasks.filters import FILTERS

    assert {"strict-match", "flexible-extract", "completion", "code-block"} <= set(FILTERS)
    f = tmp_path / "g.jsonl"
    f.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n")
    assert TaskConfig(kind="gsm8k", file=str(f)).make().answer_filter == "strict-match"
    assert TaskConfig(kind="gsm8k", file=str(f), chat_template=True).make().answer_filter == "flexible-extract"
    assert TaskConfig(kind="humaneval", chat_template=True).make().answer_filter == "code-block"
    with pytest.raises(ValueError, match="does not apply to gsm8k"):
        TaskConfig(kind="gsm8k", file=str(f), answer_filter="completion").make()
    with pytest.raises(ValueError, match="unknown answer filter"):
        TaskConfig(kind="gsm8k", file=str(f), answer_filter="nope").make()


def test_gsm8k_prompts_n_shot_zero_shot_and_stops(tmp_path):
    from nodes.config import TaskConfig

    f, shots = tmp_path / "test.jsonl", tmp_path / "train.jsonl"
    f.write_text(json.dumps({"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}) + "\n")
    shots.write_text("".join(json.dumps({"question": f"Q{i}?", "answer": f"Because.\n#### {i}"}) + "\n"
                             for i in range(8)))
    (p,) = TaskConfig(kind="gsm8k", file=str(f)).make().problems("test", 1)
    assert p.prompt == "Question: What is 2+2?\nAnswer:"  # lm-eval gsm8k.yaml doc_to_text
    task = TaskConfig(kind="gsm8k", file=str(f), shots=5, fewshot_file=str(shots)).make()
    (p,) = task.problems("test", 1)
    assert p.prompt.startswith("Question: Q0?\nAnswer: Because.\n#### 0\n\nQuestion: Q1?")
    assert p.prompt.count("Question:") == 6 and p.prompt.endswith("\n\nQuestion: What is 2+2?\nAnswer:")
    assert task.stop_sequences() == ("Question:", "</s>", "<|im_end|>")
    cot = TaskConfig(kind="gsm8k", file=str(f), prompt_style="cot").make()
    assert cot.problems("test", 1)[0].prompt == "Q: What is 2+2?\nA: Let's think step by step."
    assert cot.stop_sequences()[0] == "Q:"
    with pytest.raises(ValueError, match="fewshot_file"):
        TaskConfig(kind="gsm8k", file=str(f), shots=5).make()
    with pytest.raises(ValueError, match="8 worked examples; 9 shots"):
        TaskConfig(kind="gsm8k", file=str(f), shots=9, fewshot_file=str(shots)).make().problems("test", 1)


def test_humaneval_by_name_uses_the_packaged_problems():
    from nodes.config import TaskConfig

    task = TaskConfig(kind="humaneval").make()
    probs = task.problems("test", 164)
    assert probs[0].uid == "HumanEval/0" and probs[-1].uid == "HumanEval/163"
    assert task.correct(probs[2].solution, probs[2]) and not task.correct("    return 0.0\n", probs[2])
    with pytest.raises(ValueError, match="164 problems"):
        task.problems("test", 1, 164)


def test_code_runner_uses_the_reliability_guard():
    from nodes.tasks.registry import run_tests

    check = "def check(g):\n    g()\n"
    assert not run_tests("import os\ndef f():\n    os.system('true')\n", check, "f")  # os.system disabled
    assert not run_tests("import subprocess\ndef f():\n    subprocess.run(['true'])\n", check, "f")  # Popen disabled
    assert run_tests("def f():\n    return 1\n", check, "f")
