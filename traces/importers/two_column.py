"""Two-column ``time throughput`` logs (whitespace-, comma- or semicolon-separated), as iperf-style
or cellular throughput logs are often kept. Units via ``time_unit`` (default s) and ``rate_unit``
(default Mbit/s); ``direction`` says which direction it records.

Lines starting with ``#`` and blank lines are skipped; the first other line may be a header only
if none of its fields is a number; every data row has two numbers, time strictly increasing,
throughput ≥ 0, and there are at least two rows (the step is the time between rows).

The file is parsed in blocks of lines with numpy (memory: two float64 per row, not Python
objects); :func:`import_two_column_to_file` streams the import straight to a trace file.
"""
from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from traces.format import Trace, TraceFormatError, TraceWriter, time_problem
from traces.importers.common import (RATE_UNITS, RateFloor, TIME_UNITS, ImportOptions, Provenance, fill_direction,
                                     finish)
from traces.textio import BLOCK_BYTES, iter_line_blocks, lines_of

_SPLIT = re.compile(r"[\s,;]+")
_TO_SPACE = str.maketrans({",": " ", ";": " "})
MIN_ROWS = 2


@dataclass
class _State:
    """What a block parse carries to the next: the last time (file units), rows so far, and
    whether the header slot (the first non-comment line of the file) is still open."""

    last_t: float | None = None
    rows: int = 0
    header_open: bool = True


