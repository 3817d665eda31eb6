"""The verification protocols (SPEC §4): the one registry of protocol names.

A :class:`Protocol` is declared data plus a behaviour per node (:mod:`nodes.protocols.base`: a
device side with per-round hooks — draft length, upload, feedback — and an edge side with the
decision), as Hugging Face's ``CandidateGenerator`` owns its strategy and its feedback. One
module per behaviour family: :mod:`~nodes.protocols.base` (draft and verify),
:mod:`~nodes.protocols.adaptive` (the per-round upload choice), :mod:`~nodes.protocols.edge_alone`
(the target decodes alone). The device, the edge, the simulator, the CLI choices, spec
validation and the report order all read :data:`PROTOCOLS`, the only list of names; adding a
protocol is one :meth:`ProtocolRegistry.register` call (plus its module, if its behaviour is new).
docs/protocols.md says how.

| name            | uplink                                     | edge decision                   |
|-----------------|--------------------------------------------|---------------------------------|
| ar-edge         | the prompt                                 | the target decodes alone        |
| vanilla         | token ids (+ drafter probabilities if sampling) | exact match / rejection sampling |
| wisv-full       | token ids + drafter hidden of every token  | match OR head (drafter+target)  |
| wisv-selective  | token ids; hidden of mismatches on request | same head, fed where needed     |
| wisv-adaptive   | per round, full or mismatch-first, whichever the CSI makes cheaper (SPEC §6) | same head |
| wisv-target     | token ids                                  | head on target features only    |
| topk            | token ids                                  | match OR in the target's top-2 (non-learned) |
| typical         | token ids                                  | Medusa typical acceptance (non-learned)      |
| oracle          | token ids                                  | match OR the mining's label says harmless (an upper bound, needs the task's answers) |
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from nodes.decoding.policies import ExactMatch, RejectionSampling, TopKAcceptance, TypicalAcceptance, VerificationPolicy
from nodes.protocols.adaptive import AdaptiveUploadDevice, UploadChooser, upload_costs_ms
from nodes.protocols.base import (DEFAULT_HEAD_DIR, UPLOADS, DeviceSetup, DeviceSide, EdgeSetup, EdgeSide, Protocol,
                                  RoundStart, head_file)
from nodes.protocols.edge_alone import EdgeAlone

__all__ = ["DEFAULT_HEAD_DIR", "PROTOCOLS", "UPLOADS", "AdaptiveUploadDevice", "DeviceSetup", "DeviceSide", "EdgeAlone",
           "EdgeSetup", "EdgeSide", "Protocol", "ProtocolRegistry", "RoundStart", "UploadChooser", "check_heads",
           "head_file", "upload_costs_ms"]


class ProtocolRegistry:
    """Protocols by name, in report order; the only list of protocol names."""

    def __init__(self, *protocols: Protocol):
        self._by_name: dict[str, Protocol] = {}
        for p in protocols:
            self.register(p)

    def register(self, protocol: Protocol) -> Protocol:
        """Add ``protocol``; ValueError if its name is taken."""
        if protocol.name in self._by_name:
            raise ValueError(f"protocol {protocol.name!r} is already registered")
        self._by_name[protocol.name] = protocol
        return protocol

    def unregister(self, name: str) -> None:
        """Remove a protocol (tests that register their own)."""
        self._by_name.pop(name, None)

    def get(self, name: str) -> Protocol:
        """The protocol called ``name``; ValueError naming the known ones otherwise."""
        if name not in self._by_name:
            raise ValueError(f"unknown protocol {name!r}; known: {', '.join(self._by_name)}")
        return self._by_name[name]

    def names(self) -> list[str]:
        """Every name, in report order."""
        return list(self._by_name)

    def default_comparison(self) -> list[str]:
        """The protocols of the built-in comparison."""
        return [n for n, p in self._by_name.items() if p.in_default]

    def with_head(self) -> list[str]:
        """Protocols whose edge runs a decision head."""
        return [n for n, p in self._by_name.items() if p.head is not None]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Protocol]:
        return iter(self._by_name.values())

    def __getitem__(self, name: str) -> Protocol:
        return self.get(name)


def _exact_or_sampled(temperature: float) -> VerificationPolicy:
    return RejectionSampling() if temperature > 0 else ExactMatch()


PROTOCOLS = ProtocolRegistry(
    Protocol("vanilla", "exact match (greedy) or Leviathan rejection sampling", policy=_exact_or_sampled,
             in_default=True),
    EdgeAlone("ar-edge", "no drafting: the target decodes alone at the edge"),
    Protocol("wisv-full", "hidden state of every draft token uploaded; head on drafter+target", upload="all",
             head="full", in_default=True),
    Protocol("wisv-selective", "mismatch-first: hidden states of mismatched positions on request", upload="mismatch",
             head="full", in_default=True),
    Protocol("wisv-adaptive", "full or mismatch-first upload per round, whichever the CSI makes cheaper",
             upload="adaptive", head="full", device_side=AdaptiveUploadDevice),
    Protocol("wisv-target", "nothing uploaded; head on target features only (Judge-Decoding-like)", head="target"),
    Protocol("topk", "accept a draft token in the target's top-2 (non-learned)", policy=lambda t: TopKAcceptance(k=2),
             greedy_only=True),
    Protocol("typical", "Medusa typical acceptance (non-learned)", policy=lambda t: TypicalAcceptance(),
             greedy_only=True),
    Protocol("oracle", "accept exactly the mismatches the mining labels harmless (an upper bound for heads)",
             oracle=True),
)


def check_heads(protocols: list[str], head_dir: str | Path | None, pair: dict[str, dict]) -> None:
    """Before a run: ValueError when the head of any of ``protocols`` does not belong to ``pair``
    (``{"drafter": identity, "target": identity}``) or is missing."""
    from nodes.head import DecisionHead, check_pair

    for name in protocols:
        p = PROTOCOLS.get(name)
        if p.head is not None:
            path = head_file(head_dir, p.head)
            check_pair(DecisionHead.load(path).spec, pair["target"], pair["drafter"], where=f"{name}'s head {path}")
