"""The device node: the drafter behind a ZeroMQ DEALER, running requests round by round.

Every exchange has a timeout and a bounded number of retries (the edge answers a duplicate
with its previous reply), so a deep fade delays a round but never hangs a run: after the last
retry the request fails with :class:`ExchangeTimeout`. Each finished round is appended to the
round log at once. How long a round's draft is, what the device uploads with it and what it
learns from the verdict are its protocol's business (the session's
:class:`nodes.protocols.DeviceSide`, whose hooks the round loop :meth:`DeviceClient.speculate`
calls); how messages travel is its transport's (ZeroMQ here, the simulator's analytic link in
:mod:`runs.simulate`).
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import zmq

from channel_models.csi import CSI
from nodes.config import RunConfig, TaskConfig
from nodes.decoding import Drafter, SamplingConfig
from nodes.decoding.stopping import StopCriteria, stop_criteria_for
from nodes.protocols import PROTOCOLS, DeviceSetup, DeviceSide, RoundStart
from nodes.telemetry import RoundLog, RoundLogger
from nodes.wire import (Bye, Draft, Error, Hello, HelloAck, HiddenRequest, HiddenUpload, Message, Result, Start,
                        StartAck, Verdict, array_nbytes, decode, encode, encoded_size)

log = logging.getLogger(__name__)


@dataclass
class ExchangeCounts:
    """What a round's exchanges cost, as the transport counts them: application bytes up and
    down (all frames of every message sent or received), completed round trips, and retries."""

    up_bytes: int = 0
    down_bytes: int = 0
    round_trips: int = 0
    retries: int = 0


@dataclass
class RoundInProgress:
    """A round the device has begun: its index, when (wall clock, epoch s; the transport's
    monotonic ms), the CSI report in force then, the interface's (tx, rx) L2 byte counters
    (None: not counted) and the transport's counts so far."""

    round: int
    t_wall: float
    t0_ms: float
    csi: CSI
    wire0: tuple[int, int] | None = None
    counts: ExchangeCounts = field(default_factory=ExchangeCounts)


class ExchangeTimeout(RuntimeError):
    """No reply after every retry."""


class EdgeError(RuntimeError):
    """The edge rejected a message; ``code`` as in :class:`nodes.wire.Error`."""

    def __init__(self, code: str, message: str):
        super().__init__(f"edge error {code}: {message}")
        self.code = code


@dataclass
class RequestResult:
    """Output tokens (prompt excluded) and per-round logs of one request; latency in ms."""

    request_id: str
    tokens: list[int]
    rounds: list[RoundLog]
    latency_ms: float
    ok: bool = True
    error: str = ""
    end_reason: str = ""  # eos, stop (a stop sequence), budget; '' for a failed request

    def record(self, correct: bool) -> dict:
        """The per-request record of the ``requests`` table (docs/reports-and-sweeps.md: output schema)."""
        return {"request_id": self.request_id, "ok": self.ok, "error": self.error, "correct": bool(self.ok and correct),
                "n_tokens": len(self.tokens), "latency_ms": self.latency_ms, "rounds": len(self.rounds),
                "end_reason": self.end_reason}


def matches(sent: Message, reply: Message) -> bool:
    """True when ``reply`` answers ``sent`` (same request and round)."""
    if isinstance(reply, HelloAck) or isinstance(sent, Hello):
        return True
    if getattr(reply, "request_id", None) != getattr(sent, "request_id", None):
        return False
    return getattr(sent, "round", -1) == getattr(reply, "round", getattr(sent, "round", -1))


