"""Device and edge nodes over real ZeroMQ sockets: the wire format, an edge in its own process,
protocols end to end, bad input, concurrency, vanished devices and unreachable edges."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from nodes import wire
from nodes.wire import (Bye, Draft, Error, Hello, HelloAck, HiddenRequest, HiddenUpload, Result, Start, StartAck, Verdict,
                        WireError, decode, encode, encoded_size)

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- wire format

def test_every_message_round_trips():
    h = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    msgs = [Hello("d1", "vanilla", 4), HelloAck(1, 32, 192), Start("r", [1, 2, 3], 64),
            Draft("r", 0, [5, 6, 7], {"snr_db": 3.5}, hidden=h, probs=np.full((3, 5), 0.2, np.float32)),
            HiddenRequest("r", 0, [1, 2]), HiddenUpload("r", 0, [1, 2], hidden=h[:2]),
            Verdict("r", 0, 2, 9, 1, 1, 1, 2.5, True), StartAck("r"), Result("r", [4, 5], 3.0), Error("malformed", "x"), Bye()]
    for m in msgs:
        back = decode(encode(m))
        assert type(back) is type(m)
        for f in ("tokens", "prompt", "positions", "csi", "accepted", "done", "code"):
            if hasattr(m, f):
                assert getattr(back, f) == getattr(m, f)
    d = decode(encode(msgs[3]))
    assert np.allclose(d.hidden, h, atol=2e-3) and np.allclose(d.probs, 0.2)


@pytest.mark.parametrize("dtype,tol,nbytes", [("f16", 2e-3, 2 * 8 * 64), ("bf16", 1.6e-2, 2 * 8 * 64),
                                               ("f32", 0.0, 4 * 8 * 64), ("i8", 3e-2, 8 * 64 + 4 * 8)])
def test_hidden_dtypes(dtype, tol, nbytes):
    h = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    frames = encode(Draft("r", 0, list(range(8)), hidden=h), {"hidden": dtype})
    assert len(frames[1]) == nbytes == wire.array_nbytes((8, 64), dtype)
    back = decode(frames).hidden
    assert np.max(np.abs(back - h) / np.maximum(1.0, np.abs(h).max(axis=1, keepdims=True))) <= tol + 1e-7
    assert encoded_size(frames) == sum(len(f) for f in frames)


def _header(t="draft", f=None, a=None, v=1):
    return msgpack.packb({"v": v, "t": t, "f": f if f is not None else {"request_id": "r", "round": 0, "tokens": [1]},
                          "a": a or []})


@pytest.mark.parametrize("frames,code", [
    ([b"\xc1garbage"], "malformed"),
    ([msgpack.packb([1, 2, 3])], "malformed"),
    ([_header(v=2)], "bad_version"),
    ([_header(t="teleport")], "unknown_type"),
    ([_header(f={"request_id": "r", "round": 0, "tokens": [1], "evil": 1})], "malformed"),
    ([_header(f={"request_id": "r", "round": "zero", "tokens": [1]})], "malformed"),
    ([_header(f={"request_id": "r", "round": 0, "tokens": [1.5]})], "malformed"),
    ([_header(f={"request_id": "r", "round": 0})], "malformed"),
    ([_header(a=[{"n": "hidden", "d": "f16", "s": [2, 4]}]), b"\0" * 15], "malformed"),
    ([_header(a=[{"n": "hidden", "d": "f64", "s": [1]}]), b"\0" * 8], "malformed"),
    ([_header(a=[{"n": "pickle", "d": "f16", "s": [1]}]), b"\0" * 2], "malformed"),
    ([_header(), b"extra"], "malformed"),
    ([_header(a=[{"n": "hidden", "d": "f32", "s": [1 << 20, 1 << 10]}]), b""], "too_large"),
])
def test_decode_rejects_bad_messages(frames, code):
    with pytest.raises(WireError) as e:
        decode(frames)
    assert e.value.code == code


def test_decode_rejects_oversized():
    with pytest.raises(WireError) as e:
        decode([_header(), b"x" * 2000], max_bytes=1000)
    assert e.value.code == "too_large"


# ---------------------------------------------------------------- an edge in its own process

@pytest.fixture(scope="module")
def pair():
    from nodes.models import load_pair

    return load_pair()


@dataclass
class EdgeProcess:
    endpoint: str
    pid: int


@pytest.fixture(scope="module")
def edge_proc():
    """``wisv node edge`` as a real process on a free loopback port; yields its endpoint."""
    p = subprocess.Popen([sys.executable, "-m", "wisv.cli", "node", "edge", "--bind", "tcp://127.0.0.1:*",
                          "--max-sessions", "4", "--max-message-bytes", "1000000"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=str(REPO))
    line = p.stdout.readline().strip()
    assert line.startswith("ready "), line
    yield EdgeProcess(line.split()[1], p.pid)
    p.terminate()
    p.wait(timeout=10)
    assert p.returncode == 0  # SIGTERM ends it cleanly


def _client(pair, endpoint, protocol="vanilla", log=None, **kw):
    from nodes.config import RunConfig
    from nodes.device import DeviceClient
    from nodes.telemetry import RoundLogger

    cfg = RunConfig(protocol=protocol, timeout_ms=kw.pop("timeout_ms", 5000), **kw)
    c = DeviceClient.connect(pair.drafter, endpoint, cfg, pair.eos_token_id, round_logger=RoundLogger(log) if log else None)
    c.hello()
    return c


def _prompts(pair, n):
    from nodes.evaluate import encode_prompt
    from nodes.tasks import ArithTask

    return [encode_prompt(pair, p) for p in ArithTask().problems("test", n)]


def test_greedy_vanilla_over_zmq_equals_target_greedy(pair, edge_proc, tmp_path):
    from nodes.decoding import autoregressive_generate

    c = _client(pair, edge_proc.endpoint, "vanilla", log=tmp_path / "rounds.jsonl")
    n_rounds = 0
    for ids in _prompts(pair, 12):
        res = c.run(ids, 128)
        assert res.ok, res.error
        assert res.tokens == autoregressive_generate(pair.target, ids, 128, pair.eos_token_id)
        n_rounds += len(res.rounds)
    c.close()
    lines = [json.loads(x) for x in open(tmp_path / "rounds.jsonl")]
    assert len(lines) == n_rounds
    need = {"run_id", "protocol", "round", "drafted", "accepted", "accepted_exact", "first_mismatch", "harmless",
            "up_bytes", "down_bytes", "round_trips", "draft_ms", "verify_ms", "link_ms", "t_start", "t_end",
            "csi_rate_up_mbps", "csi_delay_up_ms", "csi_snr_db"}
    assert need <= set(lines[0])
    assert not any(isinstance(v, dict) for v in lines[0].values())  # flat columns, as in the Parquet tables


def test_wisv_protocols_end_to_end(pair, edge_proc):
    ids = _prompts(pair, 6)
    up = {}
    for protocol in ("vanilla", "wisv-full", "wisv-selective", "wisv-target", "ar-edge"):
        c = _client(pair, edge_proc.endpoint, protocol)
        rounds = []
        for x in ids:
            res = c.run(x, 128)
            assert res.ok, (protocol, res.error)
            assert res.tokens and res.tokens[-1] == pair.eos_token_id
            rounds += res.rounds
        c.close()
        up[protocol] = np.mean([r.up_bytes for r in rounds])
        if protocol == "wisv-selective":  # two round trips exactly when a mismatch occurred
            assert all(r.round_trips == (2 if r.accepted_exact < r.drafted else 1) for r in rounds)
            assert any(r.round_trips == 2 for r in rounds)
        elif protocol != "ar-edge":
            assert all(r.round_trips == 1 for r in rounds)
    # fp16 hidden of 64 wide per draft token makes full upload the heaviest
    assert up["wisv-full"] > up["wisv-selective"] > up["vanilla"] == pytest.approx(up["wisv-target"], rel=0.05)


def test_bad_messages_do_not_kill_the_edge(pair, edge_proc):
    ctx = zmq.Context.instance()
    bad = ctx.socket(zmq.DEALER)
    bad.setsockopt(zmq.LINGER, 0)
    bad.connect(edge_proc.endpoint)
    bad.send_multipart([b"\xc1not msgpack"])
    assert decode(bad.recv_multipart()).code == "malformed"
    bad.send_multipart(encode(Draft("nope", 0, [1, 2])))
    assert decode(bad.recv_multipart()).code == "no_session"
    bad.send_multipart(encode(Hello("bad", "vanilla", 99)))
    assert decode(bad.recv_multipart()).code == "bad_request"
    bad.send_multipart(encode(Hello("bad", "vanilla", 4)))
    ack = decode(bad.recv_multipart())
    assert isinstance(ack, HelloAck) and len(ack.secret) == 32
    bad.send_multipart(encode(Draft("nope", 5, [1, 2], secret=ack.secret)))  # every message carries the session secret
    assert decode(bad.recv_multipart()).code == "out_of_order"
    bad.send_multipart(encode(Start("r", [10 ** 6], 10, ack.secret)))
    assert decode(bad.recv_multipart()).code == "bad_request"
    bad.send_multipart([b"x" * 2_000_000])  # over the edge's 1 MB limit: ZeroMQ drops it (and the peer)
    bad.close(0)
    c = _client(pair, edge_proc.endpoint)
    assert c.run(_prompts(pair, 1)[0], 64).ok
    c.close()


def test_two_devices_served_concurrently(pair, edge_proc):
    from nodes.decoding import autoregressive_generate

    ids = _prompts(pair, 6)
    results: dict[int, list] = {}

    def work(k: int) -> None:
        c = _client(pair, edge_proc.endpoint, "vanilla" if k == 0 else "wisv-selective")
        results[k] = [c.run(x, 128) for x in ids[k::2]]
        c.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert set(results) == {0, 1}
    for res, x in zip(results[0], ids[0::2]):
        assert res.ok and res.tokens == autoregressive_generate(pair.target, x, 128, pair.eos_token_id)
    assert all(r.ok for r in results[1])


def test_device_vanishing_mid_round_leaves_edge_serving(pair, edge_proc):
    ctx = zmq.Context.instance()
    ghost = ctx.socket(zmq.DEALER)
    ghost.setsockopt(zmq.LINGER, 0)
    ghost.setsockopt(zmq.IDENTITY, b"ghost")
    ghost.connect(edge_proc.endpoint)
    ghost.send_multipart(encode(Hello("ghost", "wisv-selective", 4)))
    secret = decode(ghost.recv_multipart()).secret
    ghost.send_multipart(encode(Start("g", _prompts(pair, 1)[0], 64, secret)))
    assert isinstance(decode(ghost.recv_multipart()), StartAck)
    ghost.send_multipart(encode(Draft("g", 0, [5, 6, 7, 8], secret=secret)))  # then vanishes without reading the reply
    ghost.close(0)
    c = _client(pair, edge_proc.endpoint, "vanilla")
    assert c.run(_prompts(pair, 2)[1], 64).ok
    c.close()


def test_unreachable_edge_fails_the_request_without_hanging(pair):
    from nodes.config import RunConfig
    from nodes.device import DeviceClient

    c = DeviceClient.connect(pair.drafter, "tcp://127.0.0.1:1", RunConfig(timeout_ms=150, retries=2), pair.eos_token_id)
    t0 = time.monotonic()
    res = c.run(_prompts(pair, 1)[0], 32)
    assert not res.ok and "no reply" in res.error
    assert time.monotonic() - t0 < 2.0
    c.close()


def test_token_required_when_configured(pair):
    from nodes.config import RunConfig
    from nodes.device import DeviceClient, EdgeError
    from nodes.edge import EdgeServer

    server = EdgeServer(pair.target, pair.eos_token_id, "tcp://127.0.0.1:*", token="s3cret")
    t = threading.Thread(target=server.serve, kwargs={"poll_ms": 20}, daemon=True)
    t.start()
    try:
        c = DeviceClient.connect(pair.drafter, server.endpoint, RunConfig(timeout_ms=2000), pair.eos_token_id)
        with pytest.raises(EdgeError) as e:
            c.hello()
        assert e.value.code == "unauthenticated"
        c.close()
        ok = DeviceClient.connect(pair.drafter, server.endpoint, RunConfig(), pair.eos_token_id, token="s3cret")
        ok.hello()
        assert ok.run(_prompts(pair, 1)[0], 32).ok
        ok.close()
    finally:
        server.stop()
        t.join(timeout=5)
        server.close()


def _edge_thread(pair, **kw):
    from nodes.edge import EdgeServer

    server = EdgeServer(pair.target, pair.eos_token_id, "tcp://127.0.0.1:*", **kw)
    t = threading.Thread(target=server.serve, kwargs={"poll_ms": 20}, daemon=True)
    t.start()
    return server, t


def test_curve_encryption(pair):
    import zmq.auth

    from nodes.config import RunConfig
    from nodes.device import DeviceClient

    public, secret = zmq.curve_keypair()
    server, t = _edge_thread(pair, curve_secret_key=secret, curve_allow=zmq.auth.CURVE_ALLOW_ANY)  # allow-list: test_edge_hardening
    try:
        cp, cs = zmq.curve_keypair()
        c = DeviceClient.connect(pair.drafter, server.endpoint, RunConfig(), pair.eos_token_id, curve_keys=(public, cp, cs))
        c.hello()
        assert c.run(_prompts(pair, 1)[0], 32).ok
        c.close()
        wrong_public, _ = zmq.curve_keypair()  # a device that trusts another server key never talks to this edge
        bad = DeviceClient.connect(pair.drafter, server.endpoint, RunConfig(timeout_ms=200, retries=1),
                                   pair.eos_token_id, curve_keys=(wrong_public, cp, cs))
        assert not bad.run(_prompts(pair, 1)[0], 8).ok
        bad.close()
    finally:
        server.stop()
        t.join(timeout=5)
        server.close()


def test_compute_profiles_pad_and_log(pair):
    from nodes.config import ComputeConfig, RunConfig
    from nodes.device import DeviceClient
    from nodes.profiles import ComputeProfile

    server, t = _edge_thread(pair, profile=ComputeProfile(base_ms=20.0, per_token_ms=5.0))
    try:
        c = DeviceClient.connect(pair.drafter, server.endpoint,
                                 RunConfig(gamma=4, compute=ComputeConfig(device=ComputeProfile(per_token_ms=10.0))),
                                 pair.eos_token_id)
        c.hello()
        res = c.run(_prompts(pair, 1)[0], 16)
        c.close()
    finally:
        server.stop()
        t.join(timeout=5)
        server.close()
    assert res.ok
    for r in res.rounds:
        assert r.draft_ms >= 10.0 * r.drafted - 0.5 and r.draft_pad_ms > 0
        assert r.verify_ms >= 20.0 + 5.0 * r.drafted - 0.5 and r.verify_pad_ms > 0


def test_request_survives_an_edge_stall(pair, edge_proc):
    """A stall longer than one timeout (a deep fade) costs retries, not the request."""
    from nodes.config import RunConfig
    from nodes.device import DeviceClient

    c = DeviceClient.connect(pair.drafter, edge_proc.endpoint, RunConfig(timeout_ms=300, retries=5), pair.eos_token_id)
    c.hello()
    # The edge's process is another test's fixture: stall it by pausing it for 0.7 s mid-request.
    pid = edge_proc.pid
    import os
    import signal

    timer = threading.Timer(0.05, lambda: (os.kill(pid, signal.SIGSTOP), time.sleep(0.7), os.kill(pid, signal.SIGCONT)))
    timer.start()
    res = c.run(_prompts(pair, 3)[2], 128)
    timer.join()
    c.close()
    assert res.ok, res.error
    assert sum(r.retries for r in res.rounds) >= 1


def test_session_limit_and_restarted_edge(pair):
    from nodes.config import RunConfig
    from nodes.device import DeviceClient, EdgeError
    from nodes.edge import EdgeLimits

    server, t = _edge_thread(pair, limits=EdgeLimits(max_sessions=1))
    try:
        a = DeviceClient.connect(pair.drafter, server.endpoint, RunConfig(), pair.eos_token_id)
        a.hello()
        b = DeviceClient.connect(pair.drafter, server.endpoint, RunConfig(), pair.eos_token_id)
        with pytest.raises(EdgeError) as e:
            b.hello()
        assert e.value.code == "too_many_sessions"
        b.close()
        server.sessions.clear()  # what an edge restart loses: the device's request fails cleanly
        res = a.run(_prompts(pair, 1)[0], 16)
        assert not res.ok and "no_session" in res.error
        a.close()
    finally:
        server.stop()
        t.join(timeout=5)
        server.close()
