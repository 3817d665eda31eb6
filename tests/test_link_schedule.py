"""One link schedule (traces/schedule.py) for the replayer, the device's CSI report, the
simulator, the tables and the capture accounting; the applied step published to the device;
rate 0 is an outage from import to report (issue 21)."""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from channel_models.csi import MIN_RATE_BPS
from traces.format import Trace
from traces.link_state import LinkStateReader, LinkStateWriter
from traces.schedule import LinkSchedule, row_in_force
from traces.synthetic import step_trace

REPO = Path(__file__).resolve().parent.parent


def _trace(rates_up: list[float], step_ms: float = 100.0, rates_down: list[float] | None = None) -> Trace:
    n = len(rates_up)
    down = rates_down or rates_up
    return Trace(pd.DataFrame({"t_ms": np.arange(n) * step_ms, "rate_bps_up": rates_up, "delay_ms_up": 10.0 + np.arange(n),
                               "loss_up": 0.0, "rate_bps_down": down, "delay_ms_down": 5.0, "loss_down": 0.0}),
                 {"step_ms": step_ms})


def test_no_other_sorted_time_lookup_in_the_sources():
    """"Which row is in force at t" has one implementation: no searchsorted/bisect outside
    traces/schedule.py (channel_models, below traces, maps SNR to CQI thresholds with one)."""
    allowed = {"traces/schedule.py", "channel_models/cqi.py"}
    found = []
    for p in sorted(REPO.rglob("*.py")):
        rel = p.relative_to(REPO).as_posix()
        if rel.split("/")[0] in ("tests", ".venv", "build") or rel in allowed or "/." in "/" + rel:
            continue
        text = p.read_text(encoding="utf-8", errors="replace")
        if re.search(r"searchsorted|\bbisect\b", text):
            found.append(rel)
    assert found == []
    cqi = (REPO / "channel_models/cqi.py").read_text()
    assert cqi.count("searchsorted") == 1 and "threshold_db" in cqi  # SNR thresholds, not time


def test_row_in_force_and_looping():
    s = LinkSchedule.from_trace(_trace([1e6, 2e6, 3e6]))
    assert s.period_ms == 300.0
    assert [s.row_at(t) for t in (0.0, 99.9, 100.0, 299.0, 300.0, 450.0, -1.0)] == [0, 0, 1, 2, 0, 1, 2]
    assert list(s.row_at(np.array([0.0, 150.0, 650.0]))) == [0, 1, 0]
    assert s.csi_at(250.0).rate_up_mbps == 3.0 and s.csi_at(250.0).delay_up_ms == 12.0
    once = LinkSchedule.from_trace(_trace([1e6, 2e6, 3e6]), loop=False)
    assert once.row_at(450.0) == 2 and once.row_at(-1.0) == -1 and np.isnan(once.value_at("rate_bps_up", -1.0))
    assert row_in_force(np.array([1.0, 2.0]), 0.5) == -1
    # steps: lap after lap, numbered on, cut at the length asked
    assert list(s.steps(700.0)) == [(0, 0.0, 0), (1, 100.0, 1), (2, 200.0, 2), (3, 300.0, 0), (4, 400.0, 1),
                                    (5, 500.0, 2), (6, 600.0, 0)]
    assert list(once.steps(150.0)) == [(0, 0.0, 0), (1, 100.0, 1)]
    # time scale: as traces.ops.time_scale, the same rows twice as long
    from traces.ops import time_scale
    slow = LinkSchedule.from_trace(_trace([1e6, 2e6, 3e6]), scale=2.0)
    assert slow.period_ms == 600.0 and slow.row_at(250.0) == 1
    assert all(slow.row_at(x) == LinkSchedule.from_trace(time_scale(_trace([1e6, 2e6, 3e6]), 2.0)).row_at(x)
               for x in (0.0, 199.0, 200.0, 450.0, 599.0, 601.0))
    # the schedule of a trace is the trace's own row_at
    t = _trace([1e6, 2e6, 3e6])
    assert all(s.row_at(x) == t.row_at(x) for x in (0.0, 50.0, 100.0, 250.0))


def test_outage_start_and_end_per_direction():
    s = LinkSchedule.from_trace(_trace([1e6, 0.0, 0.0, 2e6, 0.0], rates_down=[0.0, 1e6, 1e6, 1e6, 1e6]))
    assert s.outage_end_ms(50.0, "up") is None and s.outage_start_ms(50.0, "up") is None
    assert (s.outage_start_ms(150.0, "up"), s.outage_end_ms(150.0, "up")) == (100.0, 300.0)
    assert (s.outage_start_ms(250.0, "up"), s.outage_end_ms(250.0, "up")) == (100.0, 300.0)
    assert (s.outage_start_ms(450.0, "up"), s.outage_end_ms(450.0, "up")) == (400.0, 500.0)  # loops to row 0
    assert (s.outage_start_ms(1150.0, "up"), s.outage_end_ms(1150.0, "up")) == (1100.0, 1300.0)  # third lap
    assert (s.outage_start_ms(550.0, "down"), s.outage_end_ms(550.0, "down")) == (500.0, 600.0)
    never = LinkSchedule.from_trace(_trace([0.0, 0.0]))
    assert never.outage_end_ms(10.0, "up") == float("inf") and never.outage_start_ms(10.0, "up") == -float("inf")


