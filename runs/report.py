"""``wisv report RUN_DIR…``: per run and protocol, figures with stated intervals, the paired
change against vanilla, and plots, from the Parquet tables an experiment wrote.

Honest by construction:

* **Failed requests never count as speed.** Latency, tokens, accepted length and bytes are over
  the requests that completed; ``failed`` counts the others and the table flags the protocol.
* **Comparisons are paired.** The change against vanilla uses only the problems (request id and
  repetition) that both protocols completed in the same run — the same problems over the same
  channel — and gives the ratio with a 95 % bootstrap interval (``scipy.stats.bootstrap``,
  paired resampling of problems, BCa, 2000 resamples, seeded); ``n_paired`` says over how many.
* **Intervals say how they were computed** (``ci_method``): a t-interval over the repetitions'
  values when a run has two or more, else a t-interval over requests; accuracy gets a Wilson
  score interval printed as ``[lo, hi]``.
* **Sweeps are results.** Swept spec keys are columns; runs sort by their values; one plot per
  metric against the swept key, a line per protocol with its interval band, titled with units and n.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from nodes.protocols import PROTOCOLS
from runs.summary import figures

BASELINE = "vanilla"
METRICS = {  # column → (label with unit, format)
    "mean_accepted_len": ("accepted length (tokens/round)", ".2f"),
    "rounds_per_100_tokens": ("rounds per 100 tokens", ".1f"),
    "latency_ms_mean": ("request latency (ms)", ".1f"),
    "accuracy": ("accuracy", ".3f"),
    "up_bytes_per_token": ("uplink bytes per token", ".1f"),
}


def load(dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(rounds, requests, meta) of every experiment directory given (``meta``: the first's)."""
    rounds, requests = [], []
    meta: dict = {}
    for d in dirs:
        if not (d / "requests.parquet").exists():
            raise FileNotFoundError(f"{d}: no requests.parquet (not an experiment directory, or it wrote nothing)")
        requests.append(pd.read_parquet(d / "requests.parquet").assign(source=str(d)))
        if (d / "rounds.parquet").exists():
            rounds.append(pd.read_parquet(d / "rounds.parquet").assign(source=str(d)))
        if not meta and (d / "meta.json").exists():
            meta = json.loads((d / "meta.json").read_text())
    return (pd.concat(rounds, ignore_index=True) if rounds else pd.DataFrame(),
            pd.concat(requests, ignore_index=True), meta)


def swept_columns(requests: pd.DataFrame, meta: dict | None = None) -> list[str]:
    """The swept spec keys (columns of the tables): those ``meta.json`` lists, else the dotted
    columns and any of gamma/lambda_ms that differ between runs."""
    if meta and meta.get("swept") is not None:
        return [c for c in meta["swept"] if c in requests]
    cols = [c for c in requests.columns if "." in c]
    return cols + [c for c in ("gamma", "lambda_ms") if c in requests and requests.groupby("run")[c].first().nunique() > 1]


