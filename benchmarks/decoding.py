"""Benchmark the decoding core against transformers, side by side (no network).

Default (the shipped pair and task): accuracy of target / drafter / greedy speculative decoding on
test problems, exact-match acceptance per draft position, mean accepted length at γ = 4 and 8,
then the side-by-side speed below on ``--speed-problems`` problems.

``--drafter D --target T`` (any local pair sharing a tokenizer, e.g. ``scripts/random_pair.py``'s
0.5B/1.5B-like pair): the side-by-side speed only, on ``--problems`` problems (default 3; accuracy
of a real pair: ``wisv models eval``).

Side by side, problem by problem on the same prompts, the order alternating (ours first on even
problems, transformers first on odd ones), after an untimed warm-up round:
(a) our greedy ``speculative_generate`` (ExactMatch, γ) vs ``target.generate(assistant_model=drafter)``
    (greedy, γ assistant tokens on a constant schedule, confidence threshold 0);
(b) our ``autoregressive_generate`` on the target vs ``target.generate()`` (greedy).
Reported: tokens/s of each, ours/transformers ratios (> 1: ours faster), whether the outputs are
identical (ours vs transformers, speculative vs the target alone), acceptance, ms per round, the
host's load average. Last line: one JSON object (also written to ``--out`` when given).

``--profile``: where the time goes instead (ms per round and per token, ours / ours on the
transformers decoder / transformers; see :func:`profile_breakdown`), on the first problem.

Usage: python benchmarks/decoding.py [--problems 200] [--speed-problems 40]
       python benchmarks/decoding.py --drafter D --target T [--problems 3] [--max-new-tokens 48]
              [--gamma 4] [--threads 2] [--out /tmp/decoding-bench.json]
       python benchmarks/decoding.py [--drafter D --target T] --profile [--max-new-tokens 8]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from nodes.decoding import (CachedLM, Drafter, ExactMatch, Verifier, autoregressive_generate,  # noqa: E402
                            speculative_generate)
from nodes.evaluate import accept_rate_by_position, encode_prompt, evaluate_pair  # noqa: E402
from nodes.models import ModelPair, load_pair  # noqa: E402
from nodes.tasks import ArithTask  # noqa: E402

log = logging.getLogger("benchmarks.decoding")


@dataclass
class Tally:
    """Seconds spent and tokens produced by one decoding method over the timed problems."""

    seconds: float = 0.0
    tokens: int = 0

    def run(self, fn: Callable[[], list[int]]) -> list[int]:
        """Time ``fn`` (returns the output token ids) and add it up."""
        t0 = time.perf_counter()
        out = fn()
        self.seconds += time.perf_counter() - t0
        self.tokens += len(out)
        return out

    @property
    def tok_s(self) -> float:
        """Tokens per second."""
        return self.tokens / self.seconds if self.seconds else 0.0


class SideBySide:
    """Our decoding core and transformers' ``generate`` on one pair, the same prompts and settings."""

    def __init__(self, pair: ModelPair, gamma: int, max_new_tokens: int):
        self.pair, self.gamma, self.max_new = pair, gamma, max_new_tokens
        self.drafter, self.verifier = Drafter(pair.drafter), Verifier(pair.target)
        self.target_lm = CachedLM(pair.target)
        cfg = pair.drafter.generation_config
        cfg.num_assistant_tokens, cfg.num_assistant_tokens_schedule = gamma, "constant"
        cfg.assistant_confidence_threshold = 0.0

    def ours_spec(self, ids: list[int], max_new: int):
        """Our greedy speculative loop (returns the SpecResult)."""
        return speculative_generate(self.drafter, self.verifier, ExactMatch(), ids, self.gamma, max_new,
                                    self.pair.eos_token_id)

    def ours_ar(self, ids: list[int], max_new: int) -> list[int]:
        """Our target-alone greedy decoding."""
        return autoregressive_generate(self.target_lm, ids, max_new, self.pair.eos_token_id)

    def hf(self, ids: list[int], max_new: int, assisted: bool) -> list[int]:
        """transformers' greedy ``generate`` of the target, with the drafter as assistant or alone."""
        extra = {"assistant_model": self.pair.drafter} if assisted else {}
        with torch.inference_mode():
            out = self.pair.target.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=max_new,
                                            eos_token_id=self.pair.eos_token_id,
                                            pad_token_id=self.pair.tokenizer.pad_token_id, **extra)
        return out[0, len(ids):].tolist()

    def run(self, prompts: list[list[int]]) -> dict:
        """Warm up on the first prompt, then time all four methods on every prompt, alternating
        which side goes first; returns the figures (tokens/s, ratios, identity, acceptance, ms)."""
        warm = max(2, 2 * self.gamma)
        self.ours_spec(prompts[0], warm), self.hf(prompts[0], warm, True)
        self.ours_ar(prompts[0], warm), self.hf(prompts[0], warm, False)
        spec, asst, ar, gen = Tally(), Tally(), Tally(), Tally()
        rounds: list[list] = []
        per_problem: list[dict] = []  # time ratios (same tokens on both sides when the outputs agree)
        same_spec = same_ar = exact = 0
        for i, ids in enumerate(prompts):
            def ours_spec() -> list[int]:
                r = self.ours_spec(ids, self.max_new)
                rounds.append(r.rounds)
                return r.tokens

            methods = {"spec": (spec, ours_spec), "asst": (asst, lambda: self.hf(ids, self.max_new, True)),
                       "ar": (ar, lambda: self.ours_ar(ids, self.max_new)),
                       "gen": (gen, lambda: self.hf(ids, self.max_new, False))}
            out: dict[str, list[int]] = {}
            before = {name: tally.seconds for name, (tally, _) in methods.items()}
            for ours, theirs in (("spec", "asst"), ("ar", "gen")):
                for name in ((ours, theirs) if i % 2 == 0 else (theirs, ours)):
                    tally, fn = methods[name]
                    out[name] = tally.run(fn)
            took = {name: tally.seconds - before[name] for name, (tally, _) in methods.items()}
            per_problem.append({"spec_ratio": round(took["asst"] / took["spec"], 3),
                                "ar_ratio": round(took["gen"] / took["ar"], 3), "load_avg": round(os.getloadavg()[0], 2)})
            log.info("problem %d/%d: %s", i + 1, len(prompts), per_problem[-1])
            same_spec += out["spec"] == out["asst"]
            same_ar += out["ar"] == out["gen"]
            exact += out["spec"] == out["ar"]
        n_rounds = sum(len(r) for r in rounds)
        n = len(prompts)
        return {
            "ours_spec_tok_s": spec.tok_s, "hf_assisted_tok_s": asst.tok_s, "spec_ratio": spec.tok_s / asst.tok_s,
            "ours_ar_tok_s": ar.tok_s, "hf_generate_tok_s": gen.tok_s, "ar_ratio": ar.tok_s / gen.tok_s,
            "same_spec_as_hf": same_spec / n, "same_ar_as_hf": same_ar / n, "spec_equals_target": exact / n,
            "tokens": {"spec": spec.tokens, "hf_assisted": asst.tokens, "ar": ar.tokens, "hf_generate": gen.tokens},
            "rounds": n_rounds, "spec_mean_accepted_len": spec.tokens / max(1, n_rounds),
            "spec_accept_rate_by_pos": [round(x, 4) for x in accept_rate_by_position(rounds, self.gamma)],
            # Same outputs and drafts: transformers runs the same number of rounds.
            "ours_ms_per_round": 1000 * spec.seconds / max(1, n_rounds),
            "hf_ms_per_round": 1000 * asst.seconds / max(1, n_rounds),
            "ours_ms_per_token_ar": 1000 * ar.seconds / max(1, ar.tokens),
            "hf_ms_per_token_ar": 1000 * gen.seconds / max(1, gen.tokens),
            "per_problem": per_problem,
        }


