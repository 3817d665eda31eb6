"""``wisv models …``: train and evaluate the drafter/target pair."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nodes.config import RunConfig


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

    kind, file = ("gsm8k", a.gsm8k) if a.gsm8k else (a.task, a.task_file)
    res = evaluate_pair(a.drafter, a.target, n_problems=a.problems, gamma=a.gamma, dtype=a.dtype,
                        max_new_tokens=a.max_new_tokens, task=task_config_from_args(a, kind=kind, file=file))
    sys.stdout.write(json.dumps(res) + "\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` command group."""
    from nodes.config import ModelConfig, RunConfig, TaskConfig, field_default

    p = sub.add_parser("models", help="train and evaluate the drafter/target pair")
    ms = p.add_subparsers(dest="models_cmd", required=True)
    t = ms.add_parser("train", help="train the built-in pair on the built-in task (seeded)")
    t.add_argument("-o", "--output", default=str(Path(__file__).resolve().parent / "pretrained" / "default"),
                   help="where the trained models go (default: the shipped pair's folder)")
    t.add_argument("--only", action="append", choices=["target", "drafter"], help="train only this model (repeatable)")
    t.add_argument("--quick", action="store_true", help="30 steps each (smoke test)")
    t.set_defaults(func=cmd_train)
    e = ms.add_parser("eval", help="accuracy and acceptance of a pair on the task")
    e.add_argument("--drafter", help="drafter model folder (default: the shipped pair)")
    e.add_argument("--target", help="target model folder (default: the shipped pair)")
    e.add_argument("--problems", type=int, default=100, help="test problems")
    e.add_argument("--gamma", type=int, default=field_default(RunConfig, "gamma"), help="draft tokens per round")
    e.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=field_default(ModelConfig, "target_dtype"),
                   help="model weights dtype")
    e.add_argument("--gsm8k", help="GSM8K-style JSONL to score (short for --task gsm8k --task-file F)")
    add_task_args(e)
    e.add_argument("--max-new-tokens", type=int, default=field_default(TaskConfig, "max_new_tokens"),
                   help="longest answer, tokens")
    e.set_defaults(func=cmd_eval)


def add_task_args(p: argparse.ArgumentParser) -> None:
    """The task options every decoding command takes."""
    from nodes.config import TaskConfig, field_default
    from nodes.tasks import TASK_KINDS

    p.add_argument("--task", choices=TASK_KINDS, default=field_default(TaskConfig, "kind"),
                   help="arith (built-in), gsm8k (GSM8K-format JSONL) or humaneval (code, tests run)")
    p.add_argument("--task-file", help="the JSONL file of a gsm8k or humaneval task")
    p.add_argument("--chat-template", action="store_true", help="wrap prompts in the tokenizer's chat template")
    from nodes.tasks.filters import FILTERS
    from nodes.tasks.gsm8k import PROMPT_STYLES

    p.add_argument("--answer-filter", choices=list(FILTERS),
                   help="the filter that decides correctness (default: strict-match for gsm8k, flexible-extract with "
                        "--chat-template; completion for humaneval, code-block with --chat-template); all are reported")
    p.add_argument("--prompt-style", default=field_default(TaskConfig, "prompt_style"), choices=list(PROMPT_STYLES),
                   help="gsm8k prompts: plain 'Question: …\nAnswer:', qa 'Q: …\nA:', cot (zero-shot, step by step)")
    p.add_argument("--shots", type=int, default=field_default(TaskConfig, "shots"),
                   help="gsm8k: worked examples before the question (n-shot)")
    p.add_argument("--fewshot-file", help="gsm8k: GSM8K-format JSONL of worked examples (e.g. the train split)")
    p.add_argument("--stop", action="append", metavar="TEXT",
                   help="a stop sequence replacing the task's own (repeatable; '' for none)")


def task_config_from_args(a: argparse.Namespace, **fields) -> "TaskConfig":
    """The task config of the task options (``fields`` set the others: split, problems, …)."""
    from nodes.config import TaskConfig

    kw = {"kind": a.task, "file": a.task_file, **fields}
    stop = None if a.stop is None else tuple(s for s in a.stop if s)
    return TaskConfig(**kw, chat_template=a.chat_template, answer_filter=a.answer_filter, prompt_style=a.prompt_style,
                      shots=a.shots, fewshot_file=a.fewshot_file, stop=stop)


def _threads(a: argparse.Namespace) -> None:
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)


