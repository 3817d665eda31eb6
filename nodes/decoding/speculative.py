"""The speculative decoding loop (gpt-fast-sized), split into a device-side :class:`Drafter`
and an edge-side :class:`Verifier` so the nodes can put the network between them.

Cache invariant: both caches hold key/values for a prefix of the committed sequence ``seq``;
each forward feeds the committed tokens the cache lacks (at least the last one) plus new ones.
After a round with ``n`` accepted tokens and a next token, both caches are cropped to the new
``len(seq) - 1``: the last committed token is always fed again next round.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from channel_models.csi import CSI
from nodes.decoding.lm import CachedLM
from nodes.decoding.policies import VerificationPolicy
from nodes.decoding.round import verify_round
from nodes.decoding.stopping import END_BUDGET, StopCriteria


@dataclass(frozen=True)
class SamplingConfig:
    """temperature 0 = greedy; otherwise sample from softmax(logits / temperature)."""

    temperature: float = 0.0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        """True for greedy decoding."""
        return self.temperature <= 0.0


@dataclass
class DraftBlock:
    """γ draft tokens with the drafter's probabilities [γ, V] (sampling only) and the hidden
    states [γ, Hd] that produced them; ``draft_ms`` is the drafter's compute time."""

    tokens: list[int]
    probs: torch.Tensor | None
    hidden: torch.Tensor
    draft_ms: float


class Drafter:
    """Device side: drafts γ tokens with a persistent KV cache, rolls back after each verdict
    (``lean=False``: through the transformers decoder, see :class:`CachedLM`)."""

    def __init__(self, model: torch.nn.Module, sampling: SamplingConfig = SamplingConfig(), lean: bool = True):
        self.lm = CachedLM(model, lean)
        self.sampling = sampling
        self.generator = torch.Generator().manual_seed(sampling.seed + 1)

    def reset(self) -> None:
        """Start a new request."""
        self.lm.reset()

    def draft(self, seq: list[int], gamma: int, eos_token_id: int | None = None,
              stop: Callable[[list[int]], bool] | None = None) -> DraftBlock:
        """Draft ``gamma`` tokens after the committed sequence ``seq``; stops early at EOS, and
        after the token for which ``stop(draft tokens so far)`` is true (an EOS id or a stop
        sequence: no draft past the end of the output)."""
        t0 = time.perf_counter()
        feed = seq[self.lm.cache_len:]
        tokens: list[int] = []
        probs, hidden = [], []
        for _ in range(gamma):
            logits, h = self.lm.forward(feed)
            row = logits[0]
            if self.sampling.greedy:
                tok = int(row.argmax())
            else:
                p = torch.softmax(row / self.sampling.temperature, dim=-1)
                tok = int(torch.multinomial(p, 1, generator=self.generator))
                probs.append(p)
            tokens.append(tok)
            hidden.append(h[0])
            feed = [tok]
            if eos_token_id is not None and tok == eos_token_id:
                break
            if stop is not None and stop(tokens):
                break
        return DraftBlock(tokens, torch.stack(probs) if probs else None, torch.stack(hidden),
                          (time.perf_counter() - t0) * 1000.0)

    def commit(self, seq_len: int) -> None:
        """Roll the cache back to the committed ``seq_len - 1`` tokens (or fewer)."""
        self.lm.crop(seq_len - 1)


