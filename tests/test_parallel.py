"""Sweeps in parallel (``wisv run --jobs N``) and on a Ray cluster (``--ray ADDRESS``): the same
tables as a sequential run, resumable after a killed driver, failures reported while the rest
continue, emulated runs only on nodes with the emulation resource, mixed hosts warned about.

The Ray cluster here is two nodes on this machine (a head with one CPU and the emulation
resource, a worker with one CPU and no emulation resource), each a ``ray start --block`` process
of its own, in a temporary directory of its own; the fixture stops exactly those processes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.sweep_parallel import RAY, driver_output, local_cluster, pids_mentioning, tables  # noqa: E402

SPEC = ("name: par\nprotocols: [vanilla, wisv-selective]\ntask: {problems: 1, max_new_tokens: 16}\n"
        "repetitions: 2\nsweep: {grid: {gamma: [2, 4]}}\n")
pytestmark = pytest.mark.skipif(not RAY.exists(), reason="ray is not installed (scripts/install.sh)")


def _wisv(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wisv.cli", *args], capture_output=True, text=True, cwd=str(REPO),
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def cluster():
    """A two-node Ray cluster on this machine: the head has the emulation resource, the worker
    not (see :func:`benchmarks.sweep_parallel.local_cluster`); exactly its processes stopped."""
    with local_cluster(head_resources={"wisv_emulation": 1}) as c:
        yield c
    assert not pids_mentioning(c["temp_dir"])


def _run_files(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.glob("*/rep*/*")}


def test_jobs_and_ray_give_the_sequential_tables(tmp_path, cluster):
    """A 4-job simulated sweep run one after another, with --jobs 2 and with --ray on the
    two-node cluster: identical requests and rounds tables (wall-clock columns aside), the same
    files in every run directory, and each run's where.json says where it ran (both nodes)."""
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    dirs = {k: tmp_path / k for k in ("seq", "jobs", "ray")}
    flags = {"seq": [], "jobs": ["--jobs", "2"], "ray": ["--ray", cluster["address"]]}
    for k, d in dirs.items():
        r = _wisv("run", str(spec), "--simulate", "-o", str(d), *flags[k], env=cluster["env"])
        assert r.returncode == 0, (k, r.stderr[-3000:])
    want = tables(dirs["seq"])
    for k in ("jobs", "ray"):
        got = tables(dirs[k])
        for t in want:
            pd.testing.assert_frame_equal(got[t], want[t], check_exact=True, obj=f"{k} {t}")
        assert _run_files(dirs[k]) == _run_files(dirs["seq"])
    where = [json.loads(p.read_text()) for p in sorted(dirs["ray"].glob("*/rep*/where.json"))]
    assert len(where) == 4 and all(w["mode"] == "simulate" and w["cpu_model"] and w["host"] for w in where)
    assert {w["ray_node_id"] for w in where} == {cluster["head"], cluster["worker"]}
    assert all(w["compute"] == {"device": "jetson-agx-orin/llama-3.2-1b", "edge": "a40/llama-3.1-8b"} for w in where)


