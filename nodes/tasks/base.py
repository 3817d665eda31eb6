"""Problems, the ``#### <answer>`` extractor and the exact-match scorer (GSM8K convention)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

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


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of every non-empty line of a JSONL file; ValueError naming
    file:line:column for invalid JSON or a line that is not an object."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}:{e.colno}: invalid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object")
            yield lineno, obj


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
