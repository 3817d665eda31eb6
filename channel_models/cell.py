"""One cell shared by many devices: the TTI schedulers (one registry) and a fluid cell model.

**Schedulers.** Every scheduling interval (TTI, 1 ms by default) a scheduler divides the cell's
resources (a unit of time × frequency) among the devices that have data queued. A device ``i``
given share ``s_i`` of the TTI may send ``s_i · r_i · TTI / 8`` bytes, ``r_i`` being the rate
(bit/s) its own channel gives it in that TTI. Common rules (:meth:`CellScheduler.allocate`):

* a device with nothing queued, or whose channel gives rate 0 (LENA: CQI 0, "out of range"),
  takes no share; a lone device gets the whole cell;
* work conserving: a device that needs less than its share gets just what empties its queue,
  and the leftover goes to the others (LENA's schedulers do not do this: they size transport
  blocks by resource blocks, not by the queue);
* the grant (bytes) never exceeds the device's backlog.

The three entries of :data:`SCHEDULERS` follow ns-3 LENA (nsnam/ns-3-dev-git,
``src/lte/model/rr-ff-mac-scheduler.cc``, ``pf-ff-mac-scheduler.cc``) in the fluid limit
(resource blocks infinitely fine):

* ``round-robin``: LENA gives each active UE ``rbgNum / nTbs`` RBGs per TTI, starting from the
  UE after the last one served; here every active device gets an equal share (max-min water
  filling of the TTI when some need less).
* ``proportional-fair``: LENA gives each RBG to the UE with the largest
  ``achievableRate / lastAveragedThroughput`` and, after the TTI, updates *every* UE's average
  ``R̄ ← (1 − 1/T)·R̄ + (1/T)·(bytes sent this TTI / TTI)`` with ``m_timeWindow`` T = 99 TTIs,
  starting from R̄ = 1 B/s. The metric does not change within a TTI, so with one wideband rate per
  device LENA's PF gives the whole TTI to the device of largest ``r_i / R̄_i``; here devices whose
  metric ties (relative 1e-9) split it equally, and leftover goes down the metric order.
* ``max-rate``: the TTI to the device of largest ``r_i`` (LENA's ``FdMtFfMacScheduler``), ties
  split, leftover down the rate order.

**Fluid model.** :func:`simulate_cell` drives a scheduler over time with a channel per device
(:class:`ConstantChannel`, :class:`traces.schedule.ScheduleChannel` from a trace's rate column, or
:class:`RayleighChannel`: block Rayleigh fading mapped SNR → rate by ``channel_models.mapping``)
and traffic per device (backlogged or bursts), and returns per-device throughput, shares, active
counts and the queueing delay of every burst (:class:`CellRun`). Pure numpy, no root.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from channel_models.fading import FadingSpec, fading_gain
from channel_models.mapping import LinkMapping, ShannonMapping

DEFAULT_TTI_MS = 1.0
LENA_PF_TIME_WINDOW_TTI = 99.0  # PfFfMacScheduler::m_timeWindow
LENA_PF_INITIAL_AVERAGE_BPS = 8.0  # lastAveragedThroughput starts at 1 byte/s
_TIE_REL = 1e-9


@dataclass(frozen=True)
class Allocation:
    """One TTI's decision: ``grant_bytes`` each device may send (≤ its backlog), ``share`` of the
    TTI's resources each device uses (sums to ≤ 1), and ``active``, the number of devices that had
    data queued and a usable channel."""

    grant_bytes: np.ndarray
    share: np.ndarray
    active: int


def _waterfill(need: list[float], members: list[int], capacity: float, share: list[float]) -> float:
    """Split ``capacity`` (a fraction of the TTI) equally among ``members``; one that needs less
    (``need``, a fraction of the TTI) gets its need and the rest is re-split. Writes ``share``;
    returns the capacity left."""
    order = sorted(members, key=need.__getitem__)
    left = capacity
    for k, i in enumerate(order):
        give = min(need[i], left / (len(order) - k))
        share[i] = give
        left -= give
    return max(left, 0.0)


def _tie_groups(members: list[int], priority: list[float]) -> list[list[int]]:
    """``members`` in decreasing ``priority``, grouped where priorities tie (relative 1e-9)."""
    order = sorted(members, key=lambda i: -priority[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and abs(priority[i] - priority[groups[-1][0]]) <= _TIE_REL * max(abs(priority[groups[-1][0]]), 1e-300):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class CellScheduler(ABC):
    """A TTI scheduler for ``n_devices`` devices; keeps its own state between TTIs (averages).
    Subclasses give the priority of each active device; :meth:`allocate` does the rest. The core
    works on plain lists (a cell has few devices, and the element calls it every millisecond)."""

    name = "base"

    def __init__(self, n_devices: int, tti_ms: float = DEFAULT_TTI_MS):
        if n_devices < 1:
            raise ValueError("a cell needs at least one device")
        if tti_ms <= 0:
            raise ValueError("tti_ms must be positive")
        self.n_devices, self.tti_ms = int(n_devices), float(tti_ms)

    @abstractmethod
    def _priority(self, rate_bps: list[float]) -> list[float] | None:
        """Priority of each device this TTI (larger first), None for equal shares."""

    def _update(self, sent_bytes: list[float]) -> None:
        """Hook after each TTI with the bytes each device was granted."""

    def allocate_lists(self, backlog_bytes: list[float], rate_bps: list[float]) -> tuple[list[float], list[float], int]:
        """:meth:`allocate` on plain lists: (grant bytes, shares, active devices)."""
        n = self.n_devices
        if len(backlog_bytes) != n or len(rate_bps) != n:
            raise ValueError(f"expected {n} backlogs and rates")
        bytes_per_bps = self.tti_ms / 8000.0
        capacity = [r * bytes_per_bps for r in rate_bps]  # bytes the whole TTI would carry
        active = [i for i in range(n) if backlog_bytes[i] > 0 and capacity[i] > 0]
        share = [0.0] * n
        if active:
            need = [backlog_bytes[i] / capacity[i] if capacity[i] > 0 else 0.0 for i in range(n)]
            priority = self._priority(rate_bps)
            left = 1.0
            for group in ([active] if priority is None else _tie_groups(active, priority)):
                if left <= 0.0:
                    break
                left = _waterfill(need, group, left, share)
        grant = [min(share[i] * capacity[i], backlog_bytes[i]) if share[i] > 0 else 0.0 for i in range(n)]
        self._update(grant)
        return grant, share, len(active)

    def allocate(self, backlog_bytes: np.ndarray, rate_bps: np.ndarray) -> Allocation:
        """Grants (bytes) and shares for one TTI from each device's backlog (bytes queued) and
        instantaneous achievable rate (bit/s). See the module docstring for the rules."""
        grant, share, active = self.allocate_lists([float(x) for x in np.ravel(backlog_bytes)],
                                                   [float(x) for x in np.ravel(rate_bps)])
        return Allocation(grant_bytes=np.array(grant), share=np.array(share), active=active)


class RoundRobin(CellScheduler):
    """Equal shares among the active devices (LENA ``RrFfMacScheduler`` in the fluid limit)."""

    name = "round-robin"

    def _priority(self, rate_bps):
        return None


class ProportionalFair(CellScheduler):
    """Largest ``r_i / R̄_i`` first; R̄ is LENA's exponential average over ``time_window_tti``
    TTIs (``PfFfMacScheduler::m_timeWindow``, 99), updated every TTI for every device with what
    it was granted (0 when idle), starting from ``initial_average_bps`` (LENA: 1 B/s)."""

    name = "proportional-fair"

    def __init__(self, n_devices: int, tti_ms: float = DEFAULT_TTI_MS,
                 time_window_tti: float = LENA_PF_TIME_WINDOW_TTI,
                 initial_average_bps: float = LENA_PF_INITIAL_AVERAGE_BPS):
        super().__init__(n_devices, tti_ms)
        if time_window_tti < 1 or initial_average_bps <= 0:
            raise ValueError("time_window_tti must be >= 1 and initial_average_bps > 0")
        self.time_window_tti = float(time_window_tti)
        self._average = [float(initial_average_bps)] * self.n_devices

    @property
    def average_bps(self) -> np.ndarray:
        """Each device's R̄ in bit/s."""
        return np.array(self._average)

    @average_bps.setter
    def average_bps(self, value) -> None:
        self._average = [float(x) for x in np.ravel(value)]

    def _priority(self, rate_bps):
        return [r / a for r, a in zip(rate_bps, self._average)]

    def _update(self, sent_bytes):
        a = 1.0 / self.time_window_tti
        to_bps = a * 8000.0 / self.tti_ms
        self._average = [(1.0 - a) * avg + to_bps * b for avg, b in zip(self._average, sent_bytes)]


