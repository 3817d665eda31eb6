"""The device node: the drafter behind a ZeroMQ DEALER, running requests round by round.

Every exchange has a timeout and a bounded number of retries (the edge answers a duplicate
with its previous reply), so a deep fade delays a round but never hangs a run: after the last
retry the request fails with :class:`ExchangeTimeout`. Each finished round is appended to the
round log at once. What the device uploads each round is its protocol's business
(:meth:`nodes.protocols.Protocol.round_upload`); how messages travel is its transport's
(ZeroMQ here, the simulator's analytic link in :mod:`runs.simulate`).
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import zmq

from channel_models.csi import CSI, round_trip_ms, transfer_ms
from nodes.config import RunConfig, TaskConfig
from nodes.decoding import Drafter, SamplingConfig
from nodes.decoding.stopping import StopCriteria, stop_criteria_for
from nodes.protocols import PROTOCOLS
from nodes.telemetry import RoundLog, RoundLogger
from nodes.wire import (Bye, Draft, Error, Hello, HelloAck, HiddenRequest, HiddenUpload, Message, Result, Start,
                        StartAck, Verdict, array_nbytes, decode, encode, encoded_size)

log = logging.getLogger(__name__)
DRAFT_BYTES = 250  # a draft message without hidden rows (γ = 4 token ids, the CSI report, ids), about
REQUEST_BYTES = 70  # a hidden_request message, about
UPLOAD_HEADER_BYTES = 130  # a hidden_upload message without its rows, about


def upload_costs_ms(csi: CSI, gamma: int, bytes_per_row: float, p_mismatch: float, rows_per_mismatch: float,
                    draft_bytes: float = DRAFT_BYTES, request_bytes: float = REQUEST_BYTES,
                    upload_header_bytes: float = UPLOAD_HEADER_BYTES) -> tuple[float, float]:
    """(full, mismatch-first): the expected time in ms each upload mode adds to a round of
    ``gamma`` draft tokens at ``csi``, by the one link model (:func:`channel_models.csi.transfer_ms`).
    Full: the draft carries ``gamma`` rows of ``bytes_per_row`` more — their serialisation and
    the expected retransmissions of the extra TCP segments. Mismatch-first: with probability
    ``p_mismatch`` one more exchange, a hidden_request down and ``rows_per_mismatch`` rows up."""
    full = (transfer_ms(csi, draft_bytes + gamma * bytes_per_row, "up") - transfer_ms(csi, draft_bytes, "up"))
    second = p_mismatch * round_trip_ms(csi, upload_header_bytes + rows_per_mismatch * bytes_per_row, request_bytes)
    return full, second


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
        """The per-request record of the ``requests`` table (README: output schema)."""
        return {"request_id": self.request_id, "ok": self.ok, "error": self.error, "correct": bool(self.ok and correct),
                "n_tokens": len(self.tokens), "latency_ms": self.latency_ms, "rounds": len(self.rounds)}


@dataclass
class UploadChooser:
    """Per-round choice of ``wisv-adaptive`` between full upload and mismatch-first (SPEC §6),
    both priced in ms by the one link model at the CSI in force when the draft is sent
    (:func:`upload_costs_ms`): full costs the γ rows' transfer on the uplink now, expected
    retransmissions of their extra segments included; mismatch-first costs, when the round has
    a mismatch, one more exchange carrying the mismatched rows. The cheaper wins.

    The chance of a mismatch grows with the draft's length: a draft token differs from the
    target's choice with probability ``p_token`` (failures per token tried up to the first
    mismatch, averaged over rounds: a running mean at first, exponential with weight ``alpha``
    later), so a round of g tokens has one with 1 − (1 − p_token)^g — a short last round rarely
    needs the second exchange.
    ``bytes_per_row``: one row on the wire (wire dtype × wire width)."""

    bytes_per_row: int
    alpha: float = 0.05  # slow: a round's mismatch says little about the next one's (benchmarks/upload_crossover.py)
    p_token: float = 0.15
    rows_per_mismatch: float = 1.0
    _failures: float = 0.15  # averaged mismatches per round …
    _tried: float = 1.0  # … and draft tokens tried per round (up to and including the first mismatch)
    _rounds: int = 0  # rounds observed (the prior counts as one)
    _asked: int = 0  # rounds whose rows the edge asked for

    def p_mismatch(self, gamma: int) -> float:
        """Chance that a round of ``gamma`` draft tokens has a mismatch (0–1)."""
        return 1.0 - (1.0 - self.p_token) ** gamma

    def costs_ms(self, gamma: int, csi: CSI) -> tuple[float, float]:
        """(full, mismatch-first) expected ms added to a round of ``gamma`` draft tokens at ``csi``."""
        return upload_costs_ms(csi, gamma, self.bytes_per_row, self.p_mismatch(gamma),
                               min(self.rows_per_mismatch, gamma))

    def choose(self, gamma: int, csi: CSI) -> str:
        """``all`` or ``mismatch`` for a round of ``gamma`` draft tokens."""
        full_ms, sel_ms = self.costs_ms(gamma, csi)
        return "all" if full_ms <= sel_ms else "mismatch"

    def observe(self, drafted: int, first_mismatch: int, rows: int = 0) -> None:
        """Update the statistics with a finished round of ``drafted`` tokens: its first mismatch
        (−1: none) and, when the edge asked for them, how many rows it requested."""
        mismatch = 0 <= first_mismatch < drafted
        self._rounds += 1
        w = max(self.alpha, 1.0 / (self._rounds + 1))  # a running mean until 1/alpha rounds, then exponential
        self._failures += w * (float(mismatch) - self._failures)
        self._tried += w * ((first_mismatch + 1 if mismatch else drafted) - self._tried)
        self.p_token = min(1.0, self._failures / max(self._tried, 1e-9))
        if rows:
            self._asked += 1
            self.rows_per_mismatch += max(self.alpha, 1.0 / (self._asked + 1)) * (rows - self.rows_per_mismatch)


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

    def exchange(self, msg: Message, expect: tuple[type, ...], stats: dict) -> Message:
        """Send ``msg`` and return the matching reply, retrying after each timeout."""
        frames = encode(msg, {"hidden": self.cfg.hidden_dtype, "probs": "f32"})
        size = encoded_size(frames)
        for attempt in range(self.cfg.retries + 1):
            try:
                self.sock.send_multipart(frames)
            except zmq.Again:  # nothing to send to for timeout_ms
                stats["retries"] += 1
                log.warning("%s: could not send %s for %d ms (attempt %d)", self.cfg.device_id, msg.TYPE,
                            self.cfg.timeout_ms, attempt + 1)
                continue
            stats["up_bytes"] += size
            deadline = time.monotonic() + self.cfg.timeout_ms / 1000.0
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                    break
                reply_frames = self.sock.recv_multipart()
                stats["down_bytes"] += encoded_size(reply_frames)
                reply = decode(reply_frames, self.max_message_bytes)
                if isinstance(reply, Error):
                    raise EdgeError(reply.code, reply.message)
                if isinstance(reply, expect) and matches(msg, reply):
                    stats["round_trips"] += 1
                    return reply
                # a late reply to an earlier attempt of another exchange: ignore it
            if self._key_refused():
                raise EdgeError("unauthenticated", "the edge refused this device's CURVE key (not on its allow-list)")
            stats["retries"] += 1
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
        self.chooser = UploadChooser(array_nbytes((1, self.wire_width), cfg.hidden_dtype))
        self._stop: StopCriteria | None = None  # the request in progress: its stop rules …
        self._ended = ""  # … and why it ended, once a stop rule fired

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
                                            c.seed, c.hidden_wire_width or 0), (HelloAck,), _stats())
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
        """Run one request to completion; the result is marked failed (with partial rounds kept
        in the log) when the edge stops answering or rejects it. ``stop``: where the output ends
        besides the edge's EOS and the budget (several EOS ids, stop sequences): the device
        drafts no further, ends the request and drops the tokens past the stop."""
        rid = request_id or uuid.uuid4().hex[:12]
        self._stop, self._ended = stop, ""
        t0 = self.transport.now_ms()
        rounds: list[RoundLog] = []
        out: list[int] = []
        try:
            if self.protocol.edge_only:
                out = self._edge_alone(rid, list(prompt), max_new_tokens, rounds)
            else:
                self.transport.exchange(Start(rid, list(prompt), max_new_tokens, self.secret), (StartAck,), _stats())
                out = self._speculate(rid, list(prompt), max_new_tokens, rounds)
        except (ExchangeTimeout, EdgeError) as e:
            return RequestResult(rid, out, rounds, self.transport.now_ms() - t0, ok=False, error=str(e))
        hit = stop.check(out) if stop is not None else None
        if hit is not None:  # the edge decoded alone, or its EOS is one of several
            del out[hit.keep:]
        reason = hit.reason if hit is not None else self._end_reason(out, max_new_tokens)
        return RequestResult(rid, out, rounds, self.transport.now_ms() - t0, end_reason=reason)

    def _end_reason(self, out: list[int], max_new_tokens: int) -> str:
        if self._ended:
            return self._ended
        return "eos" if self.eos is not None and out and out[-1] == self.eos else "budget"

    def _edge_alone(self, rid: str, prompt: list[int], max_new_tokens: int, rounds: list[RoundLog]) -> list[int]:
        stats, t0, t_wall, csi = _stats(), self.transport.now_ms(), self.transport.wall_s(), self.csi()
        res: Result = self.transport.exchange(Start(rid, prompt, max_new_tokens, self.secret), (Result,), stats)
        out = list(res.tokens)
        wall = self.transport.now_ms() - t0
        rounds.append(self._log(rid, 0, len(out), 0, 0, -1, 0, out[-1] if out else -1, stats, 0.0, res.verify_ms,
                                wall - res.verify_ms, wall, t_wall, csi))
        return out

    def _speculate(self, rid: str, seq: list[int], max_new_tokens: int, rounds: list[RoundLog]) -> list[int]:
        self.drafter.reset()
        out: list[int] = []
        rnd = 0
        stop = self._stop
        while True:
            stats = _stats()
            wire0 = self.wire_counter() if self.wire_counter else None
            t_wall, t0 = self.transport.wall_s(), self.transport.now_ms()
            csi = self.csi()
            n_prefill = max(0, len(seq) - self.drafter.lm.cache_len - 1)
            done = len(out)
            block = self.drafter.draft(seq, min(self.cfg.gamma, max_new_tokens - len(out)), self.eos,
                                       stop=None if stop is None else lambda t: stop.check(out + t, done) is not None)
            block.draft_ms, pad_ms = self.cfg.compute.device.charge(block.draft_ms, len(block.tokens), n_prefill,
                                                                     exact=self.transport.virtual)
            self.transport.compute(block.draft_ms, pad_ms)
            # the upload meets the channel in force once the draft is ready, not the round-start report
            upload = self.protocol.round_upload(self.chooser.choose, len(block.tokens), self.csi())
            stats["upload"] = upload if upload != "none" else ""
            probs = block.probs if self.protocol.sends_probs(self.cfg.temperature) else None
            hidden = pad_rows(block.hidden, self.wire_width) if upload == "all" else None
            reply = self.transport.exchange(Draft(rid, rnd, block.tokens, csi.to_wire(), hidden, probs, self.secret),
                                            (Verdict, HiddenRequest), stats)
            if isinstance(reply, HiddenRequest):
                if any(not 0 <= p < len(block.tokens) for p in reply.positions):
                    raise EdgeError("bad_request", f"edge asked for positions {reply.positions}")
                rows = pad_rows(block.hidden[torch.tensor(reply.positions, dtype=torch.long)], self.wire_width)
                asked = len(reply.positions)
                reply = self.transport.exchange(HiddenUpload(rid, rnd, reply.positions, rows, self.secret), (Verdict,),
                                                stats)
            else:
                asked = 0
            v: Verdict = reply
            self.chooser.observe(len(block.tokens), v.first_mismatch, asked)  # the verdict says where it differed
            new = block.tokens[: v.n_accepted] + [v.next_token]
            hit = stop.check(out + new, len(out)) if stop is not None else None
            if hit is not None:  # tokens past the stop are not output
                new, self._ended = new[: hit.keep - len(out)], hit.reason
            seq.extend(new)
            out.extend(new)
            self.drafter.commit(len(seq))
            wall = self.transport.now_ms() - t0
            stats["draft_pad_ms"], stats["verify_pad_ms"] = pad_ms, v.pad_ms
            if wire0 is not None:
                wire1 = self.wire_counter()
                stats["wire_up_bytes"], stats["wire_down_bytes"] = wire1[0] - wire0[0], wire1[1] - wire0[1]
            rounds.append(self._log(rid, rnd, len(block.tokens), v.n_accepted, v.n_exact, v.first_mismatch,
                                    v.n_harmless, v.next_token, stats, block.draft_ms, v.verify_ms,
                                    max(0.0, wall - block.draft_ms - v.verify_ms), wall, t_wall, csi))
            rnd += 1
            if hit is not None:
                return out[:max_new_tokens]
            if v.done:
                if self.eos is not None and self.eos in out:
                    del out[out.index(self.eos) + 1:]
                return out[:max_new_tokens]

    def _log(self, rid, rnd, drafted, accepted, exact, first, harmless, nxt, stats, draft_ms, verify_ms, link_ms,
             wall_ms, t_wall, csi: CSI) -> RoundLog:
        rec = RoundLog(self.cfg.run_id, self.protocol.name, self.cfg.device_id, rid, rnd, drafted, accepted, exact,
                       first, harmless, nxt, stats["up_bytes"], stats["down_bytes"], stats["round_trips"], draft_ms,
                       verify_ms, link_ms, wall_ms, t_wall, self.transport.wall_s(), stats["retries"], csi,
                       stats.get("draft_pad_ms", 0.0), stats.get("verify_pad_ms", 0.0),
                       stats.get("wire_up_bytes", -1), stats.get("wire_down_bytes", -1), stats.get("upload", ""))
        if self.logger is not None:
            self.logger.write(rec)
        return rec


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


def _stats() -> dict:
    return {"up_bytes": 0, "down_bytes": 0, "round_trips": 0, "retries": 0}


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
