"""Recognise a trace file's format by content, and import any known format."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from traces.format import MAGIC, Trace, read_trace
from traces.importers.common import ImportOptions
from traces.importers.generic import import_generic
from traces.importers.gnettrack import import_gnettrack
from traces.importers.mahimahi import import_mahimahi
from traces.importers.modem import import_modem
from traces.importers.two_column import import_two_column


def _import_canonical(path: Path, opts: ImportOptions) -> Trace:
    from traces.ops import resample

    t = read_trace(path)
    return resample(t, opts.step_ms) if opts.step_ms else t


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


def detect_format(path: str | Path) -> str:
    """The format name of a file, judged from its first lines (ValueError if none fits)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4096)
    if head[:4] == b"PAR1":
        return "wisv"
    text = head.decode("utf-8", errors="replace")
    lines = [ln for ln in text.splitlines()[:20] if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: empty file, cannot detect its format")
    first = lines[0]
    if first.startswith(MAGIC) or first.replace(" ", "").startswith("t_ms,"):
        return "wisv"
    header = {c.strip() for c in first.split(",")}
    if {"Timestamp", "NetworkMode", "DL_bitrate"} <= header:
        return "gnettrack"
    if "td" in header and any(c.startswith("5G_") for c in header):
        return "modem"
    body = lines[:-1] if len(lines) > 2 else lines  # the 4 KiB cut may split the last line
    if all(ln.strip().isdigit() for ln in body):
        return "mahimahi"
    if all(_TWO.match(ln) for ln in body[1:]) and len(body) > 1:
        return "two-column"
    raise ValueError(f"{path}: unknown trace format (first line {first[:80]!r}); "
                     f"pass --format one of {sorted(FORMATS)} (generic needs --map)")


def import_trace(path: str | Path, opts: ImportOptions | None = None, fmt: str | None = None) -> Trace:
    """Import ``path`` (format detected by content unless ``fmt``) into a canonical Trace."""
    opts = opts or ImportOptions()
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {sorted(FORMATS)}")
    return FORMATS[fmt](Path(path), opts)