class Verifier:
    """Edge side: one target forward over the draft; returns logits and hidden states
    (``lean=False``: through the transformers decoder, see :class:`CachedLM`)."""

    def __init__(self, model: torch.nn.Module, lean: bool = True):
        self.lm = CachedLM(model, lean)

    def reset(self) -> None:
        """Start a new request."""
        self.lm.reset()

    def score(self, seq: list[int], draft: list[int]) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(logits [γ+1, V], hidden [γ+1, H], verify_ms) of the draft after committed ``seq``."""
        t0 = time.perf_counter()
        logits, hidden = self.lm.forward(seq[self.lm.cache_len:] + draft, keep=len(draft) + 1)
        return logits, hidden, (time.perf_counter() - t0) * 1000.0

    def commit(self, seq_len: int) -> None:
        """Roll the cache back to the committed ``seq_len - 1`` tokens."""
        self.lm.crop(seq_len - 1)


@dataclass
class RoundRecord:
    """One interaction round as the core sees it (the nodes add bytes, link and CSI fields:
    :class:`nodes.telemetry.RoundLog`, whose columns carry the same names); ``verify_ms`` covers
    the target forward and the policy; ``tokens_out`` the tokens it adds to the output (none
    after a stop); ``end_reason``: why the request ended with this round (``eos``, ``stop`` for
    a stop sequence, ``budget``), '' while it goes on."""

    round: int
    drafted: int
    accepted: int
    accepted_exact: int
    first_mismatch: int | None
    harmless: int
    draft_ms: float
    verify_ms: float
    tokens_out: int
    end_reason: str = ""


@dataclass
class SpecResult:
    """Output token ids (prompt excluded), the per-round records and totals."""

    tokens: list[int]
    rounds: list[RoundRecord] = field(default_factory=list)
    wall_ms: float = 0.0

    @property
    def mean_accepted_len(self) -> float:
        """Tokens per round, counting the next/bonus token (vLLM convention)."""
        return len(self.tokens) / max(1, len(self.rounds))


def speculative_generate(drafter: Drafter, verifier: Verifier, policy: VerificationPolicy, prompt: list[int],
                         gamma: int = 4, max_new_tokens: int = 128, eos_token_id: int | None = None,
                         csi: CSI | None = None, stop: StopCriteria | None = None) -> SpecResult:
    """Speculative decoding of ``prompt`` (token ids) in one process, round by round, until EOS,
    a stop rule of ``stop`` (:mod:`nodes.decoding.stopping`; default: ``eos_token_id`` only) or
    ``max_new_tokens``. The drafter drafts no further than the end of the output; the tokens a
    round commits past the end are dropped (not counted in ``tokens_out``)."""
    if gamma < 1:
        raise ValueError("gamma must be >= 1")
    stop = stop or StopCriteria([eos_token_id] if eos_token_id is not None else [])
    drafter.reset()
    verifier.reset()
    seq = list(prompt)
    out: list[int] = []
    result = SpecResult(out)
    t_start = time.perf_counter()
    end = ""
    while len(out) < max_new_tokens:
        done = len(out)
        block = drafter.draft(seq, min(gamma, max_new_tokens - len(out)), eos_token_id,  # on the device
                              stop=lambda toks: stop.check(out + toks, done) is not None)
        r = verify_round(verifier, policy, seq, block.tokens, drafter_probs=block.probs,  # on the edge
                         drafter_hidden=block.hidden, csi=csi, temperature=drafter.sampling.temperature,
                         generator=drafter.generator)
        new = r.new_tokens[: max_new_tokens - len(out)]
        hit = stop.check(out + new, len(out))
        if hit is not None:
            new, end = new[: hit.keep - len(out)], hit.reason
        elif len(out) + len(new) >= max_new_tokens:
            end = END_BUDGET
        seq.extend(new)
        out.extend(new)
        verifier.commit(len(seq))
        drafter.commit(len(seq))
        d = r.decision
        result.rounds.append(RoundRecord(round=len(result.rounds), drafted=len(block.tokens), accepted=d.accepted,
                                         accepted_exact=d.accepted_exact, first_mismatch=d.first_mismatch,
                                         harmless=d.harmless, draft_ms=block.draft_ms, verify_ms=r.verify_ms,
                                         tokens_out=len(new), end_reason=end))
        if end:
            break
    result.wall_ms = (time.perf_counter() - t_start) * 1000.0
    return result


def autoregressive_generate(model_or_lm: torch.nn.Module | CachedLM, prompt: list[int], max_new_tokens: int = 128,
                            eos_token_id: int | None = None, sampling: SamplingConfig = SamplingConfig(),
                            stop: StopCriteria | None = None) -> list[int]:
    """Plain one-token-at-a-time decoding with a KV cache (the ``ar-edge`` baseline and
    reference), until ``eos_token_id``, a rule of ``stop`` or ``max_new_tokens``."""
    lm = model_or_lm if isinstance(model_or_lm, CachedLM) else CachedLM(model_or_lm)
    lm.reset()
    gen = torch.Generator().manual_seed(sampling.seed + 2)
    out: list[int] = []
    feed = list(prompt)
    while len(out) < max_new_tokens:
        logits, _ = lm.forward(feed)
        row = logits[0]
        if sampling.greedy:
            tok = int(row.argmax())
        else:
            tok = int(torch.multinomial(torch.softmax(row / sampling.temperature, -1), 1, generator=gen))
        out.append(tok)
        if tok == eos_token_id:
            break
        if stop is not None and stop.check(out, len(out) - 1) is not None:
            break
        feed = [tok]
    return out
