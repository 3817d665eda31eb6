"""Fuzz the wire decoder and the edge's message handler with hypothesis (issue 12).

Two campaigns of generated inputs — arbitrary bytes, valid messages of every type with hostile
values and array shapes (wrong rank or width, huge claimed shapes, NaN/inf, every wire dtype),
the same with one header field or spec replaced or dropped, and byte-level mutations of them:

1. ``nodes.wire.decode``: every case must decode to a message or raise ``WireError``.
2. ``EdgeServer.handle_frames`` (no socket; the shipped models; in a child process, so that
   its resident memory is the edge's alone) with five open sessions (greedy and sampled
   ``vanilla``, ``wisv-selective``, ``wisv-full``, ``ar-edge``): most generated messages carry
   the session's real secret, so they reach the handlers, the target forward and the heads, and
   each ``hidden_request`` gets a generated answer. Every reply must be none (``bye``), a valid
   message or an ``error`` with a code other than ``internal``; afterwards a fresh session must
   still decode requests exactly as the target alone does. The edge process's RSS is sampled
   after the first tenth of the cases and at the end.

A crash is anything else. Usage: ``python benchmarks/fuzz_wire.py [--cases N] [--seed S]
[--only decode|edge]`` (N generated cases per campaign, default 10 000). Last stdout line: one
JSON object {"cases" (inputs checked: decode cases + edge messages), "clear_errors", "accepted",
"crashes", "edge_rss_growth_mb", "valid_session_ok", "codes", "per_campaign", "crash_examples"}.
The strategies and the harness are imported by ``tests/test_edge_hardening.py`` (a few hundred
cases there).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack  # noqa: E402
import numpy as np  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from channel_models.csi import CSI  # noqa: E402
from runs.simulate import SimTransport  # noqa: E402
from nodes.wire import (MESSAGE_TYPES, WIRE_DTYPES, Bye, Draft, Error, Hello, HelloAck, HiddenRequest,  # noqa: E402
                        HiddenUpload, Message, Start, StartAck, WireError, decode, encode)

PLACEHOLDER = "s" * 32  # generated messages carry this; the harness swaps in a session's real secret
PLACEHOLDER_BYTES = PLACEHOLDER.encode()
VOCAB, DRAFTER_WIDTH = 283, 64  # of the shipped pair (the edge checks against its own values)
IDENT = b"fuzz-device"
FUZZ_SESSIONS = (("vanilla", 0.0), ("vanilla", 0.8), ("wisv-selective", 0.0), ("wisv-full", 0.0), ("ar-edge", 0.0))

# ----------------------------------------------------------------------------- strategies

HOSTILE_INTS = st.sampled_from([-1, -(2 ** 63), 2 ** 31, 2 ** 63 - 1, 2 ** 64 - 1, VOCAB, 10 ** 6, 1 << 40])
SMALL_INTS = st.integers(min_value=-2, max_value=6)
HOSTILE_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.binary(max_size=12),
    st.lists(st.integers(min_value=-3, max_value=300), max_size=6),
    st.dictionaries(st.text(max_size=6), st.floats(allow_nan=True), max_size=3))
SECRETS = st.sampled_from([PLACEHOLDER] * 6 + ["", "0" * 32, "x"])
REQUEST_IDS = st.sampled_from(["r0", "r0", "r0", "r1", ""])
DTYPES = st.sampled_from(list(WIRE_DTYPES))


def token_lists(max_size: int = 8) -> st.SearchStrategy[list[int]]:
    """Draft/prompt token ids: mostly within the vocabulary, sometimes hostile."""
    return st.lists(st.one_of(st.integers(min_value=0, max_value=VOCAB - 1), st.integers(min_value=0, max_value=VOCAB - 1),
                              HOSTILE_INTS), max_size=max_size)


def _encode(msg: Message, dtypes: dict[str, str] | None = None) -> list[bytes]:
    """``encode`` without numpy's warnings about the NaN/inf the fuzz puts in arrays."""
    with np.errstate(all="ignore"):
        return encode(msg, dtypes)


