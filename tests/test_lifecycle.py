"""Processes die with their orchestrator and are known by pid and start time; partial run
directories are read as far as they go; rate 0 is an outage. No root needed here (the emulated
end-to-end checks are in test_runs.py and test_topologies.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from procs.lifecycle import ORPHANED_EXIT, PARENT_ENV, die_with_orchestrator, is_same_process, start_ticks

REPO = Path(__file__).resolve().parent.parent


def _gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if start_ticks(pid) is None or "Z" in _state(pid):
            return True
        time.sleep(0.05)
    return False


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _orchestrator(child_argv: list[str], prefix: bool, env: bool) -> subprocess.Popen:
    """A python 'orchestrator' that starts ``child_argv`` (behind pdeathsig_prefix if
    ``prefix``; with the parent's pid in its environment if ``env``), prints the child's pid and
    sleeps."""
    script = textwrap.dedent(f"""
        import subprocess, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from procs.lifecycle import child_environment, pdeathsig_prefix
        argv = [*pdeathsig_prefix(), *{child_argv!r}] if {prefix!r} else {child_argv!r}
        p = subprocess.Popen(argv, env=child_environment() if {env!r} else None)
        print(p.pid, flush=True)
        time.sleep(120)
    """)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("child", [["sleep", "60"], [sys.executable, "-c", "import sys; sys.path.insert(0, %r); "
                                                     "from procs.lifecycle import die_with_orchestrator as d; d(); "
                                                     "import time; time.sleep(60)" % str(REPO)]],
                         ids=["binary", "python-node"])
@pytest.mark.parametrize("owned", [True, False])
def test_a_child_dies_with_its_killed_orchestrator(child, owned):
    """An owned child of a SIGKILLed orchestrator dies at once — a binary through setpriv, a
    Python node by arming it itself; a plain one is orphaned (what a killed `wisv run` used to
    leave)."""
    from procs.lifecycle import pdeathsig_prefix

    binary = child[0] == "sleep"
    if owned and binary and not pdeathsig_prefix():
        pytest.skip("no setpriv --pdeathsig here")
    orch = _orchestrator(child, prefix=owned and binary, env=owned)
    pid = int(orch.stdout.readline())
    try:
        time.sleep(0.5)  # the Python node arms it itself once started
        orch.send_signal(signal.SIGKILL)
        orch.wait()
        assert _gone(pid, 3.0) is owned
    finally:
        if not _gone(pid, 0.0):
            os.kill(pid, signal.SIGKILL)


def test_a_node_arms_it_itself_and_exits_if_the_orchestrator_is_gone():
    """die_with_orchestrator: no-op without the variable; with it, a dead orchestrator makes the
    node exit at once (the window between fork and the node's own start)."""
    env = {}
    assert die_with_orchestrator(env) is False
    code = ("import sys; sys.path.insert(0, %r); from procs.lifecycle import die_with_orchestrator; "
            "print(die_with_orchestrator(), flush=True)" % str(REPO))
    ok = subprocess.run([sys.executable, "-c", code], env={**os.environ, PARENT_ENV: str(os.getpid())},
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip() == "True"
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = subprocess.run([sys.executable, "-c", code], env={**os.environ, PARENT_ENV: str(dead.pid)},
                            capture_output=True, text=True)
    assert orphan.returncode == ORPHANED_EXIT


def test_start_ticks_tell_a_reused_pid_apart():
    p = subprocess.Popen(["sleep", "30"])
    try:
        t = start_ticks(p.pid)
        assert t is not None and is_same_process(p.pid, t)
        assert not is_same_process(p.pid, t + 1)  # the same pid, another process
    finally:
        p.kill()
        p.wait()
    assert start_ticks(p.pid) is None or not is_same_process(p.pid, t)


def test_cleanup_kills_registered_processes_of_a_dead_run_only(tmp_path):
    """A registry entry whose owner is dead: its process (right start time) is killed and
    reported; one whose start time does not match (a reused pid) is left alone; a live owner's
    entry is not touched."""
    from topologies.net import cleanup_stale

    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    live = subprocess.Popen(["sleep", "60"], start_new_session=True)
    dead_owner = subprocess.Popen(["true"])
    dead_owner.wait()
    try:
        (tmp_path / "net-dead.json").write_text(json.dumps({
            "owner_pid": dead_owner.pid, "owner_ticks": 1, "tag": "dead", "root_ifaces": [], "host_pids": [],
            "namespaces": {}, "procs": [
                {"pid": victim.pid, "ticks": start_ticks(victim.pid), "role": "the edge", "host": "edead"},
                {"pid": bystander.pid, "ticks": start_ticks(bystander.pid) + 1, "role": "device 0", "host": "ddead0"}]}))
        (tmp_path / "net-live.json").write_text(json.dumps({
            "owner_pid": os.getpid(), "owner_ticks": start_ticks(os.getpid()), "tag": "live", "root_ifaces": [],
            "host_pids": [], "procs": [{"pid": live.pid, "ticks": start_ticks(live.pid), "role": "x", "host": "y"}]}))
        removed = cleanup_stale(tmp_path)
        assert victim.wait(timeout=5) == -signal.SIGKILL
        assert any(f"the edge (pid {victim.pid})" in r for r in removed)
        assert any("registry net-dead.json of run dead" in r for r in removed), removed
        assert bystander.poll() is None and live.poll() is None
        assert not (tmp_path / "net-dead.json").exists() and (tmp_path / "net-live.json").exists()
    finally:
        for p in (victim, bystander, live):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_link_cleanup_reports_what_it_removed(tmp_path):
    """`wisv link cleanup` names what it removed (it used to say "nothing left behind")."""
    dead_owner = subprocess.Popen(["true"])
    dead_owner.wait()
    (tmp_path / "net-abcd.json").write_text(json.dumps({"owner_pid": dead_owner.pid, "tag": "abcd", "root_ifaces": [],
                                                        "host_pids": [], "procs": []}))
    r = subprocess.run([sys.executable, "-m", "wisv.cli", "link", "cleanup"], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "WISV_REGISTRY_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert "run abcd" in r.stdout and "nothing left behind" not in r.stdout


# ----------------------------------------------------------------------------- partial run directories
def test_empty_link_steps_and_a_half_written_round_are_read(tmp_path):
    """What a run killed before (or during) its first round leaves: the tables are written, no
    "No columns to parse from file"."""
    from runs.tables import run_dir_frames, write_run_tables
    from topologies.replayer import STEP_COLUMNS, StepLog

    StepLog().frame().to_csv(tmp_path / "link-steps-vanilla.csv", index=False)
    assert (tmp_path / "link-steps-vanilla.csv").read_text().strip() == ",".join(STEP_COLUMNS)
    (tmp_path / "link-steps-wisv-full.csv").write_text("\n")  # what older runs wrote
    good = {"request_id": "r0", "round": 0, "protocol": "vanilla", "device_id": "dev0", "t_start": 1.0, "t_end": 1.1}
    (tmp_path / "rounds-vanilla.jsonl").write_text(json.dumps(good) + "\n" + '{"request_id": "r0", "rou')
    (tmp_path / "requests-vanilla.json").write_text('{"protocol": "vani')  # killed while writing
    frames = run_dir_frames(tmp_path, "run", 0, "emulate")
    assert len(frames["rounds"]) == 1 and len(frames["rounds"][0]) == 1
    assert frames["link_steps"] == [] and frames["requests"] == []
    write_run_tables(tmp_path)
    assert json.loads((tmp_path / "meta.json").read_text())["runs"] == [tmp_path.name]
    assert len(pd.read_parquet(tmp_path / "rounds.parquet")) == 1


def test_worst_csi_during_a_round_from_the_applied_link_steps():
    """A round that spans an outage: csi_* says what was in force at its start, csi_worst_*
    the outage."""
    from runs.tables import worst_csi_columns

    steps = pd.DataFrame({"applied_epoch_s": [100.0, 100.1, 100.2, 100.3],
                          "rate_bps_up": [10e6, 0.0, 10e6, 5e6], "rate_bps_down": [20e6] * 4,
                          "delay_ms_up": [10.0, 10.0, 40.0, 10.0], "delay_ms_down": [10.0] * 4,
                          "loss_up": [0.0, 0.0, 0.0, 0.1], "loss_down": [0.0] * 4})
    rounds = pd.DataFrame({"t_start": [100.05, 100.21, 100.25, 99.0], "t_end": [100.15, 100.24, 100.5, 99.5]})
    w = worst_csi_columns(rounds, steps, "applied_epoch_s")
    assert w["csi_worst_rate_up_mbps"].tolist() == [0.0, 10.0, 5.0, 10.0]
    assert w["csi_worst_delay_up_ms"].tolist() == [10.0, 40.0, 40.0, 10.0]
    assert w["csi_worst_loss_up"].tolist() == [0.0, 0.0, 0.1, 0.0]
    assert w["csi_worst_rate_down_mbps"].tolist() == [20.0] * 4


def test_worst_csi_on_a_looping_trace():
    """Simulated rounds run on the trace's virtual clock, which loops: a window past the end
    wraps to the start; one longer than the trace sees all of it."""
    from runs.tables import worst_csi_columns

    steps = pd.DataFrame({"t_s": [0.0, 1.0, 2.0], "rate_bps_up": [0.0, 10e6, 20e6], "rate_bps_down": [1e6] * 3,
                          "delay_ms_up": [5.0, 6.0, 7.0], "delay_ms_down": [1.0] * 3, "loss_up": [0.0] * 3,
                          "loss_down": [0.0] * 3})
    rounds = pd.DataFrame({"t_start": [1.2, 2.5, 4.1, 0.5], "t_end": [1.8, 3.5, 4.9, 10.0]})
    w = worst_csi_columns(rounds, steps, "t_s", period_s=3.0)
    assert w["csi_worst_rate_up_mbps"].tolist() == [10.0, 0.0, 10.0, 0.0]
    assert w["csi_worst_delay_up_ms"].tolist() == [6.0, 7.0, 6.0, 7.0]


# ----------------------------------------------------------------------------- rate 0 is an outage
class _FakeBatch:
    def __init__(self):
        self.lines: list[str] = []

    def send(self, line: str) -> None:
        self.lines.append(line)


def test_rate_zero_drops_every_packet_until_the_rate_returns():
    """A trace's rate 0 becomes loss 1.0 on the link (not HTB's 8 kbit/s floor); the loss the
    trace asks for comes back with the rate."""
    from topologies.shapers import LinkEnd, LinkShaper

    class Recording(LinkShaper):
        backend = "recording"

        @classmethod
        def probe(cls, netns, ifname):
            return None

        def setup(self, rate_bps, delay_ms, loss):
            self.state = (rate_bps, delay_ms, loss)
            self.applied = []

        def _set_delay_loss(self, delay_ms, loss):
            self.applied.append((delay_ms, loss))

    host = type("H", (), {"name": "h", "pid": 1})()
    s = Recording(LinkEnd(host, "h-eth0"), LinkEnd(host, "h-eth1"), _FakeBatch())
    s.setup(10e6, 10.0, 0.01)
    s.set(0.0, 10.0, 0.01)
    s.set(0.0, 10.0, 0.01)  # unchanged: nothing sent
    s.set(5e6, 10.0, 0.01)
    assert s.applied == [(10.0, 1.0), (10.0, 0.01)]


def test_the_simulator_waits_out_an_outage_like_tcp(tmp_path):
    """Rate 0 in a trace: a message sent in the outage waits for the link to return, pays one
    retransmission timeout, then its transfer (as TCP over the emulated link, which drops
    everything meanwhile) — no ZeroDivisionError, no "forever"."""
    from channel_models.csi import RTO_MS
    from runs.simulate import AnalyticLink
    from traces.format import read_trace, write_trace
    from traces.synthetic import step_trace

    trace = step_trace(100.0, 1.0, [0.0, 10e6], [10.0], [0.0], seed=1)
    trace = read_trace(write_trace(trace, tmp_path / "outage.csv"))
    assert (trace.data["rate_bps_up"] == 0).any()
    link = AnalyticLink(trace)
    t0 = float(trace.data["t_ms"].iloc[0])
    i = next(k for k, r in enumerate(trace.data["rate_bps_up"]) if r == 0)
    t = float(trace.data["t_ms"].iloc[i]) - t0
    back = next(float(x) - t0 for x, r in zip(trace.data["t_ms"].iloc[i:], trace.data["rate_bps_up"].iloc[i:]) if r > 0)
    ms = link.transfer_ms(t, 100, "up", expected=True)
    assert ms == pytest.approx(back - t + RTO_MS + link.transfer_ms(back, 100, "up", expected=True))