"""Trace import hardening (issue 12, items 13–19): header-only files, validation before the rate
floor, BOMs, headers and truncated rows, file names in every error, memory of large imports
and shows, fitting on/off delivery traces, and plots."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from traces import TraceFormatError, read_trace, write_trace
from traces.fit import TraceFitError, fit_channel
from traces.importers import ImportOptions, detect_format, import_to_file, import_trace
from traces.ops import from_channel, summary, summary_file

REPO = Path(__file__).resolve().parent.parent
GNET_HEADER = "Timestamp,NetworkMode,SNR,CQI,RSRP,DL_bitrate,UL_bitrate\n"
GNET_ROWS = "2020.01.16_10.43.34,5G,9,14,-99,1200,50\n2020.01.16_10.43.35,5G,8,13,-98,1500,60\n"
MODEM_HEADER = "td,5G_TBS,5G_MCS,5G_CQI,5G_BLER,5G_RSRP,5G_RB\n"
MODEM_ROWS = "2021-11-02 19:13:00.000,5000,10,12,5,-90,20\n2021-11-02 19:13:00.020,5200,11,12,4,-91,20\n"
GENERIC = ImportOptions(columns={"t_ms": "sec", "rate_bps_up": "ul"}, scales={"rate_bps_up": 1e6})


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


def wisv(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wisv.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO)


# ---------------------------------------------------------------- 13: header-only files

@pytest.mark.parametrize("fmt,text,opts", [
    ("gnettrack", GNET_HEADER, None), ("modem", MODEM_HEADER, None),
    ("generic", "sec,ul\n", GENERIC), ("generic", ",".join(f"c{i}" for i in range(173)) + "\n",
                                       ImportOptions(columns={"t_ms": "c0", "rate_bps_up": "c1"})),
])
def test_header_only_file_is_a_clear_error(tmp_path, fmt, text, opts):
    p = write(tmp_path, "h.csv", text)
    with pytest.raises(TraceFormatError, match="no data rows") as e:
        import_trace(p, opts, fmt)
    assert e.value.path == str(p) and e.value.line == 2 and str(e.value).startswith(f"{p}:2:")


def test_header_only_file_detected_and_cli_exit_2(tmp_path):
    p = write(tmp_path, "h.csv", GNET_HEADER)
    r = wisv("trace", "import", str(p), "-o", str(tmp_path / "out.csv"))
    assert r.returncode == 2 and f"{p}:2: no data rows" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------- 14: validate before the floor

def test_mbit_looking_rates_fire_the_wrong_unit_check(tmp_path):
    p = write(tmp_path, "t.log", "0 5.0\n0.5 7.5\n1.0 2\n")
    with pytest.raises(TraceFormatError, match="wrong unit") as e:
        import_trace(p, ImportOptions(rate_unit="bps"))
    assert e.value.line == 2 and e.value.col_index == 2
    g = write(tmp_path, "g.csv", "sec,ul\n0,1.5\n1,2.5\n")
    with pytest.raises(TraceFormatError, match="wrong unit.*--scale") as e:
        import_trace(g, ImportOptions(columns={"t_ms": "sec", "rate_bps_up": "ul"}), fmt="generic")
    assert (e.value.line, e.value.column, e.value.col_index) == (3, "ul", 2)
    with pytest.raises(TraceFormatError, match="wrong unit"):  # the streamed import checks the same
        import_to_file(p, tmp_path / "never.parquet", ImportOptions(rate_unit="bps"))
    assert not (tmp_path / "never.parquet").exists() and sorted(x.name for x in tmp_path.iterdir()) == ["g.csv", "t.log"]


def test_negative_rates_are_refused_not_clamped(tmp_path):
    g = write(tmp_path, "g.csv", "sec,ul\n0,1.5\n1,-22997\n2,3\n")
    with pytest.raises(TraceFormatError, match="negative value -2.2997e\\+10") as e:
        import_trace(g, GENERIC, fmt="generic")
    assert (e.value.path, e.value.line, e.value.column, e.value.col_index) == (str(g), 3, "ul", 2)
    n = write(tmp_path, "n.csv", GNET_HEADER + GNET_ROWS.replace(",1500,", ",-1500,"))
    with pytest.raises(TraceFormatError, match="negative value -1500") as e:
        import_trace(n)
    assert (e.value.line, e.value.column, e.value.col_index) == (3, "DL_bitrate", 6)
    m = write(tmp_path, "m.csv", MODEM_HEADER + MODEM_ROWS.replace(",5200,", ",-5200,"))
    with pytest.raises(TraceFormatError, match="negative value") as e:
        import_trace(m)
    assert (e.value.line, e.value.column) == (3, "5G_TBS")


def test_rates_are_still_floored_after_validation(tmp_path):
    """Slow rates are raised to the smallest link rate; rate 0 (an outage) stays 0 unless the
    import floors outages too (then the metadata says so)."""
    p = write(tmp_path, "t.log", "0 5.0\n0.5 0.004\n1.0 0\n1.5 2\n")
    t = import_trace(p)
    assert list(t.data["rate_bps_down"]) == [5e6, 8000.0, 0.0, 2e6]
    assert (t.meta["outages"], t.meta["rows_at_rate_floor"], t.meta["outage_rows"]) == ("kept", 2, 2)
    f = import_trace(p, ImportOptions(floor_outages=True))
    assert list(f.data["rate_bps_down"]) == [5e6, 8000.0, 8000.0, 2e6]
    assert (f.meta["outages"], f.meta["rows_at_rate_floor"], f.meta["outage_rows"]) == ("floored", 4, 0)
    streamed = import_to_file(p, tmp_path / "s.parquet")  # the streamed import keeps them the same way
    assert list(read_trace(tmp_path / "s.parquet").data["rate_bps_down"]) == [5e6, 8000.0, 0.0, 2e6]
    assert (streamed["outages"], streamed["outage_rows"]) == ("kept", 2)


# ---------------------------------------------------------------- 15: BOM, headers, truncated rows

BOM = "\ufeff"


@pytest.mark.parametrize("name,text,fmt", [
    ("g.csv", GNET_HEADER + GNET_ROWS, "gnettrack"), ("m.csv", MODEM_HEADER + MODEM_ROWS, "modem"),
    ("x.down", "0\n10\n20\n250\n", "mahimahi"), ("t.log", "0 5\n1 6\n2 7\n", "two-column"),
])
def test_a_bom_does_not_defeat_detection_nor_drop_a_row(tmp_path, name, text, fmt):
    plain = import_trace(write(tmp_path, name, text))
    p = write(tmp_path, "bom-" + name, BOM + text)
    assert detect_format(p) == fmt
    with_bom = import_trace(p)
    assert with_bom.data.equals(plain.data)


def test_two_column_first_row_kept_with_bom(tmp_path):
    t = import_trace(write(tmp_path, "t.log", BOM + "0 5\n1 6\n2 7\n"))
    assert list(t.data["rate_bps_down"]) == [5e6, 6e6, 7e6]


def test_a_header_of_names_is_not_data(tmp_path):
    p = write(tmp_path, "ab.csv", "a,b\n1,2\n")
    with pytest.raises(TraceFormatError, match="unknown trace format") as e:
        detect_format(p)
    assert e.value.path == str(p)
    with pytest.raises(TraceFormatError, match="1 data row"):
        import_trace(p, fmt="two-column")
    q = write(tmp_path, "half.log", "5 abc\n1 2\n2 3\n")  # a half-numeric first line is not a header
    with pytest.raises(TraceFormatError, match="'abc' is not a number") as e:
        import_trace(q, fmt="two-column")
    assert (e.value.line, e.value.col_index) == (1, 2)


@pytest.mark.parametrize("header,rows,cut", [(GNET_HEADER, GNET_ROWS, "2020.01.16_10.43.36,5G,9\n"),
                                             (MODEM_HEADER, MODEM_ROWS, "2021-11-02 19:13:00.040,5100\n")])
def test_truncated_last_row_names_file_and_line(tmp_path, header, rows, cut):
    p = write(tmp_path, "c.csv", header + rows + cut)
    with pytest.raises(TraceFormatError, match="truncated") as e:
        import_trace(p)
    assert e.value.path == str(p) and e.value.line == 4


# ---------------------------------------------------------------- 16: every error names the file

@pytest.mark.parametrize("content", [b"", bytes(range(256)) * 4, b"\x89PNG\r\n\x1a\n\xff\xfe\xfa" * 50,
                                     "Timestamp,DL_bitrate\n\u00e9\n".encode("latin-1")])
def test_empty_or_binary_file_names_the_file(tmp_path, content):
    p = write(tmp_path, "junk.csv", content)
    for fmt in ("gnettrack", "modem", "mahimahi", "two-column", None):
        with pytest.raises(TraceFormatError) as e:
            import_trace(p, fmt=fmt)
        assert e.value.path == str(p) and str(e.value).startswith(str(p)) and "codec" not in str(e.value)


def test_cli_gnettrack_on_garbage_says_which_file(tmp_path):
    p = write(tmp_path, "junk.csv", bytes(range(256)) * 4)
    r = wisv("trace", "import", str(p), "--format", "gnettrack", "-o", str(tmp_path / "o.csv"))
    assert r.returncode == 2 and str(p) in r.stderr and "codec" not in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------- 17: memory of big imports and shows

MEMORY_PROBE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from traces.importers import ImportOptions, import_to_file
    from traces.ops import summary_file

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    what, src, out = sys.argv[2:5]
    warm = Path(out).with_name("warm" + Path(out).suffix)
    Path(warm.with_suffix(".log")).write_text("0 1\\n1 2\\n2 3\\n")
    import_to_file(warm.with_suffix(".log"), warm)  # load every library first
    summary_file(warm)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark
    base = status("VmRSS:")
    if what == "import":
        import_to_file(src, out)
    else:
        summary_file(src)
    print(json.dumps({"base": base, "peak": status("VmHWM:")}))
""")