def test_worst_in_windows_is_the_brute_force_worst():
    rng = np.random.default_rng(3)
    rates = rng.uniform(0, 10e6, 17)
    rates[[3, 9]] = 0.0
    s = LinkSchedule.from_trace(_trace(list(rates), step_ms=30.0))
    t0 = rng.uniform(0, 2000, 300)
    t1 = t0 + rng.uniform(0, 700, 300)
    got = s.worst_in_windows("rate_bps_up", t0, t1, take_max=False)
    grid = [np.arange(a, b, 0.5) for a, b in zip(t0, t1)]
    want = [min(s.value_at("rate_bps_up", np.append(g, b))) for g, b in zip(grid, t1)]
    assert np.allclose(got, want)


def test_link_state_is_a_seqlocked_fixed_size_file(tmp_path):
    path = tmp_path / "link-state-d0.bin"
    reader = LinkStateReader(path)
    assert reader.read() is None and reader.csi().rate_up_mbps == 10.0  # nothing yet: an unknown channel's report
    w = LinkStateWriter(path)
    assert reader.read() is None
    row = {"rate_bps_up": 0.0, "delay_ms_up": 25.0, "loss_up": 0.01, "rate_bps_down": 3e6, "delay_ms_down": 7.0,
           "loss_down": 0.0, "snr_db_up": 4.5}
    w.publish(7, 700.0, 1.7e9, row)
    s = reader.read()
    assert (s.step, s.t_ms, s.applied_epoch_s) == (7, 700.0, 1.7e9)
    c = reader.csi()
    assert (c.rate_up_mbps, c.rate_down_mbps, c.delay_up_ms, c.loss_up, c.snr_db) == (0.0, 3.0, 25.0, 0.01, 4.5)
    size = path.stat().st_size
    stop, seen = threading.Event(), []

    def hammer():  # a writer in a hurry: every record read must be whole
        k = 8
        while not stop.is_set():
            w.publish(k, float(k), float(k), {**row, "delay_ms_up": float(k), "delay_ms_down": float(k)})
            k += 1
    th = threading.Thread(target=hammer)
    th.start()
    try:
        for _ in range(3000):
            s = reader.read()
            seen.append((s.step, s.t_ms, s.values["delay_ms_up"], s.values["delay_ms_down"]))
    finally:
        stop.set()
        th.join()
    assert all(a == b == c == d for a, b, c, d in seen[1:] if a >= 8)
    assert path.stat().st_size == size
    w.close()
    assert LinkStateWriter(path) and reader.read() is None  # a new replayer starts from nothing


class _Shaper:
    """A link direction that records what it is set to (and may take its time)."""

    def __init__(self, slow_s: float = 0.0):
        self.slow_s, self.calls = slow_s, []

    def set(self, rate_bps: float, delay_ms: float, loss: float) -> None:
        self.calls.append((rate_bps, delay_ms, loss))
        time.sleep(self.slow_s)


def test_replayer_walks_the_schedule_and_publishes_what_it_applied(tmp_path):
    from topologies.replayer import ReplayOptions, TraceReplayer

    trace = step_trace(20.0, 0.2, [5e6, 10e6, 0.0, 2e6], [10.0, 20.0, 30.0, 40.0], [0.0], seed=1)
    links = [{"up": _Shaper(0.025), "down": _Shaper()}]  # 25 ms to apply a 20 ms step: some are missed
    paths = [tmp_path / "link-state-d0.bin"]
    rep = TraceReplayer(links, [trace], ReplayOptions(loop_to_ms=400.0), publish=paths)
    schedule = LinkSchedule.from_trace(trace)
    assert [(t, row) for _, t, row in schedule.steps(400.0)] == [(t, row) for t, _, _, row in rep._events]
    reader = LinkStateReader(paths[0])
    reported = []
    links[0]["down"].set = lambda *v: reported.append(reader.read())  # what the device reads while the next step applies
    rep.apply_first()
    rep.start()
    rep.join()
    log = rep.log.frame()
    assert rep.log.missed > 0 and len(log) > 2
    applied = set(log["step"]) | {0}
    # the device only ever reads steps the link applied, with that step's values
    assert all(r is None or r.step in applied for r in reported)
    last = reader.read()
    assert last.step == int(log["step"].iloc[-1])
    row = schedule.row(schedule.row_at(last.t_ms))
    assert last.values["rate_bps_up"] == row["rate_bps_up"] and last.values["delay_ms_up"] == row["delay_ms_up"]
    assert last.csi() == schedule.csi_at(last.t_ms)
    # the logged values are the schedule's at the logged trace time
    assert np.allclose(log["rate_bps_up"], schedule.value_at("rate_bps_up", log["t_ms"].to_numpy()))


