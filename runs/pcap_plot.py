"""One round's timeline from the packets, beside the device's own timing from its round log.

Top: a sequence diagram of the round from the captures — each message drawn from its first byte
leaving the sender's shaper (``sent`` capture) to its last byte released by the receiver's delay
element (``arrived`` capture); the device's drafting until its first byte leaves; the edge's
time between the draft's arrival and its reply leaving (verification plus ZeroMQ and Python).
Bottom: the same round as the device logged it (``draft_ms``, ``verify_ms`` as the edge
reported it, ``link_ms`` = wall − draft − verify; the log holds durations only, so the link
time is drawn split evenly around the verification).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from runs.pcap import RunAccounting, message_round_index

LANES = {"device": 1.0, "edge": 0.0}


def choose_round(acc: RunAccounting, protocol: str | None = None, request_id: str | None = None,
                 round_index: int | None = None) -> int:
    """Index (in ``acc.rounds``) of the round to draw: the one named, else the round with the
    median wall time among those of ``protocol`` (default: the first captured) whose messages
    all have a one-way delay."""
    r = acc.rounds
    if not len(r):
        raise ValueError(f"{acc.run_dir}: no logged rounds inside the captures")
    if request_id is not None:
        hit = r[(r["request_id"].astype(str) == request_id) & (r["round"] == (round_index or 0))
                & ((r["protocol"] == protocol) if protocol else True)]
        if not len(hit):
            raise ValueError(f"no round {round_index or 0} of request {request_id!r} in {acc.run_dir}")
        return int(hit.index[0])
    protocol = protocol or str(r["protocol"].iloc[0])
    cand = r[(r["protocol"] == protocol) & (r["up_messages"] > 0) & (r["down_messages"] > 0)]
    cand = cand if len(cand) else r[r["protocol"] == protocol]
    if not len(cand):
        raise ValueError(f"no captured round of protocol {protocol!r}")
    order = cand["wall_ms"].sort_values()
    return int(order.index[len(order) // 2])


def round_events(acc: RunAccounting, i: int) -> pd.DataFrame:
    """The messages sent during round ``i``, in sending order, with times in ms from the round's start."""
    which = message_round_index(acc.messages, acc.rounds)
    m = acc.messages[which == i].sort_values("t_sent_first_s").copy()
    t0 = float(acc.rounds.loc[i, "t_start"])
    m["t_sent_ms"], m["t_arrived_ms"] = (m["t_sent_first_s"] - t0) * 1000.0, (m["t_arrived_last_s"] - t0) * 1000.0
    return m


def plot_round(acc: RunAccounting, logs: pd.DataFrame, i: int, out: Path) -> Path:
    """Draw round ``i`` of ``acc.rounds`` (see the module docstring) to ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rnd = acc.rounds.loc[i]
    ev = round_events(acc, i)
    lg = logs[(logs["protocol"] == rnd["protocol"]) & (logs["device_id"] == f"dev{int(rnd['device'])}")
              & (logs["request_id"].astype(str) == str(rnd["request_id"])) & (logs["round"] == rnd["round"])].iloc[0]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    _draw_packets(top, ev)
    _draw_log(bottom, lg)
    top.set_title(f"{rnd['protocol']}, device {int(rnd['device'])}, request {rnd['request_id']}, round {rnd['round']}: "
                  f"from the packets (top), from the device's round log (bottom)", fontsize=9)
    bottom.set_xlabel("ms since the round started (device clock = capture clock)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _draw_packets(ax, ev: pd.DataFrame) -> None:
    """Sequence diagram of the round's messages, drafting and edge time."""
    ax.set_yticks(list(LANES.values()), [f"{k}" for k in LANES])
    ax.set_ylim(-0.5, 1.6)
    first_up = ev[ev["direction"] == "up"]["t_sent_ms"].min() if len(ev) else np.nan
    if np.isfinite(first_up):
        ax.barh(LANES["device"], first_up, left=0.0, height=0.18, color="tab:green", alpha=0.6,
                label="draft (until the first byte leaves)")
    pending, edge_label = None, "edge: arrival → reply leaves (verify + ZeroMQ)"
    for _, m in ev.iterrows():
        src, dst = ("device", "edge") if m["direction"] == "up" else ("edge", "device")
        if m["direction"] == "down" and pending is not None and np.isfinite(pending):
            ax.barh(LANES["edge"], m["t_sent_ms"] - pending, left=pending, height=0.18, color="tab:orange", alpha=0.6,
                    label=edge_label)
            edge_label = None
        if np.isfinite(m["t_arrived_ms"]):
            ax.annotate("", xy=(m["t_arrived_ms"], LANES[dst]), xytext=(m["t_sent_ms"], LANES[src]),
                        arrowprops={"arrowstyle": "->", "color": "tab:blue" if src == "device" else "tab:red"})
            label = m["type"] or ("encrypted" if m["encrypted"] else "?")
            resent = "\n(a packet lost, re-sent)" if m["lost_packets"] or m["retransmissions"] else ""
            ax.text((m["t_sent_ms"] + m["t_arrived_ms"]) / 2, 0.5, f"{label}\n{int(m['wire_bytes'])} B, "
                    f"{m['owd_ms']:.2f} ms{resent}", fontsize=7, ha="center", va="center",
                    bbox={"boxstyle": "round", "fc": "white", "ec": "0.8"})
        pending = m["t_arrived_ms"] if m["direction"] == "up" else None
    ax.legend(loc="upper right", fontsize=7)
    ax.grid(axis="x", alpha=0.3)


def _draw_log(ax, lg: pd.Series) -> None:
    """The device's logged durations as one stacked bar."""
    half = float(lg["link_ms"]) / 2.0
    parts = [("draft", float(lg["draft_ms"]), "tab:green"), ("link (half)", half, "tab:blue"),
             ("verify (edge-reported)", float(lg["verify_ms"]), "tab:orange"), ("link (half)", half, "tab:red")]
    left, wall = 0.0, float(lg["wall_ms"])
    for name, width, colour in parts:
        ax.barh(0, width, left=left, height=0.5, color=colour, alpha=0.6)
        if width >= 0.06 * wall:  # a label only where it fits
            ax.text(left + width / 2, 0, f"{name}\n{width:.1f} ms", fontsize=7, ha="center", va="center")
        left += width
    ax.axvline(float(lg["wall_ms"]), color="k", lw=0.8, ls="--")
    ax.text(float(lg["wall_ms"]), 0.35, f" wall {float(lg['wall_ms']):.1f} ms", fontsize=7)
    ax.set_yticks([0], ["round log"])
    ax.set_ylim(-0.5, 0.6)
    ax.grid(axis="x", alpha=0.3)
