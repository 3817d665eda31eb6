"""Benchmark: one simulated sweep run one after another, with ``--jobs N``, and with ``--ray`` on
a two-node Ray cluster started on this machine (a head and a worker, one CPU each, separate
resources): the wall time of each ``wisv run`` and whether the requests and rounds tables are
identical to the sequential run's (wall-clock columns aside). The sequential run is timed twice:
as it is, and with one torch thread (``OMP_NUM_THREADS=1``, what Ray gives each task), which
separates the gain of running jobs side by side from that of one thread per job.

The default sweep: γ ∈ {2, 4, 8} × seed ∈ {0, 1} × 2 repetitions × 2 protocols = 24 protocol
runs (12 jobs), 2 problems each. The cluster runs in a temporary directory of its own with its
own authentication token, and exactly its processes are stopped afterwards.
Last line: one JSON object.

Usage: python benchmarks/sweep_parallel.py [--problems 2] [--max-new-tokens 32] [--jobs 2] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).parent / "ray"
WALL_CLOCK_COLUMNS = ("run_id", "draft_pad_ms", "verify_pad_ms")  # a run's uuid; padding = profile - measured


def free_port() -> int:
    """A TCP port free on this machine now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_mentioning(text: str) -> list[int]:
    """Processes (not this one) whose command line mentions ``text``."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def stop_cluster(temp_dir: str, leaders: list[subprocess.Popen]) -> None:
    """Stop the ``ray start --block`` processes in ``leaders`` (SIGTERM stops their node), then
    anything still running from ``temp_dir``, by pid — never other Ray clusters."""
    for p in leaders:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in leaders:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # its own session: the node it started
            p.wait(timeout=30)
    deadline = time.monotonic() + 20
    while pids_mentioning(temp_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in pids_mentioning(temp_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _node_args() -> list[str]:
    """Flags of one node: blocking (its process is the node's lifetime), small object store,
    every port a free one (other Ray clusters may run on this machine)."""
    return ["--block", "--disable-usage-stats", "--object-store-memory=100000000",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]


def _wait_for(ready, leaders: list[subprocess.Popen], temp_dir: str, timeout_s: float = 120) -> None:
    """Wait until ``ready()``; a RuntimeError with the node logs when a ``ray start`` exits first."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if any(p.poll() is not None for p in leaders) or time.monotonic() > deadline:
            logs = "\n".join(f.read_text()[-2000:] for f in Path(temp_dir).glob("*.log"))
            raise RuntimeError(f"the local Ray cluster did not start:\n{logs}")
        time.sleep(0.5)


def driver_output(code: str, env: dict, timeout_s: float = 180) -> str:
    """Run ``code`` in a fresh interpreter with ``env`` added; its last stdout line."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO),
                       timeout=timeout_s, env={**os.environ, **env})
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    return r.stdout.strip().splitlines()[-1]


@contextmanager
def local_cluster(head_resources: dict | None = None, worker_resources: dict | None = None,
                  cpus_per_node: int = 1) -> Iterator[dict]:
    """A two-node Ray cluster on this machine (a head with ``head_only`` and ``head_resources``,
    a worker with ``worker_resources``): yields {address, env (what a driver sets: token
    authentication with this cluster's own token), head, worker (node ids)}; stopped after."""
    temp_dir = tempfile.mkdtemp(prefix="wisvray-", dir="/tmp")  # short: Ray's socket paths must stay short
    port = free_port()
    address = f"127.0.0.1:{port}"
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
    logs, leaders = [], []

    def start(args: list[str], log_name: str, resources: dict | None) -> None:
        f = open(Path(temp_dir) / log_name, "w")
        logs.append(f)
        res = ["--resources", json.dumps(resources)] if resources else []
        leaders.append(subprocess.Popen([str(RAY), "start", *args, f"--num-cpus={cpus_per_node}", *res, *_node_args()],
                                        stdout=f, stderr=subprocess.STDOUT, cwd=str(REPO),
                                        env={**os.environ, **auth}, start_new_session=True))

    try:
        start(["--head", f"--port={port}", f"--temp-dir={temp_dir}", "--include-dashboard=false",
               f"--dashboard-port={free_port()}"], "head.log", {"head_only": 1, **(head_resources or {})})
        _wait_for(lambda: list(Path(temp_dir).glob("session_*/logs/raylet.out")), leaders, temp_dir)
        start([f"--address={address}"], "worker.log", worker_resources)
        nodes = json.loads(driver_output(
            "import json, time, ray\n"
            f"ray.init(address={address!r}, log_to_driver=False)\n"
            "t = time.monotonic()\n"
            "while len([n for n in ray.nodes() if n['Alive']]) < 2 and time.monotonic() - t < 120:\n"
            "    time.sleep(0.5)\n"
            "print(json.dumps({('head' if 'head_only' in n['Resources'] else 'worker'): n['NodeID']\n"
            "                  for n in ray.nodes() if n['Alive']}))\n", auth))
        if set(nodes) != {"head", "worker"}:
            raise RuntimeError(f"the local Ray cluster has nodes {nodes}")
        yield {"address": address, "env": auth, "temp_dir": temp_dir, **nodes}
    finally:
        stop_cluster(temp_dir, leaders)
        for f in logs:
            f.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def tables(d: Path) -> dict[str, pd.DataFrame]:
    """The requests and rounds tables of experiment directory ``d``, rows in a fixed order,
    without wall-clock columns."""
    out = {}
    for t in ("requests", "rounds"):
        df = pd.read_parquet(d / f"{t}.parquet")
        df = df.drop(columns=[c for c in WALL_CLOCK_COLUMNS if c in df])
        keys = [c for c in ("run", "rep", "protocol", "request_id", "round") if c in df]
        out[t] = df.sort_values(keys).reset_index(drop=True)
    return out


def identical(a: Path, b: Path) -> bool:
    """True when the tables of ``a`` and ``b`` are identical (see :func:`tables`)."""
    ta, tb = tables(a), tables(b)
    return all(ta[t].equals(tb[t]) for t in ta)


def timed_run(spec: Path, out: Path, flags: list[str], env: dict | None = None) -> float:
    """Wall time of ``wisv run SPEC --simulate -o OUT FLAGS``, in s."""
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "wisv.cli", "run", str(spec), "--simulate", "-o", str(out), *flags],
                       capture_output=True, text=True, cwd=str(REPO), env={**os.environ, **(env or {})})
    if r.returncode:
        raise RuntimeError(f"wisv run {' '.join(flags)} failed:\n{r.stderr[-3000:]}")
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=2, help="problems per protocol and repetition")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="longest answer, tokens")
    ap.add_argument("--jobs", type=int, default=2, help="--jobs N of the local parallel run")
    ap.add_argument("--keep", help="keep the experiment directories here (default: a removed temporary one)")
    a = ap.parse_args()
    base = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="sweep-parallel-"))
    base.mkdir(parents=True, exist_ok=True)
    spec = base / "sweep.yaml"
    spec.write_text(f"name: bench\nprotocols: [vanilla, wisv-selective]\n"
                    f"task: {{problems: {a.problems}, max_new_tokens: {a.max_new_tokens}}}\nrepetitions: 2\n"
                    f"sweep: {{grid: {{gamma: [2, 4, 8], seed: [0, 1]}}}}\n")
    try:
        load_before = os.getloadavg()[0]
        wall = {"sequential": timed_run(spec, base / "seq", [])}
        print(f"sequential: {wall['sequential']:.1f} s", flush=True)
        wall["sequential_1_thread"] = timed_run(spec, base / "seq1", [], {"OMP_NUM_THREADS": "1"})
        print(f"sequential, OMP_NUM_THREADS=1 (as in each Ray worker): {wall['sequential_1_thread']:.1f} s", flush=True)
        wall[f"jobs{a.jobs}"] = timed_run(spec, base / "jobs", ["--jobs", str(a.jobs)])
        print(f"--jobs {a.jobs}: {wall[f'jobs{a.jobs}']:.1f} s", flush=True)
        t0 = time.monotonic()
        with local_cluster() as c:
            cluster_start_s = time.monotonic() - t0
            wall["ray_2_nodes"] = timed_run(spec, base / "ray", ["--ray", c["address"]], c["env"])
        print(f"--ray (2 nodes x 1 CPU; cluster start {cluster_start_s:.1f} s, not counted): "
              f"{wall['ray_2_nodes']:.1f} s", flush=True)
        same = {k: identical(base / "seq", base / d) for k, d in (("sequential_1_thread", "seq1"),
                                                                  (f"jobs{a.jobs}", "jobs"), ("ray_2_nodes", "ray"))}
        print(f"tables identical to the sequential run's: {same}")
        n_jobs = len(list((base / "seq").glob("*/rep*/summary.json")))
        print(json.dumps({"protocol_runs": 2 * n_jobs, "jobs": n_jobs, "problems": a.problems,
                          "wall_s": {k: round(v, 1) for k, v in wall.items()},
                          "speedup_vs_sequential": {k: round(wall["sequential"] / v, 2) for k, v in wall.items()},
                          "cluster_start_s": round(cluster_start_s, 1), "tables_identical": same,
                          "host_cpus": os.cpu_count(), "load_avg_1min_before": round(load_before, 2)}))
    finally:
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