@st.composite
def arrays(draw, rows: int, width: int) -> np.ndarray:
    """A float32 array of the expected [rows, width] shape, or a wrong rank/width/huge one;
    values normal, extreme, NaN or ±inf."""
    shape = draw(st.sampled_from([(rows, width), (rows, width), (rows, width + 1), (rows,), (rows, width, 1),
                                  (0, width), (max(rows, 1) + 1, width), (1, 50_000), (rows, 1)]))
    fill = draw(st.sampled_from(["normal", "normal", "normal", "nan", "inf", "huge", "zero"]))
    n = int(np.prod(shape))
    x = np.random.default_rng(draw(st.integers(0, 2 ** 16))).standard_normal(n).astype(np.float32)
    if fill == "nan" and n:
        x[draw(st.integers(0, n - 1))] = np.nan
    elif fill == "inf" and n:
        x[draw(st.integers(0, n - 1))] = -np.inf
    elif fill == "huge":
        with np.errstate(all="ignore"):
            x *= np.float32(3e38)
    elif fill == "zero":
        x[:] = 0.0
    return x.reshape(shape)


@st.composite
def structured(draw) -> list[bytes]:
    """A message of a random type, well formed on the wire but with hostile values: ids, rounds,
    token ids, positions, CSI reports and arrays; most carry the session secret placeholder."""
    kind = draw(st.sampled_from(["hello", "start", "draft", "draft", "draft", "hidden_upload", "hidden_upload", "bye",
                                 "other"]))
    secret, rid = draw(SECRETS), draw(REQUEST_IDS)
    rnd = draw(st.one_of(st.sampled_from([0, 0, 0, 0, 1, 2]), SMALL_INTS, HOSTILE_INTS))
    dtypes = {"hidden": draw(DTYPES), "probs": draw(DTYPES)}
    if kind == "hello":
        msg: Message = Hello(draw(st.text(max_size=8)), draw(st.sampled_from([n for n, _ in FUZZ_SESSIONS] + ["x"])),
                             draw(st.one_of(st.integers(min_value=1, max_value=8), HOSTILE_INTS)),
                             draw(st.sampled_from([0.0, 0.8, -1.0, 1e300])), draw(st.sampled_from([*WIRE_DTYPES, "f64"])),
                             seed=draw(st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1)))
    elif kind == "start":
        msg = Start(rid, draw(token_lists(24)), draw(st.one_of(st.integers(min_value=1, max_value=8), SMALL_INTS,
                                                               HOSTILE_INTS)), secret)
    elif kind == "draft":
        tokens = draw(st.one_of(st.lists(st.integers(min_value=0, max_value=VOCAB - 1), min_size=1, max_size=4),
                                st.lists(st.integers(min_value=0, max_value=VOCAB - 1), min_size=1, max_size=4),
                                token_lists(6)))
        g = len(tokens)
        csi = draw(st.sampled_from([{}, {"snr_db": 3.0}, {"rate_up_mbps": 0.0}, {"rate_up_mbps": -1.0},
                                    {"loss_up": 2.0}, {"delay_up_ms": 1e300, "junk": 1.0}]))
        hidden = draw(st.none() | arrays(g, DRAFTER_WIDTH))
        probs = draw(st.none() | arrays(g, VOCAB))
        if probs is not None and draw(st.booleans()):
            with np.errstate(all="ignore"):
                probs = np.abs(probs) / np.float32(max(float(np.abs(probs).sum()), 1e-6))
        msg = Draft(rid, rnd, tokens, csi, hidden, probs, secret)
    elif kind == "hidden_upload":
        positions = draw(st.lists(st.one_of(st.integers(min_value=0, max_value=5), HOSTILE_INTS), max_size=5))
        hidden = draw(st.none() | arrays(len(positions), DRAFTER_WIDTH))
        msg = HiddenUpload(rid, rnd, positions, hidden, secret)
    elif kind == "bye":
        msg = Bye(draw(st.sampled_from(["", "0" * 32, "x", PLACEHOLDER])))
    else:  # a message an edge never serves
        msg = Error("internal", "x")
    return _encode(msg, dtypes)