def test_emulated_jobs_go_only_to_the_node_with_the_emulation_resource(cluster):
    """Tasks with an emulated job's resource request all run on the head (the only node with
    ``wisv_emulation``), never on the worker, while plain tasks use the worker too."""
    got = json.loads(driver_output(
        "import json, time, ray\n"
        "from runs.parallel import task_options\n"
        f"ray.init(address={cluster['address']!r}, log_to_driver=False)\n"
        "def node(_):\n"
        "    time.sleep(1.0)\n"
        "    return ray.get_runtime_context().get_node_id()\n"
        "emu = ray.remote(node).options(**task_options('emulate'))\n"
        "sim = ray.remote(node).options(**task_options('simulate'))\n"
        "print(json.dumps({'emulate': ray.get([emu.remote(i) for i in range(4)]),\n"
        "                  'simulate': ray.get([sim.remote(i) for i in range(4)])}))\n", cluster["env"]))
    assert set(got["emulate"]) == {cluster["head"]}
    assert cluster["worker"] in got["simulate"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mn"), reason="emulation needs root and Mininet")
def test_an_emulated_run_with_ray_runs_on_the_emulation_node(tmp_path, cluster):
    """A one-problem emulated run submitted with --ray runs on the head (the worker lacks the
    resource); its results come back to the driver's directory with where.json and the backend."""
    spec = tmp_path / "e.yaml"
    spec.write_text("name: emu\nprotocols: [vanilla]\ntask: {problems: 1, max_new_tokens: 16}\n")
    r = _wisv("run", str(spec), "-o", str(tmp_path / "E"), "--ray", cluster["address"], env=cluster["env"])
    assert r.returncode == 0, r.stderr[-3000:]
    rd = tmp_path / "E" / "emu" / "rep0"
    where = json.loads((rd / "where.json").read_text())
    assert where["ray_node_id"] == cluster["head"] and where["mode"] == "emulate" and where["backend"]
    assert (rd / "summary.json").exists() and (tmp_path / "E" / "requests.parquet").exists()


def test_a_killed_driver_resumes_only_the_missing_runs(tmp_path):
    """SIGKILL the driver of a 6-job --jobs 2 sweep after two runs completed; --resume then
    submits only the others, leaves the complete ones untouched, and the tables cover all six.
    The private Ray instance of the killed driver goes with it."""
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.replace("gamma: [2, 4]", "gamma: [2, 4, 8]"))
    out = tmp_path / "K"
    ray_tmp = tempfile.mkdtemp(prefix="wisvk-", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        p = subprocess.Popen([sys.executable, "-m", "wisv.cli", "run", str(spec), "--simulate", "-o", str(out),
                              "--jobs", "2"], cwd=str(REPO), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 300
        while len(list(out.glob("*/rep*/summary.json"))) < 2 and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        p.send_signal(signal.SIGKILL)
        p.wait()
        done = {f.parent: f.stat().st_mtime_ns for f in out.glob("*/rep*/summary.json")}
        assert 2 <= len(done) < 6, done
        time.sleep(0.05)
        r = _wisv("run", str(spec), "--simulate", "-o", str(out), "--jobs", "2", "--resume", env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"submitting {6 - len(done)} run(s)" in r.stderr
        after = {f.parent: f.stat().st_mtime_ns for f in out.glob("*/rep*/summary.json")}
        assert len(after) == 6 and all(after[d] == t for d, t in done.items())  # kept, not rerun
        assert not list(out.glob("*/.rep*"))  # no half-written directory left
        assert len(pd.read_parquet(out / "requests.parquet")) == 6 * 2  # 6 jobs x 2 protocols x 1 problem
    finally:
        deadline = time.monotonic() + 30
        while pids_mentioning(ray_tmp) and time.monotonic() < deadline:
            time.sleep(0.5)
        leftover = pids_mentioning(ray_tmp)
        for pid in leftover:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not leftover, "the killed driver's Ray instance outlived it"


def test_a_failing_run_is_reported_and_the_rest_continue(tmp_path):
    """Two jobs of four (one run's repetitions) fail on their worker: RunsFailed names them with
    their error, the other two are complete, the failed ones keep error.txt and no summary.json;
    --resume reruns only them."""
    from runs.experiment import run_experiment
    from runs.parallel import RunsFailed
    from runs.spec import load_spec

    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    runs = load_spec(spec)
    runs[1].values = {**runs[1].values, "trace": {**runs[1].values["trace"], "file": "/nonexistent/trace.csv"}}
    with pytest.raises(RunsFailed) as e:
        run_experiment(runs, tmp_path / "F", "simulate", progress=False, jobs=2)
    assert sorted(f.name for f in e.value.failures) == ["par-gamma=4/rep0", "par-gamma=4/rep1"]
    assert all("nonexistent" in f.detail for f in e.value.failures)
    bad = tmp_path / "F" / "par-gamma=4"
    assert all((bad / f"rep{k}" / "error.txt").exists() and not (bad / f"rep{k}" / "summary.json").exists()
               for k in (0, 1))
    good = {f: f.stat().st_mtime_ns for f in (tmp_path / "F").glob("par-gamma=2/rep*/summary.json")}
    assert len(good) == 2
    res = run_experiment(load_spec(spec), tmp_path / "F", "simulate", progress=False, resume=True, jobs=2)
    assert set(res) == {"par-gamma=2", "par-gamma=4"} and all(len(v) == 2 for v in res.values())
    assert all(f.stat().st_mtime_ns == t for f, t in good.items())
    assert not list(bad.glob("rep*/error.txt"))


def test_no_emulation_node_is_refused_up_front(monkeypatch):
    """A cluster without the emulation resource gets no emulated job (it would wait forever)."""
    import ray

    from runs.parallel import slots

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0})
    with pytest.raises(RuntimeError, match="wisv_emulation"):
        slots("emulate")
    assert slots("simulate") == 8


def test_report_warns_when_emulated_runs_ran_on_different_hosts(tmp_path):
    """Emulated runs of one comparison on two CPU models: one warning naming both; the same
    host kind, or simulated runs, none."""
    from runs.report import mixed_host_warnings

    def where(run: str, rep: int, **w) -> None:
        d = tmp_path / "X" / run / f"rep{rep}"
        d.mkdir(parents=True)
        (d / "where.json").write_text(json.dumps({"mode": "emulate", "cpus": 16, "backend": "netem",
                                                  "compute": {"device": "a", "edge": "b"}, **w}))

    where("r", 0, cpu_model="AMD EPYC 7763", host="a")
    where("r", 1, cpu_model="AMD EPYC 7763", host="b")
    assert mixed_host_warnings([tmp_path / "X"]) == []
    where("s", 0, cpu_model="Intel Xeon Gold 6338", host="c")
    w = mixed_host_warnings([tmp_path / "X"])
    assert len(w) == 1 and "AMD EPYC 7763" in w[0] and "Intel Xeon Gold 6338" in w[0]
    where("t", 0, cpu_model="Other", host="d", mode="simulate")
    assert len(mixed_host_warnings([tmp_path / "X"])) == 1
