"""Mahimahi delivery-opportunity traces (``mm-link``): one integer per line, a millisecond at
which one 1500-byte packet may be delivered; the file loops after its last timestamp.

Opportunities are counted in bins of ``step_ms`` (default 100 ms) and turned into a rate in bit/s.
A ``NAME.up``/``NAME.down`` pair is read together; a lone file fills the other direction as the
options say. Mahimahi traces carry no delay or loss: ``delay_ms`` and ``loss`` options apply.
The file is parsed in blocks (memory: the timestamps as int64, not Python objects).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from traces.format import Trace, TraceFormatError
from traces.importers.common import ImportOptions, check_rows, fill_direction, finish
from traces.textio import iter_line_blocks, lines_of

PACKET_BYTES = 1500
DEFAULT_BIN_MS = 100.0
MAX_DIGITS = 15  # a timestamp of more digits (over 31 000 years in ms) is refused
_NOT_PLAIN = re.compile(rf"[^0-9 \t\r\n]|[0-9][ \t]+[0-9]|[0-9]{{{MAX_DIGITS + 1}}}")


def read_opportunities(path: Path, block_bytes: int = 1 << 20) -> np.ndarray:
    """The delivery-opportunity timestamps (ms, int64) of a Mahimahi file, validated: one
    non-negative integer per line (blank lines allowed), never decreasing, last one > 0."""
    chunks: list[np.ndarray] = []
    prev = -1
    for first_line, block in iter_line_blocks(path, block_bytes):
        if _NOT_PLAIN.search(block):
            _diagnose(path, first_line, block, prev)
        values = np.array(block.split(), dtype=np.int64)
        if values.size == 0:
            continue
        if values[0] < prev or np.any(np.diff(values) < 0):
            _diagnose(path, first_line, block, prev)
        chunks.append(values)
        prev = int(values[-1])
    if not chunks or prev <= 0:
        raise TraceFormatError(path, None, None, "a Mahimahi trace needs a positive last timestamp")
    return np.concatenate(chunks)


def _diagnose(path: Path, first_line: int, block: str, prev: int) -> None:
    """Find the first bad line of a block line by line and raise TraceFormatError for it."""
    for k, line in enumerate(lines_of(block)):
        s = line.strip()
        if not s:
            continue
        if not (s.isascii() and s.isdigit()) or len(s) > MAX_DIGITS:
            what = "a non-negative integer millisecond" + (f" of at most {MAX_DIGITS} digits" if s.isdigit() else "")
            raise TraceFormatError(path, first_line + k, None, f"expected {what}, got {s[:40]!r}", 1)
        v = int(s)
        if v < prev:
            raise TraceFormatError(path, first_line + k, None, f"timestamps must not decrease ({prev} then {v})", 1)
        prev = v
    raise TraceFormatError(path, first_line, None, "unreadable block of timestamps")  # not reached


def opportunities_to_rate(ts_ms: np.ndarray, bin_ms: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(bin start times ms, rate bit/s per bin, loop period ms) of opportunity timestamps."""
    period = float(ts_ms[-1])
    n = max(1, int(np.ceil(period / bin_ms)))
    idx = np.minimum((ts_ms // bin_ms).astype(np.int64), n - 1)
    counts = np.bincount(idx, minlength=n).astype(float)
    widths = np.full(n, bin_ms)
    widths[-1] = period - (n - 1) * bin_ms
    return np.arange(n) * bin_ms, counts * PACKET_BYTES * 8 / (widths / 1000.0), period


def _pair(path: Path) -> dict[str, Path]:
    if path.suffix in (".up", ".down"):
        other = path.with_suffix(".down" if path.suffix == ".up" else ".up")
        found = {path.suffix[1:]: path}
        if other.is_file():
            found[other.suffix[1:]] = other
        return found
    return {}


def import_mahimahi(path: str | Path, opts: ImportOptions) -> Trace:
    """Import a Mahimahi trace (or an .up/.down pair) as a canonical trace."""
    path = Path(path)
    bin_ms = opts.step_ms or DEFAULT_BIN_MS
    files = _pair(path) or {opts.direction if opts.direction != "both" else "down": path}
    cols: dict = {}
    meta = {"source": "mahimahi", "files": {d: p.name for d, p in files.items()},
            "rate_from": "throughput", "packet_bytes": PACKET_BYTES}
    periods = {}
    stamps = {d: read_opportunities(p) for d, p in files.items()}
    for d, ts in stamps.items():
        check_rows(files[d], ts[-1] / bin_ms, f"a loop period of {ts[-1]} ms in {bin_ms:g} ms bins")
    series = {d: opportunities_to_rate(ts, bin_ms) for d, ts in stamps.items()}
    # Both directions share one time grid: loop the shorter one to the longer period.
    n = max(len(t) for t, _, _ in series.values())
    cols["t_ms"] = np.arange(n) * bin_ms
    for d, (_, rate, period) in series.items():
        periods[d] = period
        cols[f"rate_bps_{d}"] = np.resize(rate, n)
        cols[f"delay_ms_{d}"] = np.full(n, opts.delay_ms)
        cols[f"loss_{d}"] = np.full(n, opts.loss)
    if len(files) == 1:
        meta["note"] = fill_direction(cols, next(iter(files)), opts)
    meta["loop_period_ms"] = periods
    meta["step_ms"] = float(bin_ms)
    longest = max(periods.values())
    if longest - (n - 1) * bin_ms != bin_ms:
        meta["last_row_ms"] = float(longest - (n - 1) * bin_ms)
    return finish(cols, meta, ImportOptions(**{**opts.__dict__, "step_ms": None}), path)
