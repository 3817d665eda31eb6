"""Benchmark: per-round protocol overhead on loopback, and uplink bytes per round per protocol.

1. Overhead: a device process sends a round of 8 draft tokens with 2048-wide fp16 hidden states
   (a Llama-3.2-1B-sized upload) to a "null edge" process (a ZeroMQ ROUTER that decodes it and
   answers an encoded verdict, computing nothing), and measures the round trip: serialisation +
   ZeroMQ + deserialisation both ways, no model compute. Goal: median < 1 ms.
2. Uplink bytes: every protocol runs the default pair on test problems over loopback against a
   real edge process; mean application bytes per round (all frames of all messages), and the
   same message sizes for 8 tokens at hidden width 2048.
Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import zmq  # noqa: E402

from nodes.wire import Draft, HiddenUpload, Verdict, decode, encode, encoded_size  # noqa: E402


def null_edge(endpoint_out: str) -> None:
    """ROUTER that decodes every message and answers a verdict; prints its endpoint."""
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.bind("tcp://127.0.0.1:*")
    print(sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    while True:
        frames = sock.recv_multipart()
        if frames[1] == b"stop":
            break
        m = decode(frames[1:])
        sock.send_multipart([frames[0], *encode(Verdict(m.request_id, m.round, accepted=3, next_token=7, accepted_exact=3,
                                                        first_mismatch=3, harmless=0, verify_ms=0.0))])


def overhead(rounds: int) -> dict:
    p = subprocess.Popen([sys.executable, __file__, "--null-edge"], stdout=subprocess.PIPE, text=True)
    endpoint = p.stdout.readline().strip()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.connect(endpoint)
    hidden = np.random.default_rng(0).standard_normal((8, 2048)).astype(np.float32)
    tokens = list(range(100, 108))
    times = []
    for r in range(rounds + 200):
        t0 = time.perf_counter()
        frames = encode(Draft("bench", r, tokens, {"snr_db": 10.0, "rate_up_mbps": 20.0}, hidden=hidden))
        sock.send_multipart(frames)
        v = decode(sock.recv_multipart())
        dt = (time.perf_counter() - t0) * 1000.0
        assert v.round == r
        if r >= 200:  # warm-up excluded
            times.append(dt)
    sock.send_multipart([b"stop"])
    p.wait(timeout=10)
    t = np.array(times)
    return {"overhead_ms_median": float(np.median(t)), "overhead_ms_p99": float(np.percentile(t, 99)),
            "draft_bytes_8x2048_f16": encoded_size(frames)}


def uplink_bytes(problems: int) -> dict:
    from nodes.config import RunConfig
    from nodes.device import DeviceClient
    from nodes.evaluate import encode_prompt
    from nodes.models import load_pair
    from nodes.tasks import ArithTask

    pair = load_pair()
    edge = subprocess.Popen([sys.executable, "-m", "wisv.cli", "node", "edge", "--bind", "tcp://127.0.0.1:*"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=str(REPO))
    endpoint = edge.stdout.readline().split()[1]
    out = {}
    try:
        for protocol in ("ar-edge", "vanilla", "wisv-full", "wisv-selective", "wisv-target"):
            c = DeviceClient.connect(pair.drafter, endpoint, RunConfig(protocol=protocol, gamma=8), pair.eos_token_id)
            c.hello()
            rounds = []
            for p in ArithTask().problems("test", problems):
                rounds += c.run(encode_prompt(pair, p), 128).rounds
            c.close()
            out[protocol] = {"up_bytes_per_round": float(np.mean([r.up_bytes for r in rounds])),
                             "down_bytes_per_round": float(np.mean([r.down_bytes for r in rounds])),
                             "round_trips_per_round": float(np.mean([r.round_trips for r in rounds])),
                             "rounds": len(rounds)}
    finally:
        edge.terminate()
        edge.wait(timeout=10)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--null-edge", action="store_true")
    ap.add_argument("--rounds", type=int, default=3000)
    ap.add_argument("--problems", type=int, default=20)
    a = ap.parse_args()
    if a.null_edge:
        null_edge("")
        return
    o = overhead(a.rounds)
    print(f"protocol overhead per round (8 tokens + 8x2048 fp16 hidden, {o['draft_bytes_8x2048_f16']} B up): "
          f"median {o['overhead_ms_median']:.3f} ms, p99 {o['overhead_ms_p99']:.3f} ms")
    sizes = {"vanilla": encoded_size(encode(Draft("r" * 12, 10, list(range(8)), {"snr_db": 1.0}))),
             "wisv-full": encoded_size(encode(Draft("r" * 12, 10, list(range(8)), {"snr_db": 1.0},
                                                    hidden=np.zeros((8, 2048), np.float32))))}
    sizes["wisv-selective_per_mismatch"] = encoded_size(encode(HiddenUpload("r" * 12, 10, [3],
                                                                            hidden=np.zeros((1, 2048), np.float32))))
    up = uplink_bytes(a.problems)
    for k, v in up.items():
        print(f"{k:>15}: up {v['up_bytes_per_round']:8.1f} B/round, down {v['down_bytes_per_round']:6.1f} B/round, "
              f"{v['round_trips_per_round']:.2f} round trips/round (default pair, γ=8)")
    print(json.dumps({"overhead_ms_median": round(o["overhead_ms_median"], 4), "overhead_ms_p99": round(o["overhead_ms_p99"], 4),
                      "uplink_bytes_per_round": {k: round(v["up_bytes_per_round"], 1) for k, v in up.items()},
                      "round_trips_per_round": {k: round(v["round_trips_per_round"], 3) for k, v in up.items()},
                      "uplink_bytes_8_tokens_h2048": sizes}))


if __name__ == "__main__":
    main()