@st.composite
def header_mutations(draw) -> list[bytes]:
    """A structured message with one header entry replaced or dropped (version, type, a field,
    an array spec), or a frame dropped or added."""
    frames = list(draw(structured()))
    head = msgpack.unpackb(frames[0], raw=False)
    op = draw(st.sampled_from(["v", "t", "field", "field", "drop_field", "spec", "spec", "drop_frame", "add_frame",
                               "head_type"]))
    if op == "v":
        head["v"] = draw(st.sampled_from([True, 1.0, 0, 2, -1, "1", None, [1], 2 ** 64 - 1]))
    elif op == "t":
        head["t"] = draw(st.one_of(st.sampled_from(list(MESSAGE_TYPES)), st.text(max_size=8), HOSTILE_VALUES))
    elif op == "field" and head["f"]:
        head["f"][draw(st.sampled_from(sorted(head["f"])))] = draw(HOSTILE_VALUES)
    elif op == "field":
        head["f"][draw(st.text(max_size=6))] = draw(HOSTILE_VALUES)
    elif op == "drop_field" and head["f"]:
        head["f"].pop(draw(st.sampled_from(sorted(head["f"]))))
    elif op == "spec":
        spec = {"n": draw(st.sampled_from(["hidden", "probs", "x"])), "d": draw(st.sampled_from([*WIRE_DTYPES, "f64", 1])),
                "s": draw(st.one_of(st.lists(st.one_of(st.integers(min_value=0, max_value=70), HOSTILE_INTS), max_size=6),
                                    HOSTILE_VALUES))}
        if head["a"] and draw(st.booleans()):
            head["a"][0] = spec
        else:
            head["a"].append(spec)
            frames.append(draw(st.binary(max_size=300)))
    elif op == "drop_frame" and len(frames) > 1:
        frames.pop(draw(st.integers(min_value=1, max_value=len(frames) - 1)))
    elif op == "add_frame":
        frames.append(draw(st.binary(max_size=64)))
    elif op == "head_type":
        head = draw(st.sampled_from([[1, "draft"], "draft", {"v": 1}, {"v": 1, "t": "draft", "f": [], "a": {}}]))
    frames[0] = msgpack.packb(head, use_bin_type=True)
    return frames


@st.composite
def byte_mutations(draw) -> list[bytes]:
    """A structured message with bytes of one frame flipped, cut, inserted or overwritten."""
    frames = list(draw(structured()))
    i = draw(st.integers(min_value=0, max_value=len(frames) - 1))
    buf = bytearray(frames[i])
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "overwrite"]))
        pos = draw(st.integers(min_value=0, max_value=len(buf)))
        if op == "flip" and pos < len(buf):
            buf[pos] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif op == "cut":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "overwrite" and pos < len(buf):
            buf[pos:pos + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\xc0\x7f", b"\xcf" + b"\xff" * 3,
                                                     b"\xdd\xff\xff\xff"]))
    frames[i] = bytes(buf)
    return frames


@st.composite
def upload_answers(draw, request: HiddenRequest) -> list[bytes]:
    """A ``hidden_upload`` answering ``request``: mostly the requested positions, or them
    repeated, extended, cut, reordered or replaced; rows of any shape and wire dtype."""
    asked = list(request.positions)
    mode = draw(st.sampled_from(["exact", "exact", "exact", "reversed", "dup", "extra", "missing", "hostile"]))
    positions = {"exact": asked, "reversed": asked[::-1], "dup": asked + asked[:1], "extra": asked + [max(asked) + 1],
                 "missing": asked[1:], "hostile": draw(st.lists(HOSTILE_INTS, max_size=3))}[mode]
    rnd = request.round if draw(st.integers(0, 5)) else request.round + 1
    msg = HiddenUpload(request.request_id, rnd, positions, draw(st.none() | arrays(len(positions), DRAFTER_WIDTH)),
                       draw(SECRETS))
    return _encode(msg, {"hidden": draw(DTYPES)})


def wire_frames() -> st.SearchStrategy[list[bytes]]:
    """Any of: arbitrary frames, structured hostile messages, header and byte mutations."""
    raw = st.lists(st.binary(max_size=120), max_size=4)
    return st.one_of(raw, structured(), structured(), structured(), header_mutations(), header_mutations(),
                     byte_mutations())


