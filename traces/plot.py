"""Plot a trace: rate, delay, loss and SNR against time, up and down (PNG via matplotlib Agg).

A direction that is a copy of the other (an uplink-only log with the downlink mirrored) is drawn
once, labelled ``up = down``, so the copy does not hide the recorded line; a panel whose quantity
the trace lacks says so ("no SNR in this trace") instead of showing an empty axis; rates that
span more than two decades are drawn on a log axis.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from traces.format import Trace

PANELS = (("rate_bps", "rate (Mbit/s)", 1e-6, "rate"), ("delay_ms", "delay (ms)", 1.0, "delay"),
          ("loss", "loss (%)", 100.0, "loss"), ("snr_db", "SNR (dB)", 1.0, "SNR"))
COLORS = {"up": "tab:orange", "down": "tab:blue", "up = down": "tab:purple"}
LOG_SPAN = 100.0  # max/min of the positive values above which the rate axis is logarithmic


def series_to_draw(trace: Trace, key: str) -> list[tuple[str, np.ndarray]]:
    """(label, values in the column's units) per line of a panel: ``down`` then ``up`` (drawn
    on top), or one ``up = down`` line when the two directions are identical; [] when absent."""
    d = trace.data
    cols = {x: d[f"{key}_{x}"].to_numpy(dtype=float) for x in ("down", "up") if f"{key}_{x}" in d}
    if len(cols) == 2 and np.array_equal(cols["up"], cols["down"]):
        return [("up = down", cols["up"])]
    return list(cols.items())


def wants_log_axis(values: list[np.ndarray]) -> bool:
    """True when the positive values span more than LOG_SPAN (two decades)."""
    pos = np.concatenate([v[v > 0] for v in values]) if values else np.empty(0)
    return bool(pos.size) and float(pos.max() / pos.min()) > LOG_SPAN


def build_figure(trace: Trace, title: str | None = None) -> Any:
    """A 4-panel matplotlib Figure of ``trace`` (rate Mbit/s, delay ms, loss %, SNR dB vs time s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = (trace.data["t_ms"].to_numpy(dtype=float) - float(trace.data["t_ms"].iloc[0])) / 1000.0
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(10, 8), sharex=True)
    for ax, (key, label, scale, name) in zip(axes, PANELS):
        lines = series_to_draw(trace, key)
        for direction, values in lines:
            ax.step(t, values * scale, where="post", lw=0.8, color=COLORS[direction], label=direction)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if not lines:
            ax.text(0.5, 0.5, f"no {name} in this trace", transform=ax.transAxes, ha="center", va="center",
                    color="0.4")
            ax.set_yticks([])
            continue
        if key == "rate_bps" and wants_log_axis([v * scale for _, v in lines]):
            ax.set_yscale("log")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(title or f"trace: {trace.meta.get('source', '?')}, step {trace.step_ms:g} ms")
    fig.tight_layout()
    return fig


def plot_trace(trace: Trace, out_png: str | Path, title: str | None = None) -> Path:
    """Write the 4-panel PNG of ``trace`` (see :func:`build_figure`) to ``out_png``."""
    import matplotlib.pyplot as plt

    fig = build_figure(trace, title)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
