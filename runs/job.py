"""One job of an experiment: one repetition of one resolved run, written into one run directory:

    <run dir>/  spec.json (resolved), config.json (the run config handed to the nodes or the
                simulator), where.json (host, CPU, compute mode, backend), trace.parquet (as
                replayed; trace-d<k>.parquet per device when the spec gives device_traces),
                rounds-*.jsonl, requests-*.json, link-steps-*.csv (emulated), summary.json

:func:`execute_job` is what a sequential experiment (:mod:`runs.experiment`), a local process
or a Ray worker (:mod:`runs.parallel`) runs; it imports neither of them. The settings a mode
needs (the devices with their configs and traces, the replay options, the packet capture) are
resolved here once and handed on as values.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from nodes.config import RunConfig
from runs.devices import DeviceSetup, resolve_devices
from runs.spec import RunSpec
from topologies.replayer import ReplayOptions


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


def replay_options(run: RunSpec) -> ReplayOptions:
    """The spec's ``replay`` section (slice in ms, time scale) as the replayer's options."""
    r = run.values["replay"]
    return ReplayOptions(start_ms=r["start_ms"], end_ms=r["end_ms"], scale=r["time_scale"])


def prepared_traces(run: RunSpec, rep: int, out: Path, replay: ReplayOptions) -> list[Path]:
    """One trace file per device of repetition ``rep`` as replayed: ``replay`` applied (slice,
    time scale), then rotated to the repetition's offset (its own channel realisation), written
    into the run directory: ``trace.parquet`` shared by every device, or per the spec's
    ``topology.device_traces`` device k's own ``trace-d<k>.parquet`` — its own file, or the
    run's trace rotated to k/N of its duration (looped, so every device replays a whole period)."""
    from topologies.replayer import prepare
    from traces.format import read_trace, write_trace
    from traces.ops import loop_trace, slice_trace

    def rotated(t, offset_ms: float):
        return slice_trace(loop_trace(t, 2 * t.duration_ms), offset_ms, offset_ms + t.duration_ms) if offset_ms > 0 else t

    def prepared(path: Path):
        t = prepare(read_trace(path), replay)
        return rotated(t, run.trace_offset_ms(rep, t.duration_ms))

    chosen, n = run.device_traces(), run.topology().n_devices
    if chosen.files:
        return [write_trace(prepared(f), out / f"trace-d{k}.parquet") for k, f in enumerate(chosen.files)]
    shared = prepared(run.trace_path(rep))
    if chosen.rotate:
        return [write_trace(rotated(shared, chosen.offset_ms(k, n, shared.duration_ms)), out / f"trace-d{k}.parquet")
                for k in range(n)]
    return [write_trace(shared, out / "trace.parquet")] * n


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


@dataclass(frozen=True)
class PreparedJob:
    """What a job runs with, resolved once for either mode: the run config and the devices
    (each its config and trace file as replayed)."""

    config: RunConfig
    devices: list[DeviceSetup[Path]]


def prepare_job(job: Job, rd: Path, mode: str, where_extra: dict | None = None) -> PreparedJob:
    """Create run directory ``rd`` with spec.json, config.json, where.json and the traces as
    replayed, and resolve the devices (:func:`runs.devices.resolve_devices`)."""
    run, rep = job.run, job.rep
    rd.mkdir(parents=True)
    cfg = run.run_config(rep, uuid.uuid4().hex)
    (rd / "spec.json").write_text(json.dumps({**run.values, "repetition": rep, "mode": mode, "source": run.source,
                                              "swept": run.swept}, indent=2) + "\n")
    cfg.write(rd / "config.json")
    where = {**where_it_runs(mode, cfg, run.values["link"]["backend"]), **(where_extra or {})}
    (rd / "where.json").write_text(json.dumps(where, indent=2) + "\n")
    return PreparedJob(cfg, resolve_devices(cfg, prepared_traces(run, rep, rd, replay_options(run))))


def execute_job(job: Job, rd: Path, mode: str, progress: bool = False, models: dict | None = None,
                where_extra: dict | None = None) -> dict:
    """Run one job into the new run directory ``rd`` (see :func:`prepare_job`; the logs, then
    summary.json last); returns {protocol: summary dict}. ``models`` caches loaded model pairs
    by (drafter, target), and the oracle's labels by pair and task, across jobs of one process;
    ``progress`` shows an emulation's own progress bar; ``where_extra`` is added to where.json
    (e.g. the Ray node)."""
    prep = prepare_job(job, rd, mode, where_extra)
    cfg, run = prep.config, job.run
    if mode == "simulate":
        from runs.simulate import simulate
        from traces.format import read_trace

        pair, oracle = _models_of(cfg, run.protocols, {} if models is None else models)
        res = simulate(pair, [read_trace(d.trace) for d in prep.devices], cfg, run.protocols, rd, oracle)
    else:
        from runs.emulated import EmulationSetup, run_emulated

        v = run.values
        traces = [d.trace for d in prep.devices]
        setup = EmulationSetup(traces[0], run.topology(), v["link"]["backend"], v["link"]["queue_packets"],
                               traces if run.device_traces().per_device else None, progress=progress, capture=run.capture())
        res = run_emulated(cfg, run.protocols, setup, rd)
    return {k: s.__dict__ for k, s in res.items()}


def _models_of(cfg: RunConfig, protocols: list[str], models: dict):
    """The model pair of ``cfg`` and, when a protocol needs one, the oracle of its task, loaded
    once per process into the cache ``models``."""
    from nodes.models import load_models

    key = cfg.models  # folders, devices and dtypes: one loaded pair per distinct placement
    if key not in models:
        models[key] = load_models(key)
    pair = models[key]
    oracle = models.get(("oracle", key, cfg.task))
    if oracle is None and "oracle" in protocols:
        from nodes.oracle import AnswerOracle

        oracle = models[("oracle", key, cfg.task)] = AnswerOracle(pair.target, pair.tokenizer, pair.eos_token_id,
                                                                  cfg.task)
    return pair, oracle
