"""Comparisons a researcher can trust: deterministic simulation with compute profiles, failures
that never read as speed, first-class sweeps, safe output directories."""
from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent


def _wisv(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wisv.cli", *args], capture_output=True, text=True, cwd=str(REPO),
                          timeout=timeout)


def _spin(until: float) -> None:
    x = 0
    while time.monotonic() < until:
        x += 1


def test_simulation_is_a_pure_function_of_the_spec(tmp_path):
    """The same spec simulated twice — the second time with both cores busy — gives identical
    latency, accepted length and rounds per protocol."""
    spec = tmp_path / "s.yaml"
    spec.write_text("name: det\nprotocols: [vanilla, wisv-selective]\ntask: {problems: 2}\n")
    assert _wisv("run", str(spec), "--simulate", "-o", str(tmp_path / "A")).returncode == 0
    hogs = [multiprocessing.Process(target=_spin, args=(time.monotonic() + 120,)) for _ in range(2)]
    for h in hogs:
        h.start()
    try:
        r = _wisv("run", str(spec), "--simulate", "-o", str(tmp_path / "B"))
    finally:
        for h in hogs:
            h.terminate()
            h.join()
    assert r.returncode == 0, r.stderr
    a, b = (json.loads(_wisv("report", str(tmp_path / d), "--json").stdout.strip().splitlines()[-1]) for d in "AB")
    for p in ("vanilla", "wisv-selective"):
        for k in ("latency_ms_mean", "mean_accepted_len", "rounds_per_100_tokens", "accuracy"):
            assert a[p][k] == b[p][k], (p, k, a[p][k], b[p][k])


class _Broken:
    """A policy whose every verification fails at the edge (an error reply, the request fails)."""

    needs_drafter_hidden = needs_drafter_probs = False

    def verify(self, ctx):
        raise RuntimeError("this policy always fails")


def test_a_failing_protocol_is_counted_not_averaged(tmp_path, capsys):
    """A protocol whose every request fails: failed = n, no change against vanilla is computed
    (there is no problem both completed), accuracy 0, a ⚠ in the report, and exit status 3."""
    from nodes.protocols import PROTOCOLS, Protocol
    from wisv.cli import main

    PROTOCOLS.register(Protocol("toy-broken", "fails every round", policy=lambda t: _Broken()))
    try:
        rc = main(["run", "--simulate", "--problems", "3", "--protocols", "vanilla,toy-broken", "-o",
                   str(tmp_path / "out")])
    finally:
        PROTOCOLS.unregister("toy-broken")
    assert rc == 3 and "failed requests in experiment/toy-broken" in capsys.readouterr().err
    df = pd.read_csv(tmp_path / "out" / "report.csv")
    bad, van = df[df["protocol"] == "toy-broken"].iloc[0], df[df["protocol"] == "vanilla"].iloc[0]
    assert bad["failed"] == 3 and van["failed"] == 0 and bad["n_paired"] == 0
    assert pd.isna(bad.get("latency_ratio")) and pd.isna(bad["latency_ms_mean"])  # nothing completed: no speed
    assert bad["accuracy"] == 0.0  # a failed request is a wrong answer, not a fast one
    assert "⚠" in (tmp_path / "out" / "report.md").read_text()


def test_zip_sweep_of_keys_absent_from_the_spec_is_a_result(tmp_path):
    """Up and down SNR move together (zip) although the spec names neither; the swept keys are
    columns, runs sort by value, and the report draws metric-vs-SNR plots."""
    spec = tmp_path / "s.yaml"
    spec.write_text("name: snr\nprotocols: [vanilla, wisv-full]\ntask: {problems: 2}\n"
                    "trace: {generate: {preset: pedestrian, duration_s: 20, seed: 3}}\n"
                    "sweep:\n  zip:\n    trace.generate.up.mean_snr_db: [20, -5, 5]\n"
                    "    trace.generate.down.mean_snr_db: [25, 0, 10]\n")
    out = tmp_path / "out"
    assert _wisv("run", str(spec), "--simulate", "-o", str(out)).returncode == 0
    rq = pd.read_parquet(out / "requests.parquet")
    assert {"trace.generate.up.mean_snr_db", "trace.generate.down.mean_snr_db"} <= set(rq.columns)
    df = pd.read_csv(out / "report.csv")
    assert list(dict.fromkeys(df["trace.generate.up.mean_snr_db"])) == [-5, 5, 20]  # sorted by value, not text
    plots = {p.name for p in (out / "plots").glob("sweep_*.png")}
    assert {"sweep_latency_ms_mean.png", "sweep_mean_accepted_len.png", "sweep_accuracy.png"} <= plots


def test_output_directory_is_never_merged_silently(tmp_path):
    out = tmp_path / "out"
    args = ["run", "--simulate", "--problems", "1", "--protocols", "vanilla", "-o", str(out)]
    assert _wisv(*args).returncode == 0
    summary = next(out.glob("*/rep0/summary.json"))
    before = summary.stat().st_mtime_ns
    r = _wisv(*args)
    assert r.returncode == 2 and "not empty" in r.stderr
    assert _wisv(*args, "--resume").returncode == 0
    assert summary.stat().st_mtime_ns == before  # a complete run is kept, not rerun
    assert _wisv(*args, "--overwrite").returncode == 0 and summary.stat().st_mtime_ns != before


def test_compute_presets_are_documented_and_charged():
    from nodes.profiles import PRESETS, ComputeProfile, profile_from_spec

    dev, edge = PRESETS["jetson-agx-orin/llama-3.2-1b"], PRESETS["a40/llama-3.1-8b"]
    assert 10.0 < dev.profile.target_ms(1) < 40.0  # tens of tokens/s for a 1B model on a Jetson
    assert 20.0 < edge.profile.target_ms(5) < 60.0  # one bandwidth-bound 8B step plus 5 tokens on an A40
    assert dev.sources and edge.sources
    assert profile_from_spec("measured") == ComputeProfile()
    p = ComputeProfile(10.0, 1.0)
    assert p.charge(3.0, 4, exact=True) == (14.0, 11.0)  # simulation: the profile's time exactly
    assert p.charge(30.0, 4) == (30.0, 0.0)  # emulation: never faster than the real compute
    with pytest.raises(ValueError, match="unknown compute profile"):
        profile_from_spec("tpu-v9")


def test_spec_reference_is_generated_from_the_schema():
    """docs/spec.md is what `wisv run --schema` prints (regenerate with `make docs`)."""
    from runs.spec import spec_schema_markdown

    assert (REPO / "docs" / "spec.md").read_text() == spec_schema_markdown()
    assert "trace.generate" in spec_schema_markdown() and "compute.device" in spec_schema_markdown()
