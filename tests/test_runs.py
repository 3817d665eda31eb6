"""An emulated experiment end to end: edge and device processes in Mininet hosts (root)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="emulation needs root")
REPO = Path(__file__).resolve().parent.parent


def _tag_of(device_proc) -> str:
    """The network tag of a run, from its device's counted interface (``d<tag><k>-eth0``)."""
    args = list(device_proc.args)
    return args[args.index("--count-iface") + 1][1:5]


def _net_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _namespaces_of(pids) -> set[str]:
    """The network namespaces of ``pids``, except ours (the root one)."""
    return {ns for ns in (_net_namespace(int(p)) for p in pids) if ns} - {_net_namespace(os.getpid())}


def leftovers(tag: str, run_dir: Path, namespaces: set[str] = frozenset()) -> list[str]:
    """Processes of one run still alive (other runs, e.g. other tests at the same time, do not
    count): its host shells, anything naming its run directory, anything in a namespace that
    holds one of its interfaces or in one of ``namespaces`` (recorded while it ran)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            args = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ifaces = Path(f"/proc/{d}/net/dev").read_text()
            state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if (f"mininet:d{tag}" in args or f"mininet:e{tag}" in args or str(run_dir) in args
                or f"{tag}0-eth" in ifaces or f"e{tag}-eth" in ifaces or _net_namespace(int(d)) in namespaces):
            out.append(f"{d}: {args[:160]}")
    return out


def _wait_for(pred, timeout_s: float, step_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step_s)
    return pred()


def test_emulated_run_of_two_protocols(tmp_path):
    from nodes.config import RunConfig, TaskConfig
    from runs.emulated import EmulationSetup, run_emulated
    from topologies.probe import probe_backends
    from traces.synthetic import step_trace
    from traces.format import write_trace

    if not any(probe_backends().reasons[b] is None for b in probe_backends().reasons):
        pytest.skip("no shaping backend")
    trace = write_trace(step_trace(100.0, 10.0, [5e6, 20e6], [15.0], [0.0], seed=3), tmp_path / "t.csv")
    res = run_emulated(RunConfig(run_id="t", task=TaskConfig(problems=3)), ["vanilla", "wisv-selective"],
                       EmulationSetup(trace), tmp_path / "run")
    run = tmp_path / "run"
    assert json.loads((run / "status.json").read_text())["status"] == "done"
    for p in ("vanilla", "wisv-selective"):
        assert res[p].failed == 0 and res[p].problems == 3
        rounds = [json.loads(x) for x in open(run / f"rounds-{p}.jsonl")]
        assert len(rounds) == res[p].rounds
        # every round crossed the emulated link: at least both one-way delays of 15 ms
        assert all(r["link_ms"] >= 29.0 for r in rounds), min(r["link_ms"] for r in rounds)
        # the edge's own times joined with the device's (one clock for every Mininet host)
        assert all(r["edge_ms"] >= r["verify_ms"] and r["t_start"] <= r["t_edge_arrival"] <= r["t_edge_reply"] <= r["t_end"]
                   for r in rounds)
        assert all(r["csi_rtt_ms"] == 30.0 and r["csi_rate_up_mbps"] in (5.0, 20.0) for r in rounds)
        assert (run / f"link-steps-{p}.csv").exists()
    # nothing of the run is left behind
    assert "mininet:" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def test_killed_device_fails_the_run_keeps_rounds_and_leaves_nothing(tmp_path):
    from nodes.config import RunConfig, TaskConfig
    from runs.emulated import EmulationSetup, RunFailed, run_emulated
    from topologies.net import REGISTRY_DIR
    from traces.format import write_trace
    from traces.synthetic import step_trace

    trace = write_trace(step_trace(100.0, 10.0, [10e6], [10.0], [0.0], seed=5), tmp_path / "t.csv")
    run = tmp_path / "run"
    seen = {}

    def kill_after_rounds(protocol, proc):
        seen["tag"] = _tag_of(proc)

        def watch():
            log = run / f"rounds-{protocol}.jsonl"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if log.exists() and len(log.read_text().splitlines()) >= 5:
                    seen["ns"] = _namespaces_of([proc.pid])
                    proc.send_signal(signal.SIGKILL)
                    return
                time.sleep(0.05)
        threading.Thread(target=watch, daemon=True).start()

    with pytest.raises(RunFailed, match="device exited"):
        run_emulated(RunConfig(task=TaskConfig(problems=20)), ["vanilla"], EmulationSetup(trace), run,
                     on_device_start=kill_after_rounds)
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    rounds = [json.loads(x) for x in open(run / "rounds-vanilla.jsonl")]
    assert len(rounds) >= 5 and all(r["wire_up_bytes"] > 0 for r in rounds)
    tag = seen["tag"]
    _wait_for(lambda: not leftovers(tag, run, seen["ns"]), 5.0)
    assert not leftovers(tag, run, seen["ns"])
    assert not (REGISTRY_DIR / f"net-{tag}.json").exists()
    assert tag not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def test_kill_9_of_wisv_run_leaves_nothing_after_cleanup(tmp_path):
    """`kill -9` of `wisv run` mid-run: its edge, device, delay elements and tc batches die
    with it (no orphan keeps a namespace, veth, HTB or NFQUEUE rule alive), and `wisv link
    cleanup` removes the rest and says what it removed."""
    registry, out = tmp_path / "registry", tmp_path / "out"
    env = {**os.environ, "WISV_REGISTRY_DIR": str(registry)}
    run = subprocess.Popen([sys.executable, "-m", "wisv.cli", "run", "--problems", "20", "--protocols", "vanilla",
                            "-o", str(out)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        rounds = _wait_for(lambda: [f for f in out.glob("*/rep*/rounds-*.jsonl") if f.stat().st_size > 0], 180.0, 0.2)
        assert rounds, f"no round in 180 s: {run.stderr.read().decode()[-2000:] if run.poll() is not None else ''}"
        rec = json.loads(next(registry.glob("net-*.json")).read_text())
        tag = rec["tag"]
        namespaces = _namespaces_of(hp[0] for hp in rec["host_pids"])
        before = leftovers(tag, out, namespaces)
        assert any("node edge" in p for p in before) and any("node device" in p for p in before), before
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    try:
        # the kernel kills every node process with its parent (PR_SET_PDEATHSIG): no orphan
        _wait_for(lambda: not leftovers(tag, out, namespaces), 5.0)
        orphans = leftovers(tag, out, namespaces)
        r = subprocess.run([sys.executable, "-m", "wisv.cli", "link", "cleanup"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        _wait_for(lambda: not leftovers(tag, out, namespaces), 5.0)
        assert not leftovers(tag, out, namespaces), r.stdout
        assert not orphans, f"orphans of the killed run before cleanup: {orphans}"
    finally:  # whatever this test's run left, also when it fails
        for line in leftovers(tag, out, namespaces):
            try:
                os.kill(int(line.split(":")[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert f"run {tag}" in r.stdout and "nothing left behind" not in r.stdout, r.stdout
    assert tag not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not list(registry.glob("net-*.json"))


def test_a_killed_edge_fails_the_run_within_seconds_naming_the_edge(tmp_path):
    """The orchestrator watches the edge: killed mid-run, the run fails in a few seconds (not
    ~20 s per remaining problem) with an error that names the edge and its log."""
    from runs.api import RunFailed, Testbed
    from traces.format import write_trace
    from traces.synthetic import step_trace

    trace = write_trace(step_trace(100.0, 10.0, [10e6], [10.0], [0.0], seed=5), tmp_path / "t.csv")
    run = tmp_path / "run"
    killed = {}
    with Testbed(run_dir=run) as tb:
        tb.attach_trace(trace)
        tb.start_edge()
        edge = tb.edge

        def kill_after_rounds(protocol, proc):
            def watch():
                log = run / f"rounds-{protocol}.jsonl"
                if _wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 3, 120.0, 0.05):
                    edge.send_signal(signal.SIGKILL)
                    killed["at"] = time.monotonic()
            threading.Thread(target=watch, daemon=True).start()

        with pytest.raises(RunFailed) as e:
            tb.run_protocol("vanilla", problems=10, on_device_start=kill_after_rounds)
        failed_after_s = time.monotonic() - killed["at"]
    msg = str(e.value)
    assert msg.startswith("vanilla: the edge") and str(run / "edge.log") in msg, msg
    assert failed_after_s < 5.0, failed_after_s
    assert (run / "rounds-vanilla.jsonl").exists() and (run / "meta.json").exists()


def _wisv_run(out: Path, *args: str, interrupt_when=None, interrupt: bool = True,
              timeout_s: float = 300.0) -> subprocess.CompletedProcess:
    """`wisv run` in a subprocess; once ``interrupt_when()`` turns true, Ctrl-C is sent (if
    ``interrupt``)."""
    # SIGINT as at a terminal (a background job inherits it ignored)
    p = subprocess.Popen([sys.executable, "-m", "wisv.cli", "run", *args, "-o", str(out)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if interrupt_when is not None:
        _wait_for(lambda: p.poll() is not None or interrupt_when(), timeout_s, 0.05)
        if interrupt and p.poll() is None:
            p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=timeout_s)
    return subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)


def test_a_refused_session_fails_before_the_first_round_with_the_edge_s_reason(tmp_path):
    """γ beyond the edge's limit (the spec refuses it first; the API does not): the run fails
    before any round with the edge's reason, and the tables of what finished are written."""
    from nodes.config import RunConfig, TaskConfig
    from runs.emulated import EmulationSetup, RunFailed, run_emulated
    from traces.format import write_trace
    from traces.synthetic import step_trace

    trace = write_trace(step_trace(100.0, 10.0, [10e6], [10.0], [0.0], seed=5), tmp_path / "t.csv")
    run = tmp_path / "run"
    with pytest.raises(RunFailed, match="gamma 40 outside") as e:
        run_emulated(RunConfig(gamma=40, task=TaskConfig(problems=2)), ["vanilla"], EmulationSetup(trace), run)
    assert "device-vanilla.log" in str(e.value)
    assert (run / "meta.json").exists() and json.loads((run / "status.json").read_text())["status"] == "failed"
    assert (run / "link-steps-vanilla.csv").read_text().startswith("step,device,")


