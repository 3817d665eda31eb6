"""Property-based fuzzing of the trace readers and importers (hypothesis; tests and benchmarks).

The property: any input file — arbitrary bytes, a valid file of the format mutated, or rows
built from hostile field values — either imports to a trace that passes the trace rules, or
raises :class:`traces.TraceFormatError` naming that file; never another exception.

``TARGETS`` names each reader with its valid seed files; :func:`file_strategy` draws inputs
for one; :func:`run_case` runs one input and classifies the outcome (``ok``, ``clear_error``)
or raises :class:`FuzzCrash` with the reason.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from traces.format import Trace, TraceFormatError, _validate, read_trace
from traces.importers import ImportOptions, import_trace

GNET_HEADER = "Timestamp,Longitude,Latitude,Speed,NetworkMode,RSRP,RSRQ,SNR,CQI,DL_bitrate,UL_bitrate,State\n"
MODEM_HEADER = "td,5G_TBS,4G_TBS,5G_MCS,5G_RSRP,5G_RB,5G_BLER,5G_CQI\n"
GENERIC_OPTIONS = ImportOptions(columns={"t_ms": "sec", "rate_bps_up": "ul_mbps", "snr_db_up": "snr"},
                                scales={"rate_bps_up": 1e6})
CANONICAL_HEADER = "t_ms,rate_bps_up,delay_ms_up,loss_up,rate_bps_down,delay_ms_down,loss_down,snr_db_up"

SEEDS: dict[str, list[str]] = {
    "mahimahi": ["0\n1\n1\n5\n12\n20\n20\n33\n41\n57\n100\n", "3\n3\n3\n250\n260\n1200\n"],
    "gnettrack": [
        GNET_HEADER + "2020.01.16_10.43.34,-8.38,51.93,0,5G,-98,-10,3.0,12,222,53,D\n"
        "2020.01.16_10.43.34,-8.38,51.93,0,5G,-97,-10,4.0,12,240,50,D\n"
        "2020.01.16_10.43.35,-8.38,51.93,3,5G,-,-11,-,11,1800,60,D\n"
        "2020.01.16_10.43.37,-8.38,51.93,4,LTE,-99,-12,5.5,10,2600,70,I\n",
    ],
    "modem": [
        MODEM_HEADER + "2021-11-02 19:13:00.000,5166.4,2000,10.5,-90.2,20,5.0,12.5\n"
        "2021-11-02 19:13:00.020,18801.5,1800,20.1,-91.0,40,3.0,13\n"
        "2021-11-02 19:13:00.040,,1700,19.0,-91.5,38,,12\n"
        "2021-11-02 19:13:00.060,21859.5,1600,21.0,-92.0,44,10.0,14\n",
    ],
    "two-column": ["time throughput\n0 5.0\n0.5 7.5\n1.0 2\n", "# iperf\n0.0,12.5\n1.0,0\n2.0;3.25\n3.5 1e1\n"],
    "generic": ["sec,ul_mbps,snr\n0,1.5,10\n1,2.5,3\n2.5,0.5,-4\n"],
    "canonical-csv": [
        '# wisv-trace {"source": "fuzz", "step_ms": 10.0}\n' + CANONICAL_HEADER + "\n"
        "0,1e6,10,0,2e6,12,0.01,9.5\n10,1.5e6,10,0.1,2e6,12,0,8\n20,8000,60,1,0,0,0,-3\n",
    ],
}
# Field values an attacker or a broken logger might write.
TOKENS = ["", "-", "0", "-1", "-0", "1e308", "-1e308", "1e-320", "nan", "NaN", "inf", "-inf", "Infinity",
          "99999999999999999999", "0x10", "1_000", "١٢", " ", ",", ";", "\t", "\r", "\n", "\r\n", "#", '"',
          '"a,b"', "\ufeff", "\x00", "\u2028", "é", "2020.01.16_10.43.36", "2021-11-02 19:13:00.080",
          "9999.12.31_23.59.59", "1677-09-21 00:12:43.145", "t_ms", "DL_bitrate", "5G_TBS", "sec",
          "# wisv-trace {", '# wisv-trace {"version": 99}', '# wisv-trace {"step_ms": -1}', "1e5", "0.001"]


@dataclass(frozen=True)
class Target:
    """A reader under test: ``read(path)`` and the file name (suffix matters to Mahimahi)."""

    name: str
    file_name: str
    read: Callable[[Path], Trace]


TARGETS: dict[str, Target] = {
    "mahimahi": Target("mahimahi", "case.down", lambda p: import_trace(p, fmt="mahimahi")),
    "gnettrack": Target("gnettrack", "case.csv", lambda p: import_trace(p, fmt="gnettrack")),
    "modem": Target("modem", "case.csv", lambda p: import_trace(p, fmt="modem")),
    "two-column": Target("two-column", "case.log", lambda p: import_trace(p, fmt="two-column")),
    "generic": Target("generic", "case.csv", lambda p: import_trace(p, GENERIC_OPTIONS, fmt="generic")),
    "canonical-csv": Target("canonical-csv", "case.csv", read_trace),
    "detect": Target("detect", "case.txt", lambda p: import_trace(p)),
}


class FuzzCrash(AssertionError):
    """An input on which a reader broke the property (the message says how)."""


def run_case(target: Target, data: bytes, folder: Path) -> str:
    """Write ``data`` to a file in ``folder`` and read it with ``target``; returns ``ok`` (a
    valid trace) or ``clear_error`` (TraceFormatError naming the file); raises FuzzCrash for
    anything else."""
    path = folder / target.file_name
    path.write_bytes(data)
    try:
        trace = target.read(path)
    except TraceFormatError as e:
        if not str(e).startswith(str(path)) or e.path != str(path):
            raise FuzzCrash(f"{target.name}: error does not name the file: {e}") from e
        return "clear_error"
    except Exception as e:  # the property: nothing but TraceFormatError escapes
        raise FuzzCrash(f"{target.name}: {type(e).__name__}: {e}") from e
    _check_trace(target, trace, path)
    return "ok"


def _check_trace(target: Target, trace: Trace, path: Path) -> None:
    """An imported trace must satisfy every trace rule and have a usable step."""
    if not isinstance(trace, Trace) or len(trace) == 0:
        raise FuzzCrash(f"{target.name}: returned {type(trace).__name__} with no rows")
    try:
        _validate(path, trace.data, None, 1, "row")
    except TraceFormatError as e:
        raise FuzzCrash(f"{target.name}: imported an invalid trace: {e}") from e
    if not (np.isfinite(trace.step_ms) and trace.step_ms > 0 and np.isfinite(trace.duration_ms)):
        raise FuzzCrash(f"{target.name}: step {trace.step_ms!r} ms, duration {trace.duration_ms!r} ms")


# ----------------------------------------------------------------------------- strategies

def file_strategy(target_name: str):
    """Inputs for one target: arbitrary bytes, mutated seeds (of this format, or any format
    for ``detect``), and rows built from hostile field values."""
    from hypothesis import strategies as st

    seeds = [s for name, ss in SEEDS.items() for s in ss] if target_name == "detect" else SEEDS[target_name]
    raw = st.binary(max_size=400)
    mutated = st.builds(_apply, st.sampled_from(seeds), st.lists(_mutation(), min_size=1, max_size=4))
    shapes = list(SEEDS) if target_name == "detect" else [target_name]
    built = st.one_of(*[_rows(s) for s in shapes])
    valid = st.one_of(*[_valid_rows(s) for s in shapes])
    return st.one_of(raw, mutated, mutated, built, valid)


def _token():
    from hypothesis import strategies as st

    return st.one_of(st.sampled_from(TOKENS), st.text(max_size=6),
                     st.floats(allow_nan=True, allow_infinity=True).map(repr),
                     st.integers(min_value=-10**20, max_value=10**20).map(str))


def _mutation():
    from hypothesis import strategies as st

    pos = st.integers(min_value=0, max_value=10_000)
    return st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(min_value=0, max_value=255)),
        st.tuples(st.just("insert"), pos, _token().map(lambda s: s.encode("utf-8", "surrogatepass"))),
        st.tuples(st.just("insert_bytes"), pos, st.binary(min_size=1, max_size=8)),
        st.tuples(st.just("delete"), pos, st.integers(min_value=1, max_value=40)),
        st.tuples(st.just("truncate"), pos, st.just(0)),
        st.tuples(st.just("dup_line"), pos, st.integers(min_value=1, max_value=3)),
        st.tuples(st.just("swap_lines"), pos, pos),
        st.tuples(st.just("field"), pos, _token()),
        st.tuples(st.just("bom"), st.just(0), st.just(0)),
    )


def _apply(seed: str, mutations: list[tuple]) -> bytes:
    """A seed file with the mutations applied in turn (positions taken modulo the length)."""
    data = seed.encode("utf-8")
    for kind, a, b in mutations:
        n = max(1, len(data))
        if kind == "flip" and data:
            i = a % len(data)
            data = data[:i] + bytes([b]) + data[i + 1:]
        elif kind in ("insert", "insert_bytes"):
            i = a % (len(data) + 1)
            data = data[:i] + b + data[i:]
        elif kind == "delete":
            i = a % n
            data = data[:i] + data[i + b:]
        elif kind == "truncate":
            data = data[: a % n]
        elif kind == "bom":
            data = b"\xef\xbb\xbf" + data
        else:
            lines = data.split(b"\n")
            i = a % len(lines)
            if kind == "dup_line":
                lines[i:i] = [lines[i]] * b
            elif kind == "swap_lines":
                j = b % len(lines)
                lines[i], lines[j] = lines[j], lines[i]
            elif kind == "field":
                fields = lines[i].split(b",")
                fields[(a // 7) % len(fields)] = b.encode("utf-8", "surrogatepass")
                lines[i] = b",".join(fields)
            data = b"\n".join(lines)
    return data


def _rows(target_name: str):
    """Files of the target's shape whose fields are drawn from hostile values."""
    from hypothesis import strategies as st

    number = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                       st.integers(min_value=-10**6, max_value=10**16).map(str), st.sampled_from(TOKENS))
    if target_name == "mahimahi":
        return st.lists(st.integers(min_value=-5, max_value=10**13).map(str) | st.sampled_from(TOKENS),
                        min_size=0, max_size=40).map(lambda xs: "\n".join(xs).encode("utf-8", "surrogatepass"))
    if target_name == "two-column":
        sep = st.sampled_from([" ", ",", ";", "\t", "  ", ", ", " , "])
        row = st.tuples(number, sep, number).map("".join)
        return st.lists(row, min_size=0, max_size=30).map(lambda xs: "\n".join(xs).encode("utf-8", "surrogatepass"))
    header = {"gnettrack": GNET_HEADER, "modem": MODEM_HEADER, "generic": "sec,ul_mbps,snr\n",
              "canonical-csv": CANONICAL_HEADER + "\n"}[target_name]
    width = header.count(",") + 1
    row = st.lists(number, min_size=width, max_size=width)
    if target_name in ("gnettrack", "modem"):  # keep a parseable, increasing time column mostly
        fmt = "2020.01.16_10.43.{:02d}" if target_name == "gnettrack" else "2021-11-02 19:13:{:02d}.000"
        stamp = st.integers(min_value=0, max_value=59).map(fmt.format) | st.sampled_from(TOKENS)
        row = st.tuples(stamp, st.lists(number, min_size=width - 1, max_size=width - 1)).map(
            lambda r: [r[0], *r[1]])
    return st.lists(row.map(",".join), min_size=0, max_size=12).map(
        lambda rows: (header + "\n".join(rows)).encode("utf-8", "surrogatepass"))


