"""3GPP TS 38.214 CQI tables and the SNR → CQI map.

Tables 5.2.2.1-2 ("table 1": QPSK…64QAM) and 5.2.2.1-3 ("table 2": QPSK…256QAM) of
TS 38.214 V16, as (modulation order Qm, code rate ×1024, spectral efficiency in bit/s/Hz).

The standard does not define SNR thresholds; the UE reports the highest CQI whose transport
block it could receive with BLER ≤ 10 %. We use the widely used 10 %-BLER SNR thresholds for
table 1 from link-level simulation of the Vienna LTE simulator as tabulated by Kawser et al.
("Downlink SNR to CQI mapping for different multiple antenna techniques in LTE", IJIEE 2012,
SISO column), and give each table-2 entry the table-1 threshold of equal efficiency; the
256QAM entries beyond table 1's top efficiency are extrapolated at the Shannon high-SNR slope
of 10·log10(2) ≈ 3.01 dB per bit/s/Hz from CQI 15 of table 1.
"""
from __future__ import annotations

import numpy as np

# (Qm, code rate x 1024, efficiency bit/s/Hz) for CQI 1..15; CQI 0 is "out of range".
_TABLE_1 = [
    (2, 78, 0.1523), (2, 120, 0.2344), (2, 193, 0.3770), (2, 308, 0.6016), (2, 449, 0.8770),
    (2, 602, 1.1758), (4, 378, 1.4766), (4, 490, 1.9141), (4, 616, 2.4063), (6, 466, 2.7305),
    (6, 567, 3.3223), (6, 666, 3.9023), (6, 772, 4.5234), (6, 873, 5.1152), (6, 948, 5.5547),
]
_TABLE_2 = [
    (2, 78, 0.1523), (2, 193, 0.3770), (2, 449, 0.8770), (4, 378, 1.4766), (4, 490, 1.9141),
    (4, 616, 2.4063), (6, 466, 2.7305), (6, 567, 3.3223), (6, 666, 3.9023), (6, 772, 4.5234),
    (6, 873, 5.1152), (8, 711, 5.5547), (8, 797, 6.2266), (8, 885, 6.9141), (8, 948, 7.4063),
]
# 10 %-BLER SNR thresholds (dB) of table 1's CQI 1..15 (Kawser et al. 2012, SISO).
_THRESH_1_DB = [-6.7, -4.7, -2.3, 0.2, 2.4, 4.3, 5.9, 8.1, 10.3, 11.7, 14.1, 16.3, 18.7, 21.0, 22.7]
_SHANNON_HIGH_SNR_DB_PER_BIT = 10 * np.log10(2.0)


def _table2_thresholds() -> list[float]:
    eff1 = np.array([e for _, _, e in _TABLE_1])
    out = []
    for _, _, eff in _TABLE_2:
        if eff <= eff1[-1]:
            out.append(float(np.interp(eff, eff1, _THRESH_1_DB)))
        else:
            out.append(_THRESH_1_DB[-1] + (eff - eff1[-1]) * _SHANNON_HIGH_SNR_DB_PER_BIT)
    return [round(x, 2) for x in out]


class CqiTable:
    """One CQI table: efficiencies (bit/s/Hz) and 10 %-BLER SNR thresholds (dB) of CQI 1..15."""

    def __init__(self, name: str, rows: list[tuple[int, int, float]], thresholds_db: list[float]):
        self.name = name
        self.modulation_order = np.array([0] + [q for q, _, _ in rows])
        self.code_rate_x1024 = np.array([0] + [c for _, c, _ in rows])
        self.efficiency = np.array([0.0] + [e for _, _, e in rows])  # index = CQI
        self.threshold_db = np.array([-np.inf] + list(thresholds_db))  # index = CQI

    def __repr__(self) -> str:
        return f"CqiTable({self.name!r})"


CQI_TABLES: dict[int, CqiTable] = {
    1: CqiTable("TS 38.214 Table 5.2.2.1-2", _TABLE_1, _THRESH_1_DB),
    2: CqiTable("TS 38.214 Table 5.2.2.1-3", _TABLE_2, _table2_thresholds()),
}


def _table(table: int) -> CqiTable:
    try:
        return CQI_TABLES[table]
    except KeyError:
        raise ValueError(f"CQI table must be 1 or 2, not {table!r}") from None


def snr_to_cqi(snr_db: np.ndarray | float, table: int = 1) -> np.ndarray:
    """Highest CQI (0–15) whose 10 %-BLER SNR threshold (dB) is at or below ``snr_db``."""
    t = _table(table)
    return np.searchsorted(t.threshold_db[1:], np.asarray(snr_db, dtype=float), side="right")


def cqi_efficiency(cqi: np.ndarray | int, table: int = 1) -> np.ndarray:
    """Spectral efficiency in bit/s/Hz of each CQI (0 for CQI 0, out of range)."""
    cqi = np.asarray(cqi)
    if np.any((cqi < 0) | (cqi > 15)):
        raise ValueError("CQI must lie in 0..15")
    return _table(table).efficiency[cqi.astype(np.int64)]


def cqi_threshold_db(cqi: np.ndarray | int, table: int = 1) -> np.ndarray:
    """10 %-BLER SNR threshold in dB of each CQI (−inf for CQI 0)."""
    return _table(table).threshold_db[np.asarray(cqi, dtype=np.int64)]
