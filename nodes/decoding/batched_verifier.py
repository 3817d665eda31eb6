"""Edge-side verification of several sessions' drafts in one target forward.

:class:`BatchedVerifier` owns a :class:`~nodes.decoding.batched_lm.BatchedLM`; each session (one
device's request) holds a slot (:meth:`BatchedVerifier.open`). :meth:`BatchedVerifier.score_batch`
takes per session its committed sequence and its draft block and returns per row what
:meth:`nodes.decoding.speculative.Verifier.score` returns for that session alone: logits
[γ_i+1, V] and hidden states [γ_i+1, H] (within fp32 rounding of the batch-1 forward; bitwise when
the batch holds one row, see :mod:`nodes.decoding.batched_lm`). A batching scheduler builds a
:class:`~nodes.decoding.policies.VerifyContext` per row from them, as :func:`verify_round` does.

:meth:`BatchedVerifier.session` gives a slot the batch-1 ``Verifier`` interface (``lm.cache_len``,
``score``, ``commit``, ``reset``), so :func:`~nodes.decoding.round.verify_round` runs unchanged on
one slot (a scheduler's batch of one, or a round served outside a batch).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nodes.decoding.batched_lm import BatchedLM


@dataclass(frozen=True)
class ScoreRequest:
    """One row of a batched verify: the session's ``slot``, its committed sequence ``seq`` (token
    ids, prompt included) and the ``draft`` block (γ ≥ 0 token ids) to score after it."""

    slot: int
    seq: Sequence[int]
    draft: Sequence[int]


@dataclass
class ScoredRow:
    """A row's result: logits [γ+1, V] fp32 and hidden states [γ+1, H] of the positions that
    score the draft (row j scores draft token j; row γ gives the bonus token), and ``n_prefill``,
    the committed tokens the forward fed beyond the one always re-fed (the prompt, on a first round)."""

    logits: torch.Tensor
    hidden: torch.Tensor
    n_prefill: int


@dataclass
class BatchScore:
    """The rows of one batched verify, in request order, and the forward's wall time in ms."""

    rows: list[ScoredRow]
    forward_ms: float

    @property
    def tokens(self) -> int:
        """Positions the forward computed (all rows, padding excluded)."""
        return sum(r.n_prefill + r.logits.shape[0] for r in self.rows)


class BatchedVerifier:
    """Target side for many sessions: a slot per session, one forward per batch of drafts
    (``max_batch_size`` slots of ``max_len`` positions; ``lean=False``: transformers decoder)."""

    def __init__(self, model: torch.nn.Module, max_batch_size: int = 8, max_len: int | None = None,
                 lean: bool = True):
        self.lm = BatchedLM(model, max_batch_size, max_len, lean)

    def open(self) -> int:
        """A slot for a new session (RuntimeError when ``max_batch_size`` are open)."""
        return self.lm.acquire()

    def close(self, slot: int) -> None:
        """End the session in ``slot`` (its slot is free for another)."""
        self.lm.release(slot)

    def reset(self, slot: int) -> None:
        """Start a new request in ``slot``."""
        self.lm.reset(slot)

    def commit(self, slot: int, seq_len: int) -> None:
        """Roll ``slot`` back to the committed ``seq_len - 1`` tokens (the last is re-fed next round)."""
        self.lm.crop(slot, seq_len - 1)

    def check(self, request: ScoreRequest) -> None:
        """ValueError when ``request`` cannot join a batch: an unknown slot (IndexError), an empty
        sequence, a slot holding ``len(seq)`` positions or more (not committed since its last round),
        or more positions than the slot's ``max_len``. A scheduler checks each request on arrival, so
        one bad request is refused alone instead of failing the batch it would join."""
        have = self.lm.length(request.slot)
        if not request.seq:
            raise ValueError(f"slot {request.slot}: the committed sequence is empty")
        if have >= len(request.seq):
            raise ValueError(f"slot {request.slot} holds {have} positions for a sequence of {len(request.seq)}: "
                             "commit (roll back) after each round")
        if len(request.seq) + len(request.draft) > self.lm.cache.max_len:
            raise ValueError(f"slot {request.slot}: {len(request.seq)} + {len(request.draft)} positions exceed "
                             f"max_len {self.lm.cache.max_len}")

    def score_batch(self, requests: Sequence[ScoreRequest]) -> BatchScore:
        """One target forward over every request's draft after its committed sequence: per row,
        logits [γ+1, V] and hidden [γ+1, H] as ``Verifier.score`` gives for that session alone.
        A slot must hold a prefix of its ``seq`` shorter than ``seq`` (commit after each round);
        ValueError, before anything is computed, for a request :meth:`check` refuses or a slot twice."""
        if not requests:
            raise ValueError("score_batch needs at least one request")
        blocks, keep, prefill = [], [], []
        for r in requests:
            self.check(r)
            have = self.lm.length(r.slot)
            blocks.append(list(r.seq[have:]) + list(r.draft))
            keep.append(len(r.draft) + 1)
            prefill.append(len(r.seq) - have - 1)
        t0 = time.perf_counter()
        out = self.lm.forward([r.slot for r in requests], blocks, keep)
        ms = (time.perf_counter() - t0) * 1000.0
        return BatchScore([ScoredRow(lg, h, n) for (lg, h), n in zip(out, prefill)], ms)

    def session(self, slot: int) -> "SlotVerifier":
        """``slot`` behind the batch-1 ``Verifier`` interface."""
        self.lm.cache.check(slot)
        return SlotVerifier(self, slot)


class SlotLM:
    """One slot of a :class:`BatchedLM` behind :class:`~nodes.decoding.lm.CachedLM`'s interface."""

    def __init__(self, lm: BatchedLM, slot: int):
        self._lm, self.slot = lm, slot

    @property
    def cache_len(self) -> int:
        """Cached positions of the slot."""
        return self._lm.length(self.slot)

    @property
    def hidden_size(self) -> int:
        """Width of the last-layer hidden state."""
        return self._lm.hidden_size

    def forward(self, token_ids: list[int], keep: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [keep, V] fp32, hidden [keep, H]) of the last ``keep`` of ``token_ids`` fed after the slot."""
        return self._lm.forward([self.slot], [token_ids], [keep])[0]

    def crop(self, length: int) -> None:
        """Keep only the first ``length`` cached positions."""
        self._lm.crop(self.slot, length)

    def reset(self) -> None:
        """Drop the slot's cache."""
        self._lm.reset(self.slot)


class SlotVerifier:
    """One session of a :class:`BatchedVerifier` with ``Verifier``'s interface, so that
    :func:`~nodes.decoding.round.verify_round` runs on it (batch of one: bitwise ``Verifier``)."""

    def __init__(self, batched: BatchedVerifier, slot: int):
        self.slot = slot
        self.lm = SlotLM(batched.lm, slot)

    def reset(self) -> None:
        """Start a new request."""
        self.lm.reset()

    def score(self, seq: list[int], draft: list[int]) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(logits [γ+1, V], hidden [γ+1, H], verify_ms) of the draft after committed ``seq``."""
        t0 = time.perf_counter()
        logits, hidden = self.lm.forward(list(seq[self.lm.cache_len:]) + list(draft), keep=len(draft) + 1)
        return logits, hidden, (time.perf_counter() - t0) * 1000.0

    def commit(self, seq_len: int) -> None:
        """Roll the slot back to the committed ``seq_len - 1`` tokens."""
        self.lm.crop(seq_len - 1)
