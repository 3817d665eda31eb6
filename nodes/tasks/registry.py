"""The tasks a run can decode, by name (the one registry of task names): the built-in arithmetic
task, GSM8K-format JSONL files, and HumanEval-format code tasks scored by running their tests.

A task gives problems (``problems(split, n, start)``), the outcome of an output (the final
answer, or whether the tests pass) and whether it is correct; label mining calls a mismatch
*important* when substituting it changes the outcome or makes it wrong.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable

from nodes.tasks.arith import ArithTask
from nodes.tasks.base import Problem, extract_answer, read_jsonl
from nodes.tasks.gsm8k import load_gsm8k_jsonl

CODE_TIMEOUT_S = 10.0
CODE_MEMORY_BYTES = 512 << 20


class AnswerTask:
    """Shared rules of tasks with a ``#### n`` final answer."""

    def outcome(self, text: str, problem: Problem) -> Hashable:
        """The final answer in ``text`` (None when there is none)."""
        return extract_answer(text)

    def correct(self, text: str, problem: Problem) -> bool:
        """The final answer matches the problem's."""
        return extract_answer(text) == problem.answer


@dataclass(frozen=True)
class BuiltinTask(AnswerTask):
    """The built-in arithmetic word problems (train/validation/test splits, unbounded)."""

    def problems(self, split: str, n: int, start: int = 0) -> list[Problem]:
        """``n`` problems of ``split`` from index ``start``."""
        return ArithTask().problems(split, n, start)


def _file_slice(items: list[Problem], path: Path, n: int, start: int) -> list[Problem]:
    if start + n > len(items):
        raise ValueError(f"{path}: {len(items)} problems; problems {start}..{start + n - 1} were asked for")
    return items[start:start + n]


@dataclass(frozen=True)
class GSM8KTask(AnswerTask):
    """A GSM8K-format JSONL file (``question``, ``answer`` ending in ``#### n``); the file is the split."""

    file: Path
    template: str = "Question: {question}\nAnswer:"

    def problems(self, split: str, n: int, start: int = 0) -> list[Problem]:
        """Problems ``start … start + n − 1`` of the file (``split`` is ignored)."""
        return _file_slice(load_gsm8k_jsonl(self.file, prompt_template=self.template), self.file, n, start)


@dataclass(frozen=True)
class CodeTask:
    """A HumanEval-format JSONL file (``task_id``, ``prompt``, ``test``, ``entry_point``): the
    model completes the function; an output is correct when the problem's tests pass, run in a
    separate Python process (isolated mode, a temporary working directory, no inherited
    environment) with CPU-time, memory and wall-clock limits. This bounds runaway or hostile
    completions but is not a security sandbox: run untrusted tasks in a container."""

    file: Path

    def problems(self, split: str, n: int, start: int = 0) -> list[Problem]:
        """Problems ``start … start + n − 1`` of the file (``split`` is ignored)."""
        out = []
        for lineno, obj in read_jsonl(self.file):
            missing = {"task_id", "prompt", "test", "entry_point"} - set(obj)
            if missing:
                raise ValueError(f"{self.file}:{lineno}: missing {sorted(missing)}")
            out.append(Problem(uid=str(obj["task_id"]), prompt=obj["prompt"], solution="", answer="",
                               tests=obj["test"], entry_point=obj["entry_point"]))
        return _file_slice(out, self.file, n, start)

    def outcome(self, text: str, problem: Problem) -> Hashable:
        """Whether the tests pass."""
        return self.correct(text, problem)

    def correct(self, text: str, problem: Problem) -> bool:
        """Run the problem's tests on prompt + completion (see the class docstring)."""
        return run_tests(problem.prompt + text, problem.tests, problem.entry_point)


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CODE_MEMORY_BYTES, CODE_MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (int(CODE_TIMEOUT_S), int(CODE_TIMEOUT_S) + 1))
    os.setsid()


def run_tests(program: str, tests: str, entry_point: str) -> bool:
    """True when ``program`` followed by ``tests`` and ``check(entry_point)`` exits 0 within the
    limits (:data:`CODE_TIMEOUT_S` s, :data:`CODE_MEMORY_BYTES` bytes)."""
    with tempfile.TemporaryDirectory(prefix="wisv-code-") as d:
        src = Path(d) / "candidate.py"
        src.write_text(f"{program}\n\n{tests}\n\ncheck({entry_point})\n")
        try:
            r = subprocess.run([sys.executable, "-I", str(src)], cwd=d, env={}, capture_output=True,
                               timeout=CODE_TIMEOUT_S, preexec_fn=_limits)
        except subprocess.TimeoutExpired:
            return False
        return r.returncode == 0


TASK_KINDS = ("arith", "gsm8k", "humaneval")


def make_task(kind: str = "arith", file: str | Path | None = None, template: str | None = None):
    """The task of a run config: ``arith`` (built-in), ``gsm8k`` or ``humaneval`` (a file)."""
    if kind == "arith":
        return BuiltinTask()
    if kind not in TASK_KINDS:
        raise ValueError(f"unknown task {kind!r}; known: {', '.join(TASK_KINDS)}")
    if not file or not Path(file).is_file():
        raise FileNotFoundError(f"task {kind} needs a file; {file!r} is not one")
    if kind == "gsm8k":
        return GSM8KTask(Path(file), template or GSM8KTask.template)
    return CodeTask(Path(file))
