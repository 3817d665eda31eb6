"""The cell schedulers and the fluid cell model against the expectations of ns-3 LENA's scheduler
test suites (``src/lte/test/lte-test-rr-ff-mac-scheduler.cc``, ``lte-test-pf-ff-mac-scheduler.cc``
in nsnam/ns-3-dev-git; tolerance 10 % as there). Pure numpy, no root."""
from __future__ import annotations

import numpy as np
import pytest

from traces.schedule import ScheduleChannel
from channel_models.cell import (BACKLOGGED, LENA_PF_TIME_WINDOW_TTI, SCHEDULERS, ConstantChannel, ProportionalFair,
                                 RayleighChannel, Traffic, make_scheduler, simulate_cell)

# LENA's uplink round-robin figures at distance 0 (bytes/s): 25 PRB at ITBS 26, 2292 B per TTI;
# from 9 UEs on, a minimum of 3 PRB per UE serves 8 UEs per TTI (277 B each).
LENA_RR_UL_BPS = {1: 2_292_000, 3: 749_000, 6: 373_000, 9: 246_220, 12: 184_670, 15: 147_730}
CELL_BPS = 2_292_000 * 8  # LENA's one-UE uplink rate as the cell's rate
TOL = 0.10


def test_registry_and_names():
    assert set(SCHEDULERS) == {"round-robin", "proportional-fair", "max-rate"}
    for name in SCHEDULERS:
        assert make_scheduler(name, 2).name == name
    with pytest.raises(ValueError, match="unknown cell scheduler"):
        make_scheduler("fair-ish", 2)
    with pytest.raises(ValueError):
        make_scheduler("round-robin", 0)


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_lone_device_gets_the_whole_cell_and_idle_ones_take_nothing(name):
    s = make_scheduler(name, 3)
    a = s.allocate(np.array([0.0, 1e9, 0.0]), np.array([10e6, 20e6, 30e6]))
    assert a.active == 1
    np.testing.assert_allclose(a.share, [0.0, 1.0, 0.0])
    np.testing.assert_allclose(a.grant_bytes, [0.0, 20e6 / 8 / 1000, 0.0])


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_work_conserving_leftover_goes_to_the_others(name):
    s = make_scheduler(name, 3)
    # Device 0 needs 100 B of a 1250 B/TTI channel (8 % of the TTI); the others are backlogged.
    a = s.allocate(np.array([100.0, 1e9, 1e9]), np.array([10e6, 10e6, 10e6]))
    assert a.grant_bytes[0] == pytest.approx(100.0)
    assert a.share.sum() == pytest.approx(1.0)
    assert a.grant_bytes.sum() == pytest.approx(1250.0)
    assert np.all(a.grant_bytes <= np.array([100.0, 1e9, 1e9]))


def test_round_robin_equal_split_after_a_small_need():
    a = make_scheduler("round-robin", 3).allocate(np.array([125.0, 1e9, 1e9]), np.full(3, 10e6))
    np.testing.assert_allclose(a.share, [0.1, 0.45, 0.45])


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_zero_rate_device_takes_no_share(name):
    a = make_scheduler(name, 2).allocate(np.array([1e9, 1e9]), np.array([0.0, 5e6]))
    np.testing.assert_allclose(a.share, [0.0, 1.0])
    assert a.active == 1


def test_empty_cell_grants_nothing():
    a = make_scheduler("proportional-fair", 4).allocate(np.zeros(4), np.full(4, 1e6))
    assert a.active == 0 and a.share.sum() == 0 and a.grant_bytes.sum() == 0


def test_pf_average_follows_lena_update():
    s = ProportionalFair(2, tti_ms=1.0)
    assert s.time_window_tti == LENA_PF_TIME_WINDOW_TTI == 99.0
    a = s.allocate(np.array([1e9, 0.0]), np.array([8e6, 8e6]))
    # R̄ ← (1 − 1/T)·R̄ + (1/T)·(bytes this TTI / TTI), every device, LENA's PfFfMacScheduler.
    assert a.grant_bytes[0] == pytest.approx(1000.0)
    assert s.average_bps[0] == pytest.approx((1 - 1 / 99) * 8.0 + (1 / 99) * 8e6)
    assert s.average_bps[1] == pytest.approx((1 - 1 / 99) * 8.0)


def test_pf_serves_the_device_furthest_below_its_average():
    s = ProportionalFair(2)
    s.average_bps = np.array([1e6, 4e6])
    a = s.allocate(np.array([1e9, 1e9]), np.array([2e6, 6e6]))  # metrics 2 and 1.5
    np.testing.assert_allclose(a.share, [1.0, 0.0])


def test_max_rate_serves_the_best_channel():
    a = make_scheduler("max-rate", 3).allocate(np.full(3, 1e9), np.array([1e6, 9e6, 4e6]))
    np.testing.assert_allclose(a.share, [0.0, 1.0, 0.0])


@pytest.mark.parametrize("n", [1, 3, 6, 9, 12, 15])
def test_round_robin_equal_static_channels_cell_rate_over_n(n):
    run = simulate_cell(make_scheduler("round-robin", n), [ConstantChannel(CELL_BPS)] * n, [BACKLOGGED] * n, 400.0)
    per_device_Bps = run.throughput_bps() / 8
    np.testing.assert_allclose(per_device_Bps, CELL_BPS / 8 / n, rtol=TOL)
    # ... and LENA's own uplink figures for the same N, within its 10 %.
    np.testing.assert_allclose(per_device_Bps, LENA_RR_UL_BPS[n], rtol=TOL)
    assert np.all(run.active == n)


