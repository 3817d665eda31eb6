"""Fit a generative channel model to a recorded trace, to make more traces "like" it.

Per direction the SNR in dB is split into a slow part (a moving average over ``window_ms``,
default 1 s) and a fast residual. The slow part is fitted as mean + Gauss–Markov (AR(1))
shadowing. Where the step is short enough to see small-scale fading (≤ 100 ms), the residual's
linear power gives the Rician K-factor by the moment estimator of Greenstein et al. (1999),
K = √(1−γ)/(1−√(1−γ)) with γ = Var(P)/E[P]² (K ≈ 0: Rayleigh), and the maximum Doppler from
its autocovariance, which for Clarke's spectrum is ∝ J0²(2π f_d τ): it halves where
J0 = 1/√2, at 2π f_d τ½ = 1.126.

A trace without SNR (e.g. a Mahimahi rate trace) is first mapped to an equivalent SNR by
inverting Shannon's formula at the trace's bandwidth. A delivery-opportunity trace (Mahimahi:
whole 1500-byte packets) is first resampled to a step holding at least
``MIN_PACKETS_PER_STEP`` packets on average: at finer steps the rate is packet-counting noise
(mostly 0 or one packet), not a channel, and a fit to it overstates the mean rate (×2.6 for
the Verizon LTE trace at 10 ms). A rate-only trace whose steps still carry no delivery more than
``MAX_OUTAGE_FRACTION`` of the time is an on/off trace that no fading + shadowing channel
reproduces: it is refused (:class:`TraceFitError`) with that reason. The fit is returned as a
:class:`channel_models.ChannelSpec` (the trace's own mapping where its metadata names one, else
Shannon) with the trace's mean delay, so ``from_channel(spec)`` generates new traces.
"""
from __future__ import annotations

import numpy as np

from channel_models.csi import MIN_RATE_BPS
from channel_models.generator import ChannelSpec, DirectionSpec
from channel_models.mapping import ShannonMapping
from traces.format import Trace

NOMINAL_SPEED_M_S = 1.0  # the AR(1) coefficient is stored as a decorrelation distance at 1 m/s
MIN_PACKETS_PER_STEP = 20.0  # a delivery-opportunity trace is fitted at a step holding this many packets
MAX_OUTAGE_FRACTION = 0.05  # a rate-only trace with no delivery more of the time than this is refused


class TraceFitError(ValueError):
    """A trace the channel model cannot represent; the message says why."""


def fit_step_ms(trace: Trace) -> float:
    """The step (ms) to fit ``trace`` at: its own, or for a delivery-opportunity trace
    (``packet_bytes`` in its metadata) the smallest multiple of it that holds at least
    MIN_PACKETS_PER_STEP packets at the trace's mean rate."""
    packet_bits = 8.0 * float(trace.meta.get("packet_bytes", 0) or 0)
    if packet_bits <= 0:
        return trace.step_ms
    w = np.diff(np.append(trace.data["t_ms"].to_numpy(dtype=float), trace.data["t_ms"].iloc[-1] + trace.last_hold_ms))
    mean_bps = min(float(np.average(trace.data[f"rate_bps_{d}"], weights=w)) for d in ("up", "down"))
    packets = mean_bps * trace.step_ms / 1000.0 / packet_bits
    k = int(np.ceil(MIN_PACKETS_PER_STEP / packets)) if packets > 0 else 1
    return trace.step_ms * max(1, k)


def outage_fraction(trace: Trace, d: str) -> float:
    """Fraction of the time (0–1) direction ``d`` delivers nothing (rate at or below the
    import floor, ``rate_floor_bps``, default :data:`channel_models.csi.MIN_RATE_BPS`; an outage's 0
    included)."""
    floor = float(trace.meta.get("rate_floor_bps", MIN_RATE_BPS)) * (1 + 1e-9)
    t = trace.data["t_ms"].to_numpy(dtype=float)
    w = np.diff(np.append(t, t[-1] + trace.last_hold_ms))
    return float(np.sum(w[trace.data[f"rate_bps_{d}"].to_numpy(dtype=float) <= floor]) / np.sum(w))


