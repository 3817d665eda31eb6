"""The device node: the drafter behind a ZeroMQ DEALER, running requests round by round.

Every exchange has a timeout and a bounded number of retries (the edge answers a duplicate
with its previous reply), so a deep fade delays a round but never hangs a run: after the last
retry the request fails with :class:`ExchangeTimeout`. Each finished round is appended to the
round log at once.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import torch
import zmq

from nodes.decoding import Drafter, SamplingConfig
from nodes.profiles import ComputeProfile
from nodes.protocols import get_protocol
from nodes.telemetry import RoundLog, RoundLogger
from nodes.wire import (Bye, Draft, Error, Hello, HelloAck, HiddenRequest, HiddenUpload, Message, Result, Start,
                        Verdict, decode, encode, encoded_size)

log = logging.getLogger(__name__)


class ExchangeTimeout(RuntimeError):
    """No reply after every retry."""


class EdgeError(RuntimeError):
    """The edge rejected a message; ``code`` as in :class:`nodes.wire.Error`."""

    def __init__(self, code: str, message: str):
        super().__init__(f"edge error {code}: {message}")
        self.code = code


@dataclass
class DeviceConfig:
    """protocol, gamma (draft length), temperature (0 = greedy), hidden_dtype on the wire,
    timeout_ms per attempt, retries after the first attempt."""

    protocol: str = "vanilla"
    gamma: int = 4
    temperature: float = 0.0
    hidden_dtype: str = "f16"
    timeout_ms: int = 5000
    retries: int = 3
    device_id: str = field(default_factory=lambda: f"dev-{uuid.uuid4().hex[:6]}")
    token: str = ""
    seed: int = 0
    run_id: str = ""
    max_message_bytes: int = 8 << 20
    profile: ComputeProfile = field(default_factory=ComputeProfile)
    count_iface: str | None = None  # interface whose L2 counters give each round's on-wire bytes


@dataclass
class RequestResult:
    """Output tokens (prompt excluded) and per-round logs of one request."""

    request_id: str
    tokens: list[int]
    rounds: list[RoundLog]
    latency_ms: float
    ok: bool = True
    error: str = ""


@dataclass
class UploadChooser:
    """Per-round choice of ``wisv-adaptive`` between full upload and mismatch-first (SPEC §6):
    full costs γ hidden states on the uplink now; mismatch-first costs, when a mismatch occurs
    (observed rate, exponentially averaged), one more round trip plus the mismatched rows.
    Both in ms at the CSI in force; the cheaper wins."""

    bytes_per_row: int
    alpha: float = 0.2
    p_mismatch: float = 0.5
    rows_per_mismatch: float = 1.0

    def choose(self, gamma: int, csi: dict[str, float]) -> str:
        """``all`` or ``mismatch`` for a round of ``gamma`` draft tokens."""
        rate_bps = max(csi.get("rate_up_mbps", 10.0), 1e-3) * 1e6
        full_ms = 8.0 * gamma * self.bytes_per_row / rate_bps * 1000.0
        sel_ms = self.p_mismatch * (csi.get("rtt_ms", 20.0) + 8.0 * self.rows_per_mismatch * self.bytes_per_row
                                    / rate_bps * 1000.0)
        return "all" if full_ms <= sel_ms else "mismatch"

    def observe(self, mismatch: bool, rows: int | None = None) -> None:
        """Update the statistics with a finished round: whether it had a mismatch, and (when the
        edge asked for them) how many rows it requested."""
        self.p_mismatch += self.alpha * (float(mismatch) - self.p_mismatch)
        if rows:
            self.rows_per_mismatch += self.alpha * (rows - self.rows_per_mismatch)


def matches(sent: Message, reply: Message) -> bool:
    """True when ``reply`` answers ``sent`` (same request and round)."""
    if isinstance(reply, HelloAck) or isinstance(sent, Hello):
        return True
    if getattr(reply, "request_id", None) != getattr(sent, "request_id", None):
        return False
    return getattr(sent, "round", -1) == getattr(reply, "round", getattr(sent, "round", -1))


class ZmqTransport:
    """Real exchanges over a ZeroMQ DEALER with per-attempt timeouts and bounded retries; the
    clock is the real one."""

    def __init__(self, endpoint: str, cfg: DeviceConfig, curve_keys: tuple | None = None):
        self.cfg = cfg
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, cfg.max_message_bytes)
        self.sock.setsockopt(zmq.IDENTITY, cfg.device_id.encode())
        if curve_keys is not None:  # (server public, client public, client secret)
            self.sock.curve_serverkey, self.sock.curve_publickey, self.sock.curve_secretkey = curve_keys
        self.sock.connect(endpoint)

    def now_ms(self) -> float:
        """Monotonic time in ms."""
        return time.perf_counter() * 1000.0

    def wall_s(self) -> float:
        """Wall-clock time (epoch s) for the logs."""
        return time.time()

    def compute(self, ms: float) -> None:
        """Real compute already took its time."""

    def exchange(self, msg: Message, expect: tuple[type, ...], stats: dict) -> Message:
        """Send ``msg`` and return the matching reply, retrying after each timeout."""
        frames = encode(msg, {"hidden": self.cfg.hidden_dtype, "probs": "f32"})
        size = encoded_size(frames)
        for attempt in range(self.cfg.retries + 1):
            self.sock.send_multipart(frames)
            stats["up_bytes"] += size
            deadline = time.monotonic() + self.cfg.timeout_ms / 1000.0
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                    break
                reply_frames = self.sock.recv_multipart()
                stats["down_bytes"] += encoded_size(reply_frames)
                reply = decode(reply_frames, self.cfg.max_message_bytes)
                if isinstance(reply, Error):
                    raise EdgeError(reply.code, reply.message)
                if isinstance(reply, expect) and matches(msg, reply):
                    stats["round_trips"] += 1
                    return reply
                # a late reply to an earlier attempt of another exchange: ignore it
            stats["retries"] += 1
            log.warning("%s: no reply to %s after %d ms (attempt %d)", self.cfg.device_id, msg.TYPE,
                        self.cfg.timeout_ms, attempt + 1)
        raise ExchangeTimeout(f"no reply to {msg.TYPE} after {self.cfg.retries + 1} attempts")

    def send_only(self, msg: Message) -> None:
        """Send without waiting for a reply (bye)."""
        self.sock.send_multipart(encode(msg))

    def close(self) -> None:
        """Close the socket."""
        self.sock.close(0)


class DeviceClient:
    """Runs requests with one protocol against an edge, through a transport (ZeroMQ by
    default; the simulator passes one with an analytic link and a virtual clock)."""

    def __init__(self, drafter: torch.nn.Module, endpoint: str | None, config: DeviceConfig = DeviceConfig(),
                 eos_token_id: int | None = None, round_logger: RoundLogger | None = None,
                 csi: Callable[[], dict[str, float]] | None = None, curve_keys: tuple | None = None,
                 transport=None):
        self.cfg = config
        self.protocol = get_protocol(config.protocol)
        self.drafter = Drafter(drafter, SamplingConfig(config.temperature, config.seed))
        self.eos = eos_token_id
        self.logger, self.csi = round_logger, csi or (lambda: {})
        self.transport = transport if transport is not None else ZmqTransport(endpoint, config, curve_keys)
        width = int(drafter.config.hidden_size)
        row_bytes = {"f16": 2 * width, "bf16": 2 * width, "f32": 4 * width, "i8": width + 4}[config.hidden_dtype]
        self.chooser = UploadChooser(row_bytes)

    def _exchange(self, msg: Message, expect: tuple[type, ...], stats: dict) -> Message:
        return self.transport.exchange(msg, expect, stats)

    def hello(self) -> HelloAck:
        """Open the session."""
        stats = _stats()
        return self._exchange(Hello(self.cfg.device_id, self.protocol.name, self.cfg.gamma, self.cfg.temperature,
                                    self.cfg.hidden_dtype, self.cfg.token, self.cfg.seed), (HelloAck,), stats)

    def close(self) -> None:
        """Say bye and close the socket."""
        try:
            self.transport.send_only(Bye())
        finally:
            self.transport.close()

    # ------------------------------------------------------------------ a request
    def run(self, prompt: list[int], max_new_tokens: int = 128, request_id: str | None = None) -> RequestResult:
        """Run one request to completion; the result is marked failed (with partial rounds kept
        in the log) when the edge stops answering or rejects it."""
        rid = request_id or uuid.uuid4().hex[:12]
        t0 = self.transport.now_ms()
        rounds: list[RoundLog] = []
        out: list[int] = []
        try:
            if self.protocol.edge_only:
                stats = _stats()
                t_wall = self.transport.wall_s()
                res: Result = self._exchange(Start(rid, list(prompt), max_new_tokens), (Result,), stats)
                out = list(res.tokens)
                wall = self.transport.now_ms() - t0
                rounds.append(self._log(rid, 0, len(out), 0, 0, -1, 0, out[-1] if out else -1, stats, 0.0, res.verify_ms,
                                        0.0, wall, t_wall, {}))
            else:
                self._exchange(Start(rid, list(prompt), max_new_tokens), (Verdict,), _stats())
                out = self._speculate(rid, list(prompt), max_new_tokens, rounds)
        except (ExchangeTimeout, EdgeError) as e:
            return RequestResult(rid, out, rounds, self.transport.now_ms() - t0, ok=False, error=str(e))
        return RequestResult(rid, out, rounds, self.transport.now_ms() - t0)

    def _speculate(self, rid: str, seq: list[int], max_new_tokens: int, rounds: list[RoundLog]) -> list[int]:
        self.drafter.reset()
        out: list[int] = []
        rnd = 0
        while True:
            stats = _stats()
            wire0 = self._wire()
            t_wall, t0 = self.transport.wall_s(), self.transport.now_ms()
            csi = self.csi()
            g = min(self.cfg.gamma, max_new_tokens - len(out))
            block = self.drafter.draft(seq, g, self.eos)
            pad_ms = self.cfg.profile.pad(block.draft_ms, len(block.tokens))
            block.draft_ms += pad_ms
            self.transport.compute(block.draft_ms)
            upload = self.protocol.hidden_upload
            if upload == "adaptive":
                upload = self.chooser.choose(len(block.tokens), csi)
            hidden = block.hidden if upload == "all" else None
            stats["upload"] = upload if upload in ("all", "mismatch") else ""
            probs = block.probs if self.cfg.temperature > 0 and self.protocol.name == "vanilla" else None
            reply = self._exchange(Draft(rid, rnd, block.tokens, csi, hidden, probs), (Verdict, HiddenRequest), stats)
            if isinstance(reply, HiddenRequest):
                if any(not 0 <= p < len(block.tokens) for p in reply.positions):
                    raise EdgeError("bad_request", f"edge asked for positions {reply.positions}")
                rows = block.hidden[torch.tensor(reply.positions, dtype=torch.long)]
                self.chooser.observe(True, len(reply.positions))
                reply = self._exchange(HiddenUpload(rid, rnd, reply.positions, rows), (Verdict,), stats)
            elif upload == "mismatch":
                self.chooser.observe(False)
            v: Verdict = reply
            if upload == "all":  # the verdict says whether this round had a mismatch
                self.chooser.observe(v.first_mismatch >= 0)
            new = block.tokens[: v.n_accepted] + [v.next_token]
            seq.extend(new)
            out.extend(new)
            self.drafter.commit(len(seq))
            wall = self.transport.now_ms() - t0
            link = max(0.0, wall - block.draft_ms - v.verify_ms)
            stats["draft_pad_ms"], stats["verify_pad_ms"] = pad_ms, v.pad_ms
            if wire0 is not None:
                wire1 = self._wire()
                stats["wire_up_bytes"], stats["wire_down_bytes"] = wire1[0] - wire0[0], wire1[1] - wire0[1]
            rounds.append(self._log(rid, rnd, len(block.tokens), v.n_accepted, v.n_exact, v.first_mismatch,
                                    v.n_harmless, v.next_token, stats, block.draft_ms, v.verify_ms, link, wall, t_wall, csi))
            rnd += 1
            if v.done:
                if self.eos is not None and self.eos in out:
                    del out[out.index(self.eos) + 1:]
                return out[:max_new_tokens]

    def _wire(self) -> tuple[int, int] | None:
        """(tx, rx) L2 bytes of the counted interface in this process's namespace, or None."""
        if not self.cfg.count_iface:
            return None
        from topologies.counters import read_counters

        c = read_counters("self", self.cfg.count_iface)
        return c.tx_bytes, c.rx_bytes

    def _log(self, rid, rnd, drafted, accepted, exact, first, harmless, nxt, stats, draft_ms, verify_ms, link_ms,
             wall_ms, t_wall, csi) -> RoundLog:
        rec = RoundLog(self.cfg.run_id, self.protocol.name, self.cfg.device_id, rid, rnd, drafted, accepted, exact,
                       first, harmless, nxt, stats["up_bytes"], stats["down_bytes"], stats["round_trips"], draft_ms,
                       verify_ms, link_ms, wall_ms, t_wall, self.transport.wall_s(), stats["retries"], dict(csi),
                       stats.get("draft_pad_ms", 0.0), stats.get("verify_pad_ms", 0.0),
                       stats.get("wire_up_bytes", -1), stats.get("wire_down_bytes", -1), stats.get("upload", ""))
        if self.logger is not None:
            self.logger.write(rec)
        return rec


def _stats() -> dict:
    return {"up_bytes": 0, "down_bytes": 0, "round_trips": 0, "retries": 0}
