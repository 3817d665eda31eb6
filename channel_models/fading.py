"""Small-scale fading: Rayleigh and Rician gains with a Clarke/Jakes Doppler spectrum.

The continuous process is the Zheng & Xiao (2002) improved sum-of-sinusoids simulator
("Simulation models with correct statistical properties for Rayleigh fading channels",
IEEE Trans. Commun. 51(6)), whose ensemble autocorrelation of the complex gain is
J0(2π f_d τ) and whose envelope is Rayleigh. Rician fading adds a line-of-sight component
with Doppler f_d cos θ0 (Xiao, Zheng & Beaulieu 2006). Block fading holds the gain constant
over blocks of ``block_ms``: i.i.d. across blocks when ``block_ms`` is set and the Doppler is
zero, otherwise the continuous process sampled at block starts.

All gains are normalised to E|h|² = 1 (power in linear units).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPEED_OF_LIGHT_M_S = 299_792_458.0


def doppler_hz(speed_m_s: float, carrier_hz: float) -> float:
    """Maximum Doppler shift f_d = v · f_c / c in Hz, for a speed in m/s and a carrier in Hz."""
    return speed_m_s * carrier_hz / SPEED_OF_LIGHT_M_S


@dataclass(frozen=True)
class FadingSpec:
    """Parameters of a small-scale fading process.

    kind: ``"none"`` (|h|² = 1), ``"rayleigh"`` or ``"rician"``.
    speed_m_s, carrier_hz: give the maximum Doppler f_d (``doppler_hz`` overrides them if set).
    k_factor_db: Rician K (LOS power / scattered power) in dB; ignored for Rayleigh.
    block_ms: if set, the gain is held constant over blocks of this length (block fading);
        with zero Doppler the blocks are independent draws.
    n_sinusoids: number of sinusoids of the sum-of-sinusoids simulator.
    """

    kind: str = "rayleigh"
    speed_m_s: float = 1.0
    carrier_hz: float = 3.5e9
    doppler_hz: float | None = None
    k_factor_db: float = 6.0
    block_ms: float | None = None
    n_sinusoids: int = 32

    def __post_init__(self) -> None:
        if self.kind not in ("none", "rayleigh", "rician"):
            raise ValueError(f"fading kind must be none, rayleigh or rician, not {self.kind!r}")
        if self.n_sinusoids < 4:
            raise ValueError("n_sinusoids must be >= 4")
        if self.block_ms is not None and self.block_ms <= 0:
            raise ValueError("block_ms must be positive")

    @property
    def max_doppler_hz(self) -> float:
        """The maximum Doppler shift in Hz."""
        if self.doppler_hz is not None:
            return float(self.doppler_hz)
        return doppler_hz(self.speed_m_s, self.carrier_hz)


_CHUNK = 16_384


def _sos_rayleigh(n: int, dt_s: float, fd_hz: float, m: int, rng: np.random.Generator) -> np.ndarray:
    """Zheng–Xiao sum-of-sinusoids complex Rayleigh gain at times k·dt_s, k < n, E|h|² = 1.

    Evaluated chunk by chunk as a matrix–vector product: cos(w·(t0 + kΔ) + φ) is the real part
    of e^{j(w·t0 + φ)} · e^{j·w·kΔ}, and the second factor is the same for every chunk."""
    idx = np.arange(1, m + 1)
    theta = rng.uniform(-np.pi, np.pi)
    alpha = (2 * np.pi * idx - np.pi + theta) / (4 * m)
    phi = rng.uniform(-np.pi, np.pi, m)
    psi = rng.uniform(-np.pi, np.pi, m)
    w_i = 2 * np.pi * fd_hz * np.cos(alpha)
    w_q = 2 * np.pi * fd_hz * np.sin(alpha)
    c = min(n, _CHUNK)
    k_s = np.arange(c) * dt_s
    base_i = np.exp(1j * np.outer(w_i, k_s))
    base_q = np.exp(1j * np.outer(w_q, k_s))
    out = np.empty(n, dtype=np.complex128)
    scale = np.sqrt(1.0 / m)
    for start in range(0, n, c):
        t0 = start * dt_s
        length = min(c, n - start)
        re = (np.exp(1j * (w_i * t0 + phi)) @ base_i[:, :length]).real
        im = (np.exp(1j * (w_q * t0 + psi)) @ base_q[:, :length]).real
        out[start:start + length] = scale * (re + 1j * im)
    return out


def fading_gain(spec: FadingSpec, n_steps: int, step_ms: float,
                rng: np.random.Generator) -> np.ndarray:
    """Complex fading gain h[k] for steps k·step_ms, k < n_steps, normalised to E|h|² = 1."""
    if spec.kind == "none":
        return np.ones(n_steps, dtype=np.complex128)
    if n_steps == 0:
        return np.zeros(0, dtype=np.complex128)
    # Block fading evaluates the process at block starts and holds it over each block.
    grid_ms = spec.block_ms if spec.block_ms is not None else step_ms
    index = np.floor(np.arange(n_steps) * step_ms / grid_ms + 1e-9).astype(np.int64)
    n_grid = int(index[-1]) + 1
    fd = spec.max_doppler_hz
    if fd == 0.0 and spec.block_ms is not None:
        scatter = (rng.standard_normal(n_grid) + 1j * rng.standard_normal(n_grid)) / np.sqrt(2)
    else:
        scatter = _sos_rayleigh(n_grid, grid_ms / 1000.0, fd, spec.n_sinusoids, rng)
    if spec.kind == "rician":
        k = 10 ** (spec.k_factor_db / 10.0)
        theta0 = rng.uniform(-np.pi, np.pi)
        phi0 = rng.uniform(-np.pi, np.pi)
        t_s = np.arange(n_grid) * (grid_ms / 1000.0)
        los = np.exp(1j * (2 * np.pi * fd * np.cos(theta0) * t_s + phi0))
        scatter = np.sqrt(k / (k + 1)) * los + np.sqrt(1 / (k + 1)) * scatter
    return scatter if spec.block_ms is None else scatter[index]
