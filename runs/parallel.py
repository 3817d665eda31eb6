"""Runs of an experiment in parallel: ``wisv run SPEC --jobs N`` on this machine, ``--ray
ADDRESS`` (or ``auto``) on an existing Ray cluster. We schedule nothing ourselves: every job
(one repetition of one run, :class:`runs.job.Job`) is one Ray task running
:func:`runs.job.execute_job`, the function a sequential run calls.

* **Where a task may run.** A simulated job asks for one CPU. An emulated job asks for the
  custom resource :data:`EMULATION_RESOURCE` (and no CPU): only nodes started with
  ``--resources '{"wisv_emulation": 1}'`` take it, one emulation per such node at a time, since
  an emulation owns its host's CPUs for timing. No such node in the cluster: refused up front.
* **Results come back to the driver.** A task writes its run directory into a temporary
  directory on its worker and returns the files (bytes); the driver writes them under its own
  experiment directory (into a hidden directory, then renamed, so a killed driver never leaves a
  run directory that looks complete). The driver's directory is then what a sequential run
  writes (``where.json`` says where each run ran).
* **Failures.** A job that fails on a worker (its exception, or its worker dying) is logged with
  its error, its partial files and ``error.txt`` are kept, and the other jobs continue;
  :class:`RunsFailed` at the end lists them. ``--resume`` submits only jobs without complete
  results (``summary.json``).
* **Progress.** One bar for the sweep: runs finished, running, failed.

``--jobs N`` starts a private Ray instance on this machine (``num_cpus=N``, one emulation slot)
for the duration of the sweep, so local and cluster runs share one code path: the same resource
requests, the same failure isolation (a worker that crashes fails its job only), the same bar.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from runs.job import Job, execute_job

log = logging.getLogger(__name__)
EMULATION_RESOURCE = "wisv_emulation"
_INCOMING = ".incoming-"  # hidden run directories being written by the driver


@dataclass
class JobOutcome:
    """What a task returns: the run directory's files (path relative to it → bytes), and either
    the summary ({protocol: summary dict}) or the error (a traceback); ``workdir``: where the
    worker wrote the run directory (error messages name files there)."""

    name: str
    host: str
    files: dict[str, bytes] = field(default_factory=dict)
    summary: dict | None = None
    error: str | None = None
    workdir: str = ""


@dataclass(frozen=True)
class JobFailure:
    """A job that failed: its name (``<run>/rep<k>``), the host, the error's last line and the
    whole traceback."""

    name: str
    host: str
    error: str
    detail: str


class RunsFailed(RuntimeError):
    """Some jobs of a parallel sweep failed (the others finished; their results are written)."""

    def __init__(self, failures: list[JobFailure]):
        self.failures = failures
        super().__init__(f"{len(failures)} run(s) failed: " + "; ".join(f"{f.name} on {f.host}: {f.error}"
                                                                       for f in failures))


def task_options(mode: str) -> dict:
    """The Ray resource request of a job: emulated ones take the host's one emulation slot
    (:data:`EMULATION_RESOURCE`) and no CPU, simulated ones one CPU. Never retried: a failure
    is reported, and ``--resume`` reruns it."""
    if mode == "emulate":
        return {"num_cpus": 0, "resources": {EMULATION_RESOURCE: 1}, "max_retries": 0}
    return {"num_cpus": 1, "max_retries": 0}


def read_run_dir(rd: Path) -> dict[str, bytes]:
    """Every file under ``rd`` as {path relative to ``rd`` (POSIX): bytes}."""
    if not rd.exists():
        return {}
    return {p.relative_to(rd).as_posix(): p.read_bytes() for p in sorted(rd.rglob("*")) if p.is_file()}


def run_job_in_tempdir(job: Job, mode: str) -> JobOutcome:
    """The body of one Ray task: :func:`execute_job` into a temporary directory on this worker;
    its files (partial ones too when it fails) go back to the driver."""
    extra: dict = {}
    try:
        import ray

        extra["ray_node_id"] = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - not inside Ray (tests call this directly)
        pass
    host = socket.gethostname()
    with tempfile.TemporaryDirectory(prefix="wisv-job-") as tmp:
        rd = Path(tmp) / "run"
        try:
            summary = execute_job(job, rd, mode, where_extra=extra)
            return JobOutcome(job.name, host, read_run_dir(rd), summary=summary, workdir=str(rd))
        except Exception:  # noqa: BLE001 - reported to the driver with its traceback
            return JobOutcome(job.name, host, read_run_dir(rd), error=traceback.format_exc(), workdir=str(rd))


def install_run_dir(files: dict[str, bytes], rd: Path) -> None:
    """Write a run directory's files as ``rd``, replacing what was there: into a hidden sibling
    first, then renamed, so ``rd`` is either the old directory or the whole new one."""
    tmp = rd.parent / f".{rd.name}{_INCOMING}{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        for rel, data in files.items():
            path = (tmp / rel).resolve()
            if not path.is_relative_to(tmp.resolve()):
                raise ValueError(f"a job returned a file outside its run directory: {rel!r}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if rd.exists():
            shutil.rmtree(rd)
        os.rename(tmp, rd)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_incoming(out_dir: Path) -> None:
    """Remove half-written hidden run directories a killed driver left in ``out_dir``."""
    for d in out_dir.glob(f"*/.rep*{_INCOMING}*"):
        shutil.rmtree(d, ignore_errors=True)


class SweepBar:
    """One progress bar for the whole sweep: runs finished (kept ones included), with running
    and failed counts; silent when ``enabled`` is False."""

    def __init__(self, total: int, kept: int, enabled: bool, desc: str):
        self.ok, self.failed, self.running = kept, 0, 0
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=kept, unit="run", desc=desc)
            self._postfix()

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"done {self.ok}, running {self.running}, failed {self.failed}")

    def set_running(self, n: int) -> None:
        """How many jobs are running now."""
        if n != self.running:
            self.running = n
            self._postfix()

    def finished(self, ok: bool) -> None:
        """One job finished (``ok``) or failed."""
        self.ok += ok
        self.failed += not ok
        if self.bar is not None:
            self.bar.update(1)
        self._postfix()

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()


@contextmanager
def ray_session(jobs: int | None, address: str | None) -> Iterator[None]:
    """Connected to Ray for the sweep: the cluster at ``address`` (``auto``: the one this
    machine belongs to), or with ``jobs`` a private local instance of ``jobs`` CPUs and one
    emulation slot; disconnected (the local instance stopped) afterwards."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--jobs and --ray need Ray: run scripts/install.sh (requirements.txt pins it)") from None

    common = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": False}
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(address="local", num_cpus=jobs, resources={EMULATION_RESOURCE: 1}, include_dashboard=False,
                 **common)
    try:
        yield
    finally:
        ray.shutdown()


