"""The paper's evaluation (``examples/paper.yaml``) read the paper's way.

Per setting (one run of the spec: channel regime, mean SNR or real trace, γ, λ) every protocol's
paired ratios to vanilla (:func:`runs.report.table`: same problems, same channel, BCa bootstrap);
per protocol the *best* setting — the lowest latency ratio among settings whose accuracy drop
against vanilla is under 1 pp and where nothing failed — with the vanilla and oracle rows of
that same setting beside it; and "up to" figures per metric over those settings, as the paper
states its headline. Figures: accepted length, rounds and latency vs mean SNR per protocol with
bands; uplink bytes per token vs SNR for full vs selective upload; accuracy vs latency as λ varies.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from nodes.protocols import PROTOCOLS
from runs.report import BASELINE, _colours, _finish

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "examples" / "paper.yaml"
# The paper's headline for a 1B/8B pair ("up to", across tested settings)
PAPER = {"accepted_len_ratio": 1.608, "rounds_ratio": 0.627, "latency_ratio": 0.686, "max_accuracy_drop_pp": 1.0}
MAX_DROP_PP = 1.0
ORACLE = "oracle"
# the real traces of examples/paper.yaml: output name -> (file under ../shared/traces, import options)
REAL_TRACES = {"paper-lte.parquet": ("mahimahi/Verizon-LTE-short.up", {}),
               "paper-5g-driving.parquet": ("5g-production/driving_download.csv",
                                            {"rate_from": "csi", "mapping": "cqi2"})}
SNR = "trace.generate.up.mean_snr_db"
UPLOADING = [p.name for p in PROTOCOLS if p.upload != "none"]  # protocols that upload hidden states
REGIME = "trace.generate.preset"


def import_real_traces(shared_traces: Path, out_dir: Path = REPO / "runs" / "out" / "traces") -> list[Path]:
    """Import the spec's two real traces from ``shared_traces`` (``../shared/traces``) into
    ``out_dir`` unless they are there; returns their paths."""
    from traces.importers import ImportOptions, import_to_file

    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for name, (src, opts) in REAL_TRACES.items():
        dst = out_dir / name
        if not dst.exists():
            import_to_file(shared_traces / src, dst, ImportOptions(**opts), None)
        made.append(dst)
    return made


def compared_protocols(df: pd.DataFrame) -> list[str]:
    """The protocols compared against vanilla, in report order."""
    present = set(df["protocol"])
    return [p for p in PROTOCOLS.names() if p in present and p != BASELINE]


def _eligible(df: pd.DataFrame) -> pd.DataFrame:
    """Rows compared with vanilla whose accuracy drop is under MAX_DROP_PP and where neither
    protocol failed a request."""
    failed_runs = set(df.loc[(df["protocol"] == BASELINE) & (df["failed"] > 0), "run"])
    ok = df[(df["protocol"] != BASELINE) & (df["failed"] == 0) & ~df["run"].isin(failed_runs)
            & df["latency_ratio"].notna()]
    return ok[ok["accuracy_diff_pp"] > -MAX_DROP_PP]


def _row(r: pd.Series) -> dict:
    """The benchmark's figures of one table row: rounds per request, latency in s."""
    out = {"mean_accepted_len": float(r["mean_accepted_len"]), "rounds": float(r["rounds_per_request"]),
           "rounds_per_100_tokens": float(r["rounds_per_100_tokens"]), "latency_s": float(r["latency_ms_mean"]) / 1000.0,
           "accuracy": float(r["accuracy"]), "failed": int(r["failed"]), "requests": int(r["requests"])}
    for k in ("accepted_len_ratio", "rounds_ratio", "latency_ratio", "accuracy_diff_pp"):
        if k in r and pd.notna(r.get(k)):
            out[k] = float(r[k])
            out[f"{k}_ci95"] = [float(r[f"{k}_lo"]), float(r[f"{k}_hi"])]
    return out


