"""A request in progress at the edge: the state a session keeps between rounds, opened by the
protocol's edge side (:meth:`nodes.protocols.EdgeSide.start`) and advanced by the edge's
handlers (:mod:`nodes.edge`)."""
from __future__ import annotations

from dataclasses import dataclass

from nodes.decoding.round import RoundOutcome


@dataclass
class Request:
    """A request in progress at the edge: its committed tokens (prompt included), the prompt's
    length, its token budget, the round expected next and a round waiting for the drafter
    hidden rows it asked for (mismatch-first)."""

    request_id: str
    seq: list[int]
    prompt_len: int
    max_new_tokens: int
    round: int = 0
    pending: RoundOutcome | None = None