def test_device_csi_reads_the_published_step(tmp_path):
    from nodes.csi_report import applied_csi, schedule_csi

    w = LinkStateWriter(tmp_path / "s.bin")
    csi = applied_csi(tmp_path / "s.bin")
    w.publish(3, 300.0, time.time(), {"rate_bps_up": 0.0, "delay_ms_up": 1.0, "loss_up": 0.0,
                                      "rate_bps_down": 1e6, "delay_ms_down": 2.0, "loss_down": 0.0})
    assert csi().rate_up_mbps == 0.0 and csi().rate_down_mbps == 1.0
    start = time.monotonic() - 0.15
    assert schedule_csi(_trace([1e6, 2e6, 3e6]), lambda: start)().rate_up_mbps == 2.0


def test_one_min_rate():
    import channel_models.mapping as mapping
    import topologies.shapers as shapers
    import traces.importers.common as common

    assert MIN_RATE_BPS == 8000.0 and shapers.HTB_MIN_RATE_BPS == MIN_RATE_BPS
    assert mapping.LinkMapping().min_rate_bps == MIN_RATE_BPS and common.MIN_RATE_BPS is MIN_RATE_BPS


OUTAGE_LOG = "".join(f"{k * 0.2:.1f} {0 if k % 3 == 2 else 5.0}\n" for k in range(30))  # 0.2 s steps, every third an outage


def test_wisv_trace_import_keeps_outages_unless_asked(tmp_path):
    import subprocess
    import sys

    from traces.format import read_trace

    src = tmp_path / "outage.log"
    src.write_text(OUTAGE_LOG)
    r = subprocess.run([sys.executable, "-m", "wisv.cli", "trace", "import", str(src), "-o", str(tmp_path / "k.csv"),
                        "--rate-unit", "mbps"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "20 outage row(s) kept" in r.stdout
    kept = read_trace(tmp_path / "k.csv")
    assert (kept.data["rate_bps_up"] == 0).sum() == 10 and kept.meta["outages"] == "kept"
    r = subprocess.run([sys.executable, "-m", "wisv.cli", "trace", "import", str(src), "-o", str(tmp_path / "f.csv"),
                        "--rate-unit", "mbps", "--floor-outages"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    floored = read_trace(tmp_path / "f.csv")
    assert floored.data["rate_bps_up"].min() == MIN_RATE_BPS and floored.meta["outages"] == "floored"


@pytest.fixture(scope="module")
def pair():
    from nodes.models import load_pair

    return load_pair()


def test_an_imported_outage_reaches_the_round_logs(pair, tmp_path):
    """A recorded log with rate-0 rows (uplink outages) imports as outages, and a simulated run's
    round logs report rate 0 for the rounds that start in one (and the tables' worst columns
    for the rounds that span one); no round outside an outage reports 0."""
    import json

    from nodes.config import RunConfig, TaskConfig
    from runs.simulate import simulate
    from runs.tables import worst_csi_from_schedule
    from traces.importers import ImportOptions, import_trace

    src = tmp_path / "outage.log"
    src.write_text(OUTAGE_LOG)
    trace = import_trace(src, ImportOptions(rate_unit="mbps", direction="up", other_direction="20000000",
                                            delay_ms=60.0))
    assert trace.meta["outages"] == "kept" and (trace.data["rate_bps_up"] == 0).sum() == 10
    assert (trace.data["rate_bps_down"] == 20e6).all()
    simulate(pair, trace, RunConfig(task=TaskConfig(problems=3)), ["vanilla"], out_dir=tmp_path)
    rounds = pd.DataFrame([json.loads(x) for x in open(tmp_path / "rounds-vanilla.jsonl")])
    schedule = LinkSchedule.from_trace(trace)
    in_outage = schedule.value_at("rate_bps_up", rounds["t_start"].to_numpy() * 1000.0) == 0
    assert in_outage.any() and (~in_outage).any()
    assert (rounds.loc[in_outage, "csi_rate_up_mbps"] == 0).all()
    assert (rounds.loc[~in_outage, "csi_rate_up_mbps"] == 5.0).all()
    worst = worst_csi_from_schedule(rounds, schedule)
    assert (worst["csi_worst_rate_up_mbps"] == 0).sum() > in_outage.sum()  # rounds that waited one out
