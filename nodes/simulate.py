"""``wisv simulate``: the same device and edge code with the link modelled analytically from a
trace and a virtual clock — fast sweeps without root, logs in the emulated runs' schema.

Per message of ``n`` application bytes sent at virtual time t in a direction, with the trace row
in force at t (rate R bit/s, one-way delay D ms, loss p):

    time = D + 8·(n + k·66) / R · 1000 + L · rto_ms,   k = ⌈n / 1448⌉ TCP segments,

where 66 B are TCP/IP/Ethernet headers per segment and L ~ Binomial(k, p) segments are lost,
each costing one retransmission timeout (Linux's minimum RTO, 200 ms, by default; seeded).
Compute times are measured (and padded by compute profiles) and advance the virtual clock.
Messages go through the real encoder and the real edge handler, so byte counts and decisions
are those of an emulated run; ``t_start``/``t_end`` in the logs are virtual seconds.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from nodes.device import DeviceConfig, EdgeError, matches
from nodes.edge import EdgeServer
from nodes.wire import Error, Message, decode, encode, encoded_size
from traces.format import Trace

SEGMENT_BYTES = 1448
HEADER_BYTES = 66  # TCP 32 (with timestamps) + IPv4 20 + Ethernet 14


@dataclass
class AnalyticLink:
    """A trace-driven link model (see module docstring); the trace loops."""

    trace: Trace
    rto_ms: float = 200.0
    seed: int = 0
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self._cols = {c: self.trace.data[c].to_numpy(dtype=float) for c in self.trace.data.columns}

    def row(self, t_ms: float) -> dict[str, float]:
        """The trace row in force at virtual time ``t_ms`` (the trace loops)."""
        i = self.trace.row_at(t_ms % self.trace.duration_ms)
        return {c: float(v[i]) for c, v in self._cols.items()}

    def transfer_ms(self, t_ms: float, nbytes: int, direction: str, expected: bool = False) -> float:
        """Time for ``nbytes`` application bytes sent at ``t_ms`` to arrive, in ms (losses drawn,
        or their expectation when ``expected``)."""
        r = self.row(t_ms)
        k = max(1, math.ceil(nbytes / SEGMENT_BYTES))
        tx = 8.0 * (nbytes + k * HEADER_BYTES) / r[f"rate_bps_{direction}"] * 1000.0
        p = min(max(r[f"loss_{direction}"], 0.0), 1.0)
        lost = k * p if expected else int(self.rng.binomial(k, p))
        return r[f"delay_ms_{direction}"] + tx + lost * self.rto_ms

    def csi(self, t_ms: float) -> dict[str, float]:
        """The CSI report a device would send at ``t_ms``."""
        r = self.row(t_ms)
        out = {"rate_up_mbps": r["rate_bps_up"] / 1e6, "rate_down_mbps": r["rate_bps_down"] / 1e6,
               "rtt_ms": r["delay_ms_up"] + r["delay_ms_down"], "loss_up": r["loss_up"], "loss_down": r["loss_down"]}
        if "snr_db_up" in r:
            out["snr_db"] = r["snr_db_up"]
        return out


class SimTransport:
    """Hands encoded frames straight to an edge handler, charging link time to a virtual clock."""

    def __init__(self, edge: EdgeServer, link: AnalyticLink, cfg: DeviceConfig):
        self.edge, self.link, self.cfg = edge, link, cfg
        self.t_ms = 0.0
        self.ident = cfg.device_id.encode()

    def now_ms(self) -> float:
        """Virtual time in ms."""
        return self.t_ms

    def wall_s(self) -> float:
        """Virtual time in seconds (the logs' t_start/t_end in simulation)."""
        return self.t_ms / 1000.0

    def compute(self, ms: float) -> None:
        """Device compute advances the virtual clock."""
        self.t_ms += ms

    def csi(self) -> dict[str, float]:
        """CSI in force now."""
        return self.link.csi(self.t_ms)

    def exchange(self, msg: Message, expect: tuple[type, ...], stats: dict) -> Message:
        """Uplink, edge handling (measured compute), downlink, on the virtual clock."""
        frames = encode(msg, {"hidden": self.cfg.hidden_dtype, "probs": "f32"})
        up = encoded_size(frames)
        stats["up_bytes"] += up
        self.t_ms += self.link.transfer_ms(self.t_ms, up, "up")
        t0 = time.perf_counter()
        reply_frames = self.edge.handle_frames(self.ident, frames)
        self.t_ms += (time.perf_counter() - t0) * 1000.0
        if reply_frames is None:
            raise EdgeError("internal", "the edge sent no reply")
        down = encoded_size(reply_frames)
        stats["down_bytes"] += down
        self.t_ms += self.link.transfer_ms(self.t_ms, down, "down")
        reply = decode(reply_frames)
        if isinstance(reply, Error):
            raise EdgeError(reply.code, reply.message)
        if not (isinstance(reply, expect) and matches(msg, reply)):
            raise EdgeError("internal", f"unexpected reply {reply.TYPE} to {msg.TYPE}")
        stats["round_trips"] += 1
        return reply

    def send_only(self, msg: Message) -> None:
        """Deliver a message that gets no reply."""
        self.edge.handle_frames(self.ident, encode(msg))

    def close(self) -> None:
        """Nothing to close."""
