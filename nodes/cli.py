"""``wisv models …``: train and evaluate the drafter/target pair."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_train(a: argparse.Namespace) -> int:
    from nodes.training import PairSpec, train_pair

    spec = PairSpec()
    if a.quick:  # a smoke-test size, not the shipped pair
        spec.target.steps, spec.drafter.steps = 30, 30
    which = tuple(a.only) if a.only else ("target", "drafter")
    stats = train_pair(Path(a.output), spec, which)
    sys.stdout.write(json.dumps({k: {x: v[x] for x in ("params", "steps", "seconds", "final_loss")}
                                 for k, v in stats.items()}) + "\n")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from nodes.evaluate import evaluate_pair

    res = evaluate_pair(a.drafter, a.target, n_problems=a.problems, gamma=a.gamma, dtype=a.dtype,
                        gsm8k=a.gsm8k, max_new_tokens=a.max_new_tokens)
    sys.stdout.write(json.dumps(res) + "\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` command group."""
    p = sub.add_parser("models", help="train and evaluate the drafter/target pair")
    ms = p.add_subparsers(dest="models_cmd", required=True)
    t = ms.add_parser("train", help="train the built-in pair on the built-in task (seeded)")
    t.add_argument("-o", "--output", default=str(Path(__file__).resolve().parent / "pretrained" / "default"))
    t.add_argument("--only", action="append", choices=["target", "drafter"])
    t.add_argument("--quick", action="store_true", help="30 steps each (smoke test)")
    t.set_defaults(func=cmd_train)
    e = ms.add_parser("eval", help="accuracy and acceptance of a pair on the task")
    e.add_argument("--drafter")
    e.add_argument("--target")
    e.add_argument("--problems", type=int, default=100)
    e.add_argument("--gamma", type=int, default=4)
    e.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    e.add_argument("--gsm8k", help="GSM8K-style JSONL to score instead of the built-in task")
    e.add_argument("--max-new-tokens", type=int, default=128)
    e.set_defaults(func=cmd_eval)


def _threads(a: argparse.Namespace) -> None:
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)


def cmd_edge(a: argparse.Namespace) -> int:
    import logging
    import signal

    _threads(a)
    from nodes.edge import EdgeLimits, EdgeServer
    from nodes.models import load_pair

    pair = load_pair(a.drafter, a.target, dtype=a.dtype)
    heads = {k: v for k, v in (("wisv-full", a.head), ("wisv-selective", a.head), ("wisv-target", a.head_target)) if v}
    from nodes.profiles import ComputeProfile

    secret = Path(a.curve_secret).read_bytes().strip() if a.curve_secret else None
    server = EdgeServer(pair.target, pair.eos_token_id, a.bind, EdgeLimits(max_gamma=a.max_gamma,
                        max_sessions=a.max_sessions, max_message_bytes=a.max_message_bytes), a.token, heads,
                        curve_secret_key=secret, profile=ComputeProfile(a.profile_base_ms, a.profile_per_token_ms),
                        head_lambda_ms=a.head_lambda_ms)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    logging.getLogger(__name__).info("edge serving on %s", server.endpoint)
    sys.stdout.write(f"ready {server.endpoint}\n")
    sys.stdout.flush()
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def cmd_device(a: argparse.Namespace) -> int:
    import time

    _threads(a)
    from nodes.device import DeviceClient, DeviceConfig
    from nodes.evaluate import encode_prompt
    from nodes.models import load_pair
    from nodes.profiles import ComputeProfile
    from nodes.sweep import request_record, summarise
    from nodes.tasks import ArithTask
    from nodes.telemetry import RoundLogger

    pair = load_pair(a.drafter, a.target, dtype=a.dtype)
    logger = RoundLogger(a.log) if a.log else None
    cfg = DeviceConfig(protocol=a.protocol, gamma=a.gamma, temperature=a.temperature, hidden_dtype=a.hidden_dtype,
                       timeout_ms=a.timeout_ms, retries=a.retries, token=a.token, run_id=a.run_id,
                       profile=ComputeProfile(0.0, a.profile_ms_per_token), count_iface=a.count_iface)
    curve = None
    if a.curve_server_public:
        import zmq

        public, secret = zmq.curve_keypair()  # an ephemeral client key; the token authenticates the device
        curve = (Path(a.curve_server_public).read_bytes().strip(), public, secret)
    csi = None
    if a.trace:  # the CSI report: the trace step in force since the replay start (one monotonic clock)
        from nodes.simulate import AnalyticLink
        from traces.format import read_trace

        link = AnalyticLink(read_trace(a.trace))
        trace_start = [a.trace_start if a.trace_start is not None else time.monotonic()]  # --wait-go resets it
        csi = lambda: link.csi((time.monotonic() - trace_start[0]) * 1000.0)  # noqa: E731
    client = DeviceClient(pair.drafter, a.connect, cfg, pair.eos_token_id, logger, csi=csi, curve_keys=curve)
    client.hello()
    if a.wait_go:  # an orchestrator starts the trace now and tells us the monotonic second it started
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        go = sys.stdin.readline().split()
        if a.trace and go:
            trace_start[0] = float(go[0])
    decode_fn = lambda t: pair.tokenizer.decode(t, skip_special_tokens=True)  # noqa: E731
    requests, rounds = [], []
    for p in ArithTask().problems(a.split, a.problems, a.start_index):
        res = client.run(encode_prompt(pair, p), a.max_new_tokens, request_id=p.uid)
        requests.append(request_record(res, p, decode_fn))
        rounds += [{"up_bytes": x.up_bytes, "down_bytes": x.down_bytes} for x in res.rounds]
    client.close()
    summary = summarise(a.protocol, requests, rounds)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"summary": summary.__dict__, "requests": requests}, indent=1) + "\n")
    sys.stdout.write(json.dumps(summary.__dict__) + "\n")
    return 1 if summary.failed else 0


