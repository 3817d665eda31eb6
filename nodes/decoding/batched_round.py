"""Several sessions' rounds with one target forward: :func:`verify_round`, batched.

A batching edge collects drafts (:class:`BatchItem`, one per session, each with its own policy,
CSI and sampling state), runs :func:`verify_batch`, and gets per session the
:class:`~nodes.decoding.round.RoundOutcome` :func:`~nodes.decoding.round.verify_round` gives for
that session alone (decided, or asking for drafter hidden rows: mismatch-first), the decision made
on the session's own row. Each outcome's ``verify_ms`` is the shared forward's time plus its own
policy time. After committing, roll each slot back (:meth:`BatchedVerifier.commit`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from channel_models.csi import CSI
from nodes.decoding.batched_verifier import BatchedVerifier, ScoreRequest
from nodes.decoding.policies import VerificationPolicy, VerifyContext
from nodes.decoding.round import RoundOutcome


@dataclass
class BatchItem:
    """One session's round: its slot, committed sequence and draft (token ids), its policy, and
    what :func:`verify_round` takes beside them (drafter probabilities [γ, V] and hidden states
    [γ, Hd] when sent, the CSI, the sampling temperature and generator)."""

    slot: int
    seq: Sequence[int]
    draft: Sequence[int]
    policy: VerificationPolicy
    drafter_probs: torch.Tensor | None = None
    drafter_hidden: torch.Tensor | None = None
    csi: CSI | None = None
    temperature: float = 0.0
    generator: torch.Generator | None = None


def verify_batch(verifier: BatchedVerifier, items: Sequence[BatchItem]) -> list[RoundOutcome]:
    """One target forward over every item's draft, then each item's policy on its own row; the
    outcomes in item order (see :func:`nodes.decoding.round.verify_round`)."""
    batch = verifier.score_batch([ScoreRequest(it.slot, it.seq, it.draft) for it in items])
    out = []
    for it, row in zip(items, batch.rows):
        ctx = VerifyContext(torch.tensor(list(it.draft), dtype=torch.long), row.logits, row.hidden, it.drafter_probs,
                            it.drafter_hidden, it.csi, it.temperature, it.generator, committed=list(it.seq))
        out.append(RoundOutcome(ctx, it.policy, batch.forward_ms, row.n_prefill).decide())
    return out
