"""The verification protocols of SPEC §4: what the device uploads and which policy the edge runs.

| name            | uplink                                     | edge decision                   |
|-----------------|--------------------------------------------|---------------------------------|
| ar-edge         | the prompt                                 | the target decodes alone        |
| vanilla         | token ids (+ drafter probabilities if sampling) | exact match / rejection sampling |
| wisv-full       | token ids + drafter hidden of every token  | match OR head (drafter+target)  |
| wisv-selective  | token ids; hidden of mismatches on request | same head, fed where needed     |
| wisv-target     | token ids                                  | head on target features only    |
| wisv-adaptive   | per round, full or mismatch-first, whichever the CSI makes cheaper (SPEC §6) | same head |
| topk            | token ids                                  | match OR in the target's top-2 (non-learned) |
| typical         | token ids                                  | Medusa typical acceptance (non-learned)      |
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nodes.decoding.policies import (ExactMatch, RejectionSampling, TopKAcceptance, TypicalAcceptance,
                                     VerificationPolicy)

DEFAULT_HEADS = Path(__file__).resolve().parent / "pretrained" / "default"


@dataclass(frozen=True)
class Protocol:
    """name; hidden_upload (what the device sends; the edge asks for the mismatched rows of any
    draft that comes without them when its head needs them): ``none``, ``all``, ``mismatch``
    or ``adaptive`` (the device picks ``all`` or ``mismatch`` per round);
    edge_only: the target decodes alone; uses_head: the edge runs a decision head."""

    name: str
    hidden_upload: str = "none"
    edge_only: bool = False
    uses_head: bool = False


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("ar-edge", edge_only=True),
    Protocol("vanilla"),
    Protocol("wisv-full", hidden_upload="all", uses_head=True),
    Protocol("wisv-selective", hidden_upload="mismatch", uses_head=True),
    Protocol("wisv-target", uses_head=True),
    Protocol("wisv-adaptive", hidden_upload="adaptive", uses_head=True),
    Protocol("topk"),
    Protocol("typical"),
)}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; ValueError naming the known ones otherwise."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


def default_head_path(protocol: Protocol) -> Path:
    """The shipped head of a protocol (drafter+target features, or target-only for wisv-target)."""
    return DEFAULT_HEADS / ("head-target.safetensors" if protocol.name == "wisv-target" else "head-full.safetensors")


def edge_policy(protocol: Protocol, temperature: float, head_path: str | Path | None = None,
                lambda_ms: float | None = None) -> VerificationPolicy:
    """The verification policy the edge runs for ``protocol`` (``lambda_ms`` overrides the
    head's accuracy price)."""
    if protocol.uses_head or protocol.name in ("topk", "typical"):
        if temperature > 0:
            raise ValueError(f"{protocol.name} verifies greedily (temperature 0)")
    if protocol.uses_head:
        from nodes.head import DecisionHead, HeadPolicy

        return HeadPolicy(DecisionHead.load(head_path or default_head_path(protocol)), lambda_ms=lambda_ms)
    if protocol.name == "topk":
        return TopKAcceptance(k=2)
    if protocol.name == "typical":
        return TypicalAcceptance()
    return RejectionSampling() if temperature > 0 else ExactMatch()