def t_interval(values) -> tuple[float, float]:
    """95 % t-interval of the mean of ``values`` (nan when fewer than two)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float("nan"), float("nan")
    h = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - h), float(v.mean() + h)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (nan when n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _figures(rq: pd.DataFrame, rd: pd.DataFrame) -> dict:
    """Figures of completed requests ``rq`` and their rounds ``rd`` (:func:`runs.summary.figures`)."""
    return figures(int(rq["n_tokens"].sum()), int(rq["rounds"].sum()), rq["latency_ms"].to_numpy(),
                   rd["up_bytes"].sum() if len(rd) else np.nan, rd["down_bytes"].sum() if len(rd) else np.nan)


def _ratio_ci(stat, arrays: tuple[np.ndarray, ...], seed: int = 0) -> tuple[float, float, float]:
    """(value, lo, hi): a paired statistic and its 95 % BCa bootstrap interval."""
    value = float(stat(*arrays))
    if len(arrays[0]) < 3 or not np.isfinite(value):
        return value, float("nan"), float("nan")
    import warnings

    for method in ("BCa", "percentile"):  # BCa is undefined for degenerate data (e.g. every ratio 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                res = stats.bootstrap(arrays, stat, paired=True, vectorized=False, n_resamples=2000,
                                      confidence_level=0.95, method=method, random_state=np.random.default_rng(seed))
            except (ValueError, FloatingPointError):
                continue
        lo, hi = res.confidence_interval
        if np.isfinite(lo) and np.isfinite(hi):
            return value, float(lo), float(hi)
    return value, float("nan"), float("nan")


def paired_change(rq: pd.DataFrame, base: pd.DataFrame) -> dict:
    """Ratios to the baseline over the problems both completed (see the module docstring):
    latency, accepted length, rounds per request; accuracy difference in percentage points."""
    key = ["rep", "request_id"]
    both = rq[rq["ok"]].merge(base[base["ok"]], on=key, suffixes=("", "_b"))
    out: dict = {"n_paired": len(both)}
    if not len(both):
        return out
    lat, lat_b = both["latency_ms"].to_numpy(float), both["latency_ms_b"].to_numpy(float)
    tok, rnd = both["n_tokens"].to_numpy(float), both["rounds"].to_numpy(float)
    tok_b, rnd_b = both["n_tokens_b"].to_numpy(float), both["rounds_b"].to_numpy(float)
    cor, cor_b = both["correct"].to_numpy(float), both["correct_b"].to_numpy(float)
    for name, stat, arrays in (
            ("latency_ratio", lambda a, b: np.mean(a) / np.mean(b), (lat, lat_b)),
            ("accepted_len_ratio", lambda t, r, tb, rb: (np.sum(t) / np.sum(r)) / (np.sum(tb) / np.sum(rb)),
             (tok, rnd, tok_b, rnd_b)),
            ("rounds_ratio", lambda r, rb: np.sum(r) / np.sum(rb), (rnd, rnd_b)),
            ("accuracy_diff_pp", lambda c, cb: 100.0 * (np.mean(c) - np.mean(cb)), (cor, cor_b))):
        v, lo, hi = _ratio_ci(stat, arrays)
        out.update({name: v, f"{name}_lo": lo, f"{name}_hi": hi})
    return out


def table(rounds: pd.DataFrame, requests: pd.DataFrame, swept: list[str] | None = None) -> pd.DataFrame:
    """One row per (run, protocol): figures over completed requests, failures, intervals with their
    method, and the paired change against vanilla; swept keys as columns, rows sorted by them."""
    swept = swept_columns(requests) if swept is None else swept
    rows = []
    for (run, protocol), rq in requests.groupby(["run", "protocol"], sort=False):
        ok = rq[rq["ok"]]
        rd = rounds[(rounds["run"] == run) & (rounds["protocol"] == protocol) &
                    rounds["request_id"].isin(ok["request_id"])] if len(rounds) else pd.DataFrame()
        reps = sorted(rq["rep"].unique())
        row = {"run": run, "protocol": protocol, **{c: rq[c].iloc[0] for c in swept},
               "mode": rq["mode"].iloc[0] if "mode" in rq else "", "repetitions": len(reps), "requests": len(rq),
               "failed": int((~rq["ok"]).sum()), **_figures(ok, rd)}
        row["rounds_per_request"] = float(ok["rounds"].mean()) if len(ok) else float("nan")
        row["accuracy"] = float(rq["correct"].mean())  # failed requests count as wrong
        row["accuracy_lo"], row["accuracy_hi"] = wilson(int(rq["correct"].sum()), len(rq))
        if len(reps) >= 2:
            per = [_figures(ok[ok["rep"] == k], rd[rd["rep"] == k] if len(rd) else rd) for k in reps]
            for c in ("mean_accepted_len", "latency_ms_mean", "rounds_per_100_tokens", "up_bytes_per_token"):
                row[f"{c}_lo"], row[f"{c}_hi"] = t_interval([p[c] for p in per])
            row["ci_method"] = f"t over {len(reps)} repetitions; accuracy Wilson over {len(rq)} requests"
        else:
            row["latency_ms_mean_lo"], row["latency_ms_mean_hi"] = t_interval(ok["latency_ms"])
            row["mean_accepted_len_lo"], row["mean_accepted_len_hi"] = t_interval(
                ok["n_tokens"] / ok["rounds"].clip(lower=1))
            row["ci_method"] = f"t over {len(ok)} requests; accuracy Wilson over {len(rq)} requests"
        base = requests[(requests["run"] == run) & (requests["protocol"] == BASELINE)]
        if protocol != BASELINE and len(base):
            row.update(paired_change(rq, base))
        rows.append(row)
    df = pd.DataFrame(rows)
    if "accepted_len_ratio" in df and (df["protocol"] == "oracle").any():  # the bound beside every head row
        bound = df[df["protocol"] == "oracle"].set_index("run")["accepted_len_ratio"]
        heads = df["protocol"].isin(PROTOCOLS.with_head())
        df.loc[heads, "oracle_accepted_len_ratio"] = df.loc[heads, "run"].map(bound)
    order = {p: i for i, p in enumerate(PROTOCOLS.names())}
    keys = [*swept, "run", "protocol"]
    return df.sort_values(keys, key=lambda s: s.map(order) if s.name == "protocol" else s,
                          kind="stable").reset_index(drop=True)


def failed_protocols(df: pd.DataFrame) -> list[str]:
    """``run/protocol`` of every row with failed requests."""
    return [f"{r['run']}/{r['protocol']}" for _, r in df.iterrows() if r["failed"]]


def _fmt(v, fmt: str) -> str:
    return "–" if v is None or pd.isna(v) else format(v, fmt)


def _interval(r, c: str, fmt: str) -> str:
    lo, hi = r.get(f"{c}_lo"), r.get(f"{c}_hi")
    s = _fmt(r[c], fmt)
    return s if lo is None or pd.isna(lo) else f"{s} [{_fmt(lo, fmt)}, {_fmt(hi, fmt)}]"


def markdown(df: pd.DataFrame, meta: dict | None = None) -> str:
    """The table as Markdown: values with their 95 % intervals as [lo, hi], n, failures, the
    paired ratios against vanilla and, beside each head protocol, the oracle's accepted-length
    ratio in the same run (when it ran); a header states mode, runs and how intervals were computed."""
    head = ""
    if meta:
        head = (f"mode: {meta.get('mode', '?')}; runs: {len(df['run'].unique())}; "
                f"intervals: 95 %, {df['ci_method'].iloc[0] if len(df) else ''}; ratios vs {BASELINE}: paired "
                f"bootstrap (BCa) over the problems both completed\n\n")
    lines = ["| run | protocol | n | failed | accepted len | rounds/100 tok | latency mean ms | p95 | up B/tok "
             "| accuracy | latency ×vanilla | acc.len ×vanilla | rounds ×vanilla | Δacc pp | oracle acc.len ×vanilla |",
             "|" + "---|" * 15]
    for _, r in df.iterrows():
        flag = " ⚠" if r["failed"] else ""
        lines.append(
            f"| {r['run']} | {r['protocol']}{flag} | {r['requests']} | {r['failed']} | "
            f"{_interval(r, 'mean_accepted_len', '.2f')} | {_fmt(r['rounds_per_100_tokens'], '.1f')} | "
            f"{_interval(r, 'latency_ms_mean', '.1f')} | {_fmt(r['latency_ms_p95'], '.1f')} | "
            f"{_fmt(r['up_bytes_per_token'], '.1f')} | {_interval(r, 'accuracy', '.3f')} | "
            f"{_interval(r, 'latency_ratio', '.3f') if 'latency_ratio' in r else '–'} | "
            f"{_interval(r, 'accepted_len_ratio', '.3f') if 'accepted_len_ratio' in r else '–'} | "
            f"{_interval(r, 'rounds_ratio', '.3f') if 'rounds_ratio' in r else '–'} | "
            f"{_interval(r, 'accuracy_diff_pp', '+.1f') if 'accuracy_diff_pp' in r else '–'} | "
            f"{_fmt(r.get('oracle_accepted_len_ratio', float('nan')), '.3f')} |")
    foot = ""
    if df["failed"].any():
        foot = ("\n⚠ failed requests: their latency and tokens are left out of the figures, they count as wrong in "
                "accuracy, and ratios use only problems both protocols completed.\n")
    return head + "\n".join(lines) + "\n" + foot


# ----------------------------------------------------------------------------- plots

def _finish(fig, ax, path: Path, made: list[Path], title: str, xlabel: str, ylabel: str) -> None:
    """Title, labels, grid, legend; save and close; append the path to ``made``."""
    import matplotlib.pyplot as plt

    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    made.append(path)


def _colours(protocols) -> dict:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {p: cmap(i % 10) for i, p in enumerate(protocols)}


def sweep_plots(df: pd.DataFrame, swept: list[str], out: Path) -> list[Path]:
    """One plot per metric against the first numeric swept key: a line per protocol with its
    95 % interval band."""
    import matplotlib.pyplot as plt

    swept = [c for c in swept if pd.api.types.is_numeric_dtype(df[c])]
    made: list[Path] = []
    if not swept or df["run"].nunique() < 2:
        return made
    x = swept[0]
    colours = _colours(df["protocol"].unique())
    n = int(df["requests"].median())
    how = df["ci_method"].iloc[0].split(";")[0]
    ratios = {f"{m}_vs_vanilla": (m, f"{label} ÷ vanilla's, paired") for m, label in
              (("latency_ratio", "latency"), ("accepted_len_ratio", "accepted length"), ("rounds_ratio", "rounds"))}
    for metric, (label, _) in {**METRICS, **{v[0]: (v[1], "") for v in ratios.values()}}.items():
        if metric not in df:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for protocol, g in df.groupby("protocol", sort=False):
            g = g.sort_values(x)
            if g[metric].isna().all():
                continue
            ax.plot(g[x], g[metric], marker="o", color=colours[protocol], label=protocol)
            if f"{metric}_lo" in g and g[f"{metric}_lo"].notna().any():
                ax.fill_between(g[x], g[f"{metric}_lo"], g[f"{metric}_hi"], color=colours[protocol], alpha=0.15)
        band = "paired bootstrap over problems (BCa)" if metric.endswith("_ratio") else how
        _finish(fig, ax, out / f"sweep_{metric}.png", made, f"{label} vs {x}\nn = {n} requests per point; bands: "
                f"95 %, {band}", x, label)
    return made


def run_plots(rounds: pd.DataFrame, requests: pd.DataFrame, out: Path) -> list[Path]:
    """Per run: latency CDF per protocol, accepted length vs SNR, and rounds/bytes over the first
    repetition's time (each run on its own axes: runs are never merged)."""
    import matplotlib.pyplot as plt

    made: list[Path] = []
    for run, rq in requests.groupby("run", sort=False):
        rd = rounds[rounds["run"] == run] if len(rounds) else rounds
        colours = _colours(rq["protocol"].unique())
        d = out / str(run)
        fig, ax = plt.subplots(figsize=(6, 4))
        for protocol, g in rq[rq["ok"]].groupby("protocol", sort=False):
            xs = np.sort(g["latency_ms"].to_numpy())
            ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", color=colours[protocol],
                    label=f"{protocol} (n={len(xs)})")
        _finish(fig, ax, d / "latency_cdf.png", made, f"request latency, {run}", "latency (ms)", "CDF")
        if len(rd) and "csi_snr_db" in rd and rd["csi_snr_db"].nunique() > 1:
            fig, ax = plt.subplots(figsize=(6, 4))
            bins = np.arange(np.floor(rd["csi_snr_db"].min()), np.ceil(rd["csi_snr_db"].max()) + 2, 2.0)
            for protocol, g in rd.groupby("protocol", sort=False):
                m = (g["accepted"] + 1).groupby(pd.cut(g["csi_snr_db"], bins), observed=True).mean()
                ax.plot([i.mid for i in m.index], m.to_numpy(), marker="o", color=colours[protocol], label=protocol)
            _finish(fig, ax, d / "accepted_vs_snr.png", made, f"tokens per round vs SNR in force, {run}",
                    "SNR (dB)", "tokens per round")
        if len(rd):
            fig, ax = plt.subplots(figsize=(6, 4))
            first = rd[rd["rep"] == rd["rep"].min()]
            for protocol, g in first.groupby("protocol", sort=False):
                g = g.sort_values("t_start")
                ax.plot(g["t_start"] - g["t_start"].min(), np.cumsum(g["up_bytes"]) / 1e3, color=colours[protocol],
                        label=protocol)
            _finish(fig, ax, d / "uplink_over_time.png", made, f"uplink bytes over time, {run}, repetition "
                    f"{int(first['rep'].min())}", "time since the protocol started (s)", "uplink (kB)")
    return made


