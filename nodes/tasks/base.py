"""Problems, the ``#### <answer>`` extractor and the exact-match scorer (GSM8K convention)."""
from __future__ import annotations

import re
from dataclasses import dataclass

_ANSWER = re.compile(r"####\s*(-?[\d,]*\.?\d+)")


@dataclass(frozen=True)
class Problem:
    """One problem: the prompt the model sees, a reference solution and the final answer."""

    uid: str
    prompt: str
    solution: str
    answer: str
    tests: str = ""        # code tasks: the tests that must pass
    entry_point: str = ""  # code tasks: the function the tests check


def extract_answer(text: str) -> str | None:
    """The final answer after the first ``####`` (commas removed, ``12.0`` → ``12``), or None."""
    m = _ANSWER.search(text)
    if not m:
        return None
    value = m.group(1).replace(",", "")
    if "." in value:
        value = value.rstrip("0").rstrip(".") or "0"
    return value


def score(output: str, problem: Problem) -> bool:
    """Exact match of the extracted final answer with the problem's answer."""
    return extract_answer(output) == problem.answer
