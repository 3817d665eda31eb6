"""Benchmark: generate 1 hour of a 1 ms trace (both directions, fading + shadowing + mapping)
and write it, as ``wisv trace generate`` does. Last line: one JSON object."""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from channel_models.generator import PRESETS, ChannelSpec  # noqa: E402
from traces.format import write_trace  # noqa: E402
from traces.ops import from_channel  # noqa: E402


def main() -> None:
    spec = ChannelSpec.from_dict({"duration_s": 3600.0, "step_ms": 1.0, "seed": 0, **PRESETS["vehicular"]})
    t0 = time.perf_counter()
    trace = from_channel(spec)
    t_gen = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        t1 = time.perf_counter()
        write_trace(trace, Path(d) / "hour.parquet")
        t_parquet = time.perf_counter() - t1
        size = (Path(d) / "hour.parquet").stat().st_size
    rows = len(trace)
    total = t_gen + t_parquet
    print(f"generate {rows} rows (1 h at 1 ms): {t_gen:.2f} s; write Parquet: {t_parquet:.2f} s "
          f"({size / 1e6:.1f} MB)")
    print(json.dumps({"seconds": round(total, 3), "rows_per_s": round(rows / total), "rows": rows,
                      "generate_s": round(t_gen, 3), "write_parquet_s": round(t_parquet, 3)}))


if __name__ == "__main__":
    main()
