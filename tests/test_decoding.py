"""The speculative-decoding core: exactness against the target's own greedy output and against
transformers' assisted generation, the sampling distribution, and the relaxed policies."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from nodes.decoding import (Drafter, ExactMatch, RejectionSampling, SamplingConfig, TopKAcceptance,
                            TypicalAcceptance, Verifier, VerifyContext, autoregressive_generate,
                            speculative_generate)


def tiny_llama(hidden: int, layers: int, seed: int, vocab: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=None, eos_token_id=None, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def random_pair():
    # A drafter that shares part of the target's weights agrees often enough to exercise long accepts.
    target = tiny_llama(64, 2, seed=1)
    drafter = tiny_llama(64, 1, seed=2)
    drafter.model.embed_tokens.weight.data.copy_(target.model.embed_tokens.weight.data)
    drafter.model.layers[0].load_state_dict(target.model.layers[0].state_dict())
    drafter.lm_head.weight.data.copy_(target.lm_head.weight.data)
    drafter.model.norm.weight.data.copy_(target.model.norm.weight.data)
    return drafter, target


@pytest.mark.parametrize("gamma", [1, 2, 4, 8])
def test_greedy_speculative_equals_target_greedy(random_pair, gamma):
    drafter, target = random_pair
    d, v = Drafter(drafter), Verifier(target)
    for prompt in ([1, 5, 9, 3], [7], list(range(2, 30))):
        ref = autoregressive_generate(target, prompt, 48)
        hf = target.generate(torch.tensor([prompt]), max_new_tokens=48, do_sample=False)[0, len(prompt):].tolist()
        assert ref == hf
        res = speculative_generate(d, v, ExactMatch(), prompt, gamma=gamma, max_new_tokens=48)
        assert res.tokens == ref
        assert sum(r.tokens_out for r in res.rounds) >= len(res.tokens)
        assert all(r.accepted == r.accepted_exact for r in res.rounds)
    assert any(r.accepted > 0 for r in res.rounds)  # the drafter agrees sometimes


def test_matches_transformers_assisted_generation(random_pair):
    drafter, target = random_pair
    drafter.generation_config.num_assistant_tokens = 4
    drafter.generation_config.num_assistant_tokens_schedule = "constant"
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    hf = target.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False,
                         assistant_model=drafter)[0, len(prompt):].tolist()
    ours = speculative_generate(Drafter(drafter), Verifier(target), ExactMatch(), prompt, gamma=4, max_new_tokens=40)
    assert ours.tokens == hf


def test_eos_stops_and_is_kept(random_pair):
    drafter, target = random_pair
    ref = autoregressive_generate(target, [1, 2, 3], 30)
    eos = ref[10]
    first = ref.index(eos)
    res = speculative_generate(Drafter(drafter), Verifier(target), ExactMatch(), [1, 2, 3], gamma=4,
                               max_new_tokens=30, eos_token_id=eos)
    assert res.tokens == ref[: first + 1]


def test_rejection_sampling_matches_target_distribution():
    """Joint law of the first two sampled tokens equals the target's (chi-square), vocab 6."""
    vocab, temp = 6, 0.15  # a low temperature makes the random models' laws clearly differ
    target = tiny_llama(32, 1, seed=11, vocab=vocab)
    drafter = tiny_llama(32, 1, seed=12, vocab=vocab)
    prompt = [1, 2]
    def law(model) -> np.ndarray:  # exact joint law of (x1, x2) under sampling at ``temp``
        with torch.no_grad():
            p1 = torch.softmax(model(torch.tensor([prompt])).logits[0, -1] / temp, -1)
            out = np.zeros((vocab, vocab))
            for a in range(vocab):
                out[a] = (p1[a] * torch.softmax(model(torch.tensor([prompt + [a]])).logits[0, -1] / temp, -1)).numpy()
        return out

    def chi2_pvalue(counts: np.ndarray, law_: np.ndarray) -> float:
        expected = law_.ravel() * counts.sum()
        keep = expected >= 5
        chi2 = ((counts.ravel()[keep] - expected[keep]) ** 2 / expected[keep]).sum()
        return float(1 - stats.chi2.cdf(chi2, keep.sum() - 1))

    joint = law(target)
    d = Drafter(drafter, SamplingConfig(temperature=temp, seed=5))
    v = Verifier(target)
    counts = np.zeros((vocab, vocab))
    n = 3000
    accepted = 0
    for _ in range(n):
        res = speculative_generate(d, v, RejectionSampling(), prompt, gamma=2, max_new_tokens=2)
        counts[res.tokens[0], res.tokens[1]] += 1
        accepted += res.rounds[0].accepted
    assert chi2_pvalue(counts, joint) > 0.001
    assert 0.1 * n < accepted < 1.9 * n  # both the accept and the residual paths ran
    # The test has power: the same counts are far from the drafter's own law.
    assert chi2_pvalue(counts, law(drafter)) < 1e-6