@st.composite
def session_messages(draw, k: int) -> list[bytes]:
    """A message that fuzz session ``k`` could well accept: a draft of request ``r0`` with the
    arrays its protocol uploads (any wire dtype, rarely a NaN), or for ``ar-edge`` a short
    request; the session secret placeholder."""
    protocol, temperature = FUZZ_SESSIONS[k]
    valid_tokens = st.lists(st.integers(min_value=0, max_value=VOCAB - 1), min_size=1, max_size=4)
    if protocol == "ar-edge":
        return _encode(Start("r0", draw(valid_tokens), draw(st.integers(min_value=1, max_value=6)), PLACEHOLDER))
    tokens = draw(valid_tokens)
    g = len(tokens)
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    hidden = rng.standard_normal((g, DRAFTER_WIDTH)).astype(np.float32) if protocol == "wisv-full" else None
    probs = None
    if temperature > 0:
        probs = rng.dirichlet(np.ones(VOCAB), size=g).astype(np.float32)
    if draw(st.integers(0, 9)) == 0 and (hidden is not None or probs is not None):
        (hidden if hidden is not None else probs)[0, 0] = np.nan
    csi = draw(st.sampled_from([{}, {"snr_db": 3.0, "rate_up_mbps": 2.0}, {"rate_up_mbps": 0.0}]))
    return _encode(Draft("r0", draw(st.sampled_from([0, 0, 0, 1])), tokens, csi, hidden, probs, PLACEHOLDER),
                  {"hidden": draw(DTYPES), "probs": draw(DTYPES)})


@st.composite
def edge_cases(draw) -> tuple[int, list[list[bytes]]]:
    """A fuzz session index and one to three messages for it: likely-valid ones for that
    session and any of :func:`wire_frames`."""
    k = draw(st.integers(min_value=0, max_value=len(FUZZ_SESSIONS) - 1))
    return k, draw(st.lists(st.one_of(session_messages(k), session_messages(k), wire_frames()), min_size=1, max_size=3))


# ----------------------------------------------------------------------------- outcomes

class FuzzCrash(AssertionError):
    """An input that got neither a clear error nor a valid answer."""


def decode_case(frames: list[bytes]) -> str:
    """``ok`` or ``clear_error``; FuzzCrash for any other exception of :func:`nodes.wire.decode`."""
    try:
        decode(frames)
    except WireError:
        return "clear_error"
    except Exception as e:  # noqa: BLE001 — that is the point
        raise FuzzCrash(f"decode raised {type(e).__name__}: {e}") from e
    return "ok"


def classify_reply(reply: list[bytes] | None) -> tuple[str, Message | None]:
    """(``no_reply``, ``accepted`` or ``error:<code>``; the decoded reply) for an edge reply;
    FuzzCrash for a reply that does not decode or an ``internal`` error."""
    if reply is None:
        return "no_reply", None
    try:
        msg = decode(reply)
    except WireError as e:
        raise FuzzCrash(f"the edge sent an undecodable reply: {e}") from e
    if isinstance(msg, Error):
        if msg.code == "internal":
            raise FuzzCrash(f"internal error: {msg.message}")
        return f"error:{msg.code}", msg
    return "accepted", msg


# ----------------------------------------------------------------------------- harness

class _NoLink:
    """No link model: every message arrives at once; the channel report is the default one."""

    def transfer_ms(self, t_ms: float, nbytes: int, direction: str, expected: bool = False) -> float:
        return 0.0

    def csi(self, t_ms: float) -> CSI:
        return CSI()


class DirectTransport(SimTransport):
    """The simulator's transport without a link (frames go straight to an edge's handler);
    ``before`` runs before each exchange (an attacker's turn, in tests)."""

    virtual = False  # measured compute

    def __init__(self, edge, cfg, ident: bytes, before: Callable[[], None] | None = None):
        super().__init__(edge, _NoLink(), cfg)
        self.ident, self.before = ident, before

    def exchange(self, msg: Message, expect: tuple[type, ...], counts) -> Message:
        """The attacker's turn, then one message to the edge and its reply (``counts``: a
        :class:`nodes.device.ExchangeCounts`)."""
        if self.before is not None:
            self.before()
        return super().exchange(msg, expect, counts)


