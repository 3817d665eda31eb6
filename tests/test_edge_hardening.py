"""The edge under hostile input (issue 12, items 6–10), each test acting as the attacker: prompts
beyond the target's positions, uploads of a claimed shape the edge did not ask for, a peer that
takes over a device's ZeroMQ identity, CURVE clients outside the allow-list, and wire values
that only look right (version ``true``, NaN). Then property-based fuzzing of the wire decoder
and of the edge's handler (a few hundred cases; ``benchmarks/fuzz_wire.py`` runs ≥ 10 000)."""
from __future__ import annotations

import argparse
import shutil
import threading
import time
import tracemalloc

import msgpack
import numpy as np
import pytest
import zmq

from nodes.config import RunConfig
from nodes.edge import EdgeLimits, EdgeServer
from nodes.wire import (WIRE_DTYPES, Bye, Draft, Error, Hello, HelloAck, HiddenRequest, HiddenUpload, Message, Start,
                        StartAck, Verdict, WireError, decode, encode)

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from benchmarks.fuzz_wire import (DirectTransport, EdgeFuzzer, decode_case, edge_cases,  # noqa: E402
                                  greedy_session_ok, upload_answers, wire_frames)


@pytest.fixture(scope="module")
def pair():
    from nodes.models import load_pair

    return load_pair()


@pytest.fixture(scope="module")
def prompt(pair) -> list[int]:
    from nodes.evaluate import encode_prompt
    from nodes.tasks import ArithTask

    return encode_prompt(pair, ArithTask().problems("test", 1)[0])


def _edge(pair, **kw) -> EdgeServer:
    """An edge without a socket (frames handed in directly)."""
    return EdgeServer(pair.target, pair.eos_token_id, bind=None, **kw)


def _send(edge: EdgeServer, ident: bytes, msg: Message, dtypes: dict | None = None) -> Message | None:
    """The decoded reply of ``edge`` to ``msg`` from ``ident``."""
    reply = edge.handle_frames(ident, encode(msg, dtypes))
    return None if reply is None else decode(reply)


def _hello(edge: EdgeServer, ident: bytes, protocol: str = "vanilla", temperature: float = 0.0) -> str:
    """Open a session; its secret."""
    ack = _send(edge, ident, Hello("d", protocol, 4, temperature))
    assert isinstance(ack, HelloAck) and len(ack.secret) == 32, ack
    return ack.secret


def _code(reply: Message | None) -> str:
    assert isinstance(reply, Error), reply
    return reply.code


