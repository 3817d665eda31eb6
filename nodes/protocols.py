"""The verification protocols (SPEC §4): the one registry of protocol names.

A :class:`Protocol` is a strategy object, as Hugging Face's ``CandidateGenerator``: it says what
the device uploads and when (including ``wisv-adaptive``'s per-round choice), which policy and
head the edge runs, and whether it is part of the default comparison. The device, the edge, the
simulator, the CLI choices, spec validation and the report order all read :data:`PROTOCOLS`;
adding a protocol is one :meth:`ProtocolRegistry.register` call (plus its policy, if new).

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

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from channel_models.csi import CSI
from nodes.decoding.policies import (ExactMatch, RejectionSampling, TopKAcceptance, TypicalAcceptance,
                                     VerificationPolicy)

DEFAULT_HEAD_DIR = Path(__file__).resolve().parent / "pretrained" / "default"
UPLOADS = ("none", "all", "mismatch", "adaptive")


def head_file(head_dir: str | Path | None, kind: str) -> Path:
    """The head file of ``kind`` (``full``: drafter+target features; ``target``: target only) in
    ``head_dir`` (default: the shipped heads)."""
    return Path(head_dir or DEFAULT_HEAD_DIR) / f"head-{kind}.safetensors"


@dataclass(frozen=True)
class Protocol:
    """One verification protocol.

    upload: what the device sends with a draft — ``none`` (token ids), ``all`` (the drafter's
    hidden state of every draft token), ``mismatch`` (none up front; the edge asks for the
    mismatched rows) or ``adaptive`` (``all`` or ``mismatch`` per round, from the CSI).
    edge_only: the target decodes alone (no drafting). head: the kind of decision head the edge
    runs (``full``/``target``) or None. policy: the edge's policy for a temperature (protocols
    without a head). oracle: the edge accepts what :mod:`nodes.oracle` labels harmless (it needs
    the run's task). greedy_only: refuses temperature > 0. in_default: part of the built-in
    comparison."""

    name: str
    summary: str
    upload: str = "none"
    edge_only: bool = False
    head: str | None = None
    policy: Callable[[float], VerificationPolicy] | None = None
    oracle: bool = False
    greedy_only: bool = False
    in_default: bool = False

    def __post_init__(self) -> None:
        if self.upload not in UPLOADS:
            raise ValueError(f"{self.name}: upload must be one of {UPLOADS}")
        if not self.edge_only and [self.head is not None, self.policy is not None, self.oracle].count(True) != 1:
            raise ValueError(f"{self.name}: a drafting protocol has exactly one of head, policy or oracle")

    def check_temperature(self, temperature: float) -> None:
        """ValueError when this protocol cannot verify at ``temperature``."""
        if temperature > 0 and (self.greedy_only or self.head is not None or self.oracle):
            raise ValueError(f"{self.name} verifies greedily (temperature 0)")

    def edge_policy(self, temperature: float, head_dir: str | Path | None = None, lambda_ms: float | None = None,
                    pair: dict[str, dict | None] | None = None, oracle=None) -> VerificationPolicy:
        """The policy the edge runs (a head from ``head_dir``, refused with ValueError when it
        does not belong to ``pair``, the :func:`nodes.models.model_identity` of target and
        drafter; ``lambda_ms`` overrides its price of an accuracy-changing acceptance; ``oracle``,
        a :class:`nodes.oracle.AnswerOracle`, for the oracle protocol)."""
        self.check_temperature(temperature)
        if self.oracle:
            from nodes.oracle import OracleAcceptance

            if oracle is None:
                raise ValueError(f"{self.name} needs the run's task at the edge (a simulated run, or an edge "
                                 "started with --config)")
            return OracleAcceptance(oracle)
        if self.head is not None:
            from nodes.head import DecisionHead, HeadPolicy, check_pair

            path = head_file(head_dir, self.head)
            head = DecisionHead.load(path)
            if pair is not None:
                check_pair(head.spec, pair["target"], pair.get("drafter"), where=f"{self.name}'s head {path}")
            return HeadPolicy(head, lambda_ms=lambda_ms)
        if self.policy is None:
            raise ValueError(f"{self.name}: the target decodes alone; there is nothing to verify")
        return self.policy(temperature)

    def sends_probs(self, temperature: float) -> bool:
        """True when drafts carry the drafter's probabilities (sampled verification)."""
        return temperature > 0 and not self.greedy_only and self.head is None

    def round_upload(self, choose: Callable[[int, CSI], str], gamma: int, csi: CSI) -> str:
        """What the device uploads this round: ``all``, ``mismatch`` or ``none``; ``choose``
        decides for ``adaptive`` (see :class:`nodes.device.UploadChooser`)."""
        return choose(gamma, csi) if self.upload == "adaptive" else self.upload


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
    Protocol("ar-edge", "no drafting: the target decodes alone at the edge", edge_only=True),
    Protocol("wisv-full", "hidden state of every draft token uploaded; head on drafter+target", upload="all",
             head="full", in_default=True),
    Protocol("wisv-selective", "mismatch-first: hidden states of mismatched positions on request", upload="mismatch",
             head="full", in_default=True),
    Protocol("wisv-adaptive", "full or mismatch-first upload per round, whichever the CSI makes cheaper",
             upload="adaptive", head="full"),
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
