"""One interaction round, written once: target forward over a draft block, then the policy.

Used by the in-process loop (:func:`nodes.decoding.speculative.speculative_generate`), the edge
(:class:`nodes.edge.EdgeServer`, and through it the simulator) and label mining
(:mod:`nodes.mining`). A round whose policy needs drafter hidden states that did not come with
the draft stops after the forward with :attr:`RoundOutcome.request_rows` (mismatch-first: only
the mismatched positions); :meth:`RoundOutcome.supply_hidden` completes it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from channel_models.csi import CSI
from nodes.decoding.policies import Decision, VerificationPolicy, VerifyContext


@dataclass
class RoundOutcome:
    """A round in progress or decided: the policy's view (``ctx``), the draft positions that
    differ from the target's choice, the rows still needed from the device (empty once decided),
    the decision, the edge's compute time in ms (forward + policy), and the committed tokens
    the forward prefilled beyond the one it always re-feeds (the prompt, on a first round)."""

    ctx: VerifyContext
    policy: VerificationPolicy
    verify_ms: float
    n_prefill: int = 0
    request_rows: list[int] = field(default_factory=list)
    decision: Decision | None = None

    @property
    def mismatches(self) -> list[int]:
        """Draft positions that differ from the target's choice."""
        return self.ctx.mismatch_positions()

    @property
    def new_tokens(self) -> list[int]:
        """Tokens this round commits: the accepted draft prefix, then the next (or bonus) token."""
        if self.decision is None:
            raise RuntimeError("the round is not decided yet")
        return self.ctx.draft_tokens[: self.decision.accepted].tolist() + [self.decision.next_token]

    def decide(self) -> "RoundOutcome":
        """Run the policy, or ask for the drafter hidden states it needs and does not have."""
        if self.policy.needs_drafter_hidden and self.ctx.drafter_hidden is None and self.mismatches:
            self.request_rows = list(self.mismatches)
            return self
        t0 = time.perf_counter()
        self.decision = self.policy.verify(self.ctx)
        self.request_rows = []
        # an oracle's look-ahead (Decision.extra["lookahead_ms"]) is the experiment's bookkeeping,
        # not the edge's compute
        self.verify_ms += (time.perf_counter() - t0) * 1000.0 - self.decision.extra.get("lookahead_ms", 0.0)
        return self

    def supply_hidden(self, positions: list[int], rows: torch.Tensor) -> "RoundOutcome":
        """Complete a round that asked for rows: ``rows`` [len(positions), Hd] are the drafter
        hidden states at ``positions`` (exactly those requested, each once); then decide.
        ValueError, before anything is allocated, for other positions or a ``rows`` of another
        shape than [len(positions), Hd]."""
        if len(set(positions)) != len(positions) or sorted(positions) != sorted(self.request_rows):
            raise ValueError(f"rows for positions {positions}, but {self.request_rows} were requested (each once)")
        if rows.ndim != 2 or rows.shape[0] != len(positions):
            raise ValueError(f"rows of shape {list(rows.shape)} for {len(positions)} positions; expected [positions, Hd]")
        full = torch.zeros(self.ctx.gamma, rows.shape[1])
        full[torch.tensor(positions, dtype=torch.long)] = rows.float()
        self.ctx.drafter_hidden = full
        return self.decide()


def verify_round(verifier, policy: VerificationPolicy, seq: list[int], draft: list[int], *,
                 drafter_probs: torch.Tensor | None = None, drafter_hidden: torch.Tensor | None = None,
                 csi: CSI | None = None, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> RoundOutcome:
    """One target forward over ``draft`` after the committed ``seq`` (token ids) and the policy's
    decision (or its request for drafter hidden rows); see :class:`RoundOutcome`."""
    n_prefill = max(0, len(seq) - verifier.lm.cache_len - 1)
    logits, hidden, forward_ms = verifier.score(seq, draft)
    ctx = VerifyContext(torch.tensor(draft), logits, hidden, drafter_probs, drafter_hidden, csi, temperature, generator,
                        committed=seq)
    return RoundOutcome(ctx, policy, forward_ms, n_prefill).decide()
