"""Statistical tests that would catch a wrong channel generator or mapping."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.special import j0

from channel_models import (CQI_TABLES, ChannelSpec, CqiMapping, FadingSpec, GilbertElliottSpec,
                            HarqModel, ShannonMapping, ShadowingSpec, cqi_efficiency, doppler_hz,
                            fading_gain, generate_csi, generate_link, gilbert_elliott_states,
                            shadowing_db, snr_to_cqi)
from channel_models.mapping import shannon_gap_db


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_doppler_from_speed_and_carrier():
    assert doppler_hz(30.0, 2e9) == pytest.approx(200.14, rel=1e-3)


def test_rayleigh_power_is_exponential_block_iid():
    h = fading_gain(FadingSpec(kind="rayleigh", doppler_hz=0.0, block_ms=1.0), 5000, 1.0, rng(1))
    p = np.abs(h) ** 2
    assert stats.kstest(p, "expon").pvalue > 0.01


def test_rayleigh_power_is_exponential_continuous_sos():
    # Samples far apart in time (>> coherence time) from many independent realisations.
    # (Stride and Doppler are incommensurate, so samples do not alias onto one phase.)
    spec = FadingSpec(kind="rayleigh", doppler_hz=37.3)
    samples = np.concatenate([np.abs(fading_gain(spec, 2000, 1.0, rng(s))[::173]) ** 2 for s in range(300)])
    assert samples.mean() == pytest.approx(1.0, abs=0.07)
    assert stats.kstest(samples, "expon").pvalue > 0.01
    # A wrong generator (e.g. Rician) must fail the same test.
    wrong = np.concatenate([np.abs(fading_gain(FadingSpec(kind="rician", doppler_hz=37.3, k_factor_db=6.0),
                                                2000, 1.0, rng(s))[::173]) ** 2 for s in range(300)])
    assert stats.kstest(wrong, "expon").pvalue < 1e-3


@pytest.mark.parametrize("k_db", [3.0, 9.0])
def test_rician_k_factor_recovered(k_db):
    from traces.fit import rician_k_moment

    ks = []
    for s in range(20):
        h = fading_gain(FadingSpec(kind="rician", doppler_hz=50.0, k_factor_db=k_db), 20000, 1.0, rng(s))
        ks.append(rician_k_moment(np.abs(h) ** 2))
    assert 10 * np.log10(np.mean(ks)) == pytest.approx(k_db, abs=1.0)


def test_jakes_autocorrelation_follows_j0():
    fd, step_ms = 20.0, 1.0
    lags = np.arange(0, 100, 5)  # up to 2 f_d tau = 4
    acc = np.zeros(len(lags))
    for s in range(60):
        h = fading_gain(FadingSpec(kind="rayleigh", doppler_hz=fd), 20000, step_ms, rng(s))
        acc += np.array([np.real(np.mean(h[: len(h) - k] * np.conj(h[k:]))) for k in lags])
    acf = acc / 60
    expected = j0(2 * np.pi * fd * lags * step_ms / 1000.0)
    assert np.max(np.abs(acf - expected)) < 0.08


def test_block_fading_holds_within_block():
    h = fading_gain(FadingSpec(kind="rayleigh", doppler_hz=50.0, block_ms=10.0), 100, 1.0, rng(3))
    blocks = h.reshape(10, 10)
    assert np.all(blocks == blocks[:, :1])
    assert len(np.unique(blocks[:, 0])) == 10


def test_gilbert_elliott_stationary_fraction_and_burst_length():
    spec = GilbertElliottSpec(p_good_to_bad=0.01, p_bad_to_good=0.1)
    bad = gilbert_elliott_states(spec, 1_000_000, rng(4))
    assert bad.mean() == pytest.approx(spec.stationary_bad, abs=0.01)
    edges = np.diff(bad.astype(np.int8))
    n_bursts = np.sum(edges == 1)
    assert bad.sum() / n_bursts == pytest.approx(1 / spec.p_bad_to_good, rel=0.1)


def test_gauss_markov_shadowing_std_and_correlation():
    spec = ShadowingSpec(kind="gauss_markov", sigma_db=6.0, decorrelation_m=20.0, speed_m_s=10.0)
    x = shadowing_db(spec, 200_000, 10.0, rng(5))
    assert x.std() == pytest.approx(6.0, rel=0.05)
    rho = np.corrcoef(x[:-1], x[1:])[0, 1]
    assert rho == pytest.approx(spec.rho(10.0), abs=0.01)
    lognormal = shadowing_db(ShadowingSpec(kind="lognormal", sigma_db=3.0, block_ms=100.0), 100_000, 1.0, rng(6))
    assert stats.kstest(lognormal[::100] / 3.0, "norm").pvalue > 0.01


@pytest.mark.parametrize("table", [1, 2])
def test_cqi_tables_at_their_points(table):
    t = CQI_TABLES[table]
    for cqi in range(1, 16):
        assert snr_to_cqi(t.threshold_db[cqi], table) == cqi
        assert snr_to_cqi(t.threshold_db[cqi] - 1e-6, table) == cqi - 1
    assert snr_to_cqi(-30.0, table) == 0
    assert cqi_efficiency(15, table) == pytest.approx(5.5547 if table == 1 else 7.4063)
    assert cqi_efficiency(7, 1) == pytest.approx(1.4766)
    assert cqi_efficiency(12, 2) == pytest.approx(5.5547)
    m = CqiMapping(table=table, bandwidth_hz=10e6, overhead=0.1)
    link = m.map(t.threshold_db[1:])
    assert np.allclose(link.rate_bps, t.efficiency[1:] * 10e6 * 0.9)


def test_shannon_gap_default_is_ns3_ber_gap():
    # ns-3 LTE AMC (PiroEW2010): gap = -ln(5 BER)/1.5 with BER = 5e-5.
    assert shannon_gap_db(5e-5) == pytest.approx(10 * np.log10(-np.log(2.5e-4) / 1.5))
    m = ShannonMapping(bandwidth_hz=1e6, overhead=0.0, max_se=100.0)
    snr_db = 20.0
    gap = 10 ** (m.effective_gap_db / 10)
    assert m.map(np.array([snr_db])).rate_bps[0] == pytest.approx(1e6 * np.log2(1 + 100 / gap))


@pytest.mark.parametrize("mapping", [ShannonMapping(), CqiMapping(table=1), CqiMapping(table=2)])
def test_mapping_monotone_in_snr(mapping):
    snr = np.linspace(-15, 40, 2000)
    link = mapping.map(snr)
    assert np.all(np.diff(link.rate_bps) >= 0)
    assert np.all(np.diff(link.se_bps_hz) >= 0)
    # At a fixed scheme the residual loss falls as the actual SNR rises.
    fixed = mapping.map(snr, snr_est_db=np.full_like(snr, 10.0))
    assert np.all(np.diff(fixed.loss) <= 1e-15)
    assert np.all(np.diff(fixed.delay_ms) <= 1e-12)


def test_harq_residual_and_delay():
    h = HarqModel(target_bler=0.1, max_retx=3, harq_rtt_ms=8.0)
    assert h.bler(np.array([0.0]))[0] == pytest.approx(0.1)
    loss, extra = h.residual(np.array([-20.0, 0.0, 20.0]))
    assert loss[0] > 0.9 and extra[0] == pytest.approx(24.0, rel=0.01)  # all 3 retransmissions
    assert loss[1] < 0.1 * 0.1 and 0.8 < extra[1] < 1.0
    assert loss[2] < 1e-9 and extra[2] < 1e-6


def test_generator_is_seeded_and_directions_differ():
    spec = ChannelSpec(duration_s=2.0, step_ms=1.0, seed=7)
    a, b = generate_csi(spec), generate_csi(spec)
    assert np.array_equal(a.snr_db_up, b.snr_db_up)
    c = generate_csi(ChannelSpec(duration_s=2.0, step_ms=1.0, seed=8))
    assert not np.array_equal(a.snr_db_up, c.snr_db_up)
    assert not np.allclose(a.snr_db_up - a.snr_db_up.mean(), a.snr_db_down - a.snr_db_down.mean())
    assert a.snr_db_down.mean() - a.snr_db_up.mean() == pytest.approx(5.0, abs=2.0)
    r = generate_csi(ChannelSpec(duration_s=2.0, step_ms=1.0, seed=7, reciprocal=True))
    assert np.allclose(r.snr_db_down - r.snr_db_up, 5.0)


def test_link_budget_and_gilbert_elliott_loss():
    spec = ChannelSpec.from_dict({
        "duration_s": 20.0, "step_ms": 1.0, "seed": 1, "fading": {"kind": "none"}, "shadowing": {"kind": "none"},
        "up": {"mean_snr_db": None, "tx_power_dbm": 23.0, "pathloss_db": 110.0, "bandwidth_hz": 20e6},
        "gilbert_elliott": {"p_good_to_bad": 0.01, "p_bad_to_good": 0.1, "bad_loss": 0.5, "bad_snr_penalty_db": 0.0},
    })
    csi, up, _ = generate_link(spec)
    expected = 23.0 - 110.0 - (-174.0 + 10 * np.log10(20e6) + 7.0)
    assert csi.snr_db_up[0] == pytest.approx(expected)
    assert up.loss[csi.bad].min() >= 0.5 and up.loss[~csi.bad].max() < 0.01


def test_spec_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown channel spec key"):
        ChannelSpec.from_dict({"stepms": 10})
    with pytest.raises(ValueError, match="unknown key"):
        ChannelSpec.from_dict({"fading": {"kind": "rayleigh", "speed": 3}})
    with pytest.raises(ValueError, match="step_ms"):
        ChannelSpec(step_ms=0.5)
    with pytest.raises(ValueError):
        FadingSpec(kind="nakagami")
    with pytest.raises(ValueError):
        GilbertElliottSpec(p_good_to_bad=0.0)
