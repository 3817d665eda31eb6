"""The wire protocol between device and edge: message dataclasses and their framing.

Framing (version 1), one ZeroMQ multipart message per protocol message:

    frame 0: header, msgpack map {"v": 1, "t": <type>, "f": {fields}, "a": [array specs]}
    frame k: the raw bytes of array k-1, little-endian, C order

An array spec is ``{"n": name, "d": dtype, "s": shape}`` with dtype one of ``f16``, ``bf16``
(the upper 16 bits of IEEE fp32), ``f32`` or ``i8`` (per-vector int8: the frame holds a float32
scale per row, then the int8 values; x ≈ scale · q). Nothing is pickled. The byte count of a
message is the sum of its frames (``encoded_size``), known before it is sent.

:func:`decode` checks everything a peer could get wrong — version, type, field names and
types, array dtypes and shapes against frame lengths, size limits — and raises
:class:`WireError` with a code, so a node answers an error and keeps serving.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import msgpack
import numpy as np

WIRE_VERSION = 1


class WireError(ValueError):
    """A message that cannot be accepted; ``code`` is sent back in an :class:`Error`."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


# ----------------------------------------------------------------------------- messages

@dataclass
class Message:
    """Base of all messages; ``TYPE`` is the wire name, ``ARRAYS`` the array-valued fields."""

    TYPE: ClassVar[str] = ""
    ARRAYS: ClassVar[tuple[str, ...]] = ()


@dataclass
class Hello(Message):
    """Device → edge: open a session. ``protocol`` names the verification protocol; ``token``
    is the shared secret when the edge requires one."""

    TYPE: ClassVar[str] = "hello"
    device_id: str
    protocol: str
    gamma: int
    temperature: float = 0.0
    hidden_dtype: str = "f16"
    token: str = ""
    seed: int = 0


@dataclass
class HelloAck(Message):
    """Edge → device: the session is open."""

    TYPE: ClassVar[str] = "hello_ack"
    session: int
    max_gamma: int
    target_hidden_size: int


@dataclass
class Start(Message):
    """Device → edge: a new request (prompt token ids)."""

    TYPE: ClassVar[str] = "start"
    request_id: str
    prompt: list[int]
    max_new_tokens: int


@dataclass
class StartAck(Message):
    """Edge → device: the request is open; drafts may follow."""

    TYPE: ClassVar[str] = "start_ack"
    request_id: str


@dataclass
class Draft(Message):
    """Device → edge: the draft of one round, the device's CSI report, and (by protocol) the
    drafter's hidden states [γ, H] and probabilities [γ, V]."""

    TYPE: ClassVar[str] = "draft"
    ARRAYS: ClassVar[tuple[str, ...]] = ("hidden", "probs")
    request_id: str
    round: int
    tokens: list[int]
    csi: dict[str, float] = field(default_factory=dict)
    hidden: np.ndarray | None = None
    probs: np.ndarray | None = None


@dataclass
class HiddenRequest(Message):
    """Edge → device: send the drafter hidden states of these draft positions (mismatch-first)."""

    TYPE: ClassVar[str] = "hidden_request"
    request_id: str
    round: int
    positions: list[int]


@dataclass
class HiddenUpload(Message):
    """Device → edge: the requested hidden states [len(positions), H]."""

    TYPE: ClassVar[str] = "hidden_upload"
    ARRAYS: ClassVar[tuple[str, ...]] = ("hidden",)
    request_id: str
    round: int
    positions: list[int]
    hidden: np.ndarray | None = None


@dataclass
class Verdict(Message):
    """Edge → device: ``n_accepted`` draft tokens stand, then ``next_token``; ``done`` when the
    request ended (EOS or length)."""

    TYPE: ClassVar[str] = "verdict"
    request_id: str
    round: int
    n_accepted: int
    next_token: int
    n_exact: int
    first_mismatch: int
    n_harmless: int
    verify_ms: float
    done: bool = False
    pad_ms: float = 0.0  # part of verify_ms that a compute profile added


@dataclass
class Result(Message):
    """Edge → device: the whole output of an ``ar-edge`` request."""

    TYPE: ClassVar[str] = "result"
    request_id: str
    tokens: list[int]
    verify_ms: float


