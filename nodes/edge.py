"""The edge node: the target model behind a ZeroMQ ROUTER, one session per device.

Each session has its own target KV cache and verification policy. A message the edge cannot
accept (malformed, oversized, out of order, unauthenticated, over the session limit) gets an
:class:`~nodes.wire.Error` reply or is dropped, and the edge keeps serving everyone else. A
duplicate of the last round's message (a device retrying after a timeout) gets the same reply
again, so retries are safe.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
import zmq

from channel_models.csi import CSI
from nodes.decoding import RoundOutcome, Verifier, autoregressive_generate, verify_round
from nodes.decoding.policies import VerificationPolicy
from nodes.profiles import ComputeProfile, sleep_ms
from nodes.protocols import PROTOCOLS, Protocol
from nodes.wire import (Bye, Draft, Error, Hello, HelloAck, HiddenRequest, HiddenUpload, Message, Result, Start,
                        StartAck, Verdict, WireError, decode, encode)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EdgeLimits:
    """max_message_bytes: larger messages are refused unread by ZeroMQ and rejected by decode;
    max_gamma: longest draft; max_sessions: concurrent devices; max_new_tokens: per request."""

    max_message_bytes: int = 8 << 20
    max_gamma: int = 32
    max_sessions: int = 64
    max_new_tokens: int = 1024
    idle_timeout_s: float = 60.0  # a full edge evicts sessions idle this long (a device that vanished)


@dataclass
class Request:
    """A request in progress at the edge."""

    request_id: str
    seq: list[int]
    prompt_len: int
    max_new_tokens: int
    round: int = 0
    pending: RoundOutcome | None = None  # a round waiting for the drafter hidden rows it asked for


@dataclass
class Session:
    """One device's session."""

    sid: int
    hello: Hello
    protocol: Protocol
    verifier: Verifier
    policy: VerificationPolicy | None
    request: Request | None = None
    last_key: tuple | None = None
    last_reply: list[bytes] = field(default_factory=list)
    generator: torch.Generator = field(default_factory=torch.Generator)
    last_seen: float = field(default_factory=time.monotonic)


