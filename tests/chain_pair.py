"""A tiny drafter/target pair whose greedy output is known token by token, for stop-sequence tests.

Real Llama models (transformers ``LlamaForCausalLM``, one layer) with crafted weights: the
attention and MLP outputs are zero, so the last hidden state is the current token's one-hot
embedding, and the output head maps token i to the logit of its successor ``chain[i]``: greedy
decoding walks the chain. The tokenizer is a real ``tokenizers`` word-level tokenizer whose
tokens are pieces of Python (``"\\n"``, ``"    return"``, ``"\\nprint(inc(2))"`` …) and whose
decoder concatenates them, so decoded text carries newlines as a code model's would.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]
# "def inc(x):\n" is the prompt; the chain writes the body, then runs past the function.
PIECES = ["def", " inc", "(x):", "\n", "    return", " x", " +", " 1", "\nprint(inc(2))", " junk"]
CHAIN = {"\n": "    return", "    return": " x", " x": " +", " +": " 1", " 1": "\nprint(inc(2))",
         "\nprint(inc(2))": " junk", " junk": " junk"}
PROMPT = "def inc(x):\n"
TESTS = "def check(g):\n    assert g(1) == 2\n    assert g(5) == 6\n"


def build_tokenizer():
    """The word-level tokenizer over :data:`PIECES` (pieces matched longest first, concatenated on decode)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + PIECES)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    pattern = "|".join(re.escape(p) for p in sorted(PIECES, key=len, reverse=True))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")


def build_model(tokenizer):
    """A one-layer Llama whose greedy next token after token i is ``CHAIN[i]`` (EOS elsewhere)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = tokenizer.get_vocab()
    n = len(vocab)
    cfg = LlamaConfig(vocab_size=n, hidden_size=n, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
                      num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=False,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(n))
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head = torch.zeros(n, n)
        for i in range(n):
            token = tokenizer.convert_ids_to_tokens(i)
            head[vocab[CHAIN[token]] if token in CHAIN else tokenizer.eos_token_id, i] = 1.0
        model.lm_head.weight.copy_(head)
    return model


def save_pair(out: Path) -> tuple[Path, Path]:
    """The pair (drafter and target alike) saved as two Hugging Face folders under ``out``."""
    tok = build_tokenizer()
    model = build_model(tok)
    paths = []
    for role in ("drafter", "target"):
        d = out / role
        model.save_pretrained(d)
        tok.save_pretrained(d)
        paths.append(d)
    return paths[0], paths[1]
