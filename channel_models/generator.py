"""Compose fading, shadowing and bursts into per-direction CSI series and map them to a link.

SNR_dir[k] (dB) = mean_snr_db_dir + shadowing[k] + 10·log10|h_dir[k]|² − GE penalty[k]

Shadowing and the Gilbert–Elliott state are large-scale and shared by both directions; the
small-scale fading is independent per direction (FDD) unless ``reciprocal`` (TDD). Each
direction has its own mean SNR (or link budget), bandwidth and overhead.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from channel_models.fading import FadingSpec, fading_gain
from channel_models.gilbert_elliott import GilbertElliottSpec, gilbert_elliott_states
from channel_models.mapping import HarqModel, LinkMapping, LinkSeries, make_mapping
from channel_models.shadowing import ShadowingSpec, shadowing_db

THERMAL_NOISE_DBM_HZ = -174.0


def link_budget_snr_db(tx_power_dbm: float, pathloss_db: float, bandwidth_hz: float,
                       noise_figure_db: float = 7.0) -> float:
    """Mean SNR in dB = P_tx − PL − (−174 dBm/Hz + 10·log10 B + NF)."""
    noise_dbm = THERMAL_NOISE_DBM_HZ + 10 * np.log10(bandwidth_hz) + noise_figure_db
    return float(tx_power_dbm - pathloss_db - noise_dbm)


@dataclass(frozen=True)
class DirectionSpec:
    """One direction of the radio link.

    mean_snr_db: mean SNR; if None it comes from the link budget (tx_power_dbm, pathloss_db,
    noise_figure_db, bandwidth_hz). overhead: TS 38.306 default 0.14 (DL) / 0.08 (UL)."""

    mean_snr_db: float | None = 15.0
    bandwidth_hz: float = 20e6
    overhead: float = 0.14
    tx_power_dbm: float | None = None
    pathloss_db: float | None = None
    noise_figure_db: float = 7.0

    def snr_db(self) -> float:
        """The mean SNR in dB in force."""
        if self.mean_snr_db is not None:
            return float(self.mean_snr_db)
        if self.tx_power_dbm is None or self.pathloss_db is None:
            raise ValueError("give mean_snr_db, or tx_power_dbm and pathloss_db")
        return link_budget_snr_db(self.tx_power_dbm, self.pathloss_db, self.bandwidth_hz,
                                  self.noise_figure_db)


@dataclass(frozen=True)
class ChannelSpec:
    """A complete, seeded description of a generated channel (both directions).

    step_ms: output step (1 ms … 1 s); duration_s: length; mapping: ``shannon``, ``cqi1`` or
    ``cqi2``; csi_delay_ms: age of the SNR estimate used for link adaptation (0 = ideal CSI)."""

    step_ms: float = 10.0
    duration_s: float = 60.0
    seed: int = 0
    up: DirectionSpec = field(default_factory=lambda: DirectionSpec(mean_snr_db=10.0, overhead=0.08))
    down: DirectionSpec = field(default_factory=lambda: DirectionSpec(mean_snr_db=15.0, overhead=0.14))
    fading: FadingSpec = field(default_factory=FadingSpec)
    shadowing: ShadowingSpec = field(default_factory=ShadowingSpec)
    gilbert_elliott: GilbertElliottSpec | None = None
    reciprocal: bool = False
    mapping: str = "cqi1"
    base_delay_ms: float = 10.0
    csi_delay_ms: float = 0.0
    harq: HarqModel = field(default_factory=HarqModel)

    def __post_init__(self) -> None:
        if not 1.0 <= self.step_ms <= 1000.0:
            raise ValueError(f"step_ms must lie in [1, 1000], got {self.step_ms}")
        if self.duration_s <= 0:
            raise ValueError("duration_s must be positive")
        make_mapping(self.mapping)  # validates the name

    @property
    def n_steps(self) -> int:
        """Number of rows of the generated series."""
        return int(round(self.duration_s * 1000.0 / self.step_ms))

    def mapping_for(self, d: DirectionSpec) -> LinkMapping:
        """The CSI → link mapping of one direction."""
        return make_mapping(self.mapping, bandwidth_hz=d.bandwidth_hz, overhead=d.overhead,
                            base_delay_ms=self.base_delay_ms, harq=self.harq)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict that :meth:`from_dict` reads back."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ChannelSpec":
        """Build a spec from a (possibly partial) dict; unknown keys raise ValueError."""
        nested = {"up": DirectionSpec, "down": DirectionSpec, "fading": FadingSpec,
                  "shadowing": ShadowingSpec, "gilbert_elliott": GilbertElliottSpec,
                  "harq": HarqModel}
        kwargs: dict[str, Any] = {}
        names = {f.name for f in dataclasses.fields(cls)}
        for k, v in d.items():
            if k not in names:
                raise ValueError(f"unknown channel spec key {k!r}; known: {sorted(names)}")
            if k in nested and isinstance(v, dict):
                sub = nested[k]
                subnames = {f.name for f in dataclasses.fields(sub)}
                bad = set(v) - subnames
                if bad:
                    raise ValueError(f"unknown key(s) {sorted(bad)} in {k!r}; known: {sorted(subnames)}")
                v = sub(**v)
            kwargs[k] = v
        return cls(**kwargs)


@dataclass(frozen=True)
class CsiSeries:
    """Generated CSI: SNR per direction (dB), the Gilbert–Elliott bad flag, step in ms."""

    step_ms: float
    snr_db_up: np.ndarray
    snr_db_down: np.ndarray
    bad: np.ndarray


def generate_csi(spec: ChannelSpec) -> CsiSeries:
    """Draw the SNR series of both directions from ``spec`` (reproducible from its seed)."""
    n = spec.n_steps
    ss = np.random.SeedSequence(spec.seed)
    rng_shadow, rng_ge, rng_up, rng_down = (np.random.default_rng(s) for s in ss.spawn(4))
    shadow = shadowing_db(spec.shadowing, n, spec.step_ms, rng_shadow)
    if spec.gilbert_elliott is not None:
        bad = gilbert_elliott_states(spec.gilbert_elliott, n, rng_ge)
        penalty = np.where(bad, spec.gilbert_elliott.bad_snr_penalty_db, 0.0)
    else:
        bad = np.zeros(n, dtype=bool)
        penalty = np.zeros(n)
    h_up = fading_gain(spec.fading, n, spec.step_ms, rng_up)
    h_down = h_up if spec.reciprocal else fading_gain(spec.fading, n, spec.step_ms, rng_down)
    floor = 1e-12  # −120 dB: keeps log10 finite in a deep null
    snr_up = spec.up.snr_db() + shadow + 10 * np.log10(np.maximum(np.abs(h_up) ** 2, floor)) - penalty
    snr_down = spec.down.snr_db() + shadow + 10 * np.log10(np.maximum(np.abs(h_down) ** 2, floor)) - penalty
    return CsiSeries(spec.step_ms, snr_up, snr_down, bad)


def _delayed(x: np.ndarray, steps: int) -> np.ndarray:
    if steps <= 0:
        return x
    return np.concatenate((np.full(steps, x[0]), x[:-steps]))


def generate_link(spec: ChannelSpec, csi: CsiSeries | None = None) -> tuple[CsiSeries, LinkSeries, LinkSeries]:
    """CSI and the (up, down) link series it maps to, with Gilbert–Elliott per-state loss added."""
    csi = generate_csi(spec) if csi is None else csi
    lag = int(round(spec.csi_delay_ms / spec.step_ms))
    links = []
    for d, snr in ((spec.up, csi.snr_db_up), (spec.down, csi.snr_db_down)):
        link = spec.mapping_for(d).map(snr, _delayed(snr, lag))
        if spec.gilbert_elliott is not None:
            ge = spec.gilbert_elliott
            extra = np.where(csi.bad, ge.bad_loss, ge.good_loss)
            link = dataclasses.replace(link, loss=1.0 - (1.0 - link.loss) * (1.0 - extra))
        links.append(link)
    return csi, links[0], links[1]


PRESETS: dict[str, dict[str, Any]] = {
    "static": {"fading": {"kind": "rician", "speed_m_s": 0.0, "doppler_hz": 0.5, "k_factor_db": 10.0},
               "shadowing": {"kind": "none"}},
    "pedestrian": {"fading": {"kind": "rayleigh", "speed_m_s": 1.4},
                   "shadowing": {"kind": "gauss_markov", "sigma_db": 4.0, "speed_m_s": 1.4,
                                 "decorrelation_m": 10.0}},
    "vehicular": {"fading": {"kind": "rayleigh", "speed_m_s": 16.7},
                  "shadowing": {"kind": "gauss_markov", "sigma_db": 8.0, "speed_m_s": 16.7,
                                "decorrelation_m": 50.0}},
    "bursty": {"fading": {"kind": "rician", "speed_m_s": 1.4, "k_factor_db": 6.0},
               "shadowing": {"kind": "gauss_markov", "sigma_db": 3.0, "speed_m_s": 1.4},
               "gilbert_elliott": {"p_good_to_bad": 0.002, "p_bad_to_good": 0.02,
                                   "bad_snr_penalty_db": 20.0}},
    "constant": {"fading": {"kind": "none"}, "shadowing": {"kind": "none"}},
}