class EdgeServer:
    """Serves verification for many devices; ``serve()`` runs until ``stop()``. Heads come from
    ``head_dir`` (default: the shipped ones); ``lambda_ms`` overrides their accuracy price;
    ``profile`` pads verification compute (slept with a socket, only logged without one: the
    simulator charges it to its virtual clock)."""

    def __init__(self, target: torch.nn.Module, eos_token_id: int | None, bind: str | None = "tcp://0.0.0.0:5555",
                 limits: EdgeLimits = EdgeLimits(), token: str = "", head_dir: str | None = None,
                 curve_secret_key: bytes | None = None, profile: ComputeProfile = ComputeProfile(),
                 lambda_ms: float | None = None):
        self.target, self.eos, self.limits, self.token = target, eos_token_id, limits, token
        self.profile, self.lambda_ms, self.head_dir = profile, lambda_ms, head_dir
        self.sock = None
        self.endpoint = ""
        if bind is not None:  # bind=None: no socket, frames are handed in directly (simulation)
            self.sock = zmq.Context.instance().socket(zmq.ROUTER)
            self.sock.setsockopt(zmq.MAXMSGSIZE, limits.max_message_bytes)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting device takes over its identity
            if curve_secret_key is not None:
                self.sock.curve_server = True
                self.sock.curve_secretkey = curve_secret_key
            self.sock.bind(bind)
            self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sessions: dict[bytes, Session] = {}
        self._next_sid = 1
        self._running = True
        self.stats = {"messages": 0, "errors": 0, "rounds": 0}

    def stop(self) -> None:
        """Ask ``serve`` to return."""
        self._running = False

    def close(self) -> None:
        """Close the socket."""
        if self.sock is not None:
            self.sock.close(0)

    def serve(self, poll_ms: int = 100, until: float | None = None) -> None:
        """Handle messages until stopped (or until monotonic second ``until``)."""
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while self._running and (until is None or time.monotonic() < until):
            if not poller.poll(poll_ms):
                continue
            frames = self.sock.recv_multipart(copy=True)
            if len(frames) < 2:
                continue
            reply = self.handle_frames(frames[0], frames[1:])
            if reply is not None:
                self.sock.send_multipart([frames[0], *reply])

    def handle_frames(self, ident: bytes, body: list[bytes]) -> list[bytes] | None:
        """The reply frames to one message from device ``ident`` (None: no reply); never raises."""
        self.stats["messages"] += 1
        try:
            return self._handle(ident, decode(body, self.limits.max_message_bytes))
        except WireError as e:
            self.stats["errors"] += 1
            log.warning("rejected a message from %r: %s", ident, e)
            return encode(Error(e.code, str(e)))
        except Exception as e:  # a bug must not take the edge down for everyone
            self.stats["errors"] += 1
            log.exception("internal error serving %r", ident)
            return encode(Error("internal", f"{type(e).__name__}: {e}"))

    # ------------------------------------------------------------------ handlers
    def _handle(self, ident: bytes, msg: Message) -> list[bytes] | None:
        if isinstance(msg, Hello):
            return self._hello(ident, msg)
        s = self.sessions.get(ident)
        if s is None:
            raise WireError("no_session", "send hello first")
        s.last_seen = time.monotonic()
        if isinstance(msg, Bye):
            del self.sessions[ident]
            return None
        key = (type(msg).__name__, getattr(msg, "request_id", ""), getattr(msg, "round", None))
        if key == s.last_key and s.last_reply:
            return s.last_reply  # a retry: same answer, no recomputation
        if isinstance(msg, Start):
            reply = self._start(s, msg)
        elif isinstance(msg, Draft):
            reply = self._draft(s, msg)
        elif isinstance(msg, HiddenUpload):
            reply = self._hidden(s, msg)
        else:
            raise WireError("unknown_type", f"{msg.TYPE} is not a request an edge serves")
        s.last_key, s.last_reply = key, reply
        return reply

    def _hello(self, ident: bytes, h: Hello) -> list[bytes]:
        if self.token and h.token != self.token:
            raise WireError("unauthenticated", "wrong or missing token")
        try:
            protocol = PROTOCOLS.get(h.protocol)
        except ValueError as e:
            raise WireError("bad_request", str(e)) from None
        if not 1 <= h.gamma <= self.limits.max_gamma:
            raise WireError("bad_request", f"gamma {h.gamma} outside 1..{self.limits.max_gamma}")
        if ident not in self.sessions and len(self.sessions) >= self.limits.max_sessions:
            now = time.monotonic()
            for k in [k for k, v in self.sessions.items() if now - v.last_seen > self.limits.idle_timeout_s]:
                log.info("evicting idle session %d", self.sessions.pop(k).sid)
        if ident not in self.sessions and len(self.sessions) >= self.limits.max_sessions:
            raise WireError("too_many_sessions", f"the edge serves at most {self.limits.max_sessions} devices")
        try:
            policy = None if protocol.edge_only else protocol.edge_policy(h.temperature, self.head_dir, self.lambda_ms)
        except (ValueError, FileNotFoundError) as e:
            raise WireError("bad_request", str(e)) from None
        s = Session(self._next_sid, h, protocol, Verifier(self.target), policy)
        s.generator.manual_seed(h.seed + 7)
        self._next_sid += 1
        self.sessions[ident] = s
        return encode(HelloAck(s.sid, self.limits.max_gamma, int(self.target.config.hidden_size)))

    def _start(self, s: Session, m: Start) -> list[bytes]:
        vocab = int(self.target.config.vocab_size)
        if not m.prompt or any(not 0 <= t < vocab for t in m.prompt):
            raise WireError("bad_request", "prompt must be non-empty token ids within the vocabulary")
        if not 1 <= m.max_new_tokens <= self.limits.max_new_tokens:
            raise WireError("bad_request", f"max_new_tokens outside 1..{self.limits.max_new_tokens}")
        if s.protocol.edge_only:
            t0 = time.perf_counter()
            out = autoregressive_generate(s.verifier.lm, m.prompt, m.max_new_tokens, self.eos)
            return encode(Result(m.request_id, out, (time.perf_counter() - t0) * 1000.0))
        s.verifier.reset()
        s.request = Request(m.request_id, list(m.prompt), len(m.prompt), m.max_new_tokens)
        return encode(StartAck(m.request_id))

    def _check_round(self, s: Session, request_id: str, rnd: int) -> Request:
        r = s.request
        if r is None or r.request_id != request_id:
            raise WireError("out_of_order", f"no request {request_id!r} in progress")
        if rnd != r.round:
            raise WireError("out_of_order", f"round {rnd} while round {r.round} is expected")
        return r

    def _draft(self, s: Session, m: Draft) -> list[bytes]:
        if s.protocol.edge_only:
            raise WireError("bad_request", f"{s.protocol.name} takes no drafts: the target decodes alone")
        r = self._check_round(s, m.request_id, m.round)
        if r.pending is not None:
            raise WireError("out_of_order", "hidden states for the previous draft are still awaited")
        g = len(m.tokens)
        vocab = int(self.target.config.vocab_size)
        if not 1 <= g <= s.hello.gamma or any(not 0 <= t < vocab for t in m.tokens):
            raise WireError("bad_request", f"draft must hold 1..{s.hello.gamma} token ids within the vocabulary")
        if s.policy.needs_drafter_probs and (m.probs is None or tuple(m.probs.shape) != (g, vocab)):
            raise WireError("bad_request", "rejection sampling needs the drafter probabilities [γ, V]")
        if m.hidden is not None and m.hidden.shape[0] != g:
            raise WireError("bad_request", "hidden states must have one row per draft token")
        r.pending = verify_round(s.verifier, s.policy, r.seq, list(m.tokens),
                                 drafter_probs=torch.as_tensor(m.probs) if m.probs is not None else None,
                                 drafter_hidden=torch.as_tensor(m.hidden) if m.hidden is not None else None,
                                 csi=CSI.from_wire(m.csi), temperature=s.hello.temperature, generator=s.generator)
        if r.pending.request_rows:  # mismatch-first: ask for the mismatched positions only
            return encode(HiddenRequest(m.request_id, m.round, r.pending.request_rows))
        return self._verdict(s, r)

    def _hidden(self, s: Session, m: HiddenUpload) -> list[bytes]:
        r = self._check_round(s, m.request_id, m.round)
        if r.pending is None or not r.pending.request_rows:
            raise WireError("out_of_order", "no hidden states were requested")
        if m.hidden is None or m.hidden.ndim != 2 or m.hidden.shape[0] != len(m.positions):
            raise WireError("bad_request", "hidden upload must hold one row per requested position")
        try:
            r.pending.supply_hidden(list(m.positions), torch.as_tensor(m.hidden))
        except ValueError as e:
            raise WireError("bad_request", str(e)) from None
        return self._verdict(s, r)

    def _verdict(self, s: Session, r: Request) -> list[bytes]:
        out, r.pending = r.pending, None
        v = out.decision
        pad_ms = self.profile.pad_ms(out.verify_ms, out.ctx.gamma)
        if pad_ms and self.sock is not None:
            sleep_ms(pad_ms)
        new = out.new_tokens
        r.seq.extend(new)
        s.verifier.commit(len(r.seq))
        produced = len(r.seq) - r.prompt_len
        done = (self.eos is not None and self.eos in new) or produced >= r.max_new_tokens
        reply = Verdict(r.request_id, r.round, v.n_accepted, v.next_token, v.n_exact,
                        -1 if v.first_mismatch is None else v.first_mismatch, v.n_harmless,
                        out.verify_ms + pad_ms, done, pad_ms)
        r.round += 1
        self.stats["rounds"] += 1
        if done:
            s.request = None
        return encode(reply)
