"""Recognise a trace file's format by content, and import any known format."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from traces.format import MAGIC, Trace, TraceFormatError, read_trace, write_trace
from traces.importers.common import ImportOptions, check_rows
from traces.importers.generic import import_generic
from traces.importers.gnettrack import import_gnettrack
from traces.importers.mahimahi import import_mahimahi
from traces.importers.modem import import_modem
from traces.importers.two_column import import_two_column, import_two_column_to_file
from traces.textio import BOM


def _import_canonical(path: Path, opts: ImportOptions) -> Trace:
    from traces.ops import resample

    t = read_trace(path)
    if opts.step_ms:
        check_rows(path, t.duration_ms / opts.step_ms, f"resampling at {opts.step_ms:g} ms")
        t = resample(t, opts.step_ms)
    return t


FORMATS: dict[str, Callable[[Path, ImportOptions], Trace]] = {
    "wisv": _import_canonical,
    "mahimahi": import_mahimahi,
    "gnettrack": import_gnettrack,
    "modem": import_modem,
    "two-column": import_two_column,
    "generic": import_generic,
}
_NUM = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
_TWO = re.compile(rf"^\s*{_NUM}[\s,;]+{_NUM}\s*$")
HEAD_BYTES = 4096


def _head_lines(path: Path) -> tuple[bytes, list[str]]:
    """The first bytes of a file and its first non-empty lines (BOM stripped); an empty or
    binary file, or one that is not UTF-8, is a TraceFormatError naming it."""
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    if head[:4] == b"PAR1":
        return head, []
    if not head:
        raise TraceFormatError(path, None, None, "empty file, cannot detect its format")
    if b"\x00" in head:
        raise TraceFormatError(path, None, None, "binary data (a NUL byte): not a trace in any known format")
    if head.startswith(BOM):
        head = head[len(BOM):]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not merely a character cut at the 4 KiB boundary
            raise TraceFormatError(path, head[: e.start].count(b"\n") + 1, None,
                                   f"not UTF-8 text (byte 0x{head[e.start]:02x})") from None
        text = head[: e.start].decode("utf-8")
    return head, [ln for ln in text.splitlines()[:20] if ln.strip()]


def detect_format(path: str | Path) -> str:
    """The format name of a file, judged from its first lines (TraceFormatError if none fits)."""
    path = Path(path)
    head, lines = _head_lines(path)
    if head[:4] == b"PAR1":
        return "wisv"
    if not lines:
        raise TraceFormatError(path, None, None, "no text lines, cannot detect its format")
    first = lines[0]
    if first.startswith(MAGIC) or first.replace(" ", "").startswith("t_ms,"):
        return "wisv"
    header = {c.strip() for c in first.split(",")}
    if {"Timestamp", "NetworkMode", "DL_bitrate"} <= header:
        return "gnettrack"
    if "td" in header and any(c.startswith("5G_") for c in header):
        return "modem"
    body = lines[:-1] if len(lines) > 2 else lines  # the 4 KiB cut may split the last line
    if all(ln.strip().isascii() and ln.strip().isdigit() for ln in body):
        return "mahimahi"
    data = [ln for ln in body if not ln.lstrip().startswith("#")]
    rows = data[1:] if data and not _TWO.match(data[0]) else data
    if len(rows) >= 2 and all(_TWO.match(ln) for ln in rows) and _header_ok(data[0]):
        return "two-column"
    raise TraceFormatError(path, None, None, f"unknown trace format (first line {first[:80]!r}); "
                           f"pass --format one of {sorted(FORMATS)} (generic needs --map)")


def _header_ok(line: str) -> bool:
    """A two-column log's first line is data or a header with no number in it."""
    if _TWO.match(line):
        return True
    return not any(re.fullmatch(_NUM, f) for f in re.split(r"[\s,;]+", line.strip()) if f)


def import_trace(path: str | Path, opts: ImportOptions | None = None, fmt: str | None = None) -> Trace:
    """Import ``path`` (format detected by content unless ``fmt``) into a canonical Trace."""
    opts = opts or ImportOptions()
    path = Path(path)
    _check_file(path)
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {sorted(FORMATS)}")
    return FORMATS[fmt](path, opts)


def import_to_file(path: str | Path, out: str | Path, opts: ImportOptions | None = None,
                   fmt: str | None = None) -> dict:
    """Import ``path`` into trace file ``out``; returns the metadata written with ``rows`` and
    ``duration_ms``. Two-column logs (without resampling) are streamed block by block, so
    memory stays near the size of the time column; other formats are imported in memory."""
    opts = opts or ImportOptions()
    path = Path(path)
    _check_file(path)
    fmt = fmt or detect_format(path)
    if fmt == "two-column" and not opts.step_ms:
        return import_two_column_to_file(path, out, opts)
    trace = import_trace(path, opts, fmt)
    write_trace(trace, out)
    return {**trace.meta, "rows": len(trace), "duration_ms": trace.duration_ms}


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise TraceFormatError(path, None, None, "is a directory, not a trace file")