def equivalent_snr_db(rate_bps: np.ndarray, bandwidth_hz: float, overhead: float, gap_db: float) -> np.ndarray:
    """SNR (dB) at which the Shannon-with-gap mapping gives ``rate_bps``."""
    se = np.asarray(rate_bps, dtype=float) / (bandwidth_hz * (1 - overhead))
    return 10 * np.log10(np.maximum(2.0 ** se - 1.0, 1e-6)) + gap_db


def ar1_fit(x: np.ndarray) -> tuple[float, float, float]:
    """(mean, std, lag-1 autocorrelation) of a series, the three AR(1) parameters."""
    x = np.asarray(x, dtype=float)
    mu, sd = float(x.mean()), float(x.std())
    if sd == 0 or len(x) < 3:
        return mu, sd, 0.0
    z = x - mu
    rho = float(np.dot(z[:-1], z[1:]) / np.dot(z, z))
    return mu, sd, float(np.clip(rho, 0.0, 0.9999))


def rician_k_moment(power: np.ndarray) -> float:
    """Rician K (linear) from linear power samples by the Greenstein moment estimator."""
    p = np.asarray(power, dtype=float)
    gamma = float(p.var() / p.mean() ** 2)
    if gamma >= 1.0:
        return 0.0
    r = np.sqrt(1.0 - gamma)
    return float(r / (1.0 - r))


