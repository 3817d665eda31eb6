"""A causal LM with a persistent KV cache that can be extended and cropped (rolled back)."""
from __future__ import annotations

import inspect

import torch


class CachedLM:
    """Wraps a Hugging Face causal LM: ``forward`` appends tokens to the KV cache and returns the
    logits and last-layer hidden states of those positions; ``crop`` rolls the cache back."""

    def __init__(self, model: torch.nn.Module):
        from transformers import DynamicCache

        self.model = model
        self._decoder = model.get_decoder()
        self._head = model.get_output_embeddings()
        self._cache_cls = DynamicCache
        self.device = next(model.parameters()).device
        self.cache = DynamicCache(config=model.config)
        self.cache_len = 0
        # transformers >= 5.24 names the argument ``cache``; earlier releases ``past_key_values``.
        params = inspect.signature(self._decoder.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @property
    def hidden_size(self) -> int:
        """Width of the last-layer hidden state."""
        return int(self.model.config.hidden_size)

    def reset(self) -> None:
        """Drop the whole cache (a new request)."""
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
        out = self._decoder(input_ids=ids, use_cache=True, **{self._cache_arg: self.cache})
        hidden = out.last_hidden_state[0, -keep:]
        logits = self._head(hidden).float()
        self.cache_len += len(token_ids)
        return logits, hidden

    def crop(self, length: int) -> None:
        """Keep only the first ``length`` cached positions."""
        if length < self.cache_len:
            # A negative count removes that many positions (transformers 4.x and 5.x alike).
            self.cache.crop(length - self.cache_len)
            self.cache_len = length
