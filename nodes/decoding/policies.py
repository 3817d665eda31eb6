"""Verification policies: given a draft and the target's view of it, how many tokens stand.

Glossary (as vLLM's rejection sampler): *accepted* tokens are draft tokens that stand; the
*next* token is the target's correction at the first rejected position, or the *bonus* token
when every draft token stands. A policy sees per draft position the draft token, the target's
logits and hidden state, and optionally the drafter's probabilities and hidden states.

Lossless: :class:`ExactMatch` (greedy), :class:`RejectionSampling` (Leviathan et al. 2023).
Lossy, non-learned baselines: :class:`TopKAcceptance`, :class:`TypicalAcceptance` (Medusa).
The learned WISV head policies live in ``nodes.head``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from channel_models.csi import CSI


@dataclass
class VerifyContext:
    """What a policy sees for one round.

    draft_tokens [γ]; target_logits [γ+1, V] (row i predicts the token after input i: rows 0..γ-1
    score draft tokens 1..γ, row γ gives the bonus); target_hidden [γ+1, H] (row 0 is the last
    committed token, row i ≥ 1 the state at draft token i); drafter_probs [γ, V] and drafter_hidden
    [γ, Hd] (the drafter state that produced draft token i) when uploaded; csi: the device's report;
    committed: the committed token ids before the draft (prompt included)."""

    draft_tokens: torch.Tensor
    target_logits: torch.Tensor
    target_hidden: torch.Tensor | None = None
    drafter_probs: torch.Tensor | None = None
    drafter_hidden: torch.Tensor | None = None
    csi: CSI | None = None
    temperature: float = 0.0
    generator: torch.Generator | None = None
    committed: list[int] | None = None
    _greedy: torch.Tensor | None = field(default=None, repr=False)
    _mismatches: list[int] | None = field(default=None, repr=False)

    @property
    def gamma(self) -> int:
        """Number of draft tokens."""
        return int(self.draft_tokens.shape[0])

    def target_greedy(self) -> torch.Tensor:
        """The target's argmax at every row [γ+1] (computed once per round)."""
        if self._greedy is None:
            self._greedy = self.target_logits.argmax(dim=-1)
        return self._greedy

    def matches(self) -> torch.Tensor:
        """[γ] bool: draft token i is the target's own choice."""
        return self.draft_tokens == self.target_greedy()[: self.gamma]

    def mismatch_positions(self) -> list[int]:
        """Draft positions whose token differs from the target's choice (computed once per round)."""
        if self._mismatches is None:
            self._mismatches = (~self.matches()).nonzero().flatten().tolist()
        return self._mismatches


@dataclass
class Decision:
    """A policy's decision on one round: ``accepted`` draft tokens stand, then ``next_token``.
    ``accepted_exact``: exact-match prefix length; ``first_mismatch``: index of the first draft
    token that differs from the target's choice (None if none); ``harmless``: mismatches judged
    harmless. The same names run through :class:`nodes.wire.Verdict` to the round log's columns
    (:class:`nodes.telemetry.RoundLog`)."""

    accepted: int
    next_token: int
    accepted_exact: int
    first_mismatch: int | None
    harmless: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def accepted_prefix(ok: torch.Tensor) -> int:
    """Length of the leading run of True in a bool vector."""
    bad = (~ok).nonzero()
    return int(bad[0, 0]) if bad.numel() else int(ok.shape[0])


def exact_prefix(ctx: VerifyContext) -> tuple[int, int | None, torch.Tensor]:
    """(exact-match prefix length, first mismatch index or None, target argmax [γ+1])."""
    n = accepted_prefix(ctx.matches())
    return n, (n if n < ctx.gamma else None), ctx.target_greedy()


class VerificationPolicy(ABC):
    """One verification rule. Subclasses set ``name`` and implement :meth:`verify`."""

    name: str = "base"
    needs_drafter_hidden: bool = False  # at mismatched positions: the edge asks for them when absent
    needs_drafter_probs: bool = False

    @abstractmethod
    def verify(self, ctx: VerifyContext) -> Decision:
        """Decide how many draft tokens stand and which token follows them."""

    def start_request(self, request_id: str, prompt: list[int], max_new_tokens: int) -> None:
        """A new request begins (prompt token ids); a policy with per-request state resets it."""


