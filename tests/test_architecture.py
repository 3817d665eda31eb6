"""The shapes the rest of the project builds on: one protocol registry, one run config, the
layering of the packages, and a command line whose every --help works."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nodes.config import ComputeConfig, RunConfig, TaskConfig
from nodes.decoding.policies import Decision, VerificationPolicy, VerifyContext
from nodes.profiles import PRESETS, ComputeProfile
from nodes.protocols import PROTOCOLS, Protocol

REPO = Path(__file__).resolve().parent.parent


class AcceptAll(VerificationPolicy):
    """A toy policy: every draft token stands; the target's token at the end is the bonus."""

    name = "accept-all"

    def verify(self, ctx: VerifyContext) -> Decision:
        n_exact = int(ctx.matches().long().cumprod(0).sum())
        mism = ctx.mismatch_positions()
        return Decision(ctx.gamma, int(ctx.target_greedy()[ctx.gamma]), n_exact, mism[0] if mism else None, len(mism))


@pytest.fixture
def toy_protocol():
    """A protocol defined and registered here, in the test module only."""
    p = PROTOCOLS.register(Protocol("toy-accept-all", "accepts every draft token", policy=lambda t: AcceptAll()))
    yield p
    PROTOCOLS.unregister(p.name)


def test_a_protocol_is_one_registry_entry(toy_protocol, tmp_path):
    """A new protocol registered from a test module runs end to end in simulation: spec
    validation, the simulator (device, wire, edge) and the report all read the registry."""
    from runs.experiment import run_experiment
    from runs.report import report
    from runs.spec import load_spec

    runs = load_spec(None, {"name": "toy", "protocols": ["vanilla", "toy-accept-all"], "task": {"problems": 2}})
    run_experiment(runs, tmp_path, "simulate", progress=False)
    df, _ = report([tmp_path])
    toy = df[df["protocol"] == "toy-accept-all"].iloc[0]
    van = df[df["protocol"] == "vanilla"].iloc[0]
    assert list(df["protocol"]) == ["vanilla", "toy-accept-all"]  # report order: registry order
    assert toy["mean_accepted_len"] > van["mean_accepted_len"]  # it accepts everything the drafter wrote


def test_protocol_registry_rules():
    with pytest.raises(ValueError, match="already registered"):
        PROTOCOLS.register(Protocol("vanilla", "again", policy=lambda t: AcceptAll()))
    with pytest.raises(ValueError, match="exactly one of head, policy or oracle"):
        Protocol("broken", "neither")
    with pytest.raises(ValueError, match="verifies greedily"):
        PROTOCOLS["wisv-full"].check_temperature(0.7)
    assert PROTOCOLS["vanilla"].sends_probs(0.7) and not PROTOCOLS["topk"].sends_probs(0.0)
    assert set(PROTOCOLS.default_comparison()) <= set(PROTOCOLS.names())


def test_run_config_round_trips_through_json(tmp_path):
    cfg = RunConfig(run_id="r1", protocol="wisv-adaptive", gamma=6, hidden_dtype="i8", lambda_ms=250.0,
                    task=TaskConfig("validation", 7, 3, 64),
                    compute=ComputeConfig(ComputeProfile(0.0, 2.0), PRESETS["a40/llama-3.1-8b"].profile))
    assert RunConfig.read(cfg.write(tmp_path / "c.json")) == cfg
    assert cfg.for_device(2).device_id == "dev2" and cfg.for_device(2).task.start_index == 3 + 2 * 7
    with pytest.raises(ValueError, match="unknown key"):
        RunConfig.from_dict({**cfg.to_dict(), "gama": 3})


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_nodes_import_neither_topologies_nor_runs():
    """nodes/ is the processes and the decoding they run; orchestration and plumbing live elsewhere."""
    bad = {str(p.relative_to(REPO)): sorted(_imports(p) & {"topologies", "runs"})
           for p in (REPO / "nodes").rglob("*.py")}
    assert {k: v for k, v in bad.items() if v} == {}


