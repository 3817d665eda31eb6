"""The edge node: the target model behind a ZeroMQ ROUTER, one session per device.

Each session has its own target KV cache and verification policy. A message the edge cannot
accept (malformed, oversized, out of order, unauthenticated, over the session limit) gets an
:class:`~nodes.wire.Error` reply or is dropped, and the edge keeps serving everyone else. A
duplicate of the last round's message (a device retrying after a timeout) gets the same reply
again, so retries are safe.

Hostile input is bounded before anything is allocated from it: a prompt must fit the target's
positions and :attr:`EdgeLimits.max_prompt_tokens`; array shapes are compared with the ones the
session expects (γ or the requested positions × the head's drafter width — or the wider
``hidden_wire_width`` the hello announced, whose zero padding is dropped before the head —,
γ × vocabulary) before a byte is decoded. A session is bound to its hello: ``hello_ack`` returns a random secret that
every later message must carry, so a peer that takes over a device's ZeroMQ identity can neither
read, advance, reset nor close its session. With CURVE, a ZAP handler (``zmq.auth``) admits only
client keys from an allow-list.

What a session does with a request is its protocol's (:class:`nodes.protocols.EdgeSide`: the
policy run on each draft, and what ``start`` does and answers). The edge times every round it
serves: a receiver thread stamps each message's arrival at the socket, and the verdict reports
the round's queue wait (arrival to the start of handling) and its whole stay at the edge, so the
device's ``link_ms`` is link time only.
"""
from __future__ import annotations

import hmac
import logging
import os
import queue
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import zmq

from channel_models.csi import CSI
from nodes.decoding import Verifier, verify_round
from nodes.decoding.stopping import StopCriteria
from nodes.decoding.policies import VerificationPolicy
from nodes.profiles import ComputeProfile, sleep_ms
from nodes.edge_request import Request
from nodes.models import model_identity
from nodes.protocols import PROTOCOLS, EdgeSetup, EdgeSide, Protocol
from nodes.wire import (WIRE_DTYPES, Bye, Draft, Envelope, Error, Hello, HelloAck, HiddenRequest, HiddenUpload, Message,
                        Result, Start, Verdict, WireError, decode_envelope, encode)

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 300  # error replies echo peer input: cut them
MAX_INBOX = 1024  # messages received and stamped but not yet handled (beyond: left in the socket)


@dataclass(frozen=True)
class EdgeLimits:
    """max_message_bytes: larger messages are refused unread by ZeroMQ and rejected by decode;
    max_gamma: longest draft; max_sessions: concurrent devices; max_new_tokens: per request;
    max_prompt_tokens: longest prompt (tokens; the target's positions bound it further)."""

    max_message_bytes: int = 8 << 20
    max_gamma: int = 32
    max_sessions: int = 64
    max_new_tokens: int = 1024
    max_prompt_tokens: int = 4096
    idle_timeout_s: float = 60.0  # a full edge evicts sessions idle this long (a device that vanished)


@dataclass(frozen=True)
class Arrival:
    """When a message reached the edge's socket: monotonic ms (for durations) and wall clock
    (epoch s, for the logs)."""

    perf_ms: float
    wall_s: float

    @classmethod
    def now(cls) -> "Arrival":
        """This instant."""
        return cls(time.perf_counter() * 1000.0, time.time())


@dataclass
class EdgeRoundTimes:
    """A round's time at the edge so far, summed over its exchanges (a draft, and a hidden
    upload when rows were asked for): queue wait and whole stay in ms, and the wall clock
    (epoch s) when its first message arrived (0: not measured)."""

    queue_ms: float = 0.0
    stay_ms: float = 0.0
    t_arrival: float = 0.0

    def add(self, arrival: Arrival | None, begin_ms: float, end_ms: float) -> None:
        """Count one exchange handled from ``begin_ms`` to ``end_ms`` (monotonic ms)."""
        if arrival is None:  # no socket (simulation): the round's time is its charged compute
            return
        self.queue_ms += max(0.0, begin_ms - arrival.perf_ms)
        self.stay_ms += max(0.0, end_ms - arrival.perf_ms)
        self.t_arrival = self.t_arrival or arrival.wall_s