class ExactMatch(VerificationPolicy):
    """Greedy vanilla: a draft token stands only if it is the target's argmax."""

    name = "exact"

    def verify(self, ctx: VerifyContext) -> Decision:
        n, first, greedy = exact_prefix(ctx)
        return Decision(accepted=n, next_token=int(greedy[n]), accepted_exact=n, first_mismatch=first)


def _probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits / temperature, dim=-1)


class RejectionSampling(VerificationPolicy):
    """Leviathan et al. (2023) speculative sampling: accept draft token x with probability
    min(1, p(x)/q(x)); on rejection sample from norm(max(0, p − q)); if all stand, sample the
    bonus from p. The output is distributed exactly as the target's sampling distribution."""

    name = "rejection-sampling"
    needs_drafter_probs = True

    def verify(self, ctx: VerifyContext) -> Decision:
        if ctx.temperature <= 0 or ctx.drafter_probs is None:
            raise ValueError("rejection sampling needs temperature > 0 and the drafter's probabilities")
        p = _probs(ctx.target_logits, ctx.temperature)
        q = ctx.drafter_probs
        g = ctx.gamma
        idx = torch.arange(g)
        px, qx = p[idx, ctx.draft_tokens], q[idx, ctx.draft_tokens]
        u = torch.rand(g, generator=ctx.generator, dtype=p.dtype)
        ok = u <= torch.clamp(px / qx.clamp_min(1e-20), max=1.0)
        n = accepted_prefix(ok)
        n_exact, first, _ = exact_prefix(ctx)
        if n < g:
            residual = torch.clamp(p[n] - q[n], min=0.0)
            total = residual.sum()
            dist = residual / total if total > 0 else p[n]
            nxt = int(torch.multinomial(dist, 1, generator=ctx.generator))
        else:
            nxt = int(torch.multinomial(p[g], 1, generator=ctx.generator))
        return Decision(accepted=n, next_token=nxt, accepted_exact=n_exact, first_mismatch=first)


class _RelaxedPolicy(VerificationPolicy):
    """Shared rule of lossy policies: a draft token stands if it matches the target's choice OR
    ``tolerate`` says so; the prefix of standing tokens is accepted; then the target's argmax."""

    def tolerate(self, ctx: VerifyContext) -> torch.Tensor:  # [γ] bool
        raise NotImplementedError

    def verify(self, ctx: VerifyContext) -> Decision:
        n_exact, first, greedy = exact_prefix(ctx)
        match = ctx.matches()
        ok = match | self.tolerate(ctx)
        n = accepted_prefix(ok)
        return Decision(accepted=n, next_token=int(greedy[n]), accepted_exact=n_exact, first_mismatch=first,
                        harmless=int((~match[:n]).sum()))


class TopKAcceptance(_RelaxedPolicy):
    """Accept a draft token that lies in the target's top-k (a non-learned relaxed baseline)."""

    name = "topk"

    def __init__(self, k: int = 2):
        if k < 1:
            raise ValueError("k must be >= 1")
        self.k = k

    def tolerate(self, ctx: VerifyContext) -> torch.Tensor:
        top = ctx.target_logits[: ctx.gamma].topk(self.k, dim=-1).indices
        return (top == ctx.draft_tokens[:, None]).any(dim=-1)



class TypicalAcceptance(_RelaxedPolicy):
    """Medusa's typical acceptance (Cai et al. 2024): accept x if p(x) > min(ε, δ·exp(−H(p))),
    with the target distribution p at temperature 1; defaults ε = 0.09, δ = 0.3 (Medusa's)."""

    name = "typical"

    def __init__(self, epsilon: float = 0.09, delta: float = 0.3):
        self.epsilon, self.delta = epsilon, delta

    def tolerate(self, ctx: VerifyContext) -> torch.Tensor:
        p = torch.softmax(ctx.target_logits[: ctx.gamma], dim=-1)
        entropy = -(p * torch.log(p.clamp_min(1e-20))).sum(dim=-1)
        threshold = torch.minimum(torch.full_like(entropy, self.epsilon), self.delta * torch.exp(-entropy))
        px = p[torch.arange(ctx.gamma), ctx.draft_tokens]
        return px > threshold
