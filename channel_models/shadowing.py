"""Large-scale shadowing in dB: i.i.d. log-normal blocks or a Gauss–Markov (Gudmundson) process.

Gudmundson (1991), "Correlation model for shadow fading in mobile radio systems": the shadowing
in dB is a first-order Gauss–Markov process whose correlation decays as exp(-d / d_corr) with
distance d = v·Δt, i.e. an AR(1) with ρ = exp(-v·Δt / d_corr) per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter


@dataclass(frozen=True)
class ShadowingSpec:
    """Shadowing parameters.

    kind: ``"none"``, ``"lognormal"`` (i.i.d. per ``block_ms`` block) or ``"gauss_markov"``.
    sigma_db: standard deviation in dB.
    decorrelation_m, speed_m_s: give the AR(1) coefficient of the Gauss–Markov process.
    block_ms: block length of the i.i.d. log-normal kind.
    """

    kind: str = "gauss_markov"
    sigma_db: float = 4.0
    decorrelation_m: float = 20.0
    speed_m_s: float = 1.0
    block_ms: float = 1000.0

    def __post_init__(self) -> None:
        if self.kind not in ("none", "lognormal", "gauss_markov"):
            raise ValueError(f"shadowing kind must be none, lognormal or gauss_markov, not {self.kind!r}")
        if self.sigma_db < 0 or self.decorrelation_m <= 0 or self.block_ms <= 0:
            raise ValueError("sigma_db must be >= 0; decorrelation_m and block_ms > 0")

    def rho(self, step_ms: float) -> float:
        """AR(1) coefficient per step of ``step_ms`` milliseconds."""
        return float(np.exp(-self.speed_m_s * (step_ms / 1000.0) / self.decorrelation_m))


def shadowing_db(spec: ShadowingSpec, n_steps: int, step_ms: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Shadowing in dB (zero mean, std ``sigma_db``) for ``n_steps`` steps of ``step_ms`` ms."""
    if spec.kind == "none" or spec.sigma_db == 0.0:
        return np.zeros(n_steps)
    if spec.kind == "lognormal":
        block = np.floor(np.arange(n_steps) * step_ms / spec.block_ms).astype(np.int64)
        n_blocks = int(block[-1]) + 1 if n_steps else 0
        return spec.sigma_db * rng.standard_normal(n_blocks)[block]
    rho = spec.rho(step_ms)
    w = rng.standard_normal(n_steps) * spec.sigma_db * np.sqrt(1.0 - rho * rho)
    if n_steps:
        w[0] = rng.standard_normal() * spec.sigma_db  # start in the stationary distribution
    return lfilter([1.0], [1.0, -rho], w)