def side_by_side(pair: ModelPair, n_problems: int, gamma: int, max_new_tokens: int) -> dict:
    """The side-by-side figures on the built-in task's first ``n_problems`` validation problems."""
    prompts = [encode_prompt(pair, p) for p in ArithTask().problems("validation", n_problems)]
    return SideBySide(pair, gamma, max_new_tokens).run(prompts)


OP_GROUPS = {"matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul"),
             "attention": ("scaled_dot_product",), "cat/copy": ("aten::cat", "aten::copy_", "aten::clone")}


class ForwardClock:
    """Wall time (s) spent inside the drafter's and the target's forwards, by role."""

    def __init__(self):
        self.seconds = {"drafter": 0.0, "target": 0.0}

    def wrap(self, role: str, fn: Callable) -> Callable:
        """``fn`` timed into ``role``."""
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[role] += time.perf_counter() - t0
        return timed

    def hook(self, role: str, module: torch.nn.Module) -> list:
        """Time every ``module(...)`` call into ``role`` (forward hooks; returns the handles)."""
        start: list[float] = []
        pre = module.register_forward_pre_hook(lambda *_: start.append(time.perf_counter()))
        post = module.register_forward_hook(
            lambda *_: self.seconds.__setitem__(role, self.seconds[role] + time.perf_counter() - start.pop()))
        return [pre, post]


