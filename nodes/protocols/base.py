"""What a verification protocol is: declared data plus two behaviours, one per node.

As Hugging Face's ``CandidateGenerator``, a protocol owns its behaviour and takes its own
feedback; the device's round loop (:class:`nodes.device.DeviceClient`) and the edge's handlers
(:class:`nodes.edge.EdgeServer`) call its hooks and know nothing of any one protocol.

* :class:`DeviceSide` — one device session's side, a fresh object per session (it may keep
  state): :meth:`~DeviceSide.run_request` (the exchange of a request: by default start, then
  draft-and-verify rounds through :meth:`nodes.device.DeviceClient.speculate`),
  :meth:`~DeviceSide.draft_length` (γ this round), :meth:`~DeviceSide.upload` (which drafter
  hidden rows travel with the draft) and :meth:`~DeviceSide.observe` (feedback: the finished
  round's record).
* :class:`EdgeSide` — one edge session's side: its decision (:attr:`EdgeSide.policy`, built from
  the protocol's head, policy or oracle) and :meth:`~EdgeSide.start` (what a request's ``start``
  does and answers).

A protocol is a :class:`Protocol` record naming those two classes; one with another exchange is
one module defining them, plus its registration in :data:`nodes.protocols.PROTOCOLS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol as Interface

from channel_models.csi import CSI
from nodes.decoding.policies import VerificationPolicy
from nodes.edge_request import Request

if TYPE_CHECKING:  # type hints only
    from nodes.decoding import Verifier
    from nodes.decoding.stopping import StopCriteria
    from nodes.telemetry import RoundLog
    from nodes.wire import Message, Start


class RequestDriver(Interface):
    """What a protocol's device side runs a request with: the device client
    (:class:`nodes.device.DeviceClient`), seen through the calls a protocol may make."""

    secret: str

    def speculate(self, request_id: str, prompt: list[int], max_new_tokens: int, rounds: list["RoundLog"],
                  side: "DeviceSide") -> list[int]:
        """Draft-and-verify rounds until the edge says the request is done; the output tokens."""

    def begin_round(self, rnd: int) -> Any:
        """Start round ``rnd``'s clock, byte counters and CSI report."""

    def exchange(self, msg: "Message", expect: tuple[type, ...], rnd: Any = None) -> "Message":
        """Send ``msg``; the edge's matching reply."""

    def finish_round(self, rnd: Any, request_id: str, **fields: Any) -> "RoundLog":
        """The record of a finished round."""


class EdgeHost(Interface):
    """What a protocol's edge side reads of the edge (:class:`nodes.edge.EdgeServer`)."""

    eos: int | None
    stop_rules: "StopCriteria | None"


class SessionState(Interface):
    """What a protocol's edge side reads and sets of a device's session (:class:`nodes.edge.Session`)."""

    verifier: "Verifier"
    request: Request | None

DEFAULT_HEAD_DIR = Path(__file__).resolve().parent.parent / "pretrained" / "default"
UPLOADS = ("none", "all", "mismatch", "adaptive")


def head_file(head_dir: str | Path | None, kind: str) -> Path:
    """The head file of ``kind`` (``full``: drafter+target features; ``target``: target only) in
    ``head_dir`` (default: the shipped heads)."""
    return Path(head_dir or DEFAULT_HEAD_DIR) / f"head-{kind}.safetensors"


@dataclass(frozen=True)
class DeviceSetup:
    """What a device session's protocol side is built from: ``gamma`` (the configured, and
    longest, draft length; tokens), ``temperature``, and ``bytes_per_row`` (one drafter hidden
    row on the wire: wire dtype × wire width, bytes)."""

    gamma: int
    temperature: float
    bytes_per_row: int


@dataclass(frozen=True)
class RoundStart:
    """What the device knows when a round begins: its index, the CSI report in force, the
    configured draft length ``gamma`` (the edge accepts no longer draft) and ``budget``, the
    tokens the request may still produce."""

    round: int
    csi: CSI
    gamma: int
    budget: int


@dataclass(frozen=True)
class EdgeSetup:
    """What an edge session's protocol side is built from: the hello's ``temperature``, the
    heads' folder ``head_dir``, ``lambda_ms`` (overrides a head's price of an accuracy-changing
    acceptance), ``pair`` (identities a head must belong to) and ``oracle`` (the run's
    :class:`nodes.oracle.AnswerOracle`, for the oracle protocol)."""

    temperature: float = 0.0
    head_dir: str | Path | None = None
    lambda_ms: float | None = None
    pair: dict[str, dict | None] | None = None
    oracle: object | None = None