def iter_two_column(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (time, throughput) float64 chunks of a two-column log, in the file's own units,
    validated across the whole file; errors are TraceFormatError with the file, line, column."""
    state = _State()
    for first_line, block in iter_line_blocks(path, block_bytes):
        t, v = _parse_block(path, first_line, block, state)
        if t.size:
            state.last_t = float(t[-1])
            state.rows += int(t.size)
            yield t, v
    if state.rows < MIN_ROWS:
        raise TraceFormatError(path, None, None, f"{state.rows} data row(s): a time/throughput log needs at least "
                               f"{MIN_ROWS} (the step is the time between rows)" if state.rows else "no data rows")


def _parse_block(path: Path, first_line: int, block: str, state: _State) -> tuple[np.ndarray, np.ndarray]:
    """Parse one block of whole lines: numpy's fast reader, or line by line where it objects
    or a rule breaks (then the line-by-line pass raises with the exact line)."""
    if state.header_open:
        block = _drop_header(path, first_line, block, state)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data" for comment-only blocks
            arr = np.loadtxt(io.StringIO(block.translate(_TO_SPACE)), dtype=float, comments="#", ndmin=2)
    except ValueError:
        return _parse_slow(path, first_line, block, state)
    if arr.size == 0:
        return np.empty(0), np.empty(0)
    if arr.shape[1] != 2:
        return _parse_slow(path, first_line, block, state)
    t, v = arr[:, 0].copy(), arr[:, 1].copy()
    if not (np.all(np.isfinite(arr)) and np.all(v >= 0) and _increasing(t, state.last_t)):
        return _parse_slow(path, first_line, block, state)
    return t, v


def _increasing(t: np.ndarray, last: float | None) -> bool:
    return bool(np.all(np.diff(t) > 0) and (last is None or t[0] > last))


def _fields(line: str) -> list[str]:
    """The fields of a line, comment (``#`` onwards) removed."""
    s = line.split("#", 1)[0].strip()
    return [p for p in _SPLIT.split(s) if p] if s else []


def _number(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def _drop_header(path: Path, first_line: int, block: str, state: _State) -> str:
    """Close the header slot at the first non-comment line of the file; blank it out when it
    is a header (no field is a number), so the numeric reader sees only data (the lines keep
    their numbers)."""
    lines = lines_of(block)
    for k, line in enumerate(lines):
        fields = _fields(line)
        if not fields:
            continue
        state.header_open = False
        if all(_number(f) is None for f in fields):
            lines[k] = ""
            return "\n".join(lines) + "\n"
        return block
    return block


def _parse_slow(path: Path, first_line: int, block: str, state: _State) -> tuple[np.ndarray, np.ndarray]:
    """Line-by-line parse of a block with the exact line of the first error."""
    times: list[float] = []
    values: list[float] = []
    last = state.last_t
    for k, line in enumerate(lines_of(block)):
        lineno = first_line + k
        parts = _fields(line)
        if not parts:
            continue
        if len(parts) != 2:
            raise TraceFormatError(path, lineno, None, f"expected 2 columns, got {len(parts)}")
        a, b = _number(parts[0]), _number(parts[1])
        for col, (text, x) in enumerate(((parts[0], a), (parts[1], b)), start=1):
            if x is None:
                raise TraceFormatError(path, lineno, None, f"{text[:40]!r} is not a number", col)
            if not np.isfinite(x):
                raise TraceFormatError(path, lineno, None, f"value {text[:40]!r} is not finite", col)
        if b < 0:
            raise TraceFormatError(path, lineno, None, f"negative throughput {b:g}", 2)
        if last is not None and a <= last:
            raise TraceFormatError(path, lineno, None, f"time is not increasing ({last:g} then {a:g})", 1)
        times.append(a)
        values.append(b)
        last = a
    return np.asarray(times, dtype=float), np.asarray(values, dtype=float)


def read_two_column(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(time, throughput) columns of a two-column log, in the file's own units."""
    chunks = list(iter_two_column(Path(path)))
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


def line_of_row(path: Path, row: int) -> int:
    """1-based line of data row ``row`` (0-based) of a two-column log (for error messages)."""
    seen = -1
    header_open = True
    for first_line, block in iter_line_blocks(path):
        for k, line in enumerate(lines_of(block)):
            fields = _fields(line)
            if not fields:
                continue
            if header_open:
                header_open = False
                if all(_number(f) is None for f in fields):
                    continue
            seen += 1
            if seen == row:
                return first_line + k
    return row + 1


def _canonical(t_ms: np.ndarray, v: np.ndarray, opts: ImportOptions) -> tuple[dict[str, np.ndarray], str]:
    """Canonical columns (t in ms, rate in bit/s) of one chunk and the metadata note."""
    unit = opts.rate_unit or "mbps"
    have = "down" if opts.direction == "both" else opts.direction
    n = len(t_ms)
    with np.errstate(over="ignore"):  # an overflow is inf: refused by validation
        rate = v * RATE_UNITS[unit]
    cols = {"t_ms": t_ms, f"rate_bps_{have}": rate,
            f"delay_ms_{have}": np.full(n, opts.delay_ms), f"loss_{have}": np.full(n, opts.loss)}
    if opts.direction == "both":
        for k in ("rate_bps", "delay_ms", "loss"):
            cols[f"{k}_up"] = cols[f"{k}_down"]
        return cols, "same log used for both directions"
    return cols, fill_direction(cols, have, opts)


def _meta(path: Path, opts: ImportOptions) -> dict:
    return {"source": "two-column", "file": path.name, "rate_from": "throughput",
            "rate_unit": opts.rate_unit or "mbps", "time_unit": opts.time_unit}


def import_two_column(path: str | Path, opts: ImportOptions) -> Trace:
    """Import a two-column time/throughput log as a canonical trace (in memory)."""
    path = Path(path)
    t, v = read_two_column(path)
    with np.errstate(over="ignore"):
        t_ms = t * TIME_UNITS[opts.time_unit]
    cols, note = _canonical(t_ms, v, opts)
    meta = {**_meta(path, opts), "note": note}
    where = Provenance(lambda row: line_of_row(path, row),
                       {f"rate_bps_{d}": ("throughput", 2) for d in ("up", "down")} | {"t_ms": ("time", 1)})
    return finish(cols, meta, opts, path, where)


def import_two_column_to_file(path: str | Path, out: str | Path, opts: ImportOptions,
                              block_bytes: int = BLOCK_BYTES) -> dict:
    """Import a two-column log straight into trace file ``out`` (CSV or Parquet, atomic), one
    block at a time: peak memory is the per-row time steps (8 bytes a row, for the median step)
    plus a block, not the whole table. Returns the metadata written, with ``rows`` and
    ``duration_ms``. ``opts.step_ms`` (resampling) is not supported here."""
    if opts.step_ms:
        raise ValueError("streamed import does not resample; use import_trace")
    path = Path(path)
    scale_t = TIME_UNITS[opts.time_unit]
    t0: float | None = None
    prev: float | None = None
    steps: list[np.ndarray] = []
    rows = 0
    floor = RateFloor(opts.floor_outages)
    top = {"up": (-1.0, -1), "down": (-1.0, -1)}  # per direction: (largest rate bit/s, its row)
    note = ""
    with TraceWriter(out) as writer:
        for t, v in iter_two_column(path, block_bytes):
            with np.errstate(over="ignore", invalid="ignore"):  # an overflow is inf: refused below
                t_ms = t * scale_t
                t0 = float(t_ms[0]) if t0 is None else t0
                t_ms = t_ms - t0
            cols, note = _canonical(t_ms, v, opts)
            _check_chunk(path, cols, prev, rows)
            steps.append(np.diff(t_ms, prepend=prev) if prev is not None else np.diff(t_ms))
            prev = float(t_ms[-1])
            for d in ("up", "down"):
                r = cols[f"rate_bps_{d}"]
                k = int(np.argmax(r))
                if r[k] > top[d][0]:
                    top[d] = (float(r[k]), rows + k)
            floor.apply(cols)
            writer.write(cols)
            rows += len(t_ms)
        for d, (largest, row) in top.items():
            if largest < 1000.0:
                what = "every rate is 0" if largest == 0 else f"every rate is below 1000 bit/s (max {largest:g})"
                raise TraceFormatError(path, line_of_row(path, row), "throughput",
                                       f"{what}: wrong unit? rates are in bit/s (read as rate_bps_{d}): give the "
                                       "source's unit (--rate-unit)", 2)
        all_steps = np.concatenate(steps)
        step_ms = float(np.median(all_steps, overwrite_input=True))
        del all_steps, steps
        meta = {**_meta(path, opts), "note": note, "import_options": opts.describe(),
                **floor.meta(), "step_ms": step_ms}
        meta = writer.close(meta)
    return {**meta, "rows": rows, "duration_ms": float(prev + step_ms)}


def _check_chunk(path: Path, cols: dict[str, np.ndarray], prev: float | None, rows_before: int) -> None:
    """Time in ms must stay finite and increasing after unit scaling and re-basing; rates
    finite after the unit (a huge value times the unit can overflow)."""
    t = cols["t_ms"]
    joined = t if prev is None else np.concatenate(([prev], t))
    bad_t = np.flatnonzero(~np.isfinite(t))
    p = time_problem(joined) if not bad_t.size else None
    row = int(bad_t[0]) if bad_t.size else (p.row - (prev is not None) if p else None)
    if row is not None:
        msg = "time is not finite in ms" if bad_t.size else f"{p.message} after conversion to ms"
        raise TraceFormatError(path, line_of_row(path, rows_before + row), "time", msg, 1)
    for d in ("up", "down"):
        bad = np.flatnonzero(~np.isfinite(cols[f"rate_bps_{d}"]))
        if bad.size:
            raise TraceFormatError(path, line_of_row(path, rows_before + int(bad[0])), "throughput",
                                   "rate is not finite in bit/s", 2)
