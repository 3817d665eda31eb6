"""The batch-capable decoding core: a KV cache with batch slots, per-row rollback, ragged verify
blocks in one forward, and the batched verify entry point.

Stated tolerance (fp32): each row of a forward over several rows equals that row's batch-1 forward
(:class:`nodes.decoding.Verifier`, i.e. :class:`CachedLM`) within ``|a - b| <= 1e-5 + 1e-5 |b|``
for logits and hidden states, and picks the same greedy token wherever its two best logits are more
than 1e-3 apart. Not bitwise: MKL's sgemm sums a row differently depending on how many rows the
matrix has (another M, another blocking), and the batch's attention runs a masked sdpa over the
longest row's keys where the batch-1 forward runs ``is_causal`` or a mask over its own keys. A
forward of one row runs the batch-1 operations on the slot's buffers and is checked bitwise.
"""
from __future__ import annotations

import pytest
import torch

from nodes.decoding import (BatchedLM, BatchedVerifier, BatchItem, CachedLM, Drafter, ExactMatch, ScoreRequest,
                            TopKAcceptance, TypicalAcceptance, Verifier, autoregressive_generate, speculative_generate,
                            verify_batch, verify_round)

RTOL = ATOL = 1e-5


@pytest.fixture(scope="module")
def default_pair():
    from nodes.models import load_pair

    return load_pair()


