"""An emulated experiment end to end: edge and device processes in Mininet hosts (root)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="emulation needs root")


def test_emulated_run_of_two_protocols(tmp_path):
    from nodes.config import RunConfig, TaskConfig
    from runs.emulated import EmulationSetup, run_emulated
    from topologies.probe import probe_backends
    from traces.synthetic import step_trace
    from traces.format import write_trace

    if not any(probe_backends().reasons[b] is None for b in probe_backends().reasons):
        pytest.skip("no shaping backend")
    trace = write_trace(step_trace(100.0, 10.0, [5e6, 20e6], [15.0], [0.0], seed=3), tmp_path / "t.csv")
    res = run_emulated(RunConfig(run_id="t", task=TaskConfig(problems=3)), ["vanilla", "wisv-selective"],
                       EmulationSetup(trace), tmp_path / "run")
    run = tmp_path / "run"
    assert json.loads((run / "status.json").read_text())["status"] == "done"
    for p in ("vanilla", "wisv-selective"):
        assert res[p].failed == 0 and res[p].problems == 3
        rounds = [json.loads(x) for x in open(run / f"rounds-{p}.jsonl")]
        assert len(rounds) == res[p].rounds
        # every round crossed the emulated link: at least both one-way delays of 15 ms
        assert all(r["link_ms"] >= 29.0 for r in rounds), min(r["link_ms"] for r in rounds)
        assert all(r["csi_rtt_ms"] == 30.0 and r["csi_rate_up_mbps"] in (5.0, 20.0) for r in rounds)
        assert (run / f"link-steps-{p}.csv").exists()
    # nothing of the run is left behind
    assert "mininet:" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def test_killed_device_fails_the_run_keeps_rounds_and_leaves_nothing(tmp_path):
    import signal
    import threading
    import time

    from nodes.config import RunConfig, TaskConfig
    from runs.emulated import EmulationSetup, RunFailed, run_emulated
    from topologies.net import REGISTRY_DIR
    from traces.format import write_trace
    from traces.synthetic import step_trace

    trace = write_trace(step_trace(100.0, 10.0, [10e6], [10.0], [0.0], seed=5), tmp_path / "t.csv")
    run = tmp_path / "run"
    before_ifaces = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.count("\n")

    def kill_after_rounds(protocol, proc):
        def watch():
            log = run / f"rounds-{protocol}.jsonl"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if log.exists() and len(log.read_text().splitlines()) >= 5:
                    proc.send_signal(signal.SIGKILL)
                    return
                time.sleep(0.05)
        threading.Thread(target=watch, daemon=True).start()

    with pytest.raises(RunFailed, match="device exited"):
        run_emulated(RunConfig(task=TaskConfig(problems=20)), ["vanilla"], EmulationSetup(trace), run,
                     on_device_start=kill_after_rounds)
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    rounds = [json.loads(x) for x in open(run / "rounds-vanilla.jsonl")]
    assert len(rounds) >= 5 and all(r["wire_up_bytes"] > 0 for r in rounds)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "mininet:" not in ps and "topologies.delay_element" not in ps and "node edge" not in ps
    assert not list(REGISTRY_DIR.glob("net-*.json"))
    after_ifaces = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.count("\n")
    assert after_ifaces == before_ifaces


def test_emulation_and_simulation_agree(tmp_path):
    from runs.agreement import check_agreement

    r = check_agreement(tmp_path, {"name": "agree", "protocols": ["vanilla"], "task": {"problems": 4}})
    v = r["protocols"]["vanilla"]
    assert v["rounds_identical"]  # exact greedy: the same decisions in both
    assert abs(v["round_wall_minus_predicted_ms_median"]) < 3.0  # an emulated round costs what the trace says
    assert abs(v["latency_rel_diff"]) < 0.35  # the benchmark states 25 % on an idle machine


def test_star_experiment_two_devices_with_cross_traffic(tmp_path):
    from runs.experiment import run_experiment
    from runs.spec import load_spec

    other = tmp_path / "slow.csv"
    from traces.format import write_trace
    from traces.synthetic import step_trace

    write_trace(step_trace(100.0, 10.0, [2e6], [40.0], [0.0]), other)
    runs = load_spec(None, {"name": "star", "protocols": ["vanilla", "wisv-full"], "task": {"problems": 2},
                            "device_traces": ["traces/builtin/pedestrian_3p5ghz_60s.csv", str(other)],
                            "topology": {"kind": "star", "n_devices": 2, "cross_traffic_bps": 2e6,
                                         "backhaul_rate_bps": 100e6}})
    res = run_experiment(runs, tmp_path, "emulate", progress=False)
    s = res["star"][0]
    assert s["vanilla"]["problems"] == 4 and s["vanilla"]["failed"] == 0  # 2 devices x 2 problems
    import pandas as pd

    rounds = pd.read_parquet(tmp_path / "rounds.parquet")
    # two device processes per protocol, named by index: the same ids for every protocol
    assert rounds.groupby("protocol")["device_id"].agg(set).map(sorted).tolist() == [["dev0", "dev1"]] * 2
    assert set(pd.read_parquet(tmp_path / "requests.parquet")["protocol"]) == {"vanilla", "wisv-full"}
    assert (rounds["csi_rtt_ms"] == 80.0).any() and (rounds["csi_rtt_ms"] < 80.0).any()  # each device its own trace
