"""A causal LM with a persistent KV cache that can be extended and cropped (rolled back).

Two paths, the same numbers. Llama-family models (Llama, Qwen2, Mistral without a sliding window:
RMSNorm, rotary embeddings, grouped-query SDPA attention, SiLU MLP) run a lean forward over the
model's own weights and a preallocated KV cache (:class:`KVCache`): the same tensor operations, in
the same order and on the same kernels, as transformers' modules, so logits and hidden states are
bitwise those of the model's own forward (``tests/test_decoding.py`` checks prefill, decode,
verify blocks and rollbacks). What it leaves out costs time without computing anything: per
module ``__call__`` hooks, decorators and keyword plumbing (~0.3 ms per layer here), causal-mask
construction, a ``torch.cat`` of the whole cache per layer and token. Cropping is setting a length.
Any other model runs through its Hugging Face decoder with a ``DynamicCache``. Measurements:
``docs/decoding-performance.md``.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

LEAN_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")


def lean_unsupported(model: torch.nn.Module) -> str | None:
    """Why ``model`` cannot take the lean path (None when it can)."""
    cfg = model.config
    if type(model).__name__ not in LEAN_ARCHITECTURES:
        return f"architecture {type(model).__name__}"
    if getattr(cfg, "_attn_implementation", None) != "sdpa":
        return f"attention implementation {getattr(cfg, '_attn_implementation', None)!r} (lean mirrors sdpa)"
    if cfg.hidden_act != "silu" or getattr(cfg, "pretraining_tp", 1) != 1:
        return "activation or tensor-parallel split"
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or ()) or \
            (getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True)):
        return "sliding-window attention"
    if model.training:
        return "training mode"
    return None


class KVCache:
    """Per-layer key/value buffers [1, kv_heads, capacity, head_dim], written in place; the first
    ``length`` positions are valid. Capacity doubles when a forward would overflow it."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device,
                 capacity: int = 256):
        shape = (1, kv_heads, capacity, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.length = 0

    def reserve(self, n: int) -> None:
        """Make room for ``n`` positions (copies the valid prefix into larger buffers if needed)."""
        capacity = self.keys[0].shape[2]
        if n <= capacity:
            return
        capacity = max(n, 2 * capacity)
        for bufs in (self.keys, self.values):
            for i, old in enumerate(bufs):
                new = old.new_empty(old.shape[0], old.shape[1], capacity, old.shape[3])
                new[:, :, : self.length] = old[:, :, : self.length]
                bufs[i] = new

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``/``v`` [1, kv_heads, q, head_dim] at positions ``start..``; returns views of
        the keys and values of positions 0 .. start + q."""
        end = start + k.shape[2]
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm, operation for operation (the dtype round trip only off fp32)."""
    h = x if x.dtype == torch.float32 else x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * (h if x.dtype == torch.float32 else h.to(x.dtype))


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """transformers' ``x * cos + rotate_half(x) * sin`` in 4 operations instead of 7: rotate_half(x)
    is roll(x) with the first half negated, and (-a) * b == a * (-b) exactly, so the sign moves into
    ``sin_signed`` = cat(-sin[:half], sin[half:]), computed once per forward. Bitwise the same."""
    return (x * cos) + (x.roll(x.shape[-1] // 2, -1) * sin_signed)


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[1, kv, L, D] -> [1, kv * groups, L, D], as transformers' repeat_kv."""
    b, kv, n, d = x.shape
    return x[:, :, None].expand(b, kv, groups, n, d).reshape(b, kv * groups, n, d)


def lean_layers(decoder: torch.nn.Module) -> list[tuple]:
    """Per decoder layer, the modules the lean forward reads: (input norm, q, k, v, o projections,
    post-attention norm, gate, up, down)."""
    return [(l.input_layernorm, l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj, l.self_attn.o_proj,
             l.post_attention_layernorm, l.mlp.gate_proj, l.mlp.up_proj, l.mlp.down_proj) for l in decoder.layers]


def rotary_tables(decoder: torch.nn.Module, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, signed sin) [b, 1, q, head_dim] for positions ``pos`` [b, q] (see :func:`_rotary`)."""
    cos, sin = (t.unsqueeze(1) for t in decoder.rotary_emb(x, pos))
    half = sin.shape[-1] // 2
    return cos, torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


def one_row_mask(start: int, q_len: int, device: torch.device) -> torch.Tensor | None:
    """The mask transformers' decoder gives sdpa for one sequence feeding ``q_len`` tokens after
    ``start`` cached ones: None for a prefill into an empty cache (``is_causal``) or one token, else
    a boolean causal mask [1, 1, q_len, start + q_len]."""
    if q_len > 1 and start > 0:
        end = start + q_len
        pos = torch.arange(start, end, device=device)
        return (torch.arange(end, device=device)[None, :] <= pos[:, None]).view(1, 1, q_len, end)
    return None


def attend_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, groups: int,
               scaling: float) -> torch.Tensor:
    """transformers' sdpa attention for one sequence: no mask and ``is_causal`` for a prefill, no
    mask for one token (``enable_gqa``), a boolean causal mask with the keys repeated per query
    group for a block after a cached prefix. q [1, heads, q, D], k/v [1, kv_heads, L, D]."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, scale=scaling, is_causal=q.shape[2] > 1,
                                              enable_gqa=groups > 1)
    if groups > 1:
        k, v = _repeat_kv(k, groups), _repeat_kv(v, groups)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=scaling)


def decoder_stack(layers: list[tuple], x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_dim: int,
                  attend) -> torch.Tensor:
    """The decoder layers over embeddings ``x`` [b, q, H] (before the final norm): RMSNorm, q/k/v
    projections, rotary, ``attend(layer, q, k, v)`` -> [b, heads, q, D] (which owns the KV cache),
    output projection, RMSNorm, SiLU MLP, in transformers' order of operations."""
    b, q_len = x.shape[0], x.shape[1]
    shape = (b, q_len, -1, head_dim)
    for i, (norm1, wq, wk, wv, wo, norm2, gate, up, down) in enumerate(layers):
        h = _rms_norm(x, norm1.weight, norm1.variance_epsilon)
        q = F.linear(h, wq.weight, wq.bias).view(shape).transpose(1, 2)
        k = F.linear(h, wk.weight, wk.bias).view(shape).transpose(1, 2)
        v = F.linear(h, wv.weight, wv.bias).view(shape).transpose(1, 2)
        q, k = _rotary(q, cos, sin), _rotary(k, cos, sin)
        a = attend(i, q, k, v)
        a = a.transpose(1, 2).contiguous().reshape(b, q_len, -1)
        x = x + F.linear(a, wo.weight, wo.bias)
        h = _rms_norm(x, norm2.weight, norm2.variance_epsilon)
        x = x + F.linear(F.silu(F.linear(h, gate.weight, gate.bias)) * F.linear(h, up.weight, up.bias),
                         down.weight, down.bias)
    return x


class CachedLM:
    """Wraps a Hugging Face causal LM: ``forward`` appends tokens to the KV cache and returns the
    logits and last-layer hidden states of those positions; ``crop`` rolls the cache back.
    ``lean=False`` forces the Hugging Face decoder path (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, lean: bool = True):
        self.model = model
        self._decoder = model.get_decoder()
        self._head = model.get_output_embeddings()
        p = next(model.parameters())
        self.device = p.device
        self.cache_len = 0
        self.lean = lean and lean_unsupported(model) is None
        if self.lean:
            attn = self._decoder.layers[0].self_attn
            self._head_dim, self._groups, self._scaling = attn.head_dim, attn.num_key_value_groups, attn.scaling
            self._kv_heads = model.config.num_key_value_heads
            self._layers = lean_layers(self._decoder)
            self.cache = KVCache(len(self._layers), self._kv_heads, self._head_dim, p.dtype, p.device)
        else:
            from transformers import DynamicCache

            self._cache_cls = DynamicCache
            self.cache = DynamicCache(config=model.config)
            # transformers >= 5.24 names the argument ``cache``; earlier releases ``past_key_values``.
            self._cache_arg = "cache" if "cache" in inspect.signature(self._decoder.forward).parameters \
                else "past_key_values"

    @property
    def hidden_size(self) -> int:
        """Width of the last-layer hidden state."""
        return int(self.model.config.hidden_size)

    def reset(self) -> None:
        """Drop the whole cache (a new request); the lean path keeps its buffers."""
        if self.lean:
            self.cache.length = 0
        else:
            self.cache = self._cache_cls(config=self.model.config)
        self.cache_len = 0

    @torch.inference_mode()
    def forward(self, token_ids: list[int], keep: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed ``token_ids`` after the cached prefix; returns (logits [keep, V] fp32, hidden
        [keep, H]) of the last ``keep`` positions only: the output head (vocabulary-wide) never
        runs on prefill positions nobody reads."""
        if not token_ids:
            raise ValueError("forward needs at least one token")
        ids = torch.tensor([token_ids], dtype=torch.long, device=self.device)
        if self.lean:
            hidden = self._lean_forward(ids)[0, -keep:]
        else:
            out = self._decoder(input_ids=ids, use_cache=True, **{self._cache_arg: self.cache})
            hidden = out.last_hidden_state[0, -keep:]
        self.cache_len += len(token_ids)
        return self._head(hidden).float(), hidden

    def _lean_forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states [1, q, H] of ``ids`` [1, q] after the cache; extends the cache.
        Mirrors transformers' decoder with sdpa attention (see :func:`attend_one`)."""
        cache, dec = self.cache, self._decoder
        q_len, start = ids.shape[1], self.cache_len
        end = start + q_len
        cache.reserve(end)
        x = F.embedding(ids, dec.embed_tokens.weight)
        pos = torch.arange(start, end, device=self.device).unsqueeze(0)
        cos, sin = rotary_tables(dec, x, pos)
        mask = one_row_mask(start, q_len, self.device)
        groups, scaling = self._groups, self._scaling

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            k, v = cache.write(i, start, k, v)
            return attend_one(q, k, v, mask, groups, scaling)

        x = decoder_stack(self._layers, x, cos, sin, self._head_dim, attend)
        cache.length = end
        return _rms_norm(x, dec.norm.weight, dec.norm.variance_epsilon)

    def crop(self, length: int) -> None:
        """Keep only the first ``length`` cached positions."""
        if length < self.cache_len:
            if self.lean:
                self.cache.length = length
            else:
                # A negative count removes that many positions (transformers 4.x and 5.x alike).
                self.cache.crop(length - self.cache_len)
            self.cache_len = length