class DeviceSide:
    """A protocol's device side for one session: draft and verify round by round, ``gamma``
    tokens a round (fewer when the budget is shorter), uploading what the protocol declares."""

    def __init__(self, protocol: "Protocol", setup: DeviceSetup):
        self.protocol, self.setup = protocol, setup

    def run_request(self, client: RequestDriver, request_id: str, prompt: list[int], max_new_tokens: int,
                    rounds: list["RoundLog"]) -> list[int]:
        """Run one request through ``client``'s primitives; returns the output tokens and appends
        each finished round's record to ``rounds``."""
        return client.speculate(request_id, prompt, max_new_tokens, rounds, self)

    def draft_length(self, start: RoundStart) -> int:
        """Draft tokens to ask of the drafter this round (1 … ``start.gamma``, within the budget)."""
        return min(start.gamma, start.budget)

    def upload(self, drafted: int, csi: CSI) -> str:
        """What goes with a draft of ``drafted`` tokens sent at ``csi`` (the channel in force
        once the draft is ready): ``all`` (every drafter hidden row), ``mismatch`` (none now;
        the rows the edge asks for) or ``none``."""
        return self.protocol.upload

    def sends_probs(self) -> bool:
        """True when drafts carry the drafter's probabilities (sampled verification)."""
        return self.protocol.sends_probs(self.setup.temperature)

    def observe(self, record: "RoundLog") -> None:
        """Feedback: the record of a finished round (its verdict, times and bytes)."""


class EdgeSide:
    """A protocol's edge side for one session: the decision (the policy run on every draft)
    and the start of a request (reset the target's cache, open the request, acknowledge)."""

    def __init__(self, protocol: "Protocol", setup: EdgeSetup):
        self.protocol, self.setup = protocol, setup
        self.policy: VerificationPolicy | None = protocol.edge_policy(setup.temperature, setup.head_dir,
                                                                     setup.lambda_ms, setup.pair, setup.oracle)

    def start(self, edge: EdgeHost, session: SessionState, msg: "Start") -> "Message":
        """Open request ``msg`` (its prompt already checked) and return the reply."""
        from nodes.wire import StartAck

        session.verifier.reset()
        self.policy.start_request(msg.request_id, msg.prompt, msg.max_new_tokens)  # ValueError: refused
        session.request = Request(msg.request_id, list(msg.prompt), len(msg.prompt), msg.max_new_tokens)
        return StartAck(msg.request_id)


@dataclass(frozen=True)
class Protocol:
    """One verification protocol: draft on the device, verify at the edge.

    upload: what the device sends with a draft — ``none`` (token ids), ``all`` (the drafter's
    hidden state of every draft token), ``mismatch`` (none up front; the edge asks for the
    mismatched rows) or ``adaptive`` (chosen per round by the device side). head: the kind of
    decision head the edge runs (``full``/``target``) or None. policy: the edge's policy for a
    temperature (protocols without a head). oracle: the edge accepts what :mod:`nodes.oracle`
    labels harmless (it needs the run's task). greedy_only: refuses temperature > 0. in_default:
    part of the built-in comparison. device_side / edge_side: the behaviour classes, built per
    session (:meth:`device`, :meth:`edge`)."""

    name: str
    summary: str
    upload: str = "none"
    head: str | None = None
    policy: Callable[[float], VerificationPolicy] | None = None
    oracle: bool = False
    greedy_only: bool = False
    in_default: bool = False
    device_side: type[DeviceSide] = DeviceSide
    edge_side: type[EdgeSide] = EdgeSide

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """ValueError for a declaration the behaviours cannot run."""
        if self.upload not in UPLOADS:
            raise ValueError(f"{self.name}: upload must be one of {UPLOADS}")
        if self.upload == "adaptive" and self.device_side is DeviceSide:
            raise ValueError(f"{self.name}: an adaptive upload needs a device side that chooses it")
        if [self.head is not None, self.policy is not None, self.oracle].count(True) != 1:
            raise ValueError(f"{self.name}: a drafting protocol has exactly one of head, policy or oracle")

    def device(self, setup: DeviceSetup) -> DeviceSide:
        """A fresh device side for one session."""
        return self.device_side(self, setup)

    def edge(self, setup: EdgeSetup) -> EdgeSide:
        """A fresh edge side for one session; ValueError (or FileNotFoundError for a missing
        head) when it cannot serve ``setup``."""
        return self.edge_side(self, setup)

    def check_temperature(self, temperature: float) -> None:
        """ValueError when this protocol cannot verify at ``temperature``."""
        if temperature > 0 and (self.greedy_only or self.head is not None or self.oracle):
            raise ValueError(f"{self.name} verifies greedily (temperature 0)")

    def edge_policy(self, temperature: float, head_dir: str | Path | None = None, lambda_ms: float | None = None,
                    pair: dict[str, dict | None] | None = None, oracle=None) -> VerificationPolicy | None:
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