def slots(mode: str) -> int:
    """How many jobs of ``mode`` the cluster runs at once (its CPUs, or its emulation slots);
    a RuntimeError saying how to add one when there are none."""
    import ray

    res = ray.cluster_resources()
    if mode == "emulate":
        n = int(res.get(EMULATION_RESOURCE, 0))
        if n < 1:
            raise RuntimeError(f"no node of the Ray cluster offers {EMULATION_RESOURCE!r}: start one on a host "
                               f"prepared by scripts/install.sh (root, Mininet) with `ray start --address … "
                               f"--resources '{{\"{EMULATION_RESOURCE}\": 1}}'`")
        return n
    n = int(res.get("CPU", 0))
    if n < 1:
        raise RuntimeError("the Ray cluster has no CPUs for simulated runs")
    return n


def _store(outcome: JobOutcome, job: Job, out_dir: Path, results: dict) -> JobFailure | None:
    """Write a finished job's files under ``out_dir``; its summary into ``results``, or its
    failure (``error.txt`` beside its partial files) returned."""
    rd = job.run_dir(out_dir)
    if outcome.error is None:
        install_run_dir(outcome.files, rd)
        results.setdefault(job.run.name, {})[job.rep] = outcome.summary
        return None
    error = outcome.error.replace(outcome.workdir, str(rd)) if outcome.workdir else outcome.error  # files now here
    files = {k: v for k, v in outcome.files.items() if k != "summary.json"}  # never read as complete
    install_run_dir({**files, "error.txt": error.encode()}, rd)
    last = error.strip().splitlines()[-1] if error.strip() else "unknown error"
    log.error("run %s failed on %s: %s (traceback in %s)", job.name, outcome.host, last, rd / "error.txt")
    return JobFailure(job.name, outcome.host, last, error)


def _outcome(ref, job: Job) -> JobOutcome:
    """The task's outcome, or one that carries the error Ray raised (the worker died, the node
    was lost, the task was cancelled)."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        return JobOutcome(job.name, "?", error=f"{type(e).__name__}: {e}")


def run_parallel(pending: list[Job], out_dir: Path, mode: str, results: dict, jobs: int | None = None,
                 address: str | None = None, progress: bool = True, kept: int = 0,
                 poll_s: float = 1.0) -> None:
    """Run ``pending`` as Ray tasks (see the module docstring) into ``out_dir``, filling
    ``results`` ({run: {rep: summary}}); ``kept`` complete runs count on the bar as done.
    Raises :class:`RunsFailed` after every job has finished when some failed."""
    if (jobs is None) == (address is None):
        raise ValueError("give exactly one of jobs (local parallelism) and address (a Ray cluster)")
    if jobs is not None and jobs < 1:
        raise ValueError("jobs must be >= 1")
    remove_incoming(out_dir)
    failures: list[JobFailure] = []
    bar = SweepBar(len(pending) + kept, kept, progress, f"{mode} runs")
    try:
        if pending:
            failures = _submit_and_collect(pending, out_dir, mode, results, jobs, address, bar, poll_s)
    finally:
        bar.close()
    if failures:
        raise RunsFailed(failures)


def _submit_and_collect(pending: list[Job], out_dir: Path, mode: str, results: dict, jobs: int | None,
                        address: str | None, bar: SweepBar, poll_s: float) -> list[JobFailure]:
    """Submit every pending job, then store each as it finishes; cancel what is left when
    interrupted."""
    failures: list[JobFailure] = []
    with ray_session(jobs, address):
        import ray

        capacity = slots(mode)
        task = ray.remote(run_job_in_tempdir).options(**task_options(mode))
        log.info("submitting %d run(s) to %s (%d at a time)", len(pending), address or f"{jobs} local CPU(s)",
                 capacity)
        refs = {task.remote(job, mode): job for job in pending}
        try:
            while refs:
                bar.set_running(min(len(refs), capacity))
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=poll_s)
                for ref in ready:
                    job = refs.pop(ref)
                    failure = _store(_outcome(ref, job), job, out_dir, results)
                    if failure:
                        failures.append(failure)
                    bar.set_running(min(len(refs), capacity))
                    bar.finished(failure is None)
        finally:
            for ref in refs:  # interrupted: what is left stops (an emulation cleans up on its way out)
                ray.cancel(ref)
    return failures
