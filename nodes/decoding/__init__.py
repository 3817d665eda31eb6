"""The speculative-decoding core (no network): cached models, drafting, verification, rollback.

Drafting (:class:`Drafter`, device side) and scoring (:class:`Verifier`, edge side) are separate
objects so the nodes can put a wire between them; the decision of how many draft tokens stand is
a :class:`~nodes.decoding.policies.VerificationPolicy`.
"""
from nodes.decoding.lm import CachedLM
from nodes.decoding.policies import (POLICIES, ExactMatch, RejectionSampling, TopKAcceptance,
                                     TypicalAcceptance, Verdict, VerificationPolicy, VerifyContext,
                                     make_policy)
from nodes.decoding.speculative import (DraftBlock, Drafter, RoundRecord, SamplingConfig, SpecResult,
                                        Verifier, autoregressive_generate, speculative_generate)

__all__ = ["CachedLM", "POLICIES", "ExactMatch", "RejectionSampling", "TopKAcceptance", "TypicalAcceptance",
           "Verdict", "VerificationPolicy", "VerifyContext", "make_policy", "DraftBlock", "Drafter",
           "RoundRecord", "SamplingConfig", "SpecResult", "Verifier", "autoregressive_generate",
           "speculative_generate"]
