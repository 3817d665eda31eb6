"""``wisv models train``: train the built-in drafter/target pair on the built-in task.

Reproducible (seeded data order, init and optimiser; fixed step counts, not wall-clock budgets)
and small: a word-level tokenizer over the task's vocabulary (numbers are single tokens), a
Llama-architecture target of ~2 M parameters and a drafter ~15× smaller, saved in standard Hugging
Face format (config.json, model.safetensors, tokenizer.json) so the same loader serves any pair.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from nodes.tasks.arith import RULE_PROB, ArithTask

log = logging.getLogger(__name__)
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


ARCHS = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM")}


@dataclass
class ArchSpec:
    """Architecture sizes; ``family`` names the transformers architecture (:data:`ARCHS`:
    Llama, or Qwen2 with its biased q/k/v projections)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    family: str = "llama"


@dataclass
class TrainSpec:
    """One model's training run. ``rule_prob``: how often the training solutions' phrasing
    follows the task's style rules (:class:`ArithTask`; 0 = style-blind, phrasing at random)."""

    arch: ArchSpec
    steps: int
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 50
    seed: int = 0
    rule_prob: float = RULE_PROB


@dataclass
class PairSpec:
    """The default pair: the target is much larger than the drafter (same tokenizer). It stands
    in for Llama-3.2-1B-Instruct drafting for Llama-3.1-8B-Instruct on GSM8K: step counts set the
    accuracies (44.4 % / 84.5 %), and the drafter is trained style-blind (``rule_prob=0``: it
    does not share the target's wording, so most disagreements are harmless wording and the
    accepted length is a 1B/8B pair's). Sources, tolerance and measured figures:
    ``nodes/pretrained/default/PAIR.md``."""

    target: TrainSpec = field(default_factory=lambda: TrainSpec(ArchSpec(192, 512, 4, 4), steps=700, seed=1))
    drafter: TrainSpec = field(default_factory=lambda: TrainSpec(ArchSpec(64, 192, 1, 2), steps=800, lr=4e-3, seed=2,
                                                                 rule_prob=0.0))
    max_len: int = 160


def build_tokenizer(task: ArithTask):
    """A word-level ``PreTrainedTokenizerFast`` over the task vocabulary (whitespace-split)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + task.vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # No decoder: decoding joins the words with single spaces, the inverse of WhitespaceSplit.
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>", pad_token="<pad>")


def _batches(task: ArithTask, tokenizer, batch_size: int, max_len: int, seed: int):
    gen = task.iter_train(start=seed * 10_000_000)
    eos = tokenizer.eos_token_id
    while True:
        rows = []
        for _ in range(batch_size):
            p = next(gen)
            ids = tokenizer(p.prompt + p.solution)["input_ids"][: max_len - 1] + [eos]
            rows.append(ids)
        width = max(len(r) for r in rows)
        x = torch.full((batch_size, width), tokenizer.pad_token_id, dtype=torch.long)
        for i, r in enumerate(rows):
            x[i, : len(r)] = torch.tensor(r)
        yield x


def train_model(spec: TrainSpec, tokenizer, task: ArithTask, max_len: int, out_dir: Path) -> dict:
    """Train one model and save it (fp32 safetensors + tokenizer) to ``out_dir``; returns stats."""
    import transformers

    torch.manual_seed(spec.seed)
    a = spec.arch
    config_cls, model_cls = (getattr(transformers, name) for name in ARCHS[a.family])
    cfg = config_cls(vocab_size=len(tokenizer), hidden_size=a.hidden_size, intermediate_size=a.intermediate_size,
                     num_hidden_layers=a.num_hidden_layers, num_attention_heads=a.num_attention_heads,
                     num_key_value_heads=a.num_attention_heads, max_position_embeddings=max_len * 2,
                     tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = model_cls(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.98), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / spec.warmup) *
                                              0.5 * (1 + math.cos(math.pi * min(s, spec.steps) / spec.steps)))
    pad = tokenizer.pad_token_id
    batches = _batches(task, tokenizer, spec.batch_size, max_len, spec.seed)
    model.train()
    t0, tokens, losses = time.perf_counter(), 0, []
    for step in range(spec.steps):
        x = next(batches)
        labels = x.masked_fill(x == pad, -100)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=x, attention_mask=(x != pad).long(), labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        tokens += int((x != pad).sum())
        losses.append(float(loss))
        if step % 100 == 0 or step == spec.steps - 1:
            log.info("step %d/%d loss %.3f (%.0f tok/s)", step, spec.steps, loss.item(),
                     tokens / (time.perf_counter() - t0))
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    stats = {"params": n_params, "steps": spec.steps, "tokens": tokens, "seconds": time.perf_counter() - t0,
             "final_loss": sum(losses[-50:]) / len(losses[-50:]), "spec": asdict(spec)}
    (out_dir / "training.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def train_pair(out_dir: Path, spec: PairSpec | None = None, which: tuple[str, ...] = ("target", "drafter")) -> dict:
    """Train the default pair into ``out_dir/{target,drafter}``; returns per-model stats."""
    spec = spec or PairSpec()
    tokenizer = build_tokenizer(ArithTask())
    out = {}
    for name in which:
        log.info("training %s", name)
        model_spec = getattr(spec, name)
        out[name] = train_model(model_spec, tokenizer, ArithTask(rule_prob=model_spec.rule_prob), spec.max_len,
                                out_dir / name)
    return out
