"""Experiment specs (YAML): validated, with sweeps expanded into resolved runs.

    name: demo
    trace: {file: traces/builtin/pedestrian_3p5ghz_60s.csv}     # or {generate: {preset: pedestrian, ...}}
    device_traces: null                 # star: one trace file per device (else `trace` for all)
    replay: {start_ms: 0, end_ms: null, time_scale: 1.0}
    link: {backend: auto, queue_packets: 1000}
    protocols: [vanilla, wisv-full, wisv-selective]
    gamma: 4
    lambda_ms: null
    temperature: 0.0                    # > 0: vanilla samples (rejection sampling)
    hidden_dtype: f16                   # f16, bf16, f32, i8 on the wire
    profile: {device_ms_per_token: 0}   # emulate a slower device (padding, logged)
    models: {drafter: null, target: null}
    task: {split: test, problems: 20}
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

from nodes.protocols import PROTOCOLS
from traces.defaults import DEFAULT_TRACE

REPO = Path(__file__).resolve().parent.parent
DEFAULTS: dict[str, Any] = {
    "name": "experiment",
    "topology": {"kind": "device-edge", "n_devices": 1, "cross_traffic_bps": None, "backhaul_rate_bps": None},
    "trace": {"file": str(DEFAULT_TRACE.relative_to(REPO))},
    "device_traces": None,
    "replay": {"start_ms": 0.0, "end_ms": None, "time_scale": 1.0},
    "link": {"backend": "auto", "queue_packets": 1000},
    "protocols": ["vanilla", "wisv-full", "wisv-selective"],
    "gamma": 4,
    "lambda_ms": None,
    "temperature": 0.0,
    "hidden_dtype": "f16",
    "profile": {"device_ms_per_token": 0.0},
    "models": {"drafter": None, "target": None},
    "task": {"split": "test", "problems": 20},
    "repetitions": 1,
    "seed": 0,
    "sweep": {},
}
_TYPES: dict[str, Any] = {
    "name": str, "topology.kind": str, "topology.n_devices": int, "topology.cross_traffic_bps": (float, type(None)),
    "topology.backhaul_rate_bps": (float, type(None)), "temperature": float, "hidden_dtype": str,
    "profile.device_ms_per_token": float, "trace.file": str, "trace.generate": dict, "replay.start_ms": float,
    "replay.end_ms": (float, type(None)), "replay.time_scale": float, "link.backend": str, "link.queue_packets": int,
    "protocols": list, "gamma": int, "lambda_ms": (float, type(None)), "models.drafter": (str, type(None)),
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
        return _resolve(t["file"], self.source)


def _resolve(p: str, source: str) -> Path:
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
    if "file" in t and not _resolve(t["file"], source).exists():
        raise SpecError(f"{source}: trace.file {t['file']!r} not found (looked beside the spec, in the repository "
                        f"and in {Path.cwd()})")
    dt = values["device_traces"]
    if dt is not None:
        n = values["topology"]["n_devices"]
        if len(dt) != n:
            raise SpecError(f"{source}: device_traces lists {len(dt)} files for {n} devices")
        for f in dt:
            if not isinstance(f, str) or not _resolve(f, source).exists():
                raise SpecError(f"{source}: device_traces entry {f!r} not found")
    bad = [p for p in values["protocols"] if p not in PROTOCOLS]
    if bad:
        raise SpecError(f"{source}: unknown protocol(s) {bad}; known: {sorted(PROTOCOLS)}")
    if values["gamma"] < 1 or values["task"]["problems"] < 1 or values["repetitions"] < 1:
        raise SpecError(f"{source}: gamma, task.problems and repetitions must be >= 1")
    top = values["topology"]
    if top["kind"] not in ("device-edge", "star"):
        raise SpecError(f"{source}: topology.kind must be device-edge or star, not {top['kind']!r}")
    if top["kind"] == "device-edge" and (top["n_devices"] != 1 or top["cross_traffic_bps"]):
        raise SpecError(f"{source}: device-edge has one device and no cross traffic; use kind: star")
    if values["hidden_dtype"] not in ("f16", "bf16", "f32", "i8"):
        raise SpecError(f"{source}: hidden_dtype must be f16, bf16, f32 or i8")
    if values["temperature"] > 0 and any(p.startswith("wisv") or p in ("topk", "typical") for p in values["protocols"]):
        raise SpecError(f"{source}: temperature > 0 is for vanilla (rejection sampling) and ar-edge only")


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