def _ctx(draft, logits):
    return VerifyContext(torch.tensor(draft), torch.tensor(logits, dtype=torch.float32))


def test_relaxed_policies_accept_near_misses():
    # Row i scores draft token i; the target prefers token 0 everywhere, token 1 is a close second.
    logits = [[3.0, 2.9, -5.0, -5.0]] * 4
    draft = [0, 1, 2, 0]
    exact = ExactMatch().verify(_ctx(draft, logits))
    assert (exact.accepted, exact.next_token, exact.first_mismatch) == (1, 0, 1)
    top2 = TopKAcceptance(k=2).verify(_ctx(draft, logits))
    assert (top2.accepted, top2.accepted_exact, top2.harmless, top2.next_token) == (2, 1, 1, 0)
    typ = TypicalAcceptance().verify(_ctx(draft, logits))
    assert typ.accepted == 2 and typ.harmless == 1
    all_ok = TopKAcceptance(k=2).verify(_ctx([0, 1, 0], logits))
    assert all_ok.accepted == 3 and all_ok.next_token == 0  # bonus from row γ


# ---------------------------------------------------------------- the shipped default pair

@pytest.fixture(scope="module")
def default_pair():
    from nodes.models import load_pair

    return load_pair()


def test_default_pair_greedy_exact_and_accurate(default_pair):
    from nodes.evaluate import encode_prompt
    from nodes.tasks import ArithTask, score

    pair = default_pair
    d, v = Drafter(pair.drafter), Verifier(pair.target)
    problems = ArithTask().problems("test", 25)
    correct = 0
    mismatched_rounds = 0
    for p in problems:
        ids = encode_prompt(pair, p)
        ref = autoregressive_generate(pair.target, ids, 128, pair.eos_token_id)
        for gamma in (4, 8):
            res = speculative_generate(d, v, ExactMatch(), ids, gamma, 128, pair.eos_token_id)
            assert res.tokens == ref, p.uid
        mismatched_rounds += sum(r.first_mismatch is not None for r in res.rounds)
        correct += score(pair.tokenizer.decode(ref, skip_special_tokens=True), p)
    # the shipped target solves most of the task, as the 8B it stands in for solves 84.5 % of
    # GSM8K (nodes/pretrained/default/PAIR.md: 88.5 % on 200 test problems, 19 of these 25)
    assert correct >= 18
    assert mismatched_rounds > 25  # and the drafter disagrees often enough to matter


def test_default_pair_shape_and_tokenizer(default_pair):
    pair = default_pair
    n_t = sum(p.numel() for p in pair.target.parameters())
    n_d = sum(p.numel() for p in pair.drafter.parameters())
    assert n_t > 10 * n_d
    assert pair.target.config.num_hidden_layers > pair.drafter.config.num_hidden_layers
    text = "Question : Tom has 12 pens . Answer :"
    ids = pair.tokenizer(text)["input_ids"]
    assert ids[0] == pair.tokenizer.bos_token_id
    assert pair.tokenizer.decode(ids, skip_special_tokens=True) == text


def test_load_pair_rejects_missing_folder(tmp_path):
    from nodes.models import load_pair

    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pair(tmp_path / "nope", None)


# ---------------------------------------------------------------- the lean forward and real-size random pairs

def _random_pair_script():
    import importlib.util
    import sys
    from pathlib import Path

    if "scripts_random_pair" not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "scripts" / "random_pair.py"
        spec = importlib.util.spec_from_file_location("scripts_random_pair", path)
        sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules["scripts_random_pair"]