def best_settings(df: pd.DataFrame) -> dict:
    """Per compared protocol, its best setting (see the module docstring) with the vanilla and
    oracle rows of that setting, and its "up to" figures per metric with the settings named."""
    ok = _eligible(df)
    out = {}
    for p in compared_protocols(df):
        rows = ok[ok["protocol"] == p]
        if not len(rows):
            out[p] = {"setting": None, "why": f"no setting with accuracy drop < {MAX_DROP_PP} pp and no failures"}
            continue
        best = rows.loc[rows["latency_ratio"].idxmin()]
        same = df[df["run"] == best["run"]].set_index("protocol")
        entry = {"setting": best["run"], **_row(best), "vanilla": _row(same.loc[BASELINE])}
        if ORACLE in same.index and p != ORACLE:
            entry["oracle"] = _row(same.loc[ORACLE])
        entry["up_to"] = {
            "accepted_len_ratio": _named(rows, "accepted_len_ratio", max),
            "rounds_ratio": _named(rows, "rounds_ratio", min),
            "latency_ratio": _named(rows, "latency_ratio", min)}
        out[p] = entry
    return out


def _named(rows: pd.DataFrame, col: str, pick) -> dict:
    r = rows.loc[rows[col].idxmax() if pick is max else rows[col].idxmin()]
    return {"value": float(r[col]), "setting": r["run"]}


def settings_lines(df: pd.DataFrame) -> list[str]:
    """One line per (setting, compared protocol): ratios with 95 % intervals and accuracy change."""
    lines = []
    for _, r in df[df["protocol"] != BASELINE].iterrows():
        if pd.isna(r.get("latency_ratio")):
            lines.append(f"{r['run']:<70} {r['protocol']:>15}: no paired problems (failed {int(r['failed'])})")
            continue
        lines.append(f"{r['run']:<70} {r['protocol']:>15}: acc.len ×{r['accepted_len_ratio']:.3f} "
                     f"[{r['accepted_len_ratio_lo']:.3f}, {r['accepted_len_ratio_hi']:.3f}]  rounds ×{r['rounds_ratio']:.3f} "
                     f"[{r['rounds_ratio_lo']:.3f}, {r['rounds_ratio_hi']:.3f}]  latency ×{r['latency_ratio']:.3f} "
                     f"[{r['latency_ratio_lo']:.3f}, {r['latency_ratio_hi']:.3f}]  accuracy {r['accuracy_diff_pp']:+.1f} pp"
                     + (f"  failed {int(r['failed'])}" if r["failed"] else ""))
    return lines


def headline_markdown(best: dict, n_settings: int, n_per_setting: int) -> str:
    """The README's table of the paper-style headline (best setting per protocol, oracle beside)."""
    lines = ["| protocol | best setting (accuracy drop < 1 pp) | accepted length | rounds | latency | accuracy | "
             "oracle, same setting: acc. length / rounds / latency |",
             "|---|---|---|---|---|---|---|"]

    def ratio(e, k):
        lo, hi = e[f"{k}_ci95"]
        return f"×{e[k]:.3f} [{lo:.3f}, {hi:.3f}]"

    for p, e in best.items():
        if e.get("setting") is None:
            lines.append(f"| {p} | {e['why']} | | | | | |")
            continue
        o = e.get("oracle")
        orc = f"×{o['accepted_len_ratio']:.3f} / ×{o['rounds_ratio']:.3f} / ×{o['latency_ratio']:.3f}" if o else "—"
        lines.append(f"| {p} | `{e['setting']}` | {ratio(e, 'accepted_len_ratio')} | {ratio(e, 'rounds_ratio')} | "
                     f"{ratio(e, 'latency_ratio')} | {e['accuracy']:.3f} vs {e['vanilla']['accuracy']:.3f} "
                     f"({e['accuracy_diff_pp']:+.1f} pp) | {orc} |")
    lines.append(f"| paper (1B/8B) | up to, across tested settings | ×{PAPER['accepted_len_ratio']} | "
                 f"×{PAPER['rounds_ratio']} | ×{PAPER['latency_ratio']} | < 1 pp drop | |")
    lines.append("")
    lines.append(f"Ratios to vanilla in the same setting, paired on {n_per_setting} problems (3 repetitions, each its "
                 f"own problems and channel realisation), 95 % BCa bootstrap intervals; {n_settings} settings "
                 "(`examples/paper.yaml`, simulated, the paper's compute profiles, 2048-wide hidden rows on the wire).")
    return "\n".join(lines)


