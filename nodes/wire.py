"""The wire protocol between device and edge: message dataclasses and their framing.

Framing (version 1), one ZeroMQ multipart message per protocol message:

    frame 0: header, msgpack map {"v": 1, "t": <type>, "f": {fields}, "a": [array specs]}
    frame k: the raw bytes of array k-1, little-endian, C order

An array spec is ``{"n": name, "d": dtype, "s": shape}`` with dtype one of ``f16``, ``bf16``
(the upper 16 bits of IEEE fp32), ``f32`` or ``i8`` (per-vector int8: the frame holds a float32
scale per row, then the int8 values; x ≈ scale · q). Nothing is pickled. The byte count of a
message is the sum of its frames (``encoded_size``), known before it is sent.

:func:`decode` checks everything a peer could get wrong — version (the integer 1), type, field
names and types, array dtypes and shapes against frame lengths, size limits, NaN/inf in arrays —
and raises :class:`WireError` with a code, so a node answers an error and keeps serving.
:func:`decode_envelope` stops before the arrays: a receiver checks the shapes it expects
(:meth:`Envelope.array`) before any array is decoded, so nothing is allocated from a peer's
claimed shape.

Every message of a session after ``hello`` carries the session ``secret`` the edge returned in
``hello_ack``: the session is bound to its authenticated hello, not to the ZeroMQ identity.
"""
from __future__ import annotations

import dataclasses
import math
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
    """Base of all messages; ``TYPE`` is the wire name, ``ARRAYS`` the array-valued fields,
    ``SPARSE`` the fields left out of the header while at their default (a message that does
    not use them is byte for byte what it was before they existed)."""

    TYPE: ClassVar[str] = ""
    ARRAYS: ClassVar[tuple[str, ...]] = ()
    SPARSE: ClassVar[tuple[str, ...]] = ()


@dataclass
class Hello(Message):
    """Device → edge: open a session. ``protocol`` names the verification protocol; ``token``
    is the shared secret when the edge requires one; ``hidden_wire_width``: drafter hidden rows
    arrive zero-padded to this many elements (0: the drafter's own width, no padding)."""

    TYPE: ClassVar[str] = "hello"
    device_id: str
    protocol: str
    gamma: int
    temperature: float = 0.0
    hidden_dtype: str = "f16"
    token: str = ""
    seed: int = 0
    hidden_wire_width: int = 0


@dataclass
class HelloAck(Message):
    """Edge → device: the session is open. ``secret`` (random, 32 hex digits) must be sent in
    every later message of the session."""

    TYPE: ClassVar[str] = "hello_ack"
    session: int
    max_gamma: int
    target_hidden_size: int
    secret: str = ""


@dataclass
class Start(Message):
    """Device → edge: a new request (prompt token ids)."""

    TYPE: ClassVar[str] = "start"
    request_id: str
    prompt: list[int]
    max_new_tokens: int
    secret: str = ""


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
    secret: str = ""


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
    secret: str = ""


@dataclass
class Verdict(Message):
    """Edge → device: ``accepted`` draft tokens stand, then ``next_token``; ``accepted_exact``
    (the exact-match prefix), ``first_mismatch`` (−1: none) and ``harmless`` as the policy's
    :class:`~nodes.decoding.policies.Decision` names them; ``done`` when the request ended (EOS
    or length). Times in ms: ``verify_ms`` the round's compute (``pad_ms`` of it added by a
    compute profile); ``edge_queue_ms`` and ``edge_ms`` the round's messages' wait before
    handling and whole stay at the edge, summed over the round's exchanges (0: an edge that
    does not report them); ``t_edge_arrival``/``t_edge_reply`` the edge's wall clock (epoch s)
    when the round's first message arrived and its verdict left (0: not reported). The four
    edge times travel only when set."""

    TYPE: ClassVar[str] = "verdict"
    SPARSE: ClassVar[tuple[str, ...]] = ("edge_queue_ms", "edge_ms", "t_edge_arrival", "t_edge_reply")
    request_id: str
    round: int
    accepted: int
    next_token: int
    accepted_exact: int
    first_mismatch: int
    harmless: int
    verify_ms: float
    done: bool = False
    pad_ms: float = 0.0  # part of verify_ms that a compute profile added
    edge_queue_ms: float = 0.0
    edge_ms: float = 0.0
    t_edge_arrival: float = 0.0
    t_edge_reply: float = 0.0


@dataclass
class Result(Message):
    """Edge → device: the whole output of an edge-alone (``ar-edge``) request; times as in
    :class:`Verdict`."""

    TYPE: ClassVar[str] = "result"
    SPARSE: ClassVar[tuple[str, ...]] = ("pad_ms", "edge_queue_ms", "edge_ms", "t_edge_arrival", "t_edge_reply")
    request_id: str
    tokens: list[int]
    verify_ms: float
    pad_ms: float = 0.0
    edge_queue_ms: float = 0.0
    edge_ms: float = 0.0
    t_edge_arrival: float = 0.0
    t_edge_reply: float = 0.0


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
    secret: str = ""