@dataclass
class Error(Message):
    """Either way: a rejected message. ``code``: bad_version, malformed, too_large, unknown_type,
    out_of_order, unauthenticated, no_session, too_many_sessions, bad_request, internal."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    request_id: str = ""


@dataclass
class Bye(Message):
    """Device → edge: close the session."""

    TYPE: ClassVar[str] = "bye"


MESSAGE_TYPES: dict[str, type[Message]] = {c.TYPE: c for c in
                                           (Hello, HelloAck, Start, StartAck, Draft, HiddenRequest, HiddenUpload, Verdict,
                                            Result, Error, Bye)}


# ----------------------------------------------------------------------------- arrays

def _bf16_encode(x: np.ndarray) -> bytes:
    as32 = np.ascontiguousarray(x, dtype="<f4").view("<u4")
    rounded = as32 + 0x7FFF + ((as32 >> 16) & 1)  # round to nearest even
    return (rounded >> 16).astype("<u2").tobytes()


def _i8_encode(x: np.ndarray) -> bytes:
    x2 = x.reshape(-1, x.shape[-1]).astype(np.float32)
    scale = np.abs(x2).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(x2 / scale[:, None]), -127, 127).astype("i1")
    return scale.astype("<f4").tobytes() + q.tobytes()


def _i8_decode(buf: bytes, shape: tuple[int, ...]) -> np.ndarray:
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    scale = np.frombuffer(buf[: 4 * rows], "<f4")
    q = np.frombuffer(buf[4 * rows:], "i1").reshape(rows, shape[-1]).astype(np.float32)
    return (q * scale[:, None]).reshape(shape)


@dataclass(frozen=True)
class WireDtype:
    """How one array dtype travels: bytes per element, extra bytes per row (int8's scale), and
    the little-endian encoder and decoder (decoded arrays are float32)."""

    name: str
    itemsize: int
    row_overhead: int
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[[bytes, tuple[int, ...]], np.ndarray]

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """Frame length in bytes of an array of ``shape``."""
        n = int(np.prod(shape)) if shape else 1
        rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        return self.itemsize * n + self.row_overhead * rows


WIRE_DTYPES: dict[str, WireDtype] = {d.name: d for d in (
    WireDtype("f16", 2, 0, lambda x: x.astype("<f2").tobytes(),
              lambda b, s: np.frombuffer(b, "<f2").reshape(s).astype(np.float32)),
    WireDtype("bf16", 2, 0, _bf16_encode,
              lambda b, s: (np.frombuffer(b, "<u2").astype("<u4") << 16).view("<f4").reshape(s)),
    WireDtype("f32", 4, 0, lambda x: x.astype("<f4").tobytes(), lambda b, s: np.frombuffer(b, "<f4").reshape(s).copy()),
    WireDtype("i8", 1, 4, _i8_encode, _i8_decode),
)}


def wire_dtype(name: str) -> WireDtype:
    """The wire dtype called ``name``; WireError otherwise."""
    if name not in WIRE_DTYPES:
        raise WireError("malformed", f"unknown array dtype {name!r}; known: {', '.join(WIRE_DTYPES)}")
    return WIRE_DTYPES[name]


def array_nbytes(shape: tuple[int, ...], dtype: str) -> int:
    """Frame length in bytes of an array of ``shape`` and wire ``dtype``."""
    return wire_dtype(dtype).nbytes(shape)


# ----------------------------------------------------------------------------- framing

def encode(msg: Message, array_dtypes: dict[str, str] | None = None) -> list[bytes]:
    """Frames of ``msg``; arrays go as ``array_dtypes[name]`` (default f16 for hidden, f32 else)."""
    fields, specs, frames = {}, [], []
    for f in dataclasses.fields(msg):
        v = getattr(msg, f.name)
        if f.name in msg.ARRAYS:
            if v is None:
                continue
            arr = v.detach().float().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
            dt = (array_dtypes or {}).get(f.name, "f16" if f.name == "hidden" else "f32")
            specs.append({"n": f.name, "d": dt, "s": list(arr.shape)})
            frames.append(wire_dtype(dt).encode(arr))
        else:
            fields[f.name] = v
    header = msgpack.packb({"v": WIRE_VERSION, "t": msg.TYPE, "f": fields, "a": specs}, use_bin_type=True)
    return [header, *frames]


def encoded_size(frames: list[bytes]) -> int:
    """Application bytes of an encoded message (all frames)."""
    return sum(len(f) for f in frames)


_FIELD_CHECKS = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
                 float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v),
                 str: lambda v: isinstance(v, str), bool: lambda v: isinstance(v, bool)}


def _check_field(name: str, annotation: str, v: Any) -> None:
    ok = True
    if annotation.startswith("list[int]"):
        ok = isinstance(v, list) and all(_FIELD_CHECKS[int](x) for x in v)
    elif annotation.startswith("dict"):
        ok = isinstance(v, dict) and all(isinstance(k, str) and _FIELD_CHECKS[float](x) for k, x in v.items())
    elif annotation in ("int", "float", "str", "bool"):
        ok = _FIELD_CHECKS[{"int": int, "float": float, "str": str, "bool": bool}[annotation]](v)
    if not ok:
        raise WireError("malformed", f"field {name!r} has a wrong type ({type(v).__name__})")


def decode(frames: list[bytes], max_bytes: int = 16 << 20, max_array_elems: int = 1 << 24) -> Message:
    """The message in ``frames``; WireError (with a code) for anything malformed or too large."""
    total = sum(len(f) for f in frames)
    if total > max_bytes:
        raise WireError("too_large", f"message of {total} bytes exceeds the limit of {max_bytes}")
    if not frames:
        raise WireError("malformed", "empty message")
    try:
        head = msgpack.unpackb(frames[0], raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several exception types
        raise WireError("malformed", f"header is not msgpack: {type(e).__name__}") from None
    if not isinstance(head, dict) or not {"v", "t", "f", "a"} <= set(head):
        raise WireError("malformed", "header must be a map with v, t, f, a")
    if head["v"] != WIRE_VERSION:
        raise WireError("bad_version", f"wire version {head['v']!r}, this node speaks {WIRE_VERSION}")
    cls = MESSAGE_TYPES.get(head["t"]) if isinstance(head["t"], str) else None
    if cls is None:
        raise WireError("unknown_type", f"unknown message type {head['t']!r}")
    fields, specs = head["f"], head["a"]
    if not isinstance(fields, dict) or not isinstance(specs, list):
        raise WireError("malformed", "f must be a map and a a list")
    known = {f.name: f for f in dataclasses.fields(cls)}
    scalar_names = {n for n in known if n not in cls.ARRAYS}
    unknown = set(fields) - scalar_names
    if unknown:
        raise WireError("malformed", f"unknown field(s) {sorted(unknown)} for {cls.TYPE}")
    required = {n for n, f in known.items() if n not in cls.ARRAYS and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING}
    missing = required - set(fields)
    if missing:
        raise WireError("malformed", f"missing field(s) {sorted(missing)} for {cls.TYPE}")
    for name, v in fields.items():
        _check_field(name, str(known[name].type), v)
    if len(specs) != len(frames) - 1:
        raise WireError("malformed", f"{len(specs)} array specs but {len(frames) - 1} array frames")
    arrays = {}
    for spec, buf in zip(specs, frames[1:]):
        if not isinstance(spec, dict) or spec.get("n") not in cls.ARRAYS or spec["n"] in arrays:
            raise WireError("malformed", f"bad array spec {spec!r} for {cls.TYPE}")
        dt, shape = spec.get("d"), spec.get("s")
        if dt not in WIRE_DTYPES or not isinstance(shape, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) and 0 <= s for s in shape) or len(shape) > 4:
            raise WireError("malformed", f"bad dtype or shape in {spec!r}")
        if int(np.prod(shape)) > max_array_elems:
            raise WireError("too_large", f"array {spec['n']} of shape {shape} is too large")
        if array_nbytes(tuple(shape), dt) != len(buf):
            raise WireError("malformed", f"array {spec['n']}: {len(buf)} bytes do not fit {dt}{shape}")
        arrays[spec["n"]] = WIRE_DTYPES[dt].decode(buf, tuple(shape))
    return cls(**fields, **arrays)