def tiny_qwen2(seed: int = 4):
    """A random Qwen2 (grouped queries: 4 query heads on 2 KV heads, q/k/v biases), as
    scripts/random_pair.py builds them but tiny."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      initializer_range=64 ** -0.5, tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
                      pad_token_id=0)
    return Qwen2ForCausalLM(cfg).eval()


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL, msg=lambda m: f"{what}: {m}")


def _same_greedy(a: torch.Tensor, b: torch.Tensor) -> None:
    top2 = b.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-3
    assert torch.equal(a.argmax(-1)[clear], b.argmax(-1)[clear])


def _ragged_rounds_match_batch1(model) -> None:
    """Four sessions of different committed lengths, in non-adjacent slots of a 6-slot cache, verify
    drafts of different lengths (γ = 0 too) in one forward per round, each rolled back to its own
    length between rounds; a last round batches two sessions whose slots are adjacent."""
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(7)

    def tokens(n: int) -> list[int]:
        return torch.randint(3, vocab, (n,), generator=gen).tolist()

    bv = BatchedVerifier(model, max_batch_size=6, max_len=96)
    assert bv.lm.lean
    slots = [bv.open() for _ in range(6)]
    sessions = [slots[3], slots[0], slots[5], slots[2]]
    refs = [Verifier(model) for _ in sessions]
    seqs = [tokens(n) for n in (5, 17, 9, 30)]
    rounds = [((4, 1, 7, 3), (2, 0, 7, 1)),   # (γ per session, draft tokens accepted per session)
              ((2, 6, 0, 5), (2, 3, 0, 0)),
              ((1, 3, 8, 2), (0, 3, 4, 2))]
    for gammas, accepted in rounds:
        drafts = [tokens(g) for g in gammas]
        batch = bv.score_batch([ScoreRequest(s, seq, d) for s, seq, d in zip(sessions, seqs, drafts)])
        for i, (ref, row) in enumerate(zip(refs, batch.rows)):
            n_prefill = max(0, len(seqs[i]) - ref.lm.cache_len - 1)
            logits, hidden, _ = ref.score(seqs[i], drafts[i])
            assert row.logits.shape == (gammas[i] + 1, vocab) and row.n_prefill == n_prefill
            _close(row.logits, logits, f"session {i} logits")
            _close(row.hidden, hidden, f"session {i} hidden")
            _same_greedy(row.logits, logits)
            nxt = int(logits[accepted[i]].argmax())
            seqs[i] = seqs[i] + drafts[i][: accepted[i]] + [nxt]
            ref.commit(len(seqs[i]))
            bv.commit(sessions[i], len(seqs[i]))  # per-row rollback: each row to its own length
            assert bv.lm.length(sessions[i]) == ref.lm.cache_len == len(seqs[i]) - 1
    assert len({len(s) for s in seqs}) == 4
    pick = [3, 0]  # slots 2 and 3: the contiguous-slot path (a view instead of a gather)
    drafts = [tokens(g) for g in (6, 2)]
    batch = bv.score_batch([ScoreRequest(sessions[i], seqs[i], d) for i, d in zip(pick, drafts)])
    for i, d, row in zip(pick, drafts, batch.rows):
        logits, hidden, _ = refs[i].score(seqs[i], d)
        _close(row.logits, logits, f"session {i} logits (adjacent slots)")
        _close(row.hidden, hidden, f"session {i} hidden (adjacent slots)")


def test_ragged_batch_rows_equal_their_batch1_forward_default_pair(default_pair):
    _ragged_rounds_match_batch1(default_pair.target)  # Llama, 4 KV heads for 4 query heads


def test_ragged_batch_rows_equal_their_batch1_forward_qwen2():
    _ragged_rounds_match_batch1(tiny_qwen2())  # Qwen2: grouped queries, q/k/v biases


@pytest.mark.parametrize("family", ["default", "qwen2"])
def test_one_row_batch_is_bitwise_the_batch1_verifier(default_pair, family):
    """verify_round on a slot (SlotVerifier) and on a Verifier: the same logits and hidden states
    bit for bit, round after round, with the other slots busy in between."""
    model = default_pair.target if family == "default" else tiny_qwen2()
    drafter = default_pair.drafter if family == "default" else tiny_qwen2(seed=5)
    bv = BatchedVerifier(model, max_batch_size=3, max_len=128)
    other, slot = bv.open(), bv.open()
    one, ref, d = bv.session(slot), Verifier(model), Drafter(drafter)
    seq = default_pair.tokenizer("Question : 12 + 30 = ? Answer :")["input_ids"]
    for gamma in (4, 1, 6, 3, 5, 2):
        block = d.draft(seq, gamma)
        bv.score_batch([ScoreRequest(other, seq[:7], [5, 6])])  # another row's forward in between
        bv.commit(other, 7)
        a = verify_round(one, ExactMatch(), seq, block.tokens)
        b = verify_round(ref, ExactMatch(), seq, block.tokens)
        assert torch.equal(a.ctx.target_logits, b.ctx.target_logits)
        assert torch.equal(a.ctx.target_hidden, b.ctx.target_hidden)
        assert a.new_tokens == b.new_tokens and a.n_prefill == b.n_prefill
        seq = seq + a.new_tokens
        one.commit(len(seq)), ref.commit(len(seq)), d.commit(len(seq))
    res = speculative_generate(Drafter(drafter), bv.session(slot), ExactMatch(), seq[:9], gamma=4,
                               max_new_tokens=24)
    assert res.tokens == autoregressive_generate(model, seq[:9], 24)


def test_batched_greedy_speculation_equals_target_greedy(default_pair):
    """Four sessions drafting different γ per round, verified together (verify_batch, ExactMatch on
    each row): each output is the target's own greedy output (the default pair's top-2 logit gaps
    are far above the batch's rounding on these prompts)."""
    pair, tok = default_pair, default_pair.tokenizer
    prompts = [tok(f"Question : {a} + {b} = ? Answer :")["input_ids"] for a, b in ((3, 4), (12, 30), (7, 58), (41, 9))]
    want = [autoregressive_generate(pair.target, p, 20) for p in prompts]
    bv = BatchedVerifier(pair.target, max_batch_size=4, max_len=128)
    slots = [bv.open() for _ in prompts]
    drafters = [Drafter(pair.drafter) for _ in prompts]
    seqs, outs = [list(p) for p in prompts], [[] for _ in prompts]
    rnd = 0
    while any(len(o) < 20 for o in outs):
        live = [i for i, o in enumerate(outs) if len(o) < 20]
        blocks = [drafters[i].draft(seqs[i], min(1 + (i + rnd) % 5, 20 - len(outs[i]))).tokens for i in live]
        outcomes = verify_batch(bv, [BatchItem(slots[i], seqs[i], b, ExactMatch()) for i, b in zip(live, blocks)])
        for i, r in zip(live, outcomes):
            new = r.new_tokens
            seqs[i] += new
            outs[i] += new
            bv.commit(slots[i], len(seqs[i]))
            drafters[i].commit(len(seqs[i]))
        rnd += 1
    assert [o[:20] for o in outs] == want


