"""Compute profiles: the compute time of a node as if it ran on given hardware.

A profile charges ``base_ms + per_token_ms·n + prefill_ms_per_token·p`` for a forward step that
produces or checks ``n`` tokens after prefilling ``p`` uncached prompt tokens; the device pays it
per draft token (``base_ms`` 0, one step per token), the edge once per verification of γ tokens.
An emulated node pads its measured compute up to the profile (sleeps the difference, logs it as
padding, warns when the real compute took longer); the simulator charges the profile's time
exactly, so a simulation is a pure function of its spec. ``measured`` (all zero) charges the
measured time.

Presets (:data:`PRESETS`) stand for the paper's hardware class. Batch-1 decoding is bound by
memory bandwidth: each step reads every weight once, so a step costs weight bytes / effective
bandwidth, whatever the few tokens it handles; checking γ + 1 tokens adds their compute (2 FLOP
per parameter per token) at a fraction of peak tensor throughput. Sources
(docs/reports-and-sweeps.md: compute profiles): model sizes from the model cards, bandwidth and FP16 tensor throughput from the
vendors' datasheets; the efficiency factors are our assumptions, stated per preset.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComputeProfile:
    """Compute time to emulate, in ms (see the module docstring); all zero = measured."""

    base_ms: float = 0.0
    per_token_ms: float = 0.0
    prefill_ms_per_token: float = 0.0
    name: str = "measured"

    def __post_init__(self) -> None:
        if min(self.base_ms, self.per_token_ms, self.prefill_ms_per_token) < 0:
            raise ValueError("profile times must be >= 0 ms")

    @property
    def enabled(self) -> bool:
        """True when the profile sets the time (False: measured)."""
        return self.base_ms > 0 or self.per_token_ms > 0 or self.prefill_ms_per_token > 0

    def target_ms(self, n_tokens: int, n_prefill: int = 0) -> float:
        """Emulated compute time in ms for ``n_tokens`` tokens after ``n_prefill`` prompt tokens."""
        return self.base_ms + self.per_token_ms * n_tokens + self.prefill_ms_per_token * n_prefill

    def charge(self, measured_ms: float, n_tokens: int, n_prefill: int = 0, exact: bool = False) -> tuple[float, float]:
        """(charged ms, padding ms) of a step that really took ``measured_ms``: the profile's time
        when ``exact`` (simulation), else the measured time padded up to it (emulation); measured
        profiles charge the measured time."""
        if not self.enabled:
            return measured_ms, 0.0
        target = self.target_ms(n_tokens, n_prefill)
        if exact:
            return target, max(0.0, target - measured_ms)
        if measured_ms > target:
            log.warning("%s: real compute %.1f ms exceeds the profile's %.1f ms (%d tokens): the emulated node "
                        "is slower than the hardware it stands for", self.name, measured_ms, target, n_tokens)
        return max(measured_ms, target), max(0.0, target - measured_ms)

    def to_dict(self) -> dict:
        """JSON-able fields."""
        return asdict(self)


@dataclass(frozen=True)
class HardwarePreset:
    """How a preset was derived: weights in bytes, effective bandwidth in GB/s, FP16 tensor
    throughput in TFLOP/s and the share of it reached, and the sources."""

    profile: ComputeProfile
    weight_bytes: float
    bandwidth_gb_s: float
    bandwidth_efficiency: float
    tflops_fp16: float
    tflops_efficiency: float
    sources: str


def _derive(name: str, params: float, bandwidth_gb_s: float, bw_eff: float, tflops: float, fl_eff: float,
            per_step: bool, sources: str) -> HardwarePreset:
    """A bandwidth-bound step (fp16 weights read once) plus 2·params FLOP per token."""
    step_ms = 2.0 * params / (bandwidth_gb_s * 1e9 * bw_eff) * 1000.0
    token_ms = 2.0 * params / (tflops * 1e12 * fl_eff) * 1000.0
    profile = (ComputeProfile(step_ms, token_ms, token_ms, name) if per_step
               else ComputeProfile(0.0, step_ms + token_ms, token_ms, name))
    return HardwarePreset(profile, 2.0 * params, bandwidth_gb_s, bw_eff, tflops, fl_eff, sources)


PRESETS: dict[str, HardwarePreset] = {p.profile.name: p for p in (
    # Device: Llama-3.2-1B (1.24 B parameters, fp16) on a Jetson AGX Orin 64GB: 204.8 GB/s LPDDR5,
    # 42.5 TFLOP/s dense FP16 tensor (sparse figures halved); 60 % of the bandwidth, 30 % of the FLOPs.
    _derive("jetson-agx-orin/llama-3.2-1b", 1.24e9, 204.8, 0.60, 42.5, 0.30, per_step=False,
            sources="NVIDIA Jetson AGX Orin series data sheet (DS-10662); Meta Llama-3.2-1B model card"),
    # Edge: Llama-3.1-8B (8.03 B parameters, fp16) on an NVIDIA A40: 696 GB/s GDDR6, 149.7 TFLOP/s
    # dense FP16 tensor; 75 % of the bandwidth, 40 % of the FLOPs.
    _derive("a40/llama-3.1-8b", 8.03e9, 696.0, 0.75, 149.7, 0.40, per_step=True,
            sources="NVIDIA A40 data sheet; Meta Llama-3.1-8B model card"),
)}
DEFAULT_DEVICE_PROFILE = "jetson-agx-orin/llama-3.2-1b"
DEFAULT_EDGE_PROFILE = "a40/llama-3.1-8b"


def profile_from_spec(value: str | dict | None) -> ComputeProfile:
    """A profile from a spec value: ``measured``/None, a preset name, or explicit times
    (``{base_ms, per_token_ms, prefill_ms_per_token}``)."""
    if value is None or value == "measured":
        return ComputeProfile()
    if isinstance(value, str):
        if value not in PRESETS:
            raise ValueError(f"unknown compute profile {value!r}; known: measured, {', '.join(PRESETS)}")
        return PRESETS[value].profile
    return ComputeProfile(**{"name": "custom", **value})


def sleep_ms(ms: float) -> None:
    """Sleep ``ms`` milliseconds precisely (the last millisecond spins)."""
    end = time.perf_counter() + ms / 1000.0
    while (left := end - time.perf_counter()) > 0:
        time.sleep(left - 0.001 if left > 0.002 else 0)