def add_run_config_args(p: argparse.ArgumentParser, device: bool) -> None:
    """The options that build a :class:`nodes.config.RunConfig` (or ``--config FILE``, which
    an orchestrator writes and which then replaces them)."""
    from nodes.config import ComputeConfig, ModelConfig, RunConfig, TaskConfig, field_default
    from nodes.profiles import PRESETS
    from nodes.protocols import PROTOCOLS
    from nodes.wire import WIRE_DTYPES

    run, task = (lambda name: field_default(RunConfig, name)), (lambda name: field_default(TaskConfig, name))
    p.add_argument("--config", help="run config JSON (as orchestrators write it); replaces the options below")
    p.add_argument("--drafter", help="drafter model folder (default: the shipped pair)")
    p.add_argument("--target", help="target model folder (default: the shipped pair)")
    role = "drafter" if device else "target"  # the model this node holds
    measured = field_default(ComputeConfig, "device" if device else "edge")  # the default profile (no padding)
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=field_default(ModelConfig, f"{role}_dtype"),
                   help="this node's model weights dtype (exact greedy verification needs fp32)")
    p.add_argument("--device", default=field_default(ModelConfig, f"{role}_device"),
                   help="this node's torch device: cpu, cuda, cuda:N")
    if device:
        p.add_argument("--protocol", default=run("protocol"), choices=PROTOCOLS.names(), help="verification protocol")
        p.add_argument("--gamma", type=int, default=run("gamma"), help="draft tokens per round")
        p.add_argument("--temperature", type=float, default=run("temperature"), help="0 = greedy; > 0 samples (vanilla)")
        p.add_argument("--hidden-dtype", choices=list(WIRE_DTYPES), default=run("hidden_dtype"),
                       help="hidden states on the wire")
        p.add_argument("--seed", type=int, default=run("seed"), help="sampling seed")
        p.add_argument("--timeout-ms", type=int, default=run("timeout_ms"), help="per-attempt reply timeout, ms")
        p.add_argument("--retries", type=int, default=run("retries"), help="attempts after the first")
        p.add_argument("--problems", type=int, default=task("problems"), help="problems to run")
        p.add_argument("--split", default=task("split"), choices=["train", "validation", "test"], help="task split")
        add_task_args(p)
        p.add_argument("--start-index", type=int, default=task("start_index"), help="first problem index in the split")
        p.add_argument("--max-new-tokens", type=int, default=task("max_new_tokens"), help="longest answer, tokens")
        p.add_argument("--run-id", default=run("run_id"), help="run id written in every round log line")
        p.add_argument("--compute", default=measured.name, choices=[measured.name, *PRESETS],
                       help="compute profile of the device (padding to a preset's time per draft token)")
        p.add_argument("--profile-ms-per-token", type=float, default=measured.per_token_ms,
                       help="a custom profile instead: drafting time per token, ms")
    else:
        p.add_argument("--head-dir", help="folder with head-full/head-target.safetensors (default: the shipped heads)")
        p.add_argument("--lambda-ms", type=float, help="the heads' price of an accuracy-changing acceptance, ms")
        p.add_argument("--compute", default=measured.name, choices=[measured.name, *PRESETS],
                       help="compute profile of the edge (padding to a preset's verification time)")
        p.add_argument("--profile-base-ms", type=float, default=measured.base_ms,
                       help="a custom profile: verify time a + b·γ: a, ms")
        p.add_argument("--profile-per-token-ms", type=float, default=measured.per_token_ms,
                       help="emulated verify time a + b·γ: b, ms")


def _profile(name: str, **custom: float):
    """A preset (or measured), or the custom times when any is given."""
    from nodes.profiles import ComputeProfile, profile_from_spec

    return ComputeProfile(**custom, name="custom") if any(custom.values()) else profile_from_spec(name)