def test_verify_batch_decides_each_row_as_verify_round(default_pair):
    """Mixed policies in one batch: each session's decision and committed tokens equal
    verify_round's on its own Verifier, round after round (drafts of the real drafter)."""
    pair, tok = default_pair, default_pair.tokenizer
    policies = [ExactMatch(), TopKAcceptance(k=2), TypicalAcceptance(), TopKAcceptance(k=3)]
    prompts = [tok(f"Question : {a} - {b} = ? Answer :")["input_ids"] for a, b in ((9, 4), (52, 17), (30, 8), (6, 6))]
    bv = BatchedVerifier(pair.target, max_batch_size=4, max_len=128)
    slots = [bv.open() for _ in prompts]
    refs, drafters = [Verifier(pair.target) for _ in prompts], [Drafter(pair.drafter) for _ in prompts]
    seqs = [list(p) for p in prompts]
    relaxed = 0
    for rnd in range(6):
        blocks = [d.draft(s, 2 + (i + rnd) % 4) for i, (d, s) in enumerate(zip(drafters, seqs))]
        items = [BatchItem(sl, s, b.tokens, pol, drafter_hidden=b.hidden)
                 for sl, s, b, pol in zip(slots, seqs, blocks, policies)]
        for i, got in enumerate(verify_batch(bv, items)):
            want = verify_round(refs[i], policies[i], seqs[i], blocks[i].tokens, drafter_hidden=blocks[i].hidden)
            a, b = got.decision, want.decision
            assert (a.accepted, a.accepted_exact, a.harmless, a.next_token, a.first_mismatch) == \
                (b.accepted, b.accepted_exact, b.harmless, b.next_token, b.first_mismatch), (rnd, i)
            assert got.new_tokens == want.new_tokens and got.n_prefill == want.n_prefill
            relaxed += a.harmless
            seqs[i] += got.new_tokens
            bv.commit(slots[i], len(seqs[i])), refs[i].commit(len(seqs[i])), drafters[i].commit(len(seqs[i]))
    assert len({len(s) for s in seqs}) > 1
    assert relaxed > 0  # the relaxed policies accepted near misses on their own rows


def test_slot_cache_bookkeeping_and_errors(default_pair):
    lm = BatchedLM(default_pair.target, max_batch_size=2, max_len=16)
    a, b = lm.acquire(), lm.acquire()
    with pytest.raises(RuntimeError, match="in use"):
        lm.acquire()
    lm.forward([a, b], [[5, 6, 7], [8]], [1, 1])
    assert (lm.length(a), lm.length(b)) == (3, 1)
    with pytest.raises(ValueError, match="repeat"):
        lm.forward([a, a], [[1], [2]])
    with pytest.raises(ValueError, match="at least one token"):
        lm.forward([a, b], [[1], []])
    with pytest.raises(ValueError, match="keep"):
        lm.forward([a], [[1, 2]], [3])
    with pytest.raises(ValueError, match="max_len"):
        lm.forward([a, b], [[1], list(range(3, 19))])
    assert (lm.length(a), lm.length(b)) == (3, 1)  # a refused forward writes nothing
    lm.crop(a, 1)
    assert (lm.length(a), lm.length(b)) == (1, 1)
    lm.release(a)
    with pytest.raises(ValueError, match="not held"):
        lm.release(a)
    assert lm.acquire() == a and lm.length(a) == 0
    with pytest.raises(IndexError):
        lm.crop(2, 0)
    bv = BatchedVerifier(default_pair.target, max_batch_size=1, max_len=16)
    s = bv.open()
    bv.score_batch([ScoreRequest(s, [4, 5, 6], [7])])
    with pytest.raises(ValueError, match="commit"):  # not rolled back: the slot holds all of seq
        bv.score_batch([ScoreRequest(s, [4, 5, 6, 7], [])])
    with pytest.raises(ValueError, match="max_len"):  # refused on arrival, alone
        bv.check(ScoreRequest(s, [4, 5, 6, 7, 8], list(range(3, 15))))
    with pytest.raises(ValueError, match="empty"):
        bv.check(ScoreRequest(s, [], [3]))


def test_models_outside_the_lean_family_run_row_by_row(default_pair):
    """An eager-attention model keeps a transformers cache per slot: rows equal Verifier(lean=False)."""
    model = tiny_qwen2()
    model.config._attn_implementation = "eager"
    bv = BatchedVerifier(model, max_batch_size=2, max_len=64)
    assert not bv.lm.lean
    slots = [bv.open(), bv.open()]
    refs = [Verifier(model, lean=False), Verifier(model, lean=False)]
    seqs, drafts = [[4, 9, 13, 2, 8], [7, 7, 1]], [[3, 3, 5], [11]]
    for _ in range(2):
        batch = bv.score_batch([ScoreRequest(s, q, d) for s, q, d in zip(slots, seqs, drafts)])
        for i, row in enumerate(batch.rows):
            logits, hidden, _ = refs[i].score(seqs[i], drafts[i])
            assert torch.equal(row.logits, logits) and torch.equal(row.hidden, hidden)
            seqs[i] = seqs[i] + drafts[i][:1] + [int(logits[1].argmax())]
            refs[i].commit(len(seqs[i])), bv.commit(slots[i], len(seqs[i]))
    assert isinstance(refs[0].lm, CachedLM)