class MaxRate(CellScheduler):
    """Largest instantaneous rate first (LENA ``FdMtFfMacScheduler``, maximum throughput)."""

    name = "max-rate"

    def _priority(self, rate_bps):
        return list(rate_bps)


SCHEDULERS: dict[str, type[CellScheduler]] = {c.name: c for c in (RoundRobin, ProportionalFair, MaxRate)}


def make_scheduler(name: str, n_devices: int, tti_ms: float = DEFAULT_TTI_MS, **kwargs) -> CellScheduler:
    """The scheduler registered as ``name`` for ``n_devices`` devices; kwargs go to its class
    (``time_window_tti`` for ``proportional-fair``)."""
    try:
        cls = SCHEDULERS[name]
    except KeyError:
        raise ValueError(f"unknown cell scheduler {name!r}: use one of {', '.join(SCHEDULERS)}") from None
    return cls(n_devices, tti_ms, **kwargs)


# --------------------------------------------------------------------------------------------
# Channels: each device's instantaneous achievable rate, one value per TTI.


class DeviceChannel(ABC):
    """A device's own channel: its achievable rate (bit/s) in each of ``n_tti`` TTIs."""

    @abstractmethod
    def rates_bps(self, n_tti: int, tti_ms: float) -> np.ndarray:
        """Rate (bit/s) in TTIs 0 … n_tti − 1 of ``tti_ms`` each."""


