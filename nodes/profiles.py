"""Compute profiles: emulate slower hardware with small models by padding measured compute time.

A device profile gives ms per draft token; an edge profile ``a + b·γ`` ms per verification.
When the measured time is shorter, the difference is padding (``pad_ms``): a real node sleeps it,
the simulator adds it to its virtual clock, and both log it; when it is longer nothing is added (a profile can slow a node down, never speed it
up). Off by default. The project ships no default numbers: measure your hardware (e.g. with
``benchmarks/decoding.py`` on it) and pass the figures.
"""
from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ComputeProfile:
    """base_ms + per_token_ms · n tokens of compute time to emulate; all zero = off."""

    base_ms: float = 0.0
    per_token_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.base_ms < 0 or self.per_token_ms < 0:
            raise ValueError("profile times must be >= 0 ms")

    @property
    def enabled(self) -> bool:
        """True when the profile pads anything."""
        return self.base_ms > 0 or self.per_token_ms > 0

    def target_ms(self, n_tokens: int) -> float:
        """Emulated compute time for ``n_tokens`` tokens, in ms."""
        return self.base_ms + self.per_token_ms * n_tokens

    def pad_ms(self, measured_ms: float, n_tokens: int) -> float:
        """Padding in ms that brings ``measured_ms`` of compute for ``n_tokens`` tokens up to the
        profile (0 when off or when the real compute already took longer)."""
        if not self.enabled:
            return 0.0
        return max(0.0, self.target_ms(n_tokens) - measured_ms)


def sleep_ms(ms: float) -> None:
    """Sleep ``ms`` milliseconds precisely (the last millisecond spins)."""
    end = time.perf_counter() + ms / 1000.0
    while (left := end - time.perf_counter()) > 0:
        time.sleep(left - 0.001 if left > 0.002 else 0)
