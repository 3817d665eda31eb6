"""The cell element on real packets: its own namespaces (one receiver, three senders), real UDP,
real NFQUEUE (root only). Tolerance 10 % as LENA's suites; every namespace is deleted on the way
out, also when a check fails."""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network emulation needs root")
TOL = 0.10
SIZE = 1000  # UDP payload bytes


@pytest.fixture(scope="module", autouse=True)
def _needs_nfqueue():
    try:
        import netfilterqueue  # noqa: F401
    except ImportError as e:
        pytest.skip(f"python NetfilterQueue missing: {e}")
    if shutil.which("iptables") is None:
        pytest.skip("iptables missing")


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def _element(cell, rates, scheduler="round-robin", queue_num=5):
    from topologies.cell_element import CellElement, iptables_rule

    el = CellElement.start(cell.exec_prefix(cell.receiver), queue_num, [cell.sender_ip(i) for i in range(cell.n_senders)],
                           rates, scheduler)
    try:
        cell.run_in(cell.receiver, "iptables", "-t", "mangle", "-A", *iptables_rule(queue_num, "-s 10.77.0.0/16").split())
    except Exception:
        el.close()
        raise
    return el


def _drain(el, timeout_s: float = 10.0) -> None:
    """Wait until the element holds no packet (bounded: AssertionError after ``timeout_s`` s)."""
    import time

    deadline = time.monotonic() + timeout_s
    while sum(el.stats()["queued_packets"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not sum(el.stats()["queued_packets"]), "the cell element did not drain"


def test_round_robin_three_senders_equal_shares_then_a_lone_sender_gets_the_cell():
    from topologies.cell_netns import scratch_cell, udp_load

    cell_bps = 8e6  # each device's channel rate, IP bytes
    with scratch_cell(3) as cell:
        el = _element(cell, [cell_bps] * 3)
        try:
            both = udp_load(cell, [0, 1, 2], rate_bps=5e6, size=SIZE, duration_s=3.0)  # 15 Mbit/s offered
            s = el.stats()
            _drain(el)  # the backlog the three left behind would share the cell with the lone sender
            lone = udp_load(cell, [2], rate_bps=12e6, size=SIZE, duration_s=3.0)
            s2 = el.stats()
        finally:
            el.close()
        tag = cell.tag
    assert tag not in _namespaces()
    thr = both.throughput_bps
    np.testing.assert_allclose(thr, cell_bps / 3, rtol=TOL, err_msg=str(thr))
    np.testing.assert_allclose(thr / thr.sum(), 1 / 3, rtol=TOL)
    assert lone.throughput_bps[0] == pytest.approx(cell_bps, rel=TOL)
    # The element saw the same: equal shares while all three were backlogged, no TTI skipped.
    np.testing.assert_allclose(np.array(s["share_sum"]) / sum(s["share_sum"]), 1 / 3, rtol=TOL)
    assert s2["skipped_ttis"] == 0 and s["dropped"] == [0, 0, 0]


def test_proportional_fair_unequal_channels_equal_time_throughput_follows_rate():
    from topologies.cell_netns import scratch_cell, udp_load

    rates = [3e6, 9e6]
    with scratch_cell(2) as cell:
        el = _element(cell, rates, scheduler="proportional-fair")
        try:
            r = udp_load(cell, [0, 1], rate_bps=10e6, size=SIZE, duration_s=3.0)
            s = el.stats()
        finally:
            el.close()
    # Equal time shares: each device gets half of its own rate.
    np.testing.assert_allclose(r.throughput_bps, np.array(rates) / 2, rtol=TOL, err_msg=str(r.throughput_bps))
    shares = np.array(s["share_sum"]) / s["ttis"]
    assert shares[0] == pytest.approx(shares[1], rel=TOL)


def test_rates_follow_the_control_line():
    from topologies.cell_netns import scratch_cell, udp_load

    with scratch_cell(1) as cell:
        el = _element(cell, [4e6])
        try:
            before = udp_load(cell, [0], rate_bps=12e6, size=SIZE, duration_s=2.0)
            el.set_rates([8e6])
            after = udp_load(cell, [0], rate_bps=12e6, size=SIZE, duration_s=2.0)
            assert el.stats()["updates"] == 1
        finally:
            el.close()
    assert before.throughput_bps[0] == pytest.approx(4e6, rel=TOL)
    assert after.throughput_bps[0] == pytest.approx(8e6, rel=TOL)


def test_namespaces_are_deleted_after_a_failure():
    from topologies.cell_netns import scratch_cell

    with pytest.raises(RuntimeError, match="boom"):
        with scratch_cell(2) as cell:
            assert cell.receiver in _namespaces()
            raise RuntimeError("boom")
    assert cell.tag not in _namespaces()


def test_element_dies_with_its_orchestrator():
    """Killed with SIGKILL, the orchestrator takes the element with it (parent-death signal),
    even while another process keeps the element's stdin open, so no EOF reaches it."""
    import signal
    import sys
    import time
    from pathlib import Path

    from topologies.cell_netns import scratch_cell

    repo = Path(__file__).resolve().parent.parent
    with scratch_cell(1) as cell:
        script = (f"import subprocess, sys, time\nsys.path.insert(0, {str(repo)!r})\n"
                  "from topologies.cell_element import CellElement\n"
                  f"el = CellElement.start({cell.exec_prefix(cell.receiver)!r}, 5, ['10.77.0.2'], [1e6])\n"
                  "keeper = subprocess.Popen(['sleep', '30'], pass_fds=(el.proc.stdin.fileno(),))\n"
                  "print(el.proc.pid, keeper.pid, flush=True)\ntime.sleep(60)\n")
        orch = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=str(repo))
        pids: list[int] = []
        try:
            pids = [int(x) for x in orch.stdout.readline().split()]
            os.kill(orch.pid, signal.SIGKILL)
            orch.wait(timeout=5)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _alive(pids[0]):
                time.sleep(0.05)
            assert not _alive(pids[0]), "the element outlived its orchestrator"
        finally:
            if orch.poll() is None:
                orch.kill()
                orch.wait(timeout=5)
            for pid in pids:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