def mixed_host_warnings(dirs: list[Path]) -> list[str]:
    """A warning when the emulated runs of these experiment directories (one comparison) ran on
    different kinds of host — CPU model, CPU count or shaping backend in their ``where.json`` —
    since an emulated run's timing depends on its host; none otherwise. Simulated runs, and runs
    without ``where.json``, are left out."""
    kinds: dict[tuple, list[str]] = {}
    measured = 0
    for d in dirs:
        for f in sorted(d.glob("*/rep*/where.json")):
            try:
                w = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if w.get("mode") != "emulate":
                continue
            kinds.setdefault((w.get("cpu_model"), w.get("cpus"), w.get("backend")), []).append(
                f"{f.parent.parent.name}/{f.parent.name}")
            measured += "measured" in (w.get("compute") or {}).values()
    if len(kinds) < 2:
        return []
    hosts = "; ".join(f"{len(v)} on {model!r} x{cpus} CPUs, backend {backend} (e.g. {v[0]})"
                      for (model, cpus, backend), v in kinds.items())
    extra = f"; {measured} of them measured compute, so their compute time is their host's" if measured else ""
    return [f"emulated runs of this comparison ran on different kinds of host: {hosts}{extra}. Compare runs "
            f"within one kind of host, or rerun on one (Ray: start the emulation workers on identical hosts)."]


def report(dirs: list[Path], out: Path | None = None) -> tuple[pd.DataFrame, list[Path]]:
    """Table and plots of experiment directories; writes report.md, report.csv, plots to ``out``.
    Logs a warning when emulated runs ran on different kinds of host (:func:`mixed_host_warnings`)."""
    import logging

    import matplotlib

    for w in mixed_host_warnings(dirs):
        logging.getLogger(__name__).warning(w)
    matplotlib.use("Agg")
    rounds, requests, meta = load(dirs)
    swept = swept_columns(requests, meta)
    df = table(rounds, requests, swept)
    out = out or dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown(df, meta))
    df.to_csv(out / "report.csv", index=False)
    return df, sweep_plots(df, swept, out / "plots") + run_plots(rounds, requests, out / "plots")


def as_json(df: pd.DataFrame) -> dict:
    """One object: per protocol (``run/protocol`` when several runs) the table's figures."""
    multi = df["run"].nunique() > 1
    out = {}
    for _, r in df.iterrows():
        key = f"{r['run']}/{r['protocol']}" if multi else r["protocol"]
        out[key] = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()
                    if k not in ("run", "protocol")}
    return json.loads(json.dumps(out, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