def greedy_session_ok(edge, pair, n_problems: int = 2, ident: bytes = b"valid-device") -> bool:
    """A fresh greedy ``vanilla`` session through ``edge`` (anything with ``handle_frames``)
    decodes ``n_problems`` test problems exactly as the target alone does."""
    from nodes.config import RunConfig
    from nodes.decoding import autoregressive_generate
    from nodes.device import DeviceClient
    from nodes.evaluate import encode_prompt
    from nodes.tasks import ArithTask

    cfg = RunConfig(protocol="vanilla", device_id="valid")
    client = DeviceClient(pair.drafter, cfg, pair.eos_token_id, DirectTransport(edge, cfg, ident))
    client.hello()
    ok = True
    for p in ArithTask().problems("test", n_problems):
        ids = encode_prompt(pair, p)
        res = client.run(ids, 64)
        ok &= res.ok and res.tokens == autoregressive_generate(pair.target, ids, 64, pair.eos_token_id)
    client.close()
    return bool(ok)


def rss_mb() -> float:
    """Resident memory of this process, MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


class LocalEdge:
    """An edge (no socket) in this process, serving the shipped target."""

    def __init__(self, pair, limits=None):
        from nodes.edge import EdgeLimits, EdgeServer

        self.server = EdgeServer(pair.target, pair.eos_token_id, bind=None, limits=limits or EdgeLimits(max_sessions=16))

    def handle_frames(self, ident: bytes, frames: list[bytes]) -> list[bytes] | None:
        """The edge's reply to one message."""
        return self.server.handle_frames(ident, frames)

    def forget_except(self, keep: set[str]) -> None:
        """Close every session whose secret is not in ``keep`` (the edge's session limit stays free)."""
        for key in [k for k in self.server.sessions if k not in keep]:
            del self.server.sessions[key]

    def stats(self) -> dict:
        """The edge's message counters."""
        return dict(self.server.stats)

    def rss_mb(self) -> float:
        """Resident memory of the process the edge runs in, MB."""
        return rss_mb()

    def close(self) -> None:
        """Nothing to close."""


def _edge_child(conn) -> None:
    """Serve :class:`LocalEdge` calls from ``conn`` until ``close`` (the child of :class:`ChildEdge`)."""
    import torch

    from nodes.models import load_pair

    logging.basicConfig(level=logging.CRITICAL)
    torch.set_num_threads(1)
    edge = LocalEdge(load_pair())
    conn.send("ready")
    while True:
        name, args = conn.recv()
        if name == "close":
            break
        conn.send(getattr(edge, name)(*args))


class ChildEdge:
    """An edge in a child process (spawned; it loads the shipped pair), called through a pipe:
    its resident memory is the edge's alone, not the fuzzer's."""

    def __init__(self):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_edge_child, args=(child,), daemon=True)
        self.proc.start()
        if self.conn.recv() != "ready":
            raise RuntimeError("the edge process did not start")

    def _call(self, name: str, *args):
        try:
            self.conn.send((name, args))
            return self.conn.recv()
        except (EOFError, OSError) as e:
            raise FuzzCrash(f"the edge process died (exit code {self.proc.exitcode})") from e

    def handle_frames(self, ident: bytes, frames: list[bytes]) -> list[bytes] | None:
        """The edge's reply to one message."""
        return self._call("handle_frames", ident, frames)

    def forget_except(self, keep: set[str]) -> None:
        """As :meth:`LocalEdge.forget_except`."""
        self._call("forget_except", keep)

    def stats(self) -> dict:
        """The edge's message counters."""
        return self._call("stats")

    def rss_mb(self) -> float:
        """Resident memory of the edge process, MB."""
        return self._call("rss_mb")

    def close(self) -> None:
        """End the edge process."""
        if self.proc.is_alive():
            self.conn.send(("close", ()))
            self.proc.join(timeout=10)