def _node_pids(out: Path, kind: str) -> list[int]:
    """Pids of ``wisv node <kind>`` processes of the run writing into ``out``."""
    pids = []
    for d in os.listdir("/proc"):
        try:
            args = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"node {kind}" in args and str(out) in args:
            pids.append(int(d))
    return pids


def test_a_device_killed_before_the_first_round_reports_it_not_an_empty_csv(tmp_path):
    """`wisv run` whose device dies while loading: exit 2 with the device named, never "No
    columns to parse from file"; meta.json is written."""
    out = tmp_path / "out"

    def kill_device() -> bool:
        pids = _node_pids(out, "device")
        for p in pids:
            os.kill(p, signal.SIGKILL)
        return bool(pids)

    r = _wisv_run(out, "--problems", "2", "--protocols", "vanilla", interrupt_when=kill_device, interrupt=False)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "No columns" not in r.stderr, r.stderr[-3000:]
    assert "device 0 did not start (exited with -9 (SIGKILL))" in last, r.stderr[-3000:]
    assert (out / "meta.json").exists()
    assert json.loads(next(out.glob("*/rep0/status.json")).read_text())["status"] == "failed"


def test_ctrl_c_before_the_first_round_exits_130_and_writes_the_tables(tmp_path):
    out = tmp_path / "out"
    r = _wisv_run(out, "--problems", "2", "--protocols", "vanilla",
                  interrupt_when=lambda: any(out.glob("*/rep0/device-*.log")))
    assert r.returncode == 130 and "No columns" not in r.stderr, r.stderr[-3000:]
    assert (out / "meta.json").exists()
    assert json.loads(next(out.glob("*/rep0/status.json")).read_text())["status"] == "interrupted"


