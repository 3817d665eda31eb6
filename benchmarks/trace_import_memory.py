"""Peak memory of importing a large two-column log and of summarising the resulting Parquet trace
(issue 12 item 17: peak ≤ 2× the file). A ~50 MB log is generated in a temporary folder; each step
runs in a fresh Python process whose peak RSS (ru_maxrss) is compared with the same step on a
3-row file, so the increase is what the data costs. Usage: ``python benchmarks/trace_import_memory.py
[--mb 50]``. Last line: one JSON object."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
STEP = """
import sys
sys.path.insert(0, {repo!r})
from traces.importers import import_to_file
from traces.ops import summary_file
what, src, out = sys.argv[1:4]
if what == "import":
    import_to_file(src, out)
else:
    summary_file(src)
"""


def write_log(path: Path, target_bytes: int, seed: int = 0) -> int:
    """Write a two-column ``time_s throughput_mbps`` log of about ``target_bytes``; returns rows."""
    rng = np.random.default_rng(seed)
    rows = target_bytes // 17  # "1234.5678 12.345\n" is ~17 bytes
    with open(path, "w") as f:
        f.write("time throughput\n")
        for start in range(0, rows, 1_000_000):
            n = min(1_000_000, rows - start)
            t = start * 0.01 + np.arange(n) * 0.01 + rng.uniform(0, 0.001, n)
            np.savetxt(f, np.column_stack([t, rng.uniform(0, 99, n)]), fmt=["%.4f", "%.3f"])
    return rows


def peak_rss(script: Path, what: str, src: Path, out: Path) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of one step in a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(script), what, str(src), str(out)])
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{what} {src} failed")
    return usage.ru_maxrss * 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=50.0, help="size of the generated log (MB)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wisv-mem-") as d:
        d = Path(d)
        script = d / "step.py"
        script.write_text(STEP.format(repo=str(REPO)))
        small, big = d / "small.log", d / "big.log"
        small.write_text("0 1\n1 2\n2 3\n")
        rows = write_log(big, int(a.mb * 1e6))
        result: dict = {"rows": rows, "log_bytes": big.stat().st_size}
        base_import, _ = peak_rss(script, "import", small, d / "small.parquet")
        peak_import, s_import = peak_rss(script, "import", big, d / "big.parquet")
        base_show, _ = peak_rss(script, "show", d / "small.parquet", d / "x")
        peak_show, s_show = peak_rss(script, "show", d / "big.parquet", d / "x")
        result["parquet_bytes"] = (d / "big.parquet").stat().st_size
    result.update(
        import_peak_rss_bytes=peak_import, import_baseline_rss_bytes=base_import, import_seconds=round(s_import, 2),
        import_increase_over_file=round((peak_import - base_import) / result["log_bytes"], 3),
        show_peak_rss_bytes=peak_show, show_baseline_rss_bytes=base_show, show_seconds=round(s_show, 2),
        show_increase_over_file=round((peak_show - base_show) / result["parquet_bytes"], 3))
    print(f"import {result['log_bytes'] / 1e6:.1f} MB log ({rows} rows): peak RSS {peak_import / 1e6:.0f} MB "
          f"(baseline {base_import / 1e6:.0f} MB) = +{result['import_increase_over_file']}x the file, "
          f"{s_import:.1f} s")
    print(f"show {result['parquet_bytes'] / 1e6:.1f} MB Parquet: peak RSS {peak_show / 1e6:.0f} MB "
          f"(baseline {base_show / 1e6:.0f} MB) = +{result['show_increase_over_file']}x the file, {s_show:.1f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
