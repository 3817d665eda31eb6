"""Experiment specs, sweeps, the experiment runner (simulated here) and reports."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from runs.spec import SpecError, load_spec

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("text,message", [
    ("gama: 3\n", "unknown key 'gama'"),
    ("gamma: 4ms\n", "gamma must be int"),
    ("protocols: []\n", "protocols"),
    ("task: null\n", "task must be a mapping"),
    ("replay: {time_scale: 0}\n", "replay.time_scale"),
    ("link: {queue_packets: -1}\n", "link.queue_packets"),
    ("topology: {kind: star, n_devices: 1000}\n", "topology.n_devices"),
    ("temperature: -1\n", "temperature"),
    ("lambda_ms: -5\n", "lambda_ms"),
    ("name: ../../x\n", "name"),
    ("link: {backend: warp}\n", "link.backend"),
    ("replay: {start_ms: 500, end_ms: 100}\n", "end_ms must exceed"),
    ("sweep: {grid: {gamma: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}, zip: {seed: [1, 2]}, nope: 1}\n", "names no spec key"),
    ("trace: {file: nope.csv}\n", "trace.file 'nope.csv' not found"),
    ("protocols: [vanilla, turbo]\n", "unknown protocol"),
    ("task: {problem: 3}\n", "unknown key 'task.problem'"),
    ("replay: {start_ms: soon}\n", "replay.start_ms must be float"),
    ("sweep: {gamma: 3}\n", "sweep.gamma must be a non-empty list"),
    ("sweep: {task.nope: [1]}\n", "names no spec key"),
    ("sweep: {zip: {gamma: [2, 4], seed: [1]}}\n", "one length"),
    ("sweep: {grid: {seed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], gamma: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "
     "task.problems: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], repetitions: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}}\n",
     "expands to 11000 runs"),
    ("- a\n- b\n", "mapping"),
    ("topology: {kind: star, n_devices: 3, device_traces: {files: [traces/builtin/pedestrian_3p5ghz_60s.csv]}}\n",
     "device_traces lists 1 files for 3 devices"),
    ("topology: {kind: star, device_traces: {files: [a.csv, b.csv], rotate: true}}\n", "either files or rotate"),
    ("topology: {kind: star, n_devices: 2, device_traces: {files: [a.csv, b.csv]}}\n", "device_traces.files entry 'a.csv' not found"),
    ("device_traces: [a.csv]\n", "now topology.device_traces"),
])
def test_spec_errors_name_file_and_key(tmp_path, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(SpecError, match=message) as e:
        load_spec(p)
    assert str(p) in str(e.value)


def test_sweep_expands_grid_and_resolves_paths(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: g\nsweep: {gamma: [2, 4], lambda_ms: [100.0, 1000.0]}\ntask: {problems: 2}\n")
    runs = load_spec(p)
    assert [r.name for r in runs] == ["g-gamma=2-lambda_ms=100.0", "g-gamma=2-lambda_ms=1000.0",
                                      "g-gamma=4-lambda_ms=100.0", "g-gamma=4-lambda_ms=1000.0"]
    assert runs[3].get("gamma") == 4 and runs[3].get("task.problems") == 2
    assert runs[0].trace_path().exists()  # the built-in trace, found in the repository
    gen = load_spec(None, {"trace": {"generate": {"preset": "vehicular", "duration_s": 5.0, "seed": 2}}})[0]
    assert gen.trace_path().suffix == ".parquet" and gen.trace_path() == gen.trace_path()


def test_simulated_experiment_tables_and_report(tmp_path):
    from runs.experiment import run_experiment
    from runs.report import as_json, report

    runs = load_spec(None, {"name": "t", "protocols": ["vanilla", "wisv-full"], "task": {"problems": 3},
                            "repetitions": 2})
    run_experiment(runs, tmp_path, "simulate", progress=False)
    for rep in (0, 1):
        spec = json.loads((tmp_path / "t" / f"rep{rep}" / "spec.json").read_text())
        assert spec["repetition"] == rep and spec["mode"] == "simulate"
    rounds = pd.read_parquet(tmp_path / "rounds.parquet")
    requests = pd.read_parquet(tmp_path / "requests.parquet")
    assert set(rounds["protocol"]) == {"vanilla", "wisv-full"} and set(requests["rep"]) == {0, 1}
    assert len(requests) == 2 * 2 * 3 and "csi_rtt_ms" in rounds
    # each repetition runs its own problems; within one, both protocols run the same ones
    ids = requests.groupby(["rep", "protocol"])["request_id"].agg(frozenset)
    assert ids[(0, "vanilla")] == ids[(0, "wisv-full")] and not ids[(0, "vanilla")] & ids[(1, "vanilla")]
    df, plots = report([tmp_path])
    assert list(df["protocol"]) == ["vanilla", "wisv-full"]
    full = df[df["protocol"] == "wisv-full"].iloc[0]
    assert full["n_paired"] == 6 and full["latency_ratio_lo"] <= full["latency_ratio"] <= full["latency_ratio_hi"]
    assert 0.0 <= full["accuracy_lo"] <= full["accuracy"] <= full["accuracy_hi"] <= 1.0  # Wilson, inside [0, 1]
    assert "repetitions" in full["ci_method"] and all(p.exists() for p in plots)
    j = as_json(df)
    assert set(j) == {"vanilla", "wisv-full"} and "accuracy" in j["vanilla"]
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("mode: simulate") and "| run | protocol | n | failed |" in md


def test_run_cli_simulated_and_report_json(tmp_path):
    r = subprocess.run([sys.executable, "-m", "wisv.cli", "run", "--simulate", "--problems", "2", "--protocols",
                        "vanilla,wisv-selective", "-o", str(tmp_path)], capture_output=True, text=True, cwd=str(REPO),
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "| experiment | vanilla |" in r.stdout
    r = subprocess.run([sys.executable, "-m", "wisv.cli", "report", str(tmp_path), "--json"], capture_output=True,
                       text=True, cwd=str(REPO), timeout=120)
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout.strip().splitlines()[-1])) == {"vanilla", "wisv-selective"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("gamma: fast\n")
    r = subprocess.run([sys.executable, "-m", "wisv.cli", "run", str(bad), "--simulate"], capture_output=True,
                       text=True, cwd=str(REPO), timeout=60)
    assert r.returncode == 2 and "gamma must be int" in r.stderr


def test_device_traces_from_the_spec_rotated_or_one_file_each(tmp_path):
    """``topology.device_traces``: one trace rotated per device (device k starts k/N into the
    run's trace), or each device its own file; the network's topology is unchanged by either."""
    from runs.job import prepared_traces, replay_options
    from traces.format import read_trace, write_trace
    from traces.synthetic import step_trace

    trace = write_trace(step_trace(100.0, 3.0, rates_bps=[1e6, 2e6, 3e6], delays_ms=[10.0], seed=0), tmp_path / "t.parquet")
    rows = read_trace(trace).data
    run = load_spec(None, {"trace": {"file": str(trace)},
                           "topology": {"kind": "star", "n_devices": 3, "device_traces": {"rotate": True}}})[0]
    assert run.topology().n_devices == 3 and run.device_traces().rotate
    files = prepared_traces(run, 0, tmp_path, replay_options(run))
    assert [f.name for f in files] == ["trace-d0.parquet", "trace-d1.parquet", "trace-d2.parquet"]
    for k, f in enumerate(files):
        t = read_trace(f)
        assert t.duration_ms == pytest.approx(3000.0)
        first = rows[rows["t_ms"] <= 1000.0 * k].iloc[-1]  # the row in force k/3 of the way in
        assert t.data["rate_bps_up"].iloc[0] == first["rate_bps_up"]
    assert not read_trace(files[0]).data["rate_bps_up"].equals(read_trace(files[1]).data["rate_bps_up"])

    other = write_trace(step_trace(100.0, 1.0, rates_bps=[7e6], delays_ms=[5.0]), tmp_path / "o.parquet")
    run = load_spec(None, {"topology": {"kind": "star", "n_devices": 2,
                                        "device_traces": {"files": [str(trace), str(other)]}}})[0]
    (tmp_path / "own").mkdir()
    files = prepared_traces(run, 0, tmp_path / "own", replay_options(run))
    assert read_trace(files[1]).data["rate_bps_up"].tolist() == [7e6] * 10
    (tmp_path / "shared").mkdir()
    run = load_spec(None, {"trace": {"file": str(trace)}, "topology": {"kind": "star", "n_devices": 2}})[0]
    assert [f.name for f in prepared_traces(run, 0, tmp_path / "shared", replay_options(run))] == ["trace.parquet"] * 2
