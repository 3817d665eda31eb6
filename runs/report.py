"""``wisv report RUN_DIR…``: tables per protocol with 95 % confidence intervals, the change
against vanilla, and plots, from the Parquet tables an experiment wrote.

Confidence intervals: over repetitions (t-interval of the per-repetition values) when a run has
two or more, otherwise over requests (t-interval; Wilson for accuracy).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from nodes.protocols import PROTOCOLS

COLUMNS = ["mean_accepted_len", "rounds_per_100_tokens", "latency_ms_mean", "latency_ms_p50", "latency_ms_p95",
           "tokens_per_s", "up_bytes_per_token", "down_bytes_per_token", "wire_up_bytes_per_token", "accuracy"]


def load(dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rounds, requests) of every experiment directory given."""
    rounds, requests = [], []
    for d in dirs:
        if not (d / "requests.parquet").exists():
            raise FileNotFoundError(f"{d}: no requests.parquet (not an experiment directory, or it wrote nothing)")
        requests.append(pd.read_parquet(d / "requests.parquet").assign(source=str(d)))
        if (d / "rounds.parquet").exists():
            rounds.append(pd.read_parquet(d / "rounds.parquet").assign(source=str(d)))
    return pd.concat(rounds, ignore_index=True), pd.concat(requests, ignore_index=True)


def _ci(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def _wilson(k: int, n: int) -> float:
    if n == 0:
        return float("nan")
    p, z = k / n, 1.96
    return float(z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n))


def _figures(rq: pd.DataFrame, rd: pd.DataFrame) -> dict:
    toks = rq["n_tokens"].sum()
    lat = rq["latency_ms"].to_numpy()
    wire = rd["wire_up_bytes"] if "wire_up_bytes" in rd and (rd["wire_up_bytes"] >= 0).all() else None
    return {"mean_accepted_len": toks / max(1, len(rd)), "rounds_per_100_tokens": 100.0 * len(rd) / max(1, toks),
            "latency_ms_mean": float(lat.mean()), "latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p95": float(np.percentile(lat, 95)), "tokens_per_s": toks / max(1e-9, lat.sum() / 1000.0),
            "up_bytes_per_token": rd["up_bytes"].sum() / max(1, toks),
            "down_bytes_per_token": rd["down_bytes"].sum() / max(1, toks),
            "wire_up_bytes_per_token": float(wire.sum() / max(1, toks)) if wire is not None else None,
            "accuracy": float(rq["correct"].mean())}


