"""``wisv pcap RUN_DIR``: packet-level accounting of a run captured with ``wisv run --capture``
(or ``capture: {enabled: true}``), see :mod:`runs.pcap`; scapy is imported only when it runs."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _round_key(text: str | None) -> tuple[str | None, str | None, int | None]:
    """``PROTOCOL:REQUEST_ID:ROUND`` (or ``PROTOCOL``) → its parts."""
    if not text:
        return None, None, None
    parts = text.split(":")
    if len(parts) == 1:
        return parts[0], None, None
    if len(parts) != 3 or not parts[2].isdigit():
        raise SystemExit("wisv pcap: --round takes PROTOCOL or PROTOCOL:REQUEST_ID:ROUND")
    return parts[0], parts[1], int(parts[2])


def _line(s: dict) -> str:
    """The human summary of one accounting."""
    def f(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    return (f"{s.get('run_dir', 'all runs')}: {s['packets']} packets, {s['messages']} messages "
            f"({s['undecodable_messages']} undecodable, {s['encrypted_messages']} encrypted), {s['rounds']} rounds\n"
            f"  on-wire bytes vs round logs: up {f(s['bytes_error_pct_up'], '.3f')} %, down "
            f"{f(s['bytes_error_pct_down'], '.3f')} % off\n"
            f"  one-way delay − (trace delay + serialisation), median over {s['owd_messages']} messages: "
            f"{f(s['owd_median_error_ms'], '+.3f')} ms\n"
            f"  retransmissions up/down {s['up_retransmissions']}/{s['down_retransmissions']}, dropped by the emulated "
            f"loss up/down {s['up_drops']}/{s['down_drops']}\n")


def cmd_pcap(a: argparse.Namespace) -> int:
    from runs.pcap import analyse_run, combine, find_captured_runs, read_round_logs
    from runs.pcap_plot import choose_round, plot_round

    root = Path(a.run_dir)
    found = find_captured_runs(root)
    if not found:
        raise FileNotFoundError(f"{root}: no pcap/capture.json below it (was the run made with --capture?)")
    accounts = [analyse_run(d) for d in found]
    protocol, request_id, rnd = _round_key(a.round)
    plots = []
    if not a.no_plot:
        acc = accounts[0]
        i = choose_round(acc, protocol, request_id, rnd)
        r = acc.rounds.loc[i]
        out = Path(a.plot) if a.plot else acc.run_dir / "pcap" / f"timeline-{r['protocol']}-{r['request_id']}-r{r['round']}.png"
        plots.append(str(plot_round(acc, read_round_logs(acc.run_dir), i, out)))
    summary = {**combine(accounts), "plots": plots,
               "tables": [str(acc.run_dir / "pcap" / f"pcap-{t}.parquet") for acc in accounts
                          for t in ("packets", "messages", "rounds")]}
    if not a.json:
        for acc in accounts:
            sys.stdout.write(_line(acc.summary))
        sys.stdout.write(f"tables: pcap/pcap-{{packets,messages,rounds}}.parquet in each run; plots: {', '.join(plots)}\n")
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``wisv pcap``."""
    p = sub.add_parser("pcap", help="account a captured run from its packets (bytes per round, retransmissions, "
                                    "drops, one-way delays; Parquet tables and a round timeline)")
    p.add_argument("run_dir", help="a run directory with pcap/capture.json, or an experiment directory holding such runs")
    p.add_argument("--json", action="store_true", help="print only one JSON object (the summary)")
    p.add_argument("--round", help="the round to draw: PROTOCOL or PROTOCOL:REQUEST_ID:ROUND (default: the round of "
                                   "median wall time of the first protocol)")
    p.add_argument("--plot", help="where the timeline PNG goes (default: RUN_DIR/pcap/timeline-….png)")
    p.add_argument("--no-plot", action="store_true", help="no timeline")
    p.set_defaults(func=cmd_pcap)