@dataclass(frozen=True)
class ConstantChannel(DeviceChannel):
    """A static channel of ``rate_bps`` bit/s."""

    rate_bps: float

    def rates_bps(self, n_tti, tti_ms):
        return np.full(n_tti, float(self.rate_bps))


@dataclass(frozen=True)
class RayleighChannel(DeviceChannel):
    """Rayleigh block fading around ``mean_snr_db``: the gain is held over blocks of
    ``block_ms`` (independent draws when ``doppler_hz`` is 0, else the Clarke/Jakes process of
    ``channel_models.fading``) and mapped SNR → rate by ``mapping`` (Shannon with gap, 20 MHz,
    by default). ``seed`` makes the series reproducible; give each device its own."""

    mean_snr_db: float
    seed: int
    block_ms: float = 1.0
    doppler_hz: float = 0.0
    mapping: LinkMapping = field(default_factory=ShannonMapping)

    def rates_bps(self, n_tti, tti_ms):
        spec = FadingSpec(kind="rayleigh", doppler_hz=self.doppler_hz, block_ms=self.block_ms)
        h = fading_gain(spec, n_tti, tti_ms, np.random.default_rng(self.seed))
        snr_db = self.mean_snr_db + 10.0 * np.log10(np.maximum(np.abs(h) ** 2, 1e-12))
        return self.mapping.map(snr_db).rate_bps


# --------------------------------------------------------------------------------------------
# Traffic and the fluid cell.


@dataclass(frozen=True)
class Traffic:
    """A device's offered traffic: ``backlogged`` (always data queued) or ``bursts``, a sequence
    of (arrival ms, bytes); a burst arriving at t enters the queue at the first TTI start ≥ t."""

    backlogged: bool = False
    bursts: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if any(b < 0 or t < 0 for t, b in self.bursts):
            raise ValueError("burst times and sizes must be >= 0")


BACKLOGGED = Traffic(backlogged=True)


