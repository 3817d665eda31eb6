"""Gather the logs of run directories into the Parquet tables ``wisv report`` reads.

A run directory holds, per protocol (and per device when there are several: ``<protocol>-d<k>``),
``rounds-*.jsonl`` (one flat line per round), ``requests-*.json`` (per-request records and the
run config they ran under) and, emulated, ``link-steps-*.csv``. ``rounds.parquet``,
``requests.parquet`` and ``link_steps.parquet`` are those rows with the columns ``run``,
``rep``, ``mode``, ``gamma`` and ``lambda_ms`` added (README: output schema).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

TABLES = ("rounds", "requests", "link_steps")


def run_dir_frames(rd: Path, run: str, rep: int, mode: str) -> dict[str, list[pd.DataFrame]]:
    """The rows of one run directory, tagged (see the module docstring)."""
    out: dict[str, list[pd.DataFrame]] = {t: [] for t in TABLES}
    tags: dict[str, dict] = {}
    for f in sorted(rd.glob("requests-*.json")):
        obj = json.loads(f.read_text())
        cfg = obj.get("config", {})
        tag = {"run": run, "rep": rep, "mode": mode, "gamma": cfg.get("gamma"), "lambda_ms": cfg.get("lambda_ms")}
        tags[f.stem[len("requests-"):]] = tag
        if obj["requests"]:
            out["requests"].append(pd.DataFrame(obj["requests"]).assign(protocol=obj["protocol"], **tag))
    for f in sorted(rd.glob("rounds-*.jsonl")):
        df = pd.read_json(f, lines=True) if f.stat().st_size else pd.DataFrame()
        if len(df):
            suffix = f.stem[len("rounds-"):]
            out["rounds"].append(df.assign(**tags.get(suffix, {"run": run, "rep": rep, "mode": mode})))
    for f in sorted(rd.glob("link-steps-*.csv")):
        df = pd.read_csv(f) if f.stat().st_size else pd.DataFrame()
        if len(df):
            out["link_steps"].append(df.assign(protocol=f.stem[len("link-steps-"):], run=run, rep=rep, mode=mode))
    return out


def write_tables(out_dir: Path, frames: dict[str, list[pd.DataFrame]], meta: dict) -> None:
    """Write the gathered tables and ``meta.json`` into ``out_dir``."""
    for name, parts in frames.items():
        if parts:
            pd.concat(parts, ignore_index=True).to_parquet(out_dir / f"{name}.parquet")
    (out_dir / "meta.json").write_text(json.dumps({**meta, "written": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2)
                                       + "\n")


def collect_tables(out_dir: Path, mode: str) -> None:
    """Gather every run of an experiment directory (``<run>/rep<k>/``) into its tables."""
    frames: dict[str, list[pd.DataFrame]] = {t: [] for t in TABLES}
    runs = set()
    for spec_file in sorted(out_dir.glob("*/rep*/spec.json")):
        rd = spec_file.parent
        spec = json.loads(spec_file.read_text())
        runs.add(rd.parent.name)
        for name, parts in run_dir_frames(rd, rd.parent.name, int(rd.name[3:]), spec.get("mode", mode)).items():
            frames[name] += parts
    write_tables(out_dir, frames, {"mode": mode, "runs": sorted(runs)})


def write_run_tables(rd: Path, mode: str = "emulate") -> None:
    """Gather one run directory (the Python API's) into its own tables."""
    write_tables(rd, run_dir_frames(rd, rd.name, 0, mode), {"mode": mode, "runs": [rd.name]})
