"""The speculative-decoding core (no network): cached models, drafting, verification, rollback.

Drafting (:class:`Drafter`, device side) and scoring (:class:`Verifier`, edge side) are separate
objects so the nodes can put a wire between them; one round (forward + policy) is
:func:`verify_round`; :class:`BatchedVerifier` scores several sessions' drafts in one forward
(slots of a batched KV cache, :class:`BatchedLM`) and :func:`verify_batch` decides their rounds;
the decision of how many draft tokens stand is a :class:`~nodes.decoding.policies.VerificationPolicy`.
"""
from nodes.decoding.batched_lm import BatchedLM
from nodes.decoding.batched_round import BatchItem, verify_batch
from nodes.decoding.batched_verifier import BatchedVerifier, BatchScore, ScoredRow, ScoreRequest, SlotVerifier
from nodes.decoding.lm import CachedLM
from nodes.decoding.policies import (Decision, ExactMatch, RejectionSampling, TopKAcceptance, TypicalAcceptance,
                                     VerificationPolicy, VerifyContext)
from nodes.decoding.round import RoundOutcome, verify_round
from nodes.decoding.speculative import (DraftBlock, Drafter, RoundRecord, SamplingConfig, SpecResult,
                                        Verifier, autoregressive_generate, speculative_generate)

__all__ = ["BatchedLM", "BatchItem", "verify_batch", "BatchedVerifier", "BatchScore", "ScoredRow", "ScoreRequest",
           "SlotVerifier", "CachedLM",
           "Decision", "ExactMatch", "RejectionSampling", "TopKAcceptance", "TypicalAcceptance",
           "VerificationPolicy", "VerifyContext", "RoundOutcome", "verify_round", "DraftBlock", "Drafter",
           "RoundRecord", "SamplingConfig", "SpecResult", "Verifier", "autoregressive_generate",
           "speculative_generate"]
