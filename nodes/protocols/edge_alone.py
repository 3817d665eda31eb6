"""``ar-edge``: no drafting, the target decodes the whole request alone at the edge.

Its exchange differs from draft-and-verify: the device sends ``start`` and waits for one
``result`` holding every output token; the edge answers ``start`` by decoding, and refuses
drafts (its session has no policy). The device logs the request as one round (γ = 0).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nodes.protocols.base import DeviceSide, EdgeHost, EdgeSide, EdgeSetup, Protocol, RequestDriver, SessionState

if TYPE_CHECKING:
    from nodes.telemetry import RoundLog
    from nodes.wire import Message, Start


class EdgeAloneDevice(DeviceSide):
    """One ``start`` → ``result`` exchange per request."""

    def run_request(self, client: RequestDriver, request_id: str, prompt: list[int], max_new_tokens: int,
                    rounds: list["RoundLog"]) -> list[int]:
        """Send the prompt, receive the target's output; one round record."""
        from nodes.wire import Result, Start

        rnd = client.begin_round(0)
        res: Result = client.exchange(Start(request_id, list(prompt), max_new_tokens, client.secret), (Result,), rnd)
        out = list(res.tokens)
        rounds.append(client.finish_round(rnd, request_id, gamma=0, drafted=0, reply=res, new_tokens=out, done=True))
        return out


class EdgeAloneEdge(EdgeSide):
    """Decodes a request's prompt to the end (EOS, a stop rule of the edge's task, or
    ``max_new_tokens``) when it starts."""

    def __init__(self, protocol: "Protocol", setup: EdgeSetup):
        self.protocol, self.setup, self.policy = protocol, setup, None  # nothing to verify

    def start(self, edge: EdgeHost, session: SessionState, msg: "Start") -> "Message":
        """The whole output, with the compute time (ms) it took."""
        from nodes.decoding import autoregressive_generate
        from nodes.wire import Result

        t0 = time.perf_counter()
        out = autoregressive_generate(session.verifier.lm, msg.prompt, msg.max_new_tokens, edge.eos,
                                      stop=edge.stop_rules)
        return Result(msg.request_id, out, (time.perf_counter() - t0) * 1000.0)


@dataclass(frozen=True)
class EdgeAlone(Protocol):
    """A protocol whose edge decodes alone (no head, policy or oracle)."""

    device_side: type[DeviceSide] = EdgeAloneDevice
    edge_side: type[EdgeSide] = EdgeAloneEdge

    def validate(self) -> None:
        """Nothing to verify: no head, policy or oracle; no uploads."""
        if self.head is not None or self.policy is not None or self.oracle or self.upload != "none":
            raise ValueError(f"{self.name}: the target decodes alone; it verifies and uploads nothing")
