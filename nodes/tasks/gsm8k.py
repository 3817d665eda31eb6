"""GSM8K-style JSONL from a local path: one object a line with ``question`` and ``answer``
(whose last line is ``#### n``)."""
from __future__ import annotations

from pathlib import Path

from nodes.tasks.base import Problem, extract_answer, read_jsonl


def load_gsm8k_jsonl(path: str | Path, limit: int | None = None,
                     prompt_template: str = "Question: {question}\nAnswer:") -> list[Problem]:
    """Problems from a GSM8K-style JSONL file; a malformed line raises ValueError naming file:line."""
    path = Path(path)
    out: list[Problem] = []
    for lineno, obj in read_jsonl(path):
        if "question" not in obj or "answer" not in obj:
            raise ValueError(f"{path}:{lineno}: expected an object with 'question' and 'answer'")
        ans = extract_answer(obj["answer"])
        if ans is None:
            raise ValueError(f"{path}:{lineno}: answer has no '#### <number>' line")
        out.append(Problem(uid=f"{path.stem}-{lineno}", prompt=prompt_template.format(question=obj["question"]),
                           solution=" " + obj["answer"], answer=ans))
        if limit is not None and len(out) >= limit:
            break
    return out
