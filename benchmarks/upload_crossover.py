"""Benchmark: where full hidden upload (wisv-full) and mismatch-first (wisv-selective) pay, and
whether wisv-adaptive's per-round choice is at least as good as the better of the two.

wisv-full uploads the drafter's hidden row of every draft token with each draft; wisv-selective
uploads none up front and, on a mismatch, the edge asks for the mismatched rows (a second round
trip). Selective saves bytes every round and pays one more exchange on a mismatch, so it pays
when bytes are dear (a slow or lossy uplink, wide rows) and full pays when round trips are dear.

A simulated sweep (``wisv run --simulate``: deterministic, compute charged from the paper's
hardware profiles, Jetson AGX Orin / Llama-3.2-1B and A40 / Llama-3.1-8B) over

* link quality: a pedestrian fading channel at mean uplink SNR −5 … 25 dB (downlink 5 dB
  better), and constant links at fixed uplink rates (Mbit/s) and RTTs, no loss;
* hidden row on the wire: wire dtypes f16, f32, i8 (bf16 has f16's bytes; ``--dtypes`` adds
  it), and the payload width — the drafter's own (64 for the
  shipped pair) and 2048 (Llama-3.2-1B's), emulated with ``hidden_wire_width`` (rows zero-padded
  on the wire, dropped at the edge before the head: the link costs of a 2048-wide drafter, the
  decisions of the shipped head);
* γ = 4 (``--gammas 4,8`` adds γ = 8);

protocols wisv-full, wisv-selective, wisv-adaptive on the same problems and channel per setting,
and vanilla once per link setting for reference. Per setting: mean latency of each protocol, the
paired selective/full latency ratio with its 95 % BCa bootstrap interval
(:func:`runs.report.paired_change`), the ratio the link-cost model predicts
(:func:`predicted_ratio`: :func:`nodes.protocols.adaptive.upload_costs_ms` on every round's CSI, with the
mismatch rate and rows per mismatch measured), and adaptive against the better of the two
(paired). :func:`crossover` finds per dtype/width/γ the SNR or rate where the ratio crosses 1,
measured and predicted. Figure: ``docs/img/upload_crossover.png``.

Usage: nice -n 10 python benchmarks/upload_crossover.py [--problems 8] [--repetitions 2]
           [--rate-repetitions 1] [--dtypes f16,f32,i8] [--gammas 4] [--out runs/out/upload-crossover]
           [--jobs 2] [--resume]
Last line: one JSON object (crossovers, adaptive verdict, settings, wall time).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from channel_models.csi import CSI, transfer_ms  # noqa: E402
from nodes.protocols.adaptive import UPLOAD_HEADER_BYTES, upload_costs_ms  # noqa: E402
from nodes.wire import array_nbytes  # noqa: E402
from runs.report import paired_change  # noqa: E402

log = logging.getLogger("upload_crossover")
REPO = Path(__file__).resolve().parent.parent
FIGURE = REPO / "docs" / "img" / "upload_crossover.png"
UPLOADS = ("wisv-full", "wisv-selective", "wisv-adaptive")
PAPER_WIDTH = 2048  # Llama-3.2-1B's hidden size
SNRS_DB = [-5, 0, 5, 10, 15, 25]  # uplink mean SNR; downlink 5 dB better (examples/snr_sweep.yaml)
RATES_MBPS = [1, 3, 10, 30, 100]  # constant uplink rates
RTTS_MS = [20, 60]  # constant links: RTT (one-way delay RTT/2 each way)
DOWN_MBPS = 50.0  # constant links: downlink rate
SNR_COL, RATE_COL, RTT_COL = "trace.generate.up.mean_snr_db", "uplink_rate_mbps", "rtt_ms"
GROUP = ("hidden_dtype", "hidden_wire_width", "gamma", RTT_COL)


# ----------------------------------------------------------------------------- the sweep

def constant_trace(path: Path, rate_up_mbps: float, rtt_ms: float, duration_s: float = 60.0) -> Path:
    """Write a constant link (uplink ``rate_up_mbps``, downlink DOWN_MBPS, one-way delay
    ``rtt_ms``/2 each way, no loss) as a canonical trace file; returns its path."""
    from traces.format import Trace, canonical_frame, write_trace

    n = int(duration_s * 10)
    cols = {"t_ms": np.arange(n) * 100.0, "rate_bps_up": np.full(n, rate_up_mbps * 1e6),
            "rate_bps_down": np.full(n, DOWN_MBPS * 1e6), "delay_ms_up": np.full(n, rtt_ms / 2),
            "delay_ms_down": np.full(n, rtt_ms / 2), "loss_up": np.zeros(n), "loss_down": np.zeros(n)}
    meta = {"source": f"constant uplink {rate_up_mbps:g} Mbit/s, downlink {DOWN_MBPS:g} Mbit/s, RTT {rtt_ms:g} ms",
            "step_ms": 100.0}
    return write_trace(Trace(canonical_frame(cols), meta), path)


def base_spec(name: str, problems: int, repetitions: int, gammas: list[int], protocols: list[str]) -> dict:
    """The spec keys every experiment of the sweep shares (the paper's compute profiles)."""
    grid: dict[str, list] = {"gamma": gammas} if len(gammas) > 1 else {}
    return {"name": name, "protocols": protocols, "gamma": gammas[0], "repetitions": repetitions, "seed": 0,
            "task": {"split": "test", "problems": problems},
            "compute": {"device": "jetson-agx-orin/llama-3.2-1b", "edge": "a40/llama-3.1-8b"},
            "sweep": {"grid": grid, "zip": {}}}


def payload_grid(own_width: int, dtypes: list[str], axis: str) -> list[tuple[str, int]]:
    """(wire dtype, width) pairs of one link axis: f16 at the drafter's own width (its rows are
    ≤ 4·own bytes, so the dtype hardly moves their cost) and each of ``dtypes`` at PAPER_WIDTH;
    on constant links bf16 is left out when f16 is in (same bytes, no loss: the same link cost)."""
    wide = [d for d in dtypes if not (axis == "rate" and d == "bf16" and "f16" in dtypes)]
    return [("f16", own_width)] + [(d, PAPER_WIDTH) for d in wide]


def sweep_specs(out: Path, own_width: int, dtypes: list[str], gammas: list[int], problems: int, repetitions: int,
                snrs: list[float], rates: list[float], rtts: list[float],
                rate_repetitions: int | None = None) -> dict[str, dict]:
    """The experiments of the sweep by name: per payload (dtype, width), an SNR sweep and a
    rate × RTT sweep of the three upload protocols; vanilla once per link setting. Constant
    links draw no losses, so their paired intervals are narrow with fewer repetitions
    (``rate_repetitions``, default ``repetitions``)."""
    reps = {"snr": repetitions, "rate": rate_repetitions or repetitions}
    out.mkdir(parents=True, exist_ok=True)  # trace files beside the specs, named bare: a run's name holds the file's
    files = [constant_trace(out / f"up{r:g}mbps-rtt{t:g}ms.csv", r, t).name for t in rtts for r in rates]
    snr_trace = {"generate": {"preset": "pedestrian", "duration_s": 60, "step_ms": 10, "seed": 11}}
    snr_zip = {SNR_COL: list(snrs), "trace.generate.down.mean_snr_db": [s + 5 for s in snrs]}
    specs: dict[str, dict] = {}
    for axis, trace, zipped in (("snr", snr_trace, snr_zip), ("rate", None, {"trace.file": files})):
        for dtype, width in payload_grid(own_width, dtypes, axis):
            name = f"{axis}-{dtype}-w{width}"
            s = base_spec(name, problems, reps[axis], gammas, list(UPLOADS))
            s.update({"hidden_dtype": dtype, "hidden_wire_width": width})
            if trace:
                s["trace"] = trace
            s["sweep"]["zip"] = zipped
            specs[name] = s
    for axis, trace, zipped in (("snr", snr_trace, snr_zip), ("rate", None, {"trace.file": files})):
        s = base_spec(f"{axis}-vanilla", problems, reps[axis], gammas, ["vanilla"])
        if trace:
            s["trace"] = trace
        s["sweep"]["zip"] = zipped
        specs[f"{axis}-vanilla"] = s
    return specs


def snapshot_pair(out: Path) -> dict:
    """Copy the shipped pair and heads into ``out/pair`` (the sweep reads them there, so a pair
    retrained meanwhile cannot change or break a running sweep); returns (and writes to
    ``out/pair.json``) the sha1 (12 hex) of each copied weights file."""
    import hashlib
    import shutil

    from nodes.protocols import DEFAULT_HEAD_DIR

    dst = out / "pair"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(DEFAULT_HEAD_DIR, dst)
    sums = {str(f.relative_to(dst)): hashlib.sha1(f.read_bytes()).hexdigest()[:12]
            for f in sorted(dst.rglob("*.safetensors"))}
    (out / "pair.json").write_text(json.dumps(sums, indent=1) + "\n")
    return sums


def run_specs(specs: dict[str, dict], out: Path, jobs: int | None, resume: bool) -> float:
    """Run every experiment simulated into ``out/<name>`` (spec written beside it as
    ``<name>.yaml``); returns the wall time in s."""
    import shutil

    import yaml

    from runs.experiment import run_experiment
    from runs.spec import load_spec

    t0 = time.perf_counter()
    for name, spec in specs.items():
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        d = out / name
        if d.exists() and not resume:
            shutil.rmtree(d)
        log.info("running %s", name)
        run_experiment(load_spec(path), d, mode="simulate", progress=False, resume=resume, jobs=jobs)
    return time.perf_counter() - t0


def load_tables(out: Path, names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rounds, requests) of the named experiments, with ``experiment``, the link columns
    (``uplink_rate_mbps``, ``rtt_ms`` for constant links) and the payload columns filled in."""
    rounds, requests = [], []
    for name in names:
        d = out / name
        spec = json.loads(next(d.glob("*/rep0/spec.json")).read_text())
        extra = {"experiment": name, "hidden_dtype": spec["hidden_dtype"],
                 "hidden_wire_width": spec["hidden_wire_width"] or -1, "gamma_spec": spec["gamma"]}
        for table, acc in (("rounds", rounds), ("requests", requests)):
            df = pd.read_parquet(d / f"{table}.parquet")
            acc.append(df.assign(**{k: df[k] if k in df else v for k, v in extra.items()}))
    rd, rq = pd.concat(rounds, ignore_index=True), pd.concat(requests, ignore_index=True)
    for df in (rd, rq):
        if "trace.file" in df:
            link = df["trace.file"].fillna("").map(_constant_link)
            df[RATE_COL] = link.map(lambda v: v[0])
            df[RTT_COL] = link.map(lambda v: v[1])
    return rd, rq


def _constant_link(path: str) -> tuple[float, float]:
    """(uplink Mbit/s, RTT ms) of a constant trace this benchmark wrote (nan, nan otherwise)."""
    import re

    m = re.search(r"up([0-9.]+)mbps-rtt([0-9.]+)ms", Path(path).name)
    return (float(m.group(1)), float(m.group(2))) if m else (math.nan, math.nan)


# ----------------------------------------------------------------------------- per setting

def _mean_or(values: pd.Series, default: float) -> float:
    return float(values.mean()) if len(values) else default


def predicted_ratio(full_rounds: pd.DataFrame, sel_rounds: pd.DataFrame, full_latency_ms: float,
                    n_requests: int) -> dict:
    """The selective/full latency ratio the link-cost model predicts for one setting: every
    round of the full run, at the CSI it reported, saves what :func:`nodes.protocols.adaptive.upload_costs_ms`
    says full costs more than mismatch-first; the mismatch rate (rounds of the selective run that
    asked for rows), rows per such round and the draft's own bytes are measured from the
    selective run's byte counts. Returns the ratio and the measured mismatch statistics."""
    asked = sel_rounds["round_trips"] >= 2
    p = float(asked.mean()) if len(sel_rounds) else 0.0
    draft_bytes = _mean_or(sel_rounds.loc[~asked, "up_bytes"], float(sel_rounds["up_bytes"].min()))
    upload_bytes = _mean_or(sel_rounds.loc[asked, "up_bytes"], draft_bytes) - draft_bytes  # hidden_upload message
    verdict_bytes = _mean_or(sel_rounds.loc[~asked, "down_bytes"], float(sel_rounds["down_bytes"].min()))
    request_bytes = _mean_or(sel_rounds.loc[asked, "down_bytes"], verdict_bytes) - verdict_bytes  # hidden_request
    width = int(full_rounds["hidden_wire_width"].iloc[0])
    dtype = str(full_rounds["hidden_dtype"].iloc[0])
    row = array_nbytes((1, width), dtype) if width > 0 else 0
    rows = max(0.0, (upload_bytes - UPLOAD_HEADER_BYTES) / row) if row else 0.0
    saved = 0.0
    for r in full_rounds.itertuples(index=False):
        csi = CSI(r.csi_rate_up_mbps, r.csi_rate_down_mbps, r.csi_delay_up_ms, r.csi_delay_down_ms,
                  r.csi_loss_up, r.csi_loss_down, r.csi_snr_db)
        full_ms, sel_ms = upload_costs_ms(csi, int(r.drafted), row, p, rows, draft_bytes=draft_bytes,
                                          request_bytes=request_bytes)
        saved += full_ms - sel_ms
    per_request = saved / max(n_requests, 1)
    return {"predicted_ratio": (full_latency_ms - per_request) / full_latency_ms if full_latency_ms else math.nan,
            "p_mismatch": p, "rows_per_mismatch": rows, "row_bytes": row, "draft_bytes": draft_bytes}



def summary_rows(rounds: pd.DataFrame, requests: pd.DataFrame, x: str, axis: str,
                 group: tuple[str, ...] = GROUP, vanilla: pd.DataFrame | None = None) -> list[dict]:
    """One row per setting (``x`` value × ``group`` columns present in the tables): mean
    latency (ms) of each upload protocol over completed requests, the paired selective/full
    ratio with its 95 % BCa interval (:func:`runs.report.paired_change`), the model's
    prediction (:func:`predicted_ratio`), and adaptive against the better of full and
    selective (paired ratio and interval); ``vanilla`` (its requests) adds its latency for
    reference. ``axis`` names the link axis (``snr_db`` or ``rate_mbps``) in the rows."""
    keys = [x] + [g for g in group if g in requests]
    out = []
    for k, rq in requests.groupby(keys, sort=True, dropna=False):
        k = k if isinstance(k, tuple) else (k,)
        by = {p: rq[rq["protocol"] == p] for p in UPLOADS}
        if any(not len(v) for v in by.values()):
            continue
        rd = rounds.merge(rq[["run"]].drop_duplicates(), on="run")
        row: dict[str, Any] = {"axis": axis, "x": float(k[0]), **dict(zip(keys[1:], k[1:]))}
        for p, v in by.items():
            ok = v[v["ok"]]
            row[f"{p}_latency_ms"] = float(ok["latency_ms"].mean())
            row[f"{p}_failed"] = int((~v["ok"]).sum())
        sel_full = paired_change(by["wisv-selective"], by["wisv-full"])
        row.update({"n_paired": sel_full["n_paired"], "ratio": sel_full.get("latency_ratio", math.nan),
                    "ratio_lo": sel_full.get("latency_ratio_lo", math.nan),
                    "ratio_hi": sel_full.get("latency_ratio_hi", math.nan)})
        better = "wisv-selective" if row["ratio"] < 1 else "wisv-full"
        ad = paired_change(by["wisv-adaptive"], by[better])
        row.update({"better": better, "adaptive_ratio": ad.get("latency_ratio", math.nan),
                    "adaptive_ratio_lo": ad.get("latency_ratio_lo", math.nan),
                    "adaptive_ratio_hi": ad.get("latency_ratio_hi", math.nan)})
        ad_rounds = rd[rd["protocol"] == "wisv-adaptive"]
        row["adaptive_full_share"] = float((ad_rounds["upload"] == "all").mean()) if len(ad_rounds) else math.nan
        n_req = int(by["wisv-full"]["ok"].sum())
        row.update(predicted_ratio(rd[rd["protocol"] == "wisv-full"], rd[rd["protocol"] == "wisv-selective"],
                                   row["wisv-full_latency_ms"], n_req))
        if vanilla is not None:
            v = vanilla[(vanilla[x] == k[0]) & vanilla["ok"]]
            if "gamma" in keys:
                v = v[v["gamma"] == row["gamma"]]
            if RTT_COL in keys:
                v = v[v[RTT_COL] == row[RTT_COL]]
            row["vanilla_latency_ms"] = float(v["latency_ms"].mean()) if len(v) else math.nan
        out.append(row)
    return out


# ----------------------------------------------------------------------------- crossover

def _crossing(xs: np.ndarray, ys: np.ndarray, log_x: bool) -> float | None:
    """First x (from the poorest link up) where ``ys`` − 1 changes sign, linearly interpolated
    (in log x for rates); None when it never does."""
    for i in range(len(xs) - 1):
        a, b = ys[i] - 1.0, ys[i + 1] - 1.0
        if np.isfinite(a) and np.isfinite(b) and a * b <= 0 and a != b:
            x0, x1 = (np.log(xs[i]), np.log(xs[i + 1])) if log_x else (xs[i], xs[i + 1])
            x = x0 + (x1 - x0) * a / (a - b)
            return round(float(np.exp(x) if log_x else x), 2)
    return None


def _label(r: dict) -> str:
    width = int(r.get("hidden_wire_width", -1))
    parts = [str(r.get("hidden_dtype", "?")), f"w{width}" if width > 0 else "wown", f"g{int(r.get('gamma', 0))}"]
    if RTT_COL in r and not (isinstance(r[RTT_COL], float) and math.isnan(r[RTT_COL])):
        parts.append(f"rtt{r[RTT_COL]:g}")
    return f"{r['axis']}:" + "/".join(parts)


def crossover(rows: list[dict]) -> dict:
    """``curves``: per curve (axis, dtype, width, γ, RTT) of :func:`summary_rows`' rows, where
    selective/full crosses 1, measured and predicted (``x`` in dB or Mbit/s; None: no crossing
    in range, then ``selective_pays`` says which side won throughout), the settings where either
    protocol is better beyond its interval, and whether wisv-adaptive is at least as good as the
    better of the two everywhere (its paired ratio's interval reaches 1 or below:
    ``adaptive_ok_everywhere``), and its worst setting (``adaptive_worst``)."""
    curves: dict[str, list[dict]] = {}
    for r in rows:
        curves.setdefault(_label(r), []).append(r)
    out: dict[str, Any] = {}
    for label, rs in curves.items():
        rs = sorted(rs, key=lambda r: r["x"])
        xs = np.array([r["x"] for r in rs])
        ys, pred = np.array([r["ratio"] for r in rs]), np.array([r["predicted_ratio"] for r in rs])
        log_x = rs[0]["axis"] == "rate_mbps"
        worse = [r["x"] for r in rs if r["adaptive_ratio_lo"] > 1.0]
        out[label] = {
            "measured": _crossing(xs, ys, log_x), "predicted": _crossing(xs, pred, log_x),
            "unit": "Mbit/s uplink" if log_x else "dB mean uplink SNR",
            "selective_pays": [r["x"] for r in rs if r["ratio_hi"] < 1.0],
            "full_pays": [r["x"] for r in rs if r["ratio_lo"] > 1.0],
            "ratio": {f"{r['x']:g}": [round(r["ratio"], 4), round(r["ratio_lo"], 4), round(r["ratio_hi"], 4)]
                      for r in rs},
            "predicted_ratio": {f"{r['x']:g}": round(r["predicted_ratio"], 4) for r in rs},
            "adaptive_vs_better": {f"{r['x']:g}": [round(r["adaptive_ratio"], 4), round(r["adaptive_ratio_lo"], 4),
                                                   round(r["adaptive_ratio_hi"], 4)] for r in rs},
            "adaptive_worse_at": worse, "adaptive_ok": not worse}
    worst = max(rows, key=lambda r: r["adaptive_ratio"]) if rows else None
    return {"curves": out, "adaptive_ok_everywhere": all(v["adaptive_ok"] for v in out.values()),
            # how far from the better of the two it ever got (paired ratio and interval)
            "adaptive_worst": None if worst is None else {
                "setting": f"{_label(worst)} at {worst['x']:g}",
                "ratio": [round(worst[k], 4) for k in ("adaptive_ratio", "adaptive_ratio_lo", "adaptive_ratio_hi")]}}


# ----------------------------------------------------------------------------- plot

def plot(rows: list[dict], path: Path, gamma: int = 4) -> Path:
    """selective/full latency ratio (paired, 95 % BCa band; dashed: the link-cost model's
    prediction) against mean uplink SNR (dB) and against uplink rate (Mbit/s, log axis, a
    panel per RTT), a line per dtype/width, for ``gamma``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if int(r.get("gamma", gamma)) == gamma]
    rtts = sorted({r[RTT_COL] for r in rows if r["axis"] == "rate_mbps"})
    panels = [("snr_db", None)] + [("rate_mbps", t) for t in rtts]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    payloads = sorted({(r["hidden_dtype"], int(r["hidden_wire_width"])) for r in rows}, key=lambda p: (p[1], p[0]))
    cmap = matplotlib.colormaps["tab10"]
    for ax, (axis, rtt) in zip(axes[0], panels):
        here = [r for r in rows if r["axis"] == axis and (rtt is None or r[RTT_COL] == rtt)]
        n_here = int(np.median([r["n_paired"] for r in here])) if here else 0
        for i, (dtype, width) in enumerate(payloads):
            rs = sorted([r for r in rows if r["axis"] == axis and (rtt is None or r[RTT_COL] == rtt)
                         and (r["hidden_dtype"], int(r["hidden_wire_width"])) == (dtype, width)], key=lambda r: r["x"])
            if not rs:
                continue
            x = [r["x"] for r in rs]
            row_bytes = rs[0]["row_bytes"]
            ax.plot(x, [r["ratio"] for r in rs], marker="o", color=cmap(i), label=f"{dtype}, {width} wide "
                    f"({row_bytes} B/row)")
            ax.fill_between(x, [r["ratio_lo"] for r in rs], [r["ratio_hi"] for r in rs], color=cmap(i), alpha=0.15)
            ax.plot(x, [r["predicted_ratio"] for r in rs], ls="--", color=cmap(i), alpha=0.8)
        ax.axhline(1.0, color="k", lw=0.8)
        if axis == "rate_mbps":
            ax.set_xscale("log")
            ax.set_xlabel("uplink rate (Mbit/s), constant link, no loss")
            ax.set_title(f"constant link, RTT {rtt:g} ms, downlink {DOWN_MBPS:g} Mbit/s; n = {n_here}", fontsize=8)
        else:
            ax.set_xlabel("mean uplink SNR (dB), pedestrian fading; downlink +5 dB")
            ax.set_title(f"pedestrian fading channel (3.5 GHz, 20 MHz, CQI table 1); n = {n_here}", fontsize=8)
        ax.set_ylabel("latency wisv-selective ÷ wisv-full (paired)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, title="hidden row on the wire (dashed: link-cost model)", title_fontsize=7)
    fig.suptitle(f"Where mismatch-first upload pays (< 1: selective faster), γ = {gamma}; n paired problems per "
                 f"point (in each panel's title); bands: 95 % BCa bootstrap; paper's compute profiles", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_adaptive(rows: list[dict], path: Path, gamma: int = 4) -> Path:
    """wisv-adaptive's latency ÷ the better of full and selective (paired, 95 % BCa band)
    against SNR and rate, a line per dtype/width (and RTT)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if int(r.get("gamma", gamma)) == gamma]
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.2))
    cmap = matplotlib.colormaps["tab10"]
    n = {a: int(np.median([r["n_paired"] for r in rows if r["axis"] == a])) for a in {r["axis"] for r in rows}}
    curves = sorted({_label(r) for r in rows})
    for i, label in enumerate(curves):
        rs = sorted([r for r in rows if _label(r) == label], key=lambda r: r["x"])
        ax = axes[0] if rs[0]["axis"] == "snr_db" else axes[1]
        x = [r["x"] for r in rs]
        ax.plot(x, [r["adaptive_ratio"] for r in rs], marker="o", color=cmap(i % 10), label=label.split(":")[1])
        ax.fill_between(x, [r["adaptive_ratio_lo"] for r in rs], [r["adaptive_ratio_hi"] for r in rs],
                        color=cmap(i % 10), alpha=0.12)
    for ax, xl in zip(axes, ("mean uplink SNR (dB)", "uplink rate (Mbit/s)")):
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xlabel(xl)
        ax.set_ylabel("latency wisv-adaptive ÷ better of full, selective")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[1].set_xscale("log")
    fig.suptitle(f"wisv-adaptive against the better fixed upload, γ = {gamma}; paired problems per point: "
                 f"{', '.join(f'{k} {v}' for k, v in sorted(n.items()))}; bands: 95 % BCa bootstrap", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- main

def _csv(s: str, kind=float) -> list:
    return [kind(v) for v in s.split(",") if v.strip()]


def main() -> None:
    from nodes.models import pair_identity
    from nodes.wire import WIRE_DTYPES

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=8, help="problems per repetition")
    ap.add_argument("--repetitions", type=int, default=2, help="repetitions on the fading channel")
    ap.add_argument("--rate-repetitions", type=int, default=1, help="repetitions on constant links (no loss draws)")
    ap.add_argument("--gammas", default="4")
    ap.add_argument("--dtypes", default="f16,f32,i8", help="wire dtypes at 2048 wide (bf16 has f16's bytes; add it "
                    f"to compare decisions; known: {', '.join(WIRE_DTYPES)})")
    ap.add_argument("--snrs", default=",".join(map(str, SNRS_DB)), help="mean uplink SNRs, dB")
    ap.add_argument("--rates", default=",".join(map(str, RATES_MBPS)), help="constant uplink rates, Mbit/s")
    ap.add_argument("--rtts", default=",".join(map(str, RTTS_MS)), help="constant links' RTTs, ms")
    ap.add_argument("--out", default=str(REPO / "runs" / "out" / "upload-crossover"))
    ap.add_argument("--figure", default=str(FIGURE))
    ap.add_argument("--jobs", type=int, default=None, help="runs in parallel (a local Ray instance)")
    ap.add_argument("--resume", action="store_true", help="keep complete runs of an earlier call")
    ap.add_argument("--no-run", action="store_true", help="only analyse what --out holds")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("runs", "nodes", "httpx", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out = Path(a.out)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not a.no_run and not (a.resume and (out / "pair").exists()):
        snapshot_pair(out)
    own = int(pair_identity(out / "pair" / "drafter", out / "pair" / "target")["drafter"]["hidden_size"])
    gammas = _csv(a.gammas, int)
    specs = sweep_specs(out, own, _csv(a.dtypes, str), gammas, a.problems, a.repetitions, _csv(a.snrs),
                        _csv(a.rates), _csv(a.rtts), a.rate_repetitions)
    for spec in specs.values():  # the snapshot of the pair and heads
        spec.update({"models": {"drafter": str(out / "pair" / "drafter"), "target": str(out / "pair" / "target")},
                     "head_dir": str(out / "pair")})
    wall = 0.0 if a.no_run else run_specs(specs, out, a.jobs, a.resume)
    rows = []
    for axis, x in (("snr", SNR_COL), ("rate", RATE_COL)):
        names = [n for n in specs if n.startswith(axis + "-") and not n.endswith("vanilla")]
        rd, rq = load_tables(out, names)
        _, van = load_tables(out, [f"{axis}-vanilla"])
        rows += summary_rows(rd, rq, x, "snr_db" if axis == "snr" else "rate_mbps", vanilla=van)
    pd.DataFrame(rows).to_csv(out / "upload_crossover.csv", index=False)
    res = crossover(rows)
    fig = plot(rows, Path(a.figure), gammas[0])
    fig2 = plot_adaptive(rows, Path(a.figure).with_name(Path(a.figure).stem + "_adaptive.png"), gammas[0])
    print(f"{'setting':<28} {'x':>6} {'full ms':>8} {'sel ms':>8} {'adapt ms':>8} {'vanilla':>8} "
          f"{'sel/full [95% CI]':>24} {'model':>6} {'p_mm':>5} {'rows':>5} {'adapt/better [95% CI]':>24} full%")
    for r in sorted(rows, key=lambda r: (_label(r), r["x"])):
        print(f"{_label(r):<28} {r['x']:>6g} {r['wisv-full_latency_ms']:>8.1f} {r['wisv-selective_latency_ms']:>8.1f} "
              f"{r['wisv-adaptive_latency_ms']:>8.1f} {r.get('vanilla_latency_ms', math.nan):>8.1f} "
              f"{r['ratio']:>7.3f} [{r['ratio_lo']:.3f}, {r['ratio_hi']:.3f}] {r['predicted_ratio']:>6.3f} "
              f"{r['p_mismatch']:>5.2f} {r['rows_per_mismatch']:>5.2f} "
              f"{r['adaptive_ratio']:>7.3f} [{r['adaptive_ratio_lo']:.3f}, {r['adaptive_ratio_hi']:.3f}] "
              f"{100 * r['adaptive_full_share']:>4.0f}")
    for label, v in res["curves"].items():
        print(f"{label}: crossover measured {v['measured']}, predicted {v['predicted']} ({v['unit']}); "
              f"selective faster (CI) at {v['selective_pays']}, full at {v['full_pays']}; adaptive "
              f"{'ok' if v['adaptive_ok'] else 'worse at ' + str(v['adaptive_worse_at'])}")
    print(f"figures: {fig}, {fig2}; table: {out / 'upload_crossover.csv'}; wall {wall:.0f} s")
    n = {a: int(np.median([r["n_paired"] for r in rows if r["axis"] == a])) for a in {r["axis"] for r in rows}}
    print(json.dumps({"crossover": {k: {kk: v[kk] for kk in ("measured", "predicted", "unit", "selective_pays",
                                                             "full_pays", "adaptive_ok")}
                                    for k, v in res["curves"].items()},
                      "adaptive_ok_everywhere": res["adaptive_ok_everywhere"],
                      "adaptive_worst": res.get("adaptive_worst"), "settings": len(rows),
                      "n_paired_per_setting": n, "wall_s": round(wall, 1),
                      "pair_sha1": json.loads((out / "pair.json").read_text()) if (out / "pair.json").exists()
                      else None}))


if __name__ == "__main__":
    main()
