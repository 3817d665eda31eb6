"""Channel state information (CSI) as the nodes see it, and the one analytic link-cost model.

:class:`CSI` is the typed report a device sends with each draft (wire: a flat map of floats,
:data:`CSI_FIELDS`), the decision head reads (:func:`csi_features`) and the round log writes as
``csi_*`` columns. Every latency estimate in the project — the simulator's link, the head's
price of an extra round, ``wisv-adaptive``'s upload choice, the emulation-agreement check —
uses :func:`transfer_ms` for one message of ``n`` application bytes in one direction:

    time = D + 8·(n + k·66) / R · 1000 + L · rto_ms,   k = ⌈n / 1448⌉ TCP segments,

with one-way delay D (ms), rate R (bit/s), 66 B of TCP/IP/Ethernet headers per segment, and L
lost segments (drawn, or the expectation k·p), each costing one retransmission timeout (Linux's
minimum RTO, 200 ms). Pure Python: no torch, no root.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Mapping

SEGMENT_BYTES = 1448
HEADER_BYTES = 66  # TCP 32 (with timestamps) + IPv4 20 + Ethernet 14
RTO_MS = 200.0
# The smallest rate a link is shaped to (HTB's), in bit/s: importers raise slower rates to it, the
# shaper cannot go below it, and a cost estimate charges slower rates at it. A rate of 0 is not a
# slow link but an outage (nothing delivered until it returns): kept from import to report, dropped
# by the shaper, waited out by the simulator (traces.schedule.LinkSchedule.outage_end_ms).
MIN_RATE_BPS = 8000.0
DIRECTIONS = ("up", "down")


@dataclass(frozen=True)
class CSI:
    """One channel report: rates in Mbit/s, one-way delays in ms, losses as fractions (0–1),
    SNR in dB (0 when the trace has none). The defaults are the report of an unknown channel."""

    rate_up_mbps: float = 10.0
    rate_down_mbps: float = 10.0
    delay_up_ms: float = 10.0
    delay_down_ms: float = 10.0
    loss_up: float = 0.0
    loss_down: float = 0.0
    snr_db: float = 0.0

    @property
    def rtt_ms(self) -> float:
        """Round-trip propagation delay in ms (no transmission time)."""
        return self.delay_up_ms + self.delay_down_ms

    def rate_bps(self, direction: str) -> float:
        """Rate of ``direction`` (``up``/``down``) in bit/s."""
        return (self.rate_up_mbps if direction == "up" else self.rate_down_mbps) * 1e6

    def delay_ms(self, direction: str) -> float:
        """One-way delay of ``direction`` in ms."""
        return self.delay_up_ms if direction == "up" else self.delay_down_ms

    def loss(self, direction: str) -> float:
        """Loss probability of ``direction`` (clipped to 0–1)."""
        return min(max(self.loss_up if direction == "up" else self.loss_down, 0.0), 1.0)

    def to_wire(self) -> dict[str, float]:
        """The flat map sent in a draft header."""
        return asdict(self)

    @classmethod
    def from_wire(cls, d: Mapping[str, float] | None) -> "CSI":
        """A report from a draft header; missing keys take the defaults, unknown keys are ignored."""
        if not d:
            return cls()
        return cls(**{k: float(d[k]) for k in CSI_FIELDS if k in d})

    @classmethod
    def from_row(cls, row: Mapping[str, float]) -> "CSI":
        """The report of one canonical trace row (``rate_bps_up``, ``delay_ms_up``, …, ``snr_db_up``)."""
        snr = row.get("snr_db_up", 0.0)
        return cls(float(row["rate_bps_up"]) / 1e6, float(row["rate_bps_down"]) / 1e6, float(row["delay_ms_up"]),
                   float(row["delay_ms_down"]), float(row["loss_up"]), float(row["loss_down"]),
                   0.0 if snr is None or math.isnan(snr) else float(snr))

    def log_columns(self) -> dict[str, float]:
        """The report as round-log columns (``csi_<field>``, and ``csi_rtt_ms``)."""
        return {**{f"csi_{k}": v for k, v in asdict(self).items()}, "csi_rtt_ms": self.rtt_ms}

    def worst(self, other: "CSI") -> "CSI":
        """Field-wise the worse of two reports (lower rate and SNR, longer delay, more loss):
        what a round that spanned both saw at its worst."""
        return replace(self, rate_up_mbps=min(self.rate_up_mbps, other.rate_up_mbps),
                       rate_down_mbps=min(self.rate_down_mbps, other.rate_down_mbps),
                       delay_up_ms=max(self.delay_up_ms, other.delay_up_ms),
                       delay_down_ms=max(self.delay_down_ms, other.delay_down_ms),
                       loss_up=max(self.loss_up, other.loss_up), loss_down=max(self.loss_down, other.loss_down),
                       snr_db=min(self.snr_db, other.snr_db))


CSI_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CSI))
CSI_LOG_COLUMNS: tuple[str, ...] = tuple(CSI().log_columns())


def segments(nbytes: float) -> int:
    """TCP segments that carry ``nbytes`` application bytes (at least one)."""
    return max(1, math.ceil(nbytes / SEGMENT_BYTES))


def serialisation_ms(csi: CSI, nbytes: float, direction: str) -> float:
    """Time to put ``nbytes`` application bytes (plus headers) on the link, in ms (a rate below
    :data:`MIN_RATE_BPS`, an outage's 0 included, is charged at it)."""
    wire_bits = 8.0 * (nbytes + segments(nbytes) * HEADER_BYTES)
    return wire_bits / max(csi.rate_bps(direction), MIN_RATE_BPS) * 1000.0


def transfer_ms(csi: CSI, nbytes: float, direction: str, lost_segments: float | None = None,
                rto_ms: float = RTO_MS) -> float:
    """Delivery time in ms of one message of ``nbytes`` application bytes sent in ``direction``
    (see the module docstring); ``lost_segments`` None charges the expected losses."""
    lost = segments(nbytes) * csi.loss(direction) if lost_segments is None else lost_segments
    return csi.delay_ms(direction) + serialisation_ms(csi, nbytes, direction) + lost * rto_ms


def round_trip_ms(csi: CSI, bytes_up: float, bytes_down: float, rto_ms: float = RTO_MS) -> float:
    """Expected time in ms of one exchange: ``bytes_up`` up, then ``bytes_down`` down."""
    return transfer_ms(csi, bytes_up, "up", rto_ms=rto_ms) + transfer_ms(csi, bytes_down, "down", rto_ms=rto_ms)


def csi_features(csi: CSI) -> list[float]:
    """The decision head's CSI inputs: SNR (dB), log uplink and downlink rate (Mbit/s), log RTT (ms)."""
    return [csi.snr_db, math.log(max(csi.rate_up_mbps, 1e-3)), math.log(max(csi.rate_down_mbps, 1e-3)),
            math.log(max(csi.rtt_ms, 1e-3))]
