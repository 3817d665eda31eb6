"""Trace format, operations, importers (on the public traces in ../shared) and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from channel_models import ChannelSpec
from channel_models.generator import PRESETS
from traces import Trace, TraceFormatError, read_trace, write_trace
from traces.fit import fit_channel
from traces.importers import ImportOptions, detect_format, import_trace
from traces.ops import from_channel, loop_trace, resample, slice_trace, summary, time_scale

GOOD_HEADER = "t_ms,rate_bps_up,delay_ms_up,loss_up,rate_bps_down,delay_ms_down,loss_down"


def small_trace(seed: int = 0, duration_s: float = 3.0) -> Trace:
    return from_channel(ChannelSpec.from_dict({"duration_s": duration_s, "step_ms": 10.0, "seed": seed,
                                               **PRESETS["pedestrian"]}))


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_round_trip_is_identical(tmp_path, ext):
    t = small_trace()
    p = write_trace(t, tmp_path / f"t.{ext}")
    back = read_trace(p)
    assert back.equals(t)
    pd.testing.assert_frame_equal(back.data, t.data, check_exact=True)
    assert back.meta == t.meta and back.meta["seed"] == 0 and back.meta["mapping"]["up"]["name"] == "cqi1"


def write_csv(tmp_path: Path, body: str, header: str = GOOD_HEADER) -> Path:
    p = tmp_path / "bad.csv"
    p.write_text(header + "\n" + body)
    return p


@pytest.mark.parametrize("body,line,column,message", [
    ("0,1e6,10,0,1e6,10,0\n10,1e6,10,0,1e6,10,0\n10,1e6,10,0,1e6,10,0\n", 4, "t_ms", "not increasing"),
    ("0,1e6,10,0,1e6,10,0\n10,nan,10,0,1e6,10,0\n", 3, "rate_bps_up", "not finite"),
    ("0,1e6,10,0,1e6,10,0\n10,1e6,10,0,1e6,,0\n", 3, "delay_ms_down", "missing value"),
    ("0,1e6,10,0,-5,10,0\n", 2, "rate_bps_down", "negative"),
    ("0,1e6,10,0,1e6,10,0\n10,1e6,10,abc,1e6,10,0\n", 3, "loss_up", "not a number"),
    ("0,1e6,10,0,1e6,10,5\n", 2, "loss_down", "percentage"),
    ("0,20,10,0,1e6,10,0\n10,30,10,0,1e6,10,0\n", 3, "rate_bps_up", "wrong unit"),
    ("0,1e6,10,0,1e6,90000,0\n", 2, "delay_ms_down", "wrong unit"),
])
def test_malformed_trace_names_file_line_column(tmp_path, body, line, column, message):
    p = write_csv(tmp_path, body)
    with pytest.raises(TraceFormatError, match=message) as e:
        read_trace(p)
    assert e.value.path == str(p) and e.value.line == line and e.value.column == column
    assert f"{p}:{line}:" in str(e.value)


def test_unknown_and_missing_columns(tmp_path):
    p = write_csv(tmp_path, "0,1e6,10,0,1e6,10,0,3\n", GOOD_HEADER + ",rate_mbps_up")
    with pytest.raises(TraceFormatError, match="did you mean 'rate_bps_up'") as e:
        read_trace(p)
    assert e.value.line == 1 and e.value.column == "rate_mbps_up" and e.value.col_index == 8
    p = write_csv(tmp_path, "0,1e6,10,0,1e6,10\n", GOOD_HEADER.rsplit(",", 1)[0])
    with pytest.raises(TraceFormatError, match="required column is missing"):
        read_trace(p)


def test_metadata_line_and_parquet_row_errors(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("# wisv-trace {not json\n" + GOOD_HEADER + "\n0,1e6,10,0,1e6,10,0\n")
    with pytest.raises(TraceFormatError, match="bad metadata JSON") as e:
        read_trace(p)
    assert e.value.line == 1
    df = small_trace().data.copy()
    df.loc[5, "loss_up"] = 2.0
    q = tmp_path / "bad.parquet"
    df.to_parquet(q)
    with pytest.raises(TraceFormatError, match=r"row 6.*loss_up"):
        read_trace(q)


def test_failed_write_leaves_nothing_half_written(tmp_path):
    good = small_trace()
    target = write_trace(good, tmp_path / "t.csv")
    before = target.read_bytes()
    bad = Trace(good.data.assign(loss_up=1.5), good.meta)
    with pytest.raises(TraceFormatError):
        write_trace(bad, target)
    assert target.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["t.csv"]


def _weighted_mean(t: Trace, col: str) -> float:
    edges = np.append(t.data["t_ms"].to_numpy(), t.data["t_ms"].iloc[-1] + t.last_hold_ms)
    return float(np.average(t.data[col], weights=np.diff(edges)))


def test_resample_keeps_time_weighted_mean():
    t = small_trace(duration_s=5.0)
    for step in (100.0, 5.0, 30.0):
        r = resample(t, step)
        assert r.step_ms == step and r.duration_ms == pytest.approx(t.duration_ms)
        for col in ("rate_bps_up", "delay_ms_down", "loss_up", "snr_db_down"):
            assert _weighted_mean(r, col) == pytest.approx(_weighted_mean(t, col), rel=1e-9)
    up = resample(t, 5.0)
    assert np.allclose(up.data["rate_bps_up"].to_numpy()[::2], t.data["rate_bps_up"].to_numpy(), rtol=1e-9)


def test_slice_loop_time_scale():
    t = small_trace(duration_s=2.0)
    s = slice_trace(t, 505.0, 1500.0)
    assert s.duration_ms == pytest.approx(995.0) and s.data["t_ms"].iloc[0] == 0.0
    assert s.data["rate_bps_up"].iloc[0] == t.data["rate_bps_up"].iloc[50]
    looped = loop_trace(s, 2500.0)
    assert looped.duration_ms == pytest.approx(2500.0)
    k = looped.row_at(995.0 + 10.0)  # second copy, second row
    assert looped.data["rate_bps_up"].iloc[k] == s.data["rate_bps_up"].iloc[1]
    scaled = time_scale(t, 2.0)
    assert scaled.duration_ms == pytest.approx(2 * t.duration_ms) and scaled.step_ms == 20.0
    with pytest.raises(ValueError):
        slice_trace(t, 3000.0)


def test_fit_recovers_generating_parameters():
    spec = ChannelSpec.from_dict({"duration_s": 120.0, "step_ms": 5.0, "seed": 3,
                                  "fading": {"kind": "rayleigh", "doppler_hz": 10.0},
                                  "shadowing": {"kind": "gauss_markov", "sigma_db": 3.0, "speed_m_s": 1.0,
                                                "decorrelation_m": 5.0}})
    t = from_channel(spec)
    fitted, report = fit_channel(t)
    assert fitted.fading.kind == "rayleigh"
    assert fitted.fading.doppler_hz == pytest.approx(10.0, rel=0.25)
    assert fitted.up.mean_snr_db == pytest.approx(10.0, abs=1.5)
    assert fitted.down.mean_snr_db - fitted.up.mean_snr_db == pytest.approx(5.0, abs=1.0)
    regen = from_channel(fitted)
    assert summary(regen)["down"]["rate_bps"]["mean"] == pytest.approx(summary(t)["down"]["rate_bps"]["mean"], rel=0.15)


# ---------------------------------------------------------------- importers on public traces

def test_detect_formats(shared_traces):
    assert detect_format(shared_traces / "mahimahi/Verizon-LTE-short.down") == "mahimahi"
    assert detect_format(shared_traces / "5g-production/driving_download.csv") == "gnettrack"
    assert detect_format(shared_traces / "modem-20ms/downtown_uplink.csv") == "modem"


def test_import_mahimahi_pair(shared_traces):
    t = import_trace(shared_traces / "mahimahi/Verizon-LTE-short.up")
    assert t.meta["files"] == {"up": "Verizon-LTE-short.up", "down": "Verizon-LTE-short.down"}
    # Opportunity count x 1500 B x 8 over the period is the mean rate.
    n = sum(1 for line in open(shared_traces / "mahimahi/Verizon-LTE-short.down") if line.strip())
    last = int(open(shared_traces / "mahimahi/Verizon-LTE-short.down").read().split()[-1])
    assert summary(t)["down"]["rate_bps"]["mean"] == pytest.approx(n * 12000 / (last / 1000), rel=1e-3)
    assert t.duration_ms == pytest.approx(140_000)


@pytest.mark.parametrize("rate_from", ["throughput", "csi"])
def test_import_gnettrack(shared_traces, rate_from):
    p = shared_traces / "5g-production/driving_download.csv"
    t = import_trace(p, ImportOptions(rate_from=rate_from))
    raw = pd.read_csv(p, dtype=str)
    assert len(t) == raw["Timestamp"].nunique() and t.meta["duplicate_timestamps_merged"] > 0
    assert t.meta["rate_from"] == rate_from and "snr_db_down" in t.data
    if rate_from == "csi":
        assert t.meta["mapping"]["name"] == "cqi1"
    else:  # DL_bitrate read as kbit/s
        first = raw.groupby("Timestamp", sort=False)["DL_bitrate"].first()
        assert t.data["rate_bps_down"].max() == pytest.approx(
            pd.to_numeric(raw["DL_bitrate"], errors="coerce").groupby(raw["Timestamp"]).mean().max() * 1e3)
        assert len(first) == len(t)


def test_import_modem_log(shared_traces):
    t = import_trace(shared_traces / "modem-20ms/downtown_uplink.csv")
    assert t.step_ms == pytest.approx(20.0) and t.meta["recorded_direction"] == "up"
    assert 0 < summary(t)["up"]["loss"]["mean"] < 0.05
    assert t.meta["note"] == "down mirrored from up"
    c = import_trace(shared_traces / "modem-20ms/downtown_uplink.csv",
                     ImportOptions(rate_from="csi", other_direction="50e6"))
    assert np.all(c.data["rate_bps_down"] == 50e6)


def test_import_two_column_and_generic(tmp_path):
    p = tmp_path / "tput.log"
    p.write_text("time throughput\n0 5.0\n0.5 7.5\n1.0 2\n")
    assert detect_format(p) == "two-column"
    t = import_trace(p)
    assert list(t.data["rate_bps_up"]) == [5e6, 7.5e6, 2e6] and list(t.data["t_ms"]) == [0, 500, 1000]
    g = tmp_path / "g.csv"
    g.write_text("sec,ul_mbps,snr\n0,1.5,10\n1,2.5,3\n")
    t = import_trace(g, ImportOptions(columns={"t_ms": "sec", "rate_bps_up": "ul_mbps", "snr_db_up": "snr"},
                                      scales={"rate_bps_up": 1e6}), fmt="generic")
    assert list(t.data["rate_bps_up"]) == [1.5e6, 2.5e6] and list(t.data["t_ms"]) == [0, 1000]
    assert list(t.data["rate_bps_down"]) == [1.5e6, 2.5e6]


def test_importer_errors_name_line_and_column(tmp_path):
    m = tmp_path / "x.down"
    m.write_text("0\n1\n2x\n")
    with pytest.raises(TraceFormatError) as e:
        import_trace(m, fmt="mahimahi")
    assert e.value.line == 3
    m.write_text("0\n5\n3\n")
    with pytest.raises(TraceFormatError, match="decrease") as e:
        import_trace(m, fmt="mahimahi")
    assert e.value.line == 3
    g = tmp_path / "g.csv"
    g.write_text("Timestamp,NetworkMode,SNR,CQI,RSRP,DL_bitrate,UL_bitrate\n"
                 "2020.01.16_10.43.34,5G,9,14,-99,0,0\n2020.01.16_10.43.35,5G,oops,12,-99,0,0\n")
    with pytest.raises(TraceFormatError, match="oops") as e:
        import_trace(g)
    assert (e.value.line, e.value.column, e.value.col_index) == (3, "SNR", 3)
    g.write_text("Timestamp,NetworkMode,SNR,CQI,RSRP,DL_bitrate,UL_bitrate\n16/01/2020 10:43,5G,9,14,-99,0,0\n")
    with pytest.raises(TraceFormatError, match="YYYY.MM.DD"):
        import_trace(g)


# ---------------------------------------------------------------- CLI

def wisv(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wisv.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_import_every_shared_trace_and_show_json(shared_traces, tmp_path):
    files = sorted(p for p in shared_traces.rglob("*")
                   if p.is_file() and p.suffix in (".csv", ".up", ".down"))
    assert len(files) == 5
    for i, f in enumerate(files):
        out = tmp_path / f"t{i}.parquet"
        r = wisv("trace", "import", str(f), "-o", str(out))
        assert r.returncode == 0, r.stderr
        s = wisv("trace", "show", str(out), "--json")
        assert s.returncode == 0, s.stderr
        summ = json.loads(s.stdout.strip().splitlines()[-1])
        assert summ["duration_s"] > 60 and summ["step_ms"] > 0
        for d in ("up", "down"):
            assert set(summ[d]) == {"rate_bps", "delay_ms", "loss", "snr_db"}
            assert summ[d]["rate_bps"]["p5"] <= summ[d]["rate_bps"]["mean"] <= summ[d]["rate_bps"]["p95"] * 1.5


def test_cli_generate_show_plot_and_errors(tmp_path):
    out = tmp_path / "g.csv"
    r = wisv("trace", "generate", "--preset", "vehicular", "--duration-s", "2", "--step-ms", "1", "--seed", "4",
             "-o", str(out))
    assert r.returncode == 0, r.stderr
    t = read_trace(out)
    assert len(t) == 2000 and t.meta["seed"] == 4 and t.meta["preset"] == "vehicular"
    png = tmp_path / "g.png"
    r = wisv("trace", "show", str(out), "--plot", str(png))
    assert r.returncode == 0 and png.stat().st_size > 10_000
    bad = write_csv(tmp_path, "0,1e6,10,0,1e6,10,0\n0,1e6,10,0,1e6,10,0\n")
    r = wisv("trace", "show", str(bad))
    assert r.returncode == 2 and f"{bad}:3:1: column 't_ms'" in r.stderr
    r = wisv("trace", "import", str(bad), "-o", str(tmp_path / "never.csv"))
    assert r.returncode == 2 and not (tmp_path / "never.csv").exists()