def _valid_rows(target_name: str):
    """Well-formed files of the target's format with drawn values (increasing time, rates
    ≥ 0), so that the accepting paths and the traces they build are exercised too."""
    from hypothesis import strategies as st

    steps = st.lists(st.integers(min_value=1, max_value=5000), min_size=2, max_size=40)
    value = st.floats(min_value=0, max_value=1e4, allow_nan=False)
    if target_name == "mahimahi":
        return st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=60).map(
            lambda g: "\n".join(map(str, np.cumsum(g))).encode())
    if target_name == "two-column":
        return st.tuples(steps, st.lists(value, min_size=40, max_size=40), st.sampled_from([" ", ",", ";\t"])).map(
            lambda a: "".join(f"{t / 1000:.3f}{a[2]}{v:.6g}\n" for t, v in zip(np.cumsum(a[0]), a[1])).encode())
    if target_name == "gnettrack":
        def gnet(a) -> bytes:
            rows = [f"2020.01.16_10.{(s // 60) % 60:02d}.{s % 60:02d},-8.3,51.9,0,5G,{-90 - v % 20:.0f},-10,"
                    f"{v % 30 - 5:.1f},{int(v) % 16},{v:.1f},{v / 10:.1f},D"
                    for s, v in zip(np.cumsum([x // 1000 for x in a[0]]), a[1])]
            return (GNET_HEADER + "\n".join(rows) + "\n").encode()
        return st.tuples(steps, st.lists(value, min_size=40, max_size=40)).map(gnet)
    if target_name == "modem":
        def modem(a) -> bytes:
            rows = [f"2021-11-02 19:{(ms // 60000) % 60:02d}:{(ms // 1000) % 60:02d}.{ms % 1000:03d},{v:.1f},0,10,-90,"
                    f"20,{v % 100:.1f},{int(v) % 16}" for ms, v in zip(np.cumsum(a[0]) % 3_600_000, a[1])]
            return (MODEM_HEADER + "\n".join(rows) + "\n").encode()
        return st.tuples(st.lists(st.integers(min_value=1, max_value=40), min_size=2, max_size=40),
                         st.lists(value, min_size=40, max_size=40)).map(modem)
    if target_name == "generic":
        return st.tuples(steps, st.lists(value, min_size=40, max_size=40)).map(
            lambda a: ("sec,ul_mbps,snr\n" + "".join(f"{t / 1000},{v},{v % 40 - 10}\n"
                                                      for t, v in zip(np.cumsum(a[0]), a[1]))).encode())
    return st.tuples(steps, st.lists(value, min_size=40, max_size=40)).map(  # canonical CSV
        lambda a: (CANONICAL_HEADER + "\n" + "".join(
            f"{t},{v * 1e3},{v % 100},{(v % 10) / 10},{v * 2e3},5,0,{v % 30}\n"
            for t, v in zip(np.cumsum(a[0]) - a[0][0], a[1]))).encode())


def case_folder(root: Path, target_name: str) -> Path:
    """A fresh folder per target under ``root`` (so Mahimahi's .up/.down pairing sees no strays)."""
    folder = root / target_name
    os.makedirs(folder, exist_ok=True)
    return folder
