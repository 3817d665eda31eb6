"""Run the resolved runs of an experiment spec, emulated or simulated, into one directory:

    OUT/<run name>/rep<k>/   spec.json (resolved), config.json (the run config handed to the nodes
                             or the simulator), trace.parquet (as replayed), rounds-*.jsonl,
                             requests-*.json, link-steps-*.csv (emulated), summary.json
    OUT/rounds.parquet, OUT/requests.parquet, OUT/link_steps.parquet, OUT/meta.json

The same spec runs in both modes, so their results can be compared (``wisv report``).
"""
from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

from runs.spec import RunSpec, resolve_path
from runs.tables import collect_tables

log = logging.getLogger(__name__)


def _prepared_trace(run: RunSpec, rep: int, out: Path) -> Path:
    """The trace of repetition ``rep`` as replayed: slice and time-scale applied, then rotated to
    the repetition's offset (its own channel realisation), written into the run directory."""
    from topologies.replayer import ReplayOptions, prepare
    from traces.format import read_trace, write_trace
    from traces.ops import loop_trace, slice_trace

    r = run.values["replay"]
    t = prepare(read_trace(run.trace_path(rep)), ReplayOptions(r["start_ms"], r["end_ms"], None, r["time_scale"]))
    offset = run.trace_offset_ms(rep, t.duration_ms)
    if offset > 0:
        t = slice_trace(loop_trace(t, 2 * t.duration_ms), offset, offset + t.duration_ms)
    return write_trace(t, out / "trace.parquet")


def is_complete(rd: Path) -> bool:
    """True when a run directory holds the results of every protocol it ran (``summary.json``
    is written last)."""
    return (rd / "summary.json").exists()


def check_output_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix new runs into a non-empty directory unless asked: ``resume`` keeps the
    complete runs there, ``overwrite`` removes what an earlier experiment wrote there."""
    if not out_dir.exists() or not any(out_dir.iterdir()) or resume:
        return
    ours = (out_dir / "meta.json").exists() or any(out_dir.glob("*/rep*/spec.json"))
    if not overwrite:
        raise RuntimeError(f"{out_dir} is not empty: pass --resume to continue the runs there, --overwrite to "
                           f"replace them, or another -o")
    if not ours:
        raise RuntimeError(f"{out_dir} holds no experiment; --overwrite only replaces experiment directories")
    import shutil

    shutil.rmtree(out_dir)


def run_experiment(runs: list[RunSpec], out_dir: Path, mode: str = "emulate", progress: bool = True,
                   resume: bool = False) -> dict:
    """Run everything; returns {run name: {rep: {protocol: summary dict}}}. With ``resume``, runs
    whose results are complete are kept and skipped. A failed run stops the experiment (its
    partial logs stay) after the tables of what finished are written."""
    if mode not in ("emulate", "simulate"):
        raise ValueError("mode must be emulate or simulate")
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    jobs = [(r, k) for r in runs for k in range(r.repetitions)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="run", desc=f"{mode} runs")
    pair = None
    try:
        for run, rep in jobs:
            rd = out_dir / run.name / f"rep{rep}"
            if resume and is_complete(rd):
                results.setdefault(run.name, {})[rep] = json.loads((rd / "summary.json").read_text())
                if bar:
                    bar.update(1)
                continue
            if rd.exists():  # an incomplete earlier attempt: start this run afresh
                import shutil

                shutil.rmtree(rd)
            rd.mkdir(parents=True)
            cfg = run.run_config(rep, uuid.uuid4().hex)
            (rd / "spec.json").write_text(json.dumps({**run.values, "repetition": rep, "mode": mode, "source": run.source,
                                                      "swept": run.swept}, indent=2) + "\n")
            cfg.write(rd / "config.json")
            trace = _prepared_trace(run, rep, rd)
            if mode == "simulate":
                from nodes.models import load_pair
                from runs.simulate import simulate
                from traces.format import read_trace

                pair = pair or load_pair(cfg.models.drafter, cfg.models.target)
                res = simulate(pair, read_trace(trace), cfg, run.protocols, rd)
            else:
                from runs.emulated import EmulationSetup, run_emulated

                v = run.values
                setup = EmulationSetup(trace, run.topology(), v["link"]["backend"], v["link"]["queue_packets"],
                                       _device_traces(run, rd), progress=progress)
                res = run_emulated(cfg, run.protocols, setup, rd)
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

    r = run.values["replay"]
    return [write_trace(prepare(read_trace(resolve_path(f, run.source)), ReplayOptions(r["start_ms"], r["end_ms"], None,
                                                                                  r["time_scale"])),
                        out / f"trace-d{k}.parquet") for k, f in enumerate(files)]
