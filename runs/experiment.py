"""Run the resolved runs of an experiment spec, emulated or simulated, into one directory:

    OUT/<run name>/rep<k>/   spec.json (resolved), trace.parquet (as replayed), rounds-*.jsonl,
                             requests-*.json, link-steps-*.csv (emulated), summary.json
    OUT/rounds.parquet, OUT/requests.parquet, OUT/link_steps.parquet, OUT/meta.json

The same spec runs in both modes, so their results can be compared (``wisv report``).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pandas as pd

from runs.spec import RunSpec

log = logging.getLogger(__name__)


def _prepared_trace(run: RunSpec, out: Path) -> Path:
    from topologies.replayer import ReplayOptions, prepare
    from traces.format import read_trace, write_trace

    r = run.values["replay"]
    t = prepare(read_trace(run.trace_path()), ReplayOptions(r["start_ms"], r["end_ms"], None, r["time_scale"]))
    return write_trace(t, out / "trace.parquet")


def run_experiment(runs: list[RunSpec], out_dir: Path, mode: str = "emulate", progress: bool = True) -> dict:
    """Run everything; returns {run name: {rep: {protocol: summary dict}}}. A failed run stops
    the experiment (its partial logs stay) after the tables of what finished are written."""
    if mode not in ("emulate", "simulate"):
        raise ValueError("mode must be emulate or simulate")
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    jobs = [(r, k) for r in runs for k in range(r.values["repetitions"])]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="run", desc=f"{mode} runs")
    pair = None
    try:
        for run, rep in jobs:
            rd = out_dir / run.name / f"rep{rep}"
            rd.mkdir(parents=True, exist_ok=True)
            (rd / "spec.json").write_text(json.dumps({**run.values, "repetition": rep, "mode": mode,
                                                      "source": run.source}, indent=2) + "\n")
            trace = _prepared_trace(run, rd)
            v = run.values
            seed = v["seed"] + rep
            if mode == "simulate":
                from nodes.models import load_pair
                from nodes.sweep import simulate
                from traces.format import read_trace

                pair = pair or load_pair(v["models"]["drafter"], v["models"]["target"])
                res = simulate(pair, read_trace(trace), v["protocols"], v["task"]["problems"], v["gamma"], rd, seed,
                               run_id=f"{run.name}-rep{rep}", split=v["task"]["split"], lambda_ms=v["lambda_ms"])
            else:
                from runs.emulated import EmulatedSpec, run_emulated

                top = v["topology"]
                res = run_emulated(EmulatedSpec(trace, tuple(v["protocols"]), v["task"]["problems"], v["gamma"],
                                                v["link"]["backend"], seed, lambda_ms=v["lambda_ms"],
                                                drafter=v["models"]["drafter"], target=v["models"]["target"],
                                                split=v["task"]["split"], queue_packets=v["link"]["queue_packets"],
                                                n_devices=top["n_devices"] if top["kind"] == "star" else 1,
                                                cross_traffic_bps=top.get("cross_traffic_bps"),
                                                backhaul_rate_bps=top.get("backhaul_rate_bps"),
                                                device_args=device_args(v), progress=progress,
                                                device_traces=_device_traces(run, rd)), rd)
            results.setdefault(run.name, {})[rep] = {k: s.__dict__ for k, s in res.items()}
            if bar:
                bar.update(1)
    finally:
        if bar:
            bar.close()
        collect_tables(out_dir, mode)
    return results


def _device_traces(run: RunSpec, out: Path) -> list[Path] | None:
    """Per-device trace files of a Star run (replay options applied), or None."""
    files = run.values["device_traces"]
    if not files:
        return None
    from topologies.replayer import ReplayOptions, prepare
    from traces.format import read_trace, write_trace

    from runs.spec import _resolve

    r = run.values["replay"]
    return [write_trace(prepare(read_trace(_resolve(f, run.source)), ReplayOptions(r["start_ms"], r["end_ms"], None,
                                                                                  r["time_scale"])),
                        out / f"trace-d{k}.parquet") for k, f in enumerate(files)]


def device_args(v: dict) -> list[str]:
    """Device command-line options a spec sets (sampling, hidden dtype, compute profile)."""
    out = ["--temperature", str(v["temperature"]), "--hidden-dtype", v["hidden_dtype"]]
    if v["profile"]["device_ms_per_token"]:
        out += ["--profile-ms-per-token", str(v["profile"]["device_ms_per_token"])]
    return out


def collect_tables(out_dir: Path, mode: str) -> None:
    """Gather every run's logs under ``out_dir`` into Parquet tables and ``meta.json``."""
    rounds, requests, steps = [], [], []
    for spec_file in sorted(out_dir.glob("*/rep*/spec.json")):
        rd = spec_file.parent
        spec = json.loads(spec_file.read_text())
        tag = {"run": rd.parent.name, "rep": int(rd.name[3:]), "mode": spec.get("mode", mode),
               "gamma": spec["gamma"], "lambda_ms": spec["lambda_ms"]}
        for f in rd.glob("rounds-*.jsonl"):
            df = pd.read_json(f, lines=True)
            if len(df):
                csi = pd.json_normalize(df.pop("csi")).add_prefix("csi_")
                rounds.append(pd.concat([df, csi], axis=1).assign(**tag))
        for f in rd.glob("requests-*.json"):
            obj = json.loads(f.read_text())
            requests.append(pd.DataFrame(obj["requests"]).assign(protocol=obj["summary"]["protocol"], **tag))
        for f in rd.glob("link-steps-*.csv"):
            df = pd.read_csv(f)
            if len(df):
                steps.append(df.assign(protocol=f.stem[len("link-steps-"):], **tag))
    for name, parts in (("rounds", rounds), ("requests", requests), ("link_steps", steps)):
        if parts:
            pd.concat(parts, ignore_index=True).to_parquet(out_dir / f"{name}.parquet")
    (out_dir / "meta.json").write_text(json.dumps({"mode": mode, "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                   "runs": sorted({p.parent.parent.name for p in
                                                                   out_dir.glob("*/rep*/spec.json")})}, indent=2) + "\n")
