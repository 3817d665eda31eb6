"""A protocol is a behaviour: a toy protocol that chooses its draft length per round from the
CSI, defined and registered here alone, runs spec → simulator → report; and the edge's own
times keep a request's wait at the edge out of the device's link time."""
from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest

from nodes.decoding.policies import ExactMatch
from nodes.protocols import PROTOCOLS, DeviceSide, Protocol, RoundStart

SLOW_UP_MBPS = 1.0  # below this uplink rate the toy drafts one token a round


@pytest.fixture(scope="module")
def pair():
    from nodes.models import load_pair

    return load_pair()


class ShortDraftsOnASlowUplink(DeviceSide):
    """Full-length drafts while the uplink is fast, one token while it is slow."""

    def draft_length(self, start: RoundStart) -> int:
        return min(start.gamma if start.csi.rate_up_mbps >= SLOW_UP_MBPS else 1, start.budget)


@pytest.fixture
def csi_gamma_protocol():
    """Registered for this test only."""
    p = PROTOCOLS.register(Protocol("toy-csi-gamma", "exact match; γ from the uplink rate in the CSI report",
                                    policy=lambda t: ExactMatch(), device_side=ShortDraftsOnASlowUplink))
    yield p
    PROTOCOLS.unregister(p.name)


def _alternating_uplink(path):
    """A trace whose uplink alternates 20 Mbit/s and 100 kbit/s every 300 ms (downlink fast)."""
    from traces.format import write_trace
    from traces.synthetic import step_trace

    trace = step_trace(300.0, 30.0, [20e6], [10.0], [0.0])
    trace.data["rate_bps_up"] = np.resize([20e6, 100e3], len(trace.data))
    return write_trace(trace, path)


def test_a_protocol_choosing_gamma_per_round_runs_spec_to_report(csi_gamma_protocol, tmp_path):
    from runs.experiment import run_experiment
    from runs.report import report
    from runs.spec import load_spec

    spec = {"name": "toy-gamma", "protocols": ["vanilla", "toy-csi-gamma"], "gamma": 6, "task": {"problems": 2},
            "trace": {"file": str(_alternating_uplink(tmp_path / "alternating.csv"))}}
    run_experiment(load_spec(None, spec), tmp_path / "out", "simulate", progress=False)
    df, _ = report([tmp_path / "out"])
    assert list(df["protocol"]) == ["vanilla", "toy-csi-gamma"]  # the report reads the registry
    assert (df["failed"] == 0).all()

    logs = {p: [json.loads(x) for f in sorted((tmp_path / "out").rglob(f"rounds-{p}.jsonl")) for x in open(f)]
            for p in ("vanilla", "toy-csi-gamma")}
    toy = logs["toy-csi-gamma"]
    going_on = [r for r in toy if r["end_reason"] == ""]  # a final round may be cut to the budget
    slow = [r for r in going_on if r["csi_rate_up_mbps"] < SLOW_UP_MBPS]
    fast = [r for r in going_on if r["csi_rate_up_mbps"] >= SLOW_UP_MBPS]
    assert slow and fast  # the channel changed under the run
    assert {r["gamma"] for r in slow} == {1} and {r["gamma"] for r in fast} == {6}  # γ followed the CSI
    assert all(r["drafted"] <= r["gamma"] for r in toy)
    assert {r["gamma"] for r in logs["vanilla"] if r["end_reason"] == ""} == {6}
    table = pd.read_parquet(tmp_path / "out" / "rounds.parquet")  # what the report reads keeps the round's γ
    assert sorted(table[table["protocol"] == "toy-csi-gamma"]["gamma"]) == sorted(r["gamma"] for r in toy)

    for rounds in logs.values():  # one record per round, the same vocabulary throughout
        finals = [r for r in rounds if r["end_reason"]]
        assert len(finals) == 2 and {r["end_reason"] for r in finals} <= {"eos", "budget"}
        for r in rounds:
            assert r["link_ms"] == pytest.approx(r["wall_ms"] - r["draft_ms"] - r["edge_ms"], abs=1e-6)
            assert r["edge_ms"] == pytest.approx(r["verify_ms"]) and r["edge_queue_ms"] == 0.0  # one device
            assert r["t_start"] <= r["t_edge_arrival"] <= r["t_edge_reply"] <= r["t_end"]  # the virtual clock
            assert 0 <= r["accepted_exact"] <= r["accepted"] <= r["drafted"]
    # lossless both ways: the same output, in more rounds for the toy (its one-token drafts)
    requests = {p: json.loads(next((tmp_path / "out").rglob(f"requests-{p}.json")).read_text())["requests"]
                for p in logs}
    assert [q["n_tokens"] for q in requests["toy-csi-gamma"]] == [q["n_tokens"] for q in requests["vanilla"]]
    assert len(toy) > len(logs["vanilla"])


