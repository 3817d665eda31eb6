"""Every device of a spec runs, simulated as emulated: a star spec with 4 devices simulates
dev0…dev3, each its own config (its own problems) over its own link trace, and both modes
resolve the devices through one function (runs.devices.resolve_devices)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from nodes.config import RunConfig, TaskConfig
from runs.devices import device_tag, link_seed, resolve_devices
from traces.format import write_trace
from traces.synthetic import step_trace

RATES_MBPS = (2.0, 5.0, 10.0, 20.0)  # device k's link rate (one rate per trace: its CSI shows whose trace it is)


def _star_spec(tmp_path: Path) -> dict:
    files = []
    for k, mbps in enumerate(RATES_MBPS):
        files.append(str(write_trace(step_trace(100.0, 5.0, [mbps * 1e6], [10.0 + k], [0.0]), tmp_path / f"d{k}.csv")))
    return {"name": "star4", "topology": {"kind": "star", "n_devices": 4, "device_traces": {"files": files}},
            "protocols": ["vanilla"], "task": {"problems": 1, "max_new_tokens": 24},
            "compute": {"device": "jetson-agx-orin/llama-3.2-1b", "edge": "a40/llama-3.1-8b"}, "seed": 3}


def test_resolve_devices_gives_each_device_its_config_trace_and_seed():
    cfg = RunConfig(seed=7, task=TaskConfig(problems=5, start_index=2))
    devs = resolve_devices(cfg, ["a", "b", "c"])
    assert [d.config for d in devs] == [cfg.for_device(k) for k in range(3)]
    assert [d.config.device_id for d in devs] == ["dev0", "dev1", "dev2"]
    assert [d.config.task.start_index for d in devs] == [2, 7, 12]  # each device its own problems
    assert [d.trace for d in devs] == ["a", "b", "c"]
    assert devs[0].link_seed == 7 and len({d.link_seed for d in devs}) == 3  # device 0: the run's seed
    assert [device_tag("vanilla", k, 1) for k in range(1)] == ["vanilla"]
    assert [device_tag("vanilla", k, 2) for k in range(2)] == ["vanilla-d0", "vanilla-d1"]
    assert link_seed(7, 0) == 7
    with pytest.raises(ValueError):
        resolve_devices(cfg, [])


def test_a_star_spec_resolves_to_the_same_devices_emulated_and_simulated(tmp_path):
    """The preparation both modes run (runs.job.prepare_job): the same per-device configs and
    per-device traces, whatever the mode (the run id aside, unique per run)."""
    from runs.job import Job, prepare_job
    from runs.spec import load_spec

    run = load_spec(None, _star_spec(tmp_path))[0]
    got = {mode: prepare_job(Job(run, 0), tmp_path / mode, mode) for mode in ("simulate", "emulate")}
    sim, emu = got["simulate"].devices, got["emulate"].devices
    assert len(sim) == len(emu) == 4
    for s, e in zip(sim, emu):
        assert replace(s.config, run_id="") == replace(e.config, run_id="")
        assert s.trace.name == e.trace.name == f"trace-d{s.index}.parquet" and s.link_seed == e.link_seed
    assert [d.config.device_id for d in sim] == ["dev0", "dev1", "dev2", "dev3"]
    assert [d.config.task.start_index for d in sim] == [0, 1, 2, 3]
    base = got["emulate"].config
    assert [d.config for d in emu] == [base.for_device(k) for k in range(4)]  # what each device process is handed


def test_a_star_spec_with_4_devices_simulates_dev0_to_dev3(tmp_path):
    from runs.experiment import run_experiment
    from runs.spec import load_spec

    out = tmp_path / "out"
    res = run_experiment(load_spec(None, _star_spec(tmp_path)), out, "simulate", progress=False)
    rd = out / "star4" / "rep0"
    rounds = pd.read_parquet(out / "rounds.parquet")
    assert sorted(rounds["device_id"].unique()) == ["dev0", "dev1", "dev2", "dev3"]
    assert sorted(p.name for p in rd.glob("rounds-*.jsonl")) == [f"rounds-vanilla-d{k}.jsonl" for k in range(4)]
    for k, mbps in enumerate(RATES_MBPS):
        lines = [json.loads(x) for x in open(rd / f"rounds-vanilla-d{k}.jsonl")]
        assert lines and {x["device_id"] for x in lines} == {f"dev{k}"}
        assert [x["csi_rate_up_mbps"] for x in lines] == pytest.approx([mbps] * len(lines))  # its own trace
        req = json.loads((rd / f"requests-vanilla-d{k}.json").read_text())
        assert req["config"]["device_id"] == f"dev{k}" and req["config"]["task"]["start_index"] == k
        assert [r["request_id"] for r in req["requests"]] == [f"arith-test-{k}"]  # its own problem
    assert res["star4"][0]["vanilla"]["problems"] == 4  # the summary covers every device
    assert (rounds.groupby("device_id")["csi_worst_rate_up_mbps"].min().to_numpy() ==
            pytest.approx(RATES_MBPS))  # the tables join each device with its own trace


def test_one_trace_for_every_device_of_a_star(tmp_path):
    """Without device_traces every device replays the run's trace (one file), each over its own link."""
    from runs.job import Job, prepare_job
    from runs.spec import load_spec

    spec = {**_star_spec(tmp_path), "topology": {"kind": "star", "n_devices": 3}}
    prep = prepare_job(Job(load_spec(None, spec)[0], 0), tmp_path / "rd", "simulate")
    assert [d.trace.name for d in prep.devices] == ["trace.parquet"] * 3
    assert [d.config.device_id for d in prep.devices] == ["dev0", "dev1", "dev2"]