def profile_breakdown(pair: ModelPair, ids: list[int], gamma: int, max_new_tokens: int) -> dict[str, dict[str, float]]:
    """Where the time goes, in ms per round (speculative; the same rounds for all three) or per
    token (target alone), for our core (lean path), our core on the transformers decoder (the
    previous path) and transformers' ``generate``: inside the drafter's / the target's forwards,
    by operator group (torch.profiler self times), and outside any operator (Python, dispatch)."""
    from torch.profiler import ProfilerActivity, profile

    side = SideBySide(pair, gamma, max_new_tokens)
    before = (Drafter(pair.drafter, lean=False), Verifier(pair.target, lean=False), CachedLM(pair.target, lean=False))
    for d, v, lm in ((side.drafter, side.verifier, side.target_lm), before):  # warm-up
        speculative_generate(d, v, ExactMatch(), ids, gamma, 2, pair.eos_token_id)
        autoregressive_generate(lm, ids, 2, pair.eos_token_id)
    side.hf(ids, 2, True), side.hf(ids, 2, False)
    n_rounds = len(side.ours_spec(ids, max_new_tokens).rounds)
    n_tokens = len(side.ours_ar(ids, max_new_tokens))

    def ours(drafter: Drafter, verifier: Verifier, lm: CachedLM, spec: bool, clock: ForwardClock) -> Callable:
        def run():
            for role, obj in (("drafter", drafter.lm), ("target", verifier.lm), ("target", lm)):
                obj.forward = clock.wrap(role, type(obj).forward.__get__(obj))
            try:
                if spec:
                    return speculative_generate(drafter, verifier, ExactMatch(), ids, gamma, max_new_tokens,
                                                pair.eos_token_id).tokens
                return autoregressive_generate(lm, ids, max_new_tokens, pair.eos_token_id)
            finally:
                for obj in (drafter.lm, verifier.lm, lm):
                    del obj.forward
        return run

    def hf(assisted: bool, clock: ForwardClock) -> Callable:
        def run():
            handles = clock.hook("target", pair.target) + clock.hook("drafter", pair.drafter)
            try:
                return side.hf(ids, max_new_tokens, assisted)
            finally:
                for h in handles:
                    h.remove()
        return run

    methods = {
        "spec: ours": lambda c: ours(side.drafter, side.verifier, side.target_lm, True, c),
        "spec: ours on HF decoder": lambda c: ours(*before, True, c),
        "spec: HF assisted": lambda c: hf(True, c),
        "ar: ours": lambda c: ours(side.drafter, side.verifier, side.target_lm, False, c),
        "ar: ours on HF decoder": lambda c: ours(*before, False, c),
        "ar: HF generate": lambda c: hf(False, c),
    }
    table = {}
    for name, make in methods.items():
        clock = ForwardClock()
        fn = make(clock)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            fn()
            wall = time.perf_counter() - t0
        per = n_rounds if name.startswith("spec") else n_tokens
        groups = {g: 0.0 for g in OP_GROUPS} | {"other ops": 0.0}
        for ev in prof.key_averages():
            g = next((g for g, keys in OP_GROUPS.items() if any(k in ev.key for k in keys)), "other ops")
            groups[g] += ev.self_cpu_time_total / 1e6
        in_ops = sum(groups.values())
        row = {"total": wall, **{f"in {r} forward": s for r, s in clock.seconds.items()}, **groups,
               "outside ops (Python, dispatch)": wall - in_ops}
        table[name] = {k: round(1000 * v / per, 1) for k, v in row.items()}
    return table


def print_profile(table: dict[str, dict[str, float]]) -> None:
    """The breakdown as a text table (ms per round / per token)."""
    cols = list(next(iter(table.values())))
    print(f"{'ms per round (spec) / per token (ar)':34s}" + "".join(f"{c[:18]:>20s}" for c in cols))
    for name, row in table.items():
        print(f"{name:34s}" + "".join(f"{row[c]:20.1f}" for c in cols))