def test_the_protocol_is_gone_after_the_test():
    assert "toy-csi-gamma" not in PROTOCOLS


def test_a_wait_at_the_edge_is_edge_time_not_link_time(pair):
    """Two devices send a round to one edge at once; the edge pads each round to 1 s of compute,
    so one of them waits about 1 s behind the other. The verdict reports that wait as the edge's
    queue time, and the device's link_ms (loopback: a few ms; before the edge reported its
    times, over 1 s) does not hold it."""
    from nodes.config import RunConfig
    from nodes.device import DeviceClient
    from nodes.edge import EdgeServer
    from nodes.evaluate import encode_prompt
    from nodes.profiles import ComputeProfile
    from nodes.tasks import ArithTask

    edge = EdgeServer(pair.target, pair.eos_token_id, bind="tcp://127.0.0.1:*", profile=ComputeProfile(base_ms=1000.0))
    server = threading.Thread(target=edge.serve, kwargs={"poll_ms": 20}, daemon=True)
    server.start()
    prompt = encode_prompt(pair, ArithTask().problems("test", 1)[0])
    results = {}
    try:
        clients = [DeviceClient.connect(pair.drafter, edge.endpoint,
                                        RunConfig(protocol="vanilla", device_id=f"dev{i}", timeout_ms=30000),
                                        pair.eos_token_id) for i in range(2)]
        for c in clients:
            c.hello()
        go = threading.Barrier(2)

        def one(i: int) -> None:
            go.wait()
            results[i] = clients[i].run(prompt, 2)  # one round: γ = 2

        threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for c in clients:
            c.close()
    finally:
        edge.stop()
        server.join(10)
        edge.close()
    rounds = [results[i].rounds[0] for i in range(2)]
    assert all(results[i].ok for i in range(2))
    waited = max(rounds, key=lambda r: r.edge_queue_ms)
    assert waited.edge_queue_ms > 600.0  # behind the other device's 1 s round
    for r in rounds:
        assert r.edge_ms >= r.verify_ms >= 1000.0 and r.edge_ms >= r.edge_queue_ms + r.verify_ms - 1.0
        assert r.link_ms < 300.0, r  # loopback: no edge time in it
        assert r.t_start <= r.t_edge_arrival <= r.t_edge_reply <= r.t_end


def test_the_edge_times_travel_only_when_set():
    """A verdict without edge times is the message it was before they existed; with them, they
    round-trip; a non-finite one is refused as any float field is."""
    import msgpack

    from nodes.wire import Verdict, WireError, decode, encode

    bare = Verdict("r", 0, accepted=2, next_token=9, accepted_exact=1, first_mismatch=1, harmless=1, verify_ms=2.5)
    header = msgpack.unpackb(encode(bare)[0])
    assert set(header["f"]) == {"request_id", "round", "accepted", "next_token", "accepted_exact", "first_mismatch",
                                "harmless", "verify_ms", "done", "pad_ms"}
    timed = Verdict("r", 0, 2, 9, 1, 1, 1, 2.5, edge_queue_ms=3.0, edge_ms=7.5, t_edge_arrival=1.7e9,
                    t_edge_reply=1.7e9 + 0.0075)
    assert decode(encode(timed)) == timed and decode(encode(bare)) == bare
    timed.edge_ms = float("nan")
    with pytest.raises(WireError, match="wrong type"):
        decode(encode(timed))