MESSAGE_TYPES: dict[str, type[Message]] = {c.TYPE: c for c in
                                           (Hello, HelloAck, Start, StartAck, Draft, HiddenRequest, HiddenUpload, Verdict,
                                            Result, Error, Bye)}


# ----------------------------------------------------------------------------- arrays

def _bf16_encode(x: np.ndarray) -> bytes:
    as32 = np.ascontiguousarray(x, dtype="<f4").view("<u4")
    rounded = as32 + 0x7FFF + ((as32 >> 16) & 1)  # round to nearest even
    return (rounded >> 16).astype("<u2").tobytes()


def _i8_encode(x: np.ndarray) -> bytes:
    x2 = x.reshape(math.prod(x.shape[:-1]), x.shape[-1]).astype(np.float32)  # also for empty rows
    scale = np.abs(x2).max(axis=1, initial=0.0) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(x2 / scale[:, None]), -127, 127).astype("i1")
    return scale.astype("<f4").tobytes() + q.tobytes()


def _i8_decode(buf: bytes, shape: tuple[int, ...]) -> np.ndarray:
    rows = math.prod(shape[:-1])
    scale = np.frombuffer(buf[: 4 * rows], "<f4")
    if not np.isfinite(scale).all():
        raise WireError("malformed", "i8 array with a NaN or infinite row scale")
    q = np.frombuffer(buf[4 * rows:], "i1").reshape(rows, shape[-1]).astype(np.float32)
    with np.errstate(over="ignore"):  # a scale near the float32 maximum overflows: caught as ±inf by the caller
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
        """Frame length in bytes of an array of ``shape`` (exact integers: no overflow)."""
        return self.itemsize * math.prod(shape) + self.row_overhead * math.prod(shape[:-1])


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
        elif f.name not in msg.SPARSE or v != f.default:
            fields[f.name] = v
    header = msgpack.packb({"v": WIRE_VERSION, "t": msg.TYPE, "f": fields, "a": specs}, use_bin_type=True)
    return [header, *frames]


def encoded_size(frames: list[bytes]) -> int:
    """Application bytes of an encoded message (all frames)."""
    return sum(len(f) for f in frames)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_FIELD_CHECKS: dict[str, Callable[[Any], bool]] = {
    "int": _is_int,
    "float": _is_finite_number,
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "list[int]": lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
    "dict[str, float]": lambda v: isinstance(v, dict) and all(isinstance(k, str) and _is_finite_number(x)
                                                             for k, x in v.items()),
}


def _check_field(name: str, annotation: str, v: Any) -> None:
    """WireError unless ``v`` has the field's type (a field of another annotation fails closed)."""
    check = _FIELD_CHECKS.get(annotation)
    if check is None or not check(v):
        raise WireError("malformed", f"field {name!r} has a wrong type ({type(v).__name__})")


def _short(v: Any, limit: int = 120) -> str:
    """``repr(v)`` cut to ``limit`` characters (error messages echo peer input)."""
    r = repr(v)
    return r if len(r) <= limit else r[:limit] + "…"


@dataclass(frozen=True)
class ArraySpec:
    """One array of a received message as its header describes it: field name, wire dtype and
    shape (elements per axis, rank 1–4)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def _decode_array(spec: ArraySpec, buf: bytes) -> np.ndarray:
    """The float32 array of a frame whose length already fits ``spec``; WireError ``malformed``
    when it holds NaN or ±inf."""
    arr = WIRE_DTYPES[spec.dtype].decode(buf, spec.shape)
    if not np.isfinite(arr).all():
        raise WireError("malformed", f"array {spec.name} holds NaN or infinite values")
    return arr


@dataclass
class Envelope:
    """A received message whose header is checked and whose arrays are not decoded yet.

    A receiver that knows which shapes it can accept asks for each array with
    :meth:`array` (``expect``): the shape is compared before a byte is decoded. :meth:`message`
    builds the message (with or without its arrays)."""

    cls: type[Message]
    fields: dict[str, Any]
    arrays: dict[str, tuple[ArraySpec, bytes]]

    @property
    def type(self) -> str:
        """The wire name of the message type."""
        return self.cls.TYPE

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The declared shape of array ``name`` (None: absent)."""
        return self.arrays[name][0].shape if name in self.arrays else None

    def array(self, name: str, expect: tuple[int, ...] | None = None) -> np.ndarray | None:
        """Array ``name`` decoded to float32 (None: absent). ``expect``: the only shape accepted,
        checked before decoding (WireError ``bad_request`` otherwise); NaN/inf: ``malformed``."""
        if name not in self.arrays:
            return None
        spec, buf = self.arrays[name]
        if expect is not None and spec.shape != tuple(expect):
            raise WireError("bad_request", f"array {name} of shape {list(spec.shape)}; expected {list(expect)}")
        return _decode_array(spec, buf)

    def message(self, arrays: bool = True) -> Message:
        """The message; ``arrays=False`` leaves its array fields None (decode them with :meth:`array`)."""
        values = {n: self.array(n) for n in self.arrays} if arrays else {}
        return self.cls(**self.fields, **values)