def cmd_keys(a: argparse.Namespace) -> int:
    import zmq

    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.curve_keypair()
    (out / "edge.public").write_bytes(public + b"\n")
    (out / "edge.secret").write_bytes(secret + b"\n")
    (out / "edge.secret").chmod(0o600)
    sys.stdout.write(f"wrote {out}/edge.public and {out}/edge.secret (Z85 CURVE keys)\n")
    return 0


def register_node(sub: argparse._SubParsersAction) -> None:
    """Add the ``node`` command group (standalone edge and device processes)."""
    p = sub.add_parser("node", help="run an edge or a device node (ZeroMQ)")
    ns = p.add_subparsers(dest="node_cmd", required=True)
    for name, func in (("edge", cmd_edge), ("device", cmd_device)):
        q = ns.add_parser(name)
        q.add_argument("--drafter")
        q.add_argument("--target")
        q.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
        q.add_argument("--token", default="", help="shared secret the edge requires in hello")
        q.add_argument("--threads", type=int, help="torch CPU threads (emulation: 1 per node, so nodes do not contend)")
        q.set_defaults(func=func)
        if name == "edge":
            q.add_argument("--bind", default="tcp://0.0.0.0:5555")
            q.add_argument("--head", help="decision head for wisv-full/-selective")
            q.add_argument("--head-target", help="decision head for wisv-target")
            q.add_argument("--head-lambda-ms", type=float, help="price of an accuracy-changing acceptance, ms")
            q.add_argument("--max-gamma", type=int, default=32)
            q.add_argument("--max-sessions", type=int, default=64)
            q.add_argument("--max-message-bytes", type=int, default=8 << 20)
            q.add_argument("--curve-secret", help="edge CURVE secret key file (Z85): encrypt and authenticate the edge")
            q.add_argument("--profile-base-ms", type=float, default=0.0, help="emulated verify time a + b·γ: a")
            q.add_argument("--profile-per-token-ms", type=float, default=0.0, help="emulated verify time a + b·γ: b")
        else:
            q.add_argument("--connect", required=True)
            q.add_argument("--protocol", default="vanilla",
                           choices=["ar-edge", "vanilla", "wisv-full", "wisv-selective", "wisv-target", "wisv-adaptive",
                                    "topk", "typical"])
            q.add_argument("--gamma", type=int, default=4)
            q.add_argument("--temperature", type=float, default=0.0)
            q.add_argument("--hidden-dtype", choices=["f16", "bf16", "f32", "i8"], default="f16")
            q.add_argument("--timeout-ms", type=int, default=5000)
            q.add_argument("--retries", type=int, default=3)
            q.add_argument("--problems", type=int, default=10)
            q.add_argument("--max-new-tokens", type=int, default=128)
            q.add_argument("--log", help="per-round JSONL log")
            q.add_argument("--run-id", default="")
            q.add_argument("--curve-server-public", help="the edge's CURVE public key file (Z85)")
            q.add_argument("--profile-ms-per-token", type=float, default=0.0, help="emulated drafting time per token")
            q.add_argument("--split", default="test", choices=["train", "validation", "test"])
            q.add_argument("--start-index", type=int, default=0)
            q.add_argument("--trace", help="trace whose step in force is reported as CSI")
            q.add_argument("--trace-start", type=float, help="monotonic second at which the trace started")
            q.add_argument("--json-out", help="write the summary and per-request records here")
            q.add_argument("--count-iface", help="interface whose counters give each round's on-wire bytes")
            q.add_argument("--wait-go", action="store_true",
                           help="after hello print 'ready' and wait for a line '<trace start monotonic s>' on stdin")
    k = ns.add_parser("keys", help="make a CURVE key pair for an edge")
    k.add_argument("-o", "--output", default="keys")
    k.set_defaults(func=cmd_keys)


