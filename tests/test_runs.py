"""An emulated experiment end to end: edge and device processes in Mininet hosts (root)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="emulation needs root")


def test_emulated_run_of_two_protocols(tmp_path):
    from runs.emulated import EmulatedSpec, run_emulated
    from topologies.probe import probe_backends
    from traces.synthetic import step_trace
    from traces.format import write_trace

    if not (probe_backends().netem or probe_backends().nfqueue):
        pytest.skip("no shaping backend")
    trace = write_trace(step_trace(100.0, 10.0, [5e6, 20e6], [15.0], [0.0], seed=3), tmp_path / "t.csv")
    res = run_emulated(EmulatedSpec(trace, ("vanilla", "wisv-selective"), problems=3), tmp_path / "run")
    run = tmp_path / "run"
    assert json.loads((run / "status.json").read_text())["status"] == "done"
    for p in ("vanilla", "wisv-selective"):
        assert res[p].failed == 0 and res[p].problems == 3
        rounds = [json.loads(x) for x in open(run / f"rounds-{p}.jsonl")]
        assert len(rounds) == res[p].rounds
        # every round crossed the emulated link: at least both one-way delays of 15 ms
        assert all(r["link_ms"] >= 29.0 for r in rounds), min(r["link_ms"] for r in rounds)
        assert all(r["csi"]["rtt_ms"] == 30.0 and r["csi"]["rate_up_mbps"] in (5.0, 20.0) for r in rounds)
        assert (run / f"link-steps-{p}.csv").exists()
    # nothing of the run is left behind
    assert "mininet:" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
