"""Simulation mode: the same nodes over an analytic link with a virtual clock."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from channel_models.csi import CSI, HEADER_BYTES
from nodes.config import RunConfig, TaskConfig
from nodes.telemetry import RoundLog
from runs.simulate import AnalyticLink, simulate
from traces.synthetic import step_trace

REPO = Path(__file__).resolve().parent.parent


def test_analytic_link_times():
    link = AnalyticLink(step_trace(100.0, 1.0, [8e6], [20.0], [0.0]))
    # 1448 B in one segment at 8 Mbit/s: (1448 + 66) * 8 / 8e6 s = 1.514 ms, plus 20 ms
    assert link.transfer_ms(0.0, 1448, "up") == pytest.approx(20.0 + (1448 + HEADER_BYTES) * 8 / 8e6 * 1000)
    lossy = AnalyticLink(step_trace(100.0, 1.0, [8e6], [20.0], [0.5]), seed=1)
    times = [lossy.transfer_ms(0.0, 100, "down") for _ in range(2000)]
    assert np.mean([t > 100 for t in times]) == pytest.approx(0.5, abs=0.05)
    again = AnalyticLink(step_trace(100.0, 1.0, [8e6], [20.0], [0.5]), seed=1)
    assert [again.transfer_ms(0.0, 100, "down") for _ in range(2000)] == times  # seeded


def _cfg(problems: int) -> RunConfig:
    return RunConfig(task=TaskConfig(problems=problems))


@pytest.fixture(scope="module")
def pair():
    from nodes.models import load_pair

    return load_pair()


def test_simulate_protocols_schema_and_exactness(pair, tmp_path):
    from nodes.decoding import autoregressive_generate
    from nodes.evaluate import encode_prompt
    from nodes.tasks import ArithTask

    trace = step_trace(100.0, 5.0, [5e6, 20e6], [10.0, 30.0], [0.0], seed=4)
    res = simulate(pair, trace, _cfg(4), ["vanilla", "wisv-selective", "ar-edge"], out_dir=tmp_path)
    assert res["vanilla"].failed == 0 and res["vanilla"].mean_accepted_len > 1.5
    assert res["ar-edge"].rounds == 4  # one round trip per request
    lines = [json.loads(x) for x in open(tmp_path / "rounds-vanilla.jsonl")]
    assert list(lines[0]) == RoundLog.columns()  # the emulated runs' schema
    assert {"csi_rate_up_mbps", "csi_delay_up_ms"} <= set(lines[0])
    # latency per round = draft + link + verify; the link part is at least both one-way delays
    assert all(x["link_ms"] >= 20.0 - 1e-6 for x in lines)
    # greedy vanilla in simulation is still exactly the target's greedy output
    from nodes.device import DeviceClient
    from nodes.edge import EdgeServer
    from runs.simulate import SimTransport

    cfg = RunConfig()
    transport = SimTransport(EdgeServer(pair.target, pair.eos_token_id, bind=None), AnalyticLink(trace), cfg)
    client = DeviceClient(pair.drafter, cfg, pair.eos_token_id, transport, csi=transport.csi)
    client.hello()
    for p in ArithTask().problems("test", 3):
        ids = encode_prompt(pair, p)
        one = client.run(ids, 128)
        assert one.tokens == autoregressive_generate(pair.target, ids, 128, pair.eos_token_id)
        assert one.latency_ms >= sum(r.wall_ms for r in one.rounds)  # virtual time covers every round
    again = simulate(pair, trace, _cfg(4), ["vanilla"])
    assert again["vanilla"].rounds == res["vanilla"].rounds  # greedy: identical rounds


def test_simulate_cli(tmp_path):
    r = subprocess.run([sys.executable, "-m", "wisv.cli", "simulate", "--protocols", "vanilla,wisv-full", "--problems",
                        "2", "-o", str(tmp_path), "--json"], capture_output=True, text=True, cwd=str(REPO), timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(out) == {"vanilla", "wisv-full"}
    assert out["wisv-full"]["up_bytes_per_token"] > out["vanilla"]["up_bytes_per_token"]
    run_dir, = tmp_path.glob("sim-*")  # a fresh directory each time
    assert (run_dir / "summary.json").exists() and (run_dir / "rounds-wisv-full.jsonl").exists()


def test_upload_chooser_follows_the_channel():
    from nodes.protocols.adaptive import UploadChooser

    c = UploadChooser(bytes_per_row=4096)  # a 2048-wide fp16 hidden state
    fast = CSI(rate_up_mbps=100.0, delay_up_ms=20.0, delay_down_ms=20.0)
    assert c.choose(8, fast) == "all"      # bytes are cheap, a round is not
    assert c.choose(8, CSI(rate_up_mbps=0.5, delay_up_ms=5.0, delay_down_ms=5.0)) == "mismatch"  # 32 kB at 0.5 Mbit/s: 0.5 s
    for _ in range(100):
        c.observe(8, -1)
    assert c.p_mismatch(8) < 0.01 and c.choose(8, fast) == "mismatch"


def test_wisv_adaptive_switches_with_the_uplink(pair, tmp_path):
    # 1 s of a fast uplink, then 1 s of a 20 kbit/s one, repeating
    trace = step_trace(1000.0, 10.0, [20e6, 20e3], [15.0], [0.0], seed=0, cycle_delays=True)
    trace.data["rate_bps_up"] = np.resize([20e6, 20e3], len(trace.data))
    res = simulate(pair, trace, _cfg(6), ["vanilla", "wisv-adaptive"], out_dir=tmp_path)
    assert res["wisv-adaptive"].failed == 0
    rounds = [json.loads(x) for x in open(tmp_path / "rounds-wisv-adaptive.jsonl")]
    assert {r["upload"] for r in rounds} == {"all", "mismatch"}
    assert res["wisv-adaptive"].mean_accepted_len > res["vanilla"].mean_accepted_len