def config_from_args(a: argparse.Namespace) -> "RunConfig":
    """The run config of a node's command line (``--config`` wins over the options)."""
    from nodes.config import ComputeConfig, ModelConfig, RunConfig

    if a.config:
        cfg = RunConfig.read(a.config)
    else:
        role = "drafter" if hasattr(a, "protocol") else "target"
        models = ModelConfig(a.drafter, a.target, **{f"{role}_device": a.device, f"{role}_dtype": a.dtype})
        if hasattr(a, "protocol"):
            cfg = RunConfig(run_id=a.run_id, protocol=a.protocol, gamma=a.gamma, temperature=a.temperature,
                            hidden_dtype=a.hidden_dtype, seed=a.seed, timeout_ms=a.timeout_ms, retries=a.retries,
                            models=models,
                            task=task_config_from_args(a, split=a.split, problems=a.problems,
                                                       start_index=a.start_index, max_new_tokens=a.max_new_tokens),
                            compute=ComputeConfig(device=_profile(a.compute, per_token_ms=a.profile_ms_per_token)))
        else:
            cfg = RunConfig(lambda_ms=a.lambda_ms, head_dir=a.head_dir, models=models,
                            compute=ComputeConfig(edge=_profile(a.compute, base_ms=a.profile_base_ms,
                                                                per_token_ms=a.profile_per_token_ms)))
    if getattr(a, "device_index", None) is not None:
        cfg = cfg.for_device(a.device_index)
    return cfg


def _edge_curve(a: argparse.Namespace) -> tuple[bytes | None, str | None]:
    """The edge's CURVE secret key and client allow-list (a folder, or ``zmq.auth.CURVE_ALLOW_ANY``
    with ``--curve-allow-any``) from its command line; SystemExit for an incomplete choice."""
    if not a.curve_secret:
        if a.curve_allow or a.curve_allow_any:
            raise SystemExit("--curve-allow/--curve-allow-any need --curve-secret")
        return None, None
    if bool(a.curve_allow) == a.curve_allow_any:
        raise SystemExit("--curve-secret needs exactly one of --curve-allow DIR (device public keys) or --curve-allow-any")
    import zmq.auth

    return Path(a.curve_secret).read_bytes().strip(), zmq.auth.CURVE_ALLOW_ANY if a.curve_allow_any else a.curve_allow


def cmd_edge(a: argparse.Namespace) -> int:
    from procs.lifecycle import die_with_orchestrator
    die_with_orchestrator()  # a node an orchestrator started dies with it (procs/lifecycle.py)
    import logging
    import signal

    _threads(a)
    from nodes.edge import EdgeLimits, EdgeServer
    from nodes.models import load_models
    from nodes.decoding.stopping import stop_criteria_for
    from nodes.oracle import AnswerOracle

    cfg = config_from_args(a)
    secret, allow = _edge_curve(a)
    pair = load_models(cfg.models, ("target",))  # the edge holds the target only
    server = EdgeServer(pair.target, pair.eos_token_id, a.bind, EdgeLimits(max_gamma=a.max_gamma,
                        max_sessions=a.max_sessions, max_message_bytes=a.max_message_bytes,
                        max_prompt_tokens=a.max_prompt_tokens), a.token, cfg.head_dir,
                        curve_secret_key=secret, profile=cfg.compute.edge, lambda_ms=cfg.lambda_ms, curve_allow=allow,
                        oracle=AnswerOracle(pair.target, pair.tokenizer, pair.eos_token_id, cfg.task),
                        stop_rules=stop_criteria_for(cfg.task.make(), pair.tokenizer, pair.target,
                                                     cfg.task.chat_template) if a.config else None)
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
    from procs.lifecycle import die_with_orchestrator
    die_with_orchestrator()  # a node an orchestrator started dies with it (procs/lifecycle.py)
    import time

    _threads(a)
    from nodes.device import DeviceClient, run_problems
    from nodes.models import load_models
    from nodes.telemetry import RoundLogger

    cfg = config_from_args(a)
    pair = load_models(cfg.models, ("drafter",))  # the device holds the drafter only
    logger = RoundLogger(a.log) if a.log else None
    curve = None
    if a.curve_client_secret and not a.curve_server_public:
        raise SystemExit("--curve-client-secret needs --curve-server-public")
    if a.curve_server_public:  # the device's own key pair (an edge with an allow-list needs it), else an ephemeral one
        from nodes.device import load_curve_keys

        curve = load_curve_keys(a.curve_server_public, a.curve_client_secret)
    csi = None
    trace_start = [a.trace_start if a.trace_start is not None else time.monotonic()]  # --wait-go resets it
    if a.link_state:  # the CSI report: the step the replayer applied to this device's link (nodes/csi_report.py)
        from nodes.csi_report import applied_csi

        csi = applied_csi(a.link_state)
    elif a.trace:  # no replayer: the trace's row in force since the trace start (one monotonic clock)
        from nodes.csi_report import schedule_csi
        from traces.format import read_trace

        csi = schedule_csi(read_trace(a.trace), lambda: trace_start[0])
    counter = None
    if a.count_iface:
        from procs.netdev import read_counters

        def counter() -> tuple[int, int]:
            c = read_counters("self", a.count_iface)
            return c.tx_bytes, c.rx_bytes
    client = DeviceClient.connect(pair.drafter, a.connect, cfg, pair.eos_token_id, curve_keys=curve,
                                  round_logger=logger, csi=csi, token=a.token, wire_counter=counter)
    client.hello()
    if a.wait_go:  # an orchestrator starts the trace now and tells us the monotonic second it started
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        go = sys.stdin.readline().split()
        if go:
            trace_start[0] = float(go[0])
    requests, _ = run_problems(client, pair, cfg.task)
    client.close()
    failed = sum(not r["ok"] for r in requests)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"protocol": cfg.protocol, "config": cfg.to_dict(),
                                                "requests": requests}, indent=1) + "\n")
    sys.stdout.write(json.dumps({"protocol": cfg.protocol, "requests": len(requests), "failed": failed}) + "\n")
    return 1 if failed else 0


