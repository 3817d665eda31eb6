"""The link state a replayer applied, published for the device that sits behind the link.

One small fixed-size file per device link (``link-state-d<k>.bin`` in the run directory),
memory-mapped by the replay thread (:class:`LinkStateWriter`) and by the device process
(:class:`LinkStateReader`): each applied step overwrites it, so the device's CSI report is the
step the link is shaped with now — a step the replayer missed is never reported.

Why a mapped file and not a socket: the replay thread is real-time, and publishing here is a
few stores into shared memory (no system call, never blocks, no queue to fill when the device is
busy); the device needs only the latest state, never the history; it is there before the device
starts (the first row is applied before the device process is launched: no slow-joiner window as
with a PUB/SUB socket), and it survives the run for inspection. Mininet hosts share the file
system, so the run directory reaches every device host.

Layout (little-endian, :data:`LAYOUT`): a sequence counter (u64), then step number (i64), the
trace ms the step came into force at, applied wall clock (epoch s), and the link values
(:data:`traces.schedule.LINK_COLUMNS`, rates bit/s, delays ms, losses 0–1) and the uplink SNR
in dB (NaN: none), as float64. The counter is a seqlock: odd while a write is in progress, so
a reader retries instead of taking a torn record.
"""
from __future__ import annotations

import math
import mmap
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from channel_models.csi import CSI
from traces.schedule import LINK_COLUMNS

LAYOUT = struct.Struct("<Qqdd" + "d" * (len(LINK_COLUMNS) + 1))
_SEQ = struct.Struct("<Q")


@dataclass(frozen=True)
class AppliedStep:
    """One step as the replayer applied it: step number, trace ms, applied wall clock (epoch
    s), and the link values keyed by :data:`traces.schedule.LINK_COLUMNS` plus ``snr_db_up``."""

    step: int
    t_ms: float
    applied_epoch_s: float
    values: dict[str, float]

    def csi(self) -> CSI:
        """The CSI report of this step."""
        return CSI.from_row(self.values)


def link_state_path(run_dir: Path, device: int) -> Path:
    """Where device ``device``'s applied link state is published in a run directory."""
    return Path(run_dir) / f"link-state-d{device}.bin"


class LinkStateWriter:
    """Publishes applied steps into one device's link-state file (created, zeroed, mapped)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Never truncated (a reader's mapping of a shrunk file would fault): sized, then zeroed.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size != LAYOUT.size:
                os.ftruncate(fd, LAYOUT.size)
            self._map = mmap.mmap(fd, LAYOUT.size)
        finally:
            os.close(fd)
        self._map[:] = bytes(LAYOUT.size)
        self._seq = 0

    def publish(self, step: int, t_ms: float, applied_epoch_s: float, values: dict[str, float]) -> None:
        """Overwrite the state with one applied step (``values``: the link columns, bit/s, ms,
        0–1, and optionally ``snr_db_up`` in dB)."""
        snr = values.get("snr_db_up", math.nan)
        self._seq += 1  # odd: writing
        _SEQ.pack_into(self._map, 0, self._seq)
        LAYOUT.pack_into(self._map, 0, self._seq, int(step), float(t_ms), float(applied_epoch_s),
                         *(float(values[c]) for c in LINK_COLUMNS), float(snr))
        self._seq += 1  # even: complete
        _SEQ.pack_into(self._map, 0, self._seq)

    def close(self) -> None:
        """Unmap (the file keeps the last state)."""
        if not self._map.closed:
            self._map.close()


class LinkStateReader:
    """Reads one device's link-state file (mapped once it exists)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._map: mmap.mmap | None = None

    def _mapped(self) -> mmap.mmap | None:
        if self._map is None:
            try:
                with open(self.path, "rb") as f:
                    if os.fstat(f.fileno()).st_size < LAYOUT.size:
                        return None
                    self._map = mmap.mmap(f.fileno(), LAYOUT.size, prot=mmap.PROT_READ)
            except FileNotFoundError:
                return None
        return self._map

    def read(self, timeout_s: float = 0.5) -> AppliedStep | None:
        """The latest applied step; None before the first one was published. A write in
        progress is waited out (yielding between tries), for at most ``timeout_s``."""
        m = self._mapped()
        if m is None:
            return None
        deadline = time.monotonic() + timeout_s
        while True:
            rec = LAYOUT.unpack_from(m, 0)
            seq = rec[0]
            if seq == 0:
                return None
            if seq % 2 == 0 and _SEQ.unpack_from(m, 0)[0] == seq:
                values = dict(zip(LINK_COLUMNS, rec[4:4 + len(LINK_COLUMNS)]))
                values["snr_db_up"] = rec[-1]
                return AppliedStep(int(rec[1]), rec[2], rec[3], values)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.path}: link state kept changing while read for {timeout_s:g} s")
            time.sleep(0)  # let a writer in this process finish its record

    def csi(self) -> CSI:
        """The CSI report of the step the link applies now (an unknown channel's report before any)."""
        s = self.read()
        return CSI() if s is None else s.csi()

    def close(self) -> None:
        """Unmap."""
        if self._map is not None:
            self._map.close()
            self._map = None
