"""Batched greedy decoding and teacher-forced scoring of ragged token sequences.

Several sequences share one forward: :func:`greedy_batch` left-pads the prompts (attention mask,
position ids counted from each row's first real token) and drops rows from the batch and its KV
cache as they finish; :func:`hidden_batch` right-pads whole sequences for one forward. Each
model runs on its own device (that of its parameters). In fp32, a padded batch and a single
sequence round matmuls differently, so greedy choices can flip where the two best logits are
within rounding of each other (rare; :mod:`nodes.mining` measures it).
"""
from __future__ import annotations

import inspect

import torch


def _cache_kw(decoder: torch.nn.Module) -> str:
    """The KV cache argument's name: ``cache`` from transformers 5.24, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def greedy_batch(model: torch.nn.Module, prompts: list[list[int]], budgets: list[int], eos_token_id: int | None,
                 pad_token_id: int = 0, stop=None, outputs_so_far: list[list[int]] | None = None) -> list[list[int]]:
    """Greedy continuation (token ids, prompt excluded) of each prompt, at most ``budgets[i]``
    tokens and ending after EOS, all prompts in one batch (one forward per generated token).
    ``stop`` (:class:`nodes.decoding.stopping.StopCriteria`) ends a row at the token that
    completes a stop rule; it reads each row's output ``outputs_so_far[i]`` (default: none)
    followed by its continuation."""
    from transformers import DynamicCache

    out: list[list[int]] = [[] for _ in prompts]
    live = [i for i, b in enumerate(budgets) if b > 0]
    if not live:
        return out
    dev = _device(model)
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    kw = _cache_kw(decoder)
    width = max(len(prompts[i]) for i in live)
    ids = torch.full((len(live), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(live), width), dtype=torch.long)
    for r, i in enumerate(live):
        n = len(prompts[i])
        ids[r, width - n:] = torch.tensor(prompts[i], dtype=torch.long)
        mask[r, width - n:] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    next_pos = mask.sum(-1)
    cache = DynamicCache(config=model.config)
    while True:
        hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                         **{kw: cache}).last_hidden_state[:, -1]
        toks = head(hidden).argmax(-1).tolist()
        keep = []
        for r, i in enumerate(live):
            out[i].append(toks[r])
            stopped = False
            if stop is not None:
                before = outputs_so_far[i] if outputs_so_far else []
                stopped = stop.check(before + out[i], len(before) + len(out[i]) - 1) is not None
            if toks[r] != eos_token_id and not stopped and len(out[i]) < budgets[i]:
                keep.append(r)
        if not keep:
            return out
        if len(keep) < len(live):
            idx = torch.tensor(keep, dtype=torch.long, device=dev)
            cache.batch_select_indices(idx)
            mask, next_pos = mask[idx], next_pos[idx]
            live = [live[r] for r in keep]
        ids = torch.tensor([[out[i][-1]] for i in live], dtype=torch.long, device=dev)
        pos = next_pos[:, None]
        next_pos = next_pos + 1
        mask = torch.cat([mask, torch.ones((len(live), 1), dtype=torch.long, device=dev)], dim=-1)


@torch.inference_mode()
def hidden_batch(model: torch.nn.Module, seqs: list[list[int]], pad_token_id: int = 0) -> list[torch.Tensor]:
    """Last-layer hidden states [len(seq), H] of every position of each sequence (teacher forced,
    one forward for all; on the model's device, in its dtype)."""
    dev = _device(model)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[r, : len(s)] = 1
    h = model.get_decoder()(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False).last_hidden_state
    return [h[r, : len(s)] for r, s in enumerate(seqs)]


@torch.inference_mode()
def logits_of(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The output head's logits [N, V] (fp32) of hidden states [N, H]."""
    return model.get_output_embeddings()(hidden).float()
