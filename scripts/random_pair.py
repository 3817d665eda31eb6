"""Write a random-initialised drafter/target pair of real size as local Hugging Face folders.

For timing the decoding core on models of real size without a model hub: the default shapes are
Qwen2-0.5B-like (drafter) and Qwen2-1.5B-like (target), fp32 safetensors, tied embeddings, a
151 936-token vocabulary, weights drawn by transformers' own initialiser from a fixed seed, with
standard deviation 1/sqrt(hidden) (at Qwen2's 0.02, narrow test shapes collapse into repeating
one token; at this scale every layer moves the residual stream and greedy text varies). Each
folder gets the shipped default tokenizer (``nodes/pretrained/default/target/tokenizer*.json``), so
``nodes.models.load_pair(D, T)`` loads the pair as any other. Prompts therefore use ids below 283;
the models may emit any id of their vocabulary (the tokenizer cannot spell those: decode ids, not
text).

Random weights cost exactly what trained ones cost per forward (same shapes, same kernels), so
tokens/s and ours/transformers ratios carry over; acceptance does not: two independent random
models rarely agree (expect an acceptance near 0, one token per round), and their greedy text is
meaningless. ``benchmarks/decoding.py`` reports the acceptance it saw next to its figures.

Usage: python scripts/random_pair.py [-o /tmp/random-pair] [--drafter-shape qwen2-0.5b]
       [--target-shape qwen2-1.5b] [--seed 0]
A shape is a preset name or ``hidden:intermediate:layers:heads:kv_heads[:vocab]``.
Writes ``OUT/drafter`` and ``OUT/target`` (~2.0 GB and ~6.2 GB for the defaults, ~1 min here).
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("random_pair")
TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "nodes" / "pretrained" / "default" / "target"


@dataclass(frozen=True)
class Shape:
    """A Qwen2-architecture model's dimensions (head_dim = hidden / heads)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int = 151936

    @classmethod
    def parse(cls, text: str) -> "Shape":
        """A preset name (see :data:`PRESETS`) or ``hidden:intermediate:layers:heads:kv_heads[:vocab]``."""
        if text in PRESETS:
            return PRESETS[text]
        try:
            return cls(*(int(x) for x in text.split(":")))
        except (TypeError, ValueError):
            raise ValueError(f"shape {text!r}: a preset {sorted(PRESETS)} or hidden:intermediate:layers:heads:"
                             f"kv_heads[:vocab]") from None


PRESETS = {
    "qwen2-0.5b": Shape(hidden=896, intermediate=4864, layers=24, heads=14, kv_heads=2),
    "qwen2-1.5b": Shape(hidden=1536, intermediate=8960, layers=28, heads=12, kv_heads=2),
}


def qwen2_config(shape: Shape, tokenizer):
    """A Qwen2 config of ``shape`` with the tokenizer's special ids (tied embeddings, fp32,
    initialiser std 1/sqrt(hidden))."""
    from transformers import Qwen2Config

    if shape.hidden % shape.heads or shape.heads % shape.kv_heads:
        raise ValueError(f"{shape}: hidden must divide by heads, heads by kv_heads")
    if shape.vocab < len(tokenizer):
        raise ValueError(f"vocab {shape.vocab} is smaller than the tokenizer's {len(tokenizer)} ids")
    return Qwen2Config(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                       num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                       num_key_value_heads=shape.kv_heads, max_position_embeddings=32768, rope_theta=1e6,
                       initializer_range=shape.hidden ** -0.5,
                       rms_norm_eps=1e-6, tie_word_embeddings=True, architectures=["Qwen2ForCausalLM"],
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, dtype="float32")


def write_random_model(out: Path, shape: Shape, seed: int) -> int:
    """Write one random-initialised Qwen2 model of ``shape`` (fp32 safetensors) with the default
    tokenizer into ``out``; returns its parameter count."""
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR, local_files_only=True)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(qwen2_config(shape, tokenizer)).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for f in TOKENIZER_DIR.glob("tokenizer*.json"):
        shutil.copy(f, out / f.name)
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> None:
    """Command line: write ``OUT/drafter`` and ``OUT/target``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path, default=Path("/tmp/random-pair"))
    ap.add_argument("--drafter-shape", type=Shape.parse, default=PRESETS["qwen2-0.5b"])
    ap.add_argument("--target-shape", type=Shape.parse, default=PRESETS["qwen2-1.5b"])
    ap.add_argument("--seed", type=int, default=0, help="the target uses seed + 1")
    a = ap.parse_args(argv)
    for i, (role, shape) in enumerate((("drafter", a.drafter_shape), ("target", a.target_shape))):
        n = write_random_model(a.out / role, shape, a.seed + i)
        log.info("%s: %s, %.0f M parameters -> %s", role, shape, n / 1e6, a.out / role)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
