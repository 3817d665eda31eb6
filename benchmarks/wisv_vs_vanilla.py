"""Benchmark: WISV against vanilla speculative decoding on the default pair and task over a
fixed fading trace (the shipped pedestrian trace), side by side in one run, with the link
modelled from the trace (``wisv simulate``: same nodes, same wire, virtual clock).

Protocols: vanilla, wisv-full, wisv-selective, wisv-target and two non-learned relaxed baselines
(top-2 acceptance; Medusa typical acceptance). Also: the accuracy-vs-latency curve of wisv-full
as λ varies (heads retrained per λ from a mined dataset, when one is given), and the head's
inference cost per verified token next to the target's verification forward.
Last line: one JSON object mapping each protocol to mean_accepted_len, rounds, latency_s, accuracy.

Usage: python benchmarks/wisv_vs_vanilla.py [--problems 100] [--mined runs/out/mined]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from channel_models.csi import CSI  # noqa: E402
from nodes.config import ComputeConfig, RunConfig, TaskConfig  # noqa: E402
from nodes.models import load_pair  # noqa: E402
from nodes.profiles import DEFAULT_DEVICE_PROFILE, DEFAULT_EDGE_PROFILE, PRESETS  # noqa: E402
from runs.simulate import simulate  # noqa: E402

# the paper's hardware class, as the default experiment: latencies do not move with host load
PAPER_HARDWARE = ComputeConfig(PRESETS[DEFAULT_DEVICE_PROFILE].profile, PRESETS[DEFAULT_EDGE_PROFILE].profile)
from traces.format import read_trace  # noqa: E402
from traces.defaults import DEFAULT_TRACE  # noqa: E402

PROTOCOLS = ["vanilla", "wisv-full", "wisv-selective", "wisv-adaptive", "wisv-target", "topk", "typical"]
PAPER = {"accepted_len_pct": 60.8, "rounds_pct": -37.3, "latency_pct": -31.4, "accuracy_loss_pp": "< 1"}


def head_cost_ms(pair) -> dict:
    """Head inference per verified token vs the target forward over a γ=4 draft (ms)."""
    from nodes.decoding import Drafter, Verifier, VerifyContext
    from nodes.evaluate import encode_prompt
    from nodes.head import DecisionHead
    from nodes.protocols import head_file
    from nodes.tasks import ArithTask

    head = DecisionHead.load(head_file(None, "full"))
    d, v = Drafter(pair.drafter), Verifier(pair.target)
    ids = encode_prompt(pair, ArithTask().problem("test", 0))
    block = d.draft(ids, 4)
    t_fwd, t_head = [], []
    for _ in range(50):
        v.reset()
        logits, hidden, ms = v.score(ids, block.tokens)
        t_fwd.append(ms)
        ctx = VerifyContext(torch.tensor(block.tokens), logits, hidden, None, block.hidden,
                            CSI(20.0, 50.0, 10.0, 10.0, snr_db=10.0))
        t0 = time.perf_counter()
        with torch.inference_mode():
            head(head.features(ctx, torch.arange(4)))
        t_head.append((time.perf_counter() - t0) * 1000.0 / 4)
    t_fwd.sort()
    t_head.sort()
    return {"head_ms_per_token": t_head[len(t_head) // 2], "target_verify_ms_per_round": t_fwd[len(t_fwd) // 2]}


def lambda_curve(pair, mined: Path, problems: int, lambdas: list[float]) -> list[dict]:
    """Accuracy and latency of wisv-full with heads trained at each λ (ms)."""
    from nodes.head_train import train_heads

    curve = []
    for lam in lambdas:
        d = Path(tempfile.mkdtemp(prefix="wisv-heads-"))
        train_heads(mined, d, lam)
        cfg = RunConfig(head_dir=str(d), task=TaskConfig(problems=problems), compute=PAPER_HARDWARE)
        r = simulate(pair, read_trace(DEFAULT_TRACE), cfg, ["wisv-full"])["wisv-full"]
        curve.append({"lambda_ms": lam, "accuracy": r.accuracy, "latency_s": r.latency_ms_mean / 1000.0,
                      "mean_accepted_len": r.mean_accepted_len})
        print(f"λ = {lam:6g} ms: accuracy {r.accuracy:.3f}, latency {r.latency_ms_mean:.1f} ms, "
              f"accepted length {r.mean_accepted_len:.2f}")
    return curve


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--mined", help="mined dataset (wisv head mine) for the λ curve")
    ap.add_argument("--lambdas", default="100,300,1000,3000")
    a = ap.parse_args()
    pair = load_pair()
    res = simulate(pair, read_trace(DEFAULT_TRACE), RunConfig(task=TaskConfig(problems=a.problems),
                                                              compute=PAPER_HARDWARE), PROTOCOLS)
    base = res["vanilla"]
    out = {}
    for k, v in res.items():
        out[k] = {"mean_accepted_len": round(v.mean_accepted_len, 4), "rounds": v.rounds,
                  "latency_s": round(v.latency_ms_mean / 1000.0, 5), "accuracy": v.accuracy}
        print(f"{k:>15}: accepted length {v.mean_accepted_len:.2f} ({(v.mean_accepted_len / base.mean_accepted_len - 1) * 100:+.1f} %), "
              f"rounds {v.rounds} ({(v.rounds / base.rounds - 1) * 100:+.1f} %), latency {v.latency_ms_mean:.1f} ms "
              f"({(v.latency_ms_mean / base.latency_ms_mean - 1) * 100:+.1f} %), accuracy {v.accuracy:.3f} "
              f"({(v.accuracy - base.accuracy) * 100:+.1f} pp)")
    print(f"paper (1B/8B, simulated): accepted length +{PAPER['accepted_len_pct']} %, rounds {PAPER['rounds_pct']} %, "
          f"latency {PAPER['latency_pct']} %, accuracy loss {PAPER['accuracy_loss_pp']} pp")
    cost = head_cost_ms(pair)
    print(f"head inference {cost['head_ms_per_token']:.4f} ms per verified token; target verification forward "
          f"{cost['target_verify_ms_per_round']:.3f} ms per round")
    extra = {"head_cost": cost, "paper": PAPER}
    if a.mined:
        extra["lambda_curve"] = lambda_curve(pair, Path(a.mined), a.problems, [float(x) for x in a.lambdas.split(",")])
    print(json.dumps({**out, "_extra": extra}))


if __name__ == "__main__":
    main()