def print_speed(s: dict, load: tuple[float, float]) -> None:
    """The side-by-side figures as text."""
    print(f"speculative: ours {s['ours_spec_tok_s']:.2f} tok/s vs HF assisted {s['hf_assisted_tok_s']:.2f} "
          f"(x{s['spec_ratio']:.3f}); {s['ours_ms_per_round']:.1f} vs {s['hf_ms_per_round']:.1f} ms/round; "
          f"same output {s['same_spec_as_hf']:.2f}")
    print(f"target alone: ours {s['ours_ar_tok_s']:.2f} tok/s vs HF generate {s['hf_generate_tok_s']:.2f} "
          f"(x{s['ar_ratio']:.3f}); same output {s['same_ar_as_hf']:.2f}; speculative = target {s['spec_equals_target']:.2f}")
    print(f"acceptance: mean accepted length {s['spec_mean_accepted_len']:.2f}, by position "
          f"{s['spec_accept_rate_by_pos']}; load average {load[0]:.2f} -> {load[1]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--drafter", type=Path, help="local HF folder (default: the shipped pair)")
    ap.add_argument("--target", type=Path)
    ap.add_argument("--problems", type=int, help="accuracy problems (default 200); side-by-side problems "
                                                  "for --drafter/--target (default 3)")
    ap.add_argument("--speed-problems", type=int, default=40, help="side-by-side problems on the shipped pair")
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, help="default 128 (shipped pair), 48 (--drafter/--target)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", type=Path, help="also write the JSON object here")
    ap.add_argument("--profile", action="store_true", help="only the time breakdown, on the first problem "
                                                           "(max-new-tokens default 8)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if (a.drafter is None) != (a.target is None):
        ap.error("--drafter and --target go together")
    torch.set_num_threads(a.threads)
    custom = a.drafter is not None
    load0 = os.getloadavg()[0]
    if a.profile:
        pair = load_pair(a.drafter, a.target)
        ids = encode_prompt(pair, ArithTask().problems("validation", 1)[0])
        table = profile_breakdown(pair, ids, a.gamma, a.max_new_tokens or 8)
        print_profile(table)
        load = (load0, os.getloadavg()[0])
        print(f"load average {load[0]:.2f} -> {load[1]:.2f}, {a.threads} threads")
        line = json.dumps({"profile_ms": table, "gamma": a.gamma, "max_new_tokens": a.max_new_tokens or 8,
                           "threads": a.threads, "load_avg_1min": [round(x, 2) for x in load]})
        if a.out:
            a.out.write_text(line + "\n")
        print(line)
        return
    if custom:
        pair = load_pair(a.drafter, a.target)
        speed = side_by_side(pair, a.problems or 3, a.gamma, a.max_new_tokens or 48)
        load = (load0, os.getloadavg()[0])
        print_speed(speed, load)
        result = {"drafter": str(a.drafter), "target": str(a.target), "problems": a.problems or 3}
    else:
        n = a.problems or 200
        g4 = evaluate_pair(n_problems=n, gamma=4)
        g8 = evaluate_pair(n_problems=min(n, 100), gamma=8)
        speed = side_by_side(load_pair(), a.speed_problems, a.gamma, a.max_new_tokens or 128)
        load = (load0, os.getloadavg()[0])
        print(f"accuracy on {g4['problems']} test problems: target {g4['acc_target']:.3f}, drafter {g4['acc_drafter']:.3f}, "
              f"speculative {g4['acc_spec']:.3f}; greedy exact: {g4['greedy_exact'] and g8['greedy_exact']}")
        print(f"accept rate by position (γ=4): {[round(x, 3) for x in g4['accept_rate_by_pos']]}")
        print(f"accept rate by position (γ=8): {[round(x, 3) for x in g8['accept_rate_by_pos']]}")
        print(f"mean accepted length: γ=4 {g4['mean_accepted_len']:.2f}, γ=8 {g8['mean_accepted_len']:.2f}")
        print(f"tokens/s: target {g4['target_tok_s']:.0f}, drafter {g4['drafter_tok_s']:.0f}")
        print_speed(speed, load)
        result = {
            "target_tok_s": round(g4["target_tok_s"], 1), "drafter_tok_s": round(g4["drafter_tok_s"], 1),
            "accept_rate_by_pos": [round(x, 4) for x in g4["accept_rate_by_pos"]],
            "accept_rate_by_pos_g8": [round(x, 4) for x in g8["accept_rate_by_pos"]],
            "mean_accepted_len_g4": round(g4["mean_accepted_len"], 3),
            "mean_accepted_len_g8": round(g8["mean_accepted_len"], 3),
            "ours_vs_hf_assisted_speed": round(speed["spec_ratio"], 3),
            "same_output_as_hf_assisted": speed["same_spec_as_hf"],
            "greedy_exact": bool(g4["greedy_exact"] and g8["greedy_exact"]),
            "acc_target": g4["acc_target"], "acc_drafter": g4["acc_drafter"], "acc_spec": g4["acc_spec"],
            "problems": g4["problems"], "speed_problems": a.speed_problems,
        }
    result.update({"gamma": a.gamma, "max_new_tokens": a.max_new_tokens or (48 if custom else 128),
                   "threads": a.threads, "load_avg_1min": [round(x, 2) for x in load],
                   **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in speed.items()}})
    line = json.dumps(result)
    if a.out:
        a.out.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