class ForwardCounter:
    """Counts forward calls of a model while in a ``with`` block."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __enter__(self) -> "ForwardCounter":
        self.handle = self.model.register_forward_pre_hook(lambda *_: setattr(self, "calls", self.calls + 1))
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def _mismatching_draft(pair, prompt: list[int]) -> list[int]:
    """Four draft tokens whose first the target would not choose after ``prompt``."""
    from nodes.decoding import autoregressive_generate

    first = autoregressive_generate(pair.target, prompt, 1, None)[0]
    vocab = int(pair.target.config.vocab_size)
    return [(first + 1) % vocab, 5, 6, 7]


# ---------------------------------------------------------------- 6. prompt length

def test_prompt_beyond_the_targets_positions_is_refused_before_any_forward(pair):
    positions = int(pair.target.config.max_position_embeddings)
    edge = _edge(pair)
    for protocol in ("vanilla", "ar-edge"):
        secret = _hello(edge, b"attacker", protocol)
        with ForwardCounter(pair.target) as fwd:
            for n_prompt, max_new in ((positions - 16 + 1, 16), (positions, 1), (40_000, 8)):
                reply = _send(edge, b"attacker", Start("r", [5] * n_prompt, max_new, secret))
                assert _code(reply) == "bad_request", (protocol, n_prompt)
        assert fwd.calls == 0
        assert all(s.request is None for s in edge.sessions.values())
    secret = _hello(edge, b"device")
    assert isinstance(_send(edge, b"device", Start("r", [5] * (positions - 16), 16, secret)), StartAck)


def test_prompt_longer_than_the_configured_maximum_is_refused(pair):
    edge = _edge(pair, limits=EdgeLimits(max_prompt_tokens=20))
    secret = _hello(edge, b"d")
    reply = _send(edge, b"d", Start("r", [5] * 21, 8, secret))
    assert _code(reply) == "bad_request" and "20" in reply.message
    assert isinstance(_send(edge, b"d", Start("r", [5] * 20, 8, secret)), StartAck)


# ---------------------------------------------------------------- 7. upload shapes

def _selective_round(pair, edge: EdgeServer, prompt: list[int], ident: bytes = b"d") -> tuple[str, HiddenRequest]:
    secret = _hello(edge, ident, "wisv-selective")
    assert isinstance(_send(edge, ident, Start("r", prompt, 32, secret)), StartAck)
    request = _send(edge, ident, Draft("r", 0, _mismatching_draft(pair, prompt), secret=secret))
    assert isinstance(request, HiddenRequest) and 0 in request.positions
    return secret, request


def _reply_and_peak_bytes(edge: EdgeServer, ident: bytes, frames: list[bytes]) -> tuple[Message, int]:
    """The reply to prepared ``frames`` and the peak of Python/numpy allocations while handling them."""
    tracemalloc.start()
    try:
        reply = edge.handle_frames(ident, frames)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return decode(reply), peak


def test_hidden_upload_is_bounded_before_allocating(pair, prompt):
    edge = _edge(pair)
    secret, request = _selective_round(pair, edge, prompt)
    width = edge.sessions[secret].drafter_width
    asked, rows = list(request.positions), len(request.positions)
    assert width == 64
    attacks = [  # (positions, array shape, wire dtype)
        (asked, (rows, 8_300_000 // rows), "i8"),  # the issue's 8.3 MB upload: the edge made zeros(γ, 8.3M) of it
        (asked, (rows, width + 1), "f16"),  # wrong width
        (asked, (rows,), "f16"),  # wrong rank
        (asked, (rows, width, 1), "f16"),
        ([p + 1 for p in asked], (rows, width), "f16"),  # positions the edge did not request
        (asked + asked[:1], (rows + 1, width), "f16"),  # a position twice
        ([], (0, width), "f16"),
    ]
    for positions, shape, dtype in attacks:
        frames = encode(HiddenUpload("r", 0, positions, np.zeros(shape, np.float32), secret), {"hidden": dtype})
        reply, peak = _reply_and_peak_bytes(edge, b"d", frames)
        assert _code(reply) == "bad_request", (positions, shape)
        assert peak < 1 << 20, (shape, peak)  # nothing allocated from the claimed shape
    rows_ok = np.random.default_rng(0).standard_normal((rows, width)).astype(np.float32)
    assert isinstance(_send(edge, b"d", HiddenUpload("r", 0, asked, rows_ok, secret)), Verdict)  # the round goes on


def test_draft_arrays_of_the_wrong_rank_or_width_get_bad_request(pair, prompt):
    edge = _edge(pair)
    secret = _hello(edge, b"full", "wisv-full")
    assert isinstance(_send(edge, b"full", Start("r", prompt, 32, secret)), StartAck)
    draft = _mismatching_draft(pair, prompt)
    g = len(draft)
    for shape in ((g, 65), (g,), (g, 64, 1), (g + 1, 64), (g, 4_000_000 // g)):
        frames = encode(Draft("r", 0, draft, hidden=np.zeros(shape, np.float32), secret=secret), {"hidden": "i8"})
        reply, peak = _reply_and_peak_bytes(edge, b"full", frames)
        assert _code(reply) == "bad_request", shape
        assert peak < 1 << 20, (shape, peak)
    hidden = np.random.default_rng(0).standard_normal((g, 64)).astype(np.float32)
    assert isinstance(_send(edge, b"full", Draft("r", 0, draft, hidden=hidden, secret=secret)), Verdict)

    sampled = _hello(edge, b"sampled", "vanilla", temperature=0.8)
    assert isinstance(_send(edge, b"sampled", Start("r", prompt, 32, sampled)), StartAck)
    vocab = int(pair.target.config.vocab_size)
    for shape in ((g, vocab + 1), (g,), (g, vocab, 1)):
        reply = _send(edge, b"sampled", Draft("r", 0, draft, probs=np.full(shape, 0.01, np.float32), secret=sampled))
        assert _code(reply) == "bad_request", shape
    probs = np.full((g, vocab), 1.0 / vocab, np.float32)
    probs[1, 3] = np.nan
    assert _code(_send(edge, b"sampled", Draft("r", 0, draft, probs=probs, secret=sampled))) == "malformed"
    reply = _send(edge, b"sampled", Draft("r", 0, draft, hidden=hidden, probs=np.abs(probs * 0) + 1.0 / vocab,
                                         secret=sampled))
    assert _code(reply) == "bad_request"  # vanilla reads no drafter hidden states


def test_a_draft_may_not_run_past_max_new_tokens(pair, prompt):
    edge = _edge(pair)
    secret = _hello(edge, b"d")
    assert isinstance(_send(edge, b"d", Start("r", prompt, 2, secret)), StartAck)
    assert _code(_send(edge, b"d", Draft("r", 0, [5, 6, 7], secret=secret))) == "bad_request"
    assert isinstance(_send(edge, b"d", Draft("r", 0, [5], secret=secret)), Verdict)


# ---------------------------------------------------------------- 8. session takeover

def test_a_peer_with_the_victims_identity_cannot_read_advance_reset_or_close_its_session(pair, prompt):
    edge = _edge(pair)
    victim = b"dev0-1a2b3c"
    secret = _hello(edge, victim)
    assert isinstance(_send(edge, victim, Start("r", prompt, 32, secret)), StartAck)
    draft = _mismatching_draft(pair, prompt)
    verdict = _send(edge, victim, Draft("r", 0, draft, secret=secret))
    assert isinstance(verdict, Verdict)
    session = edge.sessions[secret]
    state = (session.request.round, list(session.request.seq), session.verifier.lm.cache_len)
    for stolen in ("", "0" * 32, secret[:-1] + ("0" if secret[-1] != "0" else "1")):
        replay = _send(edge, victim, Draft("r", 0, draft, secret=stolen))  # the cached verdict of a retry
        assert _code(replay) == "unauthenticated"
        assert _code(_send(edge, victim, Draft("r", 1, draft, secret=stolen))) == "unauthenticated"  # advance
        assert _code(_send(edge, victim, Start("r", prompt, 32, stolen))) == "unauthenticated"  # reset
        assert _code(_send(edge, victim, Bye(stolen))) == "unauthenticated"  # close
        assert _code(_send(edge, victim, HiddenUpload("r", 1, [0], np.zeros((1, 64), np.float32), stolen))) \
            == "unauthenticated"
    assert edge.sessions.get(secret) is session
    assert (session.request.round, session.request.seq, session.verifier.lm.cache_len) == state
    other = _hello(edge, victim)  # a hello from the same identity opens another session
    assert other != secret and edge.sessions[secret].request.round == 1
    again = _send(edge, victim, Draft("r", 0, draft, secret=secret))  # the victim's own retry still works
    assert isinstance(again, Verdict) and (again.accepted, again.next_token) == (verdict.accepted, verdict.next_token)
    assert isinstance(_send(edge, victim, Draft("r", 1, [5], secret=secret)), Verdict)
    assert _send(edge, victim, Bye(secret)) is None and secret not in edge.sessions
    assert _code(_send(edge, b"someone-else", Draft("r", 0, draft))) == "no_session"


def test_a_request_completes_while_an_attacker_with_its_identity_interferes(pair, prompt):
    """Between every exchange of a mismatch-first request, a peer with the device's identity
    tries start, draft (replay and next round), hidden_upload and bye: each is refused and the
    output is the one the device gets alone."""
    from nodes.device import DeviceClient

    cfg = RunConfig(protocol="wisv-selective", device_id="dev0")
    alone = DeviceClient(pair.drafter, cfg, pair.eos_token_id, DirectTransport(_edge(pair), cfg, b"dev0-x"))
    alone.hello()
    expected = alone.run(prompt, 64)
    assert expected.ok and any(r.round_trips == 2 for r in expected.rounds)

    edge = _edge(pair)
    refused: list[str] = []

    def attack() -> None:
        for s in list(edge.sessions.values()):
            r = s.request
            rnd = r.round if r else 0
            for msg in (Draft("r", rnd, [5, 6], secret=""), Draft("r", max(rnd - 1, 0), [5, 6]), Start("r", [5, 6], 8),
                        HiddenUpload("r", rnd, [0], np.zeros((1, 64), np.float32)), Bye()):
                refused.append(_code(_send(edge, b"dev0-x", msg)))

    client = DeviceClient(pair.drafter, cfg, pair.eos_token_id, DirectTransport(edge, cfg, b"dev0-x", before=attack))
    client.hello()
    got = client.run(prompt, 64)
    assert got.ok, got.error
    assert got.tokens == expected.tokens and len(got.rounds) == len(expected.rounds)
    assert len(refused) >= 5 * len(got.rounds) and set(refused) == {"unauthenticated"}


def _serve(pair, **kw) -> tuple[EdgeServer, threading.Thread]:
    server = EdgeServer(pair.target, pair.eos_token_id, "tcp://127.0.0.1:*", **kw)
    t = threading.Thread(target=server.serve, kwargs={"poll_ms": 20}, daemon=True)
    t.start()
    return server, t


def _stop(server: EdgeServer, t: threading.Thread) -> None:
    server.stop()
    t.join(timeout=5)
    server.close()


def _dealer(endpoint: str, identity: bytes | None = None) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    sock.connect(endpoint)
    return sock


def _ask(sock: zmq.Socket, msg: Message, timeout_ms: int = 5000) -> Message | None:
    sock.send_multipart(encode(msg))
    return decode(sock.recv_multipart()) if sock.poll(timeout_ms) else None


def test_zeromq_identities_cannot_be_taken_over(pair, prompt):
    """Over real sockets: a device's routing identity is the edge's choice, a peer claiming an
    identity in use (the victim's, or any) is not served (no ROUTER_HANDOVER), a stranger without
    a secret is refused, and a device that reconnects keeps its session through its secret."""
    from nodes.decoding import autoregressive_generate
    from nodes.device import DeviceClient

    server, t = _serve(pair)
    try:
        victim = DeviceClient.connect(pair.drafter, server.endpoint, RunConfig(timeout_ms=2000, retries=2),
                                      pair.eos_token_id)
        victim.hello()
        (session,) = server.sessions.values()
        assert session.ident[:1] == b"\0"  # assigned by the ROUTER, not chosen by the device
        thief = _dealer(server.endpoint, session.ident)  # claims the victim's identity: not served while it is in use
        assert _ask(thief, Start("r", prompt, 16), timeout_ms=500) is None
        twin_a, twin_b = _dealer(server.endpoint, b"twin"), _dealer(server.endpoint, b"twin")
        secret_a = _ask(twin_a, Hello("a", "vanilla", 4)).secret
        assert _ask(twin_b, Hello("b", "vanilla", 4), timeout_ms=500) is None  # the identity is in use: not served
        assert isinstance(_ask(twin_a, Start("r", prompt, 8, secret_a)), StartAck)
        stranger = _dealer(server.endpoint)
        codes = [_ask(stranger, m).code for m in (Start("r", prompt, 16), Draft("r", 0, [5]), Bye())]
        assert codes == ["no_session"] * 3
        for sock in (thief, twin_a, twin_b, stranger):
            sock.close(0)
        victim.transport.sock.disconnect(server.endpoint)  # a new connection, a new identity, the same session
        victim.transport.sock.connect(server.endpoint)
        res = victim.run(prompt, 64)
        assert res.ok, res.error
        assert res.tokens == autoregressive_generate(pair.target, prompt, 64, pair.eos_token_id)
        assert session.ident[:1] == b"\0" and server.sessions[session.secret] is session
        victim.close()
    finally:
        _stop(server, t)


# ---------------------------------------------------------------- 9. CURVE allow-list

@pytest.fixture
def curve_keys(tmp_path):
    """``wisv node keys`` for the edge and devices dev0, dev1; an allow-list folder with dev0 only."""
    from nodes.cli import cmd_keys

    keys = tmp_path / "keys"
    assert cmd_keys(argparse.Namespace(output=str(keys), client=None)) == 0
    assert cmd_keys(argparse.Namespace(output=str(keys), client=["dev0", "dev1"])) == 0
    allow = tmp_path / "allow"
    allow.mkdir()
    shutil.copy(keys / "dev0.key", allow)
    return keys, allow


def test_curve_admits_only_device_keys_on_the_allow_list(pair, prompt, curve_keys):
    from nodes.device import DeviceClient, EdgeError, load_curve_keys

    keys, allow = curve_keys
    server, t = _serve(pair, curve_secret_key=(keys / "edge.secret").read_bytes().strip(), curve_allow=allow)
    try:
        listed = DeviceClient.connect(pair.drafter, server.endpoint, RunConfig(), pair.eos_token_id,
                                      curve_keys=load_curve_keys(keys / "edge.public", keys / "dev0.key_secret"))
        listed.hello()
        assert listed.run(prompt, 16).ok
        listed.close()
        deadline = time.monotonic() + 5
        while server.sessions and time.monotonic() < deadline:  # its bye is on its way
            time.sleep(0.01)
        served = server.stats["messages"]
        for own in (keys / "dev1.key_secret", None):  # a key pair not on the list; an ephemeral pair
            stranger = DeviceClient.connect(pair.drafter, server.endpoint, RunConfig(timeout_ms=300, retries=1),
                                            pair.eos_token_id, curve_keys=load_curve_keys(keys / "edge.public", own))
            with pytest.raises(EdgeError) as e:
                stranger.hello()
            assert e.value.code == "unauthenticated" and "CURVE key" in str(e.value)
            res = stranger.run(prompt, 8)
            assert not res.ok and "CURVE key" in res.error
            stranger.close()
        assert server.stats["messages"] == served  # not one message of theirs reached the edge
    finally:
        _stop(server, t)


def test_curve_needs_an_explicit_allow_list(pair, curve_keys, tmp_path):
    import zmq.auth

    from nodes.cli import _edge_curve
    from nodes.device import load_curve_keys

    keys, allow = curve_keys
    secret = (keys / "edge.secret").read_bytes().strip()
    with pytest.raises(ValueError, match="allow-list"):
        EdgeServer(pair.target, pair.eos_token_id, "tcp://127.0.0.1:*", curve_secret_key=secret)
    with pytest.raises(ValueError, match="not a folder"):
        EdgeServer(pair.target, pair.eos_token_id, "tcp://127.0.0.1:*", curve_secret_key=secret,
                   curve_allow=tmp_path / "missing")
    cli = dict(curve_secret=str(keys / "edge.secret"), curve_allow=None, curve_allow_any=False)
    with pytest.raises(SystemExit):
        _edge_curve(argparse.Namespace(**cli))
    with pytest.raises(SystemExit):
        _edge_curve(argparse.Namespace(**{**cli, "curve_allow": str(allow), "curve_allow_any": True}))
    assert _edge_curve(argparse.Namespace(**{**cli, "curve_allow_any": True}))[1] == zmq.auth.CURVE_ALLOW_ANY
    assert _edge_curve(argparse.Namespace(**{**cli, "curve_allow": str(allow)})) == (secret, str(allow))
    # a device key given as the bare Z85 secret: its public key is derived
    _, public, z85_secret = load_curve_keys(keys / "edge.public", keys / "dev0.key_secret")
    bare = tmp_path / "dev0.z85"
    bare.write_bytes(z85_secret + b"\n")
    assert load_curve_keys(keys / "edge.public", bare)[1:] == (public, z85_secret)


# ---------------------------------------------------------------- 10. wire values

def _header(v=1, a=None) -> bytes:
    return msgpack.packb({"v": v, "t": "draft", "f": {"request_id": "r", "round": 0, "tokens": [1]}, "a": a or []})


@pytest.mark.parametrize("v", [True, 1.0, "1", 2, None])
def test_wire_version_must_be_the_integer_1(v):
    with pytest.raises(WireError) as e:
        decode([_header(v)])
    assert e.value.code == "bad_version"
    assert isinstance(decode([_header(1)]), Draft)


@pytest.mark.parametrize("dtype", list(WIRE_DTYPES))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_in_array_frames_are_malformed(dtype, bad):
    x = np.ones((2, 8), np.float32)
    x[1, 3] = bad
    with np.errstate(all="ignore"):
        frames = encode(Draft("r", 0, [1, 2], hidden=x), {"hidden": dtype})
    with pytest.raises(WireError) as e:
        decode(frames)
    assert e.value.code == "malformed"


@pytest.mark.parametrize("spec,frame,code", [
    ({"n": "hidden", "d": "f32", "s": [2 ** 32, 2 ** 32]}, b"", "too_large"),  # np.prod overflowed to 0
    ({"n": "hidden", "d": "f16", "s": [2 ** 63, 2 ** 63, 0]}, b"", "too_large"),  # no elements, numpy refuses the shape
    ({"n": "hidden", "d": "i8", "s": []}, b"\0" * 5, "malformed"),  # rank 0
    ({"n": "hidden", "d": "f16", "s": [1, 1, 1, 1, 1]}, b"\0" * 2, "malformed"),  # rank 5
    ({"n": "hidden", "d": "f16", "s": [1, True]}, b"\0" * 2, "malformed"),
])
def test_hostile_array_specs_are_clear_errors(spec, frame, code):
    with pytest.raises(WireError) as e:
        decode([_header(a=[spec]), frame])
    assert e.value.code == code


def test_header_lists_are_bounded_while_unpacking():
    head = msgpack.packb({"v": 1, "t": "start", "f": {"request_id": "r", "prompt": [1] * 2000, "max_new_tokens": 1},
                          "a": []})
    with pytest.raises(WireError) as e:
        decode([head], max_list_len=1000)
    assert e.value.code == "too_large"
    assert len(decode([head]).prompt) == 2000


# ---------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


@FUZZ
@given(frames=wire_frames())
def test_fuzzed_frames_decode_to_a_message_or_a_wire_error(frames):
    decode_case(frames)


def test_fuzzed_messages_get_clear_answers_and_a_valid_session_still_works(pair):
    fuzzer = EdgeFuzzer(pair)

    @settings(FUZZ, max_examples=250)
    @given(case=edge_cases(), data=st.data())
    def check(case, data) -> None:
        k, messages = case
        fuzzer.run_case(k, messages, lambda request: data.draw(upload_answers(request)))

    check()
    assert fuzzer.edge.stats()["rounds"] > 20  # the fuzz reached the target forward and the policies
    assert greedy_session_ok(fuzzer.edge, pair)
