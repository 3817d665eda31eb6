"""Benchmark the decoding core on the shipped default pair and task (no network).

Accuracy of target / drafter / greedy speculative decoding on test problems, exact-match
acceptance per draft position, mean accepted length at γ = 4 and 8, and our speculative loop's
speed against ``transformers`` ``generate(assistant_model=…)`` measured side by side (alternating
problem by problem, same γ, same prompts). Last line: one JSON object.

Usage: python benchmarks/decoding.py [--problems 200] [--speed-problems 40]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from nodes.decoding import Drafter, ExactMatch, Verifier, speculative_generate  # noqa: E402
from nodes.evaluate import encode_prompt, evaluate_pair  # noqa: E402
from nodes.models import load_pair  # noqa: E402
from nodes.tasks import ArithTask  # noqa: E402


def speed_side_by_side(n_problems: int, gamma: int) -> dict:
    """tokens/s of our greedy speculative loop and of HF assisted generation, interleaved."""
    pair = load_pair()
    problems = ArithTask().problems("validation", n_problems)
    d, v = Drafter(pair.drafter), Verifier(pair.target)
    asst = pair.drafter
    asst.generation_config.num_assistant_tokens = gamma
    asst.generation_config.num_assistant_tokens_schedule = "constant"
    asst.generation_config.assistant_confidence_threshold = 0.0
    ours_s = hf_s = 0.0
    ours_tok = hf_tok = 0
    same = 0
    for p in problems:
        ids = encode_prompt(pair, p)
        t0 = time.perf_counter()
        r = speculative_generate(d, v, ExactMatch(), ids, gamma, 128, pair.eos_token_id)
        ours_s += time.perf_counter() - t0
        ours_tok += len(r.tokens)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = pair.target.generate(torch.tensor([ids]), assistant_model=asst, do_sample=False,
                                       max_new_tokens=128, eos_token_id=pair.eos_token_id,
                                       pad_token_id=pair.tokenizer.pad_token_id)
        hf_s += time.perf_counter() - t0
        hf_ids = out[0, len(ids):].tolist()
        hf_tok += len(hf_ids)
        same += hf_ids == r.tokens
    return {"ours_tok_s": ours_tok / ours_s, "hf_assisted_tok_s": hf_tok / hf_s,
            "ours_vs_hf_assisted_speed": (ours_tok / ours_s) / (hf_tok / hf_s), "same_output_as_hf": same / len(problems)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--speed-problems", type=int, default=40)
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    g4 = evaluate_pair(n_problems=a.problems, gamma=4)
    g8 = evaluate_pair(n_problems=min(a.problems, 100), gamma=8)
    speed = speed_side_by_side(a.speed_problems, 4)
    print(f"accuracy on {g4['problems']} test problems: target {g4['acc_target']:.3f}, drafter {g4['acc_drafter']:.3f}, "
          f"speculative {g4['acc_spec']:.3f}; greedy exact: {g4['greedy_exact'] and g8['greedy_exact']}")
    print(f"accept rate by position (γ=4): {[round(x, 3) for x in g4['accept_rate_by_pos']]}")
    print(f"accept rate by position (γ=8): {[round(x, 3) for x in g8['accept_rate_by_pos']]}")
    print(f"mean accepted length: γ=4 {g4['mean_accepted_len']:.2f}, γ=8 {g8['mean_accepted_len']:.2f}")
    print(f"tokens/s: target {g4['target_tok_s']:.0f}, drafter {g4['drafter_tok_s']:.0f}, "
          f"ours {speed['ours_tok_s']:.0f} vs HF assisted {speed['hf_assisted_tok_s']:.0f}")
    print(json.dumps({
        "target_tok_s": round(g4["target_tok_s"], 1), "drafter_tok_s": round(g4["drafter_tok_s"], 1),
        "accept_rate_by_pos": [round(x, 4) for x in g4["accept_rate_by_pos"]],
        "accept_rate_by_pos_g8": [round(x, 4) for x in g8["accept_rate_by_pos"]],
        "mean_accepted_len_g4": round(g4["mean_accepted_len"], 3), "mean_accepted_len_g8": round(g8["mean_accepted_len"], 3),
        "ours_vs_hf_assisted_speed": round(speed["ours_vs_hf_assisted_speed"], 3),
        "same_output_as_hf_assisted": speed["same_output_as_hf"],
        "greedy_exact": bool(g4["greedy_exact"] and g8["greedy_exact"]),
        "acc_target": g4["acc_target"], "acc_drafter": g4["acc_drafter"], "acc_spec": g4["acc_spec"],
        "problems": g4["problems"],
    }))


if __name__ == "__main__":
    main()
