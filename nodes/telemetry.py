"""Per-round logs written as they happen: one JSON line per round, appended and flushed, so a
killed run keeps every round it finished (SPEC §5 fields). Every line is flat: the CSI report
becomes ``csi_*`` columns, the same in the Python API, the CLI and the Parquet tables
(docs/reports-and-sweeps.md: output schema)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from channel_models.csi import CSI, CSI_LOG_COLUMNS


@dataclass
class RoundLog:
    """One interaction round as the device saw it, joined with what the edge reported of it.

    The decision columns carry the names they have from the edge's policy
    (:class:`nodes.decoding.policies.Decision`) through the wire
    (:class:`nodes.wire.Verdict`) to this line: ``accepted``, ``accepted_exact``,
    ``first_mismatch`` (−1: none), ``harmless``, ``next_token``. ``gamma`` is the draft length
    the device asked this round (its protocol's choice; 0: the edge decoded alone), ``drafted``
    what the drafter produced (fewer at an EOS). Bytes are application bytes (all frames of
    every message of the round). Times in ms: ``draft_ms`` on the device; ``verify_ms`` the
    edge's compute (forward + policy, profile padding included); ``edge_queue_ms`` the time the
    round's messages waited at the edge between their arrival at its socket and the start of
    their handling; ``edge_ms`` their whole stay at the edge (arrival to reply: queue, compute,
    decoding); ``link_ms`` = ``wall_ms`` − ``draft_ms`` − ``edge_ms``: link time only.
    ``t_start``/``t_end`` are the device's wall clock and ``t_edge_arrival``/``t_edge_reply``
    the edge's (epoch s; virtual seconds in simulation; 0: not reported). ``end_reason``: '' on
    a round that did not end its request, else why the request ended (``eos``, ``budget``:
    ``max_new_tokens`` reached). ``csi`` is the channel report sent with the draft."""

    run_id: str
    protocol: str
    device_id: str
    request_id: str
    round: int
    drafted: int
    accepted: int
    accepted_exact: int
    first_mismatch: int
    harmless: int
    next_token: int
    up_bytes: int
    down_bytes: int
    round_trips: int
    draft_ms: float
    verify_ms: float
    link_ms: float
    wall_ms: float
    t_start: float
    t_end: float
    retries: int = 0
    csi: CSI = field(default_factory=CSI)
    draft_pad_ms: float = 0.0   # compute-profile padding inside draft_ms
    verify_pad_ms: float = 0.0  # compute-profile padding inside verify_ms
    wire_up_bytes: int = -1     # on-wire (L2) bytes the device's interface sent in the round; -1: not counted
    wire_down_bytes: int = -1   # on-wire (L2) bytes it received
    upload: str = ""            # hidden states sent: "all", "mismatch" (on request) or "" (none)
    gamma: int = 0              # draft length asked this round (tokens)
    hidden_rows: int = 0        # drafter hidden rows uploaded this round
    end_reason: str = ""        # '' (the request goes on), 'eos', 'budget', …
    edge_queue_ms: float = 0.0  # waited at the edge before handling
    edge_ms: float = 0.0        # at the edge in all: arrival to reply
    t_edge_arrival: float = 0.0  # the round's first message reached the edge (its clock, epoch s)
    t_edge_reply: float = 0.0    # the edge handed the round's last reply to its socket

    @classmethod
    def columns(cls) -> list[str]:
        """The flat columns of a log line, in order."""
        return [f.name for f in fields(cls) if f.name != "csi"] + list(CSI_LOG_COLUMNS)

    def to_record(self) -> dict[str, Any]:
        """The flat record of a log line (``csi_*`` columns)."""
        rec = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "csi"}
        return {**rec, **self.csi.log_columns()}


class RoundLogger:
    """Appends records to a JSONL file, flushing each line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: RoundLog | dict[str, Any]) -> None:
        """Append one record and flush it to the OS."""
        rec = record.to_record() if isinstance(record, RoundLog) else record
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()

    def close(self) -> None:
        """Close the file."""
        self._f.close()