def cmd_simulate(a: argparse.Namespace) -> int:
    from nodes.models import load_pair
    from nodes.sweep import format_table, simulate
    from traces.defaults import DEFAULT_TRACE
    from traces.format import read_trace

    pair = load_pair(a.drafter, a.target)
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    res = simulate(pair, read_trace(a.trace or DEFAULT_TRACE), a.protocols.split(","), a.problems, a.gamma, out,
                   a.seed, max_new_tokens=a.max_new_tokens)
    if a.json:
        sys.stdout.write(json.dumps({k: v.__dict__ for k, v in res.items()}) + "\n")
        return 0
    sys.stdout.write(format_table(res))
    sys.stdout.write(f"per-round logs and summary.json in {out}/\n")
    return 0


def register_simulate(sub: argparse._SubParsersAction) -> None:
    """Add ``wisv simulate`` (protocols over an analytic, trace-driven link; no root)."""
    p = sub.add_parser("simulate", help="run protocols with the link modelled from a trace (no root)")
    p.add_argument("--trace", help="trace file (default: the shipped pedestrian trace)")
    p.add_argument("--protocols", default="ar-edge,vanilla,wisv-full,wisv-selective,wisv-target")
    p.add_argument("--problems", type=int, default=20)
    p.add_argument("--gamma", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--drafter")
    p.add_argument("--target")
    p.add_argument("-o", "--output", default="runs/out/simulate")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_simulate)


def cmd_head_mine(a: argparse.Namespace) -> int:
    from nodes.mining import mine
    from nodes.models import load_pair

    m = mine(load_pair(a.drafter, a.target), Path(a.output), a.problems, a.gamma)
    sys.stdout.write(json.dumps({k: m[k] for k in ("labelled", "seconds", "seconds_per_label")}) + "\n")
    return 0


def cmd_head_train(a: argparse.Namespace) -> int:
    from nodes.head_train import train_heads

    r = train_heads(Path(a.data), Path(a.output), a.lambda_ms, a.kind)
    sys.stdout.write(json.dumps({"auc": r.auc, "chosen": r.chosen, "shipped": r.shipped}) + "\n")
    return 0


def cmd_head_eval(a: argparse.Namespace) -> int:
    from nodes.models import load_pair
    from nodes.sweep import simulate
    from traces.format import read_trace
    from traces.defaults import DEFAULT_TRACE

    res = simulate(load_pair(), read_trace(a.trace or DEFAULT_TRACE), a.protocols.split(","), a.problems,
                   lambda_ms=a.lambda_ms)
    sys.stdout.write(json.dumps({k: v.__dict__ for k, v in res.items()}) + "\n")
    return 0


def register_head(sub: argparse._SubParsersAction) -> None:
    """Add the ``head`` command group (mine labels, train, evaluate)."""
    p = sub.add_parser("head", help="the WISV decision head: mine labels, train, evaluate")
    hs = p.add_subparsers(dest="head_cmd", required=True)
    m = hs.add_parser("mine", help="AutoJudge-style labels on the training split (resumable)")
    m.add_argument("-o", "--output", default="runs/out/mined")
    m.add_argument("--problems", type=int, default=600)
    m.add_argument("--gamma", type=int, default=4)
    m.add_argument("--drafter")
    m.add_argument("--target")
    m.set_defaults(func=cmd_head_mine)
    t = hs.add_parser("train", help="train heads, compare channel-aware schemes, write head files")
    t.add_argument("--data", default="runs/out/mined")
    t.add_argument("-o", "--output", default=str(Path(__file__).resolve().parent / "pretrained" / "default"))
    t.add_argument("--lambda-ms", type=float, default=1000.0)
    t.add_argument("--kind", choices=["logistic", "mlp"], help="only this model kind (default: both, keep the better)")
    t.set_defaults(func=cmd_head_train)
    e = hs.add_parser("eval", help="protocols with the shipped heads over a trace (simulated link)")
    e.add_argument("--trace")
    e.add_argument("--protocols", default="vanilla,wisv-full,wisv-selective,wisv-target,topk,typical")
    e.add_argument("--problems", type=int, default=50)
    e.add_argument("--lambda-ms", type=float)
    e.set_defaults(func=cmd_head_eval)