def _peak_increase(tmp_path: Path, what: str, src: Path, out: Path) -> int:
    script = tmp_path / "probe.py"
    script.write_text(MEMORY_PROBE)
    r = subprocess.run([sys.executable, str(script), str(REPO), what, str(src), str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout.strip().splitlines()[-1])
    return m["peak"] - m["base"]


def _big_two_column(path: Path, rows: int) -> None:
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.uniform(0.001, 0.02, rows))
    np.savetxt(path, np.column_stack([t, rng.uniform(0, 80, rows)]), fmt=["%.4f", "%.3f"])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_import_and_show_peak_memory_grow_at_most_twice_the_file(tmp_path):
    """Peak RSS growth of a streamed import and of a Parquet show, measured at two file sizes
    (~4 and ~16 MB): each extra MB of input may cost at most 2 MB (the fixed cost of the
    libraries' buffers cancels out; benchmarks/trace_import_memory.py measures ~50 MB whole)."""
    grew, size, shown, psize = [], [], [], []
    for rows in (250_000, 1_000_000):
        src = tmp_path / f"big{rows}.log"
        _big_two_column(src, rows)
        out = tmp_path / f"big{rows}.parquet"
        grew.append(_peak_increase(tmp_path, "import", src, out))
        size.append(src.stat().st_size)
        assert len(read_trace(out)) == rows
        shown.append(_peak_increase(tmp_path, "show", out, out))
        psize.append(out.stat().st_size)
    assert (grew[1] - grew[0]) / (size[1] - size[0]) <= 2.0, (grew, size)
    assert (shown[1] - shown[0]) / (psize[1] - psize[0]) <= 2.0, (shown, psize)