class ZmqTransport:
    """Real exchanges over a ZeroMQ DEALER with per-attempt timeouts and bounded retries; the
    clock is the real one and compute padding is slept."""

    virtual = False  # real clock: compute profiles pad, they do not replace

    def __init__(self, endpoint: str, cfg: RunConfig, curve_keys: tuple | None = None,
                 max_message_bytes: int = 8 << 20):
        self.cfg, self.max_message_bytes = cfg, max_message_bytes
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self.sock.setsockopt(zmq.SNDTIMEO, cfg.timeout_ms)  # no connection (e.g. a refused CURVE key): a failed attempt
        # no chosen identity: the edge's ROUTER assigns one per connection (none to guess or steal); the
        # session secret, not the identity, carries the session across a reconnect
        self._auth_events = None  # CURVE: handshake outcomes, to tell a refused key from a silent edge
        self._refused = False  # the last CURVE handshake was refused
        if curve_keys is not None:  # (server public, client public, client secret)
            self.sock.curve_serverkey, self.sock.curve_publickey, self.sock.curve_secretkey = curve_keys
            self._auth_events = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                                             | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.sock.connect(endpoint)

    def _key_refused(self) -> bool:
        """True when the edge's authenticator refused this device's CURVE key (ZAP status 4xx) at
        the last handshake."""
        from zmq.utils.monitor import recv_monitor_message

        while self._auth_events is not None and self._auth_events.poll(0):
            self._refused = recv_monitor_message(self._auth_events)["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        return self._refused

    def now_ms(self) -> float:
        """Monotonic time in ms."""
        return time.perf_counter() * 1000.0

    def wall_s(self) -> float:
        """Wall-clock time (epoch s) for the logs."""
        return time.time()

    def compute(self, charged_ms: float, pad_ms: float) -> None:
        """Real compute already took ``charged_ms − pad_ms``; sleep the profile's padding."""
        if pad_ms > 0:
            from nodes.profiles import sleep_ms

            sleep_ms(pad_ms)

    def exchange(self, msg: Message, expect: tuple[type, ...], counts: ExchangeCounts) -> Message:
        """Send ``msg`` and return the matching reply, retrying after each timeout."""
        frames = encode(msg, {"hidden": self.cfg.hidden_dtype, "probs": "f32"})
        size = encoded_size(frames)
        for attempt in range(self.cfg.retries + 1):
            try:
                self.sock.send_multipart(frames)
            except zmq.Again:  # nothing to send to for timeout_ms
                counts.retries += 1
                log.warning("%s: could not send %s for %d ms (attempt %d)", self.cfg.device_id, msg.TYPE,
                            self.cfg.timeout_ms, attempt + 1)
                continue
            counts.up_bytes += size
            deadline = time.monotonic() + self.cfg.timeout_ms / 1000.0
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                    break
                reply_frames = self.sock.recv_multipart()
                counts.down_bytes += encoded_size(reply_frames)
                reply = decode(reply_frames, self.max_message_bytes)
                if isinstance(reply, Error):
                    raise EdgeError(reply.code, reply.message)
                if isinstance(reply, expect) and matches(msg, reply):
                    counts.round_trips += 1
                    return reply
                # a late reply to an earlier attempt of another exchange: ignore it
            if self._key_refused():
                raise EdgeError("unauthenticated", "the edge refused this device's CURVE key (not on its allow-list)")
            counts.retries += 1
            log.warning("%s: no reply to %s after %d ms (attempt %d)", self.cfg.device_id, msg.TYPE,
                        self.cfg.timeout_ms, attempt + 1)
        if self._key_refused():
            raise EdgeError("unauthenticated", "the edge refused this device's CURVE key (not on its allow-list)")
        raise ExchangeTimeout(f"no reply to {msg.TYPE} after {self.cfg.retries + 1} attempts")

    def send_only(self, msg: Message) -> None:
        """Send without waiting for a reply (bye); dropped when there is no connection."""
        try:
            self.sock.send_multipart(encode(msg), flags=zmq.NOBLOCK)
        except zmq.Again:
            log.info("%s: %s not sent (no connection)", self.cfg.device_id, msg.TYPE)

    def close(self) -> None:
        """Close the socket (and its handshake monitor)."""
        if self._auth_events is not None:
            self.sock.disable_monitor()
            self._auth_events.close(0)
        self.sock.close(0)


class DeviceClient:
    """Runs requests with the protocol of ``cfg`` against an edge, through a transport (ZeroMQ by
    default; the simulator passes one with an analytic link and a virtual clock). ``csi`` gives
    the channel report in force; ``wire_counter`` (tx, rx) L2 bytes of the device's interface."""

    def __init__(self, drafter: torch.nn.Module, cfg: RunConfig, eos_token_id: int | None, transport, *,
                 round_logger: RoundLogger | None = None, csi: Callable[[], CSI] | None = None,
                 token: str = "", wire_counter: Callable[[], tuple[int, int]] | None = None):
        self.cfg = cfg
        self.protocol = PROTOCOLS.get(cfg.protocol)
        self.protocol.check_temperature(cfg.temperature)
        self.drafter = Drafter(drafter, SamplingConfig(cfg.temperature, cfg.seed))
        self.eos, self.token = eos_token_id, token
        self.logger, self.csi = round_logger, csi or CSI
        self.transport, self.wire_counter = transport, wire_counter
        self.secret = ""  # the session secret from hello_ack, sent in every later message
        self.wire_width = wire_width(int(drafter.config.hidden_size), cfg.hidden_wire_width)
        self.side: DeviceSide = self.protocol.device(DeviceSetup(
            cfg.gamma, cfg.temperature, array_nbytes((1, self.wire_width), cfg.hidden_dtype)))
        self._stop: StopCriteria | None = None  # the stop rules of the request in progress

    @classmethod
    def connect(cls, drafter: torch.nn.Module, endpoint: str, cfg: RunConfig, eos_token_id: int | None, *,
                curve_keys: tuple | None = None, **kw) -> "DeviceClient":
        """A client whose transport is a ZeroMQ DEALER connected to ``endpoint`` (keyword
        arguments as for the constructor)."""
        return cls(drafter, cfg, eos_token_id, ZmqTransport(endpoint, cfg, curve_keys), **kw)

    def hello(self) -> HelloAck:
        """Open the session and keep its secret for every later message."""
        c = self.cfg
        ack = self.transport.exchange(Hello(c.device_id, c.protocol, c.gamma, c.temperature, c.hidden_dtype, self.token,
                                            c.seed, c.hidden_wire_width or 0), (HelloAck,), ExchangeCounts())
        self.secret = ack.secret
        return ack

    def close(self) -> None:
        """Say bye and close the socket."""
        try:
            self.transport.send_only(Bye(self.secret))
        finally:
            self.transport.close()

    # ------------------------------------------------------------------ a request
    def run(self, prompt: list[int], max_new_tokens: int = 128, request_id: str | None = None,
            stop: StopCriteria | None = None) -> RequestResult:
        """Run one request to completion (its exchange is the protocol's:
        :meth:`nodes.protocols.DeviceSide.run_request`); the result is marked failed (with
        partial rounds kept in the log) when the edge stops answering or rejects it. ``stop``:
        where the output ends besides the edge's EOS and the budget (several EOS ids, stop
        sequences): the device drafts no further, ends the request and drops the tokens past the
        stop."""
        rid = request_id or uuid.uuid4().hex[:12]
        self._stop = stop
        t0 = self.transport.now_ms()
        rounds: list[RoundLog] = []
        out: list[int] = []
        try:
            out = self.side.run_request(self, rid, list(prompt), max_new_tokens, rounds)
        except (ExchangeTimeout, EdgeError) as e:
            return RequestResult(rid, out, rounds, self.transport.now_ms() - t0, ok=False, error=str(e))
        hit = stop.check(out) if stop is not None else None
        if hit is not None:  # the edge decoded alone, or its EOS is one of several
            del out[hit.keep:]
        reason = hit.reason if hit is not None else rounds[-1].end_reason if rounds else "budget"
        return RequestResult(rid, out, rounds, self.transport.now_ms() - t0, end_reason=reason)

    def speculate(self, rid: str, prompt: list[int], max_new_tokens: int, rounds: list[RoundLog],
                  side: DeviceSide) -> list[int]:
        """Start request ``rid`` at the edge, then draft and verify round by round until the
        edge says it is done; ``side`` chooses each round's draft length and upload and hears
        each finished round's record (its draft length is held to 1 … min(``cfg.gamma``, the
        tokens left)). Returns the output tokens (prompt excluded)."""
        self.exchange(Start(rid, list(prompt), max_new_tokens, self.secret), (StartAck,))
        self.drafter.reset()
        seq, out = list(prompt), []
        rnd_no = 0
        stop = self._stop
        while True:
            rnd = self.begin_round(rnd_no)
            n_prefill = max(0, len(seq) - self.drafter.lm.cache_len - 1)
            budget = max_new_tokens - len(out)
            gamma = max(1, min(side.draft_length(RoundStart(rnd_no, rnd.csi, self.cfg.gamma, budget)), self.cfg.gamma,
                               budget))  # the edge takes no longer draft
            done = len(out)
            block = self.drafter.draft(seq, gamma, self.eos,
                                       stop=None if stop is None else lambda t: stop.check(out + t, done) is not None)
            block.draft_ms, pad_ms = self.cfg.compute.device.charge(block.draft_ms, len(block.tokens), n_prefill,
                                                                     exact=self.transport.virtual)
            self.transport.compute(block.draft_ms, pad_ms)
            # the upload meets the channel in force once the draft is ready, not the round-start report
            upload = side.upload(len(block.tokens), self.csi())
            probs = block.probs if side.sends_probs() else None
            hidden = pad_rows(block.hidden, self.wire_width) if upload == "all" else None
            reply = self.exchange(Draft(rid, rnd_no, block.tokens, rnd.csi.to_wire(), hidden, probs, self.secret),
                                  (Verdict, HiddenRequest), rnd)
            rows = len(block.tokens) if upload == "all" else 0
            if isinstance(reply, HiddenRequest):
                if any(not 0 <= p < len(block.tokens) for p in reply.positions):
                    raise EdgeError("bad_request", f"edge asked for positions {reply.positions}")
                asked = pad_rows(block.hidden[torch.tensor(reply.positions, dtype=torch.long)], self.wire_width)
                rows = len(reply.positions)
                reply = self.exchange(HiddenUpload(rid, rnd_no, reply.positions, asked, self.secret), (Verdict,), rnd)
            v: Verdict = reply
            new = block.tokens[: v.accepted] + [v.next_token]
            hit = stop.check(out + new, len(out)) if stop is not None else None
            if hit is not None:  # tokens past the stop are not output
                new = new[: hit.keep - len(out)]
            seq.extend(new)
            out.extend(new)
            self.drafter.commit(len(seq))
            record = self.finish_round(rnd, rid, gamma=gamma, drafted=len(block.tokens), reply=v, new_tokens=new,
                                       done=v.done or hit is not None, draft_ms=block.draft_ms, draft_pad_ms=pad_ms,
                                       upload=upload if upload != "none" else "", hidden_rows=rows,
                                       end=hit.reason if hit is not None else "")
            rounds.append(record)
            side.observe(record)  # the protocol's feedback: where the draft differed, what it cost
            rnd_no += 1
            if hit is not None:
                return out[:max_new_tokens]
            if v.done:
                if self.eos is not None and self.eos in out:
                    del out[out.index(self.eos) + 1:]
                return out[:max_new_tokens]

    # ------------------------------------------------------------------ primitives of an exchange
    def begin_round(self, rnd: int) -> RoundInProgress:
        """Start the clock, the byte counters and the CSI report of round ``rnd``."""
        return RoundInProgress(rnd, self.transport.wall_s(), self.transport.now_ms(), self.csi(),
                               self.wire_counter() if self.wire_counter else None)

    def exchange(self, msg: Message, expect: tuple[type, ...], rnd: RoundInProgress | None = None) -> Message:
        """Send ``msg`` and return the edge's matching reply (one of ``expect``), counting bytes,
        round trips and retries into ``rnd`` (None: uncounted); ExchangeTimeout or EdgeError
        when none comes."""
        return self.transport.exchange(msg, expect, rnd.counts if rnd is not None else ExchangeCounts())

    def finish_round(self, rnd: RoundInProgress, request_id: str, *, gamma: int, drafted: int,
                     reply: Verdict | Result, new_tokens: list[int], done: bool, draft_ms: float = 0.0,
                     draft_pad_ms: float = 0.0, upload: str = "", hidden_rows: int = 0, end: str = "") -> RoundLog:
        """The record of a finished round (written to the round log, if any): the device's own
        times and counts joined with the edge's reply — its decision (a verdict's; none for a
        result of the edge decoding alone) and its times, so that
        ``link_ms`` is the wall time less the draft and the edge's residence (its compute, for
        an edge that does not report residence)."""
        wall = self.transport.now_ms() - rnd.t0_ms
        edge_ms = reply.edge_ms if reply.edge_ms > 0 else reply.verify_ms
        wire1 = self.wire_counter() if rnd.wire0 is not None else None
        c = rnd.counts
        rec = RoundLog(
            run_id=self.cfg.run_id, protocol=self.protocol.name, device_id=self.cfg.device_id, request_id=request_id,
            round=rnd.round, drafted=drafted, accepted=getattr(reply, "accepted", 0),
            accepted_exact=getattr(reply, "accepted_exact", 0), first_mismatch=getattr(reply, "first_mismatch", -1),
            harmless=getattr(reply, "harmless", 0), next_token=new_tokens[-1] if new_tokens else -1,
            up_bytes=c.up_bytes, down_bytes=c.down_bytes, round_trips=c.round_trips, draft_ms=draft_ms,
            verify_ms=reply.verify_ms, link_ms=max(0.0, wall - draft_ms - edge_ms), wall_ms=wall, t_start=rnd.t_wall,
            t_end=self.transport.wall_s(), retries=c.retries, csi=rnd.csi, draft_pad_ms=draft_pad_ms,
            verify_pad_ms=reply.pad_ms,
            wire_up_bytes=wire1[0] - rnd.wire0[0] if wire1 else -1,
            wire_down_bytes=wire1[1] - rnd.wire0[1] if wire1 else -1,
            upload=upload, gamma=gamma, hidden_rows=hidden_rows,
            end_reason=end or (end_reason(new_tokens, self.eos) if done else ""),
            edge_queue_ms=reply.edge_queue_ms, edge_ms=edge_ms, t_edge_arrival=reply.t_edge_arrival,
            t_edge_reply=reply.t_edge_reply)
        if self.logger is not None:
            self.logger.write(rec)
        return rec


def end_reason(new_tokens: list[int], eos: int | None) -> str:
    """Why a request ended with the round that committed ``new_tokens``: ``eos`` when it holds
    the end-of-sequence token, else ``budget`` (``max_new_tokens`` reached)."""
    return "eos" if eos is not None and eos in new_tokens else "budget"


def wire_width(drafter_width: int, requested: int | None) -> int:
    """Elements per drafter hidden row on the wire: ``requested`` (RunConfig.hidden_wire_width),
    or the drafter's own width when None; ValueError when it is narrower than the drafter."""
    if requested is None:
        return drafter_width
    if requested < drafter_width:
        raise ValueError(f"hidden_wire_width {requested} is below the drafter's hidden width {drafter_width} "
                         "(padding only widens rows)")
    return int(requested)


def pad_rows(rows: torch.Tensor, width: int) -> torch.Tensor:
    """``rows`` [n, H] zero-padded on the right to [n, ``width``] (unchanged when already that
    wide): what the wire carries when a wider drafter's link costs are emulated."""
    return rows if rows.shape[-1] == width else torch.nn.functional.pad(rows, (0, width - rows.shape[-1]))


def run_problems(client: DeviceClient, pair, task: TaskConfig) -> tuple[list[dict], list[RequestResult]]:
    """Run the task's problems through ``client`` one after another; returns the per-request
    records (scored by the task: the final answer, or the code task's tests) and the results."""
    from nodes.evaluate import encode_prompt

    t = task.make()
    stop = stop_criteria_for(t, pair.tokenizer, pair.drafter or pair.target, task.chat_template)
    records, results = [], []
    for p in t.problems(task.split, task.problems, task.start_index):
        res = client.run(encode_prompt(pair, p, task.chat_template), task.max_new_tokens, request_id=p.uid, stop=stop)
        records.append(res.record(t.correct(pair.tokenizer.decode(res.tokens, skip_special_tokens=True), p)))
        results.append(res)
    return records, results


def load_curve_keys(server_public: str | Path, client_secret: str | Path | None = None) -> tuple[bytes, bytes, bytes]:
    """(server public, client public, client secret) Z85 keys for a CURVE connection to an edge.
    The client's own pair comes from ``client_secret``: a ``*.key_secret`` certificate (as
    ``wisv node keys --client NAME`` writes it) or a file holding the Z85 secret key alone (its
    public key is derived); without one, an ephemeral pair, which an edge with an allow-list
    refuses. ValueError for a file holding no key."""
    server = Path(server_public).read_bytes().strip()
    if client_secret is None:
        public, secret = zmq.curve_keypair()
        return server, public, secret
    raw = Path(client_secret).read_bytes().strip()
    if len(raw) == 40 and b"\n" not in raw:  # the Z85 secret key alone
        return server, zmq.curve_public(raw), raw
    from zmq.auth import load_certificate

    public, secret = load_certificate(client_secret)
    if secret is None:
        raise ValueError(f"{client_secret}: a public certificate; the device needs its secret key (*.key_secret)")
    return server, public, secret
