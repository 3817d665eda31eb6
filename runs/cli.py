"""``wisv run`` (an experiment spec, emulated or simulated) and ``wisv report``."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import uuid
from pathlib import Path


def spec_overrides(a: argparse.Namespace) -> dict:
    """Command-line overrides of spec keys (merged key by key: ``--problems`` keeps the split)."""
    o: dict = {}
    if getattr(a, "problems", None) is not None:
        o["task"] = {"problems": a.problems}
    if getattr(a, "protocols", None):
        o["protocols"] = a.protocols.split(",")
    if getattr(a, "gamma", None) is not None:
        o["gamma"] = a.gamma
    if getattr(a, "repetitions", None) is not None:
        o["repetitions"] = a.repetitions
    if getattr(a, "trace", None):
        o["trace"] = {"file": a.trace, "generate": None}
    if getattr(a, "capture", False):
        o["capture"] = {"enabled": True}
    return o


def fresh_dir(parent: str, prefix: str) -> Path:
    """A new directory ``parent/<prefix>-<date>-<time>-<4 hex>`` (never an existing one)."""
    import time

    path = Path(parent) / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    path.mkdir(parents=True)
    return path


def cmd_run(a: argparse.Namespace) -> int:
    from runs.experiment import check_output_dir, run_experiment
    from runs.report import failed_protocols
    from runs.spec import load_spec, spec_schema_markdown

    if a.schema:
        sys.stdout.write(spec_schema_markdown())
        return 0
    jobs, ray_address = getattr(a, "jobs", None), getattr(a, "ray", None)
    if jobs is not None and jobs < 1:
        raise SystemExit("wisv run: --jobs must be >= 1")
    runs = load_spec(a.spec, spec_overrides(a))
    if a.only:
        from fnmatch import fnmatchcase

        runs = [r for r in runs if any(fnmatchcase(r.name, pat) for pat in a.only)]
        if not runs:
            raise SystemExit(f"wisv run: no run of the spec matches --only {' '.join(a.only)}")
    if a.output:
        out = Path(a.output)
        check_output_dir(out, a.resume, a.overwrite)
    else:
        out = fresh_dir("runs/out", "run")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    from runs.parallel import RunsFailed

    try:
        run_experiment(runs, out, "simulate" if a.simulate else "emulate", resume=a.resume, jobs=jobs,
                       ray_address=ray_address)
    except RunsFailed as e:  # parallel: the others finished; report them, list the failures, exit 4
        _print_report(out)
        sys.stderr.write(f"wisv: error: {e}\nwisv: their partial logs and error.txt are in their run directories; "
                         f"--resume -o {out} reruns only them\n")
        return 4
    except BaseException:  # the run's own error (Ctrl-C: exit 130) must win over a failing report
        try:
            _print_report(out)
        except Exception as e:  # noqa: BLE001
            sys.stderr.write(f"wisv: no report of the partial results: {e}\n")
        raise
    df = _print_report(out)
    failed = failed_protocols(df) if df is not None else []
    if failed:
        sys.stderr.write(f"wisv: error: failed requests in {', '.join(failed)}: their figures cover only the "
                         f"requests that completed (see the failed column and requests.parquet)\n")
        return 3
    return 0


def _print_report(out: Path):
    """Report what finished in ``out`` (report.md, report.csv, plots/), print its table, return
    it; None when no request finished."""
    from runs.report import markdown, report

    if not (out / "requests.parquet").exists():
        return None
    df, _ = report([out])
    sys.stdout.write(markdown(df))
    sys.stdout.write(f"results, report.md, report.csv and plots/ in {out}/\n")
    return df


def cmd_report(a: argparse.Namespace) -> int:
    from runs.report import as_json, markdown, report

    df, plots = report([Path(d) for d in a.run_dirs], Path(a.output) if a.output else None)
    if a.json:
        sys.stdout.write(json.dumps(as_json(df)) + "\n")
    else:
        sys.stdout.write(markdown(df))
        sys.stdout.write("plots: " + ", ".join(str(p) for p in plots) + "\n")
    return 0


def _simulated(a: argparse.Namespace, protocols: list[str], out: Path | None) -> dict:
    from nodes.cli import task_config_from_args
    from nodes.config import ModelConfig, RunConfig
    from nodes.models import load_pair
    from runs.simulate import simulate
    from traces.defaults import DEFAULT_TRACE
    from traces.format import read_trace

    cfg = RunConfig(run_id=uuid.uuid4().hex, gamma=a.gamma, seed=a.seed, lambda_ms=a.lambda_ms, head_dir=a.head_dir,
                    models=ModelConfig(a.drafter, a.target),
                    task=task_config_from_args(a, problems=a.problems, max_new_tokens=a.max_new_tokens))
    from nodes.models import pair_identity
    from nodes.protocols import check_heads

    check_heads(protocols, cfg.head_dir, pair_identity(cfg.models.drafter, cfg.models.target))  # before anything runs
    pair = load_pair(cfg.models.drafter, cfg.models.target)
    return simulate(pair, read_trace(a.trace or DEFAULT_TRACE), cfg, protocols, out)


def cmd_simulate(a: argparse.Namespace) -> int:
    from runs.summary import format_table

    out = fresh_dir(a.output, "sim")
    res = _simulated(a, a.protocols.split(","), out)
    if a.json:
        sys.stdout.write(json.dumps({k: v.__dict__ for k, v in res.items()}) + "\n")
        return 0
    sys.stdout.write(format_table(res))
    sys.stdout.write(f"per-round logs and summary.json in {out}/\n")
    return 0


def cmd_head_eval(a: argparse.Namespace) -> int:
    res = _simulated(a, a.protocols.split(","), None)
    sys.stdout.write(json.dumps({k: v.__dict__ for k, v in res.items()}) + "\n")
    return 0


def _simulation_args(p: argparse.ArgumentParser, protocols: list[str], problems: int) -> None:
    """The options of a simulated run; defaults from :class:`nodes.config.RunConfig` (``problems``:
    this command's own)."""
    from nodes.cli import add_task_args
    from nodes.config import RunConfig, TaskConfig, field_default

    p.add_argument("--trace", help="trace file (default: the shipped pedestrian trace)")
    p.add_argument("--protocols", default=",".join(protocols), help="comma-separated protocols")
    p.add_argument("--problems", type=int, default=problems, help="test problems per protocol")
    p.add_argument("--gamma", type=int, default=field_default(RunConfig, "gamma"), help="draft tokens per round")
    p.add_argument("--seed", type=int, default=field_default(RunConfig, "seed"),
                   help="seed of the link's loss draws and of sampling")
    p.add_argument("--max-new-tokens", type=int, default=field_default(TaskConfig, "max_new_tokens"),
                   help="longest answer, tokens")
    p.add_argument("--lambda-ms", type=float, help="the heads' price of an accuracy-changing acceptance, ms")
    p.add_argument("--head-dir", help="folder with head-full/head-target.safetensors (default: the shipped heads)")
    p.add_argument("--drafter", help="drafter model folder (default: the shipped pair)")
    p.add_argument("--target", help="target model folder (default: the shipped pair)")
    add_task_args(p)


def register_simulate(sub: argparse._SubParsersAction, head_commands: argparse._SubParsersAction) -> None:
    """Add ``wisv simulate`` (protocols over an analytic, trace-driven link; no root) and
    ``wisv head eval`` (the same, reporting JSON)."""
    from nodes.config import TaskConfig, field_default
    from nodes.protocols import PROTOCOLS

    p = sub.add_parser("simulate", help="run protocols with the link modelled from a trace (no root)")
    _simulation_args(p, ["ar-edge", "vanilla", *PROTOCOLS.with_head()], field_default(TaskConfig, "problems"))
    p.add_argument("-o", "--output", default="runs/out", help="parent of the new run directory (sim-<date>-<time>-<id>)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=cmd_simulate)
    e = head_commands.add_parser("eval", help="protocols with the shipped heads over a trace (simulated link)")
    _simulation_args(e, ["vanilla", *PROTOCOLS.with_head(), "topk", "typical"], 50)
    e.set_defaults(func=cmd_head_eval)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``wisv run`` and ``wisv report``."""
    p = sub.add_parser("run", help="run an experiment spec (default: the built-in one), emulated (root) or --simulate")
    p.add_argument("spec", nargs="?", help="experiment spec (YAML); none: the built-in default")
    p.add_argument("-o", "--output", help="results directory (default: a new runs/out/run-<date>-<time>-<id>)")
    p.add_argument("--resume", action="store_true", help="continue in -o: keep complete runs, rerun the rest")
    p.add_argument("--overwrite", action="store_true", help="replace the experiment already in -o")
    p.add_argument("--simulate", action="store_true", help="analytic link instead of emulation (no root)")
    par = p.add_mutually_exclusive_group()
    par.add_argument("--jobs", type=int, metavar="N", help="run N runs at a time on this machine (a private Ray "
                     "instance; emulated runs still one at a time); a failed run no longer stops the others (exit 4)")
    par.add_argument("--ray", metavar="ADDRESS", help="submit every run to the Ray cluster at ADDRESS (host:port, or "
                     "auto); emulated runs go only to nodes with the wisv_emulation resource (docs/reports-and-sweeps.md)")
    p.add_argument("--problems", type=int, help="task.problems (problems per protocol, device and repetition)")
    p.add_argument("--protocols", help="comma-separated protocols (spec key protocols)")
    p.add_argument("--gamma", type=int, help="draft tokens per round (spec key gamma)")
    p.add_argument("--repetitions", type=int, help="repetitions per run (spec key repetitions)")
    p.add_argument("--only", action="append", metavar="GLOB", help="run only the runs whose names match GLOB "
                   "(repeatable; e.g. 'paper-*pedestrian-gamma=4*': a subset of a sweep)")
    p.add_argument("--trace", help="trace file (spec key trace.file)")
    p.add_argument("--capture", action="store_true", help="pcaps of every emulated link in RUN_DIR/pcap/ (spec key "
                   "capture.enabled; read them with wisv pcap RUN_DIR)")
    p.add_argument("--schema", action="store_true", help="print every spec key (type, default, meaning) and exit")
    p.set_defaults(func=cmd_run)
    r = sub.add_parser("report", help="tables (95 %% CI, paired change vs vanilla) and plots of experiment directories")
    r.add_argument("run_dirs", nargs="+", help="experiment (or Python API run) directories")
    r.add_argument("-o", "--output", help="where report.md, report.csv and plots/ go (default: the first directory)")
    r.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    r.set_defaults(func=cmd_report)
