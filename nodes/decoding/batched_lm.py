"""A causal LM serving several sequences at once: one forward appends a ragged block to each.

:class:`BatchedLM` keeps one :class:`~nodes.decoding.slots.SlotCache` row per sequence. A forward
takes, per row, a slot and a block of tokens of any length (a prefill, one token, a draft block);
the blocks are right-padded to the longest, each row gets its own positions (its slot's length
onwards), and one boolean mask [rows, 1, q, keys] lets query ``j`` of row ``b`` see that slot's
keys ``0 .. length_b + min(j, n_b - 1)``: causal within the row, the row's padding and every
position of its slot beyond its length masked (padding queries repeat the row's last real query's
view, so no query row is all masked). Only the real positions are written to the slots.

Numerics (fp32, tested in ``tests/test_batched_core.py``): a forward of one row runs the exact
operations of :class:`~nodes.decoding.lm.CachedLM` (transformers' three sdpa paths), so it is bitwise
the batch-1 forward. A forward of several rows runs the same layer stack on [rows, q, H] with a
masked sdpa over the longest row's keys; each row equals its batch-1 forward within
``1e-5 + 1e-5 |x|`` (measured up to 9e-6 on logits of magnitude 17), not bitwise: the matrix products
see another M and the attention another key length and mask, so the kernels block their sums
differently.

Models outside the lean family (see :func:`~nodes.decoding.lm.lean_unsupported`) keep a
transformers ``DynamicCache`` per slot and run their rows one after another: the same API and
numbers, no batching gain.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from nodes.decoding.lm import (CachedLM, _repeat_kv, _rms_norm, attend_one, decoder_stack, lean_layers,
                               lean_unsupported, one_row_mask, rotary_tables)
from nodes.decoding.slots import SlotCache

DEFAULT_MAX_LEN = 4096


class BatchedLM:
    """Wraps a Hugging Face causal LM with a slot cache for ``max_batch_size`` sequences of at most
    ``max_len`` positions each (default: the model's ``max_position_embeddings``, at most 4096).
    ``lean=False`` forces the transformers decoder (rows one at a time)."""

    def __init__(self, model: torch.nn.Module, max_batch_size: int = 8, max_len: int | None = None,
                 lean: bool = True, pad_token_id: int = 0):
        self.model = model
        self._decoder = model.get_decoder()
        self._head = model.get_output_embeddings()
        p = next(model.parameters())
        self.device = p.device
        self.pad_token_id = pad_token_id
        max_len = max_len or min(int(getattr(model.config, "max_position_embeddings", DEFAULT_MAX_LEN)),
                                 DEFAULT_MAX_LEN)
        self.lean = lean and lean_unsupported(model) is None
        if self.lean:
            attn = self._decoder.layers[0].self_attn
            self._head_dim, self._groups, self._scaling = attn.head_dim, attn.num_key_value_groups, attn.scaling
            self._layers = lean_layers(self._decoder)
            self.cache = SlotCache(len(self._layers), max_batch_size, max_len, model.config.num_key_value_heads,
                                   self._head_dim, p.dtype, p.device)
            self._rows: list[CachedLM] = []
        else:
            self.cache = SlotCache(0, max_batch_size, max_len, 0, 0, p.dtype, p.device)
            self._rows = [CachedLM(model, lean=False) for _ in range(max_batch_size)]

    @property
    def hidden_size(self) -> int:
        """Width of the last-layer hidden state."""
        return int(self.model.config.hidden_size)

    def length(self, slot: int) -> int:
        """Cached positions of ``slot``."""
        self.cache.check(slot)
        return self.cache.lengths[slot]

    def acquire(self) -> int:
        """An empty slot for a new sequence (RuntimeError when all are held)."""
        slot = self.cache.acquire()
        if self._rows:
            self._rows[slot].reset()
        return slot

    def release(self, slot: int) -> None:
        """Give ``slot`` back."""
        self.cache.release(slot)

    def reset(self, slot: int) -> None:
        """Empty ``slot`` (a new request on the same session)."""
        self.crop(slot, 0)

    def crop(self, slot: int, length: int) -> None:
        """Keep only the first ``length`` cached positions of ``slot`` (the other rows untouched)."""
        self.cache.crop(slot, length)
        if self._rows:
            self._rows[slot].crop(self.cache.lengths[slot])

    @torch.inference_mode()
    def forward(self, slots: Sequence[int], blocks: Sequence[Sequence[int]],
                keep: Sequence[int] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Append ``blocks[b]`` (token ids, at least one) to slot ``slots[b]`` for every row in one
        forward; returns per row (logits [keep_b, V] fp32, hidden [keep_b, H]) of its last ``keep[b]``
        positions (default 1). ValueError for repeated slots, an empty block, a ``keep`` outside
        1..len(block), or a row that would outgrow ``max_len``; nothing is written then."""
        keep = [1] * len(slots) if keep is None else list(keep)
        self._validate(slots, blocks, keep)
        if not self.lean:
            out = [self._rows[s].forward(list(b), k) for s, b, k in zip(slots, blocks, keep)]
        elif len(slots) == 1:
            hidden = self._forward_one(slots[0], blocks[0])[0, -keep[0]:]
            out = [(self._head(hidden).float(), hidden)]
        else:
            h = self._forward_ragged(slots, blocks)
            rows = [h[b, len(blk) - k: len(blk)] for b, (blk, k) in enumerate(zip(blocks, keep))]
            logits = self._head(torch.cat(rows)).float().split(keep)
            out = list(zip(logits, rows))
        for s, b in zip(slots, blocks):
            self.cache.lengths[s] += len(b)
        return out

    def _validate(self, slots: Sequence[int], blocks: Sequence[Sequence[int]], keep: Sequence[int]) -> None:
        if not slots or len(slots) != len(blocks) or len(slots) != len(keep):
            raise ValueError("slots, blocks and keep need one entry per row (at least one row)")
        if len(set(slots)) != len(slots):
            raise ValueError(f"slots {list(slots)} repeat: a slot takes one block per forward")
        for s, b, k in zip(slots, blocks, keep):
            self.cache.check(s)
            if not b:
                raise ValueError(f"slot {s}: a block needs at least one token")
            if not 1 <= k <= len(b):
                raise ValueError(f"slot {s}: keep {k} outside 1..{len(b)}")
            if self.cache.lengths[s] + len(b) > self.cache.max_len:
                raise ValueError(f"slot {s}: {self.cache.lengths[s]} + {len(b)} positions exceed max_len "
                                 f"{self.cache.max_len}")

    def _forward_one(self, slot: int, block: Sequence[int]) -> torch.Tensor:
        """One row: :class:`CachedLM`'s lean forward on the slot's buffers (bitwise the same)."""
        cache, dec = self.cache, self._decoder
        ids = torch.tensor([list(block)], dtype=torch.long, device=self.device)
        q_len, start = ids.shape[1], cache.lengths[slot]
        end = start + q_len
        x = F.embedding(ids, dec.embed_tokens.weight)
        cos, sin = rotary_tables(dec, x, torch.arange(start, end, device=self.device).unsqueeze(0))
        mask = one_row_mask(start, q_len, self.device)
        groups, scaling, row = self._groups, self._scaling, slice(slot, slot + 1)

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            keys, values = cache.keys[i], cache.values[i]
            keys[row, :, start:end] = k
            values[row, :, start:end] = v
            return attend_one(q, keys[row, :, :end], values[row, :, :end], mask, groups, scaling)

        x = decoder_stack(self._layers, x, cos, sin, self._head_dim, attend)
        return _rms_norm(x, dec.norm.weight, dec.norm.variance_epsilon)

    def _forward_ragged(self, slots: Sequence[int], blocks: Sequence[Sequence[int]]) -> torch.Tensor:
        """Several rows: hidden states [rows, q_max, H] (padding rows hold garbage)."""
        cache, dec, dev = self.cache, self._decoder, self.device
        n_rows, q_len = len(slots), max(len(b) for b in blocks)
        ids = torch.full((n_rows, q_len), self.pad_token_id, dtype=torch.long)
        for b, blk in enumerate(blocks):
            ids[b, : len(blk)] = torch.tensor(list(blk), dtype=torch.long)
        starts = torch.tensor([cache.lengths[s] for s in slots], dtype=torch.long)
        lens = torch.tensor([len(b) for b in blocks], dtype=torch.long)
        end = int((starts + lens).max())
        steps = torch.arange(q_len)
        pos = starts[:, None] + steps[None, :]                                    # [rows, q]
        last_seen = starts[:, None] + torch.minimum(steps[None, :], lens[:, None] - 1)
        mask = (torch.arange(end)[None, None, :] <= last_seen[:, :, None]).unsqueeze(1).to(dev)
        real_b, real_q = (steps[None, :] < lens[:, None]).nonzero(as_tuple=True)
        slot_t = torch.tensor(list(slots), dtype=torch.long)
        w_slot, w_pos = slot_t[real_b].to(dev), pos[real_b, real_q].to(dev)
        real_b, real_q = real_b.to(dev), real_q.to(dev)
        first = slots[0]
        contiguous = list(slots) == list(range(first, first + n_rows))
        rows = slice(first, first + n_rows) if contiguous else slot_t.to(dev)
        ids, pos = ids.to(dev), pos.to(dev)
        groups, scaling = self._groups, self._scaling

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            keys, values = cache.keys[i], cache.values[i]
            keys[w_slot, :, w_pos] = k[real_b, :, real_q]
            values[w_slot, :, w_pos] = v[real_b, :, real_q]
            k, v = keys[rows, :, :end], values[rows, :, :end]
            if groups > 1:
                k, v = _repeat_kv(k, groups), _repeat_kv(v, groups)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=scaling)

        x = F.embedding(ids, dec.embed_tokens.weight)
        cos, sin = rotary_tables(dec, x, pos)
        x = decoder_stack(self._layers, x, cos, sin, self._head_dim, attend)
        return _rms_norm(x, dec.norm.weight, dec.norm.variance_epsilon)
