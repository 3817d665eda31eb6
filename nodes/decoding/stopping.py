"""Where an output ends, and why: end-of-sequence ids and stop sequences.

Conventions: Hugging Face ``GenerationConfig.eos_token_id`` may list several ids (an instruct
model ends a turn with ``<|im_end|>`` or ``<|eot_id|>`` as well as its EOS), and decoding stops
at any of them; a stop sequence (lm-evaluation-harness ``generation_kwargs.until``, HumanEval's
stop list) ends the output at the token that completes it (Hugging Face ``StopStringCriteria``),
and the text scored is cut before it (lm-eval ``until`` post-processing). Tokens after that
token are not part of the output: they are neither counted nor scored.

:class:`StopCriteria` is standalone (a tokenizer's ``decode`` and a few rules), so the
in-process loop, the device node and batched mining share one definition.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

END_EOS, END_STOP, END_BUDGET = "eos", "stop", "budget"  # the reasons a request ends ('' while it goes on)


@dataclass(frozen=True)
class StopHit:
    """An output ends: keep its first ``keep`` tokens; ``reason`` is ``eos`` or ``stop``."""

    keep: int
    reason: str


class StopCriteria:
    """End-of-output rules: any of ``eos_ids`` (kept as the last token), the first of
    ``stop_strings`` in the decoded text, and, with ``fence_closes``, the end of the first fenced
    code block (the answer of a chat model asked for code, EvalPlus convention). ``decode``
    maps token ids to text (needed only for the string rules)."""

    def __init__(self, eos_ids: Iterable[int] = (), stop_strings: Iterable[str] = (),
                 decode: Callable[[list[int]], str] | None = None, fence_closes: bool = False):
        self.eos_ids = frozenset(int(i) for i in eos_ids if i is not None)
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.fence_closes = fence_closes
        if (self.stop_strings or fence_closes) and decode is None:
            raise ValueError("stop strings need a decode function")
        self.decode = decode

    @property
    def uses_text(self) -> bool:
        """True when a rule reads the decoded text (stop strings or the closing fence)."""
        return bool(self.stop_strings) or self.fence_closes

    def text_stop(self, text: str) -> int | None:
        """Character index where a stop rule ends ``text`` (the end of the stop sequence or of
        the closing fence), or None."""
        ends = [i + len(s) for s in self.stop_strings for i in [text.find(s)] if i >= 0]
        if self.fence_closes:
            first = text.find("```")
            if first >= 0:
                second = text.find("```", first + 3)
                if second >= 0:
                    ends.append(second + 3)
        return min(ends) if ends else None

    def check(self, tokens: list[int], start: int = 0) -> StopHit | None:
        """Where ``tokens`` (an output, prompt excluded) end, when a rule fires: the first EOS id,
        or the shortest prefix whose text holds a stop sequence. ``start``: the first ``start``
        tokens are known not to end the output (checked before), so only longer prefixes are tried."""
        eos_at = next((i for i in range(start, len(tokens)) if tokens[i] in self.eos_ids), None)
        limit = len(tokens) if eos_at is None else eos_at
        if self.uses_text and limit > start and self.text_stop(self.decode(tokens[:limit])) is not None:
            for n in range(start + 1, limit + 1):  # the token that completes the stop sequence
                if self.text_stop(self.decode(tokens[:n])) is not None:
                    return StopHit(n, END_STOP)
        return None if eos_at is None else StopHit(eos_at + 1, END_EOS)

    def continuing(self, prior: list[int]) -> "StopCriteria":
        """The same rules for a continuation of the output ``prior``: ``check(tokens)`` reads
        ``prior + tokens`` and answers in tokens of the continuation (a rollout after a prefix)."""
        return _Continuation(self, list(prior))

    def cut_text(self, text: str) -> str:
        """``text`` before the first stop sequence (lm-eval ``until``), whole when none occurs."""
        idx = [i for i in (text.find(s) for s in self.stop_strings) if i >= 0]
        return text[:min(idx)] if idx else text


class _Continuation(StopCriteria):
    def __init__(self, inner: StopCriteria, prior: list[int]):
        self.__dict__.update(inner.__dict__)
        self.inner, self.prior = inner, prior

    def check(self, tokens: list[int], start: int = 0) -> StopHit | None:
        hit = self.inner.check(self.prior + tokens, len(self.prior) + start)
        return None if hit is None else StopHit(max(0, hit.keep - len(self.prior)), hit.reason)


def eos_ids_of(model, tokenizer) -> list[int]:
    """The end-of-sequence ids of a model: every id its generation config lists
    (``eos_token_id``, an int or a list) and the tokenizer's EOS."""
    ids: list[int] = []
    gc = getattr(model, "generation_config", None)
    listed = getattr(gc, "eos_token_id", None) if gc is not None else None
    for i in (listed if isinstance(listed, (list, tuple)) else [listed]) + [getattr(tokenizer, "eos_token_id", None)]:
        if i is not None and int(i) not in ids:
            ids.append(int(i))
    return ids


def stop_criteria_for(task, tokenizer, model=None, chat_template: bool = False) -> StopCriteria:
    """The stop rules of a task (its stop sequences, see :mod:`nodes.tasks.registry`) for a
    model and its tokenizer (every EOS id the model's generation config lists)."""
    strings = tuple(task.stop_sequences(chat_template)) if hasattr(task, "stop_sequences") else ()
    fence = bool(getattr(task, "fence_closes", lambda c: False)(chat_template))
    decode = (lambda ids: tokenizer.decode(ids, skip_special_tokens=False)) if (strings or fence) else None
    return StopCriteria(eos_ids_of(model, tokenizer) if model is not None else [tokenizer.eos_token_id],
                        strings, decode, fence)