class EdgeFuzzer:
    """One open session per :data:`FUZZ_SESSIONS` entry on an edge (:class:`LocalEdge` or
    :class:`ChildEdge`), each with request ``r0`` at round 0 before each case; :meth:`run_case`
    sends a case's messages with the placeholder secret replaced by the chosen session's. The
    harness talks to the edge only through messages (and ``forget_except``)."""

    def __init__(self, pair, edge=None):
        from nodes.evaluate import encode_prompt
        from nodes.tasks import ArithTask

        self.edge = edge or LocalEdge(pair)
        self.prompt = encode_prompt(pair, ArithTask().problems("test", 1)[0])
        self.secrets = [""] * len(FUZZ_SESSIONS)

    def _ask(self, msg: Message) -> Message:
        reply = self.edge.handle_frames(IDENT, encode(msg))
        if reply is None:
            raise FuzzCrash(f"no reply to the harness's {msg.TYPE}")
        return decode(reply)

    def _ready(self, k: int) -> str:
        """Session ``k``'s secret, (re)opening it (a fuzzed bye may have closed it) and
        restarting its request ``r0`` at round 0."""
        protocol, temperature = FUZZ_SESSIONS[k]
        for _ in range(2):
            if not self.secrets[k]:
                ack = self._ask(Hello("fuzz", protocol, 4, temperature))
                if not isinstance(ack, HelloAck):
                    raise FuzzCrash(f"the harness could not open a {protocol} session: {ack}")
                self.secrets[k] = ack.secret
            if protocol == "ar-edge":  # nothing to restart: probe that the session is open
                reply = self._ask(Draft("r0", 0, [1], secret=self.secrets[k]))
                if isinstance(reply, Error) and reply.code == "bad_request":
                    return self.secrets[k]
            else:
                reply = self._ask(Start("r0", self.prompt, 48, self.secrets[k]))
                if isinstance(reply, StartAck):
                    return self.secrets[k]
            if not (isinstance(reply, Error) and reply.code in ("no_session", "unauthenticated")):
                raise FuzzCrash(f"the harness could not restart its request: {reply}")
            self.secrets[k] = ""
        raise FuzzCrash(f"the harness could not reopen its {protocol} session")

    def run_case(self, k: int, messages: list[list[bytes]],
                 answer: Callable[[HiddenRequest], list[bytes]] | None = None) -> list[str]:
        """The outcome of each message (see :func:`classify_reply`), and of the ``answer`` to
        each ``hidden_request`` the edge sends back; FuzzCrash on a crash."""
        secret = self._ready(k).encode()
        out = []
        queue = list(messages)
        while queue:
            frames = queue.pop(0)
            frames = [frames[0].replace(PLACEHOLDER_BYTES, secret), *frames[1:]] if frames else frames
            outcome, reply = classify_reply(self.edge.handle_frames(IDENT, frames))
            out.append(outcome)
            if isinstance(reply, HiddenRequest) and answer is not None and len(out) < 8:
                queue.insert(0, answer(reply))
        self.edge.forget_except(set(self.secrets))
        return out


# ----------------------------------------------------------------------------- campaigns

def _settings(cases: int):
    return settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck))


def fuzz_decode(cases: int, rng_seed: int) -> dict:
    """``cases`` generated frame lists through :func:`nodes.wire.decode`."""
    counts = {"cases": 0, "ok": 0, "clear_errors": 0, "crashes": 0, "examples": []}

    @seed(rng_seed)
    @_settings(cases)
    @given(frames=wire_frames())
    def one(frames: list[bytes]) -> None:
        counts["cases"] += 1
        try:
            counts["clear_errors" if decode_case(frames) == "clear_error" else "ok"] += 1
        except FuzzCrash as e:
            counts["crashes"] += 1
            if len(counts["examples"]) < 5:
                counts["examples"].append({"campaign": "decode", "error": str(e)[:300],
                                           "frames": [f[:120].hex() for f in frames]})

    t0 = time.perf_counter()
    one()
    counts["seconds"] = round(time.perf_counter() - t0, 1)
    return counts