def _unpack_header(frame: bytes, max_list_len: int) -> Any:
    """The msgpack object of a header frame; lists longer than ``max_list_len``, maps longer
    than 1024 entries and extension types are refused while unpacking."""
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=True, max_array_len=max_list_len,
                               max_map_len=1024, max_ext_len=0)
    except Exception as e:  # msgpack raises several exception types
        code = "too_large" if "exceeds max" in str(e) else "malformed"
        raise WireError(code, f"header is not acceptable msgpack: {type(e).__name__}: {str(e)[:100]}") from None


def _array_spec(cls: type[Message], spec: Any, seen: dict, buf: bytes, max_array_elems: int) -> ArraySpec:
    """The checked spec of one array frame ``buf`` of a ``cls`` message."""
    if not isinstance(spec, dict) or not isinstance(spec.get("n"), str) or spec["n"] not in cls.ARRAYS \
            or spec["n"] in seen:
        raise WireError("malformed", f"bad array spec {_short(spec)} for {cls.TYPE}")
    dt, shape = spec.get("d"), spec.get("s")
    if not isinstance(dt, str) or dt not in WIRE_DTYPES or not isinstance(shape, list) \
            or not 1 <= len(shape) <= 4 or not all(_is_int(s) and s >= 0 for s in shape):
        raise WireError("malformed", f"bad dtype or shape in {_short(spec)} (rank 1–4, dtypes {', '.join(WIRE_DTYPES)})")
    if max(shape) > max_array_elems or math.prod(shape) > max_array_elems:  # each axis too: [2⁶³, 0] is empty
        raise WireError("too_large", f"array {spec['n']} of shape {_short(shape)} is too large")
    if array_nbytes(tuple(shape), dt) != len(buf):
        raise WireError("malformed", f"array {spec['n']}: {len(buf)} bytes do not fit {dt}{_short(shape)}")
    return ArraySpec(spec["n"], dt, tuple(shape))


def decode_envelope(frames: list[bytes], max_bytes: int = 16 << 20, max_array_elems: int = 1 << 24,
                    max_list_len: int = 1 << 17) -> Envelope:
    """The checked header of the message in ``frames`` with its array frames not yet decoded;
    WireError (with a code) for anything malformed or too large (``max_bytes``: all frames;
    ``max_array_elems``: per array; ``max_list_len``: per list in the header)."""
    total = sum(len(f) for f in frames)
    if total > max_bytes:
        raise WireError("too_large", f"message of {total} bytes exceeds the limit of {max_bytes}")
    if not frames:
        raise WireError("malformed", "empty message")
    head = _unpack_header(frames[0], max_list_len)
    if not isinstance(head, dict) or not {"v", "t", "f", "a"} <= set(head):
        raise WireError("malformed", "header must be a map with v, t, f, a")
    if not _is_int(head["v"]) or head["v"] != WIRE_VERSION:  # True and 1.0 are not 1
        raise WireError("bad_version", f"wire version {_short(head['v'])}, this node speaks {WIRE_VERSION}")
    cls = MESSAGE_TYPES.get(head["t"]) if isinstance(head["t"], str) else None
    if cls is None:
        raise WireError("unknown_type", f"unknown message type {_short(head['t'])}")
    fields, specs = head["f"], head["a"]
    if not isinstance(fields, dict) or not isinstance(specs, list):
        raise WireError("malformed", "f must be a map and a a list")
    known = {f.name: f for f in dataclasses.fields(cls)}
    scalar_names = {n for n in known if n not in cls.ARRAYS}
    unknown = set(fields) - scalar_names
    if unknown:
        raise WireError("malformed", f"unknown field(s) {_short(sorted(unknown))} for {cls.TYPE}")
    required = {n for n, f in known.items() if n not in cls.ARRAYS and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING}
    missing = required - set(fields)
    if missing:
        raise WireError("malformed", f"missing field(s) {sorted(missing)} for {cls.TYPE}")
    for name, v in fields.items():
        _check_field(name, str(known[name].type), v)
    if len(specs) != len(frames) - 1:
        raise WireError("malformed", f"{len(specs)} array specs but {len(frames) - 1} array frames")
    arrays: dict[str, tuple[ArraySpec, bytes]] = {}
    for spec, buf in zip(specs, frames[1:]):
        a = _array_spec(cls, spec, arrays, buf, max_array_elems)
        arrays[a.name] = (a, buf)
    return Envelope(cls, fields, arrays)


def decode(frames: list[bytes], max_bytes: int = 16 << 20, max_array_elems: int = 1 << 24,
           max_list_len: int = 1 << 17) -> Message:
    """The message in ``frames``, arrays decoded; WireError (with a code) for anything malformed,
    too large or non-finite (see :func:`decode_envelope`)."""
    return decode_envelope(frames, max_bytes, max_array_elems, max_list_len).message()
