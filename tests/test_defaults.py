"""Every default is written once, in the dataclasses (nodes/config.py and the settings classes
of the replay, the link queue and the capture): the spec schema and the command lines agree
with them."""
from __future__ import annotations

import argparse

import pytest

from nodes.config import ComputeConfig, ModelConfig, RunConfig, TaskConfig, field_default
from topologies.capture import CaptureSettings
from topologies.replayer import ReplayOptions
from topologies.shapers import QueueLimit

# spec key → (dataclass, field) it sets
SCHEMA_KEYS = {
    "gamma": (RunConfig, "gamma"), "temperature": (RunConfig, "temperature"),
    "hidden_dtype": (RunConfig, "hidden_dtype"), "seed": (RunConfig, "seed"), "lambda_ms": (RunConfig, "lambda_ms"),
    "head_dir": (RunConfig, "head_dir"), "hidden_wire_width": (RunConfig, "hidden_wire_width"),
    **{f"task.{k}": (TaskConfig, k) for k in ("split", "problems", "start_index", "max_new_tokens", "kind", "file",
                                              "chat_template")},
    **{f"models.{k}": (ModelConfig, k) for k in ("drafter", "target", "drafter_device", "target_device",
                                                 "drafter_dtype", "target_dtype")},
    "replay.start_ms": (ReplayOptions, "start_ms"), "replay.end_ms": (ReplayOptions, "end_ms"),
    "replay.time_scale": (ReplayOptions, "scale"), "link.queue_packets": (QueueLimit, "packets"),
    **{f"capture.{k}": (CaptureSettings, k) for k in ("enabled", "snaplen_bytes", "max_mb_per_file")},
}

_DEVICE = {"gamma": (RunConfig, "gamma"), "temperature": (RunConfig, "temperature"),
           "hidden_dtype": (RunConfig, "hidden_dtype"), "seed": (RunConfig, "seed"),
           "timeout_ms": (RunConfig, "timeout_ms"), "retries": (RunConfig, "retries"),
           "protocol": (RunConfig, "protocol"), "run_id": (RunConfig, "run_id"),
           "problems": (TaskConfig, "problems"), "split": (TaskConfig, "split"),
           "start_index": (TaskConfig, "start_index"), "max_new_tokens": (TaskConfig, "max_new_tokens"),
           "task": (TaskConfig, "kind"), "task_file": (TaskConfig, "file"), "chat_template": (TaskConfig, "chat_template"),
           "dtype": (ModelConfig, "drafter_dtype"), "device": (ModelConfig, "drafter_device")}
# command → {option dest: (dataclass, field)}
COMMAND_OPTIONS = {
    ("node", "device"): _DEVICE,
    ("node", "edge"): {"dtype": (ModelConfig, "target_dtype"), "device": (ModelConfig, "target_device"),
                       "lambda_ms": (RunConfig, "lambda_ms"), "head_dir": (RunConfig, "head_dir")},
    ("simulate",): {"gamma": (RunConfig, "gamma"), "seed": (RunConfig, "seed"), "problems": (TaskConfig, "problems"),
                    "max_new_tokens": (TaskConfig, "max_new_tokens"), "lambda_ms": (RunConfig, "lambda_ms"),
                    "head_dir": (RunConfig, "head_dir"), "task": (TaskConfig, "kind"), "task_file": (TaskConfig, "file"),
                    "chat_template": (TaskConfig, "chat_template")},
    ("head", "eval"): {"gamma": (RunConfig, "gamma"), "seed": (RunConfig, "seed"),
                       "max_new_tokens": (TaskConfig, "max_new_tokens")},
    ("head", "mine"): {"gamma": (RunConfig, "gamma"), "max_new_tokens": (TaskConfig, "max_new_tokens"),
                       "dtype": (ModelConfig, "target_dtype"), "device": (ModelConfig, "target_device")},
    ("models", "eval"): {"gamma": (RunConfig, "gamma"), "max_new_tokens": (TaskConfig, "max_new_tokens"),
                         "dtype": (ModelConfig, "target_dtype")},
}


def _schema_default(dotted: str):
    from runs.schema import Spec, _model_of

    model = Spec
    *sections, key = dotted.split(".")
    for s in sections:
        model = _model_of(model.model_fields[s].annotation)
    f = model.model_fields[key]
    return f.default_factory() if f.default_factory is not None else f.default


def _parser(command: tuple[str, ...]) -> argparse.ArgumentParser:
    from wisv.cli import build_parser

    p = build_parser()
    for name in command:
        p = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return p


def test_field_default_reads_defaults_and_factories():
    assert field_default(RunConfig, "gamma") == RunConfig().gamma
    assert field_default(RunConfig, "task") == TaskConfig() and field_default(ComputeConfig, "edge").name == "measured"
    with pytest.raises(KeyError):
        field_default(RunConfig, "no_such_field")


@pytest.mark.parametrize("key", sorted(SCHEMA_KEYS))
def test_the_schema_default_is_the_dataclass_default(key):
    cls, name = SCHEMA_KEYS[key]
    assert _schema_default(key) == field_default(cls, name), key


def test_a_default_spec_resolves_to_the_default_run_config():
    """What a spec leaves out arrives as the RunConfig default (compute aside: the spec's own
    default is the paper's hardware profiles)."""
    from runs.spec import load_spec

    cfg = load_spec(None)[0].run_config(0, "x")
    ref = RunConfig(run_id="x", protocol=cfg.protocol)
    assert cfg.models == ref.models and cfg.task == ref.task
    assert [getattr(cfg, k) for k in ("gamma", "temperature", "hidden_dtype", "seed", "lambda_ms", "head_dir",
                                      "hidden_wire_width", "timeout_ms", "retries")] == \
        [getattr(ref, k) for k in ("gamma", "temperature", "hidden_dtype", "seed", "lambda_ms", "head_dir",
                                   "hidden_wire_width", "timeout_ms", "retries")]


@pytest.mark.parametrize("command", sorted(COMMAND_OPTIONS), ids=" ".join)
def test_command_line_defaults_are_the_dataclass_defaults(command):
    parser = _parser(command)
    defaults = {a.dest: a.default for a in parser._actions}
    wrong = {dest: (defaults.get(dest, "<missing>"), field_default(cls, name))
             for dest, (cls, name) in COMMAND_OPTIONS[command].items() if defaults.get(dest, "<missing>") !=
             field_default(cls, name)}
    assert wrong == {}, f"wisv {' '.join(command)}: option default != dataclass default: {wrong}"


def test_a_node_command_line_without_options_is_the_default_config():
    from nodes.cli import config_from_args

    cfg = config_from_args(_parser(("node", "device")).parse_args(["--connect", "tcp://x:1"]))
    assert cfg == RunConfig()