def test_emulation_and_simulation_agree(tmp_path):
    from runs.agreement import check_agreement

    r = check_agreement(tmp_path, {"name": "agree", "protocols": ["vanilla"], "task": {"problems": 4}})
    v = r["protocols"]["vanilla"]
    assert v["rounds_identical"]  # exact greedy: the same decisions in both
    assert abs(v["round_wall_minus_predicted_ms_median"]) < 3.0  # an emulated round costs what the trace says
    assert abs(v["latency_rel_diff"]) < 0.35  # the benchmark states 25 % on an idle machine


def test_star_experiment_two_devices_with_cross_traffic(tmp_path):
    from runs.experiment import run_experiment
    from runs.spec import load_spec

    other = tmp_path / "slow.csv"
    from traces.format import write_trace
    from traces.synthetic import step_trace

    write_trace(step_trace(100.0, 10.0, [2e6], [40.0], [0.0]), other)
    runs = load_spec(None, {"name": "star", "protocols": ["vanilla", "wisv-full"], "task": {"problems": 2},
                            "topology": {"kind": "star", "n_devices": 2, "cross_traffic_bps": 2e6,
                                         "backhaul_rate_bps": 100e6,
                                         "device_traces": {"files": ["traces/builtin/pedestrian_3p5ghz_60s.csv",
                                                                     str(other)]}}})
    res = run_experiment(runs, tmp_path, "emulate", progress=False)
    s = res["star"][0]
    assert s["vanilla"]["problems"] == 4 and s["vanilla"]["failed"] == 0  # 2 devices x 2 problems
    import pandas as pd

    rounds = pd.read_parquet(tmp_path / "rounds.parquet")
    # two device processes per protocol, named by index: the same ids for every protocol
    assert rounds.groupby("protocol")["device_id"].agg(set).map(sorted).tolist() == [["dev0", "dev1"]] * 2
    assert set(pd.read_parquet(tmp_path / "requests.parquet")["protocol"]) == {"vanilla", "wisv-full"}
    assert (rounds["csi_rtt_ms"] == 80.0).any() and (rounds["csi_rtt_ms"] < 80.0).any()  # each device its own trace


def test_the_spec_s_capture_reaches_the_emulation(tmp_path):
    """The spec's ``capture`` section is handed to the emulation as a value (no longer read back
    from spec.json): an experiment with capture on writes the pcaps of its device link."""
    from runs.experiment import run_experiment
    from runs.spec import load_spec

    runs = load_spec(None, {"name": "cap", "protocols": ["vanilla"], "task": {"problems": 1, "max_new_tokens": 16},
                            "capture": {"enabled": True, "snaplen_bytes": 128}})
    run_experiment(runs, tmp_path, "emulate", progress=False)
    rd = tmp_path / "cap" / "rep0"
    manifest = json.loads((rd / "pcap" / "capture.json").read_text())
    assert manifest["captures"] and list((rd / "pcap").glob("*.pcap"))
    assert {c["snaplen_bytes"] for c in manifest["captures"]} == {128}  # the spec's own setting