@dataclass
class Session:
    """One device's session."""

    sid: int
    hello: Hello
    protocol: Protocol
    verifier: Verifier
    side: EdgeSide  # the protocol's edge side: the policy, and what start does
    request: Request | None = None
    last_key: tuple | None = None
    last_reply: list[bytes] = field(default_factory=list)
    generator: torch.Generator = field(default_factory=torch.Generator)
    last_seen: float = field(default_factory=time.monotonic)
    secret: str = ""  # returned in hello_ack; every later message must carry it
    ident: bytes = b""  # the ZeroMQ identity that last used the session
    drafter_width: int | None = None  # drafter hidden rows the policy reads are this wide (None: it reads none)
    wire_width: int | None = None  # ... and arrive this wide, zero-padded beyond drafter_width (hello.hidden_wire_width)
    times: EdgeRoundTimes = field(default_factory=EdgeRoundTimes)  # the round being served

    @property
    def policy(self) -> VerificationPolicy | None:
        """The policy run on each draft (None: the protocol verifies nothing)."""
        return self.side.policy


class EdgeServer:
    """Serves verification for many devices; ``serve()`` runs until ``stop()``. Heads come from
    ``head_dir`` (default: the shipped ones); ``lambda_ms`` overrides their accuracy price;
    ``profile`` pads verification compute (slept with a socket, only logged without one: the
    simulator charges it to its virtual clock)."""

    def __init__(self, target: torch.nn.Module, eos_token_id: int | None, bind: str | None = "tcp://0.0.0.0:5555",
                 limits: EdgeLimits = EdgeLimits(), token: str = "", head_dir: str | None = None,
                 curve_secret_key: bytes | None = None, profile: ComputeProfile = ComputeProfile(),
                 lambda_ms: float | None = None, curve_allow: str | os.PathLike | None = None, oracle=None,
                 stop_rules: StopCriteria | None = None):
        """``oracle``: a :class:`nodes.oracle.AnswerOracle` for the run's task (the ``oracle``
        protocol is refused without one). ``stop_rules``: where the run's task ends an output (its stop
        sequences and every EOS id, :func:`nodes.decoding.stopping.stop_criteria_for`); the edge
        decoding alone (``ar-edge``) stops there (default: at ``eos_token_id``). ``curve_allow``:
        with ``curve_secret_key``, the folder of allowed client public keys (``*.key``
        certificates), or ``zmq.auth.CURVE_ALLOW_ANY`` to admit any client key; CURVE without one
        of them is refused (ValueError)."""
        self.target, self.eos, self.limits, self.token = target, eos_token_id, limits, token
        self.profile, self.lambda_ms, self.head_dir, self.oracle = profile, lambda_ms, head_dir, oracle
        self.stop_rules = stop_rules
        self.identity = model_identity(target.config)  # what a decision head must belong to
        self.sock = None
        self.endpoint = ""
        self._ctx: zmq.Context | None = None
        self._auth = None
        if curve_allow is not None and curve_secret_key is None:
            raise ValueError("an allow-list of client keys needs CURVE (a curve secret key)")
        if bind is not None:  # bind=None: no socket, frames are handed in directly (simulation)
            self._ctx = zmq.Context()  # its own context: the ZAP handler is per context
            try:
                self._open_socket(bind, curve_secret_key, curve_allow)
            except Exception:
                self.close()
                raise
        self.sessions: dict[str, Session] = {}  # by session secret
        self._max_list_len = max(1 << 17, limits.max_prompt_tokens)  # longest list a header may hold
        self._next_sid = 1
        self._running = True
        self.stats = {"messages": 0, "errors": 0, "rounds": 0}

    def _open_socket(self, bind: str, curve_secret_key: bytes | None, curve_allow: str | os.PathLike | None) -> None:
        """Bind the ROUTER (CURVE server with its authenticator when a secret key is given)."""
        if curve_secret_key is not None:
            self._auth = curve_authenticator(self._ctx, curve_allow)
        self.sock = self._ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.MAXMSGSIZE, self.limits.max_message_bytes)
        self.sock.setsockopt(zmq.LINGER, 0)
        # No ROUTER_HANDOVER: a peer claiming an identity in use is not served, so nobody can take over a
        # device's routing; devices let the ROUTER pick their identity, and one that reconnects keeps its
        # session through the session secret.
        if curve_secret_key is not None:
            self.sock.curve_server = True
            self.sock.curve_secretkey = curve_secret_key
        self.sock.bind(bind)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def stop(self) -> None:
        """Ask ``serve`` to return."""
        self._running = False

    def close(self) -> None:
        """Close the socket, stop the CURVE authenticator and end the edge's ZeroMQ context."""
        if self.sock is not None:
            self.sock.close(0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def serve(self, poll_ms: int = 100, until: float | None = None) -> None:
        """Handle messages until stopped (or until monotonic second ``until``), in arrival order.
        A receiver thread owns the socket: it stamps each message's arrival as it comes (also
        while this thread computes; late by at most Python's thread switch interval, 5 ms) and
        sends the replies this thread hands it."""
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        addr = f"inproc://edge-replies-{uuid.uuid4().hex}"
        replies_in = self._ctx.socket(zmq.PAIR)
        replies_in.bind(addr)
        replies_out = self._ctx.socket(zmq.PAIR)
        replies_out.connect(addr)
        done = threading.Event()
        receiver = threading.Thread(target=self._receive, args=(inbox, replies_in, done, poll_ms),
                                    name="edge-receiver", daemon=True)
        receiver.start()
        try:
            while self._running and (until is None or time.monotonic() < until):
                try:
                    arrival, frames = inbox.get(timeout=poll_ms / 1000.0)
                except queue.Empty:
                    continue
                reply = self.handle_frames(frames[0], frames[1:], arrival)
                if reply is not None:
                    replies_out.send_multipart([frames[0], *reply])
        finally:
            done.set()
            receiver.join()
            replies_out.close(0)
            replies_in.close(0)

    def _receive(self, inbox: queue.SimpleQueue, replies: zmq.Socket, done: threading.Event, poll_ms: int) -> None:
        """The receiver thread: stamp and queue every message from the socket, send every reply
        from ``replies``, until ``done`` (replies already handed over are still sent)."""
        both, replies_only = zmq.Poller(), zmq.Poller()
        both.register(self.sock, zmq.POLLIN)
        both.register(replies, zmq.POLLIN)
        replies_only.register(replies, zmq.POLLIN)
        while not done.is_set() or replies.poll(0):
            # a full inbox leaves messages in the socket, whose high-water mark bounds them (a flood
            # cannot grow the edge's memory through this thread)
            full = inbox.qsize() >= MAX_INBOX
            ready = dict((replies_only if full else both).poll(poll_ms if not full else 1))
            while replies.poll(0):
                self.sock.send_multipart(replies.recv_multipart())
            while self.sock in ready and inbox.qsize() < MAX_INBOX and self.sock.poll(0):
                frames = self.sock.recv_multipart(copy=True)
                if len(frames) >= 2:
                    inbox.put((Arrival.now(), frames))

    def handle_frames(self, ident: bytes, body: list[bytes], arrival: Arrival | None = None) -> list[bytes] | None:
        """The reply frames to one message from device ``ident`` (None: no reply); never raises.
        ``arrival``: when it reached the socket (None: no socket, as in simulation, where a
        round's time at the edge is its charged compute)."""
        self.stats["messages"] += 1
        try:
            return self._handle(ident, decode_envelope(body, self.limits.max_message_bytes,
                                                       max_list_len=self._max_list_len), arrival)
        except WireError as e:
            self.stats["errors"] += 1
            log.warning("rejected a message from %r: %s", ident[:64], e)
            return encode(Error(e.code, str(e)[:MAX_ERROR_CHARS]))
        except Exception as e:  # a bug must not take the edge down for everyone
            self.stats["errors"] += 1
            log.exception("internal error serving %r", ident[:64])
            return encode(Error("internal", f"{type(e).__name__}: {e}"[:MAX_ERROR_CHARS]))

    # ------------------------------------------------------------------ handlers
    def _handle(self, ident: bytes, env: Envelope, arrival: Arrival | None) -> list[bytes] | None:
        if env.cls is Hello:
            return self._hello(ident, env.message())
        s = self._session(ident, env.fields.get("secret", ""))
        s.last_seen, s.ident = time.monotonic(), ident
        if env.cls is Bye:
            del self.sessions[s.secret]
            return None
        msg = env.message(arrays=False)  # arrays are decoded by the handler, once their shape is checked
        key = (msg.TYPE, getattr(msg, "request_id", ""), getattr(msg, "round", None))
        if key == s.last_key and s.last_reply:
            return s.last_reply  # a retry: same answer, no recomputation
        begin_ms = time.perf_counter() * 1000.0
        if isinstance(msg, Start):
            s.times = EdgeRoundTimes()
            reply = self._start(s, msg)
        elif isinstance(msg, Draft):
            s.times = EdgeRoundTimes()
            reply = self._draft(s, msg, env)
        elif isinstance(msg, HiddenUpload):
            reply = self._hidden(s, msg, env)
        else:
            raise WireError("unknown_type", f"{msg.TYPE} is not a request an edge serves")
        frames = encode(self._timed(s, reply, arrival, begin_ms))
        s.last_key, s.last_reply = key, frames
        return frames

    def _timed(self, s: Session, reply: Message, arrival: Arrival | None, begin_ms: float) -> Message:
        """``reply`` with the round's edge times when it ends the round (a verdict or a result);
        a reply that does not (a hidden request) adds its exchange's times to the round's."""
        s.times.add(arrival, begin_ms, time.perf_counter() * 1000.0)
        if not isinstance(reply, (Verdict, Result)):
            return reply
        t, s.times = s.times, EdgeRoundTimes()
        if arrival is None:  # no socket: nothing measured (the device counts the charged compute as the stay)
            return reply
        reply.edge_queue_ms, reply.edge_ms = t.queue_ms, max(t.stay_ms, reply.verify_ms)
        reply.t_edge_arrival, reply.t_edge_reply = t.t_arrival, time.time()
        return reply

    def _session(self, ident: bytes, secret: str) -> Session:
        """The session whose secret is ``secret``. WireError ``unauthenticated`` when the sender's
        identity has a session but the secret is not its (a peer that took over the identity),
        ``no_session`` otherwise (no hello yet, or an edge that restarted)."""
        s = self.sessions.get(secret) if secret else None
        if s is not None and hmac.compare_digest(s.secret.encode(), secret.encode()):
            return s
        if any(x.ident == ident for x in self.sessions.values()):
            raise WireError("unauthenticated", "missing or wrong session secret (send the one hello_ack returned)")
        raise WireError("no_session", "send hello first")

    def _hello(self, ident: bytes, h: Hello) -> list[bytes]:
        if self.token and not hmac.compare_digest(h.token.encode(), self.token.encode()):
            raise WireError("unauthenticated", "wrong or missing token")
        try:
            protocol = PROTOCOLS.get(h.protocol)
        except ValueError as e:
            raise WireError("bad_request", str(e)) from None
        if not 1 <= h.gamma <= self.limits.max_gamma:
            raise WireError("bad_request", f"gamma {h.gamma} outside 1..{self.limits.max_gamma}")
        if h.hidden_dtype not in WIRE_DTYPES:
            raise WireError("bad_request", f"hidden_dtype must be one of {', '.join(WIRE_DTYPES)}")
        if len(self.sessions) >= self.limits.max_sessions:
            now = time.monotonic()
            for k in [k for k, v in self.sessions.items() if now - v.last_seen > self.limits.idle_timeout_s]:
                log.info("evicting idle session %d", self.sessions.pop(k).sid)
        if len(self.sessions) >= self.limits.max_sessions:
            raise WireError("too_many_sessions", f"the edge serves at most {self.limits.max_sessions} devices")
        try:
            side = protocol.edge(EdgeSetup(h.temperature, self.head_dir, self.lambda_ms,
                                           pair={"target": self.identity, "drafter": None}, oracle=self.oracle))
            width = drafter_hidden_width(side.policy)
            wire_width = hidden_wire_width(width, h.hidden_wire_width)
        except (ValueError, FileNotFoundError) as e:
            raise WireError("bad_request", str(e)) from None
        s = Session(self._next_sid, h, protocol, Verifier(self.target), side, secret=secrets.token_hex(16),
                    ident=ident, drafter_width=width, wire_width=wire_width)
        s.generator.manual_seed((h.seed + 7) % (1 << 64))  # any int64 seed a peer sends is valid
        self._next_sid += 1
        self.sessions[s.secret] = s  # a new hello never touches another session, even from the same identity
        return encode(HelloAck(s.sid, self.limits.max_gamma, int(self.target.config.hidden_size), s.secret))

    def _check_prompt(self, prompt: list[int], max_new_tokens: int) -> None:
        """WireError ``bad_request`` unless ``prompt`` (token ids) is non-empty, within the
        vocabulary, at most ``max_prompt_tokens`` long and leaves ``max_new_tokens`` of the
        target's positions (``config.max_position_embeddings``, when it has one); checked before
        any allocation or forward."""
        if not 1 <= max_new_tokens <= self.limits.max_new_tokens:
            raise WireError("bad_request", f"max_new_tokens outside 1..{self.limits.max_new_tokens}")
        n = len(prompt)
        if n > self.limits.max_prompt_tokens:
            raise WireError("bad_request", f"prompt of {n} tokens exceeds the edge's {self.limits.max_prompt_tokens}")
        positions = getattr(self.target.config, "max_position_embeddings", None)
        if isinstance(positions, int) and n + max_new_tokens > positions:
            raise WireError("bad_request", f"prompt of {n} tokens + max_new_tokens {max_new_tokens} exceed the "
                                           f"target's {positions} positions")
        vocab = int(self.target.config.vocab_size)
        if not prompt or any(not 0 <= t < vocab for t in prompt):
            raise WireError("bad_request", "prompt must be non-empty token ids within the vocabulary")

    def _start(self, s: Session, m: Start) -> Message:
        self._check_prompt(m.prompt, m.max_new_tokens)
        try:
            return s.side.start(self, s, m)  # the protocol's: open the request, or serve it whole
        except ValueError as e:  # e.g. the oracle knows no such problem
            raise WireError("bad_request", str(e)) from None

    def _check_round(self, s: Session, request_id: str, rnd: int) -> Request:
        r = s.request
        if r is None or r.request_id != request_id:
            raise WireError("out_of_order", f"no request {request_id!r} in progress")
        if rnd != r.round:
            raise WireError("out_of_order", f"round {rnd} while round {r.round} is expected")
        return r

    def _draft(self, s: Session, m: Draft, env: Envelope) -> Message:
        if s.policy is None:
            raise WireError("bad_request", f"{s.protocol.name} takes no drafts: it has nothing to verify them with")
        r = self._check_round(s, m.request_id, m.round)
        if r.pending is not None:
            raise WireError("out_of_order", "hidden states for the previous draft are still awaited")
        g = len(m.tokens)
        vocab = int(self.target.config.vocab_size)
        longest = min(s.hello.gamma, r.max_new_tokens - (len(r.seq) - r.prompt_len))  # no draft past max_new_tokens
        if not 1 <= g <= longest or any(not 0 <= t < vocab for t in m.tokens):
            raise WireError("bad_request", f"draft must hold 1..{longest} token ids within the vocabulary")
        csi = csi_report(m.csi)
        hidden = unpad_rows(self._draft_array(env, "hidden", (g, s.wire_width) if s.drafter_width else None,
                                              "drafter hidden states"), s.drafter_width)
        needs_probs = s.policy.needs_drafter_probs
        probs = self._draft_array(env, "probs", (g, vocab) if needs_probs else None, "drafter probabilities")
        if needs_probs and probs is None:
            raise WireError("bad_request", "rejection sampling needs the drafter probabilities [γ, V]")
        r.pending = verify_round(s.verifier, s.policy, r.seq, list(m.tokens),
                                 drafter_probs=torch.as_tensor(probs) if probs is not None else None,
                                 drafter_hidden=torch.as_tensor(hidden) if hidden is not None else None,
                                 csi=csi, temperature=s.hello.temperature, generator=s.generator)
        if r.pending.request_rows:  # mismatch-first: ask for the mismatched positions only
            return HiddenRequest(m.request_id, m.round, r.pending.request_rows)
        return self._verdict(s, r)

    @staticmethod
    def _draft_array(env: Envelope, name: str, shape: tuple[int, int] | None, what: str) -> np.ndarray | None:
        """Array ``name`` of a draft decoded only if it has ``shape`` (None: the session's policy
        reads no such array, and a draft that carries one is refused)."""
        if shape is None:
            if env.shape(name) is not None:
                raise WireError("bad_request", f"this session's policy reads no {what}")
            return None
        return env.array(name, shape)

    def _hidden(self, s: Session, m: HiddenUpload, env: Envelope) -> Message:
        r = self._check_round(s, m.request_id, m.round)
        if r.pending is None or not r.pending.request_rows:
            raise WireError("out_of_order", "no hidden states were requested")
        positions = list(m.positions)
        if len(set(positions)) != len(positions) or sorted(positions) != sorted(r.pending.request_rows):
            raise WireError("bad_request", f"positions {positions[:64]} are not those requested, "
                                           f"{r.pending.request_rows}, each once")
        if env.shape("hidden") is None or not s.drafter_width:
            raise WireError("bad_request", "hidden upload must hold one row per requested position")
        rows = unpad_rows(env.array("hidden", (len(positions), s.wire_width)), s.drafter_width)  # shape checked first
        try:
            r.pending.supply_hidden(positions, torch.as_tensor(rows))
        except ValueError as e:
            raise WireError("bad_request", str(e)) from None
        return self._verdict(s, r)

    def _verdict(self, s: Session, r: Request) -> Verdict:
        out, r.pending = r.pending, None
        v = out.decision
        # simulated (no socket): the profile's time exactly; real: measured, padded up to it
        verify_ms, pad_ms = self.profile.charge(out.verify_ms, out.ctx.gamma + 1, out.n_prefill, exact=self.sock is None)
        if pad_ms and self.sock is not None:
            sleep_ms(pad_ms)
        new = out.new_tokens
        r.seq.extend(new)
        s.verifier.commit(len(r.seq))
        produced = len(r.seq) - r.prompt_len
        done = (self.eos is not None and self.eos in new) or produced >= r.max_new_tokens
        reply = Verdict(request_id=r.request_id, round=r.round, accepted=v.accepted, next_token=v.next_token,
                        accepted_exact=v.accepted_exact,
                        first_mismatch=-1 if v.first_mismatch is None else v.first_mismatch, harmless=v.harmless,
                        verify_ms=verify_ms, done=done, pad_ms=pad_ms)
        r.round += 1
        self.stats["rounds"] += 1
        if done:
            s.request = None
        return reply


def drafter_hidden_width(policy: VerificationPolicy | None) -> int | None:
    """Width of the drafter hidden rows ``policy`` reads (its head's ``drafter_hidden`` input
    dimension), None when it reads none; ValueError when it reads them without saying how wide."""
    if policy is None or not policy.needs_drafter_hidden:
        return None
    dims = getattr(getattr(getattr(policy, "head", None), "spec", None), "dims", None) or {}
    if "drafter_hidden" not in dims:
        raise ValueError(f"policy {policy.name} reads drafter hidden states but states no width")
    return int(dims["drafter_hidden"])


MAX_WIRE_WIDTH = 65536  # widest hidden row a hello may announce (elements)


def hidden_wire_width(drafter_width: int | None, announced: int) -> int | None:
    """Width of the drafter hidden rows on the wire for a session whose policy reads rows
    ``drafter_width`` wide (None: it reads none): ``announced`` in the hello (0: no padding);
    ValueError when it is narrower than the drafter's rows or wider than MAX_WIRE_WIDTH."""
    if not 0 <= announced <= MAX_WIRE_WIDTH:
        raise ValueError(f"hidden_wire_width {announced} outside 0..{MAX_WIRE_WIDTH}")
    if drafter_width is None or announced == 0:
        return drafter_width
    if announced < drafter_width:
        raise ValueError(f"hidden_wire_width {announced} is below the head's drafter width {drafter_width}")
    return announced


def unpad_rows(rows: np.ndarray | None, width: int | None) -> np.ndarray | None:
    """Drafter hidden rows as the head reads them: the first ``width`` columns of ``rows``
    [n, wire width]; WireError ``bad_request`` when the padding beyond them is not all zeros."""
    if rows is None or width is None or rows.shape[1] == width:
        return rows
    if np.any(rows[:, width:]):
        raise WireError("bad_request", f"hidden rows padded beyond the drafter's width {width} with non-zero values")
    return np.ascontiguousarray(rows[:, :width])


def csi_report(values: dict[str, float]) -> CSI:
    """The CSI report of a draft; WireError ``bad_request`` for a negative rate or delay or a
    loss outside 0–1 (a rate of 0, an outage, is a valid report)."""
    csi = CSI.from_wire(values)
    if min(csi.rate_up_mbps, csi.rate_down_mbps, csi.delay_up_ms, csi.delay_down_ms) < 0 \
            or not (0.0 <= csi.loss_up <= 1.0 and 0.0 <= csi.loss_down <= 1.0):
        raise WireError("bad_request", "CSI report: rates and delays must be >= 0 and losses within 0-1")
    return csi


def curve_authenticator(ctx: zmq.Context, allow: str | os.PathLike | None):
    """A started ZAP handler (``zmq.auth.thread.ThreadAuthenticator``) in ``ctx`` admitting CURVE
    clients whose public key is in folder ``allow`` (its ``*.key`` certificates, as
    ``wisv node keys --client NAME`` or ``zmq.auth.create_certificates`` write them; read once,
    at start), or any client when ``allow`` is ``zmq.auth.CURVE_ALLOW_ANY`` (never by default).
    ValueError when ``allow`` is None or not a folder."""
    import zmq.auth
    from zmq.auth.thread import ThreadAuthenticator

    if allow is None:
        raise ValueError("CURVE needs an allow-list of client keys (a folder of *.key certificates) "
                         "or, explicitly, zmq.auth.CURVE_ALLOW_ANY")
    if allow != zmq.auth.CURVE_ALLOW_ANY:
        folder = Path(allow)
        if not folder.is_dir():
            raise ValueError(f"{folder}: not a folder of client public keys (*.key)")
        n_keys = len(list(folder.glob("*.key")))
        (log.info if n_keys else log.warning)("CURVE allow-list %s: %d client key(s)", folder, n_keys)
    else:
        log.warning("CURVE: any client key is admitted (no allow-list)")
    auth = ThreadAuthenticator(ctx, log=logging.getLogger(__name__ + ".zap"))
    auth.start()
    auth.configure_curve(domain="*", location=str(allow))
    return auth
