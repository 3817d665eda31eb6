"""Compute profiles: emulate slower hardware with small models by padding measured compute time.

A device profile gives ms per draft token; an edge profile ``a + b·γ`` ms per verification.
When the measured time is shorter, the node sleeps the difference and logs it as padding
(``pad_ms``); when it is longer nothing is added (a profile can slow a node down, never speed it
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

    def pad(self, measured_ms: float, n_tokens: int) -> float:
        """Sleep until the emulated time is reached; returns the padding in ms (0 if none)."""
        if not self.enabled:
            return 0.0
        extra = self.target_ms(n_tokens) - measured_ms
        if extra <= 0:
            return 0.0
        end = time.perf_counter() + extra / 1000.0
        while (left := end - time.perf_counter()) > 0:
            time.sleep(left if left > 0.001 else 0)
        return extra
