"""GSM8K-style JSONL from a local path: one object a line with ``question`` and ``answer``
(whose last line is ``#### n``), and its prompts.

Prompt styles (EleutherAI lm-evaluation-harness, ``lm_eval/tasks/gsm8k/``):

- ``plain``: ``gsm8k.yaml`` ``doc_to_text`` "Question: {question}\\nAnswer:"; a worked example
  is that text, a space (``target_delimiter``) and the reference answer; examples are joined by
  a blank line (``fewshot_delimiter``); lm-eval's default is 5 shots from the training split.
- ``qa``: ``gsm8k-cot.yaml`` "Q: {question}\\nA:" (worked examples in the same form).
- ``cot``: ``gsm8k-cot-zeroshot.yaml`` "Q: {question}\\nA: Let's think step by step." (zero-shot).

A style may also be a format string with ``{question}``. Zero-shot with a chat template: the
prompt is the one user turn (:func:`nodes.evaluate.encode_prompt`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nodes.tasks.base import Problem, extract_answer, read_jsonl

PROMPT_STYLES = {"plain": "Question: {question}\nAnswer:", "qa": "Q: {question}\nA:",
                 "cot": "Q: {question}\nA: Let's think step by step."}
FEWSHOT_DELIMITER = "\n\n"  # lm-eval gsm8k.yaml fewshot_delimiter
TARGET_DELIMITER = " "  # lm-eval gsm8k.yaml target_delimiter


@dataclass(frozen=True)
class WorkedExample:
    """One GSM8K line: the question and its reference answer (reasoning, then ``#### n``)."""

    question: str
    answer: str
    uid: str


def read_gsm8k(path: str | Path, limit: int | None = None) -> list[WorkedExample]:
    """The lines of a GSM8K-style JSONL file; a malformed line raises ValueError naming file:line."""
    path = Path(path)
    out: list[WorkedExample] = []
    for lineno, obj in read_jsonl(path):
        if "question" not in obj or "answer" not in obj:
            raise ValueError(f"{path}:{lineno}: expected an object with 'question' and 'answer'")
        if extract_answer(obj["answer"]) is None:
            raise ValueError(f"{path}:{lineno}: answer has no '#### <number>' line")
        out.append(WorkedExample(obj["question"], obj["answer"], f"{path.stem}-{lineno}"))
        if limit is not None and len(out) >= limit:
            break
    return out


def _template(style: str) -> str:
    if "{question}" in style:
        return style
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; known: {', '.join(PROMPT_STYLES)} (or a template "
                         f"with {{question}})")
    return PROMPT_STYLES[style]


def render_prompt(question: str, style: str = "plain", shots: list[WorkedExample] | tuple = ()) -> str:
    """The prompt of ``question`` in ``style``, after the worked examples ``shots`` (n-shot)."""
    t = _template(style)
    if style == "cot":  # worked examples read as the question-answer form of gsm8k-cot.yaml
        shot_t = PROMPT_STYLES["qa"]
    else:
        shot_t = t
    parts = [shot_t.format(question=s.question) + TARGET_DELIMITER + s.answer for s in shots]
    return FEWSHOT_DELIMITER.join(parts + [t.format(question=question)])


def load_gsm8k_jsonl(path: str | Path, limit: int | None = None,
                     prompt_template: str = "Question: {question}\nAnswer:") -> list[Problem]:
    """Problems from a GSM8K-style JSONL file (zero-shot, ``prompt_template``); a malformed line
    raises ValueError naming file:line."""
    return [Problem(uid=e.uid, prompt=prompt_template.format(question=e.question), solution=" " + e.answer,
                    answer=extract_answer(e.answer)) for e in read_gsm8k(path, limit)]
