"""The join with the round logs: per logged round, the on-wire bytes of the packets inside it
beside the log's interface-counter bytes, retransmissions, drops and one-way delays; which
round each message was sent in; the run's totals and checks."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from traces.schedule import row_in_force, rows_before


def _window_sums(t: np.ndarray, values: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Sum of ``values`` whose time ``t`` (sorted) lies in each window [t0, t1]."""
    cum = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return cum[row_in_force(t, t1) + 1] - cum[rows_before(t, t0)]


def round_table(rounds: pd.DataFrame, packets: pd.DataFrame, messages: pd.DataFrame) -> pd.DataFrame:
    """Per logged round: on-wire bytes from the ``sent`` packets inside [t_start, t_end] beside
    the round log's interface-counter bytes, retransmissions, drops, and its messages' one-way
    delays (a message belongs to the round during which its first byte was sent)."""
    out = []
    for (protocol, device), grp in packets.groupby(["protocol", "device"]):
        r = rounds[(rounds["protocol"] == protocol) & (rounds["device_id"] == f"dev{device}")].sort_values("t_start")
        if not len(r):
            continue
        t0, t1 = r["t_start"].to_numpy(float), r["t_end"].to_numpy(float)
        row = {"protocol": protocol, "device": int(device), "request_id": r["request_id"].to_numpy(),
               "round": r["round"].to_numpy(), "t_start": t0, "t_end": t1, "wall_ms": r["wall_ms"].to_numpy(float),
               "log_wire_up_bytes": r["wire_up_bytes"].to_numpy(), "log_wire_down_bytes": r["wire_down_bytes"].to_numpy()}
        for direction in ("up", "down"):
            s = grp[(grp["direction"] == direction) & (grp["side"] == "sent")].sort_values("t_s")
            t = s["t_s"].to_numpy(float)
            row[f"pcap_wire_{direction}_bytes"] = _window_sums(t, s["wire_bytes"].to_numpy(float), t0, t1).astype(int)
            row[f"{direction}_retransmissions"] = _window_sums(t, s["retransmission"].to_numpy(float), t0, t1).astype(int)
            row[f"{direction}_drops"] = _window_sums(t, s["dropped"].to_numpy(float), t0, t1).astype(int)
            m = messages[(messages["protocol"] == protocol) & (messages["device"] == device)
                         & (messages["direction"] == direction)]
            idx = row_in_force(t0, m["t_sent_first_s"].to_numpy(float))
            inside = (idx >= 0) & (m["t_sent_first_s"].to_numpy(float) <= t1[np.clip(idx, 0, None)])
            by_round = pd.Series(m["owd_ms"].to_numpy(float)[inside]).groupby(idx[inside])
            err = pd.Series(m["owd_error_ms"].to_numpy(float)[inside]).groupby(idx[inside])
            row[f"{direction}_messages"] = by_round.size().reindex(range(len(r)), fill_value=0).to_numpy()
            row[f"{direction}_owd_ms_median"] = by_round.median().reindex(range(len(r))).to_numpy()
            row[f"{direction}_owd_error_ms_median"] = err.median().reindex(range(len(r))).to_numpy()
        out.append(pd.DataFrame(row))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def message_round_index(messages: pd.DataFrame, rounds: pd.DataFrame) -> pd.Series:
    """For each message, the index (in ``rounds``) of the round during which it was sent; -1 if none."""
    out = pd.Series(-1, index=messages.index)
    for (protocol, device), r in rounds.groupby(["protocol", "device"]):
        r = r.sort_values("t_start")
        m = messages[(messages["protocol"] == protocol) & (messages["device"] == device)]
        t = m["t_sent_first_s"].to_numpy(float)
        i = row_in_force(r["t_start"].to_numpy(float), t)
        ok = (i >= 0) & (t <= r["t_end"].to_numpy(float)[np.clip(i, 0, None)])
        out.loc[m.index[ok]] = r.index.to_numpy()[i[ok]]
    return out


def summarise(captures: list[dict], packets: pd.DataFrame, messages: pd.DataFrame, rounds: pd.DataFrame,
              mechanisms: set[str], unparsed_bytes: int) -> dict:
    """Totals, the byte check against the round logs and the one-way delay check."""
    s: dict[str, Any] = {"captures": len(captures), "packets": int(len(packets)), "messages": int(len(messages)),
                         "mechanism": ",".join(sorted(m for m in mechanisms if m)) or "unknown",
                         "encrypted_messages": int(messages["encrypted"].sum()) if len(messages) else 0,
                         "undecodable_messages": int((~messages["decodable"] & ~messages["encrypted"]).sum())
                         if len(messages) else 0,
                         "messages_frames_unparsed": int((~messages["frames_parsed"]).sum()) if len(messages) else 0,
                         "unparsed_stream_bytes": int(unparsed_bytes),
                         "truncated_captures": sum(bool(c.get("truncated")) for c in captures),
                         "kernel_dropped_packets": sum(int(c.get("dropped_by_kernel", 0)) for c in captures),
                         "rounds": int(len(rounds))}
    sent = packets[packets["side"] == "sent"] if len(packets) else packets
    for d in ("up", "down"):
        ok = rounds[rounds[f"log_wire_{d}_bytes"] >= 0] if len(rounds) else rounds
        log_b = float(ok[f"log_wire_{d}_bytes"].sum()) if len(ok) else 0.0
        pcap_b = float(ok[f"pcap_wire_{d}_bytes"].sum()) if len(ok) else 0.0
        s[f"log_wire_{d}_bytes"], s[f"pcap_wire_{d}_bytes"] = int(log_b), int(pcap_b)
        s[f"bytes_error_pct_{d}"] = abs(pcap_b - log_b) / log_b * 100.0 if log_b > 0 else None
        ds = sent[sent["direction"] == d] if len(sent) else sent
        s[f"{d}_retransmissions"] = int(ds["retransmission"].sum()) if len(ds) else 0
        s[f"{d}_drops"] = int(ds["dropped"].sum()) if len(ds) else 0
        good = owd_sample(messages, d)
        s[f"owd_median_ms_{d}"] = float(good["owd_ms"].median()) if len(good) else None
        s[f"owd_median_error_ms_{d}"] = float(good["owd_error_ms"].median()) if len(good) else None
    errs = [s[f"bytes_error_pct_{d}"] for d in ("up", "down") if s[f"bytes_error_pct_{d}"] is not None]
    s["bytes_error_pct"] = max(errs) if errs else None
    good = owd_sample(messages, None)
    s["owd_messages"] = int(len(good))
    s["owd_median_error_ms"] = float(good["owd_error_ms"].median()) if len(good) else None
    return s


def owd_sample(messages: pd.DataFrame, direction: str | None) -> pd.DataFrame:
    """Messages whose one-way delay says something about the link: delivered without a
    retransmission or a loss, with the trace step in force known."""
    if not len(messages):
        return messages
    m = messages[(messages["retransmissions"] == 0) & (messages["lost_packets"] == 0)
                 & np.isfinite(messages["owd_error_ms"])]
    return m if direction is None else m[m["direction"] == direction]

