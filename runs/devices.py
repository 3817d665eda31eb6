"""The devices of a run, resolved once for both modes: device k runs
:meth:`nodes.config.RunConfig.for_device` ``(k)`` (its id ``dev<k>`` and its own slice of the
problems) over its own link, which replays trace k; the simulated link of device k draws its
losses from :func:`link_seed`. The simulator (:func:`runs.simulate.simulate`) and the emulation
(:meth:`runs.api.Testbed.run_protocol`) both call :func:`resolve_devices`, so one spec runs the
same devices with the same configs either way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from nodes.config import RunConfig

T = TypeVar("T")
DEVICE_SEED_STRIDE = 1_000_000  # device k's link seed: the run's seed + k · this


def link_seed(seed: int, index: int) -> int:
    """The seed of device ``index``'s simulated link losses: the run's ``seed`` for device 0
    (so a one-device run draws what it always drew), ``seed + index`` · 10⁶ for the others."""
    return seed + index * DEVICE_SEED_STRIDE


def device_tag(protocol: str, index: int, n_devices: int) -> str:
    """The suffix of a device's log files (``rounds-<tag>.jsonl``, ``requests-<tag>.json``):
    the protocol alone with one device, ``<protocol>-d<k>`` with several."""
    return protocol if n_devices == 1 else f"{protocol}-d{index}"


@dataclass(frozen=True)
class DeviceSetup(Generic[T]):
    """Device ``index`` of a run: its config, the trace its link replays (a file or a loaded
    trace) and the seed of its simulated link's losses."""

    index: int
    config: RunConfig
    trace: T
    link_seed: int


def resolve_devices(cfg: RunConfig, traces: list[T]) -> list[DeviceSetup[T]]:
    """One device per entry of ``traces`` (device k replays ``traces[k]``): its config
    ``cfg.for_device(k)`` and link seed :func:`link_seed` ``(cfg.seed, k)``."""
    if not traces:
        raise ValueError("a run has at least one device (one trace per device)")
    return [DeviceSetup(k, cfg.for_device(k), t, link_seed(cfg.seed, k)) for k, t in enumerate(traces)]
