"""A key/value cache with batch slots (gpt-fast style: sized once by ``max_batch_size`` x ``max_len``).

Each slot holds one sequence (one device's session at the edge); its first ``lengths[slot]``
positions are valid. Rows are extended by :class:`nodes.decoding.batched_lm.BatchedLM` and rolled
back one at a time (:meth:`SlotCache.crop`): a rollback is setting that row's length, the other rows
untouched. Buffers start zeroed, so positions beyond a row's length (never written, or left by a
rollback) are finite: a masked-out key must not be NaN, or the masked softmax turns NaN too.
"""
from __future__ import annotations

import torch


class SlotCache:
    """Per-layer key and value buffers [max_batch_size, kv_heads, max_len, head_dim] with a length
    per slot and a free list (:meth:`acquire` / :meth:`release`). ``layers=0`` keeps the
    bookkeeping only (a model outside the lean family keeps its keys per slot elsewhere)."""

    def __init__(self, layers: int, max_batch_size: int, max_len: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        if max_batch_size < 1 or max_len < 1:
            raise ValueError("max_batch_size and max_len must be >= 1")
        shape = (max_batch_size, kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.lengths = [0] * max_batch_size
        self.max_len = max_len
        self._free = list(range(max_batch_size))

    @property
    def max_batch_size(self) -> int:
        """Number of slots."""
        return len(self.lengths)

    @property
    def free_slots(self) -> int:
        """Slots not held by a sequence."""
        return len(self._free)

    def acquire(self) -> int:
        """A free slot, emptied; RuntimeError when all ``max_batch_size`` are held."""
        if not self._free:
            raise RuntimeError(f"all {self.max_batch_size} cache slots are in use")
        slot = self._free.pop(0)
        self.lengths[slot] = 0
        return slot

    def release(self, slot: int) -> None:
        """Give ``slot`` back (its contents are dropped)."""
        self.check(slot)
        if slot in self._free:
            raise ValueError(f"slot {slot} is not held")
        self.lengths[slot] = 0
        self._free.append(slot)
        self._free.sort()

    def crop(self, slot: int, length: int) -> None:
        """Keep only the first ``length`` positions of ``slot`` (no-op if it holds no more)."""
        self.check(slot)
        if length < 0:
            raise ValueError("length must be >= 0")
        self.lengths[slot] = min(self.lengths[slot], length)

    def check(self, slot: int) -> None:
        """IndexError unless ``slot`` is one of this cache's slots."""
        if not 0 <= slot < self.max_batch_size:
            raise IndexError(f"slot {slot} outside 0..{self.max_batch_size - 1}")