@pytest.mark.parametrize("n", [1, 3, 6, 12, 15])
def test_proportional_fair_equal_static_channels_cell_rate_over_n(n):
    run = simulate_cell(make_scheduler("proportional-fair", n), [ConstantChannel(CELL_BPS)] * n, [BACKLOGGED] * n, 600.0)
    np.testing.assert_allclose(run.throughput_bps(), CELL_BPS / n, rtol=TOL)


def test_proportional_fair_unequal_static_channels_equal_time_shares():
    ratios = np.array([1.0, 3.0, 4.0, 5.5, 18.0])  # the shape of LENA's five-UE fairness test
    rates = ratios * 1e6
    run = simulate_cell(make_scheduler("proportional-fair", 5), [ConstantChannel(r) for r in rates], [BACKLOGGED] * 5,
                        3000.0)
    skip = 300  # three averaging windows
    np.testing.assert_allclose(run.time_share(skip), 0.2, rtol=TOL)
    np.testing.assert_allclose(run.throughput_bps(skip), rates / 5, rtol=TOL)
    # Max-rate, by contrast, starves all but the best device.
    mr = simulate_cell(make_scheduler("max-rate", 5), [ConstantChannel(r) for r in rates], [BACKLOGGED] * 5, 200.0)
    np.testing.assert_allclose(mr.time_share(), [0, 0, 0, 0, 1])


def test_multi_user_diversity_pf_rises_round_robin_does_not():
    def sum_rate(name: str, n: int) -> float:
        chans = [RayleighChannel(mean_snr_db=10.0, seed=100 + i) for i in range(n)]
        return float(simulate_cell(make_scheduler(name, n), chans, [BACKLOGGED] * n, 3000.0).throughput_bps(300).sum())

    pf = {n: sum_rate("proportional-fair", n) for n in (1, 4, 16)}
    rr = {n: sum_rate("round-robin", n) for n in (1, 4, 16)}
    assert pf[4] > 1.3 * pf[1] and pf[16] > 1.15 * pf[4], pf
    for n in (4, 16):
        assert rr[n] == pytest.approx(rr[1], rel=TOL), rr
    # log log N: the gain from 4 to 16 is smaller than from 1 to 4.
    assert pf[16] - pf[4] < pf[4] - pf[1]


def test_burst_delays_single_device():
    # 10 Mbit/s = 1250 B per 1 ms TTI; a 3000 B burst at t = 0 needs 3 TTIs.
    tr = Traffic(bursts=((0.0, 3000.0), (10.2, 1000.0)))
    run = simulate_cell(make_scheduler("round-robin", 1), [ConstantChannel(10e6)], [tr], 20.0)
    d = run.burst_delay_ms[0]
    assert d[0] == pytest.approx(3.0)
    assert d[1] == pytest.approx(12.0 - 10.2)  # enters at the 11 ms TTI, done at its end
    assert run.sent_bytes.sum() == pytest.approx(4000.0)


def test_burst_delays_grow_with_competition():
    burst = Traffic(bursts=tuple((t, 5000.0) for t in np.arange(0.0, 400.0, 20.0)))
    alone = simulate_cell(make_scheduler("round-robin", 1), [ConstantChannel(20e6)], [burst], 500.0)
    shared = simulate_cell(make_scheduler("round-robin", 3), [ConstantChannel(20e6)] * 3, [burst, BACKLOGGED, BACKLOGGED],
                           500.0)
    assert np.nanmean(alone.burst_delay_ms[0]) == pytest.approx(2.0)
    assert np.nanmean(shared.burst_delay_ms[0]) == pytest.approx(6.0, rel=0.2)
    # The bursty device takes a third of the TTI while it has data, none otherwise.
    assert 1.0 <= shared.active.min() and shared.active.max() == 3


def test_unfinished_burst_is_nan():
    run = simulate_cell(make_scheduler("round-robin", 1), [ConstantChannel(1e6)], [Traffic(bursts=((0.0, 1e6),))], 5.0)
    assert np.isnan(run.burst_delay_ms[0][0])


def test_trace_channel_holds_rows_wraps_and_rotates():
    ch = ScheduleChannel.from_columns([0.0, 10.0, 20.0], [1e6, 2e6, 3e6])
    r = ch.rates_bps(40, 1.0)
    np.testing.assert_allclose(r[[0, 9, 10, 19, 20, 29, 30, 39]], [1e6, 1e6, 2e6, 2e6, 3e6, 3e6, 1e6, 1e6])
    rotated = ScheduleChannel.from_columns([0.0, 10.0, 20.0], [1e6, 2e6, 3e6], offset_ms=10.0).rates_bps(40, 1.0)
    np.testing.assert_allclose(rotated, r[(np.arange(40) + 10) % 30])


def test_rayleigh_channel_seeded_and_fading():
    a = RayleighChannel(10.0, seed=1).rates_bps(2000, 1.0)
    b = RayleighChannel(10.0, seed=1).rates_bps(2000, 1.0)
    c = RayleighChannel(10.0, seed=2).rates_bps(2000, 1.0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.std() / a.mean() > 0.2  # independent blocks every TTI
    held = RayleighChannel(10.0, seed=1, block_ms=10.0).rates_bps(100, 1.0)
    assert np.all(held.reshape(10, 10) == held.reshape(10, 10)[:, :1])


def test_simulate_cell_checks_its_inputs():
    with pytest.raises(ValueError):
        simulate_cell(make_scheduler("round-robin", 2), [ConstantChannel(1e6)], [BACKLOGGED] * 2, 10.0)
    with pytest.raises(ValueError):
        make_scheduler("round-robin", 2).allocate(np.zeros(3), np.zeros(3))