def _bands(ax, g: pd.DataFrame, x: str, col: str, colour, label: str) -> None:
    g = g.sort_values(x)
    ax.plot(g[x], g[col], marker="o", ms=3, color=colour, label=label)
    if f"{col}_lo" in g and g[f"{col}_lo"].notna().any():
        ax.fill_between(g[x], g[f"{col}_lo"], g[f"{col}_hi"], color=colour, alpha=0.15)


def paper_plots(df: pd.DataFrame, out: Path, gamma: int = 4) -> list[Path]:
    """The paper's kinds of figure into ``out`` (PNG); returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[Path] = []
    colours = _colours(PROTOCOLS.names())
    snr = df[df[SNR].notna() & (df["gamma"] == gamma)] if SNR in df else df.iloc[0:0]
    regimes = [r for r in snr[REGIME].dropna().unique()] if len(snr) else []
    n = int(df["requests"].median()) if len(df) else 0
    how = df["ci_method"].iloc[0].split(";")[0] if len(df) else ""
    panels = [("mean_accepted_len", "accepted length (tokens/round)", None),
              ("rounds_per_100_tokens", "rounds per 100 tokens", None),
              ("latency_ms_mean", "request latency (ms)", None),
              ("up_bytes_per_token", "uplink bytes per token", UPLOADING),
              ("accepted_len_ratio", "accepted length ÷ vanilla's (paired)", None),
              ("rounds_ratio", "rounds ÷ vanilla's (paired)", None),
              ("latency_ratio", "latency ÷ vanilla's (paired)", None)]
    for col, label, only in panels:
        if not regimes:
            break
        cols = min(2, len(regimes))
        rows = math.ceil(len(regimes) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
        for ax, regime in zip(axes.flat, regimes):
            g = snr[snr[REGIME] == regime]
            for p in [p for p in PROTOCOLS.names() if p in set(g["protocol"]) and (only is None or p in only)]:
                _bands(ax, g[g["protocol"] == p], SNR, col, colours[p], p)
            ax.set_title(f"{regime}, γ = {gamma}", fontsize=8)
            ax.set_xlabel("uplink mean SNR (dB; downlink +0…5 dB)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes.flat[0].legend(fontsize=6)
        name = "bytes_per_token" if col == "up_bytes_per_token" else col
        band = "paired bootstrap over problems (BCa)" if col.endswith("_ratio") else how
        fig.suptitle(f"{label} vs mean SNR\nn = {n} requests per point; bands: 95 %, {band}", fontsize=9)
        fig.tight_layout()
        path = out / f"paper_{name}_vs_snr.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        made.append(path)
    lam = df[df["run"].str.startswith("paper-lambda")] if len(df) else df
    if len(lam):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for p, g in lam.groupby("protocol", sort=False):
            g = g.sort_values("lambda_ms")
            lat = g["latency_ms_mean"].to_numpy(float)
            err = np.vstack([lat - g["latency_ms_mean_lo"].to_numpy(float), g["latency_ms_mean_hi"].to_numpy(float) - lat])
            acc = g["accuracy"].to_numpy(float)
            aerr = np.vstack([acc - g["accuracy_lo"].to_numpy(float), g["accuracy_hi"].to_numpy(float) - acc])
            ax.errorbar(lat, acc, xerr=err, yerr=aerr, marker="o", ms=3, color=colours[p], label=p, capsize=2,
                        lw=1 if p not in (BASELINE, ORACLE) else 0, elinewidth=0.7)
            if p not in (BASELINE, ORACLE):
                for x, y, v in zip(lat, acc, g["lambda_ms"]):
                    ax.annotate(f"λ={v:g}", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        _finish(fig, ax, out / "paper_accuracy_vs_latency_lambda.png", made,
                f"accuracy vs latency as λ (ms) varies\nn = {n} requests per point; accuracy: Wilson 95 %, "
                f"latency: 95 %, {how}", "request latency (ms)", "accuracy")
    return made


def update_readme(readme: Path, block: str, begin: str = "<!-- paper-eval:begin -->",
                  end: str = "<!-- paper-eval:end -->") -> None:
    """Replace the text between the ``begin`` and ``end`` markers of ``readme`` with ``block``;
    ValueError when the markers are missing."""
    text = readme.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{readme}: markers {begin} … {end} not found")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{block}\n{end}{tail}")
