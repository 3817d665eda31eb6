"""CSI → link mapping: SNR (dB) → spectral efficiency → rate (bit/s), BLER/HARQ → loss and delay.

Two rate mappings share one interface (:class:`LinkMapping`):

* :class:`ShannonMapping` — ``SE = log2(1 + SNR / Γ)`` with the BER-based SNR gap
  ``Γ = −ln(5·BER) / 1.5`` (Goldsmith & Chua 1997, as used by ns-3's LTE AMC model
  ``PiroEW2010``, default BER 5e-5), capped at ``max_se``.
* :class:`CqiMapping` — SNR → CQI → efficiency by the TS 38.214 tables (see ``cqi.py``).

Then ``rate = SE · bandwidth · (1 − overhead)``. The overhead defaults follow TS 38.306 §4.1.2
(0.14 for FR1 downlink, 0.08 for FR1 uplink).

Errors: link adaptation picks the scheme from an SNR estimate; the first-transmission BLER of
that scheme at the actual SNR is a logistic waterfall in the SNR margin, equal to
``target_bler`` (10 %, the LTE/NR operating point) at zero margin. :class:`HarqModel` turns it
into the residual loss after ``max_retx`` chase-combined retransmissions (the k-th transmission
sees the SNR plus 10·log10(k)) and the mean added delay of ``harq_rtt_ms`` per retransmission
(8 ms: the LTE FDD HARQ round trip, TS 36.213 §8).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from channel_models.cqi import cqi_efficiency, cqi_threshold_db, snr_to_cqi
from channel_models.csi import MIN_RATE_BPS


@dataclass(frozen=True)
class LinkSeries:
    """A link time series: rate in bit/s, one-way delay in ms, loss probability 0–1,
    spectral efficiency in bit/s/Hz and the CQI (−1 where the mapping has none)."""

    rate_bps: np.ndarray
    delay_ms: np.ndarray
    loss: np.ndarray
    se_bps_hz: np.ndarray
    cqi: np.ndarray


@dataclass(frozen=True)
class HarqModel:
    """BLER waterfall and HARQ retransmissions.

    target_bler: first-transmission BLER at zero SNR margin; slope_per_db: logistic slope
    (per dB) of the waterfall; max_retx: retransmissions after the first try; harq_rtt_ms:
    delay added by each retransmission."""

    target_bler: float = 0.1
    slope_per_db: float = 1.5
    max_retx: int = 3
    harq_rtt_ms: float = 8.0

    def __post_init__(self) -> None:
        if not 0.0 < self.target_bler < 1.0:
            raise ValueError("target_bler must lie in (0, 1)")
        if self.slope_per_db <= 0 or self.max_retx < 0 or self.harq_rtt_ms < 0:
            raise ValueError("slope_per_db must be > 0; max_retx and harq_rtt_ms >= 0")

    def bler(self, margin_db: np.ndarray) -> np.ndarray:
        """First-transmission block error rate at an SNR margin (dB) over the scheme's need."""
        offset = np.log(1.0 / self.target_bler - 1.0) / self.slope_per_db
        x = np.clip(self.slope_per_db * (np.asarray(margin_db, dtype=float) + offset), -60, 60)
        return 1.0 / (1.0 + np.exp(x))

    def residual(self, margin_db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(residual loss probability, mean added delay in ms) after HARQ at a margin in dB."""
        margin_db = np.asarray(margin_db, dtype=float)
        fail_all = np.ones_like(margin_db)
        extra_ms = np.zeros_like(margin_db)
        for k in range(1, self.max_retx + 2):
            fail_all = fail_all * self.bler(margin_db + 10 * np.log10(k))
            if k <= self.max_retx:
                extra_ms = extra_ms + self.harq_rtt_ms * fail_all
        return fail_all, extra_ms


@dataclass(frozen=True)
class LinkMapping:
    """Common part of the CSI → link mappings.

    bandwidth_hz: channel bandwidth; overhead: fraction lost to control/reference signals;
    base_delay_ms: one-way propagation + processing delay; min_rate_bps: rate floor (a shaper
    cannot take 0); harq: the error model."""

    bandwidth_hz: float = 20e6
    overhead: float = 0.14
    base_delay_ms: float = 10.0
    min_rate_bps: float = MIN_RATE_BPS
    harq: HarqModel = field(default_factory=HarqModel)

    def __post_init__(self) -> None:
        if self.bandwidth_hz <= 0 or not 0 <= self.overhead < 1 or self.base_delay_ms < 0:
            raise ValueError("bandwidth_hz must be > 0, overhead in [0, 1), base_delay_ms >= 0")

    name = "base"

    def scheme(self, snr_est_db: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(spectral efficiency bit/s/Hz, required SNR dB, CQI) chosen for an SNR estimate."""
        raise NotImplementedError

    def map(self, snr_db: np.ndarray, snr_est_db: np.ndarray | None = None) -> LinkSeries:
        """Map actual SNR (dB) to a link; the scheme is chosen from ``snr_est_db`` (default: exact)."""
        snr_db = np.asarray(snr_db, dtype=float)
        est = snr_db if snr_est_db is None else np.asarray(snr_est_db, dtype=float)
        se, need_db, cqi = self.scheme(est)
        rate = np.maximum(se * self.bandwidth_hz * (1.0 - self.overhead), self.min_rate_bps)
        loss, extra_ms = self.harq.residual(snr_db - need_db)
        loss = np.where(loss < 1e-9, 0.0, loss)  # below any measurable packet loss
        return LinkSeries(rate_bps=rate, delay_ms=self.base_delay_ms + extra_ms,
                          loss=loss, se_bps_hz=se, cqi=cqi)

    def describe(self) -> dict:
        """A JSON-able description, kept in trace metadata."""
        d = {k: getattr(self, k) for k in ("bandwidth_hz", "overhead", "base_delay_ms", "min_rate_bps")}
        d["name"] = self.name
        d["harq"] = {k: getattr(self.harq, k) for k in ("target_bler", "slope_per_db", "max_retx", "harq_rtt_ms")}
        return d


def shannon_gap_db(ber: float) -> float:
    """SNR gap Γ in dB for an uncoded M-QAM target BER: Γ = −ln(5·BER)/1.5 (Goldsmith & Chua)."""
    if not 0 < ber < 0.2:
        raise ValueError("ber must lie in (0, 0.2)")
    return float(10 * np.log10(-np.log(5 * ber) / 1.5))


@dataclass(frozen=True)
class ShannonMapping(LinkMapping):
    """Shannon capacity with an SNR gap: SE = log2(1 + SNR/Γ), Γ from ``ber`` unless ``gap_db`` set."""

    ber: float = 5e-5
    gap_db: float | None = None
    max_se: float = 7.4063
    name = "shannon"

    @property
    def effective_gap_db(self) -> float:
        """The gap Γ in dB in force."""
        return shannon_gap_db(self.ber) if self.gap_db is None else float(self.gap_db)

    def scheme(self, snr_est_db):
        gap = 10 ** (self.effective_gap_db / 10)
        se = np.minimum(np.log2(1.0 + 10 ** (np.asarray(snr_est_db) / 10) / gap), self.max_se)
        need_db = 10 * np.log10((2.0 ** se - 1.0) * gap + 1e-30)
        return se, need_db, np.full(se.shape, -1, dtype=np.int64)

    def describe(self) -> dict:
        d = super().describe()
        d.update(ber=self.ber, gap_db=self.effective_gap_db, max_se=self.max_se)
        return d


@dataclass(frozen=True)
class CqiMapping(LinkMapping):
    """TS 38.214 CQI table 1 or 2: SNR → CQI → efficiency. Below CQI 1 the lowest scheme is
    kept (the scheduler still transmits) and its BLER rises with the negative margin."""

    table: int = 1
    name = "cqi"

    def scheme(self, snr_est_db):
        cqi = snr_to_cqi(snr_est_db, self.table)
        used = np.maximum(cqi, 1)
        return cqi_efficiency(used, self.table), cqi_threshold_db(used, self.table), cqi

    def describe(self) -> dict:
        d = super().describe()
        d.update(name=f"cqi{self.table}", table=self.table)
        return d


def make_mapping(name: str, **kwargs) -> LinkMapping:
    """A mapping by name: ``shannon``, ``cqi1`` or ``cqi2``; kwargs go to its dataclass."""
    if "harq" in kwargs and isinstance(kwargs["harq"], dict):
        kwargs["harq"] = HarqModel(**kwargs["harq"])
    if name == "shannon":
        return ShannonMapping(**kwargs)
    if name in ("cqi1", "cqi2", "cqi"):
        return CqiMapping(table=2 if name == "cqi2" else kwargs.pop("table", 1), **kwargs)
    raise ValueError(f"unknown mapping {name!r}: use shannon, cqi1 or cqi2")
