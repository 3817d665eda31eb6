"""Plot a trace: rate, delay, loss and SNR against time, up and down (PNG via matplotlib Agg)."""
from __future__ import annotations

from pathlib import Path


from traces.format import Trace


def plot_trace(trace: Trace, out_png: str | Path, title: str | None = None) -> Path:
    """Write a 4-panel PNG of ``trace`` (rate Mbit/s, delay ms, loss %, SNR dB vs time s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = trace.data
    t = (d["t_ms"].to_numpy() - d["t_ms"].iloc[0]) / 1000.0
    panels = [("rate_bps", "rate (Mbit/s)", 1e-6), ("delay_ms", "delay (ms)", 1.0),
              ("loss", "loss (%)", 100.0), ("snr_db", "SNR (dB)", 1.0)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 8), sharex=True)
    for ax, (key, label, scale) in zip(axes, panels):
        for direction, color in (("up", "tab:orange"), ("down", "tab:blue")):
            col = f"{key}_{direction}"
            if col in d:
                ax.step(t, d[col].to_numpy() * scale, where="post", lw=0.8, color=color, label=direction)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if key not in ("snr_db",) or any(f"{key}_{x}" in d for x in ("up", "down")):
            ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(title or f"trace: {trace.meta.get('source', '?')}, step {trace.step_ms:g} ms")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