def fuzz_edge(cases: int, rng_seed: int, pair, edge=None) -> dict:
    """``cases`` generated cases (one to three messages each, plus answers to hidden requests)
    through an edge's handler (default: one in a child process); the edge process's RSS after
    the first tenth of the cases and at the end; a valid session afterwards."""
    edge = edge or ChildEdge()
    fuzzer = EdgeFuzzer(pair, edge)
    counts: dict = {"cases": 0, "messages": 0, "accepted": 0, "no_reply": 0, "clear_errors": 0, "crashes": 0,
                    "codes": {}, "examples": [], "max_case_ms": 0.0}
    warm = max(1, cases // 10)
    rss: dict[str, float] = {}

    @seed(rng_seed)
    @_settings(cases)
    @given(case=edge_cases(), data=st.data())
    def one(case: tuple[int, list[list[bytes]]], data) -> None:
        k, messages = case
        counts["cases"] += 1
        t0 = time.perf_counter()
        try:
            outcomes = fuzzer.run_case(k, messages, lambda req: data.draw(upload_answers(req)))
        except FuzzCrash as e:
            counts["crashes"] += 1
            counts["messages"] += 1
            if len(counts["examples"]) < 5:
                counts["examples"].append({"campaign": "edge", "session": FUZZ_SESSIONS[k][0], "error": str(e)[:300],
                                           "frames": [[f[:120].hex() for f in m] for m in messages]})
            return
        counts["max_case_ms"] = max(counts["max_case_ms"], round((time.perf_counter() - t0) * 1000.0, 1))
        for o in outcomes:
            counts["messages"] += 1
            if o.startswith("error:"):
                counts["clear_errors"] += 1
                counts["codes"][o[6:]] = counts["codes"].get(o[6:], 0) + 1
            else:
                counts[o] += 1
        if counts["cases"] == warm:
            rss["warm"] = edge.rss_mb()

    t0 = time.perf_counter()
    try:
        one()
        counts["seconds"] = round(time.perf_counter() - t0, 1)
        rss["end"] = edge.rss_mb()
        counts["edge_rss_warm_mb"] = round(rss.get("warm", rss["end"]), 1)
        counts["edge_rss_end_mb"] = round(rss["end"], 1)
        counts["edge_rss_growth_mb"] = round(rss["end"] - rss.get("warm", rss["end"]), 1)
        counts["valid_session_ok"] = greedy_session_ok(edge, pair)
        counts["edge_stats"] = edge.stats()
    finally:
        edge.close()
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=10_000, help="generated cases per campaign")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["decode", "edge"], help="run one campaign")
    a = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # every rejected message logs a warning: keep the output readable
    import torch

    torch.set_num_threads(1)
    per: dict[str, dict] = {}
    if a.only in (None, "decode"):
        per["decode"] = fuzz_decode(a.cases, a.seed)
    if a.only in (None, "edge"):
        from nodes.models import load_pair

        per["edge"] = fuzz_edge(a.cases, a.seed, load_pair())
    examples = [x for c in per.values() for x in c.pop("examples")]
    for name, c in per.items():
        print(f"{name:>7}: {c['cases']} cases, {c.get('messages', c['cases'])} messages, {c['clear_errors']} clear "
              f"errors, {c['crashes']} crashes ({c['seconds']} s)", flush=True)
    dec, edge = per.get("decode", {}), per.get("edge", {})
    print(json.dumps({
        "cases": dec.get("cases", 0) + edge.get("messages", 0),  # inputs checked: decode cases + edge messages
        "clear_errors": dec.get("clear_errors", 0) + edge.get("clear_errors", 0),
        "accepted": dec.get("ok", 0) + edge.get("accepted", 0) + edge.get("no_reply", 0),
        "crashes": dec.get("crashes", 0) + edge.get("crashes", 0),
        "edge_rss_growth_mb": edge.get("edge_rss_growth_mb"), "valid_session_ok": edge.get("valid_session_ok"),
        "codes": edge.get("codes", {}), "per_campaign": per, "crash_examples": examples}))


if __name__ == "__main__":
    main()