def cmd_keys(a: argparse.Namespace) -> int:
    import zmq

    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    if a.client:  # device key pairs: NAME.key (public, for the edge's --curve-allow folder), NAME.key_secret
        import zmq.auth

        for name in a.client:
            zmq.auth.create_certificates(str(out), name)
            (out / f"{name}.key_secret").chmod(0o600)
        sys.stdout.write(f"wrote {', '.join(f'{n}.key and {n}.key_secret' for n in a.client)} in {out} "
                         f"(copy each .key into the edge's --curve-allow folder; the device reads its .key_secret)\n")
        return 0
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
    for name, func, what in (("edge", cmd_edge, "serve verification with the target model"),
                             ("device", cmd_device, "run problems with the drafter against an edge")):
        q = ns.add_parser(name, help=what)
        add_run_config_args(q, device=name == "device")
        q.add_argument("--token", default="", help="shared secret the edge requires in hello")
        q.add_argument("--threads", type=int, help="torch CPU threads (emulation: 1 per node, so nodes do not contend)")
        q.set_defaults(func=func)
        if name == "edge":
            q.add_argument("--bind", default="tcp://0.0.0.0:5555", help="ZeroMQ endpoint to bind")
            q.add_argument("--max-gamma", type=int, default=32, help="longest draft accepted")
            q.add_argument("--max-sessions", type=int, default=64, help="devices served at once")
            q.add_argument("--max-message-bytes", type=int, default=8 << 20, help="larger messages are refused")
            q.add_argument("--max-prompt-tokens", type=int, default=4096,
                           help="longest prompt accepted, tokens (the target's positions bound it too)")
            q.add_argument("--curve-secret", help="edge CURVE secret key file (Z85): encrypt and authenticate the edge")
            q.add_argument("--curve-allow", metavar="DIR",
                           help="with --curve-secret: folder of allowed device public keys (*.key, wisv node keys --client)")
            q.add_argument("--curve-allow-any", action="store_true",
                           help="with --curve-secret: admit any device key (encryption only; the token authenticates)")
        else:
            q.add_argument("--connect", required=True, help="the edge's ZeroMQ endpoint")
            q.add_argument("--device-index", type=int, help="this device's index (id devK, its own slice of problems)")
            q.add_argument("--log", help="per-round JSONL log")
            q.add_argument("--curve-server-public", help="the edge's CURVE public key file (Z85)")
            q.add_argument("--curve-client-secret",
                           help="this device's CURVE key pair (NAME.key_secret from wisv node keys --client NAME, "
                                "or a Z85 secret key file); default: an ephemeral pair")
            q.add_argument("--link-state", help="link-state file the replayer publishes the applied step into; "
                                                "its step is reported as CSI (traces/link_state.py)")
            q.add_argument("--trace", help="without --link-state: trace whose step in force is reported as CSI")
            q.add_argument("--trace-start", type=float, help="monotonic second at which the trace started")
            q.add_argument("--json-out", help="write the per-request records and the config here")
            q.add_argument("--count-iface", help="interface whose counters give each round's on-wire bytes")
            q.add_argument("--wait-go", action="store_true",
                           help="after hello print 'ready' and wait for a line '<trace start monotonic s>' on stdin")
    k = ns.add_parser("keys", help="make a CURVE key pair for an edge (or, with --client, for devices)")
    k.add_argument("-o", "--output", default="keys", help="folder for edge.public and edge.secret")
    k.add_argument("--client", action="append", metavar="NAME",
                   help="instead, a device key pair NAME.key / NAME.key_secret (repeatable)")
    k.set_defaults(func=cmd_keys)