def table(rounds: pd.DataFrame, requests: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, protocol): figures, their 95 % CI half-widths and the change vs vanilla."""
    rows = []
    for (run, protocol), rq in requests.groupby(["run", "protocol"], sort=False):
        rd = rounds[(rounds["run"] == run) & (rounds["protocol"] == protocol)]
        fig = _figures(rq, rd)
        reps = sorted(rq["rep"].unique())
        row = {"run": run, "protocol": protocol, "repetitions": len(reps), "requests": len(rq), **fig}
        if len(reps) >= 2:
            per = [_figures(rq[rq["rep"] == k], rd[rd["rep"] == k]) for k in reps]
            for c in COLUMNS:
                vals = [p[c] for p in per if p[c] is not None]
                row[f"{c}_ci95"] = _ci(np.array(vals)) if vals else None
        else:
            lat = rq["latency_ms"].to_numpy()
            per_req_len = rq["n_tokens"].to_numpy() / np.maximum(1, rq["rounds"].to_numpy())
            row["latency_ms_mean_ci95"] = _ci(lat)
            row["mean_accepted_len_ci95"] = _ci(per_req_len)
            row["accuracy_ci95"] = _wilson(int(rq["correct"].sum()), len(rq))
        rows.append(row)
    order = {p: i for i, p in enumerate(PROTOCOLS.names())}
    df = pd.DataFrame(rows)
    df = df.sort_values(["run", "protocol"], key=lambda s: s.map(order) if s.name == "protocol" else s,
                        kind="stable").reset_index(drop=True)
    for c in ("mean_accepted_len", "rounds_per_100_tokens", "latency_ms_mean", "tokens_per_s", "accuracy"):
        base = df[df["protocol"] == "vanilla"].set_index("run")[c]
        df[f"{c}_vs_vanilla_pct"] = [(v / base[r] - 1) * 100 if r in base.index and base[r] else None
                                     for r, v in zip(df["run"], df[c])]
    return df


def markdown(df: pd.DataFrame) -> str:
    """The table as Markdown (value ± CI, change vs vanilla in %)."""
    def cell(r, c, fmt):
        v, ci = r[c], r.get(f"{c}_ci95")
        s = format(v, fmt) if v is not None and not pd.isna(v) else "–"
        return s + (f" ± {format(ci, fmt)}" if ci is not None and not pd.isna(ci) else "")

    head = ("| run | protocol | accepted len | rounds/100 tok | latency mean ms | p50 | p95 | tok/s | up B/tok "
            "| down B/tok | accuracy | Δ latency vs vanilla |\n|" + "---|" * 12 + "\n")
    lines = []
    for _, r in df.iterrows():
        d = r["latency_ms_mean_vs_vanilla_pct"]
        lines.append(f"| {r['run']} | {r['protocol']} | {cell(r, 'mean_accepted_len', '.2f')} | "
                     f"{r['rounds_per_100_tokens']:.1f} | {cell(r, 'latency_ms_mean', '.1f')} | {r['latency_ms_p50']:.1f} | "
                     f"{r['latency_ms_p95']:.1f} | {r['tokens_per_s']:.1f} | {r['up_bytes_per_token']:.1f} | "
                     f"{r['down_bytes_per_token']:.1f} | {cell(r, 'accuracy', '.3f')} | "
                     f"{'–' if d is None or pd.isna(d) else f'{d:+.1f} %'} |")
    return head + "\n".join(lines) + "\n"


def _finish(fig, axes, path: Path, made: list[Path], xlabel: str | None = None, ylabel: str | None = None) -> None:
    """Label, grid, legend, save and close a figure; append its path to ``made``."""
    import matplotlib.pyplot as plt

    for ax in np.atleast_1d(axes):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if xlabel:
        np.atleast_1d(axes)[-1].set_xlabel(xlabel)
    if ylabel:
        np.atleast_1d(axes)[0].set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    made.append(path)


def plots(rounds: pd.DataFrame, requests: pd.DataFrame, out: Path) -> list[Path]:
    """Latency CDF, accepted length vs SNR, rounds and bytes over time, accuracy vs latency (λ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    made = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for (run, protocol), rq in requests.groupby(["run", "protocol"], sort=False):
        x = np.sort(rq["latency_ms"].to_numpy())
        ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", label=f"{protocol} ({run})")
    _finish(fig, ax, out / "latency_cdf.png", made, "request latency (ms)", "CDF")
    if "csi_snr_db" in rounds:
        fig, ax = plt.subplots(figsize=(6, 4))
        bins = np.arange(np.floor(rounds["csi_snr_db"].min()), np.ceil(rounds["csi_snr_db"].max()) + 2, 2.0)
        for protocol, rd in rounds.groupby("protocol", sort=False):
            b = pd.cut(rd["csi_snr_db"], bins)
            m = (rd["accepted"] + 1).groupby(b, observed=True).mean()
            ax.plot([i.mid for i in m.index], m.to_numpy(), marker="o", label=protocol)
        _finish(fig, ax, out / "accepted_vs_snr.png", made, "SNR in force (dB)", "accepted length per round")
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    for protocol, rd in rounds[rounds["rep"] == rounds["rep"].min()].groupby("protocol", sort=False):
        rd = rd.sort_values("t_start")
        t = rd["t_start"].to_numpy() - rd["t_start"].min()
        axes[0].plot(t, np.arange(1, len(rd) + 1), label=protocol)
        axes[1].plot(t, np.cumsum(rd["up_bytes"].to_numpy()) / 1e3, label=protocol)
        if "csi_rate_up_mbps" in rd:
            axes[2].step(t, rd["csi_rate_up_mbps"].to_numpy(), where="post", lw=0.7, label=f"{protocol}: uplink rate")
    axes[0].set_ylabel("rounds")
    axes[1].set_ylabel("uplink kB")
    axes[2].set_ylabel("trace rate up (Mbit/s)")
    _finish(fig, axes, out / "rounds_bytes_over_time.png", made, "time since the protocol started (s)")
    lam = requests.dropna(subset=["lambda_ms"]) if "lambda_ms" in requests else requests.iloc[0:0]
    if len(lam) and lam["lambda_ms"].nunique() > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        for protocol, rq in lam.groupby("protocol", sort=False):
            g = rq.groupby("lambda_ms").agg(lat=("latency_ms", "mean"), acc=("correct", "mean"))
            ax.plot(g["lat"], g["acc"], marker="o", label=protocol)
            for l_, r in g.iterrows():
                ax.annotate(f"λ={l_:g}", (r["lat"], r["acc"]), fontsize=7)
        _finish(fig, ax, out / "accuracy_vs_latency.png", made, "mean latency (ms)", "accuracy")
    return made


def report(dirs: list[Path], out: Path | None = None) -> tuple[pd.DataFrame, list[Path]]:
    """Table and plots of experiment directories; writes report.md, report.csv, plots to ``out``."""
    rounds, requests = load(dirs)
    df = table(rounds, requests)
    out = out or dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown(df))
    df.to_csv(out / "report.csv", index=False)
    return df, plots(rounds, requests, out / "plots")


def as_json(df: pd.DataFrame) -> dict:
    """One object: per protocol (``run/protocol`` when several runs) the table's figures."""
    multi = df["run"].nunique() > 1
    out = {}
    for _, r in df.iterrows():
        key = f"{r['run']}/{r['protocol']}" if multi else r["protocol"]
        out[key] = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()
                    if k not in ("run", "protocol")}
    return json.loads(json.dumps(out, default=float))