def test_procs_is_the_bottom_package():
    """procs/ (process lifetimes, interface counters) imports nothing of the project; nodes/ and
    topologies/ both take those utilities from there."""
    project = {"channel_models", "traces", "nodes", "topologies", "runs", "wisv", "benchmarks", "procs"}
    bad = {str(p.relative_to(REPO)): sorted(_imports(p) & project - {"procs"}) for p in (REPO / "procs").rglob("*.py")}
    assert {k: v for k, v in bad.items() if v} == {}
    assert not (REPO / "nodes" / "lifecycle.py").exists() and not (REPO / "nodes" / "netdev.py").exists()


def test_protocol_names_live_in_the_registry_only():
    """Outside tests, benchmarks and examples, one file names wisv-selective: the registry."""
    files = [p for p in REPO.rglob("*.py") if ".venv" not in p.parts and p.parts[len(REPO.parts)] not in
             ("tests", "benchmarks", "examples") and "wisv-selective" in p.read_text()]
    assert [str(p.relative_to(REPO)) for p in files] == ["nodes/protocols/__init__.py"]


def _subcommands(parser, prefix=()):
    import argparse

    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, prefix + (name,))


def test_every_command_has_working_help(capsys):
    """Every option has a help text, and `wisv <command …> --help` works for every command path
    (the README's and docs/' commands are checked against these paths in tests/test_readme.py)."""
    import argparse

    from wisv.cli import build_parser, main

    commands = list(_subcommands(build_parser()))
    undocumented = []
    for cmd in commands:
        parser = build_parser()
        for name in cmd:  # walk down to the subcommand's parser
            parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        undocumented += [(cmd, a.dest) for a in parser._actions
                         if not a.help and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
        assert "usage:" in parser.format_help()  # renders (an unescaped % once crashed wisv --help)
        with pytest.raises(SystemExit) as e:  # and through the entry point, as `wisv … --help`
            main([*cmd, "--help"])
        assert e.value.code == 0 and "usage: wisv" in capsys.readouterr().out, cmd
    assert undocumented == [] and len(commands) > 15
    for flag in ("--help", "-h", "--version"):  # and the real entry point, as a user types it
        r = subprocess.run([sys.executable, "-m", "wisv.cli", flag], capture_output=True, text=True, cwd=str(REPO),
                           timeout=60)
        assert r.returncode == 0 and r.stdout.strip(), (flag, r.stderr[-500:])


@pytest.mark.skipif(os.geteuid() != 0, reason="emulation needs root")
def test_same_spec_resolves_to_the_same_run_config_both_ways(tmp_path):
    """One spec, simulated and emulated: the config each device ran under is the same (the run
    id aside, which is unique per run), and every non-default setting arrived."""
    from runs.experiment import run_experiment
    from runs.spec import load_spec

    spec = {"name": "cfg", "protocols": ["vanilla"], "gamma": 3, "hidden_dtype": "i8", "lambda_ms": 400.0,
            "compute": {"device": {"per_token_ms": 0.5}, "edge": "a40/llama-3.1-8b"},
            "task": {"problems": 1, "max_new_tokens": 40}, "seed": 5}
    got = {}
    for mode in ("simulate", "emulate"):
        run_experiment(load_spec(None, spec), tmp_path / mode, mode, progress=False)
        got[mode] = json.loads((tmp_path / mode / "cfg" / "rep0" / "requests-vanilla.json").read_text())["config"]
    sim, emu = ({k: v for k, v in c.items() if k != "run_id"} for c in (got["simulate"], got["emulate"]))
    assert sim == emu
    assert (sim["gamma"], sim["hidden_dtype"], sim["lambda_ms"], sim["seed"]) == (3, "i8", 400.0, 5)
    assert sim["compute"]["device"]["per_token_ms"] == 0.5 and sim["compute"]["edge"]["name"] == "a40/llama-3.1-8b"
    assert sim["task"]["max_new_tokens"] == 40 and got["simulate"]["run_id"] != got["emulate"]["run_id"]
