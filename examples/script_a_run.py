"""Script an emulated run with the Python API (root): a device–edge topology, a trace, the
edge node, two protocols, and the round log back as a DataFrame.

    sudo .venv/bin/python examples/script_a_run.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runs.api import Testbed  # noqa: E402
from traces.synthetic import step_trace  # noqa: E402
from traces.format import write_trace  # noqa: E402


def main() -> None:
    out = Path("runs/out/example")
    out.mkdir(parents=True, exist_ok=True)
    # A channel that alternates between a good and a poor link every 2 s.
    trace = write_trace(step_trace(2000.0, 20.0, rates_bps=[50e6, 2e6], delays_ms=[5.0, 40.0], cycle_delays=True),
                        out / "two_state.csv")
    with Testbed(run_dir=out) as tb:
        tb.attach_trace(trace)
        tb.start_edge()
        for protocol in ("vanilla", "wisv-full"):
            s = tb.run_protocol(protocol, problems=5)
            print(f"{protocol:>10}: accepted length {s.mean_accepted_len:.2f}, latency {s.latency_ms_mean:.0f} ms, "
                  f"accuracy {s.accuracy:.2f}")
        df = tb.rounds()
    print(df.groupby("protocol")[["accepted", "up_bytes", "link_ms"]].mean())


if __name__ == "__main__":
    main()
