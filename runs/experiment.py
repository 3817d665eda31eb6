"""Run the resolved runs of an experiment spec, emulated or simulated, into one directory:

    OUT/<run name>/rep<k>/   one run directory per job (:mod:`runs.job` lists its files)
    OUT/rounds.parquet, OUT/requests.parquet, OUT/link_steps.parquet, OUT/meta.json

The same spec runs in both modes, with the same devices (every device of the topology, each its
own config and trace: :mod:`runs.devices`), so their results can be compared (``wisv report``).
Each (run, repetition) is one :class:`runs.job.Job` run by :func:`runs.job.execute_job`: one
after another here, or in parallel on this machine or a Ray cluster (:mod:`runs.parallel`),
with the same results.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from runs.job import Job, execute_job, expand_jobs
from runs.spec import RunSpec
from runs.tables import collect_tables

log = logging.getLogger(__name__)


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