def doppler_from_power_acf(power: np.ndarray, step_ms: float) -> float | None:
    """Max Doppler (Hz) from the half-decay lag τ½ of the autocovariance of fading power:
    Clarke's J0²(2π f_d τ) halves at 2π f_d τ½ = 1.126. None when it never halves."""
    z = np.asarray(power, dtype=float) - np.mean(power)
    n = len(z)
    if n < 8 or not np.any(z):
        return None
    f = np.fft.rfft(z, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[: n // 2]
    acf = acf / acf[0]
    below = np.flatnonzero(acf <= 0.5)
    if not below.size:
        return None
    k = int(below[0])
    frac = (acf[k - 1] - 0.5) / (acf[k - 1] - acf[k])  # linear interpolation between lags
    tau = (k - 1 + frac) * step_ms / 1000.0
    return float(1.126 / (2 * np.pi * tau))


def _moving_average(x: np.ndarray, win: int) -> np.ndarray:
    if win <= 1:
        return x.copy()
    pad = np.pad(x, (win // 2, win - 1 - win // 2), mode="edge")
    return np.convolve(pad, np.ones(win) / win, mode="valid")


def _trace_mapping(trace: Trace, d: str) -> dict | None:
    m = trace.meta.get("mapping")
    if isinstance(m, dict) and isinstance(m.get(d), dict):
        m = m[d]
    if isinstance(m, dict) and m.get("name") in ("shannon", "cqi1", "cqi2"):
        return m
    return None


def _refuse_on_off(trace: Trace, d: str, step: float) -> None:
    """TraceFitError when direction ``d`` delivers nothing more than MAX_OUTAGE_FRACTION of the time."""
    off = outage_fraction(trace, d)
    if off > MAX_OUTAGE_FRACTION:
        raise TraceFitError(
            f"cannot fit a channel model: the {d}link delivers nothing in {off:.0%} of the time "
            f"({step:g} ms steps; limit {MAX_OUTAGE_FRACTION:.0%}), an on/off trace whose outages a "
            "fading + shadowing channel does not reproduce (a fit would overstate its mean rate); "
            "replay the trace itself (loop or slice it), or import it with a larger --step-ms")


def fit_channel(trace: Trace, bandwidth_hz: float | None = None, overhead: float = 0.14,
                seed: int = 0, window_ms: float = 1000.0) -> tuple[ChannelSpec, dict]:
    """A ChannelSpec fitted to ``trace``, and a report of the fitted parameters per direction.

    Raises TraceFitError for an on/off rate trace (see the module doc)."""
    from traces.ops import resample

    step = fit_step_ms(trace)
    report: dict = {"step_ms": step, "directions": {}}
    if step != trace.step_ms:
        report["resampled_from_ms"] = trace.step_ms
        report["note"] = (f"delivery-opportunity trace fitted at {step:g} ms steps (at least "
                          f"{MIN_PACKETS_PER_STEP:g} packets a step), not its {trace.step_ms:g} ms")
        trace = resample(trace, step)
    dirs = {}
    rhos, sds, ks, fds = [], [], [], []
    mapping_name = "shannon"
    win = max(1, int(round(window_ms / step))) if step <= 100.0 else 1
    for d in ("up", "down"):
        rate = trace.data[f"rate_bps_{d}"].to_numpy(dtype=float)
        known = _trace_mapping(trace, d)
        if known and f"snr_db_{d}" in trace.data:
            snr, src = trace.data[f"snr_db_{d}"].to_numpy(dtype=float), "snr_db"
            mapping_name = known["name"]
            bw, oh = float(known.get("bandwidth_hz", 20e6)), float(known.get("overhead", overhead))
        else:
            bw = bandwidth_hz or max(1e5, float(np.percentile(rate, 99)) / (6.0 * (1 - overhead)))
            oh = overhead
            if f"snr_db_{d}" in trace.data and trace.meta.get("rate_from") == "csi":
                snr, src = trace.data[f"snr_db_{d}"].to_numpy(dtype=float), "snr_db"
            else:
                _refuse_on_off(trace, d, step)
                # an outage (rate 0, kept by the importers) enters the fit at the rate floor: a
                # fading channel's deepest fade, not an SNR of -inf dB
                snr = equivalent_snr_db(np.maximum(rate, MIN_RATE_BPS), bw, overhead, ShannonMapping().effective_gap_db)
                src = "rate (inverted Shannon)"
        slow = _moving_average(snr, win)
        mu, sd, rho = ar1_fit(slow[::win] if win > 1 else slow)
        rhos.append(rho ** (1.0 / win))  # back to a per-step coefficient
        sds.append(sd)
        entry = {"from": src, "mean_snr_db": mu, "sigma_db": sd, "bandwidth_hz": bw,
                 "mean_delay_ms": float(trace.data[f"delay_ms_{d}"].mean())}
        if win > 1:
            power = 10 ** ((snr - slow) / 10.0)
            power /= power.mean()
            k = rician_k_moment(power)
            fd = doppler_from_power_acf(power, step)
            ks.append(k)
            if fd is not None:
                fds.append(fd)
            entry.update(k_factor=k, doppler_hz=fd)
            # The fading's mean log-power is below 0 dB (Jensen): restore the mean SNR in dB.
            mu = float(np.mean(snr) - np.mean(10 * np.log10(np.maximum(power, 1e-12))))
            entry["mean_snr_db"] = mu
        dirs[d] = DirectionSpec(mean_snr_db=mu, bandwidth_hz=bw, overhead=oh)
        report["directions"][d] = entry
    # One shadowing process is shared by both directions: take the mean of the two fits.
    rho, sd = float(np.mean(rhos)), float(np.mean(sds))
    decorrelation_m = -NOMINAL_SPEED_M_S * (step / 1000.0) / np.log(min(max(rho, 1e-6), 0.999999))
    delay = float(np.mean([trace.data[f"delay_ms_{d}"].mean() for d in ("up", "down")]))
    fading = {"kind": "none"}
    if ks and fds:
        k = float(np.mean(ks))
        fading = {"kind": "rician" if k > 0.5 else "rayleigh", "doppler_hz": float(np.mean(fds)),
                  "k_factor_db": float(10 * np.log10(max(k, 1e-3)))}
    spec = ChannelSpec.from_dict({
        "step_ms": min(max(step, 1.0), 1000.0), "duration_s": trace.duration_ms / 1000.0, "seed": seed,
        "up": dirs["up"].__dict__, "down": dirs["down"].__dict__,
        "fading": fading, "mapping": mapping_name, "base_delay_ms": delay,
        "shadowing": {"kind": "gauss_markov", "sigma_db": sd, "speed_m_s": NOMINAL_SPEED_M_S,
                      "decorrelation_m": float(decorrelation_m)},
    })
    report["fading"] = fading
    report["shadowing"] = {"sigma_db": sd, "rho_per_step": rho, "decorrelation_m_at_1m_s": float(decorrelation_m)}
    return spec, report
