"""``wisv-adaptive``: full upload or mismatch-first, chosen per round from the CSI (SPEC §6).

The device side owns the choice and its feedback: an :class:`UploadChooser` prices both modes
in ms by the one link model at the CSI in force once the draft is ready, and learns the
drafter's mismatch rate from every verdict (:meth:`AdaptiveUploadDevice.observe`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from channel_models.csi import CSI, round_trip_ms, transfer_ms
from nodes.protocols.base import DeviceSetup, DeviceSide, Protocol

if TYPE_CHECKING:
    from nodes.telemetry import RoundLog

DRAFT_BYTES = 250  # a draft message without hidden rows (γ = 4 token ids, the CSI report, ids), about
REQUEST_BYTES = 70  # a hidden_request message, about
UPLOAD_HEADER_BYTES = 130  # a hidden_upload message without its rows, about


def upload_costs_ms(csi: CSI, gamma: int, bytes_per_row: float, p_mismatch: float, rows_per_mismatch: float,
                    draft_bytes: float = DRAFT_BYTES, request_bytes: float = REQUEST_BYTES,
                    upload_header_bytes: float = UPLOAD_HEADER_BYTES) -> tuple[float, float]:
    """(full, mismatch-first): the expected time in ms each upload mode adds to a round of
    ``gamma`` draft tokens at ``csi``, by the one link model (:func:`channel_models.csi.transfer_ms`).
    Full: the draft carries ``gamma`` rows of ``bytes_per_row`` more — their serialisation and
    the expected retransmissions of the extra TCP segments. Mismatch-first: with probability
    ``p_mismatch`` one more exchange, a hidden_request down and ``rows_per_mismatch`` rows up."""
    full = (transfer_ms(csi, draft_bytes + gamma * bytes_per_row, "up") - transfer_ms(csi, draft_bytes, "up"))
    second = p_mismatch * round_trip_ms(csi, upload_header_bytes + rows_per_mismatch * bytes_per_row, request_bytes)
    return full, second


@dataclass
class UploadChooser:
    """Per-round choice of ``wisv-adaptive`` between full upload and mismatch-first (SPEC §6),
    both priced in ms by the one link model at the CSI in force when the draft is sent
    (:func:`upload_costs_ms`): full costs the γ rows' transfer on the uplink now, expected
    retransmissions of their extra segments included; mismatch-first costs, when the round has
    a mismatch, one more exchange carrying the mismatched rows. The cheaper wins.

    The chance of a mismatch grows with the draft's length: a draft token differs from the
    target's choice with probability ``p_token`` (failures per token tried up to the first
    mismatch, averaged over rounds: a running mean at first, exponential with weight ``alpha``
    later), so a round of g tokens has one with 1 − (1 − p_token)^g — a short last round rarely
    needs the second exchange.
    ``bytes_per_row``: one row on the wire (wire dtype × wire width)."""

    bytes_per_row: int
    alpha: float = 0.05  # slow: a round's mismatch says little about the next one's (benchmarks/upload_crossover.py)
    p_token: float = 0.15
    rows_per_mismatch: float = 1.0
    _failures: float = 0.15  # averaged mismatches per round …
    _tried: float = 1.0  # … and draft tokens tried per round (up to and including the first mismatch)
    _rounds: int = 0  # rounds observed (the prior counts as one)
    _asked: int = 0  # rounds whose rows the edge asked for

    def p_mismatch(self, gamma: int) -> float:
        """Chance that a round of ``gamma`` draft tokens has a mismatch (0–1)."""
        return 1.0 - (1.0 - self.p_token) ** gamma

    def costs_ms(self, gamma: int, csi: CSI) -> tuple[float, float]:
        """(full, mismatch-first) expected ms added to a round of ``gamma`` draft tokens at ``csi``."""
        return upload_costs_ms(csi, gamma, self.bytes_per_row, self.p_mismatch(gamma),
                               min(self.rows_per_mismatch, gamma))

    def choose(self, gamma: int, csi: CSI) -> str:
        """``all`` or ``mismatch`` for a round of ``gamma`` draft tokens."""
        full_ms, sel_ms = self.costs_ms(gamma, csi)
        return "all" if full_ms <= sel_ms else "mismatch"

    def observe(self, drafted: int, first_mismatch: int, rows: int = 0) -> None:
        """Update the statistics with a finished round of ``drafted`` tokens: its first mismatch
        (−1: none) and, when the edge asked for them, how many rows it requested."""
        mismatch = 0 <= first_mismatch < drafted
        self._rounds += 1
        w = max(self.alpha, 1.0 / (self._rounds + 1))  # a running mean until 1/alpha rounds, then exponential
        self._failures += w * (float(mismatch) - self._failures)
        self._tried += w * ((first_mismatch + 1 if mismatch else drafted) - self._tried)
        self.p_token = min(1.0, self._failures / max(self._tried, 1e-9))
        if rows:
            self._asked += 1
            self.rows_per_mismatch += max(self.alpha, 1.0 / (self._asked + 1)) * (rows - self.rows_per_mismatch)


class AdaptiveUploadDevice(DeviceSide):
    """Uploads ``all`` or ``mismatch`` per round, whichever :class:`UploadChooser` prices cheaper."""

    def __init__(self, protocol: Protocol, setup: DeviceSetup):
        super().__init__(protocol, setup)
        self.chooser = UploadChooser(setup.bytes_per_row)

    def upload(self, drafted: int, csi: CSI) -> str:
        """``all`` or ``mismatch`` for a draft of ``drafted`` tokens sent at ``csi``."""
        return self.chooser.choose(drafted, csi)

    def observe(self, record: "RoundLog") -> None:
        """Learn from the verdict where the draft differed, and how many rows the edge asked for."""
        self.chooser.observe(record.drafted, record.first_mismatch,
                             record.hidden_rows if record.upload == "mismatch" else 0)
