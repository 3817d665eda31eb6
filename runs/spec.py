"""Experiment specs (YAML): validated, with sweeps expanded into resolved runs.

    name: demo
    trace: {file: traces/builtin/pedestrian_3p5ghz_60s.csv}     # or {generate: {preset: pedestrian, ...}}
    device_traces: null                 # star: one trace file per device (else `trace` for all)
    replay: {start_ms: 0, end_ms: null, time_scale: 1.0}
    link: {backend: auto, queue_packets: 1000}
    protocols: null                     # null: the registry's default comparison (nodes.protocols)
    gamma: 4
    lambda_ms: null
    temperature: 0.0                    # > 0: vanilla samples (rejection sampling)
    hidden_dtype: f16                   # f16, bf16, f32, i8 on the wire
    profile: {device_ms_per_token: 0, edge_base_ms: 0, edge_per_token_ms: 0}  # padding, logged
    models: {drafter: null, target: null}
    head_dir: null                      # folder of head-full/head-target.safetensors (null: shipped)
    task: {split: test, problems: 20, max_new_tokens: 128}
    repetitions: 1
    seed: 0
    sweep: {gamma: [2, 4, 8]}        # a grid over any key; dotted keys reach nested ones (task.problems)

Every error names the file and the key: unknown keys, values of the wrong type (units are in key
names: ``_ms``, ``_bps``), missing trace files, unknown protocols.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nodes.config import ComputeConfig, ModelConfig, RunConfig, TaskConfig
from nodes.protocols import PROTOCOLS
from nodes.wire import WIRE_DTYPES
from topologies.shapers import BACKEND_CHOICES
from topologies.topo import TOPOLOGIES, Topology, topology_from_spec
from traces.defaults import DEFAULT_TRACE

REPO = Path(__file__).resolve().parent.parent
DEFAULTS: dict[str, Any] = {
    "name": "experiment",
    "topology": {"kind": "device-edge", "n_devices": 1, "cross_traffic_bps": None, "backhaul_rate_bps": None},
    "trace": {"file": str(DEFAULT_TRACE.relative_to(REPO))},
    "device_traces": None,
    "replay": {"start_ms": 0.0, "end_ms": None, "time_scale": 1.0},
    "link": {"backend": "auto", "queue_packets": 1000},
    "protocols": None,
    "gamma": 4,
    "lambda_ms": None,
    "temperature": 0.0,
    "hidden_dtype": "f16",
    "profile": {"device_ms_per_token": 0.0, "edge_base_ms": 0.0, "edge_per_token_ms": 0.0},
    "models": {"drafter": None, "target": None},
    "head_dir": None,
    "task": {"split": "test", "problems": 20, "max_new_tokens": 128},
    "repetitions": 1,
    "seed": 0,
    "sweep": {},
}
_TYPES: dict[str, Any] = {
    "name": str, "topology.kind": str, "topology.n_devices": int, "topology.cross_traffic_bps": (float, type(None)),
    "topology.backhaul_rate_bps": (float, type(None)), "temperature": float, "hidden_dtype": str,
    "profile.device_ms_per_token": float, "profile.edge_base_ms": float, "profile.edge_per_token_ms": float,
    "head_dir": (str, type(None)), "task.max_new_tokens": int, "trace.file": str, "trace.generate": dict, "replay.start_ms": float,
    "replay.end_ms": (float, type(None)), "replay.time_scale": float, "link.backend": str, "link.queue_packets": int,
    "protocols": (list, type(None)), "gamma": int, "lambda_ms": (float, type(None)), "models.drafter": (str, type(None)),
    "models.target": (str, type(None)), "task.split": str, "task.problems": int, "repetitions": int, "seed": int,
    "sweep": dict, "device_traces": (list, type(None)),
}


class SpecError(ValueError):
    """An invalid spec: the message names the file and the key."""


@dataclass
class RunSpec:
    """One resolved run of an experiment (sweeps expanded)."""

    name: str
    values: dict[str, Any]
    source: str

    def get(self, dotted: str) -> Any:
        """The value of a dotted key."""
        v: Any = self.values
        for part in dotted.split("."):
            v = v[part]
        return v

    @property
    def protocols(self) -> list[str]:
        """The protocols this run compares."""
        p = self.values["protocols"]
        return PROTOCOLS.default_comparison() if p is None else list(p)

    def topology(self) -> Topology:
        """The emulated topology of this run."""
        return topology_from_spec(self.values["topology"])

    def run_config(self, rep: int, run_id: str) -> RunConfig:
        """The one run configuration of repetition ``rep`` (protocol: the first compared; each
        protocol run replaces it), handed to the simulator and the node processes alike."""
        v = self.values
        p, t = v["profile"], v["task"]
        return RunConfig(run_id=run_id, protocol=self.protocols[0], gamma=v["gamma"], temperature=float(v["temperature"]),
                         hidden_dtype=v["hidden_dtype"], seed=v["seed"] + rep, lambda_ms=v["lambda_ms"],
                         head_dir=None if v["head_dir"] is None else str(resolve_path(v["head_dir"], self.source)),
                         models=ModelConfig(v["models"]["drafter"], v["models"]["target"]),
                         task=TaskConfig(t["split"], t["problems"], 0, t["max_new_tokens"]),
                         compute=ComputeConfig(p["device_ms_per_token"], p["edge_base_ms"], p["edge_per_token_ms"]))

    def trace_path(self) -> Path:
        """The trace file of this run (generated into a cache file when the spec says so)."""
        t = self.values["trace"]
        if "generate" in t:
            from channel_models.generator import PRESETS, ChannelSpec
            from traces.format import write_trace
            from traces.ops import from_channel

            g = dict(t["generate"])
            preset = g.pop("preset", None)
            spec = ChannelSpec.from_dict({**(PRESETS[preset] if preset else {}), **g})
            digest = hashlib.sha1(json.dumps(t, sort_keys=True).encode()).hexdigest()[:12]
            path = REPO / "runs" / "out" / "traces" / f"gen-{digest}.parquet"
            if not path.exists():
                write_trace(from_channel(spec), path)
            return path
        return resolve_path(t["file"], self.source)


def resolve_path(p: str, source: str) -> Path:
    """A path of a spec: as given when absolute, else beside the spec, in the repository or here."""
    path = Path(p)
    if not path.is_absolute():
        for base in (Path(source).parent if source else None, REPO, Path.cwd()):
            if base is not None and (base / path).exists():
                return base / path
    return path


def _merge(base: dict, over: dict, where: str, source: str) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        key = f"{where}{k}"
        if k not in base and not (where == "trace." and k in ("file", "generate")):
            raise SpecError(f"{source}: unknown key {key!r}; known here: {sorted(base)}")
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k not in ("sweep",):
            if where == "" and k == "trace":
                out[k] = dict(v)  # file or generate, not both merged with the default file
            else:
                out[k] = _merge(base[k], v, key + ".", source)
        else:
            out[k] = v
    return out


def _check(values: dict, source: str) -> None:
    for key, typ in _TYPES.items():
        v: Any = values
        try:
            for part in key.split("."):
                v = v[part]
        except (KeyError, TypeError):
            continue
        types = typ if isinstance(typ, tuple) else (typ,)
        if float in types and isinstance(v, int) and not isinstance(v, bool):
            continue
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            names = "/".join(t.__name__ for t in types)
            raise SpecError(f"{source}: {key} must be {names}, got {v!r} (units are in the key names: _ms, _bps)")
    t = values["trace"]
    if ("file" in t) == ("generate" in t):
        raise SpecError(f"{source}: trace needs exactly one of file or generate")
    if "file" in t and not resolve_path(t["file"], source).exists():
        raise SpecError(f"{source}: trace.file {t['file']!r} not found (looked beside the spec, in the repository "
                        f"and in {Path.cwd()})")
    dt = values["device_traces"]
    if dt is not None:
        n = values["topology"]["n_devices"]
        if len(dt) != n:
            raise SpecError(f"{source}: device_traces lists {len(dt)} files for {n} devices")
        for f in dt:
            if not isinstance(f, str) or not resolve_path(f, source).exists():
                raise SpecError(f"{source}: device_traces entry {f!r} not found")
    protocols = PROTOCOLS.default_comparison() if values["protocols"] is None else values["protocols"]
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise SpecError(f"{source}: protocols: unknown protocol(s) {bad}; known: {', '.join(PROTOCOLS.names())}")
    if not protocols:
        raise SpecError(f"{source}: protocols: an empty list runs nothing; name at least one of "
                        f"{', '.join(PROTOCOLS.names())} (or leave the key out for the default comparison)")
    if values["gamma"] < 1 or values["task"]["problems"] < 1 or values["repetitions"] < 1 or \
            values["task"]["max_new_tokens"] < 1:
        raise SpecError(f"{source}: gamma, task.problems, task.max_new_tokens and repetitions must be >= 1")
    top = values["topology"]
    if top["kind"] not in TOPOLOGIES:
        raise SpecError(f"{source}: topology.kind must be one of {', '.join(TOPOLOGIES)}, not {top['kind']!r}")
    try:
        topology_from_spec(top)
    except ValueError as e:
        raise SpecError(f"{source}: topology: {e}") from None
    if values["hidden_dtype"] not in WIRE_DTYPES:
        raise SpecError(f"{source}: hidden_dtype must be one of {', '.join(WIRE_DTYPES)}")
    if values["link"]["backend"] not in BACKEND_CHOICES:
        raise SpecError(f"{source}: link.backend must be one of {', '.join(BACKEND_CHOICES)}")
    for p in protocols:
        try:
            PROTOCOLS[p].check_temperature(values["temperature"])
        except ValueError as e:
            raise SpecError(f"{source}: temperature {values['temperature']}: {e}") from None


def load_spec(path: str | Path | None = None, overrides: dict | None = None) -> list[RunSpec]:
    """The resolved runs of a spec file (or of the defaults), sweeps expanded in grid order."""
    source = str(path) if path else "<defaults>"
    raw: dict = {}
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise SpecError(f"{path}: spec file not found") from None
        except yaml.YAMLError as e:
            raise SpecError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise SpecError(f"{path}: a spec is a mapping of keys")
    values = _merge(DEFAULTS, {**raw, **(overrides or {})}, "", source)
    sweep = values.pop("sweep") or {}
    keys = list(sweep)
    for k in keys:
        if not isinstance(sweep[k], list) or not sweep[k]:
            raise SpecError(f"{source}: sweep.{k} must be a non-empty list")
    runs = []
    for combo in itertools.product(*(sweep[k] for k in keys)) if keys else [()]:
        v = copy.deepcopy(values)
        label = []
        for k, x in zip(keys, combo):
            node = v
            parts = k.split(".")
            for part in parts[:-1]:
                if part not in node or not isinstance(node[part], dict):
                    raise SpecError(f"{source}: sweep key {k!r} names no spec key")
                node = node[part]
            if parts[-1] not in node:
                raise SpecError(f"{source}: sweep key {k!r} names no spec key")
            node[parts[-1]] = x
            label.append(f"{parts[-1]}={x}")
        _check(v, source)
        runs.append(RunSpec("-".join([v["name"], *label]) if label else v["name"], v, source))
    return runs