def test_streamed_import_equals_the_in_memory_one(tmp_path):
    src = tmp_path / "s.log"
    _big_two_column(src, 5000)
    for opts in (ImportOptions(), ImportOptions(direction="up", other_direction="5e6")):
        mem = import_trace(src, opts)
        for ext in ("csv", "parquet"):
            meta = import_to_file(src, tmp_path / f"s.{ext}", opts)
            back = read_trace(tmp_path / f"s.{ext}")
            assert back.equals(Trace_roundtrip(mem, tmp_path / f"m.{ext}"))
            assert meta["rows"] == len(mem) and meta["duration_ms"] == pytest.approx(mem.duration_ms)
            assert same_summary(summary_file(tmp_path / f"s.{ext}"), summary(mem))


def flat(d: dict, prefix: str = "") -> dict:
    """A nested summary as {"a.b.c": value}; numbers as float, anything else as its repr."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = float(v) if isinstance(v, (int, float)) else repr(v)
    return out


def same_summary(a: dict, b: dict) -> bool:
    """Summaries equal up to float rounding (a streamed sum adds in another order)."""
    fa, fb = flat(a), flat(b)
    return fa.keys() == fb.keys() and all(
        fa[k] == pytest.approx(fb[k], rel=1e-12) if isinstance(fa[k], float) else fa[k] == fb[k] for k in fa)


def Trace_roundtrip(trace, path: Path):
    write_trace(trace, path)
    return read_trace(path)


def test_show_of_parquet_reads_columns_and_still_validates(tmp_path):
    t = from_channel(__import__("channel_models").ChannelSpec.from_dict({"duration_s": 2.0, "step_ms": 10.0}))
    p = write_trace(t, tmp_path / "t.parquet")
    assert same_summary(summary_file(p), summary(t))
    bad = t.data.copy()
    bad.loc[7, "loss_down"] = 3.0
    bad.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(TraceFormatError, match=r"row 8:\d+: column 'loss_down'"):
        summary_file(tmp_path / "bad.parquet")


# ---------------------------------------------------------------- 18: fit of on/off delivery traces

def test_fit_of_mahimahi_trace_keeps_the_mean_rate(shared_traces):
    t = import_trace(shared_traces / "mahimahi/Verizon-LTE-short.down", ImportOptions(step_ms=10.0))
    spec, report = fit_channel(t)
    assert report["resampled_from_ms"] == 10.0 and report["step_ms"] > 10.0
    want = summary(t)["down"]["rate_bps"]["mean"]
    import dataclasses

    ratios = [summary(from_channel(dataclasses.replace(spec, seed=s)))["down"]["rate_bps"]["mean"] / want
              for s in range(3)]
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.15), ratios


def test_fit_refuses_an_on_off_trace_with_a_reason(tmp_path):
    on = [ms for second in range(0, 60, 2) for ms in range(second * 1000, second * 1000 + 1000, 2)]
    p = write(tmp_path, "onoff.down", "\n".join(map(str, on + [60_000])) + "\n")
    t = import_trace(p)
    with pytest.raises(TraceFitError, match=r"delivers nothing in 5\d% of the time.*on/off"):
        fit_channel(t)
    out = write_trace(t, tmp_path / "onoff.csv")
    r = wisv("trace", "fit", str(out), "-o", str(tmp_path / "spec.json"))
    assert r.returncode == 2 and "on/off" in r.stderr and str(out) in r.stderr


# ---------------------------------------------------------------- 19: plots

def _lines(ax) -> list[str]:
    return [ln.get_label() for ln in ax.get_lines()]


def test_plot_uplink_only_trace_draws_the_uplink_once(tmp_path):
    from traces.plot import build_figure

    t = import_trace(write(tmp_path, "t.log", "0 5\n1 6\n2 7\n"), ImportOptions(direction="up"))
    assert t.meta["note"] == "down mirrored from up"
    fig = build_figure(t)
    assert _lines(fig.axes[0]) == ["up = down"]
    other = import_trace(write(tmp_path, "u.log", "0 5\n1 6\n2 7\n"),
                         ImportOptions(direction="up", other_direction="1e6"))
    assert _lines(build_figure(other).axes[0]) == ["down", "up"]  # the recorded line drawn last, on top


def test_plot_without_snr_says_so_and_wide_rates_use_a_log_axis(tmp_path):
    from traces.plot import build_figure

    t = import_trace(write(tmp_path, "t.log", "0 0.01\n1 500\n2 3\n"))  # 10 kbit/s .. 500 Mbit/s
    fig = build_figure(t)
    snr = fig.axes[3]
    assert _lines(snr) == [] and [x.get_text() for x in snr.texts] == ["no SNR in this trace"]
    assert fig.axes[0].get_yscale() == "log"
    narrow = import_trace(write(tmp_path, "n.log", "0 5\n1 20\n2 3\n"))
    assert build_figure(narrow).axes[0].get_yscale() == "linear"
    generated = from_channel(__import__("channel_models").ChannelSpec.from_dict({"duration_s": 1.0, "step_ms": 10.0}))
    assert len(build_figure(generated).axes[3].get_lines()) == 2