@pytest.fixture(scope="module")
def tiny_qwen2_pair(tmp_path_factory):
    """scripts/random_pair.py with tiny shapes (GQA, qkv biases, tied embeddings, vocab 512)."""
    out = tmp_path_factory.mktemp("random-pair")
    _random_pair_script().main(["-o", str(out), "--drafter-shape", "64:128:2:4:2:512",
                                "--target-shape", "96:192:3:6:2:512", "--seed", "3"])
    return out


def _lean_vs_decoder(model, prompt_len: int, steps: int) -> None:
    """Prefill, single tokens, verify blocks, rollbacks and a reset: the lean forward's logits and
    hidden states equal the transformers decoder's bit for bit."""
    from nodes.decoding import CachedLM

    lean, ref = CachedLM(model), CachedLM(model, lean=False)
    assert lean.lean and not ref.lean
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    for _ in range(2):
        lean.reset(), ref.reset()
        feeds = [(torch.randint(3, vocab, (prompt_len,), generator=gen).tolist(), 1)]
        for _ in range(steps):
            feeds += [(torch.randint(3, vocab, (1,), generator=gen).tolist(), 1),
                      (torch.randint(3, vocab, (5,), generator=gen).tolist(), 5)]
        for i, (ids, keep) in enumerate(feeds):
            (la, ha), (lb, hb) = lean.forward(ids, keep), ref.forward(ids, keep)
            assert torch.equal(la, lb) and torch.equal(ha, hb), i
            assert lean.cache_len == ref.cache_len
            if keep > 1:  # roll back part of the block, as after a rejection
                lean.crop(lean.cache_len - 3), ref.crop(ref.cache_len - 3)


def test_lean_forward_is_bitwise_the_transformers_decoder(random_pair, tiny_qwen2_pair):
    from nodes.models import load_model

    _lean_vs_decoder(random_pair[1], prompt_len=9, steps=6)  # Llama, one KV head per query head
    qwen = load_model(tiny_qwen2_pair / "target")  # Qwen2: grouped queries, qkv biases
    _lean_vs_decoder(qwen, prompt_len=250, steps=8)  # grows the KV buffers past their first 256 positions


def test_models_outside_the_lean_family_use_the_transformers_decoder(random_pair):
    from nodes.decoding import CachedLM

    drafter, target = random_pair
    target.config._attn_implementation = "eager"  # the lean forward mirrors sdpa only
    try:
        assert not CachedLM(target).lean
        prompt = [3, 1, 4, 1, 5]
        hf = target.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False)[0, len(prompt):].tolist()
        assert autoregressive_generate(target, prompt, 24) == hf
        res = speculative_generate(Drafter(drafter), Verifier(target), ExactMatch(), prompt, gamma=4, max_new_tokens=24)
        assert res.tokens == hf
    finally:
        target.config._attn_implementation = "sdpa"


def test_random_pair_script_writes_a_loadable_exact_pair(tiny_qwen2_pair):
    from nodes.models import load_pair

    script = _random_pair_script()
    assert script.Shape.parse("qwen2-1.5b") == script.Shape(1536, 8960, 28, 12, 2, 151936)
    assert script.Shape.parse("896:4864:24:14:2") == script.PRESETS["qwen2-0.5b"]
    with pytest.raises(ValueError, match="preset"):
        script.Shape.parse("huge")
    pair = load_pair(tiny_qwen2_pair / "drafter", tiny_qwen2_pair / "target")
    cfg = pair.target.config
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.vocab_size) == \
        ("qwen2", 96, 3, 2, 512)
    assert cfg.tie_word_embeddings and pair.target.lm_head.weight.data_ptr() == \
        pair.target.model.embed_tokens.weight.data_ptr()
    assert pair.eos_token_id == cfg.eos_token_id
    prompt = pair.tokenizer("Question : Tom has 12 pens . Answer :")["input_ids"]
    hf = pair.target.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False, eos_token_id=None,
                              pad_token_id=0)[0, len(prompt):].tolist()
    assert autoregressive_generate(pair.target, prompt, 32) == hf
    assert len(set(hf)) > 1  # not one repeated token
    res = speculative_generate(Drafter(pair.drafter), Verifier(pair.target), ExactMatch(), prompt, 4, 32)
    assert res.tokens == hf
