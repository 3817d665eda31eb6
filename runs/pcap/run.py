"""A captured run: read every capture of ``RUN_DIR/pcap/capture.json``, account for each link
direction, join with the round logs, write the tables and the summary; several runs combined."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from runs.pcap.link import LinkInForce
from runs.pcap.messages import MESSAGE_COLUMNS, PACKET_COLUMNS, Direction, analyse_direction, typed_frame
from runs.pcap.packets import read_packets
from runs.pcap.rounds import owd_sample, round_table, summarise

log = logging.getLogger(__name__)
MANIFEST = "capture.json"


@dataclass
class RunAccounting:
    """The tables and the summary of one captured run directory."""

    run_dir: Path
    packets: pd.DataFrame
    messages: pd.DataFrame
    rounds: pd.DataFrame
    summary: dict


def find_captured_runs(root: Path) -> list[Path]:
    """Run directories under ``root`` (itself included) that hold ``pcap/capture.json``."""
    here = [root] if (root / "pcap" / MANIFEST).is_file() else []
    return here + sorted(p.parent.parent for p in root.glob(f"**/pcap/{MANIFEST}") if p.parent.parent != root)


def read_round_logs(run_dir: Path) -> pd.DataFrame:
    """Every round of the run's ``rounds-*.jsonl`` logs (empty frame when none)."""
    parts = [pd.read_json(f, lines=True) for f in sorted(run_dir.glob("rounds-*.jsonl")) if f.stat().st_size]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def read_link_steps(run_dir: Path, protocol: str) -> pd.DataFrame:
    """The trace steps applied during ``protocol`` (``link-steps-<protocol>.csv``; empty when absent)."""
    path = run_dir / f"link-steps-{protocol}.csv"
    return pd.read_csv(path) if path.is_file() and path.stat().st_size else pd.DataFrame()


def _directions(run_dir: Path, captures: list[dict]) -> Iterator[Direction]:
    """The captured link directions of a run, both sides read."""
    groups: dict[tuple, dict[str, dict]] = {}
    for c in captures:
        groups.setdefault((c["protocol"], c["device"], c["direction"]), {})[c["side"]] = c
    for (protocol, device, direction), sides in sorted(groups.items()):
        files = {s: run_dir / "pcap" / c["file"] for s, c in sides.items()}
        sent = read_packets(files["sent"]) if "sent" in files and files["sent"].is_file() else []
        arrived = read_packets(files["arrived"]) if "arrived" in files and files["arrived"].is_file() else []
        yield Direction(protocol, int(device), direction, sent, arrived)


def analyse_run(run_dir: Path) -> RunAccounting:
    """Read every capture of ``run_dir`` (see the module docstring) and write the tables and
    ``pcap-summary.json`` beside the pcaps."""
    pcap_dir = run_dir / "pcap"
    captures = json.loads((pcap_dir / MANIFEST).read_text())["captures"]
    for c in captures:
        if c.get("truncated") or int(c.get("dropped_by_kernel", 0)):
            log.warning("%s: incomplete capture (size cap reached or kernel drops): byte totals will be short",
                        c["file"])
    logs = read_round_logs(run_dir)
    pkt_parts, msg_parts, mechanisms, unparsed = [], [], set(), 0
    for d in _directions(run_dir, captures):
        link = LinkInForce(read_link_steps(run_dir, d.protocol), logs[logs["protocol"] == d.protocol] if len(logs)
                           else logs)
        p, m = analyse_direction(d, link)
        pkt_parts.append(p)
        msg_parts.append(m)
        mechanisms.add(d.mechanism)
        unparsed += d.unparsed_bytes
    packets = pd.concat(pkt_parts, ignore_index=True) if pkt_parts else typed_frame([], PACKET_COLUMNS)
    messages = pd.concat(msg_parts, ignore_index=True) if msg_parts else typed_frame([], MESSAGE_COLUMNS)
    rounds = round_table(logs, packets, messages) if len(logs) and len(packets) else pd.DataFrame()
    summary = {"run_dir": str(run_dir), **summarise(captures, packets, messages, rounds, mechanisms, unparsed)}
    packets.to_parquet(pcap_dir / "pcap-packets.parquet", index=False)
    messages.to_parquet(pcap_dir / "pcap-messages.parquet", index=False)
    rounds.to_parquet(pcap_dir / "pcap-rounds.parquet", index=False)
    (pcap_dir / "pcap-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return RunAccounting(run_dir, packets, messages, rounds, summary)


def combine(runs: list[RunAccounting]) -> dict:
    """One summary over several runs: byte totals summed, one-way delay errors pooled."""
    if len(runs) == 1:
        return runs[0].summary
    s: dict[str, Any] = {"runs": [str(r.run_dir) for r in runs]}
    for key in ("captures", "packets", "messages", "encrypted_messages", "undecodable_messages", "messages_frames_unparsed",
                "truncated_captures", "kernel_dropped_packets", "rounds", "up_retransmissions", "down_retransmissions",
                "up_drops", "down_drops", "log_wire_up_bytes", "pcap_wire_up_bytes", "log_wire_down_bytes",
                "pcap_wire_down_bytes"):
        s[key] = sum(int(r.summary.get(key) or 0) for r in runs)
    for d in ("up", "down"):
        lb, pb = s[f"log_wire_{d}_bytes"], s[f"pcap_wire_{d}_bytes"]
        s[f"bytes_error_pct_{d}"] = abs(pb - lb) / lb * 100.0 if lb > 0 else None
    errs = [s[f"bytes_error_pct_{d}"] for d in ("up", "down") if s[f"bytes_error_pct_{d}"] is not None]
    s["bytes_error_pct"] = max(errs) if errs else None
    good = pd.concat([owd_sample(r.messages, None) for r in runs], ignore_index=True)
    s["owd_messages"] = int(len(good))
    s["owd_median_error_ms"] = float(good["owd_error_ms"].median()) if len(good) else None
    return s
