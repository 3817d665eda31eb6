"""Run the resolved runs of an experiment spec, emulated or simulated, into one directory:

    OUT/<run name>/rep<k>/   spec.json (resolved), config.json (the run config handed to the nodes
                             or the simulator), where.json (host, CPU, compute mode, backend),
                             trace.parquet (as replayed), rounds-*.jsonl,
                             requests-*.json, link-steps-*.csv (emulated), summary.json
    OUT/rounds.parquet, OUT/requests.parquet, OUT/link_steps.parquet, OUT/meta.json

The same spec runs in both modes, so their results can be compared (``wisv report``). Each
(run, repetition) is one :class:`Job` run by :func:`execute_job`: one after another here, or in
parallel on this machine or a Ray cluster (:mod:`runs.parallel`), with the same results.
"""
from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from nodes.config import RunConfig
from runs.spec import RunSpec
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


def cpu_model() -> str:
    """The CPU model name this host reports in /proc/cpuinfo (``platform.processor()``
    elsewhere, "unknown" when neither says)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def where_it_runs(mode: str, cfg: RunConfig, backend_requested: str) -> dict:
    """Where a run ran (``where.json``): host name, CPU model and count, kernel, the compute
    mode of each node (its profile's name, or ``measured``) and, emulated, the shaping backend
    the probe chooses for ``backend_requested`` (or why none could be chosen)."""
    import os
    import platform
    import socket

    c = cfg.compute
    out = {"host": socket.gethostname(), "cpu_model": cpu_model(), "cpus": os.cpu_count(),
           "kernel": platform.release(), "mode": mode,
           "compute": {node: (p.name if p.enabled else "measured") for node, p in (("device", c.device),
                                                                                  ("edge", c.edge))}}
    if mode == "emulate":
        from topologies.probe import probe_backends

        try:
            out["backend"] = probe_backends().choose(backend_requested)
        except (RuntimeError, ValueError) as e:  # the run itself fails with this error; record it
            out["backend"] = None
            out["backend_error"] = str(e)
    return out


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
    shutil.rmtree(out_dir)


@dataclass(frozen=True)
class Job:
    """One repetition of one resolved run: the unit of work that runs anywhere (here, in a
    local process or on a Ray worker) and writes one run directory."""

    run: RunSpec
    rep: int

    @property
    def name(self) -> str:
        """``<run name>/rep<k>``: the run directory relative to the experiment directory."""
        return f"{self.run.name}/rep{self.rep}"

    def run_dir(self, out_dir: Path) -> Path:
        """Where this job's results go in experiment directory ``out_dir``."""
        return out_dir / self.run.name / f"rep{self.rep}"


def expand_jobs(runs: list[RunSpec]) -> list[Job]:
    """Every (run, repetition) of an experiment, in the order a sequential run takes them."""
    return [Job(r, k) for r in runs for k in range(r.repetitions)]


def execute_job(job: Job, rd: Path, mode: str, progress: bool = False, models: dict | None = None,
                where_extra: dict | None = None) -> dict:
    """Run one job into the new run directory ``rd`` (spec.json, config.json, where.json, the
    trace as replayed, the logs, summary.json last); returns {protocol: summary dict}.
    ``models`` caches loaded model pairs by (drafter, target), and the oracle's labels by pair
    and task, across jobs of one process;
    ``progress`` shows an emulation's own progress bar; ``where_extra`` is added to where.json
    (e.g. the Ray node)."""
    run, rep = job.run, job.rep
    rd.mkdir(parents=True)
    cfg = run.run_config(rep, uuid.uuid4().hex)
    (rd / "spec.json").write_text(json.dumps({**run.values, "repetition": rep, "mode": mode, "source": run.source,
                                              "swept": run.swept}, indent=2) + "\n")
    cfg.write(rd / "config.json")
    where = {**where_it_runs(mode, cfg, run.values["link"]["backend"]), **(where_extra or {})}
    (rd / "where.json").write_text(json.dumps(where, indent=2) + "\n")
    trace = _prepared_trace(run, rep, rd)
    if mode == "simulate":
        from nodes.models import load_models
        from runs.simulate import simulate
        from traces.format import read_trace

        models = {} if models is None else models
        key = cfg.models  # folders, devices and dtypes: one loaded pair per distinct placement
        if key not in models:
            models[key] = load_models(key)
        pair = models[key]
        oracle = models.get(("oracle", key, cfg.task))
        if oracle is None and "oracle" in run.protocols:
            from nodes.oracle import AnswerOracle

            oracle = models[("oracle", key, cfg.task)] = AnswerOracle(pair.target, pair.tokenizer, pair.eos_token_id,
                                                                      cfg.task)
        res = simulate(pair, read_trace(trace), cfg, run.protocols, rd, oracle)
    else:
        from runs.emulated import EmulationSetup, run_emulated

        v = run.values
        setup = EmulationSetup(trace, run.topology(), v["link"]["backend"], v["link"]["queue_packets"],
                               _device_traces(run, trace, rd), progress=progress)
        res = run_emulated(cfg, run.protocols, setup, rd)
    return {k: s.__dict__ for k, s in res.items()}


def run_experiment(runs: list[RunSpec], out_dir: Path, mode: str = "emulate", progress: bool = True,
                   resume: bool = False, jobs: int | None = None, ray_address: str | None = None) -> dict:
    """Run everything; returns {run name: {rep: {protocol: summary dict}}}. With ``resume``, runs
    whose results are complete are kept and skipped. One after another (the default), a failed
    run stops the experiment (its partial logs stay) after the tables of what finished are
    written. With ``jobs`` (runs in parallel on this machine) or ``ray_address`` (an existing
    Ray cluster, or ``auto``) see :func:`runs.parallel.run_parallel`: a failed run is reported
    and the rest continue (:class:`runs.parallel.RunsFailed` at the end)."""
    if mode not in ("emulate", "simulate"):
        raise ValueError("mode must be emulate or simulate")
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    pending = []
    for job in expand_jobs(runs):
        rd = job.run_dir(out_dir)
        if resume and is_complete(rd):
            results.setdefault(job.run.name, {})[job.rep] = json.loads((rd / "summary.json").read_text())
        else:
            pending.append(job)
    kept = sum(len(v) for v in results.values())
    try:
        if jobs is None and ray_address is None:
            _run_sequential(pending, out_dir, mode, progress, kept, results)
        else:
            from runs.parallel import run_parallel

            run_parallel(pending, out_dir, mode, results, jobs=jobs, address=ray_address, progress=progress,
                         kept=kept)
    finally:
        collect_tables(out_dir, mode)
    return results


def _run_sequential(pending: list[Job], out_dir: Path, mode: str, progress: bool, kept: int, results: dict) -> None:
    """The jobs one after another in this process (``results`` filled in); the first failure
    stops them."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pending) + kept, initial=kept, unit="run", desc=f"{mode} runs")
    models: dict = {}
    try:
        for job in pending:
            rd = job.run_dir(out_dir)
            if rd.exists():  # an incomplete earlier attempt: start this run afresh
                shutil.rmtree(rd)
            results.setdefault(job.run.name, {})[job.rep] = execute_job(job, rd, mode, progress, models)
            if bar:
                bar.update(1)
    finally:
        if bar:
            bar.close()


def _device_traces(run: RunSpec, trace: Path, out: Path) -> list[Path] | None:
    """Each device's trace file as replayed (spec ``topology.device_traces``), or None when
    every device replays ``trace`` (the run's prepared trace) from its start: its own files
    (replay slicing and time scale applied), or ``trace`` rotated to k/N of its duration for
    device k (looped, so every device replays a whole period)."""
    chosen = run.device_traces()
    if not chosen.per_device:
        return None
    from topologies.replayer import ReplayOptions, prepare
    from traces.format import read_trace, write_trace
    from traces.ops import loop_trace, slice_trace

    r = run.values["replay"]
    opts = ReplayOptions(r["start_ms"], r["end_ms"], None, r["time_scale"])
    if chosen.files:
        traces = [prepare(read_trace(f), opts) for f in chosen.files]
    else:
        t, n = read_trace(trace), run.topology().n_devices
        traces = []
        for k in range(n):
            off = chosen.offset_ms(k, n, t.duration_ms)
            traces.append(slice_trace(loop_trace(t, 2 * t.duration_ms), off, off + t.duration_ms) if off > 0 else t)
    return [write_trace(t, out / f"trace-d{k}.parquet") for k, t in enumerate(traces)]