@dataclass(frozen=True)
class CellRun:
    """What :func:`simulate_cell` returns. Arrays are indexed [tti, device] where 2-D.

    tti_ms: the TTI; rate_bps: each device's channel rate; share: its share of each TTI;
    sent_bytes: bytes it sent in each TTI; active: devices with data queued per TTI;
    burst_delay_ms: per device, the queueing delay of each burst (arrival → end of the TTI that
    carried its last byte; NaN if unfinished at the end), in arrival order."""

    scheduler: str
    tti_ms: float
    rate_bps: np.ndarray
    share: np.ndarray
    sent_bytes: np.ndarray
    active: np.ndarray
    burst_delay_ms: tuple[np.ndarray, ...]

    @property
    def duration_s(self) -> float:
        """Simulated time in seconds."""
        return self.share.shape[0] * self.tti_ms / 1000.0

    def throughput_bps(self, skip_tti: int = 0) -> np.ndarray:
        """Each device's mean throughput (bit/s) after the first ``skip_tti`` TTIs."""
        sent = self.sent_bytes[skip_tti:]
        return sent.sum(axis=0) * 8.0 / (sent.shape[0] * self.tti_ms / 1000.0)

    def time_share(self, skip_tti: int = 0) -> np.ndarray:
        """Each device's mean share of the TTIs after the first ``skip_tti``."""
        return self.share[skip_tti:].mean(axis=0)


def simulate_cell(scheduler: CellScheduler, channels: list[DeviceChannel], traffic: list[Traffic],
                  duration_ms: float) -> CellRun:
    """Run ``scheduler`` over ``duration_ms`` with one channel and one traffic source per device
    (fluid: a grant is sent whole in its TTI). See :class:`CellRun` for what comes back."""
    n = scheduler.n_devices
    if len(channels) != n or len(traffic) != n:
        raise ValueError(f"need {n} channels and {n} traffic sources")
    tti_ms = scheduler.tti_ms
    n_tti = int(round(duration_ms / tti_ms))
    rates = np.stack([c.rates_bps(n_tti, tti_ms) for c in channels], axis=1) if n_tti else np.zeros((0, n))
    # Bytes entering each queue at each TTI start (bursts arriving in (t_{k-1}, t_k] enter at k).
    arrivals = np.zeros((n_tti, n))
    for i, tr in enumerate(traffic):
        for t, b in tr.bursts:
            k = int(np.ceil(t / tti_ms - 1e-9))
            if k < n_tti:
                arrivals[k, i] += b
    backlogged = [tr.backlogged for tr in traffic]
    queue = [0.0] * n
    share = np.zeros((n_tti, n))
    sent = np.zeros((n_tti, n))
    active = np.zeros(n_tti, dtype=np.int64)
    rate_rows, arrival_rows = rates.tolist(), arrivals.tolist()
    inf = float("inf")
    for k in range(n_tti):
        queue = [q + a for q, a in zip(queue, arrival_rows[k])]
        backlog = [inf if b else q for b, q in zip(backlogged, queue)]
        grant, sh, active[k] = scheduler.allocate_lists(backlog, rate_rows[k])
        share[k], sent[k] = sh, grant
        queue = [0.0 if b else max(q - g, 0.0) for b, q, g in zip(backlogged, queue, grant)]
    delays = []
    served_cum = np.cumsum(sent, axis=0)
    for i, tr in enumerate(traffic):
        if not tr.bursts:
            delays.append(np.zeros(0))
            continue
        t_arr = np.array([t for t, _ in tr.bursts], dtype=float)
        order = np.argsort(t_arr, kind="stable")
        need = np.cumsum(np.array([b for _, b in tr.bursts], dtype=float)[order])
        # The TTI whose cumulative service first covers the burst's last byte (FIFO per device).
        k_done = (served_cum[:, i][:, None] < (need - 1e-6)[None, :]).sum(axis=0)
        done_ms = (k_done + 1) * tti_ms
        d = np.where(k_done < n_tti, done_ms - t_arr[order], np.nan)
        out = np.empty_like(d)
        out[order] = d
        delays.append(out)
    return CellRun(scheduler=scheduler.name, tti_ms=tti_ms, rate_bps=rates, share=share, sent_bytes=sent,
                   active=active, burst_delay_ms=tuple(delays))