def cmd_head_mine(a: argparse.Namespace) -> int:
    _threads(a)
    from nodes.config import ModelConfig
    from nodes.mining import mine
    from nodes.models import load_models

    pair = load_models(ModelConfig(a.drafter, a.target, a.device, a.device, a.dtype, a.dtype))
    m = mine(pair, Path(a.output), a.problems, a.gamma, shard_size=a.shard_size, max_new_tokens=a.max_new_tokens,
             task=task_config_from_args(a, split="train"), batch_size=a.batch_size, progress=not a.no_progress,
             max_unscorable=a.max_unscorable)
    sys.stdout.write(json.dumps({k: m[k] for k in ("labelled", "seconds", "seconds_per_label", "unscorable_share")})
                     + "\n")
    return 0


def cmd_head_train(a: argparse.Namespace) -> int:
    from nodes.head_train import train_heads
    from nodes.protocols import DEFAULT_HEAD_DIR

    out = DEFAULT_HEAD_DIR if a.ship else Path(a.output)
    if out.resolve() == DEFAULT_HEAD_DIR.resolve() and not a.ship:
        raise ValueError("that is the shipped heads' folder: pass --ship to replace the shipped heads")
    r = train_heads(Path(a.data), out, a.lambda_ms, a.kind)
    sys.stdout.write(json.dumps({"auc": r.auc, "auc_cv": r.auc_cv, "chosen": r.chosen, "written": r.shipped}) + "\n")
    return 0


def register_head(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add the ``head`` command group (mine labels, train; ``runs.cli`` adds eval); returns its subcommands."""
    from nodes.config import ModelConfig, RunConfig, TaskConfig, field_default

    p = sub.add_parser("head", help="the WISV decision head: mine labels, train, evaluate")
    hs = p.add_subparsers(dest="head_cmd", required=True)
    m = hs.add_parser("mine", help="AutoJudge-style labels on the training split (resumable)")
    m.add_argument("-o", "--output", default="runs/out/mined", help="dataset folder (resumed when it exists)")
    m.add_argument("--problems", type=int, default=600, help="training problems to mine")
    m.add_argument("--gamma", type=int, default=field_default(RunConfig, "gamma"), help="draft tokens per round")
    m.add_argument("--drafter", help="drafter model folder (default: the shipped pair)")
    m.add_argument("--target", help="target model folder (default: the shipped pair)")
    m.add_argument("--max-new-tokens", type=int, default=field_default(TaskConfig, "max_new_tokens"),
                   help="longest continuation, tokens")
    m.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=field_default(ModelConfig, "target_dtype"),
                   help="both models' weights dtype")
    m.add_argument("--device", default=field_default(ModelConfig, "target_device"),
                   help="both models' torch device: cpu, cuda, cuda:N")
    m.add_argument("--batch-size", type=int, default=16, help="sequences per forward (problems, rollouts)")
    m.add_argument("--shard-size", type=int, default=50, help="problems per shard (the unit of resumption)")
    m.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    m.add_argument("--no-progress", action="store_true", help="no progress bar (the per-shard log lines remain)")
    m.add_argument("--max-unscorable", type=float, default=0.5,
                   help="refuse to mine when the target's own outcome is unscorable on more than this share of "
                        "problems (no answer extracted, or code that does not compile)")
    add_task_args(m)
    m.set_defaults(func=cmd_head_mine)
    t = hs.add_parser("train", help="train heads, compare channel-aware schemes, write head files")
    t.add_argument("--data", default="runs/out/mined", help="mined dataset folder (wisv head mine)")
    t.add_argument("-o", "--output", default="runs/out/heads",
                   help="where head files and head-report.json go (use with --head-dir / spec head_dir)")
    t.add_argument("--ship", action="store_true", help="replace the shipped heads (nodes/pretrained/default)")
    t.add_argument("--lambda-ms", type=float, default=1000.0, help="price of an accuracy-changing acceptance, ms")
    t.add_argument("--kind", choices=["logistic", "mlp"], help="only this model kind (default: both, keep the better)")
    t.set_defaults(func=cmd_head_train)
    return hs
