"""Gilbert–Elliott two-state (good/bad) Markov channel, for bursty outages.

Per step the chain moves good→bad with probability p and bad→good with probability r, so the
stationary fraction of time in the bad state is p / (p + r) and the mean burst is 1/r steps.
Sojourns are drawn as geometric run lengths, which makes hour-long 1 ms series cheap.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GilbertElliottSpec:
    """p_good_to_bad, p_bad_to_good: per-step transition probabilities (0–1].
    bad_snr_penalty_db: SNR drop in the bad state; bad_loss, good_loss: packet loss added per state."""

    p_good_to_bad: float = 0.001
    p_bad_to_good: float = 0.02
    bad_snr_penalty_db: float = 15.0
    good_loss: float = 0.0
    bad_loss: float = 0.0

    def __post_init__(self) -> None:
        for name in ("p_good_to_bad", "p_bad_to_good"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {v}")
        for name in ("good_loss", "bad_loss"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")

    @property
    def stationary_bad(self) -> float:
        """Stationary probability of the bad state, p / (p + r)."""
        return self.p_good_to_bad / (self.p_good_to_bad + self.p_bad_to_good)


def gilbert_elliott_states(spec: GilbertElliottSpec, n_steps: int,
                           rng: np.random.Generator) -> np.ndarray:
    """Boolean array, True where the channel is in the bad state; starts in the stationary law."""
    if n_steps <= 0:
        return np.zeros(0, dtype=bool)
    bad = bool(rng.random() < spec.stationary_bad)
    pieces: list[np.ndarray] = []
    total = 0
    while total < n_steps:
        # Draw many sojourns at once, alternating the current state and the other one.
        k = int(n_steps * min(spec.p_good_to_bad, spec.p_bad_to_good)) + 16
        runs = np.empty(2 * k, dtype=np.int64)
        runs[0::2] = rng.geometric(spec.p_bad_to_good if bad else spec.p_good_to_bad, k)
        runs[1::2] = rng.geometric(spec.p_good_to_bad if bad else spec.p_bad_to_good, k)
        states = np.empty(2 * k, dtype=bool)
        states[0::2], states[1::2] = bad, not bad
        pieces.append(np.repeat(states, runs))
        total += int(runs.sum())
        # An even number of runs ends in the other state, so the next run starts in ``bad`` again.
    return np.concatenate(pieces)[:n_steps]
