"""Experiment specs (YAML): validated against the one schema (:mod:`runs.schema`; ``wisv run
--schema`` lists every key), with sweeps expanded into resolved runs.

    name: demo
    trace: {file: traces/builtin/pedestrian_3p5ghz_60s.csv}     # or {generate: {preset: pedestrian, ...}}
    protocols: [vanilla, wisv-full]
    compute: {device: jetson-agx-orin/llama-3.2-1b, edge: a40/llama-3.1-8b}
    task: {split: test, problems: 20}
    repetitions: 3
    sweep:
      grid: {gamma: [4, 8]}                                      # every combination
      zip: {trace.generate.up.mean_snr_db: [0, 10], trace.generate.down.mean_snr_db: [5, 15]}

Every error names the file and the key. A swept key need not be in the spec, only in the schema;
each run records its swept values (they become columns of the result tables).
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nodes.config import ComputeConfig, ModelConfig, RunConfig, TaskConfig
from nodes.profiles import profile_from_spec
from nodes.protocols import PROTOCOLS
from runs.schema import MAX_RUNS, Spec, key_exists
from topologies.capture import CaptureSettings
from topologies.topo import Topology, topology_from_spec

REPO = Path(__file__).resolve().parent.parent


class SpecError(ValueError):
    """An invalid spec: the message names the file and the key."""


@dataclass
class RunSpec:
    """One resolved run of an experiment (sweeps expanded): its name, the validated values,
    the swept keys and their values, and the spec file it came from."""

    name: str
    values: dict[str, Any]
    source: str
    swept: dict[str, Any] = field(default_factory=dict)

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

    @property
    def repetitions(self) -> int:
        """Repetitions of this run."""
        return int(self.values["repetitions"])

    def capture(self) -> CaptureSettings:
        """The packet capture of this run's emulation (spec key ``capture``; off by default)."""
        return CaptureSettings.from_spec(self.values["capture"])

    def topology(self) -> Topology:
        """The emulated topology of this run (the network; each device's trace: :meth:`device_traces`)."""
        return topology_from_spec({k: v for k, v in self.values["topology"].items() if k != "device_traces"})

    def device_traces(self) -> "DeviceTraces":
        """How each device's trace is chosen (spec key ``topology.device_traces``), paths resolved."""
        d = self.values["topology"]["device_traces"] or {}
        files = d.get("files") or []
        return DeviceTraces(tuple(resolve_path(f, self.source) for f in files), bool(d.get("rotate")))

    def run_config(self, rep: int, run_id: str) -> RunConfig:
        """The one run configuration of repetition ``rep`` (protocol: the first compared; each
        protocol run replaces it), handed to the simulator and the node processes alike.
        Repetition ``rep`` takes its own problems (see :class:`runs.schema.Task`)."""
        v = self.values
        t, c = v["task"], v["compute"]
        return RunConfig(run_id=run_id, protocol=self.protocols[0], gamma=v["gamma"], temperature=float(v["temperature"]),
                         hidden_dtype=v["hidden_dtype"], seed=v["seed"] + rep, lambda_ms=v["lambda_ms"],
                         hidden_wire_width=v["hidden_wire_width"],
                         head_dir=None if v["head_dir"] is None else str(resolve_path(v["head_dir"], self.source)),
                         models=ModelConfig(**v["models"]),
                         task=TaskConfig(t["split"], t["problems"], t["start_index"] + rep * t["problems"],
                                         t["max_new_tokens"], t["kind"],
                                         None if t["file"] is None else str(resolve_path(t["file"], self.source)),
                                         t["chat_template"], t["answer_filter"], t["prompt_style"], t["shots"],
                                         None if t["fewshot_file"] is None
                                         else str(resolve_path(t["fewshot_file"], self.source)),
                                         None if t["stop"] is None else tuple(t["stop"])),
                         compute=ComputeConfig(profile_from_spec(c["device"]), profile_from_spec(c["edge"])))

    def trace_path(self, rep: int = 0) -> Path:
        """The trace file of this run (generated into a cache file when the spec says so, with
        seed + ``rep`` for repetition ``rep``)."""
        t = self.values["trace"]
        if t["generate"] is not None:
            from channel_models.generator import PRESETS, ChannelSpec
            from traces.format import write_trace
            from traces.ops import from_channel

            g = dict(t["generate"])
            preset = g.pop("preset", None)
            g["seed"] = int(g.get("seed", 0)) + rep
            spec = ChannelSpec.from_dict({**(PRESETS[preset] if preset else {}), **g})
            digest = hashlib.sha1(json.dumps(spec.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]
            path = REPO / "runs" / "out" / "traces" / f"gen-{digest}.parquet"
            if not path.exists():
                write_trace(from_channel(spec), path)
            return path
        return resolve_path(t["file"], self.source)

    def trace_offset_ms(self, rep: int, duration_ms: float) -> float:
        """Where repetition ``rep`` starts a trace file of ``duration_ms`` (k/R of it; 0 for
        generated traces, which draw a new realisation instead)."""
        if self.values["trace"]["generate"] is not None or self.repetitions < 2:
            return 0.0
        return duration_ms * rep / self.repetitions


@dataclass(frozen=True)
class DeviceTraces:
    """Each device's trace: ``files`` (one per device, in order), or ``rotate`` (the run's trace,
    device ``k`` of ``n`` starting :meth:`offset_ms` into it); neither: the run's trace for all."""

    files: tuple[Path, ...] = ()
    rotate: bool = False

    @property
    def per_device(self) -> bool:
        """True when devices do not all replay the run's trace from its start."""
        return bool(self.files) or self.rotate

    @staticmethod
    def offset_ms(k: int, n: int, duration_ms: float) -> float:
        """Where device ``k`` of ``n`` starts a rotated trace of ``duration_ms``: k/n of it, in ms."""
        return duration_ms * k / n


def resolve_path(p: str, source: str) -> Path:
    """A path of a spec: as given when absolute, else beside the spec, in the repository or here."""
    path = Path(p)
    if not path.is_absolute():
        for base in (Path(source).parent if source and source != "<defaults>" else None, REPO, Path.cwd()):
            if base is not None and (base / path).exists():
                return base / path
    return path


def deep_merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in, key by key at every depth (``over`` wins)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


_EXPECTED = {"int_type": "int", "int_parsing": "int", "int_from_float": "int", "float_type": "float",
             "float_parsing": "float", "string_type": "str", "bool_type": "bool", "list_type": "list",
             "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping"}


def _known_here(loc: tuple) -> list[str]:
    from pydantic import BaseModel

    from runs.schema import _model_of

    model: type[BaseModel] | None = Spec
    for part in loc[:-1]:
        model = _model_of(model.model_fields[part].annotation) if model and part in model.model_fields else None
    return sorted(model.model_fields) if model else []


def _errors(e: ValidationError, source: str) -> SpecError:
    """One line per problem: the file, the dotted key, what is wrong."""
    lines = []
    for err in e.errors():
        loc = tuple(str(x) for x in err["loc"] if not str(x).startswith("function-"))
        key = ".".join(loc) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            lines.append(f"{source}: unknown key {key!r}; known here: {_known_here(loc)}")
        elif kind in _EXPECTED:
            lines.append(f"{source}: {key} must be {_EXPECTED[kind]}, got {err['input']!r}")
        else:
            lines.append(f"{source}: {key}: {err['msg'].removeprefix('Value error, ')}")
    return SpecError("\n".join(dict.fromkeys(lines)) + "\n(units are in the key names: _ms, _bps; `wisv run --schema` "
                     "lists every key)")


def _validate(raw: dict, source: str, where: str | None = None) -> dict:
    """The spec's values, validated; paths resolve against ``source``, errors name ``where``."""
    where = where or source
    if "device_traces" in raw:  # the key before per-device traces moved into the topology
        raise SpecError(f"{where}: device_traces is now topology.device_traces: {{files: [...]}} (or {{rotate: true}})")
    try:
        values = Spec.model_validate(raw).model_dump()
    except ValidationError as e:
        raise _errors(e, where) from None
    except ValueError as e:  # a protocol refusing the temperature
        raise SpecError(f"{where}: {e}") from None
    t = values["trace"]
    if t["file"] is not None and not resolve_path(t["file"], source).exists():
        raise SpecError(f"{where}: trace.file {t['file']!r} not found (looked beside the spec, in the repository "
                        f"and in {Path.cwd()})")
    task_file = values["task"]["file"]
    if task_file is not None and not resolve_path(task_file, source).is_file():
        raise SpecError(f"{where}: task.file {task_file!r} not found")
    for f in (values["topology"]["device_traces"] or {}).get("files") or []:
        if not resolve_path(f, source).exists():
            raise SpecError(f"{where}: topology.device_traces.files entry {f!r} not found")
    return values


def _set(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d = d[p]
    d[parts[-1]] = value


def _combinations(sweep: dict, source: str) -> list[dict[str, Any]]:
    """The swept values of each run: the grid's product times the zip's rows."""
    grid, zipped = sweep.get("grid") or {}, sweep.get("zip") or {}
    for k, v in {**grid, **zipped}.items():
        if not key_exists(k):
            raise SpecError(f"{source}: sweep key {k!r} names no spec key (`wisv run --schema` lists them)")
        if not isinstance(v, list) or not v:
            raise SpecError(f"{source}: sweep.{k} must be a non-empty list")
    lengths = {len(v) for v in zipped.values()}
    if len(lengths) > 1:
        raise SpecError(f"{source}: sweep.zip lists must have one length, got {sorted(lengths)}")
    n = math.prod(len(v) for v in grid.values()) * (lengths.pop() if lengths else 1)
    if n > MAX_RUNS:
        raise SpecError(f"{source}: the sweep expands to {n} runs (at most {MAX_RUNS})")
    rows = [dict(zip(zipped, vals)) for vals in zip(*zipped.values())] if zipped else [{}]
    return [{**dict(zip(grid, combo)), **row} for combo in itertools.product(*grid.values()) for row in rows]


def _label(key: str, value: Any) -> str:
    """``key=value`` for a run name: the key's last part(s); a file path by its name only (run
    names are folder names)."""
    if isinstance(value, str) and ("/" in value or "\\" in value):
        value = Path(value).stem
    return f"{key.split('.')[-1] if key.count('.') < 2 else '.'.join(key.split('.')[-2:])}={value}"


def load_spec(path: str | Path | None = None, overrides: dict | None = None) -> list[RunSpec]:
    """The resolved runs of a spec file (or of the defaults) with ``overrides`` merged in key by
    key, sweeps expanded (grid order, then zip rows). A file may hold several YAML documents
    (``---``): each is a spec of its own, expanded on its own, and their runs form one
    experiment (run names must differ)."""
    source = str(path) if path else "<defaults>"
    docs: list = [{}]
    if path:
        try:
            docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None] or [{}]
        except FileNotFoundError:
            raise SpecError(f"{path}: spec file not found") from None
        except yaml.YAMLError as e:
            raise SpecError(f"{path}: not valid YAML: {e}") from None
        if not all(isinstance(d, dict) for d in docs):
            raise SpecError(f"{path}: a spec is a mapping of keys")
    runs = [r for i, d in enumerate(docs)
            for r in _expand(d, source, overrides, f"{source} (document {i + 1})" if len(docs) > 1 else source)]
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        raise SpecError(f"{source}: run names repeat across documents (give each document its own name)")
    return runs


def _expand(raw: dict, source: str, overrides: dict | None, where: str) -> list[RunSpec]:
    """The runs of one spec document; ``where`` names it in errors."""
    raw = deep_merge(raw, overrides or {})
    sweep = raw.pop("sweep", None) or {}
    if not isinstance(sweep, dict):
        raise SpecError(f"{where}: sweep must be a mapping (grid: …, zip: …)")
    if set(sweep) - {"grid", "zip"}:  # the short form: sweep: {gamma: [2, 4]} is a grid
        short = {k: v for k, v in sweep.items() if k not in ("grid", "zip")}
        sweep = {"grid": {**(sweep.get("grid") or {}), **short}, "zip": sweep.get("zip") or {}}
    base = _validate(raw, source, where)
    _check_pair(base, source)
    runs = []
    for swept in _combinations(sweep, where):
        r = copy.deepcopy(raw)
        for k, v in swept.items():
            _set(r, k, v)
        values = _validate(r, source, where) if swept else base
        name = "-".join([values["name"], *(_label(k, v) for k, v in swept.items())])
        runs.append(RunSpec(name, values, source, swept))
    return runs


def _check_pair(values: dict, source: str) -> None:
    """The models exist, and the head of every protocol with one belongs to them."""
    from nodes.models import pair_identity
    from nodes.protocols import check_heads

    m = values["models"]
    try:
        pair = pair_identity(m["drafter"], m["target"])
        protocols = PROTOCOLS.default_comparison() if values["protocols"] is None else values["protocols"]
        head_dir = None if values["head_dir"] is None else resolve_path(values["head_dir"], source)
        check_heads(protocols, head_dir, pair)
        if values["hidden_wire_width"] is not None and values["hidden_wire_width"] < pair["drafter"]["hidden_size"]:
            raise ValueError(f"hidden_wire_width {values['hidden_wire_width']} is below the drafter's hidden width "
                             f"{pair['drafter']['hidden_size']} (padding only widens rows)")
    except (FileNotFoundError, ValueError) as e:
        raise SpecError(f"{source}: {e}") from None


def spec_schema_markdown() -> str:
    """The documentation of every spec key (``wisv run --schema``)."""
    from runs.schema import schema_markdown

    return schema_markdown()
